//! Reads specs and lockfiles, compiles them, prints diagnostics, and keeps lockfiles current.

use std::path::{Path, PathBuf};

use wepoq_compiler::{Compiled, Input, Sources, compile};

use super::SpecArgs;
use super::output::{Format, print_diagnostics, write_atomically};

pub struct Loaded {
    pub compiled: Compiled,
}

/// Why a command stops; the message is already printed when this is returned.
pub struct Failed;

fn lock_path(spec: &Path) -> PathBuf {
    spec.with_file_name("wepoq.lock")
}

/// Loads and compiles; on success writes changed lockfiles (or refuses with `--locked`).
pub fn load(args: &SpecArgs) -> Result<Loaded, Failed> {
    load_with(args, true, Format::Human)
}

/// As [`load`]; `write_lock: false` leaves lockfiles alone (destroy has nothing to record);
/// `format` is how diagnostics are printed (machine formats go to stdout, whole).
pub fn load_with(args: &SpecArgs, write_lock: bool, format: Format) -> Result<Loaded, Failed> {
    let mut sources = Sources::new();
    let mut inputs = Vec::new();
    let mut lock_paths = Vec::new();
    for spec in &args.specs {
        // Bytes, not a String: text that is not UTF-8 is reported with its position.
        let bytes = match std::fs::read(spec) {
            Ok(bytes) => bytes,
            Err(e) => {
                eprintln!("error: cannot read spec {}: {e}", spec.display());
                if spec == Path::new("wepoq.yaml") {
                    eprintln!(
                        "help: run wepoq where wepoq.yaml is, or name the spec, e.g. `wepoq plan examples/ovn-vote/wepoq.yaml`"
                    );
                }
                return Err(Failed);
            }
        };
        let spec_id = sources.add_bytes(spec.display().to_string(), bytes);
        let lock = lock_path(spec);
        let lock_id = match std::fs::read(&lock) {
            Ok(bytes) => Some(sources.add_bytes(lock.display().to_string(), bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                eprintln!("error: cannot read lockfile {}: {e}", lock.display());
                return Err(Failed);
            }
        };
        inputs.push(Input {
            spec: spec_id,
            lock: lock_id,
        });
        lock_paths.push(lock);
    }
    let compiled = match compile(&sources, &inputs) {
        Ok(compiled) => compiled,
        Err(diagnostics) => {
            print_diagnostics(&diagnostics, &sources, format, args.all_warnings);
            return Err(Failed);
        }
    };
    print_diagnostics(&compiled.warnings, &sources, format, args.all_warnings);

    if !write_lock {
        return Ok(Loaded { compiled });
    }
    let stale: Vec<&PathBuf> = compiled
        .namespaces
        .iter()
        .zip(&lock_paths)
        .filter(|(ns, _)| ns.lock_changed)
        .map(|(_, p)| p)
        .collect();
    if args.locked && !stale.is_empty() {
        for path in stale {
            eprintln!(
                "error: {} would change, and --locked forbids it",
                path.display()
            );
        }
        eprintln!("help: run without --locked and commit the lockfile");
        return Err(Failed);
    }
    for (ns, path) in compiled.namespaces.iter().zip(&lock_paths) {
        if ns.lock_changed {
            if let Err(e) = write_atomically(path, &ns.lock_text) {
                eprintln!("error: cannot write lockfile {}: {e}", path.display());
                return Err(Failed);
            }
            eprintln!(
                "note: wrote {} (commit it next to the spec)",
                path.display()
            );
        }
    }
    Ok(Loaded { compiled })
}
