//! The data-driven cases: every directory under tests/data and examples/ compiles to a plan
//! (human and JSON), a zone and a lockfile, or to diagnostics; each is snapshotted.

use wepoq_compiler::diagnostic::render_plain;
use wepoq_compiler::{plan_json, render};

use crate::support::{cases, check_zone, require};

#[test]
fn every_case_matches_its_snapshots() {
    let mut seen = 0;
    for case in cases() {
        seen += 1;
        let (sources, result) = case.compile();
        match (case.is_bad(), result) {
            (true, Err(diagnostics)) => {
                assert!(
                    diagnostics.iter().any(|d| d.is_error()),
                    "{}: failed without an error",
                    case.name
                );
                for d in &diagnostics {
                    assert!(
                        !d.labels.is_empty(),
                        "{}: `{}` points nowhere",
                        case.name,
                        d.code
                    );
                    assert!(
                        d.code.starts_with("wepoq::"),
                        "{}: unstable code {}",
                        case.name,
                        d.code
                    );
                }
                insta::assert_snapshot!(
                    format!("{}__diagnostics", case.name),
                    render_plain(&diagnostics, &sources)
                );
            }
            (true, Ok(_)) => panic!("{}: a bad case compiled", case.name),
            (false, Err(diagnostics)) => {
                panic!("{}: {}", case.name, render_plain(&diagnostics, &sources))
            }
            (false, Ok(compiled)) => {
                let plan = compiled.plan_from_nothing();
                insta::assert_snapshot!(
                    format!("{}__plan", case.name),
                    render::human(&plan, false)
                );
                insta::assert_snapshot!(
                    format!("{}__plan_json", case.name),
                    plan_json::to_json_text(&plan)
                );
                for ns in &compiled.namespaces {
                    insta::assert_snapshot!(
                        format!("{}__{}__zone", case.name, ns.namespace.name),
                        &ns.zone
                    );
                    insta::assert_snapshot!(
                        format!("{}__{}__lock", case.name, ns.namespace.name),
                        &ns.lock_text
                    );
                }
                if !compiled.warnings.is_empty() {
                    insta::assert_snapshot!(
                        format!("{}__warnings", case.name),
                        render_plain(&compiled.warnings, &sources)
                    );
                }
            }
        }
    }
    assert!(seen >= 20, "only {seen} cases found");
}

#[test]
fn committed_example_lockfiles_are_current() {
    for case in cases().iter().filter(|c| c.name.starts_with("example-")) {
        let (_, result) = case.compile();
        let compiled = result.unwrap_or_else(|_| panic!("{} compiles", case.name));
        for ns in &compiled.namespaces {
            assert!(
                !ns.lock_changed,
                "{}: wepoq.lock is out of date; run `wepoq check` on it and commit the lockfile",
                case.name
            );
        }
    }
}

#[test]
fn every_zone_passes_named_checkzone() {
    if !require("named-checkzone", "zones must load in BIND") {
        return;
    }
    let mut checked = 0;
    for case in cases().iter().filter(|c| !c.is_bad()) {
        let (_, result) = case.compile();
        for ns in result.unwrap().namespaces {
            check_zone(&ns.owner(), &ns.zone)
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", case.name, ns.zone));
            checked += 1;
        }
    }
    assert!(checked >= 8);
}

#[test]
fn seed_names_are_produced() {
    let find = |case: &str| {
        cases()
            .into_iter()
            .find(|c| c.name == case)
            .unwrap()
            .compile()
            .1
            .unwrap()
    };
    let vote = &find("example-ovn-vote").namespaces[0];
    let rooms = &find("example-roominator").namespaces[0];
    for name in [
        "c3.cli.result.ovn-vote",
        "vip.svr.result.ovn-vote",
        "vip.svr.ctl.ovn-vote",
    ] {
        assert!(
            vote.zone
                .lines()
                .any(|l| l.starts_with(&format!("{name} "))),
            "{name} missing"
        );
    }
    for name in [
        "vip.svr.ctl",
        "vip.svr.ctl.roominator",
        "c32.cli.ctl.roominator",
        "c1.cli.ctl.room3.roominator",
        "vip.svr.ctl.room3.roominator",
    ] {
        assert!(
            rooms
                .zone
                .lines()
                .any(|l| l.starts_with(&format!("{name} "))),
            "{name} missing"
        );
    }
    // The result VIP balances over exactly three servers.
    let lb = vote
        .rows
        .iter()
        .find(|r| r.key.name == "lb.tcp.result.ovn-vote.ns")
        .unwrap();
    let vips = lb.column("vips").unwrap().to_string();
    assert_eq!(vips.matches(":80").count(), 4, "{vips}");
}
