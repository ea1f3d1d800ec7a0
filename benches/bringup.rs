//! Bring-up benchmark (issue "Containers on OVN"): `wepoq apply` of the container version of
//! examples/ovn-vote, from an empty NB and Docker until every endpoint is reachable, against
//! `docker-compose up -d` of the same eleven containers (same image, same commands) on a
//! plain Docker bridge network, which a Docker user would pick instead. Both are timed the
//! same way, in the same run, rounds interleaved: the command, then the same reachability
//! checks (each client and caller reaching what it calls, by name) until all succeed.
//!
//! wepoq does more in that time: the OVN topology, DNS, load-balanced VIPs and default-deny
//! ACLs, and it returns only once every logical port is up. Target: no slower than Compose.
//!
//! Run: `cargo bench --bench bringup` (needs the OVN packages, Docker and docker-compose;
//! it builds the static image first). ROUNDS (default 5) sets the rounds per side.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use wepoq_reconciler::sandbox::containers::{TEST_LABEL, docker, static_image};
use wepoq_reconciler::sandbox::{Component, Sandbox, require};

/// (client container, target) pairs: every caller reaches what it calls. `{ns}` becomes the
/// namespace label for wepoq; Compose targets are service names.
const OVN_CHECKS: &[(&str, &str)] = &[
    ("c1.cli.result", "vip.svr.result.ovn-vote.{ns}.wepoq.net:80"),
    ("c2.cli.result", "vip.svr.result.ovn-vote.{ns}.wepoq.net:80"),
    ("c3.cli.result", "vip.svr.result.ovn-vote.{ns}.wepoq.net:80"),
    ("c1.cli.ctl", "vip.svr.ctl.ovn-vote.{ns}.wepoq.net:7000"),
    ("s1.svr.ctl", "vip.svr.worker.ovn-vote.{ns}.wepoq.net:8080"),
    ("s1.svr.result", "vip.svr.db.ovn-vote.{ns}.wepoq.net:5432"),
    ("s2.svr.result", "vip.svr.db.ovn-vote.{ns}.wepoq.net:5432"),
    ("s3.svr.result", "vip.svr.db.ovn-vote.{ns}.wepoq.net:5432"),
    (
        "s1.svr.worker",
        "vip.svr.redis.ovn-vote.{ns}.wepoq.net:6379",
    ),
];

const COMPOSE_CHECKS: &[(&str, &str)] = &[
    ("result-c1", "result-s1:80"),
    ("result-c2", "result-s2:80"),
    ("result-c3", "result-s3:80"),
    ("ctl-c1", "ctl-s1:7000"),
    ("ctl-s1", "worker-s1:8080"),
    ("result-s1", "db-s1:5432"),
    ("result-s2", "db-s1:5432"),
    ("result-s3", "db-s1:5432"),
    ("worker-s1", "redis-s1:6379"),
];

/// The Compose services: (name, command after /wepoq-runtime), as the example declares them.
const SERVICES: &[(&str, &str)] = &[
    ("ctl-s1", "probe serve --port 7000"),
    ("ctl-c1", "probe wait"),
    ("result-s1", "probe serve --port 80"),
    ("result-s2", "probe serve --port 80"),
    ("result-s3", "probe serve --port 80"),
    ("result-c1", "probe wait"),
    ("result-c2", "probe wait"),
    ("result-c3", "probe wait"),
    ("worker-s1", "probe serve --port 8080"),
    ("redis-s1", "probe serve --port 6379"),
    ("db-s1", "probe serve --port 5432"),
];

fn main() {
    if require(Component::DataPlane).is_none() || require(Component::Docker).is_none() {
        return;
    }
    if Command::new("docker-compose")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("skipping: docker-compose is not installed");
        return;
    }
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let image = static_image().expect("the static image");
    let sb = Sandbox::data_plane().expect("a data-plane sandbox");
    let dir = sb.dir().join("bringup");
    std::fs::create_dir_all(&dir).unwrap();
    let ns = format!("b{}", std::process::id());
    let spec = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ovn-vote/wepoq.yaml"),
    )
    .unwrap()
    .replace("namespace: ns\n", &format!("namespace: {ns}\n"))
    .replace("wepoq/probe:dev", &image);
    // The same eleven long-lived containers as the Compose file: vote's functions (its stubs
    // and the agent's workers) have no Compose counterpart.
    let spec = wepoq_reconciler::sandbox::without_blocks(&spec, "runtime");
    std::fs::write(dir.join("wepoq.yaml"), spec).unwrap();
    let project = format!("wqbench{}", std::process::id());
    std::fs::write(dir.join("docker-compose.yml"), compose_file(&image)).unwrap();

    let wepoq = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_wepoq"))
            .args(args)
            .env("WEPOQ_DB", sb.nb_unix_url())
            .env("WEPOQ_OVS_DB", sb.ovs_db_url())
            .env("WEPOQ_OVS_NETNS", sb.ovs_netns().unwrap())
            .env("WEPOQ_CACHE_DIR", dir.join("cache"))
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "wepoq {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let compose = |args: &[&str]| {
        let out = Command::new("docker-compose")
            .args(["-p", &project])
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ovn_checks: Vec<(String, String)> = OVN_CHECKS
        .iter()
        .map(|(c, t)| (format!("{c}.ovn-vote.{ns}"), t.replace("{ns}", &ns)))
        .collect();
    let compose_checks: Vec<(String, String)> = COMPOSE_CHECKS
        .iter()
        .map(|(c, t)| (format!("{project}_{c}_1"), t.to_string()))
        .collect();

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let start = Instant::now();
        wepoq(&["apply", "--auto-approve"]);
        let applied = start.elapsed();
        until_reachable(&ovn_checks);
        ours.push(start.elapsed());
        wepoq(&["destroy", "--auto-approve"]);

        let start = Instant::now();
        compose(&["up", "-d"]);
        let up = start.elapsed();
        until_reachable(&compose_checks);
        theirs.push(start.elapsed());
        compose(&["down", "-t", "1"]);
        eprintln!(
            "round {}: wepoq {:.2} s (apply {:.2} s), compose {:.2} s (up {:.2} s)",
            round + 1,
            ours[round].as_secs_f64(),
            applied.as_secs_f64(),
            theirs[round].as_secs_f64(),
            up.as_secs_f64()
        );
    }
    let (ours, theirs) = (median(&mut ours), median(&mut theirs));
    println!(
        "bring-up of ovn-vote (11 containers) until every endpoint is reachable, median of {rounds}:"
    );
    println!(
        "  wepoq apply (OVN topology, DNS, VIPs, ACLs, containers attached): {:.2} s",
        ours.as_secs_f64()
    );
    println!(
        "  docker-compose up -d (bridge network, anchor):                 {:.2} s",
        theirs.as_secs_f64()
    );
    let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
    println!(
        "  ratio {ratio:.2}x (target <= 1.00x): {}",
        if ratio <= 1.0 { "met" } else { "MISSED" }
    );
}

/// Runs every check until it succeeds (20 s at most each).
fn until_reachable(checks: &[(String, String)]) {
    for (client, target) in checks {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = docker(&[
                "exec",
                client,
                "/wepoq-runtime",
                "probe",
                "get",
                target,
                "--timeout-ms",
                "1000",
            ]);
            match ok {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => panic!("{client} -> {target}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn compose_file(image: &str) -> String {
    let mut text = String::from("version: \"2.4\"\nservices:\n");
    for (name, command) in SERVICES {
        let args: Vec<String> = std::iter::once("/wepoq-runtime")
            .chain(command.split(' '))
            .map(|a| format!("\"{a}\""))
            .collect();
        text.push_str(&format!(
            "  {name}:\n    image: {image}\n    command: [{}]\n    labels: [\"{TEST_LABEL}=bringup\"]\n",
            args.join(", ")
        ));
    }
    text
}
