//! A connection reaches the worker intact, with the right addresses, and is accounted for.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{BIN, Stub, http_get, parse_http};

#[test]
fn data_reaches_the_worker_and_the_peer_address_is_right() {
    let stub = Stub::start_listening(
        &["127.0.0.1:0", "127.0.0.2:0"],
        &[
            "--protocol",
            "http",
            "--fqdn",
            "vip.srv.result.ovn-vote.ns.ovn.wepoq.net",
        ],
        &[BIN, "example-worker", "--mode", "http"],
    );
    for addr in stub.addrs.clone() {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let me = s.local_addr().unwrap();
        s.write_all(b"GET /hello HTTP/1.0\r\n\r\n").unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (status, _, body) = parse_http(&raw);
        assert_eq!(status, 200, "{raw}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        // What the stub told the worker, and what the socket itself says, are both the client.
        assert_eq!(body["remote"], me.to_string());
        assert_eq!(body["peer"], me.to_string());
        assert_eq!(body["local"], addr.to_string());
        assert_eq!(body["fqdn"], "vip.srv.result.ovn-vote.ns.ovn.wepoq.net");
    }
}

#[test]
fn echo_carries_bytes_both_ways_through_the_handed_socket() {
    let stub = Stub::start(&["--min-workers", "1"], &[BIN, "example-worker"]);
    let mut s = TcpStream::connect(stub.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut w = s.try_clone().unwrap();
        let payload = payload.clone();
        std::thread::spawn(move || {
            w.write_all(&payload).unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "echoed bytes differ");
}

#[test]
fn every_connection_gets_a_record_and_the_metrics_count_it() {
    let stub = Stub::start(
        &["--protocol", "http"],
        &[BIN, "example-worker", "--mode", "http"],
    );
    for _ in 0..3 {
        assert_eq!(http_get(stub.addr(), "/").0, 200);
        // The client has its reply before the worker reports done; wait for that, or the next
        // request may find the only worker still busy and (rightly) start a second one.
        stub.wait_for("the worker idle again", Duration::from_secs(5), |s| {
            s.metric("wepoq_workers{state=\"busy\"}") == 0.0
        });
    }
    stub.wait_for("served count", Duration::from_secs(5), |s| {
        s.metric("wepoq_connections_total{outcome=\"served\"}") == 3.0
    });
    stub.wait_for("records flushed", Duration::from_secs(5), |s| {
        s.records().len() == 3
    });
    let records = stub.records();
    assert_eq!(
        records[0]["cold"], true,
        "the first one waited for a worker"
    );
    assert_eq!(records[1]["cold"], false);
    for r in &records {
        assert_eq!(r["outcome"], "served");
        assert_eq!(r["worker"], "w1");
        assert!(r["handoff_us"].as_f64().unwrap() > 0.0);
        assert!(r["accept_unix_ns"].as_u64().unwrap() > 1_600_000_000_000_000_000);
    }
    let text = stub.metrics();
    assert!(
        text.contains("wepoq_handoff_latency_seconds_count 3\n"),
        "{text}"
    );
    assert!(
        text.contains("wepoq_cold_start_seconds_count 1\n"),
        "{text}"
    );
    assert!(text.contains("wepoq_workers{state=\"idle\"} 1\n"), "{text}");
    assert!(text.contains("wepoq_queue_depth 0\n"), "{text}");
}
