//! `wepoq plan|apply|destroy` against a real ovsdb-server loaded with the OVN NB schema, one
//! fresh server per test (started by the sandbox harness in a temp dir).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use wepoq_reconciler::sandbox::Sandbox;

use crate::stickiness::Rng;
use crate::support::{example_without_containers, repo, temp_dir};

const TABLES: [&str; 8] = [
    "Logical_Router",
    "Logical_Router_Port",
    "Logical_Switch",
    "Logical_Switch_Port",
    "Load_Balancer",
    "DNS",
    "Port_Group",
    "ACL",
];

struct Live {
    sandbox: Sandbox,
    dir: PathBuf,
}

impl Live {
    /// An NB server and a working directory holding a copy of an example.
    fn start(example: &str) -> Option<Live> {
        Some(Live::with(Sandbox::nb_only_or_skip()?, example))
    }

    /// A working directory holding a copy of an example, next to `sandbox`.
    fn with(sandbox: Sandbox, example: &str) -> Live {
        let dir = temp_dir(&format!("live-{example}"));
        // The NB alone: the example's containers (tests/it/containers.rs) are left out.
        std::fs::write(dir.join("wepoq.yaml"), example_without_containers(example)).unwrap();
        std::fs::copy(
            repo().join("examples").join(example).join("wepoq.lock"),
            dir.join("wepoq.lock"),
        )
        .unwrap();
        Live { sandbox, dir }
    }

    /// `wepoq ARGS` with no NB named by the environment (the arguments name it).
    fn wepoq_bare(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = crate::support::wepoq_nb_only();
        cmd.args(args)
            .current_dir(&self.dir)
            .env("WEPOQ_CACHE_DIR", self.row_cache())
            .stdin(Stdio::null());
        for var in [
            "WEPOQ_DB",
            "OVN_NB_DB",
            "WEPOQ_PRIVATE_KEY",
            "WEPOQ_CERTIFICATE",
            "WEPOQ_CA_CERT",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }

    fn wepoq(&self, args: &[&str]) -> Output {
        crate::support::wepoq_nb_only()
            .args(args)
            .arg("--db")
            .arg(self.sandbox.nb_unix_url())
            .current_dir(&self.dir)
            .env_remove("WEPOQ_DB")
            .env_remove("OVN_NB_DB")
            .env("WEPOQ_CACHE_DIR", self.row_cache())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// This test's row cache (each test its own: every plan after the first reads through it).
    fn row_cache(&self) -> PathBuf {
        self.dir.join("row-cache")
    }

    fn nbctl(&self, args: &[&str]) -> String {
        self.sandbox
            .nbctl(args)
            .unwrap_or_else(|e| panic!("ovn-nbctl {args:?}: {e}"))
    }

    /// Every row of the wepoq tables, as `Table name-or-uuid` lines, sorted.
    fn rows(&self) -> Vec<String> {
        let mut out = Vec::new();
        for table in TABLES {
            let columns = if matches!(table, "DNS" | "ACL") {
                "_uuid"
            } else {
                "_uuid,name"
            };
            for line in self
                .nbctl(&[
                    "--bare",
                    &format!("--columns={columns}"),
                    "--format=csv",
                    "--no-headings",
                    "list",
                    table,
                ])
                .lines()
            {
                let (uuid, name) = line.split_once(',').unwrap_or((line, ""));
                let label = if name.is_empty() || name == "\"\"" {
                    format!("#{}", &uuid[..8])
                } else {
                    name.trim_matches('"').to_string()
                };
                out.push(format!("{table} {label}"));
            }
        }
        out.sort();
        out
    }

    fn owned_count(&self) -> usize {
        TABLES
            .iter()
            .map(|t| {
                self.nbctl(&[
                    "--bare",
                    "--columns=_uuid",
                    "find",
                    t,
                    "external_ids:wepoq.net/owner=ns.wepoq.net",
                ])
                .split_whitespace()
                .count()
            })
            .sum()
    }

    fn spec(&self) -> PathBuf {
        self.dir.join("wepoq.yaml")
    }

    /// Edits the spec in place; the text to replace must be there (an edit that finds
    /// nothing would leave a test checking nothing).
    fn edit_spec(&self, from: &str, to: &str) {
        let spec = std::fs::read_to_string(self.spec()).unwrap();
        assert!(spec.contains(from), "the spec holds no {from:?}");
        std::fs::write(self.spec(), spec.replace(from, to)).unwrap();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_code(o: &Output, code: i32, what: &str) {
    assert_eq!(o.status.code(), Some(code), "{what}:\n{}", text(o));
}

#[test]
fn apply_is_idempotent_and_plan_shows_drift() {
    let Some(live) = Live::start("ovn-vote") else {
        return;
    };
    assert_code(
        &live.wepoq(&["plan", "--no-cache"]),
        0,
        "plan without the row cache",
    );
    assert!(!live.row_cache().exists(), "--no-cache wrote a row cache");
    let first = live.wepoq(&["apply", "--auto-approve", "--detailed-exitcode"]);
    assert_code(&first, 2, "first apply changes things");
    assert!(
        text(&first).contains("Apply complete: 113 added, 0 changed, 0 destroyed"),
        "{}",
        text(&first)
    );
    assert_eq!(live.owned_count(), 113);
    // The plans below read through the row cache the first one writes (the drift further
    // down must show through it).
    assert_code(
        &live.wepoq(&["plan", "--detailed-exitcode"]),
        0,
        "nothing to do",
    );
    assert_eq!(
        std::fs::read_dir(live.row_cache())
            .map(Iterator::count)
            .unwrap_or(0),
        1,
        "one row cache file"
    );

    // Without a terminal to confirm on, apply refuses rather than guess (nothing changes).
    let unconfirmed = {
        let desired_again = live.wepoq(&["plan", "--detailed-exitcode"]);
        assert_code(&desired_again, 0, "nothing to do");
        live.edit_spec("replicas: 4", "replicas: 5");
        live.wepoq(&["apply"])
    };
    assert_code(&unconfirmed, 1, "no terminal, no --auto-approve");
    assert!(
        text(&unconfirmed).contains("--auto-approve"),
        "{}",
        text(&unconfirmed)
    );
    assert_eq!(
        live.owned_count(),
        113,
        "nothing applied without confirmation"
    );
    live.edit_spec("replicas: 5", "replicas: 4");

    let second = live.wepoq(&["apply", "--auto-approve", "--detailed-exitcode"]);
    assert_code(&second, 0, "second apply is a no-op");
    assert!(text(&second).contains("No changes"), "{}", text(&second));

    // Drift made by hand shows up as changes, and nothing else does.
    live.nbctl(&[
        "lsp-set-addresses",
        "s1.svr.vote.ovn-vote.ns",
        "0a:58:0a:40:00:99 10.64.0.99",
    ]);
    live.nbctl(&[
        "set",
        "Load_Balancer",
        "lb.tcp.result.ovn-vote.ns",
        "external_ids:extra=1",
    ]);
    live.nbctl(&["ls-del", "cli.vote.ovn-vote.ns"]);
    let drift = live.wepoq(&["plan", "--detailed-exitcode"]);
    assert_code(&drift, 2, "drift is a change");
    let out = text(&drift);
    assert!(
        out.contains("~ Logical_Switch_Port s1.svr.vote.ovn-vote.ns"),
        "{out}"
    );
    assert!(
        out.contains("addresses     -= [\"0a:58:0a:40:00:99 10.64.0.99\"]"),
        "{out}"
    );
    assert!(out.contains("external_ids[\"extra\"] -= \"1\""), "{out}");
    assert!(
        out.contains("+ Logical_Switch cli.vote.ovn-vote.ns"),
        "{out}"
    );
    assert!(
        out.contains("Plan: 6 to add, 3 to change, 0 to destroy."),
        "{out}"
    );

    assert_code(&live.wepoq(&["apply", "--auto-approve"]), 0, "repair");
    assert_code(&live.wepoq(&["plan", "--detailed-exitcode"]), 0, "repaired");
}

#[test]
fn destroy_removes_exactly_what_wepoq_owns() {
    let Some(live) = Live::start("ovn-vote") else {
        return;
    };
    // Someone else's rows, some of them right beside wepoq's.
    live.nbctl(&["ls-add", "other-switch"]);
    live.nbctl(&["lsp-add", "other-switch", "other-port"]);
    live.nbctl(&["acl-add", "other-switch", "to-lport", "100", "ip4", "allow"]);
    live.nbctl(&["pg-add", "other_group", "other-port"]);
    live.nbctl(&["lb-add", "other-lb", "10.9.9.9:80", "10.9.9.10:80", "tcp"]);
    let foreign = live.rows();

    assert_code(&live.wepoq(&["apply", "--auto-approve"]), 0, "apply");
    // A foreign port on a wepoq switch: destroying the switch would take it along.
    live.nbctl(&["lsp-add", "svr.vote.ovn-vote.ns", "intruder"]);
    let refused = live.wepoq(&["destroy", "--auto-approve"]);
    assert_code(&refused, 1, "destroy refuses to delete a foreign port");
    assert!(
        text(&refused).contains("would delete rows that are not wepoq's"),
        "{}",
        text(&refused)
    );
    assert_eq!(live.owned_count(), 113, "nothing was destroyed");

    live.nbctl(&["lsp-del", "intruder"]);
    let destroyed = live.wepoq(&["destroy", "--auto-approve"]);
    assert_code(&destroyed, 0, "destroy");
    assert!(
        text(&destroyed).contains("Destroy complete: 113 destroyed"),
        "{}",
        text(&destroyed)
    );
    assert_eq!(
        live.rows(),
        foreign,
        "only the foreign rows are left, all of them"
    );
    assert_code(
        &live.wepoq(&["destroy", "--auto-approve"]),
        0,
        "destroying nothing is fine",
    );
}

#[test]
fn a_foreign_row_with_a_wepoq_name_is_refused_unless_adopted() {
    let Some(live) = Live::start("ovn-vote") else {
        return;
    };
    live.nbctl(&["ls-add", "svr.vote.ovn-vote.ns"]);
    let plan = live.wepoq(&["plan"]);
    assert_code(&plan, 1, "conflict");
    assert!(
        text(&plan).contains("Logical_Switch svr.vote.ovn-vote.ns (not made by wepoq)"),
        "{}",
        text(&plan)
    );
    assert!(text(&plan).contains("--adopt"), "{}", text(&plan));
    assert_eq!(live.owned_count(), 0, "nothing written");

    assert_code(
        &live.wepoq(&["apply", "--auto-approve", "--adopt"]),
        0,
        "adopt",
    );
    let twins = live.nbctl(&[
        "--bare",
        "--columns=_uuid",
        "find",
        "Logical_Switch",
        "name=svr.vote.ovn-vote.ns",
    ]);
    assert_eq!(
        twins.split_whitespace().count(),
        1,
        "adopted, not duplicated"
    );
    assert_eq!(live.owned_count(), 113);
    assert_code(
        &live.wepoq(&["plan", "--detailed-exitcode"]),
        0,
        "adopted rows match the spec",
    );
}

#[test]
fn saved_plans_apply_once_and_are_refused_when_stale() {
    let Some(live) = Live::start("ovn-vote") else {
        return;
    };
    assert_code(
        &live.wepoq(&["plan", "--out", "first.json"]),
        0,
        "plan --out",
    );
    let applied = live.wepoq(&["apply", "--auto-approve", "first.json"]);
    assert_code(&applied, 0, "apply the saved plan");
    assert_eq!(live.owned_count(), 113);
    // Applying the same saved plan again: the NB moved (by that very plan), so it is stale.
    let again = live.wepoq(&["apply", "--auto-approve", "first.json"]);
    assert_code(&again, 1, "a used plan is stale");
    assert!(text(&again).contains("stale"), "{}", text(&again));

    // A plan for a change, then someone edits an owned row before it is applied.
    live.edit_spec(
        "replicas: 3\n          ports: [80/tcp]",
        "replicas: 4\n          ports: [80/tcp]",
    );
    assert_code(
        &live.wepoq(&["plan", "--out", "second.json", "--detailed-exitcode"]),
        2,
        "plan the change",
    );
    live.nbctl(&[
        "set",
        "Logical_Switch",
        "svr.db.ovn-vote.ns",
        "external_ids:touched=yes",
    ]);
    let stale = live.wepoq(&["apply", "--auto-approve", "second.json"]);
    assert_code(&stale, 1, "stale");
    assert!(
        text(&stale).contains("Logical_Switch svr.db.ovn-vote.ns changed"),
        "{}",
        text(&stale)
    );
    assert_eq!(
        live.owned_count(),
        113,
        "nothing of the stale plan was applied"
    );

    // An offline plan cannot be applied: it was not made against this NB.
    assert_code(
        &crate::support::wepoq_nb_only()
            .args(["plan", "--out", "offline.json"])
            .current_dir(&live.dir)
            .env_remove("WEPOQ_DB")
            .env_remove("OVN_NB_DB")
            .output()
            .unwrap(),
        0,
        "offline plan",
    );
    let offline = live.wepoq(&["apply", "--auto-approve", "offline.json"]);
    assert_code(&offline, 1, "offline plan refused");
    assert!(
        text(&offline).contains("made offline"),
        "{}",
        text(&offline)
    );
}

#[test]
fn failures_are_clear_and_change_nothing() {
    let dir = temp_dir("unreachable");
    std::fs::write(
        dir.join("wepoq.yaml"),
        example_without_containers("ovn-vote"),
    )
    .unwrap();
    let out = crate::support::wepoq_nb_only()
        .args([
            "apply",
            "--auto-approve",
            "--db",
            "unix:/nonexistent/nb.sock",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_code(&out, 1, "unreachable NB");
    assert!(
        text(&out).contains("error:") && text(&out).contains("help:"),
        "{}",
        text(&out)
    );
    let no_db = crate::support::wepoq_nb_only()
        .args(["apply", "--auto-approve"])
        .current_dir(&dir)
        .env_remove("WEPOQ_DB")
        .env_remove("OVN_NB_DB")
        .output()
        .unwrap();
    assert_code(&no_db, 1, "no --db");
    assert!(
        text(&no_db).contains("no Northbound database given") && text(&no_db).contains("WEPOQ_DB"),
        "{}",
        text(&no_db)
    );

    // An NB whose schema is another major version is refused before anything is read.
    if wepoq_reconciler::sandbox::require(wepoq_reconciler::sandbox::Component::NbServer).is_none()
    {
        return;
    }
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("/usr/share/ovn/ovn-nb.ovsschema").unwrap())
            .unwrap();
    let mut other = schema.clone();
    other["version"] = "8.0.0".into();
    let path = dir.join("nb-8.ovsschema");
    std::fs::write(&path, other.to_string()).unwrap();
    let sandbox = Sandbox::nb_only_with_schema(&path).unwrap();
    let out = crate::support::wepoq_nb_only()
        .args(["apply", "--auto-approve", "--db", &sandbox.nb_unix_url()])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_code(&out, 1, "schema mismatch");
    assert!(text(&out).contains("8.0.0"), "{}", text(&out));
    let rows = sandbox
        .nbctl(&["--bare", "--columns=_uuid", "list", "Logical_Switch"])
        .unwrap();
    assert!(rows.trim().is_empty());

    // Waiting for a data plane that never answers ends at the time limit, with the change
    // applied (the NB transaction committed) and a clear error.
    let live = Live {
        sandbox: Sandbox::nb_only().unwrap(),
        dir: dir.clone(),
    };
    let waited = live.wepoq(&[
        "apply",
        "--auto-approve",
        "--wait",
        "hv",
        "--wait-timeout",
        "1s",
    ]);
    assert_code(&waited, 1, "no chassis ever catches up without ovn-northd");
    assert!(
        text(&waited).to_lowercase().contains("timed out") || text(&waited).contains("timeout"),
        "{}",
        text(&waited)
    );
}

#[test]
fn concurrent_applies_never_write_twins() {
    let Some(live) = Live::start("roominator") else {
        return;
    };
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let url = live.sandbox.nb_unix_url();
            let dir = live.dir.clone();
            std::thread::spawn(move || {
                crate::support::wepoq_nb_only()
                    .args(["apply", "--auto-approve", "--locked", "--db", &url])
                    .current_dir(dir)
                    .output()
                    .unwrap()
            })
        })
        .collect();
    let outputs: Vec<Output> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for o in &outputs {
        assert_code(
            o,
            0,
            "every concurrent apply ends well (re-planned when it lost the race)",
        );
    }
    let applied: usize = outputs
        .iter()
        .filter(|o| text(o).contains("243 added"))
        .count();
    assert_eq!(applied, 1, "exactly one apply created the rows");
    assert_eq!(live.owned_count(), 243, "no twins");
    for name in ["svr.ctl.roominator.ns", "router.ns"] {
        let table = if name.starts_with("router") {
            "Logical_Router"
        } else {
            "Logical_Switch"
        };
        assert_eq!(
            live.nbctl(&[
                "--bare",
                "--columns=_uuid",
                "find",
                table,
                &format!("name={name}")
            ])
            .split_whitespace()
            .count(),
            1
        );
    }
}

/// A namespace big enough that its transaction takes a while to build and commit.
fn big_spec(dir: &Path) {
    let mut s = String::from("namespace: ns\nnetwork: 10.0.0.0/12\napps:\n  big:\n    services:\n");
    for i in 0..150 {
        s.push_str(&format!("      s{i}:\n        svr: {{replicas: 4, ports: [80/tcp]}}\n        cli: {{replicas: 16}}\n"));
    }
    std::fs::write(dir.join("wepoq.yaml"), s).unwrap();
    let _ = std::fs::remove_file(dir.join("wepoq.lock"));
}

#[test]
fn killing_apply_leaves_the_nb_before_or_after() {
    let Some(live) = Live::start("ovn-vote") else {
        return;
    };
    big_spec(&live.dir);
    assert_code(
        &crate::support::wepoq_nb_only()
            .arg("check")
            .current_dir(&live.dir)
            .output()
            .unwrap(),
        0,
        "check writes the lockfile",
    );
    let total = {
        let plan = crate::support::wepoq_nb_only()
            .args(["plan", "--json"])
            .current_dir(&live.dir)
            .env_remove("WEPOQ_DB")
            .env_remove("OVN_NB_DB")
            .output()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
        doc["summary"]["add"].as_u64().unwrap() as usize
    };
    // How long a whole apply takes here, so the kills spread over all of it, commit included.
    let started = std::time::Instant::now();
    assert_code(
        &live.wepoq(&["apply", "--auto-approve"]),
        0,
        "a timed apply",
    );
    let full = started.elapsed().as_millis() as u64;
    assert_code(&live.wepoq(&["destroy", "--auto-approve"]), 0, "reset");
    let mut rng = Rng::new(7);
    let (mut before, mut after) = (0, 0);
    for round in 0..10 {
        let mut child = crate::support::wepoq_nb_only()
            .args([
                "apply",
                "--auto-approve",
                "--db",
                &live.sandbox.nb_unix_url(),
            ])
            .current_dir(&live.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(full * 3 / 2 + 1)));
        let _ = child.kill();
        let _ = child.wait();
        let owned = live.owned_count();
        assert!(
            owned == 0 || owned == total,
            "round {round}: {owned} of {total} rows: half a plan was applied"
        );
        if owned == 0 {
            before += 1;
        } else {
            after += 1;
            assert_code(
                &live.wepoq(&["plan", "--detailed-exitcode"]),
                0,
                "a whole plan",
            );
            assert_code(&live.wepoq(&["destroy", "--auto-approve"]), 0, "reset");
        }
    }
    eprintln!(
        "kill test: apply takes {full} ms; {before} rounds left the NB before the plan, {after} after it"
    );
}

/// Waits until `ready` holds, polling; panics with `what` after 20 s.
fn eventually(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn watch_follows_the_spec_and_repairs_drift_until_stopped() {
    let Some(live) = Live::start("ovn-vote") else {
        return;
    };
    // Without --auto-approve it refuses to start: it would apply without asking.
    let refused = live.wepoq(&["apply", "--watch"]);
    assert_code(&refused, 1, "--watch without --auto-approve");
    assert!(
        text(&refused).contains("--auto-approve"),
        "{}",
        text(&refused)
    );

    let log = live.dir.join("watch.log");
    let mut child = crate::support::wepoq_nb_only()
        .args([
            "apply",
            "--watch",
            "--auto-approve",
            "--db",
            &live.sandbox.nb_unix_url(),
        ])
        .current_dir(&live.dir)
        .env_remove("WEPOQ_DB")
        .env_remove("OVN_NB_DB")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("the first apply", || live.owned_count() == 113);

    // A spec change is applied.
    let spec = std::fs::read_to_string(live.spec()).unwrap();
    live.edit_spec("replicas: 4", "replicas: 5");
    eventually("the fifth voter exists", || {
        live.nbctl(&[
            "--bare",
            "--columns=name",
            "find",
            "Logical_Switch_Port",
            "name=c5.cli.vote.ovn-vote.ns",
        ])
        .contains("c5")
    });
    eventually("the log says so", || {
        log_text().contains("Applied the spec change: 1 added")
    });

    // Drift is repaired without anyone asking: a deleted port comes back, a rewritten
    // address is put back.
    live.nbctl(&["lsp-del", "c1.cli.vote.ovn-vote.ns"]);
    live.nbctl(&[
        "lsp-set-addresses",
        "s1.svr.vote.ovn-vote.ns",
        "0a:58:0a:40:00:99 10.64.0.99",
    ]);
    eventually("the drift is repaired", || {
        live.wepoq(&["plan", "--detailed-exitcode"]).status.code() == Some(0)
    });
    assert!(log_text().contains("Repaired drift"), "{}", log_text());
    assert_eq!(live.owned_count(), 114);

    // A spec that does not compile changes nothing; the watcher keeps going.
    std::fs::write(live.spec(), "namespace: [\n").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(live.owned_count(), 114, "a broken spec applies nothing");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the watcher survives a broken spec"
    );
    std::fs::write(live.spec(), &spec).unwrap();
    eventually("the spec is back to four voters", || {
        live.owned_count() == 113
    });

    // SIGTERM stops it cleanly.
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
    assert!(
        stderr.contains("The spec does not compile: nothing applied"),
        "the broken spec was reported:\n{stderr}"
    );
    assert!(log_text().contains("Stopped."), "{}", log_text());
}

#[test]
fn mutual_tls_works_and_each_refusal_says_why_and_changes_nothing() {
    let Some(sandbox) = Sandbox::nb_ssl_or_skip() else {
        return;
    };
    let live = Live::with(sandbox, "ovn-vote");
    let ssl = live.sandbox.nb_ssl_url();
    let pki = |f: &str| live.sandbox.pki(f).display().to_string();
    let (key, cert, ca) = (
        pki("client-privkey.pem"),
        pki("client-cert.pem"),
        pki("ca-cert.pem"),
    );
    let refusals: [(&str, Vec<String>, &str); 5] = [
        (
            "a server certificate from another CA",
            vec![
                "--private-key".into(),
                key.clone(),
                "--certificate".into(),
                cert.clone(),
                "--ca-cert".into(),
                pki("other-ca-cert.pem"),
            ],
            "the server's certificate is not signed by the CA in --ca-cert",
        ),
        (
            "a client without a certificate",
            vec!["--ca-cert".into(), ca.clone()],
            "the server requires a client certificate",
        ),
        (
            "a client certificate from another CA",
            vec![
                "--private-key".into(),
                pki("other-client-privkey.pem"),
                "--certificate".into(),
                pki("other-client-cert.pem"),
                "--ca-cert".into(),
                ca.clone(),
            ],
            "the server does not trust our certificate",
        ),
        (
            "an expired client certificate",
            vec![
                "--private-key".into(),
                pki("expired-client-privkey.pem"),
                "--certificate".into(),
                pki("expired-client-cert.pem"),
                "--ca-cert".into(),
                ca.clone(),
            ],
            "it has expired",
        ),
        (
            "a plain tcp: client at the ssl: port",
            vec!["--db".into(), live.sandbox.nb_tcp_url()],
            "if it listens with pssl:",
        ),
    ];
    for (what, flags, says) in refusals {
        let mut args = vec!["apply", "--auto-approve"];
        if !flags.iter().any(|f| f == "--db") {
            args.extend(["--db", &ssl]);
        }
        args.extend(flags.iter().map(String::as_str));
        let out = live.wepoq_bare(&args);
        assert_code(&out, 1, what);
        assert!(text(&out).contains(says), "{what}: {}", text(&out));
        assert_eq!(live.owned_count(), 0, "{what}: something was written");
    }

    // The files from the environment, as ovn-nbctl users keep them.
    let applied = live
        .command(&["apply", "--auto-approve", "--db", &ssl])
        .env("WEPOQ_PRIVATE_KEY", &key)
        .env("WEPOQ_CERTIFICATE", &cert)
        .env("WEPOQ_CA_CERT", &ca)
        .output()
        .unwrap();
    assert_code(&applied, 0, "mutual TLS");
    assert_eq!(live.owned_count(), 113);
    let plan = live.wepoq_bare(&[
        "plan",
        "--detailed-exitcode",
        "--db",
        &ssl,
        "--private-key",
        &key,
        "--certificate",
        &cert,
        "--ca-cert",
        &ca,
    ]);
    assert_code(&plan, 0, "nothing left to do over TLS");
}

#[test]
fn a_clustered_nb_is_followed_across_a_leader_change_by_apply_and_watch() {
    let Some(sandbox) = Sandbox::nb_cluster_or_skip() else {
        return;
    };
    // The members as OVN users list them in OVN_NB_DB; a follower first.
    let leader = sandbox.leader().unwrap();
    let mut order: Vec<usize> = (1..=3).filter(|n| *n != leader).collect();
    order.push(leader);
    let all = sandbox.members_url(&order);
    let mut live = Live::with(sandbox, "ovn-vote");
    let applied = live
        .command(&["apply", "--auto-approve"])
        .env("OVN_NB_DB", &all)
        .output()
        .unwrap();
    assert_code(&applied, 0, "apply through OVN_NB_DB");
    assert_eq!(live.owned_count(), 113);

    let log = live.dir.join("watch.log");
    let mut child = live
        .command(&["apply", "--watch", "--auto-approve", "--db", &all])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("the watcher starts", || log_text().contains("Watching"));

    // The leader dies; drift made meanwhile is repaired through the new leader.
    live.sandbox.kill_member(leader).unwrap();
    live.nbctl(&["lsp-del", "c1.cli.vote.ovn-vote.ns"]);
    eventually("the drift is repaired after the leader change", || {
        live.owned_count() == 113
    });
    assert!(log_text().contains("Repaired drift"), "{}", log_text());
    let plan = live.wepoq_bare(&["plan", "--detailed-exitcode", "--db", &all]);
    assert_code(&plan, 0, "nothing left to do");

    live.sandbox.start_member(leader).unwrap();
    let destroyed = live.wepoq_bare(&["destroy", "--auto-approve", "--db", &all]);
    assert_code(&destroyed, 0, "destroy through the list");
    eventually(
        "the watcher puts it back: it still follows the spec",
        || live.owned_count() == 113,
    );
    let _ = child.kill();
    let _ = child.wait();
}
