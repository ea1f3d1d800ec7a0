//! A YAML node tree with a span on every node and key, built from the same event parser that
//! serde-saphyr uses.
//!
//! Why a tree besides serde: serde stops at the first problem, while wepoq reports every
//! unknown key, duplicate key and wrong type in one run. The tree is also where the later
//! checks look up the span of a value by its path.

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span as YamlSpan};

use std::collections::HashMap;
use std::ops::Deref;

use crate::diagnostic::Diagnostic;
use crate::limits::{MAX_DEPTH, MAX_NODES, too_deep, too_many_nodes};
use crate::source::{FileId, Span};

#[derive(Debug, Clone)]
pub struct Node {
    pub span: Span,
    pub kind: NodeKind,
}

#[derive(Debug, Clone)]
pub enum NodeKind {
    /// `quoted` scalars are always strings; plain ones resolve by the YAML 1.2 core schema.
    Scalar {
        value: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    Map(Mapping),
}

/// A mapping's entries in the order written, with a key index once it is large: a spec may
/// hold thousands of services in one mapping, and looking each up by scanning is quadratic.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    entries: Vec<Entry>,
    index: Option<HashMap<String, usize>>,
}

/// Below this many entries a scan is as quick as a hash.
const INDEXED_FROM: usize = 16;

impl Mapping {
    fn new(entries: Vec<Entry>) -> Mapping {
        let index = (entries.len() >= INDEXED_FROM).then(|| {
            entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.key.clone(), i))
                .collect()
        });
        Mapping { entries, index }
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        match &self.index {
            Some(index) => index.get(key).map(|&i| &self.entries[i]),
            None => self.entries.iter().find(|e| e.key == key),
        }
    }
}

impl Deref for Mapping {
    type Target = [Entry];

    fn deref(&self) -> &[Entry] {
        &self.entries
    }
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub key_span: Span,
    pub value: Node,
}

/// What a scalar resolves to under the YAML 1.2 core schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarType {
    Null,
    Bool,
    Integer,
    Float,
    String,
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|e| &e.value)
    }

    pub fn entry(&self, key: &str) -> Option<&Entry> {
        match &self.kind {
            NodeKind::Map(mapping) => mapping.get(key),
            _ => None,
        }
    }

    pub fn index(&self, i: usize) -> Option<&Node> {
        match &self.kind {
            NodeKind::Seq(items) => items.get(i),
            _ => None,
        }
    }

    pub fn scalar_type(&self) -> Option<ScalarType> {
        match &self.kind {
            NodeKind::Scalar { value, quoted } => Some(resolve_scalar(value, *quoted)),
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
            NodeKind::Scalar { .. } => match self.scalar_type() {
                Some(ScalarType::Null) => "null",
                Some(ScalarType::Bool) => "a boolean",
                Some(ScalarType::Integer) => "an integer",
                Some(ScalarType::Float) => "a number",
                _ => "a string",
            },
        }
    }
}

pub fn resolve_scalar(value: &str, quoted: bool) -> ScalarType {
    if quoted {
        return ScalarType::String;
    }
    match value {
        "" | "~" | "null" | "Null" | "NULL" => return ScalarType::Null,
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => return ScalarType::Bool,
        _ => {}
    }
    let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
    let is_int = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        || value
            .strip_prefix("0x")
            .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
        || value
            .strip_prefix("0o")
            .is_some_and(|o| !o.is_empty() && o.bytes().all(|b| (b'0'..=b'7').contains(&b)));
    if is_int {
        return ScalarType::Integer;
    }
    if digits.parse::<f64>().is_ok() && digits.bytes().any(|b| b.is_ascii_digit())
        || matches!(digits, ".inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN")
    {
        return ScalarType::Float;
    }
    ScalarType::String
}

/// Parses one YAML document. Syntax errors and wepoq's limits on nesting and nodes stop the
/// parse (there is nothing sound to check after them); duplicate keys, aliases and extra
/// documents are reported and parsing goes on.
pub fn parse(file: FileId, text: &str) -> (Option<Node>, Vec<Diagnostic>) {
    let mut builder = Builder {
        file,
        text,
        diagnostics: Vec::new(),
        stack: Vec::new(),
        root: None,
        documents: 0,
        nodes: 0,
        breach: None,
    };
    for item in Parser::new_from_str(text) {
        match item {
            Ok((event, span)) => {
                builder.event(event, span);
                if let Some(breach) = builder.breach.take() {
                    builder.diagnostics.push(breach);
                    return (None, builder.diagnostics);
                }
            }
            Err(error) => {
                let at = error
                    .marker()
                    .byte_offset()
                    .unwrap_or(error.marker().index())
                    .min(text.len());
                let end = next_char_boundary(text, at);
                builder.diagnostics.push(
                    Diagnostic::error(
                        "wepoq::yaml::syntax",
                        format!("invalid YAML: {}", error.info()),
                    )
                    .label(Span::new(file, at..end), "here")
                    .help("fix the YAML syntax; nothing else in this file was checked"),
                );
                return (None, builder.diagnostics);
            }
        }
    }
    let root = builder.root.take();
    if root.is_none() && builder.diagnostics.is_empty() {
        builder.diagnostics.push(
            Diagnostic::error("wepoq::yaml::empty", "the file holds no YAML document")
                .label(Span::new(file, 0..0), "empty")
                .help("a spec starts with `namespace: NAME` and `network: CIDR`"),
        );
    }
    (root, builder.diagnostics)
}

fn next_char_boundary(text: &str, at: usize) -> usize {
    let mut end = (at + 1).min(text.len());
    while end < text.len() && !text.is_char_boundary(end) {
        end += 1;
    }
    end
}

enum Frame {
    Seq {
        start: usize,
        items: Vec<Node>,
    },
    Map {
        start: usize,
        entries: Vec<Entry>,
        /// Where each key was first written, and its entry once the value came.
        keys: HashMap<String, (Span, Option<usize>)>,
        pending_key: Option<(String, Span)>,
    },
}

struct Builder<'a> {
    file: FileId,
    text: &'a str,
    diagnostics: Vec<Diagnostic>,
    stack: Vec<Frame>,
    root: Option<Node>,
    documents: usize,
    nodes: usize,
    /// A limit crossed: the parse stops with this diagnostic.
    breach: Option<Diagnostic>,
}

impl Builder<'_> {
    fn offset(&self, span: &YamlSpan) -> (usize, usize) {
        let start = span
            .start
            .byte_offset()
            .unwrap_or(span.start.index())
            .min(self.text.len());
        let end = span
            .end
            .byte_offset()
            .unwrap_or(span.end.index())
            .min(self.text.len());
        (start, end.max(start))
    }

    fn span(&self, range: (usize, usize)) -> Span {
        Span::new(self.file, range.0..range.1)
    }

    /// Counts a node and its depth against wepoq's limits.
    fn count(&mut self, start: usize, end: usize, opens: bool) {
        self.nodes += 1;
        let span = self.span((start, end.max(start)));
        if self.nodes > MAX_NODES {
            self.breach = Some(too_many_nodes(span));
        } else if opens && self.stack.len() >= MAX_DEPTH {
            // A collection's start is an empty span: point at the key it is the value of.
            let at = match self.stack.last() {
                Some(Frame::Map {
                    pending_key: Some((_, key)),
                    ..
                }) => *key,
                _ => span,
            };
            self.breach = Some(too_deep(at));
        }
    }

    fn event(&mut self, event: Event<'_>, yspan: YamlSpan) {
        let (start, end) = self.offset(&yspan);
        let opens = matches!(event, Event::SequenceStart(..) | Event::MappingStart(..));
        if opens || matches!(event, Event::Scalar(..) | Event::Alias(_)) {
            self.count(start, end, opens);
        }
        match event {
            Event::DocumentStart(..) => {
                self.documents += 1;
                if self.documents == 2 {
                    self.diagnostics.push(
                        Diagnostic::error(
                            "wepoq::yaml::multiple_documents",
                            "a spec file holds exactly one document",
                        )
                        .label(
                            self.span((start, end.max(start + 3).min(self.text.len()))),
                            "second document starts here",
                        )
                        .help("put each namespace in a file of its own and pass them all to wepoq"),
                    );
                }
            }
            Event::Scalar(value, style, _, _) => {
                let quoted = !matches!(style, ScalarStyle::Plain);
                let node = Node {
                    span: self.span((start, end)),
                    kind: NodeKind::Scalar {
                        value: value.into_owned(),
                        quoted,
                    },
                };
                self.push(node);
            }
            Event::SequenceStart(..) => self.stack.push(Frame::Seq {
                start,
                items: Vec::new(),
            }),
            Event::MappingStart(..) => self.stack.push(Frame::Map {
                start,
                entries: Vec::new(),
                keys: HashMap::new(),
                pending_key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return;
                };
                let node = match frame {
                    Frame::Seq { start: s, items } => Node {
                        span: self.span((s, end.max(s))),
                        kind: NodeKind::Seq(items),
                    },
                    Frame::Map {
                        start: s, entries, ..
                    } => Node {
                        span: self.span((s, end.max(s))),
                        kind: NodeKind::Map(Mapping::new(entries)),
                    },
                };
                self.push(node);
            }
            Event::Alias(_) | Event::UnresolvedAlias(_) => {
                self.diagnostics.push(
                    Diagnostic::error(
                        "wepoq::yaml::alias",
                        "YAML aliases are not supported in a spec",
                    )
                    .label(self.span((start, end)), "alias")
                    .help("write the value out; a spec stays readable without anchors"),
                );
                // Stand in a null so the surrounding structure stays whole.
                let node = Node {
                    span: self.span((start, end)),
                    kind: NodeKind::Scalar {
                        value: String::new(),
                        quoted: false,
                    },
                };
                self.push(node);
            }
            _ => {}
        }
    }

    fn push(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                keys,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => {
                    let key = match &node.kind {
                        NodeKind::Scalar { value, .. } => value.clone(),
                        _ => {
                            self.diagnostics.push(
                                Diagnostic::error(
                                    "wepoq::yaml::complex_key",
                                    "mapping keys must be plain names",
                                )
                                .label(node.span, "this key is a collection"),
                            );
                            String::from("\u{0}complex")
                        }
                    };
                    if let Some(&(first, _)) = keys.get(&key) {
                        self.diagnostics.push(
                            Diagnostic::error(
                                "wepoq::yaml::duplicate_key",
                                format!("duplicate key `{key}`"),
                            )
                            .label(node.span, "defined again here")
                            .label(first, "first defined here")
                            .help("a key may appear once per mapping; merge the two entries"),
                        );
                    } else {
                        keys.insert(key.clone(), (node.span, None));
                    }
                    *pending_key = Some((key, node.span));
                }
                Some((key, key_span)) => {
                    // A duplicate keeps its first value so later checks see one consistent map.
                    let slot = keys.get_mut(&key).map(|(_, entry)| entry);
                    if let Some(entry @ None) = slot {
                        *entry = Some(entries.len());
                        entries.push(Entry {
                            key,
                            key_span,
                            value: node,
                        });
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Node {
        let (node, diags) = parse(FileId(0), text);
        assert!(diags.is_empty(), "{diags:?}");
        node.unwrap()
    }

    #[test]
    fn spans_point_at_keys_and_values() {
        let text = "a: 1\nb:\n  c: [x, 'y']\n";
        let root = parse_ok(text);
        let b = root.entry("b").unwrap();
        assert_eq!(&text[b.key_span.range()], "b");
        let c = b.value.get("c").unwrap();
        let y = c.index(1).unwrap();
        assert_eq!(&text[y.span.range()], "'y'");
        assert_eq!(y.scalar_type(), Some(ScalarType::String));
        assert_eq!(
            root.get("a").unwrap().scalar_type(),
            Some(ScalarType::Integer)
        );
    }

    #[test]
    fn every_duplicate_key_is_reported() {
        let (_, diags) = parse(FileId(0), "a: 1\na: 2\nb: {c: 1, c: 2}\n");
        let codes: Vec<_> = diags.iter().map(|d| d.code).collect();
        assert_eq!(
            codes,
            ["wepoq::yaml::duplicate_key", "wepoq::yaml::duplicate_key"]
        );
    }

    #[test]
    fn syntax_error_has_a_span() {
        let (node, diags) = parse(FileId(0), "a: [1, 2\nb: 3\n");
        assert!(node.is_none());
        assert_eq!(diags[0].code, "wepoq::yaml::syntax");
        assert_eq!(diags[0].labels.len(), 1);
    }

    #[test]
    fn scalars_resolve_by_the_core_schema() {
        assert_eq!(resolve_scalar("80/tcp", false), ScalarType::String);
        assert_eq!(resolve_scalar("-12", false), ScalarType::Integer);
        assert_eq!(resolve_scalar("1.5", false), ScalarType::Float);
        assert_eq!(resolve_scalar("~", false), ScalarType::Null);
        assert_eq!(resolve_scalar("true", true), ScalarType::String);
    }
}
