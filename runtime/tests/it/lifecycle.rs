//! Long runs and endings: no descriptor leaks, graceful drain on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{BIN, Stub, http_get, no_linger};

fn one_byte_round_trip(addr: std::net::SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    no_linger(&s);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut b = [0u8; 1];
    s.write_all(b"x").is_ok() && matches!(s.read(&mut b), Ok(1))
}

#[test]
fn the_stub_leaks_no_descriptors_over_100k_connections() {
    const TOTAL: usize = 100_000;
    const CLIENTS: usize = 4;
    let stub = Stub::start(
        &[
            "--min-workers",
            "4",
            "--max-workers",
            "4",
            "--queue",
            "4096",
        ],
        &[BIN, "example-worker"],
    );
    stub.wait_for("a warm pool", Duration::from_secs(5), |s| {
        s.metric("wepoq_workers{state=\"idle\"}") == 4.0
    });
    let settled = |s: &Stub| {
        s.metric("wepoq_workers{state=\"idle\"}") == 4.0 && s.metric("wepoq_queue_depth") == 0.0
    };
    for _ in 0..100 {
        assert!(one_byte_round_trip(stub.addr()));
    }
    stub.wait_for("settled", Duration::from_secs(5), settled);
    // The scrape that just ran may still hold its socket in the stub for a moment.
    let before = (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            stub.open_fds()
        })
        .min()
        .unwrap();

    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    // Bounded in time so a slow machine fails clearly instead of stalling the suite.
    let give_up = Instant::now() + Duration::from_secs(90);
    let start = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (done, failed, addr) = (done.clone(), failed.clone(), stub.addr());
            std::thread::spawn(move || {
                while done.fetch_add(1, Ordering::Relaxed) < TOTAL && Instant::now() < give_up {
                    if !one_byte_round_trip(addr) {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let made = done.load(Ordering::Relaxed).min(TOTAL);
    eprintln!("{made} connections in {:?}", start.elapsed());
    assert!(Instant::now() < give_up, "100k connections took over 90s");
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    stub.wait_for("settled", Duration::from_secs(5), settled);
    // A scrape's socket may still be closing in the stub: a leak stays, that does not.
    let t = Instant::now();
    while stub.open_fds() != before && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        stub.open_fds(),
        before,
        "open descriptors before and after {made} connections"
    );
    assert!(stub.metric("wepoq_connections_total{outcome=\"served\"}") >= TOTAL as f64);
}

#[test]
fn sigterm_drains_in_flight_and_queued_connections_then_exits() {
    let mut stub = Stub::start(
        &[
            "--protocol",
            "http",
            "--min-workers",
            "1",
            "--max-workers",
            "1",
        ],
        &[BIN, "example-worker", "--mode", "http", "--delay", "400ms"],
    );
    stub.wait_for("a warm worker", Duration::from_secs(5), |s| {
        s.metric("wepoq_workers{state=\"idle\"}") == 1.0
    });
    let addr = stub.addr();
    let in_flight = std::thread::spawn(move || http_get(addr, "/").0);
    std::thread::sleep(Duration::from_millis(50));
    let queued = std::thread::spawn(move || http_get(addr, "/").0);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(stub.metric("wepoq_queue_depth"), 1.0);

    stub.terminate();
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        TcpStream::connect(addr).is_err(),
        "no new connections while draining"
    );
    assert_eq!(
        in_flight.join().unwrap(),
        200,
        "in-flight connection finished"
    );
    assert_eq!(
        queued.join().unwrap(),
        200,
        "queued connection served, not dropped"
    );
    let t = Instant::now();
    let status = loop {
        if let Some(status) = stub.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "stub did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
}
