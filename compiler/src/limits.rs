//! wepoq's own limits on what it reads, checked before (size, encoding) and while (nesting,
//! nodes) the YAML is parsed, so that an oversized or hostile file is refused quickly, with
//! wepoq's message and a stable code, rather than by a parser's internal budget.
//!
//! They are far above any real spec: a namespace of 20,000 services written out in full is
//! about 4 MiB and 600,000 nodes, and holds 100,000 endpoints or more (see the README).

use crate::diagnostic::Diagnostic;
use crate::source::{FileId, Sources, Span};

/// The largest spec, in bytes.
pub const MAX_SPEC_BYTES: usize = 16 << 20;
/// The deepest nesting of mappings and lists in a spec (the top-level mapping is 1).
pub const MAX_DEPTH: usize = 48;
/// The most YAML nodes in a spec: scalars (keys count), lists and mappings.
pub const MAX_NODES: usize = 1_000_000;

/// Text that is not UTF-8, pointed at by line and column (and byte offset: a file may be one
/// long line). Nothing else is read from such a file.
pub fn check_utf8(sources: &Sources, file: FileId) -> Option<Diagnostic> {
    let bad = sources.invalid_utf8(file)?;
    let at = sources.line_col(file, bad.offset);
    let more = match bad.count {
        1 => String::new(),
        n => format!(" ({} more invalid sequence(s) after it)", n - 1),
    };
    // In the text, the sequence stands as one U+FFFD.
    let span = Span::new(file, bad.offset..bad.offset + '\u{fffd}'.len_utf8());
    Some(
        Diagnostic::error(
            "wepoq::text::utf8",
            format!(
                "{} is not UTF-8: invalid byte sequence at line {}, column {} (byte offset {}){more}",
                sources.name(file),
                at.line,
                at.column,
                bad.offset
            ),
        )
        .label(span, format!("{} byte(s) that are not UTF-8", bad.len))
        .help("save the file as UTF-8; nothing else in this file was checked"),
    )
}

/// A spec larger than [`MAX_SPEC_BYTES`], pointed at where the limit falls.
pub fn check_size(sources: &Sources, file: FileId) -> Option<Diagnostic> {
    let text = sources.text(file);
    if text.len() <= MAX_SPEC_BYTES {
        return None;
    }
    let mut at = MAX_SPEC_BYTES;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let end = text[at..].chars().next().map_or(at, |c| at + c.len_utf8());
    Some(
        Diagnostic::error(
            "wepoq::limit::size",
            format!(
                "the spec is {} bytes; wepoq reads specs of at most {MAX_SPEC_BYTES} bytes (16 MiB)",
                text.len()
            ),
        )
        .label(Span::new(file, at..end), "the limit is reached here")
        .help("split the namespace into several specs (one namespace each); nothing in this file was checked"),
    )
}

pub fn too_deep(span: Span) -> Diagnostic {
    Diagnostic::error(
        "wepoq::limit::depth",
        format!("the spec nests deeper than {MAX_DEPTH} levels of mappings and lists"),
    )
    .label(span, format!("this value is level {}", MAX_DEPTH + 1))
    .help("a spec needs a handful of levels per scope; nothing else in this file was checked")
}

pub fn too_many_nodes(span: Span) -> Diagnostic {
    Diagnostic::error(
        "wepoq::limit::nodes",
        format!("the spec holds more than {MAX_NODES} YAML nodes (keys, values, lists and mappings)"),
    )
    .label(span, format!("node {}", MAX_NODES + 1))
    .help("split the namespace into several specs (one namespace each); nothing else in this file was checked")
}

/// serde-saphyr's budget, raised so that it never refuses what wepoq's limits accept: wepoq
/// checks first and says why in its own words.
pub fn parser_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = MAX_NODES + 1;
    budget.max_events = 2 * MAX_NODES + 16;
    budget.max_depth = MAX_DEPTH + 16;
    budget.max_total_scalar_bytes = MAX_SPEC_BYTES + 1;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}
