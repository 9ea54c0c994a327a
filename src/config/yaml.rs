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
mod tests;
