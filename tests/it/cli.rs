//! The `wepoq` binary as a user runs it: exit codes, files written or not, stable output.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{check_zone, repo, require, temp_dir};

fn wepoq(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wepoq"))
        .args(args)
        .current_dir(dir)
        .env_remove("NO_COLOR")
        .output()
        .unwrap()
}

fn copy_example(name: &str, tag: &str) -> std::path::PathBuf {
    let dir = temp_dir(tag);
    std::fs::copy(
        repo().join("examples").join(name).join("wepoq.yaml"),
        dir.join("wepoq.yaml"),
    )
    .unwrap();
    dir
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn plan_defaults_to_wepoq_yaml_and_writes_the_lockfile() {
    let dir = copy_example("ovn-vote", "plan-default");
    let out = wepoq(&dir, &["plan"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Plan: 126 to add, 0 to change, 0 to destroy."),
        "{}",
        stdout(&out)
    );
    assert!(
        !stdout(&out).contains('\x1b'),
        "no colour when stdout is not a terminal"
    );
    let lock = std::fs::read_to_string(dir.join("wepoq.lock")).unwrap();
    assert_eq!(
        lock,
        std::fs::read_to_string(repo().join("examples/ovn-vote/wepoq.lock")).unwrap()
    );
}

#[test]
fn detailed_exitcode_is_two_when_there_are_changes() {
    let dir = copy_example("roominator", "exitcode");
    assert_eq!(
        wepoq(&dir, &["plan", "--detailed-exitcode"]).status.code(),
        Some(2)
    );
    assert_eq!(wepoq(&dir, &["plan"]).status.code(), Some(0));
}

#[test]
fn locked_refuses_to_change_the_lockfile() {
    let dir = copy_example("ovn-vote", "locked");
    let out = wepoq(&dir, &["plan", "--locked"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--locked"), "{}", stderr(&out));
    assert!(
        !dir.join("wepoq.lock").exists(),
        "nothing written under --locked"
    );
    assert!(wepoq(&dir, &["check"]).status.success());
    assert!(
        wepoq(&dir, &["plan", "--locked"]).status.success(),
        "a current lockfile passes --locked"
    );
}

#[test]
fn errors_exit_one_and_write_nothing() {
    let dir = temp_dir("bad");
    std::fs::copy(
        repo().join("tests/data/bad-unknown-keys/wepoq.yaml"),
        dir.join("wepoq.yaml"),
    )
    .unwrap();
    let out = wepoq(&dir, &["plan", "--out", "plan.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("wepoq::spec::unknown_key"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("did you mean `network`?"),
        "{}",
        stderr(&out)
    );
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        ["wepoq.yaml"],
        "nothing but the spec in {}",
        dir.display()
    );
    let missing = wepoq(&dir, &["check", "nope.yaml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("nope.yaml"));
}

#[test]
fn plans_are_byte_stable_and_saved_json_matches_printed_json() {
    let dir = copy_example("roominator", "stable");
    let first = wepoq(&dir, &["plan", "--json", "--out", "saved.json"]);
    let second = wepoq(&dir, &["plan", "--json"]);
    assert!(first.status.success());
    assert!(
        first.stdout == second.stdout,
        "the first run (no lockfile yet) and the second print different plans"
    );
    assert!(
        std::fs::read(dir.join("saved.json")).unwrap() == first.stdout,
        "the saved plan differs from the printed one"
    );
    let doc: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(doc["format_version"], "2");
    assert_eq!(doc["summary"]["add"], 246);
    assert_eq!(doc["observed"]["source"], "none");
}

#[test]
fn zone_and_graph_commands() {
    let dir = copy_example("ovn-vote", "zone-graph");
    let zone = wepoq(&dir, &["zone"]);
    assert!(zone.status.success());
    assert!(stdout(&zone).contains("vip.svr.result.ovn-vote"));
    if require("named-checkzone", "zones must load in BIND") {
        check_zone("ns.wepoq.net", &stdout(&zone)).unwrap();
    }
    let dot = wepoq(&dir, &["graph"]);
    assert!(stdout(&dot).starts_with("digraph wepoq {"));
    assert!(
        stdout(&dot).contains("\"cli.result.ovn-vote.ns\" -> \"result.ovn-vote.ns\" [style=dashed")
    );
    let svg = wepoq(&dir, &["graph", "--format", "svg"]);
    assert!(svg.status.success(), "{}", stderr(&svg));
    assert!(stdout(&svg).contains("<svg") && stdout(&svg).contains("</svg>"));
    assert!(stdout(&svg).contains("result"), "labels are drawn");
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    if !require("script", "runs wepoq under a pseudo-terminal") {
        return;
    }
    let dir = copy_example("ovn-vote", "colour");
    let bin = env!("CARGO_BIN_EXE_wepoq");
    let run = |no_color: bool| {
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &format!("{bin} plan"), "/dev/null"])
            .current_dir(&dir)
            .env_remove("NO_COLOR");
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        stdout(&cmd.output().unwrap())
    };
    assert!(run(false).contains("\x1b[32m+"), "colour on a terminal");
    assert!(!run(true).contains("\x1b["), "NO_COLOR wins");
}

#[test]
fn every_command_has_help() {
    for cmd in ["check", "plan", "zone", "graph"] {
        let out = wepoq(&repo(), &[cmd, "--help"]);
        assert!(out.status.success(), "{cmd} --help");
        assert!(stdout(&out).contains("Usage: wepoq"), "{cmd}");
    }
}
