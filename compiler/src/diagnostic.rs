//! The one diagnostic type: a stable code, a message, labelled spans, help. `report` renders
//! them for people (through miette), `json` and `sarif` for pipelines.
//!
//! Checks build diagnostics with the builder methods and push them into a list: errors are
//! plural, and the user sees every one of them in a single run.

pub mod json;
pub mod report;
pub mod sarif;
pub mod summary;

use crate::source::Span;

pub use report::{Render, Report, render, render_plain};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub span: Span,
    pub text: String,
}

/// A problem found in the input. `code` is stable (e.g. `wepoq::net::cidr_overlap`) so that
/// tooling and docs can refer to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    pub labels: Vec<Label>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            labels: Vec::new(),
            help: None,
        }
    }

    pub fn warning(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message)
        }
    }

    pub fn label(mut self, span: Span, text: impl Into<String>) -> Diagnostic {
        self.labels.push(Label {
            span,
            text: text.into(),
        });
        self
    }

    /// Adds a label when the span is known; spans are missing only for synthesised input.
    pub fn label_opt(self, span: Option<Span>, text: impl Into<String>) -> Diagnostic {
        match span {
            Some(span) => self.label(span, text),
            None => self,
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Sort key: by file and position, so output order follows the text, not check order.
    fn sort_key(&self) -> (usize, usize, &'static str) {
        match self.labels.first() {
            Some(l) => (l.span.file.0, l.span.start, self.code),
            None => (usize::MAX, 0, self.code),
        }
    }
}

/// Orders diagnostics by where they point and drops exact duplicates.
pub fn sort(diagnostics: &mut Vec<Diagnostic>) {
    diagnostics.sort_by(|a, b| {
        a.sort_key()
            .cmp(&b.sort_key())
            .then(a.message.cmp(&b.message))
    });
    diagnostics.dedup();
}
