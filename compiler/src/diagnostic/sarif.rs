//! Diagnostics as SARIF 2.1.0 (OASIS), the format code-scanning tools read to annotate pull
//! requests: one run, one rule per diagnostic code, one result per diagnostic.
//!
//! Columns count characters (`columnKind: unicodeCodePoints`); regions end exclusively, as
//! SARIF defines. Labels in other places than the first become related locations.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{Diagnostic, Label};
use crate::source::Sources;

pub const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

pub fn to_sarif(diagnostics: &[Diagnostic], sources: &Sources) -> Value {
    let codes: BTreeMap<&str, usize> = diagnostics
        .iter()
        .map(|d| d.code)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .enumerate()
        .map(|(i, c)| (c, i))
        .collect();
    let rules: Vec<Value> = codes
        .keys()
        .map(|code| json!({"id": code, "shortDescription": {"text": code}}))
        .collect();
    let results: Vec<Value> = diagnostics
        .iter()
        .map(|d| result(d, codes[d.code], sources))
        .collect();
    json!({
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "wepoq",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    })
}

pub fn to_sarif_text(diagnostics: &[Diagnostic], sources: &Sources) -> String {
    let mut text =
        serde_json::to_string_pretty(&to_sarif(diagnostics, sources)).expect("SARIF serializes");
    text.push('\n');
    text
}

fn result(d: &Diagnostic, rule_index: usize, sources: &Sources) -> Value {
    let mut r = Map::new();
    r.insert("ruleId".into(), json!(d.code));
    r.insert("ruleIndex".into(), json!(rule_index));
    r.insert("level".into(), json!(d.severity.as_str()));
    r.insert("message".into(), json!({"text": d.message}));
    let (first, rest) = match d.labels.split_first() {
        Some((first, rest)) => (vec![location(first, sources)], rest),
        None => (Vec::new(), &[][..]),
    };
    r.insert("locations".into(), Value::Array(first));
    if !rest.is_empty() {
        let related = rest
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mut loc = location(l, sources);
                loc["id"] = json!(i + 1);
                loc
            })
            .collect();
        r.insert("relatedLocations".into(), Value::Array(related));
    }
    if let Some(help) = &d.help {
        r.insert("properties".into(), json!({"help": help}));
    }
    Value::Object(r)
}

fn location(l: &Label, sources: &Sources) -> Value {
    let start = sources.line_col(l.span.file, l.span.start);
    let end = sources.line_col(l.span.file, l.span.end);
    let mut loc = json!({
        "physicalLocation": {
            "artifactLocation": {"uri": uri(sources.name(l.span.file))},
            "region": {
                "startLine": start.line,
                "startColumn": start.column,
                "endLine": end.line,
                "endColumn": end.column,
            },
        },
    });
    if !l.text.is_empty() {
        loc["message"] = json!({"text": l.text});
    }
    loc
}

/// A file name as a URI reference: relative paths stay relative (to where wepoq ran),
/// absolute ones become `file://` URIs; anything but unreserved characters and `/` is
/// percent-encoded.
fn uri(name: &str) -> String {
    let name = name.replace('\\', "/");
    let mut out = String::from(if name.starts_with('/') { "file://" } else { "" });
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_encoded_references() {
        assert_eq!(uri("specs/a b/wepoq.yaml"), "specs/a%20b/wepoq.yaml");
        assert_eq!(uri("/tmp/x/wepoq.yaml"), "file:///tmp/x/wepoq.yaml");
        assert_eq!(uri("ü.yaml"), "%C3%BC.yaml");
    }
}
