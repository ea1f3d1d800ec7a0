//! Who may be a worker (SO_PEERCRED, 0700 directory) and what a worker can reach.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use wepoq_runtime::worker::Worker;

use crate::support::{BIN, Stub, root_or_skip};

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
    let mode = std::fs::metadata(stub.socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "socket directory is private");

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
    let mut lines = out.lines();
    let theirs = lines.next().unwrap().to_owned();
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert!(theirs.starts_with("net:["), "{out}");
    assert_ne!(
        theirs,
        ours.to_string_lossy(),
        "the worker has its own network namespace"
    );
    let interfaces: Vec<&str> = lines
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim()))
        .filter(|n| !n.contains('|') && !n.starts_with("Inter"))
        .collect();
    assert_eq!(interfaces, ["lo"], "nothing but loopback: {out}");
}
