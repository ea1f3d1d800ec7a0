//! Checks a YAML tree against the generated JSON Schema and reports every mismatch at once:
//! unknown keys (with "did you mean"), missing keys, wrong types, numbers out of range.
//!
//! Why not let serde do it: serde stops at the first error. Driving the check from the
//! schema keeps one source of truth: the Rust types in `spec`.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::diagnostic::Diagnostic;
use crate::source::Span;
use crate::suggest::nearest;
use crate::yaml::{Node, NodeKind, ScalarType};

/// The outcome of a shape check: the problems, and the nodes they make unusable.
pub struct Checked {
    pub diagnostics: Vec<Diagnostic>,
    /// Nodes to leave out when the tree is read anyway, so the later checks still run on
    /// everything that is sound: unknown keys are dropped (`None`), bad values stand in as a
    /// neutral value of the expected type (`Some`), so required keys stay present.
    pub rejected: HashMap<Span, Option<Value>>,
    /// Required keys that are missing, per mapping (by its span), with a neutral value to
    /// read in their place: the rest of the mapping is still checked (a `runtime` without
    /// `image` still has its `min_warm` and `idle_timeout` checked in the same run).
    pub filled: HashMap<Span, Vec<(String, Value)>>,
}

pub fn check(root: &Node, schema: &Value) -> Checked {
    let mut checker = Checker {
        schema,
        diagnostics: Vec::new(),
        rejected: HashMap::new(),
        filled: HashMap::new(),
    };
    checker.node(root, schema, "the spec");
    Checked {
        diagnostics: checker.diagnostics,
        rejected: checker.rejected,
        filled: checker.filled,
    }
}

/// The tree as JSON without the rejected nodes: what serde reads when the shape check failed,
/// so that names, networks, ports and calls are still checked in the same run.
pub fn pruned_json(node: &Node, checked: &Checked) -> Value {
    if let Some(Some(stand_in)) = checked.rejected.get(&node.span) {
        return stand_in.clone();
    }
    match &node.kind {
        NodeKind::Map(entries) => {
            let mut object: Map<String, Value> = entries
                .iter()
                .filter(|e| !checked.rejected.contains_key(&e.key_span))
                .map(|e| (e.key.clone(), pruned_json(&e.value, checked)))
                .collect();
            for (key, value) in checked.filled.get(&node.span).into_iter().flatten() {
                object.insert(key.clone(), value.clone());
            }
            Value::Object(object)
        }
        NodeKind::Seq(items) => {
            Value::Array(items.iter().map(|i| pruned_json(i, checked)).collect())
        }
        NodeKind::Scalar { value, .. } => match node.scalar_type() {
            Some(ScalarType::Null) => Value::Null,
            Some(ScalarType::Bool) => Value::Bool(value.eq_ignore_ascii_case("true")),
            Some(ScalarType::Integer) => parse_int(value)
                .and_then(|n| i64::try_from(n).ok())
                .map_or(Value::Null, Value::from),
            Some(ScalarType::Float) => value
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or(Value::Null, Value::Number),
            _ => Value::String(value.clone()),
        },
    }
}

struct Checker<'s> {
    schema: &'s Value,
    diagnostics: Vec<Diagnostic>,
    rejected: HashMap<Span, Option<Value>>,
    filled: HashMap<Span, Vec<(String, Value)>>,
}

impl<'s> Checker<'s> {
    /// A neutral value for a missing key of this schema, itself holding the keys it requires.
    fn filler(&self, schema: &'s Value, depth: usize) -> Value {
        let schema = self.resolve(schema);
        let types: Vec<&str> = match schema.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let mut value = stand_in(schema, &types);
        if let Value::Object(object) = &mut value
            && depth < 8
        {
            let required = schema.get("required").and_then(Value::as_array);
            for key in required.into_iter().flatten().filter_map(Value::as_str) {
                if let Some(prop) = schema.get("properties").and_then(|p| p.get(key)) {
                    object.insert(key.to_string(), self.filler(prop, depth + 1));
                }
            }
        }
        value
    }

    fn resolve(&self, mut schema: &'s Value) -> &'s Value {
        // `$ref`s in a schemars schema point into `$defs`; follow them (no cycles reach here
        // without passing a node, so this loop ends).
        for _ in 0..16 {
            match schema.get("$ref").and_then(Value::as_str) {
                Some(r) => {
                    let name = r.trim_start_matches("#/$defs/");
                    schema = &self.schema["$defs"][name];
                }
                None => break,
            }
        }
        schema
    }

    fn node(&mut self, node: &Node, schema: &'s Value, what: &str) {
        let schema = self.resolve(schema);
        // Option<T> comes out as anyOf [T, null].
        if let Some(branches) = schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))
            .and_then(Value::as_array)
        {
            let is_null = node.scalar_type() == Some(ScalarType::Null);
            let allows_null = branches
                .iter()
                .any(|b| b.get("type") == Some(&Value::from("null")));
            if is_null && allows_null {
                return;
            }
            if let Some(branch) = branches
                .iter()
                .find(|b| b.get("type") != Some(&Value::from("null")))
            {
                self.node(node, branch, what);
            }
            return;
        }
        let Some(expected) = schema.get("type") else {
            return;
        };
        let types: Vec<&str> = match expected {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => return,
        };
        if !types.iter().any(|t| matches_type(node, t)) {
            if types == ["null"] {
                return;
            }
            let wanted = types
                .iter()
                .filter(|t| **t != "null")
                .map(|t| type_word(t))
                .collect::<Vec<_>>()
                .join(" or ");
            self.rejected
                .insert(node.span, Some(self.filler(schema, 0)));
            self.diagnostics.push(
                Diagnostic::error(
                    "wepoq::spec::type",
                    format!("{what} must be {wanted}, found {}", node.type_name()),
                )
                .label(node.span, format!("expected {wanted}"))
                .help(describe(schema).unwrap_or_else(|| format!("write {wanted} here"))),
            );
            return;
        }
        match &node.kind {
            NodeKind::Map(entries) => self.mapping(node, entries, schema, what),
            NodeKind::Seq(items) => {
                if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                    && (items.len() as u64) < min
                {
                    self.diagnostics.push(
                        Diagnostic::error(
                            "wepoq::spec::too_few",
                            format!("{what} needs at least {min} item(s)"),
                        )
                        .label(node.span, "empty list")
                        .help(describe(schema).unwrap_or_default()),
                    );
                }
                if let Some(item_schema) = schema.get("items") {
                    for item in items {
                        self.node(item, item_schema, &format!("an item of {what}"));
                    }
                }
            }
            NodeKind::Scalar { value, .. } => self.scalar(node, value, schema, what),
        }
    }

    fn mapping(
        &mut self,
        node: &Node,
        entries: &[crate::yaml::Entry],
        schema: &'s Value,
        what: &str,
    ) {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or_else(|| EMPTY.get_or_init(Map::new));
        let additional = schema.get("additionalProperties");
        for entry in entries {
            if let Some(prop) = properties.get(&entry.key) {
                self.node(&entry.value, prop, &format!("`{}`", entry.key));
                continue;
            }
            match additional {
                Some(Value::Bool(false)) => {
                    self.rejected.insert(entry.key_span, None);
                    let known: Vec<&str> = properties.keys().map(String::as_str).collect();
                    let mut d = Diagnostic::error(
                        "wepoq::spec::unknown_key",
                        format!("unknown key `{}` in {what}", entry.key),
                    )
                    .label(entry.key_span, "not a known key");
                    d = match nearest(&entry.key, known.iter().copied()) {
                        Some(near) => d.help(format!("did you mean `{near}`?")),
                        None => d.help(format!("known keys here: {}", known.join(", "))),
                    };
                    self.diagnostics.push(d);
                }
                Some(item) if item.is_object() => {
                    self.node(&entry.value, item, &format!("`{}`", entry.key))
                }
                _ => {}
            }
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for key in required.iter().filter_map(Value::as_str) {
                if node.entry(key).is_none() {
                    let help = properties
                        .get(key)
                        .and_then(|p| describe(self.resolve(p)))
                        .unwrap_or_default();
                    if let Some(prop) = properties.get(key) {
                        let filler = self.filler(prop, 0);
                        self.filled
                            .entry(node.span)
                            .or_default()
                            .push((key.to_string(), filler));
                    }
                    self.diagnostics.push(
                        Diagnostic::error(
                            "wepoq::spec::missing_key",
                            format!("{what} needs the key `{key}`"),
                        )
                        .label(node.span, format!("`{key}` is missing here"))
                        .help(help),
                    );
                }
            }
        }
    }

    fn scalar(&mut self, node: &Node, value: &str, schema: &Value, what: &str) {
        if node.scalar_type() == Some(ScalarType::Integer) {
            let Some(n) = parse_int(value) else {
                self.rejected
                    .insert(node.span, Some(stand_in(schema, &["integer"])));
                self.diagnostics.push(
                    Diagnostic::error("wepoq::spec::range", format!("{what} is too large"))
                        .label(node.span, "out of range"),
                );
                return;
            };
            let min = schema.get("minimum").and_then(Value::as_i64);
            let max = schema.get("maximum").and_then(Value::as_i64);
            if min.is_some_and(|m| n < i128::from(m)) || max.is_some_and(|m| n > i128::from(m)) {
                let range = match (min, max) {
                    (Some(a), Some(b)) => format!("from {a} to {b}"),
                    (Some(a), None) => format!("at least {a}"),
                    (None, Some(b)) => format!("at most {b}"),
                    (None, None) => unreachable!(),
                };
                self.rejected
                    .insert(node.span, Some(stand_in(schema, &["integer"])));
                self.diagnostics.push(
                    Diagnostic::error(
                        "wepoq::spec::range",
                        format!("{what} must be {range}, found {value}"),
                    )
                    .label(node.span, format!("must be {range}"))
                    .help(describe(schema).unwrap_or_default()),
                );
            }
        }
        if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
            let words: Vec<&str> = choices.iter().filter_map(Value::as_str).collect();
            if !words.contains(&value) {
                let listed = words
                    .iter()
                    .map(|w| format!("`{w}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let help = match nearest(value, words.iter().copied()) {
                    Some(near) => format!("did you mean `{near}`?"),
                    None => describe(schema).unwrap_or_default(),
                };
                self.rejected.insert(
                    node.span,
                    Some(choices.first().cloned().unwrap_or(Value::Null)),
                );
                self.diagnostics.push(
                    Diagnostic::error(
                        "wepoq::spec::choice",
                        format!("{what} must be one of {listed}, found `{value}`"),
                    )
                    .label(node.span, "not one of the choices")
                    .help(help),
                );
                return;
            }
        }
        if node.scalar_type() == Some(ScalarType::String)
            && let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && (value.chars().count() as u64) < min
        {
            self.diagnostics.push(
                Diagnostic::error("wepoq::spec::empty", format!("{what} must not be empty"))
                    .label(node.span, "empty"),
            );
        }
    }
}

/// A harmless value of the expected type, used in place of a bad one.
fn stand_in(schema: &Value, types: &[&str]) -> Value {
    match types.iter().find(|t| **t != "null") {
        Some(&"array") => Value::Array(Vec::new()),
        Some(&"object") => Value::Object(Map::new()),
        Some(&"integer") | Some(&"number") => {
            schema.get("minimum").cloned().unwrap_or(Value::from(0))
        }
        Some(&"boolean") => Value::Bool(false),
        _ => Value::String(String::new()),
    }
}

fn parse_int(value: &str) -> Option<i128> {
    if let Some(hex) = value.strip_prefix("0x") {
        return i128::from_str_radix(hex, 16).ok();
    }
    if let Some(oct) = value.strip_prefix("0o") {
        return i128::from_str_radix(oct, 8).ok();
    }
    value.parse().ok()
}

fn matches_type(node: &Node, ty: &str) -> bool {
    match (&node.kind, ty) {
        (NodeKind::Map(_), "object") | (NodeKind::Seq(_), "array") => true,
        (NodeKind::Scalar { .. }, _) => {
            let st = node.scalar_type();
            match ty {
                "string" => st == Some(ScalarType::String),
                "integer" => st == Some(ScalarType::Integer),
                "number" => matches!(st, Some(ScalarType::Integer | ScalarType::Float)),
                "boolean" => st == Some(ScalarType::Bool),
                "null" => st == Some(ScalarType::Null),
                _ => false,
            }
        }
        _ => false,
    }
}

fn type_word(ty: &str) -> &'static str {
    match ty {
        "object" => "a mapping",
        "array" => "a list",
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean",
        _ => "something else",
    }
}

/// The first sentence of a schema description, as help text (a sentence ends at a period
/// followed by a capital, so "e.g. `80/tcp`" stays whole).
fn describe(schema: &Value) -> Option<String> {
    let text = schema.get("description")?.as_str()?.replace('\n', " ");
    let bytes = text.as_bytes();
    let end = (0..bytes.len().saturating_sub(2))
        .find(|&i| bytes[i] == b'.' && bytes[i + 1] == b' ' && bytes[i + 2].is_ascii_uppercase())
        .unwrap_or(text.len());
    Some(text[..end].trim_end_matches('.').to_string())
}
