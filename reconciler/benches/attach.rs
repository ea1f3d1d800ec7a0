//! Attach benchmark: the agent against the ovs-docker recipe done with the usual tools, in
//! the same run, on a real OVN data plane and Docker engine.
//!
//! `cargo bench -p wepoq-reconciler --bench attach` prints:
//! - attach latency from Docker's start event to the logical port `up` in the NB (p50,
//!   p99), for the agent and for the recipe (`ip link add veth`, `ip link set netns`,
//!   `nsenter ... ip`, `ethtool -K tx off`, `ovs-vsctl add-port ... iface-id=...`), the
//!   recipe triggered by the same start event; targets: agent p50 <= 0.5x the recipe's,
//!   p99 <= 100 ms;
//! - the agent's resync of 100 labelled containers at its start (process start until all
//!   100 are attached): target <= 2 s;
//! - the agent's RSS with 100 attached containers: target < 32 MiB.
//!
//! The agent runs as a child process (this binary re-executed), so its RSS is its own.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::EventsOptions;
use futures_util::StreamExt;
use wepoq_reconciler::agent::{self, AgentConfig, Metrics};
use wepoq_reconciler::attach::{AttachConfig, Attacher};
use wepoq_reconciler::docker::ENDPOINT_LABEL;
use wepoq_reconciler::ovsdb::{Client, Condition, NB_DB, Timeouts, Value};
use wepoq_reconciler::sandbox::containers::{Containers, Lab, LabPort, TEST_LABEL, docker};
use wepoq_reconciler::sandbox::{Component, Sandbox, require};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SAMPLES: usize = 30;
const RESYNC: usize = 100;
const RECIPE_LABEL: &str = "wepoq.bench/recipe";

/// Wall-clock times: start events by container id, first `up` seen by logical port.
#[derive(Default)]
struct Clock {
    started: Mutex<HashMap<String, SystemTime>>,
    up: Mutex<HashMap<String, SystemTime>>,
}

fn child_agent_main() {
    let env = |k: &str| std::env::var(k).expect(k);
    let cfg = AgentConfig {
        docker: None,
        nb: env("WEPOQ_DB"),
        nb_tls: None,
        nb_timeouts: Timeouts::default(),
        attach: AttachConfig {
            ovs_db: env("WEPOQ_OVS_DB"),
            bridge: "br-int".into(),
            ovs_netns: Some(env("WEPOQ_OVS_NETNS").into()),
        },
        parallel: 8,
        only_label: Some(env("WEPOQ_BENCH_ONLY")),
        workers: None,
        gateway: None,
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(agent::run(
            cfg,
            Arc::new(Metrics::default()),
            std::future::pending(),
        ))
        .unwrap();
}

/// The agent child, killed when dropped (also when the bench panics).
struct AgentChild(Child);

impl Drop for AgentChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_agent(sb: &Sandbox, c: &Containers) -> AgentChild {
    AgentChild(
        Command::new(std::env::current_exe().unwrap())
            .env("WEPOQ_BENCH_AGENT", "1")
            .env("WEPOQ_DB", sb.nb_unix_url())
            .env("WEPOQ_OVS_DB", sb.ovs_db_url())
            .env("WEPOQ_OVS_NETNS", sb.ovs_netns().unwrap())
            .env("WEPOQ_BENCH_ONLY", format!("{TEST_LABEL}={}", c.tag))
            .stdout(Stdio::null())
            // Its log lines are the explanation when a figure looks wrong.
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The ovs-docker recipe for container `id` as `port`, with the usual tools.
fn recipe(sb: &Sandbox, n: usize, id: &str, port: &LabPort) {
    let ovsns = sb.ovs_netns().unwrap();
    let ovsns = ovsns.file_name().unwrap().to_str().unwrap().to_owned();
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", id]).unwrap();
    let (host, peer) = (format!("wb{n}h"), format!("wb{n}p"));
    let db = format!("--db={}", sb.ovs_db_url());
    let inside = |args: &[&str]| {
        let mut v = vec!["nsenter", "-t", &pid, "-n"];
        v.extend(args);
        sh(&v);
    };
    sh(&[
        "ip", "link", "add", &host, "type", "veth", "peer", "name", &peer,
    ]);
    sh(&["ip", "link", "set", &host, "netns", &ovsns]);
    sh(&[
        "ovs-vsctl",
        &db,
        "--may-exist",
        "add-port",
        "br-int",
        &host,
        "--",
        "set",
        "interface",
        &host,
        &format!("external_ids:iface-id={}", port.port),
        &format!("external_ids:attached-mac={}", port.mac),
    ]);
    sh(&["ip", "-n", &ovsns, "link", "set", &host, "up"]);
    sh(&[
        "ip", "netns", "exec", &ovsns, "ethtool", "-K", &host, "tx", "off",
    ]);
    sh(&["ip", "link", "set", &peer, "netns", &pid]);
    inside(&["ip", "link", "set", "dev", &peer, "name", "wq0"]);
    inside(&["ip", "link", "set", "wq0", "address", &port.mac]);
    inside(&[
        "ip",
        "addr",
        "add",
        &format!("{}/24", port.ip),
        "dev",
        "wq0",
    ]);
    inside(&["ip", "link", "set", "wq0", "up"]);
    inside(&["ethtool", "-K", "wq0", "tx", "off"]);
    inside(&["ip", "route", "add", "10.77.1.0/24", "via", "10.77.0.1"]);
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Polls the NB every 2 ms until `port` is up; stamps the first time it is seen up.
async fn wait_up(sb: &Sandbox, nb: &Client, clock: &Clock, port: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = nb
            .select(
                NB_DB,
                "Logical_Switch_Port",
                vec![Condition::eq("name", port)],
                &["up"],
            )
            .await
            .unwrap();
        if rows
            .first()
            .and_then(|r| r.get("up"))
            .and_then(Value::as_bool)
            == Some(true)
        {
            clock
                .up
                .lock()
                .unwrap()
                .insert(port.to_owned(), SystemTime::now());
            return;
        }
        if Instant::now() > deadline {
            let log = sb.log("controller");
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let ifaces = Command::new("ovs-vsctl")
                .arg(format!("--db={}", sb.ovs_db_url()))
                .args([
                    "--columns=name,ofport,error,external_ids",
                    "list",
                    "Interface",
                ])
                .output()
                .unwrap();
            panic!(
                "{port} never came up\n{}\n{}",
                String::from_utf8_lossy(&ifaces.stdout),
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn latency_ms(clock: &Clock, id: &str, port: &str) -> f64 {
    let start = clock.started.lock().unwrap()[id];
    let up = clock.up.lock().unwrap()[port];
    up.duration_since(start).unwrap_or_default().as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn bench() {
    if require(Component::Docker).is_none() || require(Component::DataPlane).is_none() {
        return;
    }
    let sb = Arc::new(Sandbox::data_plane().unwrap());
    let lab = Lab::build(&sb, RESYNC).unwrap();
    let c = Containers::new().unwrap();
    let nb = Client::connect(&sb.nb_unix_url(), Timeouts::default())
        .await
        .unwrap();
    let clock = Arc::new(Clock::default());

    // Start events (the anchor of both latencies); recipe containers are attached here.
    let engine = wepoq_reconciler::docker::connect(None).await.unwrap();
    let filters = HashMap::from([
        ("label".to_owned(), vec![format!("{TEST_LABEL}={}", c.tag)]),
        ("event".to_owned(), vec!["start".to_owned()]),
    ]);
    let mut events = engine.events(Some(EventsOptions {
        filters: Some(filters),
        ..Default::default()
    }));
    let (clk, sbr, servers) = (clock.clone(), sb.clone(), lab.servers.clone());
    tokio::spawn(async move {
        let mut n = 0;
        while let Some(Ok(event)) = events.next().await {
            let actor = event.actor.unwrap_or_default();
            let id = actor.id.unwrap_or_default();
            let at = UNIX_EPOCH + Duration::from_nanos(event.time_nano.unwrap_or(0) as u64);
            clk.started.lock().unwrap().insert(id.clone(), at);
            let recipe_port = actor
                .attributes
                .and_then(|mut a| a.remove(RECIPE_LABEL))
                .and_then(|p| servers.iter().find(|s| s.port == p).cloned());
            if let Some(port) = recipe_port {
                n += 1;
                let sb = sbr.clone();
                tokio::task::spawn_blocking(move || recipe(&sb, n, &id, &port));
            }
        }
    });
    // Give the event request time to reach the engine before the first container starts.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Attach latency, agent.
    let agent_child = spawn_agent(&sb, &c);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut agent_ms = Vec::new();
    for port in &lab.servers[..SAMPLES] {
        let id = c.run(&[(ENDPOINT_LABEL, &port.fqdn)]).unwrap();
        wait_up(&sb, &nb, &clock, &port.port).await;
        agent_ms.push(latency_ms(&clock, &id, &port.port));
    }
    // Attach latency, recipe (the agent ignores these: no endpoint label).
    let mut recipe_ms = Vec::new();
    for port in &lab.servers[SAMPLES..2 * SAMPLES] {
        let id = c.run(&[(RECIPE_LABEL, &port.port)]).unwrap();
        wait_up(&sb, &nb, &clock, &port.port).await;
        recipe_ms.push(latency_ms(&clock, &id, &port.port));
    }
    drop(agent_child);

    // Clean slate: no containers, no attachments, no recipe ports.
    let attacher = Attacher::connect(AttachConfig {
        ovs_db: sb.ovs_db_url(),
        bridge: "br-int".into(),
        ovs_netns: Some(sb.ovs_netns().unwrap()),
    })
    .await
    .unwrap();
    let ids = c.ids().unwrap();
    let mut rm = vec!["rm", "-f"];
    rm.extend(ids.iter().map(String::as_str));
    docker(&rm).unwrap();
    for a in attacher.attached().await.unwrap() {
        attacher.detach(&a.container_id).await.unwrap();
    }
    for n in 1..=SAMPLES {
        sh(&[
            "ovs-vsctl",
            &format!("--db={}", sb.ovs_db_url()),
            "--if-exists",
            "del-port",
            &format!("wb{n}h"),
        ]);
    }

    // 100 labelled containers started while no agent runs, then the agent: its resync.
    let servers = lab.servers.clone();
    let chunks: Vec<Vec<LabPort>> = servers.chunks(RESYNC / 8).map(<[_]>::to_vec).collect();
    std::thread::scope(|s| {
        for chunk in &chunks {
            let c = &c;
            s.spawn(move || {
                for p in chunk {
                    c.run(&[(ENDPOINT_LABEL, &p.fqdn)]).unwrap();
                }
            });
        }
    });
    let t0 = Instant::now();
    let agent_child = spawn_agent(&sb, &c);
    loop {
        if attacher.attached().await.unwrap().len() >= RESYNC {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "resync never finished"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let resync = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = rss_kib(agent_child.0.id());
    drop(agent_child);

    agent_ms.sort_by(f64::total_cmp);
    recipe_ms.sort_by(f64::total_cmp);
    let (a50, a99) = (percentile(&agent_ms, 0.5), percentile(&agent_ms, 0.99));
    let (r50, r99) = (percentile(&recipe_ms, 0.5), percentile(&recipe_ms, 0.99));
    println!("attach latency, Docker start event -> logical port up ({SAMPLES} containers each)");
    println!("  {:<20} {:>8} {:>8}", "", "p50 ms", "p99 ms");
    println!("  {:<20} {a50:8.1} {a99:8.1}", "wepoq agent");
    println!(
        "  {:<20} {r50:8.1} {r99:8.1}   (ip, nsenter, ethtool, ovs-vsctl)",
        "ovs-docker recipe"
    );
    println!(
        "  agent/recipe p50: {:.2}x (target <= 0.50x); agent p99 {a99:.1} ms (target <= 100 ms)",
        a50 / r50
    );
    println!(
        "resync of {RESYNC} labelled containers at agent start: {:.0} ms (target <= 2000 ms)",
        resync.as_secs_f64() * 1e3
    );
    println!(
        "agent RSS with {RESYNC} attached containers: {:.1} MiB (target < 32 MiB)",
        rss as f64 / 1024.0
    );
}

fn main() {
    if std::env::var_os("WEPOQ_BENCH_AGENT").is_some() {
        return child_agent_main();
    }
    // `cargo test --benches` runs this with --bench absent: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    bench();
}
