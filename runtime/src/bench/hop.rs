//! The hop floor: what handing a socket to another process costs on this machine, whoever
//! does it. A process blocked in `recvmsg` on a SOCK_SEQPACKET socket is sent one
//! handoff-sized message carrying a TCP socket (SCM_RIGHTS) and runs.
//!
//! The far end is the calling benchmark's own binary, re-executed with [`PEER_ENV`] set:
//! a benchmark that measures the floor calls [`serve_peer_if_asked`] first thing in `main`.

use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::seqpacket::SeqPacket;

/// Set in the environment of the benchmark binary re-executed as the far end.
pub const PEER_ENV: &str = "WEPOQ_BENCH_HOP_PEER";
/// Round trips of each kind (with and without a socket), in blocks of [`BLOCK`].
const SAMPLES: usize = 5_000;
const BLOCK: usize = 250;

/// In the re-executed far end: answers the hop messages and returns `true` (the caller
/// then exits); otherwise `false` at once.
pub fn serve_peer_if_asked() -> bool {
    let Ok(spec) = std::env::var(PEER_ENV) else {
        return false;
    };
    let (cpu, path) = spec.split_once(':').expect("cpu:path");
    pin_this_thread(Some(cpu.parse().unwrap()));
    let socket = SeqPacket::connect(std::path::Path::new(path)).unwrap();
    let mut buf = [0u8; 128];
    while let Ok((n, fd)) = socket.recv(&mut buf) {
        if n == 0 || socket.send(&[1u8; 10], None).is_err() {
            break;
        }
        drop(fd);
    }
    true
}

/// The p50 of the one-way hop, measured as a round trip (the far end answers with a
/// done-sized message and no descriptor) minus half a round trip without a descriptor.
/// `same_cpu` puts both ends on the last CPU (as `--cpus` does for the stub and its
/// workers), otherwise the sender runs on CPU 0. `None` on a one-CPU machine asked for two.
pub fn floor(same_cpu: bool) -> Option<Duration> {
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
        .env(PEER_ENV, format!("{far}:{}", path.display()))
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
    while with.len() < SAMPLES {
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
    Some(
        super::loopback::percentile(&with, 0.5)
            .saturating_sub(super::loopback::percentile(&without, 0.5) / 2),
    )
}

/// The CPUs this process may use, as first seen (before any pinning narrowed the answer).
pub fn cpu_count() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Pins the calling thread to one CPU, or lets it run anywhere again.
pub fn pin_this_thread(cpu: Option<usize>) {
    let mut set = nix::sched::CpuSet::new();
    for c in 0..cpu_count() {
        if cpu.is_none_or(|only| only == c) {
            set.set(c).unwrap();
        }
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
}
