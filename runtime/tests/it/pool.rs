//! The warm pool: concurrency limit, bounded queue and refusals, scale to zero, crashes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{BIN, Stub, http_get};

fn parallel_gets(stub: &Stub, n: usize, stagger: Duration) -> Vec<(u16, String, String, Duration)> {
    let addr = stub.addr();
    let start = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            std::thread::sleep(if i == 0 { Duration::ZERO } else { stagger });
            std::thread::spawn(move || {
                let t = Instant::now();
                let (status, head, body) = http_get(addr, "/");
                (status, head, body, t.elapsed())
            })
        })
        .collect();
    let out = handles.into_iter().map(|h| h.join().unwrap()).collect();
    eprintln!("parallel gets took {:?}", start.elapsed());
    out
}

#[test]
fn the_per_worker_concurrency_limit_holds() {
    let stub = Stub::start(
        &[
            "--protocol",
            "http",
            "--concurrency",
            "2",
            "--max-workers",
            "1",
            "--min-workers",
            "1",
        ],
        &[BIN, "example-worker", "--mode", "http", "--delay", "150ms"],
    );
    stub.wait_for("a warm worker", Duration::from_secs(5), |s| {
        s.metric("wepoq_workers{state=\"idle\"}") == 1.0
    });
    let start = Instant::now();
    let results = parallel_gets(&stub, 6, Duration::ZERO);
    let elapsed = start.elapsed();
    let mut maxes = Vec::new();
    for (status, _, body, _) in &results {
        assert_eq!(*status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        maxes.push(v["max_in_flight"].as_u64().unwrap());
    }
    // The worker itself does not limit: it starts a thread per handed connection, so the
    // most it ever held at once is what the stub allowed.
    assert!(maxes.iter().all(|m| *m <= 2), "{maxes:?}");
    assert!(maxes.contains(&2), "the limit of 2 was used: {maxes:?}");
    assert!(
        elapsed >= Duration::from_millis(440),
        "6 x 150ms two at a time: {elapsed:?}"
    );
}

#[test]
fn a_full_queue_refuses_http_with_429_and_retry_after() {
    let stub = Stub::start(
        &[
            "--protocol",
            "http",
            "--max-workers",
            "1",
            "--min-workers",
            "1",
            "--queue",
            "2",
        ],
        &[BIN, "example-worker", "--mode", "http", "--delay", "400ms"],
    );
    stub.wait_for("a warm worker", Duration::from_secs(5), |s| {
        s.metric("wepoq_workers{state=\"idle\"}") == 1.0
    });
    let results = parallel_gets(&stub, 6, Duration::from_millis(30));
    let served: Vec<_> = results.iter().filter(|r| r.0 == 200).collect();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert_eq!(served.len(), 3, "one in flight and two queued: {results:?}");
    assert_eq!(refused.len(), 3, "{results:?}");
    for (_, head, _, took) in refused {
        let retry: u64 = head
            .lines()
            .find_map(|l| l.strip_prefix("Retry-After: "))
            .expect("Retry-After header")
            .parse()
            .unwrap();
        assert!(retry >= 1);
        assert!(
            *took < Duration::from_millis(300),
            "refused at once, not after a wait: {took:?}"
        );
    }
    assert_eq!(
        stub.metric("wepoq_connections_total{outcome=\"refused\"}"),
        3.0
    );
}

#[test]
fn a_full_queue_closes_raw_tcp_at_once() {
    let stub = Stub::start(
        &["--max-workers", "1", "--min-workers", "1", "--queue", "1"],
        &[BIN, "example-worker", "--delay", "400ms"],
    );
    stub.wait_for("a warm worker", Duration::from_secs(5), |s| {
        s.metric("wepoq_workers{state=\"idle\"}") == 1.0
    });
    let addr = stub.addr();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(if i == 0 { 0 } else { 30 }));
            std::thread::spawn(move || {
                let t = Instant::now();
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let _ = s.write_all(b"x");
                let mut buf = [0u8; 1];
                let got = matches!(s.read(&mut buf), Ok(1));
                (got, t.elapsed())
            })
        })
        .collect();
    let results: Vec<(bool, Duration)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.0).count(), 2, "{results:?}");
    for (_, took) in results.iter().filter(|r| !r.0) {
        assert!(
            *took < Duration::from_millis(300),
            "closed at once: {took:?}"
        );
    }
}

#[test]
fn idle_workers_are_swept_to_zero_and_come_back() {
    let stub = Stub::start(
        &[
            "--protocol",
            "http",
            "--idle-timeout",
            "100ms",
            "--sweep-grace",
            "100ms",
        ],
        &[BIN, "example-worker", "--mode", "http"],
    );
    let first = http_get(stub.addr(), "/");
    assert_eq!(first.0, 200);
    let first: serde_json::Value = serde_json::from_str(&first.2).unwrap();
    stub.wait_for("scale to zero", Duration::from_secs(5), |s| {
        s.metric("wepoq_workers_swept_total") == 1.0
            && s.metric("wepoq_workers{state=\"idle\"}") == 0.0
            && s.metric("wepoq_workers{state=\"marked\"}") == 0.0
    });
    let pid = first["pid"].as_u64().unwrap();
    let gone = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            gone.elapsed() < Duration::from_secs(5),
            "swept worker {pid} still runs"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = http_get(stub.addr(), "/");
    assert_eq!(second.0, 200);
    let second: serde_json::Value = serde_json::from_str(&second.2).unwrap();
    assert_eq!(first["worker"], "w1");
    assert_eq!(second["worker"], "w2", "a new worker, cold-started");
    assert_eq!(stub.metric("wepoq_cold_start_seconds_count"), 2.0);
}

#[test]
fn a_connection_for_a_marked_worker_unmarks_it() {
    let stub = Stub::start(
        &[
            "--protocol",
            "http",
            "--idle-timeout",
            "150ms",
            "--sweep-grace",
            "1s",
        ],
        &[BIN, "example-worker", "--mode", "http"],
    );
    assert_eq!(http_get(stub.addr(), "/").0, 200);
    stub.wait_for("the idle worker marked", Duration::from_secs(5), |s| {
        s.metric("wepoq_workers{state=\"marked\"}") == 1.0
    });
    let (status, _, body) = http_get(stub.addr(), "/");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["worker"], "w1", "the marked worker took it");
    stub.wait_for("served", Duration::from_secs(2), |s| {
        s.metric("wepoq_connections_total{outcome=\"served\"}") == 2.0
    });
    assert_eq!(stub.metric("wepoq_workers{state=\"marked\"}"), 0.0);
    assert_eq!(stub.metric("wepoq_workers_swept_total"), 0.0);
}

#[test]
fn a_worker_that_dies_mid_connection_closes_it_and_is_replaced() {
    let stub = Stub::start(
        &["--protocol", "http", "--min-workers", "1"],
        &[BIN, "example-worker", "--mode", "http"],
    );
    let t = Instant::now();
    let (status, _, _) = http_get(stub.addr(), "/crash");
    assert_eq!(status, 0, "no response from a crashed worker");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "the client saw the end: {:?}",
        t.elapsed()
    );
    stub.wait_for("the loss counted", Duration::from_secs(5), |s| {
        s.metric("wepoq_connections_total{outcome=\"worker_lost\"}") == 1.0
    });
    let (status, _, body) = http_get(stub.addr(), "/");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["worker"], "w2", "replaced by a new worker");
    assert_eq!(stub.metric("wepoq_workers_lost_total"), 1.0);
}

#[test]
fn a_worker_holding_a_connection_past_its_deadline_is_stopped() {
    let stub = Stub::start(
        &[
            "--protocol",
            "http",
            "--min-workers",
            "1",
            "--conn-timeout",
            "300ms",
        ],
        &[BIN, "example-worker", "--mode", "http", "--delay", "30s"],
    );
    let t = Instant::now();
    let (status, _, _) = http_get(stub.addr(), "/");
    assert_eq!(status, 0, "no response from the stuck worker");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "ended near the deadline: {:?}",
        t.elapsed()
    );
    stub.wait_for("the timeout counted", Duration::from_secs(5), |s| {
        s.metric("wepoq_connections_total{outcome=\"timed_out\"}") == 1.0
    });
    stub.wait_for("a replacement worker", Duration::from_secs(5), |s| {
        s.metric("wepoq_workers{state=\"idle\"}") == 1.0
            && s.metric("wepoq_workers_started_total") == 2.0
    });
}
