//! wepoq's compiler: spec texts in, a checked model, OVN Northbound rows and DNS zones out.
//!
//! Architecture invariant: this crate does no I/O. It reads no files, clocks, environment or
//! sockets (a crate-local `clippy.toml` enforces it); the caller hands it texts through
//! [`Sources`] and writes what it returns.
//!
//! Pipeline: `limits` (size, encoding, nesting) → `yaml` (tree with spans) → `shape` (schema check, all errors) → serde into
//! `spec` → `lower` (model + checks) → `alloc` (sticky addresses, `wepoq.lock`) → `emit`
//! (NB rows) → `zone`; `plan` diffs rows, `render`/`plan_json` print plans.

pub mod alloc;
pub mod cidr;
mod collisions;
pub mod containers;
pub mod diagnostic;
pub mod emit;
pub mod graph;
pub mod limits;
pub mod lock;
pub mod lower;
pub mod model;
pub mod names;
pub mod nb;
pub mod plan;
pub mod plan_json;
pub mod render;
pub mod schema;
pub mod shape;
pub mod source;
pub mod spec;
pub mod stub_unit;
pub mod suggest;
pub mod tags;
pub mod yaml;
pub mod zone;

use sha2::{Digest, Sha256};

pub use diagnostic::{Diagnostic, Severity};
pub use source::{FileId, Sources, Span};

/// One namespace to compile: its spec and, when one exists, its lockfile.
#[derive(Debug, Clone, Copy)]
pub struct Input {
    pub spec: FileId,
    pub lock: Option<FileId>,
}

/// Everything the compiler derives for one namespace.
#[derive(Debug, Clone)]
pub struct CompiledNamespace {
    pub namespace: model::Namespace,
    pub rows: Vec<nb::Row>,
    pub endpoints: Vec<emit::Endpoint>,
    pub runtime: Vec<emit::RuntimeUnit>,
    pub containers: Vec<containers::ContainerUnit>,
    pub zone: String,
    /// The lockfile text recording this compilation's allocations.
    pub lock_text: String,
    /// Whether `lock_text` differs from the lockfile given (or none was given).
    pub lock_changed: bool,
}

impl CompiledNamespace {
    pub fn owner(&self) -> String {
        self.namespace.fqdn()
    }
}

#[derive(Debug, Clone)]
pub struct Compiled {
    pub namespaces: Vec<CompiledNamespace>,
    /// Warnings only; errors make [`compile`] fail.
    pub warnings: Vec<Diagnostic>,
    /// `sha256:` over the spec texts and their allocations, in input order.
    pub spec_hash: String,
}

impl Compiled {
    /// The plan that creates everything: the offline plan.
    pub fn plan_from_nothing(&self) -> plan::Plan {
        let mut changes = Vec::new();
        for ns in &self.namespaces {
            changes.extend(plan::diff(&ns.owner(), &ns.rows, &[]));
        }
        let owners: Vec<String> = self
            .namespaces
            .iter()
            .map(CompiledNamespace::owner)
            .collect();
        let desired: Vec<containers::Desired<'_>> = self
            .namespaces
            .iter()
            .flat_map(|ns| &ns.containers)
            .map(|unit| containers::Desired {
                unit,
                image_id: None,
            })
            .collect();
        let containers = containers::diff(&owners, &desired, &[], false)
            .expect("nothing observed, nothing in the way");
        plan::Plan {
            spec_hash: self.spec_hash.clone(),
            namespaces: owners,
            observed: plan::Observed::Nothing,
            changes,
            containers,
        }
    }
}

/// Compiles every input, reporting every problem of every file at once. On error, the list
/// holds errors and warnings, sorted by where they point.
pub fn compile(sources: &Sources, inputs: &[Input]) -> Result<Compiled, Vec<Diagnostic>> {
    let schema = schema::json_schema();
    let mut diagnostics = Vec::new();
    let mut lowered = Vec::new();
    for input in inputs {
        // Checked before parsing, so that such a file is refused at once.
        let refused = limits::check_utf8(sources, input.spec)
            .or_else(|| limits::check_size(sources, input.spec));
        if let Some(refused) = refused {
            diagnostics.push(refused);
            continue;
        }
        let text = sources.text(input.spec);
        let (root, mut found) = yaml::parse(input.spec, text);
        let Some(root) = root else {
            diagnostics.append(&mut found);
            continue;
        };
        let mut shaped = shape::check(&root, &schema);
        found.append(&mut shaped.diagnostics);
        // Duplicate keys and aliases count too: serde-saphyr would only repeat them.
        let shape_failed = found.iter().any(Diagnostic::is_error);
        // The spec is read from the tree already built (a tree with shape errors without the
        // rejected nodes, so the semantic checks below still report what they find): parsing
        // the text again through serde-saphyr cost a third of a large spec's compile. Should
        // a sound tree still not read, serde-saphyr says where.
        let parsed: Result<spec::Spec, Diagnostic> =
            serde_json::from_value(shape::pruned_json(&root, &shaped)).or_else(|e| {
                if shape_failed {
                    Err(Diagnostic::error("wepoq::spec::invalid", e.to_string()))
                } else {
                    serde_saphyr::from_str_with_options(text, limits::parser_options())
                        .map_err(|e| serde_error(input.spec, text, &e))
                }
            });
        let spec = match parsed {
            Ok(spec) => spec,
            Err(e) => {
                diagnostics.append(&mut found);
                // After shape errors, serde's complaint repeats them (a required key gone).
                if !shape_failed {
                    diagnostics.push(e);
                }
                continue;
            }
        };
        let (namespace, mut lowering) = lower::lower(input.spec, &spec, &root);
        if shape_failed {
            // A check on a value that is nowhere in the text is about a stand-in for a key
            // already reported missing (defaults are valid): it would only repeat that.
            lowering.retain(|d| !d.labels.is_empty());
        }
        found.append(&mut lowering);
        let lock = match input.lock {
            Some(lock_file) if sources.invalid_utf8(lock_file).is_some() => {
                found.extend(limits::check_utf8(sources, lock_file));
                lock::Lock::default()
            }
            Some(lock_file) => {
                let (lock, mut lock_diags) = lock::parse(lock_file, sources.text(lock_file));
                found.append(&mut lock_diags);
                lock
            }
            None => lock::Lock::default(),
        };
        if let Some(ns) = namespace {
            let topology = graph::build(&ns);
            found.extend(graph::check_reachability(&ns, &topology));
            lowered.push((ns, lock, *input));
        }
        diagnostics.append(&mut found);
    }
    diagnostics.extend(collisions::check_namespaces(
        lowered.iter().map(|(ns, _, _)| ns),
    ));
    if diagnostics.iter().any(Diagnostic::is_error) {
        diagnostic::sort(&mut diagnostics);
        return Err(diagnostics);
    }

    let mut namespaces = Vec::new();
    for (ns, lock, input) in lowered {
        let (allocation, mut found) = alloc::allocate(&ns, &lock);
        diagnostics.append(&mut found);
        let Some(allocation) = allocation else {
            continue;
        };
        let emitted = emit::emit(&ns, &allocation);
        let zone = zone::render(&ns, &emitted.rows);
        let lock_changed = input
            .lock
            .is_none_or(|f| sources.text(f) != allocation.lock_text);
        namespaces.push(CompiledNamespace {
            namespace: ns,
            rows: emitted.rows,
            endpoints: emitted.endpoints,
            runtime: emitted.runtime,
            containers: emitted.containers,
            zone,
            lock_text: allocation.lock_text,
            lock_changed,
        });
    }
    diagnostics.extend(collisions::check_rows(&namespaces));
    diagnostic::sort(&mut diagnostics);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(diagnostics);
    }
    let spec_hash = spec_hash(sources, inputs, &namespaces);
    Ok(Compiled {
        namespaces,
        warnings: diagnostics,
        spec_hash,
    })
}

/// Hashes what the desired state is made of: the spec texts and the allocations they got
/// (the resulting lockfiles, not the given ones, so a first run and a second agree).
fn spec_hash(sources: &Sources, inputs: &[Input], namespaces: &[CompiledNamespace]) -> String {
    let mut hasher = Sha256::new();
    for input in inputs {
        let text = sources.text(input.spec);
        hasher.update((text.len() as u64).to_be_bytes());
        hasher.update(text.as_bytes());
    }
    for ns in namespaces {
        hasher.update((ns.lock_text.len() as u64).to_be_bytes());
        hasher.update(ns.lock_text.as_bytes());
    }
    let digest = hasher.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// serde-saphyr's error as a diagnostic; the shape check catches nearly everything first,
/// so this is the rare leftover (a value serde reads differently from the schema).
fn serde_error(file: FileId, text: &str, e: &serde_saphyr::Error) -> Diagnostic {
    let span = e.location().and_then(|l| {
        let line = l.line() as usize;
        let col = l.column() as usize;
        let start: usize = text
            .split_inclusive('\n')
            .take(line.saturating_sub(1))
            .map(str::len)
            .sum::<usize>()
            + col.saturating_sub(1);
        (start <= text.len()).then(|| Span::new(file, start..(start + 1).min(text.len())))
    });
    Diagnostic::error(
        "wepoq::spec::invalid",
        format!(
            "the spec does not match wepoq.yaml's schema: {}",
            first_line(&e.to_string())
        ),
    )
    .label(span.unwrap_or(Span::new(file, 0..0)), "here")
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}
