//! The human plan: `+`/`~`/`-` per row with its field values and a Terraform-style summary.
//! Colour only when the caller asks (the CLI asks on a terminal without NO_COLOR).

use std::fmt::Write;

use crate::containers::ContainerAction;
use crate::nb::{Atom, AtomMap, Value};
use crate::plan::{Action, FieldChange, Observed, Plan};

const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

pub fn human(plan: &Plan, color: bool) -> String {
    let paint = |code: &str, text: &str| {
        if color {
            format!("{code}{text}{RESET}")
        } else {
            text.to_string()
        }
    };
    let mut out = String::new();
    let against = match &plan.observed {
        Observed::Nothing => "an empty state (offline)".to_string(),
        Observed::Live { .. } => "the live Northbound database".to_string(),
    };
    let _ = writeln!(
        out,
        "wepoq plan for {} against {against}",
        plan.namespaces.join(", ")
    );
    let _ = writeln!(out);
    let width = plan
        .changes
        .iter()
        .flat_map(|c| c.fields.iter().map(|f| f.column.len()))
        .max()
        .unwrap_or(0);
    for change in &plan.changes {
        let (symbol, code) = match change.action {
            Action::Create => ("+", GREEN),
            Action::Update => ("~", YELLOW),
            Action::Destroy => ("-", RED),
        };
        let _ = writeln!(
            out,
            "  {} {} {}",
            paint(code, symbol),
            paint(BOLD, change.key.table.name()),
            change.key.name
        );
        match change.action {
            Action::Create => {
                // Empty values (an endpoint's `type`, `options`) are noise to a reader.
                for f in &change.fields {
                    match &f.after {
                        Some(Value::Set(s)) if s.is_empty() => {}
                        Some(Value::Map(m)) if m.is_empty() => {}
                        Some(Value::Atom(Atom::String(s))) if s.is_empty() => {}
                        Some(after) => {
                            let _ = writeln!(out, "      {:width$} = {after}", f.column);
                        }
                        None => {}
                    }
                }
            }
            Action::Update => {
                for f in &change.fields {
                    field_update(&mut out, f, width, &paint);
                }
            }
            Action::Destroy => {}
        }
    }
    containers(&mut out, plan, &paint);
    let s = plan.summary();
    if s.is_empty() {
        let _ = writeln!(out, "No changes: the state matches the spec.");
    } else {
        if !plan.changes.is_empty() || !plan.containers.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "Plan: {} to add, {} to change, {} to destroy.",
            s.add, s.change, s.destroy
        );
    }
    out
}

/// Containers after the rows they attach to: what is created with its image, endpoint and
/// address; what is replaced or started with the reason.
fn containers(out: &mut String, plan: &Plan, paint: &dyn Fn(&str, &str) -> String) {
    for change in &plan.containers {
        let (symbol, code) = match change.action {
            ContainerAction::Create => ("+", GREEN),
            ContainerAction::Replace => ("-/+", YELLOW),
            ContainerAction::Start => ("~", YELLOW),
            ContainerAction::Remove => ("-", RED),
        };
        let why = change
            .reason
            .as_ref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} {} {}{why}",
            paint(code, symbol),
            paint(BOLD, "Container"),
            change.name
        );
        if let (ContainerAction::Create | ContainerAction::Replace, Some(unit)) =
            (change.action, &change.unit)
        {
            let c = &unit.container;
            let _ = writeln!(out, "      image    = {}", c.image);
            let _ = writeln!(out, "      endpoint = {}", unit.endpoint);
            let _ = writeln!(
                out,
                "      address  = {} {}/{} via {}",
                unit.mac, unit.ip, unit.prefix, unit.gateway
            );
            if let Some(cmd) = &c.entrypoint {
                let _ = writeln!(out, "      entrypoint = {cmd:?}");
            }
            if let Some(cmd) = &c.command {
                let _ = writeln!(out, "      command  = {cmd:?}");
            }
            if !c.env.is_empty() {
                let env: Vec<String> = c.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = writeln!(out, "      env      = {env:?}");
            }
            if let Some(user) = &c.user {
                let _ = writeln!(out, "      user     = {user}");
            }
            let limits: Vec<String> = [
                c.memory_bytes
                    .map(|b| format!("memory {} MiB", b as f64 / 1048576.0)),
                c.nano_cpus.map(|n| format!("cpus {}", n as f64 / 1e9)),
            ]
            .into_iter()
            .flatten()
            .collect();
            if !limits.is_empty() {
                let _ = writeln!(out, "      limits   = {}", limits.join(", "));
            }
            if c.docker_network {
                let _ = writeln!(out, "      network  = OVN and Docker's default bridge");
            }
            for m in &c.run_mounts {
                let _ = writeln!(
                    out,
                    "      mount    = <run dir>/{} at {}",
                    m.source, m.target
                );
            }
            if let Some(workers) = c.labels.get(crate::stub_unit::RUNTIME_LABEL) {
                let _ = writeln!(out, "      workers  = {workers}");
            }
        }
    }
}

fn field_update(
    out: &mut String,
    f: &FieldChange,
    width: usize,
    paint: &dyn Fn(&str, &str) -> String,
) {
    // Reference sets change by membership; show just the members that come and go.
    if let (Some(Value::Set(_)) | None, Some(Value::Set(_)) | None) = (&f.before, &f.after)
        && let Some((added, removed)) = f.set_delta()
    {
        if !added.is_empty() {
            let _ = writeln!(
                out,
                "      {:width$} {} {}",
                f.column,
                paint(GREEN, "+="),
                Value::Set(added)
            );
        }
        if !removed.is_empty() {
            let _ = writeln!(
                out,
                "      {:width$} {} {}",
                f.column,
                paint(RED, "-="),
                Value::Set(removed)
            );
        }
        return;
    }
    if let (Some(Value::Map(before)), Some(Value::Map(after))) = (&f.before, &f.after) {
        map_update(out, &f.column, before, after, paint);
        return;
    }
    let before = f
        .before
        .as_ref()
        .map_or_else(|| "(none)".to_string(), ToString::to_string);
    let after = f
        .after
        .as_ref()
        .map_or_else(|| "(none)".to_string(), ToString::to_string);
    let _ = writeln!(
        out,
        "      {:width$} = {before} {} {after}",
        f.column,
        paint(YELLOW, "->")
    );
}

fn map_update(
    out: &mut String,
    column: &str,
    before: &AtomMap,
    after: &AtomMap,
    paint: &dyn Fn(&str, &str) -> String,
) {
    let keys: std::collections::BTreeSet<&Atom> = before.keys().chain(after.keys()).collect();
    for k in keys {
        match (before.get(k), after.get(k)) {
            (Some(a), Some(b)) if a != b => {
                let _ = writeln!(out, "      {column}[{k}] = {a} {} {b}", paint(YELLOW, "->"));
            }
            (None, Some(b)) => {
                let _ = writeln!(out, "      {column}[{k}] {} {b}", paint(GREEN, "+="));
            }
            (Some(a), None) => {
                let _ = writeln!(out, "      {column}[{k}] {} {a}", paint(RED, "-="));
            }
            _ => {}
        }
    }
}
