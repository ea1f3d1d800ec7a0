//! Handoff benchmark: the same loopback client against a server that accepts directly and
//! against stub + warm worker, measured in one run and printed side by side with targets.
//!
//! Run: `cargo bench -p wepoq-runtime --bench handoff`. Loopback only, about 30 seconds.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
const HOP_SAMPLES: usize = 5_000;
/// Set in the environment of the bench binary re-executed as the far end of the hop floor.
const HOP_PEER_ENV: &str = "WEPOQ_BENCH_HOP_PEER";

/// A stub process, killed on drop.
struct Stub {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    dir: std::path::PathBuf,
}

impl Stub {
    fn start(name: &str, args: &[&str], worker: &[&str]) -> Stub {
        let dir = std::env::temp_dir().join(format!("wepoq-bench-{}-{name}", std::process::id()));
        let mut child = Command::new(BIN)
            .args([
                "stub",
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--socket-dir",
            ])
            .arg(&dir)
            .args(args)
            .arg("--")
            .args(worker)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start stub");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let line = loop {
            let line = lines.next().expect("stub ready line").unwrap();
            if line.starts_with("wepoq-stub ready") {
                break line;
            }
        };
        // Keep draining stderr so the stub never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let field = |name: &str| {
            line.split(' ')
                .find_map(|f| f.strip_prefix(name))
                .unwrap()
                .to_owned()
        };
        Stub {
            child,
            addr: field("listen=").parse().unwrap(),
            admin: field("admin=").parse().unwrap(),
            dir,
        }
    }

    fn metric(&self, name: &str) -> f64 {
        let mut s = TcpStream::connect(self.admin).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no metric {name}"))
            .parse()
            .unwrap()
    }

    fn workers(&self) -> f64 {
        ["starting", "idle", "busy", "marked", "paused"]
            .iter()
            .map(|s| self.metric(&format!("wepoq_workers{{state=\"{s}\"}}")))
            .sum()
    }

    fn wait_for(&self, what: &str, f: impl Fn(&Stub) -> bool) {
        let start = Instant::now();
        while !f(self) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The same server logic as the example echo worker: read, write back, until the client ends.
fn direct_server(listener: TcpListener, stop: Arc<AtomicBool>) {
    let mut buf = [0u8; 64];
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut s) = stream else { continue };
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    }
}

/// connect, 1-byte request, 1-byte reply, close (reset, so no TIME_WAIT piles up).
fn round_trip(addr: SocketAddr) -> Duration {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).unwrap();
    nix::sys::socket::setsockopt(
        &s,
        nix::sys::socket::sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .unwrap();
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).expect("one byte back");
    drop(s);
    t.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

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

fn start_direct() -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..SERVERS {
        let (l, stop) = (listener.try_clone().unwrap(), stop.clone());
        std::thread::spawn(move || direct_server(l, stop));
    }
    (addr, stop)
}

/// The floor under any design that hands an accepted socket to another process: a process
/// blocked in `recvmsg` on a SOCK_SEQPACKET socket is sent one handoff-sized message carrying
/// a TCP socket (SCM_RIGHTS) and runs. Measured as a round trip (the far end answers with a
/// done-sized message and no descriptor) minus half a round trip without a descriptor.
/// `same_cpu` puts both ends on the last CPU (as `--cpus` does for the stub and its workers),
/// otherwise the sender runs on CPU 0. Returns the p50 of the one-way hop, or `None` on a
/// one-CPU machine asked for two CPUs.
fn hop_floor(same_cpu: bool) -> Option<Duration> {
    use std::os::fd::AsFd;
    use wepoq_runtime::seqpacket::SeqPacket;
    let far = cpu_count() - 1;
    let near = if same_cpu { far } else { 0 };
    if near == far && !same_cpu {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("wepoq-bench-{}-hop", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hop.sock");
    let listener = SeqPacket::listen(&path).unwrap();
    let mut peer = Command::new(std::env::current_exe().unwrap())
        .env(HOP_PEER_ENV, format!("{far}:{}", path.display()))
        .spawn()
        .expect("start hop peer");
    let socket = loop {
        match listener.accept() {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("hop peer did not connect: {e}"),
        }
    };
    nix::fcntl::fcntl(
        &socket,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .unwrap();
    pin_this_thread(Some(near));
    let message = [7u8; 80];
    let mut reply = [0u8; 16];
    let mut round_trip = |with_socket: bool| {
        let tcp = with_socket.then(|| {
            nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Inet,
                nix::sys::socket::SockType::Stream,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
                None,
            )
            .unwrap()
        });
        let t = Instant::now();
        socket
            .send(&message, tcp.as_ref().map(|s| s.as_fd()))
            .unwrap();
        drop(tcp);
        socket.recv(&mut reply).unwrap();
        t.elapsed()
    };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    while with.len() < HOP_SAMPLES {
        for _ in 0..BLOCK {
            with.push(round_trip(true));
        }
        for _ in 0..BLOCK {
            without.push(round_trip(false));
        }
    }
    pin_this_thread(None);
    drop(socket);
    let _ = peer.wait();
    let _ = std::fs::remove_dir_all(&dir);
    with.sort();
    without.sort();
    Some(percentile(&with, 0.5).saturating_sub(percentile(&without, 0.5) / 2))
}

/// The far end of [`hop_floor`]: answers every message, then closes the socket it carried.
fn hop_peer(spec: &str) {
    let (cpu, path) = spec.split_once(':').expect("cpu:path");
    pin_this_thread(Some(cpu.parse().unwrap()));
    let socket = wepoq_runtime::seqpacket::SeqPacket::connect(std::path::Path::new(path)).unwrap();
    let mut buf = [0u8; 128];
    while let Ok((n, fd)) = socket.recv(&mut buf) {
        if n == 0 || socket.send(&[1u8; 10], None).is_err() {
            return;
        }
        drop(fd);
    }
}

/// The CPUs this process may use, as first seen (before any pinning narrowed the answer).
fn cpu_count() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Pins the calling thread to one CPU, or lets it run anywhere again.
fn pin_this_thread(cpu: Option<usize>) {
    let mut set = nix::sched::CpuSet::new();
    for c in 0..cpu_count() {
        if cpu.is_none_or(|only| only == c) {
            set.set(c).unwrap();
        }
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Ok(spec) = std::env::var(HOP_PEER_ENV) {
        return hop_peer(&spec);
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
    let (direct, stop) = start_direct();
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
    let pinned = Stub::start(
        "pinned",
        &[&warm_args[..], &["--cpus", &last_cpu]].concat(),
        &[BIN, "example-worker"],
    );
    let free = Stub::start("free", &warm_args, &[BIN, "example-worker"]);
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
    let cold = Stub::start(
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
    let paused = Stub::start(
        "paused",
        &[&one[..], &["--pause-after", "5ms"]].concat(),
        &[BIN, "example-worker"],
    );
    let running = Stub::start(
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
    let queued_stub = Stub::start(
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
    let hop_same = hop_floor(true);
    let hop_other = hop_floor(false);

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
