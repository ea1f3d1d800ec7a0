//! Container workers, side by side in one run (issue 11): accept to first byte from a paused
//! worker container against a bare unpause API call, from a pre-created one against a bare
//! start of a default `--network none` container, a burst of 10 cold connections, the
//! `docker run --rm` anchor, the process worker cold start, memory per pre-created, warm and
//! paused worker container, and a warm container worker's added latency over direct accept
//! beside the hop floor and a process worker's (the handoff benchmark's measures, reused
//! from `wepoq_runtime::bench`).
//!
//! `cargo bench -p wepoq-reconciler --bench workers` (root, Docker). The stub is a real
//! `wepoq-runtime stub --control` container (host network, so the bench reaches it); the
//! agent's control plane runs in this process. Containers carry `wepoq.net/test=<tag>` and
//! are removed by it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wepoq_reconciler::agent::Metrics;
use wepoq_reconciler::agent::workers::{self, WorkersConfig};
use wepoq_reconciler::docker;
use wepoq_reconciler::sandbox::containers::{Containers, TEST_LABEL, docker as docker_cli};
use wepoq_runtime::bench::hop;
use wepoq_runtime::bench::loopback::{percentile, round_trip, start_direct};
use wepoq_runtime::bench::process_stub::ProcessStub;

/// Round trips per side for the warm rows, in interleaved blocks.
const WARM_SAMPLES: usize = 4_000;
const BLOCK: usize = 200;
/// Warm workers (and direct server threads) on each side.
const WARM: usize = 2;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn row(name: &str, v: &mut [f64]) -> (f64, f64) {
    let (p50, p99) = (pct(v, 0.5), pct(v, 0.99));
    println!(
        "{name:<52} p50 {p50:8.2} ms  p99 {p99:8.2} ms  (n={})",
        v.len()
    );
    (p50, p99)
}

fn first_byte(addr: SocketAddr) -> f64 {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    t.elapsed().as_secs_f64() * 1e3
}

fn states(stub: &str) -> Vec<(String, String)> {
    Containers::workers_of(stub).unwrap()
}

fn wait(what: &str, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(60), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Memory of one container: its cgroup (v1 or v2) plus its containerd shim's RSS.
fn memory_kib(id: &str) -> (u64, u64) {
    let cgroup = [
        format!("/sys/fs/cgroup/memory/docker/{id}/memory.usage_in_bytes"),
        format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/memory.current"),
        format!("/sys/fs/cgroup/docker/{id}/memory.current"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .and_then(|t| t.trim().parse::<u64>().ok())
    .unwrap_or(0)
        / 1024;
    let mut shim = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("containerd-shim") && cmd.contains(id) {
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            shim = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0);
        }
    }
    (cgroup, shim)
}

/// The static `wepoq-runtime` that `scripts/static-image` built for the image: the process
/// stub and its workers of the anchors.
fn static_binary() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/static/x86_64-unknown-linux-gnu/release/wepoq-runtime")
}

/// p50 and p99 of round trips to each target, interleaved in blocks so the neighbours' load
/// on this shared machine hits all of them alike.
fn interleaved(targets: &[SocketAddr]) -> Vec<(Duration, Duration)> {
    for _ in 0..200 {
        for t in targets {
            round_trip(*t);
        }
    }
    let mut samples = vec![Vec::new(); targets.len()];
    while samples[0].len() < WARM_SAMPLES {
        for (t, out) in targets.iter().zip(samples.iter_mut()) {
            for _ in 0..BLOCK {
                out.push(round_trip(*t));
            }
        }
    }
    samples
        .iter_mut()
        .map(|v| {
            v.sort();
            (percentile(v, 0.5), percentile(v, 0.99))
        })
        .collect()
}

fn main() {
    if hop::serve_peer_if_asked() {
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("WEPOQ_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let c = Containers::new().expect("the static image (scripts/static-image)");
    let run_dir = std::env::temp_dir().join(format!("wepoq-bench-workers-{}", c.tag));
    let stub = format!("bench-stub-{}", c.tag);
    let label = serde_json::json!({
        "image": c.image, "min_warm": 0, "max_workers": 12, "precreate": 1,
        "user": "65534:65534", "command": ["/wepoq-runtime", "example-worker"],
    });
    let flags = [
        "--min-workers",
        "0",
        "--max-workers",
        "12",
        "--pause-after",
        "150ms",
        "--idle-timeout",
        "400ms",
        "--sweep-grace",
        "0s",
    ];
    let addr = c.run_stub(&stub, &run_dir, &label, &flags).unwrap();
    let test = format!("{TEST_LABEL}={}", c.tag);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let metrics = Arc::new(Metrics::default());
    let cfg = WorkersConfig {
        docker: None,
        run_dir: run_dir.clone(),
        shim_binary: None,
        only_label: Some(test.clone()),
    };
    rt.spawn(workers::run(cfg, metrics.clone(), std::future::pending()));
    let started = || states(&stub).iter().filter(|(_, s)| s != "created").count();
    let stem_ready = || states(&stub).iter().any(|(_, s)| s == "created");

    // Pre-created: scaled to zero with a stem cell ready, then one connection.
    let mut cold = Vec::new();
    let mut stem_starts = Vec::new();
    for _ in 0..n.min(10) {
        wait("scaled to zero with a stem cell", || {
            started() == 0 && stem_ready()
        });
        let (count, sum) = (metrics.start_latency.count(), metrics.start_latency.sum());
        cold.push(first_byte(addr));
        // The agent's own Docker start of the stem cell (the floor of this row), when this
        // connection made exactly one.
        wait("the start timed", || metrics.start_latency.count() > count);
        if metrics.start_latency.count() == count + 1 {
            stem_starts.push((metrics.start_latency.sum() - sum).as_secs_f64() * 1e3);
        }
    }
    // Paused: one worker, paused after 150 ms idle, woken by the connection.
    let mut paused = Vec::new();
    for _ in 0..n {
        wait("a paused worker", || {
            states(&stub).iter().any(|(_, s)| s == "paused")
        });
        paused.push(first_byte(addr));
    }
    // Memory: a paused worker, then warm (just served), then a stem cell. A paused worker is
    // swept 250 ms after it paused: read as soon as one is seen, again if it went.
    let of = |state: &str| {
        states(&stub)
            .into_iter()
            .find(|(_, s)| s == state)
            .map(|(id, _)| id)
    };
    let mut mem_paused = None;
    for _ in 0..20 {
        // A connection wakes (or starts) a worker, which pauses 150 ms after it.
        let _ = first_byte(addr);
        let t = Instant::now();
        while mem_paused.is_none() && t.elapsed() < Duration::from_secs(1) {
            mem_paused = of("paused")
                .map(|id| memory_kib(&id))
                .filter(|(cgroup, shim)| cgroup + shim > 0);
            std::thread::sleep(Duration::from_millis(20));
        }
        if mem_paused.is_some() {
            break;
        }
    }
    let _ = first_byte(addr);
    let mem_warm = of("running").map(|id| memory_kib(&id));
    let mem_stem = of("created").map(|id| memory_kib(&id));
    // A burst of 10 cold connections.
    wait("scaled to zero with a stem cell", || {
        started() == 0 && stem_ready()
    });
    let burst: Vec<_> = (0..10)
        .map(|_| std::thread::spawn(move || first_byte(addr)))
        .collect();
    let mut burst: Vec<f64> = burst.into_iter().map(|h| h.join().unwrap()).collect();

    // A warm container worker against direct accept and a process worker, interleaved: a
    // second stub container whose two workers stay running (no pausing, no sweeping).
    let warm_stub = format!("bench-warm-{}", c.tag);
    let warm_label = serde_json::json!({
        "image": c.image, "min_warm": WARM, "max_workers": WARM, "precreate": 0,
        "user": "65534:65534", "command": ["/wepoq-runtime", "example-worker"],
    });
    let warm_n = WARM.to_string();
    let warm_addr = c
        .run_stub(
            &warm_stub,
            &run_dir,
            &warm_label,
            &[
                "--min-workers",
                &warm_n,
                "--max-workers",
                &warm_n,
                "--pause-after",
                "0",
            ],
        )
        .unwrap();
    wait("the warm container workers", || {
        states(&warm_stub)
            .iter()
            .filter(|(_, s)| s == "running")
            .count()
            == WARM
    });
    let bin = static_binary();
    let bin_str = bin.to_str().unwrap();
    let process = ProcessStub::start(
        &bin,
        "warm",
        &[
            "--min-workers",
            &warm_n,
            "--max-workers",
            &warm_n,
            "--pause-after",
            "0",
        ],
        &[bin_str, "example-worker"],
    );
    process.wait_for("the warm process workers", |s| {
        s.metric("wepoq_workers{state=\"idle\"}") == WARM as f64
    });
    // Each side's workers registered: one round trip through the container stub first.
    let _ = first_byte(warm_addr);
    let (direct, stop) = start_direct(WARM);
    let warm_rows = interleaved(&[direct, process.addr, warm_addr]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(process);
    docker_cli(&["rm", "-f", &warm_stub]).unwrap();
    let hop_same = hop::floor(true);
    let hop_other = hop::floor(false);

    // The process worker cold start: an empty pool, a worker process started on demand.
    let cold_process = ProcessStub::start(
        &bin,
        "cold",
        &[
            "--min-workers",
            "0",
            "--idle-timeout",
            "1ms",
            "--sweep-grace",
            "1ms",
            "--pause-after",
            "0",
        ],
        &[bin_str, "example-worker"],
    );
    let mut process_cold = Vec::new();
    for _ in 0..50 {
        cold_process.wait_for("an empty pool", |s| s.workers() == 0.0);
        process_cold.push(round_trip(cold_process.addr).as_secs_f64() * 1e3);
    }
    drop(cold_process);

    // Anchors: bare API calls on a default `--network none` container of the same image.
    let engine = rt.block_on(docker::connect(None)).unwrap();
    let mut unpause = Vec::new();
    let mut start = Vec::new();
    let anchor_cmd = [
        "/wepoq-runtime",
        "stub",
        "--listen",
        "127.0.0.1:9",
        "--socket-dir",
        "/tmp/w",
        "--",
        "/wepoq-runtime",
        "example-worker",
    ];
    for _ in 0..n.min(10) {
        let mut args = vec!["create", "--network", "none", "--label", &test, &c.image];
        args.extend(anchor_cmd);
        let id = docker_cli(&args).unwrap();
        let t = Instant::now();
        rt.block_on(engine.start_container(&id, None)).unwrap();
        start.push(t.elapsed().as_secs_f64() * 1e3);
        for _ in 0..2 {
            rt.block_on(engine.pause_container(&id)).unwrap();
            let t = Instant::now();
            // Docker 20.10 under load has answered "is not paused" right after a pause
            // that succeeded: such a sample is dropped and said, not a reason to stop.
            match rt.block_on(engine.unpause_container(&id)) {
                Ok(()) => unpause.push(t.elapsed().as_secs_f64() * 1e3),
                Err(e) => eprintln!("unpause anchor sample dropped: {e}"),
            }
        }
        docker_cli(&["rm", "-f", &id]).unwrap();
    }
    let mut run_rm = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        docker_cli(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--label",
            &test,
            &c.image,
            "/wepoq-runtime",
            "--version",
        ])
        .ok();
        run_rm.push(t.elapsed().as_secs_f64() * 1e3);
    }

    println!("container workers (accept to first byte; anchors measured in this run)");
    let (unpause50, _) = row("anchor: bare unpause API call", &mut unpause);
    let (p50, p99) = row("from a paused worker container", &mut paused);
    println!(
        "  -> {:.2}x the bare unpause (target p50 <= 1.2x), p99 {p99:.1} ms (target <= 30 ms)",
        p50 / unpause50
    );
    let (start50, _) = row("anchor: bare start, default --network none", &mut start);
    let (c50, _) = row("from a pre-created worker container", &mut cold);
    println!(
        "  -> {:.2}x the bare start (target p50 <= 0.5x)",
        c50 / start50
    );
    if stem_starts.is_empty() {
        println!("  (the agent's start of the stem cell: not measured)");
    } else {
        let (stem50, _) = row(
            "  of which the agent's start of the stem cell",
            &mut stem_starts,
        );
        println!(
            "  -> {:.2}x the bare start: a start with NetworkDisabled, the floor of the row above",
            stem50 / start50
        );
    }
    row("burst of 10 simultaneous cold connections", &mut burst);
    row("anchor: docker run --rm (same image)", &mut run_rm);
    let (pc50, _) = row("anchor: process worker cold start", &mut process_cold);
    println!(
        "  -> a pre-created container's cold start is {:.0}x the process worker's",
        c50 / pc50
    );
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let [(d50, d99), (p50w, p99w), (c50w, c99w)] = [warm_rows[0], warm_rows[1], warm_rows[2]];
    println!("warm workers (round trip: connect, 1 byte each way, close; {WARM_SAMPLES} each)");
    println!(
        "{:<52} p50 {:8.1} us  p99 {:8.1} us",
        "direct accept (plain TCP server, this process)",
        us(d50),
        us(d99)
    );
    for (name, p50, p99) in [
        ("process worker behind a stub process", p50w, p99w),
        ("warm container worker behind a stub container", c50w, c99w),
    ] {
        println!(
            "{name:<52} p50 {:8.1} us  p99 {:8.1} us  added p50 {:+.1} us",
            us(p50),
            us(p99),
            us(p50) - us(d50)
        );
    }
    let floor = |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.1} us", us(d)));
    println!(
        "hop floor (one SCM_RIGHTS handoff, p50): same CPU {}, other CPU {}",
        floor(hop_same),
        floor(hop_other)
    );
    let added = us(c50w) - us(d50);
    let process_added = us(p50w) - us(d50);
    for (name, f) in [("same CPU", hop_same), ("other CPU", hop_other)] {
        if let Some(f) = f {
            println!(
                "  -> warm container added {:.2}x the {name} hop floor (target <= 1.5x)",
                added / us(f)
            );
        }
    }
    println!(
        "  -> warm container added {:.2}x a process worker's added ({process_added:.1} us)",
        added / process_added
    );
    let show = |name: &str, m: Option<(u64, u64)>| match m {
        Some((cg, shim)) => println!(
            "memory {name:<12} cgroup {cg:6} KiB + containerd shim RSS {shim:6} KiB = {} KiB",
            cg + shim
        ),
        None => println!("memory {name:<12} (not found)"),
    };
    show("pre-created", mem_stem);
    show("warm", mem_warm);
    show("paused", mem_paused);
    if let Some((cg, shim)) = mem_paused {
        println!(
            "paused workers in 1 GiB: {}",
            (1 << 20) / (cg + shim).max(1)
        );
    }
    drop(rt);
    drop(c);
    let _ = std::fs::remove_dir_all(run_dir);
}
