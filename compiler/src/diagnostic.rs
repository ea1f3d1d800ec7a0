//! The one diagnostic type: a stable code, a message, labelled spans, help; rendered by miette.
//!
//! Checks build diagnostics with the builder methods and push them into a list: errors are
//! plural, and the user sees every one of them in a single run.

use std::fmt;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};

use crate::source::{Sources, Span};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
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

/// A diagnostic bound to its source text, as miette wants it.
#[derive(Debug)]
pub struct Report {
    diagnostic: Diagnostic,
    source: Option<NamedSource<String>>,
    related: Vec<Report>,
}

impl Report {
    /// Binds the diagnostic to the file of its first label. Labels in other files become
    /// related reports so that each one still shows its own snippet.
    pub fn new(diagnostic: Diagnostic, sources: &Sources) -> Report {
        let file = diagnostic.labels.first().map(|l| l.span.file);
        let source = file.map(|f| {
            NamedSource::new(sources.name(f), sources.text(f).to_string()).with_language("yaml")
        });
        let mut related = Vec::new();
        if let Some(file) = file {
            for label in diagnostic.labels.iter().filter(|l| l.span.file != file) {
                let note = Diagnostic {
                    code: diagnostic.code,
                    severity: diagnostic.severity,
                    message: label.text.clone(),
                    labels: vec![label.clone()],
                    help: None,
                };
                related.push(Report::new(note, sources));
            }
        }
        Report {
            diagnostic,
            source,
            related,
        }
    }

    fn own_labels(&self) -> Vec<&Label> {
        let file = self.diagnostic.labels.first().map(|l| l.span.file);
        self.diagnostic
            .labels
            .iter()
            .filter(|l| Some(l.span.file) == file)
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diagnostic.message)
    }
}

impl std::error::Error for Report {}

impl miette::Diagnostic for Report {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.diagnostic.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diagnostic.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.diagnostic
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let labels = self.own_labels();
        if labels.is_empty() {
            return None;
        }
        Some(Box::new(labels.into_iter().map(|l| {
            let text = (!l.text.is_empty()).then(|| l.text.clone());
            LabeledSpan::new_with_span(text, SourceSpan::from(l.span.range()))
        })))
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        if self.related.is_empty() {
            return None;
        }
        Some(Box::new(
            self.related.iter().map(|r| r as &dyn miette::Diagnostic),
        ))
    }
}

/// Renders diagnostics without colour at a fixed width: stable text for snapshots and logs.
pub fn render_plain(diagnostics: &[Diagnostic], sources: &Sources) -> String {
    let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .with_links(false);
    let mut out = String::new();
    for d in diagnostics {
        let report = Report::new(d.clone(), sources);
        // Writing into a String cannot fail.
        let _ = handler.render_report(&mut out, &report);
        out.push('\n');
    }
    out
}
