use super::*;

fn map(node: &Node) -> &[Entry] {
    match &node.value {
        Value::Map(e) => e,
        other => panic!("not a map: {other:?}"),
    }
}

fn scalar(node: &Node) -> (&str, bool) {
    match &node.value {
        Value::Scalar { text, quoted } => (text, *quoted),
        other => panic!("not a scalar: {other:?}"),
    }
}

#[test]
fn positions_are_one_based_for_keys_and_values() {
    let doc = parse("site: x\nbroker:\n  listen: \"1.2.3.4:5\"\n  list: [1, b]\nempty:\n").unwrap();
    let root = doc.root.unwrap();
    assert_eq!(root.pos, Pos::new(1, 1));
    let e = map(&root);
    assert_eq!(e[0].key, "site");
    assert_eq!(e[0].key_pos, Pos::new(1, 1));
    assert_eq!(e[0].value.pos, Pos::new(1, 7));
    assert_eq!(scalar(&e[0].value), ("x", false));
    assert_eq!(e[1].key_pos, Pos::new(2, 1));
    // A block mapping starts at its first key.
    assert_eq!(e[1].value.pos, Pos::new(3, 3));
    let broker = map(&e[1].value);
    assert_eq!(broker[0].key_pos, Pos::new(3, 3));
    assert_eq!(broker[0].value.pos, Pos::new(3, 11));
    assert_eq!(scalar(&broker[0].value), ("1.2.3.4:5", true));
    let Value::Seq(items) = &broker[1].value.value else {
        panic!()
    };
    assert_eq!(broker[1].value.pos, Pos::new(4, 9));
    assert_eq!(items[1].pos, Pos::new(4, 13));
    // `empty:` has a null value, located at its key.
    assert!(e[2].value.is_null());
    assert_eq!(e[2].value.pos, Pos::new(5, 1));
}

#[test]
fn flow_mapping_starts_at_brace() {
    let doc = parse("a:\n  - {k: v}\n").unwrap();
    let root = doc.root.unwrap();
    let Value::Seq(items) = &map(&root)[0].value.value else {
        panic!()
    };
    assert_eq!(items[0].pos, Pos::new(2, 5));
    assert_eq!(map(&items[0])[0].key_pos, Pos::new(2, 6));
}

#[test]
fn duplicate_keys_keep_the_first_and_report_the_second() {
    let doc = parse("a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\na: 2\n").unwrap();
    let root = doc.root.unwrap();
    let e = map(&root);
    assert_eq!(e.len(), 2);
    assert_eq!(scalar(&e[0].value).0, "1");
    assert_eq!(map(&e[1].value).len(), 2);
    assert_eq!(
        doc.problems,
        vec![
            Problem {
                pos: Pos::new(5, 3),
                message: "b: duplicate key `c` (first at line 3)".into()
            },
            Problem {
                pos: Pos::new(6, 1),
                message: "duplicate key `a` (first at line 1)".into()
            },
        ]
    );
}

#[test]
fn duplicate_in_list_item_names_the_path() {
    let doc = parse("xs:\n  - {a: 1, a: 2}\n").unwrap();
    assert_eq!(doc.problems.len(), 1);
    assert_eq!(doc.problems[0].pos, Pos::new(2, 12));
    assert_eq!(
        doc.problems[0].message,
        "xs[0]: duplicate key `a` (first at line 2)"
    );
}

#[test]
fn non_string_keys_are_reported() {
    let doc = parse("? [a]\n: b\nc: d\n").unwrap();
    assert_eq!(doc.problems.len(), 1);
    assert!(doc.problems[0].message.contains("keys must be strings"));
    assert_eq!(map(doc.root.as_ref().unwrap()).len(), 1);
}

#[test]
fn syntax_errors_have_a_position() {
    let err = parse("a: b\n  c: d\n").unwrap_err();
    assert_eq!(err.pos, Pos::new(2, 4));
    assert!(
        err.message.starts_with("YAML syntax error: "),
        "{}",
        err.message
    );
    let err = parse("a: [1, 2\n").unwrap_err();
    assert_eq!(err.pos, Pos::new(2, 1));
    let err = parse("a:\tb\n").unwrap_err();
    assert_eq!(err.pos, Pos::new(1, 4));
}

#[test]
fn hostile_inputs_are_refused_not_crashed_on() {
    assert!(parse(&"[".repeat(100_000)).is_err());
    let err = parse(&"- ".repeat(10_000)).unwrap_err();
    assert!(err.message.contains("nesting"), "{}", err.message);
    // Billion laughs.
    let mut s = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 0..10 {
        s.push_str(&format!(
            "b{i}: &b{i} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n",
            p = if i == 0 {
                "a".to_string()
            } else {
                format!("b{}", i - 1)
            }
        ));
    }
    let err = parse(&s).unwrap_err();
    assert!(err.message.contains("too large"), "{}", err.message);
    assert!(parse("a: 1\n---\nb: 2\n")
        .unwrap_err()
        .message
        .contains("one YAML document"));
    assert!(parse("a: *nope\n").is_err());
}

#[test]
fn empty_file_bom_aliases_and_tags() {
    assert_eq!(parse("").unwrap().root, None);
    assert_eq!(parse("# only a comment\n").unwrap().root, None);
    let doc = parse("\u{feff}a: 1\n").unwrap();
    assert_eq!(map(doc.root.as_ref().unwrap())[0].key, "a");
    let doc = parse("a: &x {k: 1}\nb: *x\nc: !!str 5\n").unwrap();
    let root = doc.root.unwrap();
    let e = map(&root);
    assert_eq!(e[0].value.value, e[1].value.value);
    assert_eq!(scalar(&e[2].value), ("5", true));
}
