//! `wepoq apply` of examples/ovn-vote with its containers, on a real OVN data plane and the
//! real Docker engine: everything comes up and is reachable through OVN's DNS and VIPs,
//! undeclared paths stay closed, the host agent re-attaches a restarted container, drift
//! (a container removed or stopped by hand) shows in `plan` and is put back by `apply` with
//! the same MAC and IP, a second apply changes nothing, and `destroy` removes wepoq's
//! containers, OVS ports and rows and nothing else.
//!
//! The example runs under a namespace of its own per run (its containers' names are
//! global on the host) and with the image the repository builds from its static binary.
//! Whatever the test made is removed when it ends, pass or fail.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wepoq_reconciler::sandbox::Sandbox;
use wepoq_reconciler::sandbox::containers::docker;

use crate::stage::{Stage, text};
use crate::support::temp_dir;

#[test]
fn ovn_vote_in_containers_end_to_end() {
    let Some(mut s) = Stage::new("containers", |spec| spec) else {
        return;
    };
    let all: BTreeSet<String> = s.units.iter().map(|u| u.name.clone()).collect();
    assert_eq!(
        all.len(),
        13,
        "the example's containers (vote's two stubs among them): {all:?}"
    );

    // 1. One apply brings everything up: the NB, the containers, their interfaces, and
    //    returns once every container's logical port is up and every stub has its warm
    //    worker (which the agent starts: it runs from the start).
    s.start_agent();
    assert_eq!(s.apply(), 2, "the first apply changes things");
    assert_eq!(s.running(), all, "every container runs");
    s.step("applied");
    let result_vip = s.fqdn("vip.svr.result");
    let servers: BTreeSet<String> = (1..=3)
        .map(|i| s.fqdn(&format!("s{i}.svr.result")))
        .collect();
    let answers: BTreeSet<String> = s
        .answers("c1.cli.result", &format!("{result_vip}:80"), 16)
        .into_iter()
        .collect();
    assert!(
        answers.is_subset(&servers),
        "answers from elsewhere: {answers:?}"
    );
    assert!(
        answers.len() > 1,
        "one server answered everything: {answers:?}"
    );
    s.step(&format!(
        "result's client reached {} servers by name",
        answers.len()
    ));
    // A declared call works by name; an undeclared one neither resolves nor connects.
    let db = s.answers(
        "s1.svr.result",
        &format!("{}:5432", s.fqdn("vip.svr.db")),
        1,
    );
    assert_eq!(db, [s.fqdn("s1.svr.db")], "result's server calls db");
    let redis_ip = s.unit("s1.svr.redis").ip.to_string();
    assert!(
        s.probe("c1.cli.result", &["resolve", &s.fqdn("vip.svr.redis")])
            .is_err(),
        "result's client resolved redis, which it does not call"
    );
    let blocked = s.probe(
        "c1.cli.result",
        &["get", &format!("{redis_ip}:6379"), "--timeout-ms", "1500"],
    );
    assert!(
        blocked.is_err(),
        "result's client reached redis: {blocked:?}"
    );
    s.step("undeclared paths closed");

    // 5a. A second apply is a no-op.
    assert_eq!(s.apply(), 0, "the second apply changes nothing");

    // 3. A container removed by hand: plan shows it, apply puts it back, same MAC and IP.
    let s2 = s.unit("s2.svr.result").clone();
    docker(&["rm", "-f", &s2.name]).unwrap();
    let plan = s.wepoq(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2), "the plan shows the drift");
    assert!(
        text(&plan.stdout).contains(&format!("+ Container {}", s2.name)),
        "{}",
        text(&plan.stdout)
    );
    assert_eq!(s.apply(), 2, "apply puts it back");
    assert_eq!(s.vif_mac("s2.svr.result"), s2.mac, "the same MAC");
    // Port security admits only the declared MAC and IP: a call from it proves both.
    let db_vip = format!("{}:5432", s.fqdn("vip.svr.db"));
    assert_eq!(
        s.answers("s2.svr.result", &db_vip, 1),
        [s.fqdn("s1.svr.db")]
    );
    let through_vip = s.answers("c1.cli.result", &format!("{result_vip}:80"), 40);
    assert!(
        through_vip.contains(&s.fqdn("s2.svr.result")),
        "the VIP never chose the new s2: {through_vip:?}"
    );
    // A container stopped by hand is started again.
    let c2 = s.unit("c2.cli.result").name.clone();
    docker(&["stop", &c2]).unwrap();
    let plan = s.wepoq(&["plan"]);
    assert!(
        text(&plan.stdout).contains(&format!("~ Container {c2} (not running)")),
        "{}",
        text(&plan.stdout)
    );
    assert_eq!(s.apply(), 2);
    assert!(s.running().contains(&c2));
    s.answers("c2.cli.result", &format!("{result_vip}:80"), 1);
    s.step("drift repaired");

    // `apply --watch` puts back a container removed by hand, as it happens.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_wepoq"));
    watch
        .args(["apply", "--watch", "--auto-approve"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    s.env(&mut watch);
    let mut watch = watch.spawn().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let c3 = s.unit("c3.cli.result").name.clone();
    docker(&["rm", "-f", &c3]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !s.running().contains(&c3) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(s.running().contains(&c3), "--watch did not put {c3} back");
    s.answers("c3.cli.result", &format!("{result_vip}:80"), 1);
    s.step("--watch put back a removed container");

    // 2. With the agent running, a restarted container (a new network namespace) is
    //    attached again without any apply.
    let s1 = s.unit("s1.svr.result").clone();
    docker(&["restart", "-t", "1", &s1.name]).unwrap();
    let again = s.answers("s1.svr.result", &db_vip, 1);
    assert_eq!(
        again,
        [s.fqdn("s1.svr.db")],
        "the restarted server calls db again"
    );
    s.step("the agent re-attached a restarted container");

    // 5b. Destroy removes wepoq's containers, ports and rows, and nothing foreign.
    let foreign_id = s.foreign.run(&[]).unwrap();
    s.sb.nbctl(&["ls-add", "foreign-switch"]).unwrap();
    let vsctl = Command::new("ovs-vsctl")
        .arg(format!("--db={}", s.sb.ovs_db_url()))
        .args([
            "add-port",
            "br-int",
            "foreign-p0",
            "--",
            "set",
            "Interface",
            "foreign-p0",
            "type=internal",
        ])
        .output()
        .unwrap();
    assert!(vsctl.status.success(), "{}", text(&vsctl.stderr));
    // Without the agent, which would remove the stubs' workers itself.
    s.stop_agent();
    assert!(
        s.containers(true, true).len() > all.len(),
        "vote's stubs have worker containers"
    );
    let destroyed = s.wepoq(&["destroy", "--auto-approve"]);
    assert_eq!(destroyed.status.code(), Some(0), "destroy");
    let left = s.containers(true, true);
    assert!(
        left.is_empty(),
        "wepoq's containers, the stubs' workers among them, are gone: {left:?}"
    );
    let left = docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("id={foreign_id}"),
    ])
    .unwrap();
    assert_eq!(left, foreign_id, "the foreign container stays");
    let ports = s.ovs_ports();
    assert_eq!(
        ports,
        BTreeSet::from(["foreign-p0".to_string()]),
        "only the foreign OVS port is left on br-int"
    );
    let switches =
        s.sb.nbctl(&["--bare", "--columns=name", "list", "Logical_Switch"])
            .unwrap();
    assert_eq!(
        switches.split_whitespace().collect::<Vec<_>>(),
        ["foreign-switch"]
    );
    s.step("destroyed; foreign container, port and switch untouched");
}

/// A small spec of two services with containers, under a namespace of its own.
fn two_services(ns: &str, image: &str, b_command: &str) -> String {
    format!(
        "namespace: {ns}\nnetwork: 10.70.0.0/16\nservices:\n  a:\n    svr:\n      ports: [80/tcp]\n      container:\n        image: {image}\n        command: [/wepoq-runtime, probe, serve, --port, \"80\"]\n    cli:\n      replicas: 1\n  b:\n    svr:\n      ports: [80/tcp]\n      container:\n        image: {image}\n        command: [{b_command}]\n    cli:\n      replicas: 1\n"
    )
}

#[test]
fn containers_without_docker_are_refused_before_the_nb_is_written() {
    let Some(sb) = Sandbox::nb_only_or_skip() else {
        return;
    };
    let dir = temp_dir("containers-no-docker");
    let run = |spec: &str| {
        std::fs::write(dir.join("wepoq.yaml"), spec).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_wepoq"))
            .args(["apply", "--auto-approve", "--db", &sb.nb_unix_url()])
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .current_dir(&dir)
            .output()
            .unwrap();
        (out.status.code(), text(&out.stderr))
    };
    let (code, stderr) = run(&two_services(
        "nodocker",
        "wepoq/probe:dev",
        "/wepoq-runtime",
    ));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot reach the Docker engine at unix:///nonexistent/docker.sock"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    let switches = sb
        .nbctl(&["--bare", "--columns=name", "list", "Logical_Switch"])
        .unwrap();
    assert_eq!(switches.trim(), "", "nothing was written to the NB");
    // Without containers, no Docker is needed at all.
    let plain = "namespace: nodocker\nnetwork: 10.70.0.0/16\nservices:\n  a:\n    svr: {ports: [80/tcp]}\n    cli: {replicas: 1}\n";
    let (code, stderr) = run(plain);
    assert_eq!(code, Some(0), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failure_part_way_says_what_was_done_and_the_next_apply_converges() {
    let Some(mut s) = Stage::new("containers-partial", |spec| spec) else {
        return;
    };
    let image = s.foreign.image.clone();
    let ns = s.ns.clone();
    let write = |b_command: &str| {
        std::fs::write(
            s.dir.join("wepoq.yaml"),
            two_services(&ns, &image, b_command),
        )
        .unwrap();
    };
    let name = |svc: &str| format!("s1.svr.{svc}.{ns}");

    // Someone else's container stands where b's must go: refused, naming it, nothing written.
    let squatter = docker(&[
        "create",
        "--name",
        &name("b"),
        "--label",
        &format!("wepoq.net/test={}", s.foreign.tag),
        &image,
    ])
    .unwrap();
    write("/wepoq-runtime, probe, serve, --port, \"80\"");
    let out = s.wepoq(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&name("b")) && stderr.contains("no wepoq owner label"),
        "{stderr}"
    );
    assert!(stderr.contains("--adopt"), "{stderr}");
    assert!(s.running().is_empty(), "no container was made");
    docker(&["rm", "-f", &squatter]).unwrap();

    // b's command does not exist: a is made and attached, b fails, and the output says which.
    write("/no/such/program");
    let out = s.wepoq(&["apply", "--auto-approve", "--wait-timeout", "30s"]);
    assert_eq!(out.status.code(), Some(1), "a partial failure is an error");
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(
        stdout.contains(&format!("created container {}", name("a"))),
        "{stdout}"
    );
    assert!(
        stderr.contains("1 of 2 container changes failed (1 done"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&name("b")) && stderr.contains("/no/such/program"),
        "{stderr}"
    );
    assert!(s.running().contains(&name("a")) && !s.running().contains(&name("b")));
    // The plan shows what is left; fixing the spec converges.
    write("/wepoq-runtime, probe, serve, --port, \"80\"");
    let plan = s.wepoq(&["plan"]);
    assert!(
        text(&plan.stdout).contains(&format!(
            "-/+ Container {} (configuration changed)",
            name("b")
        )),
        "{}",
        text(&plan.stdout)
    );
    assert_eq!(s.apply(), 2);
    assert_eq!(s.apply(), 0, "converged");
    let out = s.wepoq(&["destroy", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(0));
    s.units.clear();
}
