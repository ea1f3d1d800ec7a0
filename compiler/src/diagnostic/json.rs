//! Diagnostics as JSON for pipelines: a documented, versioned format (docs/diagnostics-format.md)
//! that `wepoq check --format json` prints. Every diagnostic is in it, none summarised.

use serde_json::{Value, json};

use super::{Diagnostic, Label};
use crate::source::Sources;

pub const FORMAT_VERSION: &str = "1";

pub fn to_json(diagnostics: &[Diagnostic], sources: &Sources) -> Value {
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    json!({
        "format_version": FORMAT_VERSION,
        "summary": {"errors": errors, "warnings": diagnostics.len() - errors},
        "diagnostics": diagnostics.iter().map(|d| diagnostic(d, sources)).collect::<Vec<_>>(),
    })
}

pub fn to_json_text(diagnostics: &[Diagnostic], sources: &Sources) -> String {
    let mut text = serde_json::to_string_pretty(&to_json(diagnostics, sources))
        .expect("diagnostics serialize");
    text.push('\n');
    text
}

fn diagnostic(d: &Diagnostic, sources: &Sources) -> Value {
    json!({
        "code": d.code,
        "severity": d.severity.as_str(),
        "message": d.message,
        "help": d.help,
        "labels": d.labels.iter().map(|l| label(l, sources)).collect::<Vec<_>>(),
    })
}

fn label(l: &Label, sources: &Sources) -> Value {
    let position = |offset: usize| {
        let at = sources.line_col(l.span.file, offset);
        json!({"offset": offset, "line": at.line, "column": at.column})
    };
    json!({
        "file": sources.name(l.span.file),
        "text": l.text,
        "start": position(l.span.start),
        "end": position(l.span.end),
    })
}
