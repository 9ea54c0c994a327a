//! YAML text -> a small node tree in which every node and every mapping key carries its 1-based
//! line and column.
//!
//! Built on `yaml-rust2`'s event parser (its markers have 1-based lines and 0-based columns; the
//! column is shifted here). Scalars keep their source text and whether they were quoted, so the
//! decoder, not the YAML layer, decides what a value means (`01` stays `01`, `"1883"` is a string).
//!
//! Problems that are not YAML syntax errors (duplicate keys, non-string keys) are collected in
//! [`Document::problems`] and the tree stays usable; a syntax error ends parsing with one error.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Deeper nesting than this is refused (the tree and its drop are recursive).
const MAX_DEPTH: usize = 64;
/// Alias expansion may not grow the tree beyond this many nodes ("billion laughs").
const MAX_NODES: usize = 200_000;

/// A 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    pub fn new(line: usize, col: usize) -> Pos {
        Pos { line, col }
    }

    fn from_marker(m: &Marker) -> Pos {
        Pos {
            line: m.line().max(1),
            col: m.col() + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar with its text as written (after YAML unescaping) and whether it was quoted
    /// (single, double, block `|`/`>` or tagged `!!str`): quoted scalars are always strings.
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Entries in file order; a duplicate key is reported and dropped (the first one stays).
    Map(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

impl Node {
    /// Plain `~`, `null`, `Null`, `NULL` or nothing at all.
    pub fn is_null(&self) -> bool {
        match &self.value {
            Value::Scalar {
                text,
                quoted: false,
            } => {
                matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
            }
            _ => false,
        }
    }

    /// "a mapping", "a sequence", "nothing", "a string `x`", ... for type errors.
    pub fn describe(&self) -> String {
        match &self.value {
            _ if self.is_null() => "nothing".to_string(),
            Value::Scalar { text, quoted } => {
                let shown = shorten(text);
                if *quoted {
                    format!("the string \"{shown}\"")
                } else {
                    format!("`{shown}`")
                }
            }
            Value::Seq(_) => "a list".to_string(),
            Value::Map(_) => "a mapping".to_string(),
        }
    }

    fn count(&self) -> usize {
        match &self.value {
            Value::Scalar { .. } => 1,
            Value::Seq(items) => 1 + items.iter().map(Node::count).sum::<usize>(),
            Value::Map(entries) => 1 + entries.iter().map(|e| 1 + e.value.count()).sum::<usize>(),
        }
    }
}

fn shorten(text: &str) -> String {
    const MAX: usize = 40;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(MAX).collect();
        s.push('…');
        s
    }
}

/// A positioned problem found while reading the YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub pos: Pos,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// `None` for an empty file (or one with only comments).
    pub root: Option<Node>,
    /// Duplicate keys and the like; the tree is still usable.
    pub problems: Vec<Problem>,
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        path: String,
        items: Vec<Node>,
    },
    Map {
        start: Pos,
        anchor: usize,
        path: String,
        entries: Vec<Entry>,
        /// Key waiting for its value; `None` inside means "drop the value" (bad or duplicate key).
        pending: Option<Option<(String, Pos)>>,
        /// key -> line of its first occurrence
        seen: HashMap<String, usize>,
    },
}

impl Frame {
    fn path(&self) -> &str {
        match self {
            Frame::Seq { path, .. } | Frame::Map { path, .. } => path,
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn prefixed(path: &str, message: &str) -> String {
    if path.is_empty() {
        message.to_string()
    } else {
        format!("{path}: {message}")
    }
}

struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    problems: Vec<Problem>,
    nodes: usize,
}

impl Builder {
    /// The dotted path a new child node would get.
    fn child_path(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(Frame::Seq { path, items, .. }) => format!("{path}[{}]", items.len()),
            Some(Frame::Map { path, pending, .. }) => match pending {
                Some(Some((key, _))) => join(path, key),
                _ => path.clone(),
            },
        }
    }

    fn push(&mut self, frame: Frame, pos: Pos) -> Result<(), Problem> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(Problem {
                pos,
                message: format!("nesting deeper than {MAX_DEPTH} levels"),
            });
        }
        self.stack.push(frame);
        Ok(())
    }

    fn add_nodes(&mut self, n: usize, pos: Pos) -> Result<(), Problem> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(Problem {
                pos,
                message: format!(
                    "document too large (more than {MAX_NODES} nodes after expanding aliases)"
                ),
            });
        }
        Ok(())
    }

    /// A complete node: remember its anchor, then hand it to the enclosing collection.
    fn complete(&mut self, mut node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                path,
                entries,
                pending,
                seen,
                ..
            }) => {
                match pending.take() {
                    None => {
                        // This node is a key.
                        match &node.value {
                            Value::Scalar { text, .. } if !node.is_null() || !text.is_empty() => {
                                if let Some(first_line) = seen.get(text) {
                                    self.problems.push(Problem {
                                    pos: node.pos,
                                    message: prefixed(
                                        path,
                                        &format!("duplicate key `{text}` (first at line {first_line})"),
                                    ),
                                });
                                    *pending = Some(None);
                                } else {
                                    seen.insert(text.clone(), node.pos.line);
                                    *pending = Some(Some((text.clone(), node.pos)));
                                }
                            }
                            Value::Scalar { .. } => {
                                self.problems.push(Problem {
                                    pos: node.pos,
                                    message: prefixed(path, "empty mapping key"),
                                });
                                *pending = Some(None);
                            }
                            _ => {
                                self.problems.push(Problem {
                                    pos: node.pos,
                                    message: prefixed(
                                        path,
                                        &format!(
                                            "mapping keys must be strings, found {}",
                                            node.describe()
                                        ),
                                    ),
                                });
                                *pending = Some(None);
                            }
                        }
                    }
                    Some(None) => {} // value of a rejected key
                    Some(Some((key, key_pos))) => {
                        // A missing value (`key:`) is reported by the parser on the next line; point
                        // at the key instead, where the user looks.
                        if node.is_null() {
                            if let Value::Scalar { text, .. } = &node.value {
                                if text.is_empty() {
                                    node.pos = key_pos;
                                }
                            }
                        }
                        entries.push(Entry {
                            key,
                            key_pos,
                            value: node,
                        });
                    }
                }
            }
        }
    }

    fn on_event(&mut self, ev: Event, mark: &Marker) -> Result<(), Problem> {
        let pos = Pos::from_marker(mark);
        match ev {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
            Event::DocumentStart => {
                if self.root.is_some() {
                    return Err(Problem {
                        pos,
                        message: "a config file holds one YAML document; found a second one here"
                            .to_string(),
                    });
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.add_nodes(1, pos)?;
                let is_str_tag = tag
                    .as_ref()
                    .is_some_and(|t| t.handle == "tag:yaml.org,2002:" && t.suffix == "str");
                let quoted = is_str_tag || !matches!(style, TScalarStyle::Plain);
                self.complete(
                    Node {
                        pos,
                        value: Value::Scalar { text, quoted },
                    },
                    anchor,
                );
            }
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id) else {
                    return Err(Problem {
                        pos,
                        message: "alias to an unknown anchor".to_string(),
                    });
                };
                let node = target.clone();
                self.add_nodes(node.count(), pos)?;
                self.complete(node, 0);
            }
            Event::SequenceStart(anchor, _) => {
                self.add_nodes(1, pos)?;
                let path = self.child_path();
                self.push(
                    Frame::Seq {
                        pos,
                        anchor,
                        path,
                        items: Vec::new(),
                    },
                    pos,
                )?;
            }
            Event::MappingStart(anchor, _) => {
                self.add_nodes(1, pos)?;
                let path = self.child_path();
                self.push(
                    Frame::Map {
                        start: pos,
                        anchor,
                        path,
                        entries: Vec::new(),
                        pending: None,
                        seen: HashMap::new(),
                    },
                    pos,
                )?;
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq {
                    pos, anchor, items, ..
                }) = self.stack.pop()
                {
                    self.complete(
                        Node {
                            pos,
                            value: Value::Seq(items),
                        },
                        anchor,
                    );
                } else {
                    return Err(unbalanced(pos));
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    start,
                    anchor,
                    entries,
                    ..
                }) = self.stack.pop()
                {
                    // A block mapping's start marker points past its first key; a flow
                    // mapping's points at `{`. The earlier of the two is where it begins.
                    let pos = entries.first().map_or(start, |e| e.key_pos.min(start));
                    self.complete(
                        Node {
                            pos,
                            value: Value::Map(entries),
                        },
                        anchor,
                    );
                } else {
                    return Err(unbalanced(pos));
                }
            }
        }
        Ok(())
    }
}

fn unbalanced(pos: Pos) -> Problem {
    Problem {
        pos,
        message: "internal error: unbalanced YAML events".to_string(),
    }
}

/// Parses one YAML document. `Err` is a syntax error (or a refused document) at its position.
pub fn parse(text: &str) -> Result<Document, Problem> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parser = Parser::new_from_str(text);
    let mut b = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        problems: Vec::new(),
        nodes: 0,
    };
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => break,
            Ok((ev, mark)) => b.on_event(ev, &mark)?,
            Err(e) => {
                return Err(Problem {
                    pos: Pos::from_marker(e.marker()),
                    message: format!("YAML syntax error: {}", e.info()),
                })
            }
        }
    }
    if !b.stack.is_empty() {
        let path = b
            .stack
            .last()
            .map(|f| f.path().to_string())
            .unwrap_or_default();
        return Err(Problem {
            pos: Pos::new(text.lines().count().max(1), 1),
            message: prefixed(&path, "YAML syntax error: unexpected end of file"),
        });
    }
    Ok(Document {
        root: b.root,
        problems: b.problems,
    })
}

#[cfg(test)]
mod tests {
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
        let doc =
            parse("site: x\nbroker:\n  listen: \"1.2.3.4:5\"\n  list: [1, b]\nempty:\n").unwrap();
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
}
