//! Handoff benchmark: the same loopback client against a server that accepts directly and
//! against stub + warm worker, measured in one run and printed side by side with targets.
//!
//! Run: `cargo bench -p wepoq-runtime --bench handoff`. Loopback only, about 30 seconds.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wepoq_runtime::bench::hop::{self, cpu_count};
use wepoq_runtime::bench::loopback::{percentile, round_trip, start_direct};
use wepoq_runtime::bench::process_stub::ProcessStub;

const BIN: &str = env!("CARGO_BIN_EXE_wepoq-runtime");
const LATENCY_SAMPLES: usize = 20_000;
const BLOCK: usize = 250;
const CLIENTS: usize = 4;
/// Serving threads for direct and warm workers for the stub, the same on both sides; two
/// per client, so a client that reconnects while its last server is still seeing the close
/// finds another free one on either side.
const SERVERS: usize = 2 * CLIENTS;
const THROUGHPUT_FOR: Duration = Duration::from_secs(3);
const THROUGHPUT_ROUNDS: u32 = 10;
const COLD_SAMPLES: usize = 200;
const PAUSED_SAMPLES: usize = 200;
const QUEUED: usize = 10_000;
/// Connections per second from `CLIENTS` threads, in rounds that alternate between the
/// targets, so a neighbour's burst of load on this shared machine hits all of them alike.
fn throughput(targets: &[SocketAddr]) -> Vec<f64> {
    let slice = THROUGHPUT_FOR / THROUGHPUT_ROUNDS;
    let mut counts = vec![0u64; targets.len()];
    for _ in 0..THROUGHPUT_ROUNDS {
        for (addr, count) in targets.iter().zip(counts.iter_mut()) {
            *count += throughput_slice(*addr, slice);
        }
    }
    counts
        .iter()
        .map(|c| *c as f64 / THROUGHPUT_FOR.as_secs_f64())
        .collect()
}

fn throughput_slice(addr: SocketAddr, slice: Duration) -> u64 {
    let count = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + slice;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let count = count.clone();
            std::thread::spawn(move || {
                while Instant::now() < end {
                    round_trip(addr);
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    count.load(Ordering::Relaxed)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if hop::serve_peer_if_asked() {
        return;
    }
    cpu_count();
    let started = Instant::now();
    {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    let netns = nix::unistd::geteuid().is_root();

    // Latency and throughput: direct vs stub with a warm pool, twice: the stub and its
    // workers pinned to one CPU (`--cpus`, the recommended setting), and unpinned. The
    // direct server is never pinned. Interleaved in blocks so drift hits all sides alike.
    let (direct, stop) = start_direct(SERVERS);
    let last_cpu = (cpu_count() - 1).to_string();
    let pool = SERVERS.to_string();
    let warm_args = [
        "--min-workers",
        &pool,
        "--max-workers",
        &pool,
        "--queue",
        "4096",
        // The warm rows measure running workers; pausing has rows of its own.
        "--pause-after",
        "0",
    ];
    let pinned = ProcessStub::start(
        Path::new(BIN),
        "pinned",
        &[&warm_args[..], &["--cpus", &last_cpu]].concat(),
        &[BIN, "example-worker"],
    );
    let free = ProcessStub::start(Path::new(BIN), "free", &warm_args, &[BIN, "example-worker"]);
    for stub in [&pinned, &free] {
        stub.wait_for("warm pool", |s| {
            s.metric("wepoq_workers{state=\"idle\"}") == SERVERS as f64
        });
    }
    let targets = [direct, pinned.addr, free.addr];
    for _ in 0..1000 {
        for t in targets {
            round_trip(t);
        }
    }
    let mut samples = [Vec::new(), Vec::new(), Vec::new()];
    while samples[0].len() < LATENCY_SAMPLES {
        for (t, out) in targets.iter().zip(samples.iter_mut()) {
            for _ in 0..BLOCK {
                out.push(round_trip(*t));
            }
        }
    }
    let [p50, p99]: [[Duration; 3]; 2] = [0.5, 0.99].map(|p| {
        [0, 1, 2].map(|i| {
            samples[i].sort();
            percentile(&samples[i], p)
        })
    });
    let handoff_us = pinned.metric("wepoq_handoff_latency_seconds_sum") * 1e6
        / pinned.metric("wepoq_handoff_latency_seconds_count");
    let tput = throughput(&targets);
    stop.store(true, Ordering::Relaxed);
    drop(pinned);
    drop(free);

    // Cold start: empty pool, worker processes started on demand; accept to first byte.
    let cold = ProcessStub::start(
        Path::new(BIN),
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
        &[BIN, "example-worker"],
    );
    let mut c = Vec::new();
    for _ in 0..COLD_SAMPLES {
        cold.wait_for("empty pool", |s| s.workers() == 0.0);
        c.push(round_trip(cold.addr));
    }
    let cold_starts = cold.metric("wepoq_cold_start_seconds_count");
    drop(cold);
    c.sort();
    let (c50, c99) = (percentile(&c, 0.5), percentile(&c, 0.99));

    // A paused process worker (SIGSTOP; SIGCONT when a connection comes for it) against a
    // running one, one worker each, interleaved: what the paused tier costs a connection.
    let one = ["--min-workers", "1", "--max-workers", "1"];
    let paused = ProcessStub::start(
        Path::new(BIN),
        "paused",
        &[&one[..], &["--pause-after", "5ms"]].concat(),
        &[BIN, "example-worker"],
    );
    let running = ProcessStub::start(
        Path::new(BIN),
        "running",
        &[&one[..], &["--pause-after", "0"]].concat(),
        &[BIN, "example-worker"],
    );
    running.wait_for("a warm worker", |s| s.workers() == 1.0);
    let (mut from_paused, mut from_running) = (Vec::new(), Vec::new());
    for _ in 0..PAUSED_SAMPLES {
        paused.wait_for("the worker paused", |s| {
            s.metric("wepoq_workers{state=\"paused\"}") == 1.0
        });
        from_paused.push(round_trip(paused.addr));
        from_running.push(round_trip(running.addr));
    }
    let resumed = paused.metric("wepoq_handoffs_total{tier=\"paused\"}");
    drop(paused);
    drop(running);
    from_paused.sort();
    from_running.sort();

    // Memory: 10k connections waiting for a worker that never registers.
    let queued_stub = ProcessStub::start(
        Path::new(BIN),
        "queued",
        &[
            "--max-workers",
            "1",
            "--queue",
            "20000",
            "--queue-timeout",
            "120s",
            "--start-timeout",
            "120s",
        ],
        &["sleep", "120"],
    );
    let rss_idle = queued_stub.rss_kib();
    let mut held = Vec::with_capacity(QUEUED);
    for _ in 0..QUEUED {
        held.push(TcpStream::connect(queued_stub.addr).expect("connect while queueing"));
    }
    queued_stub.wait_for("10k queued", |s| {
        s.metric("wepoq_queue_depth") == QUEUED as f64
    });
    let rss = queued_stub.rss_kib();
    drop(held);
    drop(queued_stub);

    // The floor: what handing a socket to another process costs on this machine, whoever
    // does it.
    let hop_same = hop::floor(true);
    let hop_other = hop::floor(false);

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!();
    println!(
        "wepoq-runtime handoff benchmark ({LATENCY_SAMPLES} samples each, {CLIENTS} clients x {THROUGHPUT_FOR:?} for throughput, {SERVERS} direct threads / warm workers, workers {} netns)",
        if netns { "in an empty" } else { "without" }
    );
    println!(
        "{:<40} {:>10} {:>10} {:>10}   {:<22} verdict",
        "figure", "direct", "stub", "added", "target"
    );
    let row = |name: &str, direct: String, stub: String, added: String, target: &str, ok: bool| {
        println!(
            "{name:<40} {direct:>10} {stub:>10} {added:>10}   {target:<22} {}",
            verdict(ok)
        );
    };
    for (i, how) in [(1, "pinned"), (2, "unpinned")] {
        let added50 = us(p50[i]) - us(p50[0]);
        let added99 = us(p99[i]) - us(p99[0]);
        let ratio = tput[i] / tput[0];
        row(
            &format!("latency p50 (us), stub {how}"),
            format!("{:.1}", us(p50[0])),
            format!("{:.1}", us(p50[i])),
            format!("{added50:+.1}"),
            "added <= 10 us",
            added50 <= 10.0,
        );
        row(
            &format!("latency p99 (us), stub {how}"),
            format!("{:.1}", us(p99[0])),
            format!("{:.1}", us(p99[i])),
            format!("{added99:+.1}"),
            "added <= 50 us",
            added99 <= 50.0,
        );
        row(
            &format!("throughput (conn/s), stub {how}"),
            format!("{:.0}", tput[0]),
            format!("{:.0}", tput[i]),
            format!("{:.0}%", ratio * 100.0),
            "stub >= 80% of direct",
            ratio >= 0.8,
        );
    }
    row(
        "cold start p50 (ms, accept->byte)",
        "-".into(),
        format!("{:.2}", ms(c50)),
        "-".into(),
        "<= 5 ms",
        ms(c50) <= 5.0,
    );
    row(
        "cold start p99 (ms, accept->byte)",
        "-".into(),
        format!("{:.2}", ms(c99)),
        "-".into(),
        "<= 20 ms",
        ms(c99) <= 20.0,
    );
    for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
        let (warm, cont) = (percentile(&from_running, p), percentile(&from_paused, p));
        row(
            &format!("paused worker {name} (us, warm | paused)"),
            format!("{:.1}", us(warm)),
            format!("{:.1}", us(cont)),
            format!("{:.2}x", us(cont) / us(warm)),
            "(none: SIGCONT cost)",
            resumed >= PAUSED_SAMPLES as f64,
        );
    }
    row(
        "stub RSS, 10k queued (MiB)",
        "-".into(),
        format!("{:.1}", rss as f64 / 1024.0),
        format!("{:+.1}", (rss as f64 - rss_idle as f64) / 1024.0),
        "< 32 MiB",
        rss < 32 * 1024,
    );
    let floor = |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.1}", us(d)));
    println!(
        "{:<40} {:>10} {:>10} {:>10}   {:<22} -",
        "floor: socket to a process, same CPU (us)",
        "-",
        floor(hop_same),
        "-",
        "(no target)"
    );
    println!(
        "{:<40} {:>10} {:>10} {:>10}   {:<22} -",
        "floor: socket to a process, other CPU (us)",
        "-",
        floor(hop_other),
        "-",
        "(no target)"
    );
    println!(
        "(floor: p50 of one SCM_RIGHTS message to a process blocked in recvmsg, until it runs; any stub that hands the accepted socket to another process adds at least this)"
    );
    println!("(inside the pinned stub, accept to handoff averaged {handoff_us:.1} us)");
    println!(
        "(cold starts counted by the stub: {cold_starts}; anchors: Knative queue-proxy+activator ~2-3 ms, OpenFaaS watchdog ~1 ms; run took {:.1}s)",
        started.elapsed().as_secs_f64()
    );
}
