//! Reconciler benchmark: compiled namespaces applied to a real NB ovsdb-server, with
//! ovn-nbctl creating the same ports in the same run as the anchor.
//!
//! Run: `cargo bench -p wepoq-reconciler --bench reconcile`. Targets (issue 3): apply 10k
//! endpoints into an empty NB in at most 1 s; a no-change plan against 50k owned rows in at
//! most 1 s from a fresh connection; changing one service in that NB, plan + apply, in at
//! most 100 ms. Issue 13, on a three-member clustered NB on loopback beside the standalone
//! figures of the same run: the 10k apply and the 50k no-change plan at most 1.5x standalone;
//! `--watch` repairs drift at most 1 s after the cluster has elected a new leader.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use wepoq_compiler::nb::Table;
use wepoq_compiler::{Input, Sources, compile};
use wepoq_reconciler::cached::CachedReconciler;
use wepoq_reconciler::ovsdb::Timeouts;
use wepoq_reconciler::reconcile::{Desired, Options, Reconciler};
use wepoq_reconciler::sandbox::{Component, Sandbox, require};

const NBCTL_SAMPLE: usize = 300;
const CACHED_ROUNDS: usize = 9;

// The same allocator as the `wepoq` binary: glibc's malloc spends a third of the time
// consolidating free lists when millions of small rows are freed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `services` services of 20 endpoints (4 servers, 16 clients); `bump` gives one service a
/// fifth server (the "change one service" edit).
fn spec(services: usize, bump: Option<usize>) -> String {
    let mut s = String::from("namespace: bench\nnetwork: 10.0.0.0/8\napps:\n");
    for app in 0..services.div_ceil(20) {
        s.push_str(&format!("  app{app}:\n    services:\n"));
        for i in 0..20.min(services - app * 20) {
            let replicas = if bump == Some(app * 20 + i) { 5 } else { 4 };
            s.push_str(&format!("      svc{i}:\n        svr: {{replicas: {replicas}, ports: [80/tcp]}}\n        cli: {{replicas: 16}}\n"));
        }
    }
    s
}

/// Compiles with the given lockfile; returns the desired rows, the new lockfile, the endpoint
/// ports (for the anchor) and the compile time.
fn compiled(
    text: &str,
    lock: Option<&str>,
) -> (Desired, String, Vec<(String, String, String)>, Duration) {
    let mut sources = Sources::new();
    let spec = sources.add("wepoq.yaml", text);
    let lock = lock.map(|l| sources.add("wepoq.lock", l));
    let start = Instant::now();
    let c = compile(&sources, &[Input { spec, lock }]).expect("generated specs compile");
    let took = start.elapsed();
    let ns = &c.namespaces[0];
    let ports = ns
        .endpoints
        .iter()
        .map(|e| {
            (
                ns.namespace.name.clone() + "-" + &e.port,
                e.mac.clone(),
                e.ip.to_string(),
            )
        })
        .collect();
    let desired = Desired {
        spec_hash: c.spec_hash.clone(),
        namespaces: vec![(ns.owner(), ns.rows.clone())],
    };
    (desired, ns.lock_text.clone(), ports, took)
}

/// Lets the previous step's teardown (a stopped ovsdb-server freeing its database, our own
/// frees on background threads) finish before the next timed step: on two vCPUs it would
/// otherwise be timed as part of it.
fn settle() {
    std::thread::sleep(Duration::from_millis(700));
}

fn rows(desired: &Desired) -> usize {
    desired.namespaces.iter().map(|(_, r)| r.len()).sum()
}

async fn reconcile_fresh(
    url: &str,
    desired: &Desired,
    row_cache: Option<&Path>,
) -> (Duration, usize) {
    let start = Instant::now();
    let reconciler = Reconciler::connect(url, Timeouts::default())
        .await
        .expect("connect")
        .with_row_cache(row_cache.map(Path::to_path_buf));
    let (_, applied) = reconciler
        .reconcile(desired, Options::default(), |_, _| true)
        .await
        .expect("reconcile");
    (start.elapsed(), applied.operations)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn nbctl(sandbox: &Sandbox, args: &[String]) {
    let out = Command::new("ovn-nbctl")
        .arg(format!("--db={}", sandbox.nb_unix_url()))
        .args(args)
        .output()
        .expect("ovn-nbctl runs");
    assert!(
        out.status.success(),
        "ovn-nbctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The ovn-nbctl commands that create one port on the anchor's switch.
fn add_port(name: &str, mac: &str, ip: &str) -> [String; 7] {
    [
        "lsp-add".into(),
        "anchor".into(),
        name.into(),
        "--".into(),
        "lsp-set-addresses".into(),
        name.into(),
        format!("{mac} {ip}"),
    ]
}

/// The anchor: ovn-nbctl creating the same ports, one process per command (the first
/// NBCTL_SAMPLE timed and extrapolated, which flatters it: each process reads the whole NB
/// first), and all of them in one ovn-nbctl process (one transaction).
fn anchor(ports: &[(String, String, String)]) -> (Duration, Duration) {
    let per_command = {
        let sandbox = Sandbox::nb_only().expect("NB sandbox");
        nbctl(&sandbox, &["ls-add".into(), "anchor".into()]);
        let start = Instant::now();
        for (name, mac, ip) in ports.iter().take(NBCTL_SAMPLE) {
            nbctl(&sandbox, &add_port(name, mac, ip));
        }
        start
            .elapsed()
            .mul_f64(ports.len() as f64 / NBCTL_SAMPLE.min(ports.len()) as f64)
    };
    let one_process = {
        let sandbox = Sandbox::nb_only().expect("NB sandbox");
        let mut args: Vec<String> = vec!["ls-add".into(), "anchor".into()];
        for (name, mac, ip) in ports {
            args.push("--".into());
            args.extend(add_port(name, mac, ip));
        }
        let start = Instant::now();
        nbctl(&sandbox, &args);
        start.elapsed()
    };
    (per_command, one_process)
}

/// The spec the NB holds after an odd number of alternating rounds (the bumped one).
fn back_or_bumped<'a>(bumped: &'a Desired, back: &'a Desired) -> &'a Desired {
    if CACHED_ROUNDS % 2 == 1 { bumped } else { back }
}

/// The anchor for observing: ovsdb-server answering the same selects wepoq's observation
/// sends for the owned rows (`columns` of each table), over a plain socket, the reply read
/// but not parsed: the server's share of an observation, which no client can go below.
fn server_select(
    socket: &Path,
    owner: &str,
    columns: fn(Table) -> Vec<&'static str>,
) -> (Duration, usize) {
    let mut ops = vec![serde_json::json!("OVN_Northbound")];
    for table in Table::ALL {
        let columns = columns(table);
        ops.push(serde_json::json!({"op": "select", "table": table.name(), "where": [["external_ids", "includes", ["map", [["wepoq.net/owner", owner]]]]], "columns": columns}));
    }
    let request = serde_json::json!({"method": "transact", "params": ops, "id": 1}).to_string();
    let mut stream = UnixStream::connect(socket).expect("NB socket");
    let start = Instant::now();
    stream.write_all(request.as_bytes()).unwrap();
    // Read until the reply's outermost object closes (strings skipped, escapes honoured).
    let (mut depth, mut in_string, mut escaped, mut bytes) = (0i64, false, false, 0usize);
    let mut buf = vec![0u8; 1 << 20];
    'read: loop {
        let n = stream.read(&mut buf).expect("reply");
        assert!(n > 0, "the NB closed the connection");
        bytes += n;
        for &c in &buf[..n] {
            match (in_string, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, b'\\') => escaped = true,
                (true, false, b'"') => in_string = false,
                (true, false, _) => {}
                (false, _, b'"') => in_string = true,
                (false, _, b'{' | b'[') => depth += 1,
                (false, _, b'}' | b']') => {
                    depth -= 1;
                    if depth == 0 {
                        break 'read;
                    }
                }
                _ => {}
            }
        }
    }
    (start.elapsed(), bytes)
}

fn main() {
    if require(Component::NbServer).is_none() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("wepoq reconcile benchmark (release build; a fresh NB ovsdb-server per scenario)\n");

    // 1. 10k endpoints into an empty NB.
    let (desired, _, ports, compile_10k) = compiled(&spec(500, None), None);
    // Three empty NBs, the median reported (this VM's speed wanders by tens of percent).
    let mut applies = Vec::new();
    let (mut ops_10k, mut again_10k, mut again_ops) = (0, Duration::ZERO, 0);
    for _ in 0..3 {
        let sandbox = Sandbox::nb_only().expect("NB sandbox");
        settle();
        let (took, ops) = runtime.block_on(reconcile_fresh(&sandbox.nb_unix_url(), &desired, None));
        applies.push(took);
        ops_10k = ops;
        (again_10k, again_ops) =
            runtime.block_on(reconcile_fresh(&sandbox.nb_unix_url(), &desired, None));
    }
    applies.sort();
    let apply_10k = applies[1];
    let (per_command, one_process) = anchor(&ports);
    println!(
        "1. apply 10,000 endpoints ({} NB rows) into an empty NB                target <= 1 s",
        rows(&desired)
    );
    println!(
        "   compile                                  {:>12}",
        ms(compile_10k)
    );
    println!(
        "   wepoq: connect + observe + plan + apply  {:>12}   ({ops_10k} operations, one transaction; median of 3 empty NBs: {}, {}, {})",
        ms(apply_10k),
        ms(applies[0]),
        ms(applies[1]),
        ms(applies[2])
    );
    println!(
        "   wepoq: the same again (no change)        {:>12}   ({again_ops} operations)",
        ms(again_10k)
    );
    println!(
        "   anchor ovn-nbctl, one process per port   {:>12}   (first {NBCTL_SAMPLE} timed, extrapolated; ports only)",
        ms(per_command)
    );
    println!(
        "   anchor ovn-nbctl, all in one process     {:>12}   (one transaction; ports only)",
        ms(one_process)
    );

    // 2 and 3. An NB holding ~50k owned rows.
    // 38 rows per service of 20 endpoints: about 50k owned rows.
    let services = 1300;
    let (big, lock, _, _) = compiled(&spec(services, None), None);
    let sandbox = Sandbox::nb_only().expect("NB sandbox");
    let url = sandbox.nb_unix_url();
    let (fill, _) = runtime.block_on(reconcile_fresh(&url, &big, None));
    settle();
    let (no_change, no_ops) = runtime.block_on(reconcile_fresh(&url, &big, None));
    println!(
        "\n2. no-change plan against {} owned rows, fresh connection              target <= 1 s",
        rows(&big)
    );
    println!(
        "   (filling that NB took                    {:>12})",
        ms(fill)
    );
    println!(
        "   wepoq: connect + observe + plan          {:>12}   ({no_ops} operations)",
        ms(no_change)
    );
    let socket = sandbox.dir().join("nb.sock");
    let owner = &big.namespaces[0].0;
    let every_column = |t: Table| {
        t.managed_columns()
            .iter()
            .copied()
            .chain(["_uuid", "_version"])
            .collect()
    };
    let (server_only, bytes) = server_select(&socket, owner, every_column);
    println!(
        "   anchor: ovsdb-server answering the same selects {:>6}   ({:.1} MB of JSON, read, not parsed: the server's share)",
        ms(server_only),
        bytes as f64 / 1e6
    );
    // With the row cache (what the CLI does): the server lists versions, the rows come from disk.
    let row_cache = sandbox.dir().join("row-cache");
    settle();
    let (writing, _) = runtime.block_on(reconcile_fresh(&url, &big, Some(&row_cache)));
    let mut warm = Vec::new();
    for _ in 0..3 {
        settle();
        warm.push(
            runtime
                .block_on(reconcile_fresh(&url, &big, Some(&row_cache)))
                .0,
        );
    }
    warm.sort();
    println!(
        "   wepoq with its row cache, the run that writes it {:>5}",
        ms(writing)
    );
    println!(
        "   wepoq with its row cache (warm)           {:>12}   (median of 3: {})",
        ms(warm[1]),
        warm.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
    );
    let (versions_only, bytes) = server_select(&socket, owner, |_| vec!["_uuid", "_version"]);
    println!(
        "   anchor: ovsdb-server listing _uuid, _version {:>8}   ({:.1} MB: the server's share with the cache)",
        ms(versions_only),
        bytes as f64 / 1e6
    );

    let (bumped, _, _, compile_big) = compiled(&spec(services, Some(777)), Some(&lock));
    settle();
    let (one_service, one_ops) = runtime.block_on(reconcile_fresh(&url, &bumped, None));
    let (back, _, _, _) = compiled(&spec(services, None), Some(&lock));
    settle();
    let (back_fresh, _) = runtime.block_on(reconcile_fresh(&url, &back, None));
    settle();
    // The cache was written before both changes: each run fetches the rows they touched.
    let (one_service_cached, _) =
        runtime.block_on(reconcile_fresh(&url, &bumped, Some(&row_cache)));
    settle();
    let (back_cached, _) = runtime.block_on(reconcile_fresh(&url, &back, Some(&row_cache)));
    settle();

    // Connected (`wepoq apply --watch`): the owned rows stay in memory through a monitor.
    let start = Instant::now();
    let owners = [big.namespaces[0].0.clone()];
    let mut cached = runtime
        .block_on(async {
            CachedReconciler::start(
                Reconciler::connect(&url, Timeouts::default()).await?,
                &owners,
            )
            .await
        })
        .expect("monitor");
    let started = start.elapsed();
    let mut rounds = Vec::new();
    for i in 0..CACHED_ROUNDS {
        let target = if i % 2 == 0 { &bumped } else { &back };
        let start = Instant::now();
        let (plan, applied) = runtime
            .block_on(cached.reconcile(target, Options::default(), |_, _| true))
            .expect("cached reconcile");
        rounds.push(start.elapsed());
        assert!(
            !plan.changes.is_empty() && applied.operations > 0,
            "each round changes one service"
        );
    }
    rounds.sort();
    let start = Instant::now();
    let (plan, _) = runtime
        .block_on(cached.reconcile(
            back_or_bumped(&bumped, &back),
            Options::default(),
            |_, _| true,
        ))
        .expect("cached no-change plan");
    let no_change_connected = start.elapsed();
    assert!(plan.changes.is_empty());
    println!(
        "\n   (connected, as `wepoq apply --watch`: a no-change plan from memory {}, after the changes below)",
        ms(no_change_connected)
    );
    println!(
        "\n3. change one service (a fifth server) in that NB: plan + apply          target <= 100 ms"
    );
    println!(
        "   compile (with lockfile)                  {:>12}   (the compiler's share; issue 2)",
        ms(compile_big)
    );
    println!(
        "   wepoq: fresh connection                  {:>12}   ({one_ops} operations; and back: {})",
        ms(one_service),
        ms(back_fresh)
    );
    println!(
        "   wepoq: fresh connection, row cache       {:>12}   (and back: {})",
        ms(one_service_cached),
        ms(back_cached)
    );
    println!(
        "   wepoq --watch: monitor started            {:>12}   (once: the first reply carries every owned row)",
        ms(started)
    );
    println!(
        "   wepoq --watch: plan + apply, connected   {:>12}   (median of {CACHED_ROUNDS} changes, alternating there and back; min {}, max {})",
        ms(rounds[rounds.len() / 2]),
        ms(rounds[0]),
        ms(rounds[rounds.len() - 1])
    );
    drop(cached);
    drop(sandbox);
    clustered(&runtime, &desired, apply_10k, &big, no_change);
}

/// The clusters' Raft election timer. At OVS's default (1 s) a leader committing the 50k-row
/// fill on this shared VM misses heartbeats long enough to be deposed, again and again;
/// deployments with big NBs raise it the same way.
const ELECTION_MS: u64 = 4000;

/// Issue 13: the same work against a three-member Raft cluster, given as the list of its
/// members (the client finds the leader), next to the standalone figures measured above.
fn clustered(
    runtime: &tokio::runtime::Runtime,
    ten_k: &Desired,
    standalone_apply: Duration,
    big: &Desired,
    standalone_no_change: Duration,
) {
    if require(Component::NbCluster).is_none() {
        return;
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let mut applies = Vec::new();
    for _ in 0..3 {
        let cluster = Sandbox::nb_cluster_with_election_timer(ELECTION_MS).expect("NB cluster");
        // Unix sockets, as the standalone figures use: the ratio is Raft's cost alone.
        let all = cluster.members_unix_url(&[1, 2, 3]);
        settle();
        applies.push(runtime.block_on(reconcile_fresh(&all, ten_k, None)).0);
    }
    applies.sort();
    println!(
        "\n4. a three-member clustered NB (Raft, loopback, election timer {ELECTION_MS} ms), reached through the list of its members"
    );
    println!(
        "   apply 10,000 endpoints into an empty cluster {:>8}   ({:.2}x standalone {}; target <= 1.5x; median of 3 clusters: {})",
        ms(applies[1]),
        ratio(applies[1], standalone_apply),
        ms(standalone_apply),
        applies
            .iter()
            .map(|d| ms(*d))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut cluster = Sandbox::nb_cluster_with_election_timer(ELECTION_MS).expect("NB cluster");
    // Unix sockets, as the standalone figures use: the ratio is Raft's cost alone.
    let all = cluster.members_unix_url(&[1, 2, 3]);
    let (fill, _) = runtime.block_on(reconcile_fresh(&all, big, None));
    settle();
    let mut plans = Vec::new();
    for _ in 0..3 {
        settle();
        let (took, ops) = runtime.block_on(reconcile_fresh(&all, big, None));
        assert_eq!(ops, 0, "a no-change plan");
        plans.push(took);
    }
    plans.sort();
    println!(
        "   no-change plan against {} owned rows {:>8}   ({:.2}x standalone {}; target <= 1.5x; median of 3: {}; filling took {})",
        rows(big),
        ms(plans[1]),
        ratio(plans[1], standalone_no_change),
        ms(standalone_no_change),
        plans.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", "),
        ms(fill)
    );

    // --watch across the leader's death: the connected reconciler, drift made as soon as the
    // cluster accepts writes again, timed to the repair.
    let owners = [big.namespaces[0].0.clone()];
    let mut cached = runtime
        .block_on(async {
            CachedReconciler::start(
                Reconciler::connect(&all, Timeouts::default()).await?,
                &owners,
            )
            .await
        })
        .expect("monitor");
    let port = big.namespaces[0]
        .1
        .iter()
        .find(|r| r.key.table == Table::LogicalSwitchPort)
        .map(|r| r.key.name.clone())
        .expect("a port");
    let lsp = cluster
        .nbctl(&[
            "--bare",
            "--columns=name",
            "find",
            "Logical_Switch_Port",
            &format!("external_ids:\"wepoq.net/name\"=\"{port}\""),
        ])
        .expect("find the port");
    let lsp = lsp.trim().to_owned();
    // A watcher that has been running saw small transactions since the fill, the last
    // of which it resumes from (ovsdb-server drops a history entry as big as the database
    // once another follows): one drift repaired before the kill.
    cluster
        .nbctl(&["lsp-set-addresses", &lsp, "00:00:00:00:00:98 10.255.0.2"])
        .expect("drift");
    runtime.block_on(async {
        cached.reconciler().client.echo().await.expect("echo");
        let (plan, _) = cached
            .reconcile(big, Options::default(), |_, _| true)
            .await
            .expect("repair");
        assert!(!plan.changes.is_empty(), "the drift was seen");
    });
    let before = cached.monitor_stats();
    let leader = cluster.leader().expect("a leader");
    settle();
    let killed = Instant::now();
    cluster.kill_member(leader).expect("kill the leader");
    let (elected, drifted, repaired) = std::thread::scope(|scope| {
        // When the cluster has a leader again, as its members see it.
        let election = scope.spawn(|| {
            let new = cluster.leader().expect("a new leader");
            assert_ne!(new, leader);
            killed.elapsed()
        });
        // The drift, written as soon as a leader takes writes (by a client of its own:
        // ovn-nbctl would first spend a second reading the 50k-row NB).
        let writer = scope.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let timeouts = Timeouts {
                    connect: Duration::from_secs(30),
                    reconnect_min: Duration::from_millis(20),
                    ..Timeouts::default()
                };
                let client = wepoq_reconciler::ovsdb::Client::connect(&all, timeouts)
                    .await
                    .expect("a writer connects to the new leader");
                let set = wepoq_reconciler::ovsdb::Operation::update(
                    "Logical_Switch_Port",
                    vec![wepoq_reconciler::ovsdb::Condition::eq("name", lsp.as_str())],
                    wepoq_reconciler::ovsdb::Row::new()
                        .with("addresses", "00:00:00:00:00:99 10.255.0.1"),
                );
                client
                    .transact(wepoq_reconciler::ovsdb::NB_DB, &[set])
                    .await
                    .expect("drift");
                killed.elapsed()
            })
        });
        let repaired = runtime.block_on(async {
            loop {
                cached
                    .changed()
                    .await
                    .expect("the monitor follows the new leader");
                let (plan, applied) = cached
                    .reconcile(big, Options::default(), |_, _| true)
                    .await
                    .expect("repair");
                if !plan.changes.is_empty() && applied.operations > 0 {
                    return killed.elapsed();
                }
            }
        });
        (
            election.join().expect("election"),
            writer.join().expect("writer"),
            repaired,
        )
    });
    // The script polls the members' status every 100 ms; a write the new leader took is
    // the earlier sign of it, when it comes first.
    let elected = elected.min(drifted);
    let stats = cached.monitor_stats();
    let resumed = if stats.resumed > before.resumed {
        format!("the monitor resumed with {} changed rows", stats.last_rows)
    } else {
        format!("the monitor started over: {} rows", stats.last_rows)
    };
    println!(
        "   --watch: leader killed -> drift repaired {:>8}   (election {}: a leader took writes; repair {} after it; target <= 1 s after; the drift was written at {}; {resumed})",
        ms(repaired),
        ms(elected),
        ms(repaired.saturating_sub(elected)),
        ms(drifted),
    );
    cluster.start_member(leader).expect("restart the member");
}
