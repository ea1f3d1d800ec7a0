//! Diagnostics for people: each bound to a window of its source and rendered by miette.
//!
//! Why a window: miette finds a label's line by scanning its source from the first byte, so
//! handing it the whole spec made every diagnostic cost the size of the file, and 20,000
//! warnings on a large spec quadratic. A [`Snippet`] holds only the lines around the labels
//! (found by binary search in the line index of [`Sources`]) and reports positions as if it
//! were the whole file, so the output is the same, at a cost independent of the file's size.

use std::fmt;

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents,
    SourceCode, SourceSpan, SpanContents,
};

use super::summary::{self, Summary};
use super::{Diagnostic, Label, Severity};
use crate::source::{FileId, Sources};

/// Lines kept on each side of the labels: more than the context miette shows (one line), so
/// the window never cuts what it would print.
const WINDOW_MARGIN_LINES: usize = 3;

/// A diagnostic bound to its source text, as miette wants it.
#[derive(Debug)]
pub struct Report {
    diagnostic: Diagnostic,
    source: Option<Snippet>,
    related: Vec<Report>,
}

impl Report {
    /// Binds the diagnostic to the file of its first label. Labels in other files become
    /// related reports so that each one still shows its own snippet.
    pub fn new(diagnostic: Diagnostic, sources: &Sources) -> Report {
        let file = diagnostic.labels.first().map(|l| l.span.file);
        let source = file.map(|f| Snippet::around(sources, f, own(&diagnostic.labels, f)));
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
        match self.diagnostic.labels.first() {
            Some(first) => own(&self.diagnostic.labels, first.span.file).collect(),
            None => Vec::new(),
        }
    }
}

fn own(labels: &[Label], file: FileId) -> impl Iterator<Item = &Label> {
    labels.iter().filter(move |l| l.span.file == file)
}

/// The lines of one file around a diagnostic's labels, standing in for the whole file.
#[derive(Debug)]
struct Snippet {
    name: String,
    text: String,
    /// Byte offset of `text` in the file.
    base: usize,
    /// 0-based line of the file where `text` starts.
    base_line: usize,
}

impl Snippet {
    fn around<'a>(
        sources: &Sources,
        file: FileId,
        labels: impl Iterator<Item = &'a Label>,
    ) -> Snippet {
        let (mut start, mut end) = (usize::MAX, 0);
        for l in labels {
            start = start.min(l.span.start);
            end = end.max(l.span.end);
        }
        let text = sources.text(file);
        let start = start.min(text.len());
        let end = end.clamp(start, text.len());
        let first = sources
            .line_index(file, start)
            .saturating_sub(WINDOW_MARGIN_LINES);
        let last = sources.line_index(file, end) + WINDOW_MARGIN_LINES;
        let base = sources.line_start(file, first);
        let stop = sources.line_start(file, last + 1);
        Snippet {
            name: sources.name(file).to_string(),
            text: text[base..stop].to_string(),
            base,
            base_line: first,
        }
    }
}

impl SourceCode for Snippet {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let offset = span
            .offset()
            .checked_sub(self.base)
            .ok_or(MietteError::OutOfBounds)?;
        let local = SourceSpan::new(offset.into(), span.len());
        let inner = self
            .text
            .read_span(&local, context_lines_before, context_lines_after)?;
        let covered = SourceSpan::new(
            (inner.span().offset() + self.base).into(),
            inner.span().len(),
        );
        Ok(Box::new(
            MietteSpanContents::new_named(
                self.name.clone(),
                inner.data(),
                covered,
                inner.line() + self.base_line,
                inner.column(),
                inner.line_count() + self.base_line,
            )
            .with_language("yaml"),
        ))
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

/// How to render diagnostics for people.
#[derive(Debug, Clone, Copy, Default)]
pub struct Render {
    /// ANSI colours (the CLI decides: a terminal without NO_COLOR).
    pub color: bool,
    /// Wrap at this width; `None` leaves miette's default.
    pub width: Option<usize>,
    /// Show every warning instead of the first few of each code (see [`summary`]).
    pub all_warnings: bool,
}

/// Renders diagnostics in order, each followed by a blank line, then one line per warning
/// code that had more warnings than are shown. Time is linear in the number of diagnostics
/// shown and independent of the size of the files they point into.
pub fn render(diagnostics: &[Diagnostic], sources: &Sources, options: &Render) -> String {
    let theme = if options.color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let mut handler = GraphicalReportHandler::new_themed(theme).with_links(false);
    if let Some(width) = options.width {
        handler = handler.with_width(width);
    }
    let Summary { shown, hidden } = summary::summarise(diagnostics, options.all_warnings);
    let mut out = String::new();
    for d in shown {
        let report = Report::new(d.clone(), sources);
        // Writing into a String cannot fail.
        let _ = handler.render_report(&mut out, &report);
        out.push('\n');
    }
    for h in hidden {
        out.push_str(&h.line());
        out.push('\n');
    }
    out
}

/// Renders without colour at a fixed width: stable text for snapshots and logs.
pub fn render_plain(diagnostics: &[Diagnostic], sources: &Sources) -> String {
    render(
        diagnostics,
        sources,
        &Render {
            color: false,
            width: Some(100),
            all_warnings: false,
        },
    )
}
