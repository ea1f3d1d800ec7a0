//! Terminal concerns: colour decisions, diagnostics on stderr, atomic file writes.

use std::io::IsTerminal;
use std::path::Path;

use clap::ValueEnum;
use wepoq_compiler::diagnostic::{Render, json, render, sarif};
use wepoq_compiler::{Diagnostic, Sources};

/// Colour only on a terminal, and never when NO_COLOR is set to anything non-empty.
pub fn color_for(stream_is_terminal: bool) -> bool {
    stream_is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

pub fn stdout_color() -> bool {
    color_for(std::io::stdout().is_terminal())
}

/// How diagnostics are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people, on stderr: snippets of the spec; warnings of one code beyond 5 counted
    Human,
    /// JSON on stdout (format_version 1, see docs/diagnostics-format.md), every diagnostic
    Json,
    /// SARIF 2.1.0 on stdout, for code-scanning tools, every diagnostic
    Sarif,
}

/// Prints diagnostics: for people on stderr in one write (every error, the first few
/// warnings of each code unless `all_warnings`), or whole in a machine format on stdout.
pub fn print_diagnostics(
    diagnostics: &[Diagnostic],
    sources: &Sources,
    format: Format,
    all_warnings: bool,
) {
    match format {
        Format::Json => print!("{}", json::to_json_text(diagnostics, sources)),
        Format::Sarif => print!("{}", sarif::to_sarif_text(diagnostics, sources)),
        Format::Human => {
            let options = Render {
                color: color_for(std::io::stderr().is_terminal()),
                width: None,
                all_warnings,
            };
            eprint!("{}", render(diagnostics, sources, &options));
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
