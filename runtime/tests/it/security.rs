//! Who may be a worker (SO_PEERCRED, 0700 or 0711 directory) and what a worker can reach.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use wepoq_runtime::worker::Worker;

use crate::support::{BIN, Stub, root_or_skip};

fn mode_of(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_worker_with_the_wrong_credentials_is_refused() {
    let me = nix::unistd::geteuid().as_raw();
    let stranger = if me == 4242 { "4243" } else { "4242" };
    // The stub's own workers would fail the check too, so it has none: only the intruder.
    let stub = Stub::start(
        &[
            "--allow-uid",
            stranger,
            "--max-workers",
            "0",
            "--queue-timeout",
            "300ms",
        ],
        &[BIN, "example-worker"],
    );
    // Admitting another uid (containers as 65534 behind a root stub), the directory is
    // traversable and the socket open to all: SO_PEERCRED alone decides.
    assert_eq!(mode_of(stub.socket.parent().unwrap()), 0o711);
    assert_eq!(mode_of(&stub.socket), 0o777);

    // The stub may close on the intruder before or after its hello went out: the hello then
    // fails with a broken pipe, or the first accept reads end-of-stream.
    let intruder = Worker::connect(&stub.socket, "intruder", 1);
    let client = std::thread::spawn({
        let addr = stub.addr();
        move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.write_all(b"secret");
            let mut buf = [0u8; 16];
            matches!(s.read(&mut buf), Ok(n) if n > 0)
        }
    });
    let t = Instant::now();
    match intruder {
        Ok(intruder) => {
            let got = intruder.accept();
            assert!(
                matches!(got, Ok(None)) || got.is_err(),
                "the stub closed on the intruder instead of handing it a connection"
            );
        }
        Err(wepoq_runtime::worker::WorkerError::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
        Err(e) => panic!("connect itself should work (the directory is ours): {e}"),
    }
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(
        !client.join().unwrap(),
        "the client got nothing from anyone"
    );
    assert_eq!(stub.metric("wepoq_workers_refused_total"), 1.0);
    assert_eq!(
        stub.metric("wepoq_connections_total{outcome=\"expired\"}"),
        1.0
    );
}

#[test]
fn a_worker_with_the_right_credentials_gets_connections() {
    let me = nix::unistd::geteuid().as_raw().to_string();
    let stub = Stub::start(
        &["--allow-uid", &me, "--max-workers", "0"],
        &[BIN, "example-worker"],
    );
    // Only our own uid admitted: only we may even reach the socket.
    assert_eq!(
        mode_of(stub.socket.parent().unwrap()),
        0o700,
        "socket directory is private"
    );
    let worker = Worker::connect(&stub.socket, "outside", 1).unwrap();
    let addr = stub.addr();
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let me = s.local_addr().unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        (reply, me)
    });
    let mut conn = worker.accept().unwrap().expect("a connection");
    let remote = conn.handoff().remote;
    conn.stream().write_all(b"served by the library").unwrap();
    drop(conn);
    let (reply, me) = client.join().unwrap();
    assert_eq!(reply, "served by the library");
    assert_eq!(remote, me);
    let stub_ref = &stub;
    stub_ref.wait_for("done reported", Duration::from_secs(2), |s| {
        s.metric("wepoq_connections_total{outcome=\"served\"}") == 1.0
    });
}

#[test]
fn process_workers_get_an_empty_network_namespace_when_root() {
    if !root_or_skip("process_workers_get_an_empty_network_namespace_when_root") {
        return;
    }
    let script = r#"readlink /proc/self/ns/net >&3; cat /proc/net/dev >&3"#;
    let stub = Stub::start(&[], &[BIN, "shim", "--", "sh", "-c", script]);
    let mut s = TcpStream::connect(stub.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (theirs, dev) = out.split_once('\n').unwrap();
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert!(theirs.starts_with("net:["), "{out}");
    assert_ne!(
        theirs,
        ours.to_string_lossy(),
        "the worker has its own network namespace"
    );
    assert_eq!(interfaces(dev), ["lo"], "nothing but loopback: {out}");
}

/// The network namespace `pid` is in, and the interfaces it holds.
fn network_of(pid: u32) -> (String, Vec<String>) {
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap();
    (ns, interfaces(&dev))
}

/// The interface names in the text of a `/proc/net/dev` (its two header lines skipped).
fn interfaces(dev: &str) -> Vec<String> {
    dev.lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim().to_owned()))
        .collect()
}

fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // Field 4 of stat is the parent; the command name before it may hold spaces.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let after_name = &stat[stat.rfind(')')? + 2..];
                    after_name.split(' ').nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// Every living worker of `stub` is in a namespace of its own, holding only loopback.
/// (Compared among the living only: the kernel reuses a destroyed namespace's number.)
fn assert_workers_alone(stub: &Stub, expected: usize) -> Vec<u32> {
    let (stubs, _) = network_of(stub.pid() as u32);
    let workers = children_of(stub.pid() as u32);
    assert_eq!(workers.len(), expected, "worker processes: {workers:?}");
    let mut seen: Vec<String> = Vec::new();
    for &pid in &workers {
        let (ns, interfaces) = network_of(pid);
        assert_ne!(ns, stubs, "worker {pid} is in the stub's namespace");
        assert!(!seen.contains(&ns), "worker {pid} shares {ns} with another");
        assert_eq!(interfaces, ["lo"], "worker {pid} has nothing but loopback");
        seen.push(ns);
    }
    workers
}

#[test]
fn every_process_worker_gets_a_network_namespace_of_its_own() {
    if !root_or_skip("every_process_worker_gets_a_network_namespace_of_its_own") {
        return;
    }
    // A burst at startup (more workers than namespaces made ahead) and cold starts one by
    // one later (each joining one made ahead): both ways, every worker is alone.
    let stub = Stub::start(
        &[
            "--protocol",
            "http",
            "--min-workers",
            "3",
            "--max-workers",
            "4",
            "--idle-timeout",
            "100ms",
            "--sweep-grace",
            "50ms",
        ],
        &[BIN, "example-worker", "--mode", "http"],
    );
    stub.wait_for("three warm workers", Duration::from_secs(10), |s| {
        s.metric("wepoq_workers{state=\"idle\"}") == 3.0
    });
    assert_workers_alone(&stub, 3);

    // Above the minimum, a fourth worker starts for a connection that finds all three
    // busy, is swept, and the next such connection starts another.
    for round in 0..2 {
        let busy: Vec<TcpStream> = (0..3)
            .map(|_| {
                let mut s = TcpStream::connect(stub.addr()).unwrap();
                s.write_all(b"GET / HTTP/1.0\r\n").unwrap();
                s
            })
            .collect();
        stub.wait_for("three busy workers", Duration::from_secs(10), |s| {
            s.metric("wepoq_workers{state=\"busy\"}") == 3.0
        });
        let (status, _, body) = crate::support::http_get(stub.addr(), "/");
        assert_eq!(status, 200);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        let fourth = body["pid"].as_u64().unwrap() as u32;
        let workers = assert_workers_alone(&stub, 4);
        assert!(workers.contains(&fourth), "{fourth} is the stub's worker");
        drop(busy);
        stub.wait_for("back to three", Duration::from_secs(10), |s| {
            s.metric("wepoq_workers_swept_total") == (round + 1) as f64
        });
    }
}
