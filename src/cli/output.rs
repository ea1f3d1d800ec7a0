//! Terminal concerns: colour decisions, diagnostics on stderr, atomic file writes.

use std::io::IsTerminal;
use std::path::Path;

use miette::{GraphicalReportHandler, GraphicalTheme};
use wepoq_compiler::diagnostic::Report;
use wepoq_compiler::{Diagnostic, Sources};

/// Colour only on a terminal, and never when NO_COLOR is set to anything non-empty.
pub fn color_for(stream_is_terminal: bool) -> bool {
    stream_is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

pub fn stdout_color() -> bool {
    color_for(std::io::stdout().is_terminal())
}

pub fn print_diagnostics(diagnostics: &[Diagnostic], sources: &Sources) {
    let theme = if color_for(std::io::stderr().is_terminal()) {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme);
    for d in diagnostics {
        let mut out = String::new();
        if handler
            .render_report(&mut out, &Report::new(d.clone(), sources))
            .is_ok()
        {
            eprintln!("{out}");
        }
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    if errors > 0 {
        eprintln!("error: {errors} error(s), {warnings} warning(s); nothing was written");
    }
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.wepoq-tmp.{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
