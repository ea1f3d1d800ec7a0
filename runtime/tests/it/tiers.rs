//! Tiers with process workers: idle workers paused (SIGSTOP) and resumed (SIGCONT) for a
//! connection; a program that keeps failing to start backs off and is refused with a reason.

use std::time::{Duration, Instant};

use crate::support::{BIN, Stub, http_get};

/// The state letter of a process in /proc (`T` when stopped).
pub fn proc_state(pid: u64) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name is in parentheses and may hold spaces: the state follows the last ')'.
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .unwrap_or('?')
}

fn get_json(stub: &Stub) -> serde_json::Value {
    let (status, _, body) = http_get(stub.addr(), "/");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn an_idle_process_worker_is_paused_and_a_connection_resumes_it() {
    let stub = Stub::start(
        &[
            "--protocol",
            "http",
            "--min-workers",
            "1",
            "--pause-after",
            "150ms",
        ],
        &[BIN, "example-worker", "--mode", "http"],
    );
    let first = get_json(&stub);
    let pid = first["pid"].as_u64().unwrap();
    stub.wait_for("the idle worker paused", Duration::from_secs(5), |s| {
        s.metric("wepoq_workers{state=\"paused\"}") == 1.0
    });
    assert_eq!(proc_state(pid), 'T', "paused means stopped: no CPU");
    let t = Instant::now();
    let second = get_json(&stub);
    eprintln!("served by the paused worker in {:?}", t.elapsed());
    assert_eq!(second["pid"], first["pid"], "the paused worker took it");
    assert_ne!(proc_state(pid), 'T', "and runs again");
    stub.wait_for("records", Duration::from_secs(5), |s| {
        s.records().len() == 2
    });
    let records = stub.records();
    assert_eq!(records[0]["tier"], "cold");
    assert!(records[0]["spawn_us"].as_f64().unwrap() > 0.0);
    // A worker may register before its spawn call returns (it is then adopted): both
    // steps are timed, in no fixed order.
    assert!(records[0]["register_us"].as_f64().unwrap() > 0.0);
    // The backend's own steps: a process is started (fork and exec), never created.
    assert!(records[0]["start_us"].as_f64().unwrap() > 0.0);
    assert!(records[0].get("create_us").is_none());
    assert_eq!(records[1]["tier"], "paused");
    assert!(records[1].get("spawn_us").is_none());
    assert!(records[1].get("start_us").is_none());
    assert!(records[1]["unpause_us"].as_f64().unwrap() > 0.0);
    assert_eq!(stub.metric("wepoq_handoffs_total{tier=\"paused\"}"), 1.0);
    assert_eq!(stub.metric("wepoq_handoffs_total{tier=\"cold\"}"), 1.0);
    assert!(stub.metric("wepoq_workers_paused_total") >= 1.0);
}

#[test]
fn a_paused_worker_is_still_swept_down_to_the_minimum() {
    let stub = Stub::start(
        &[
            "--protocol",
            "http",
            "--pause-after",
            "50ms",
            "--idle-timeout",
            "300ms",
            "--sweep-grace",
            "100ms",
        ],
        &[BIN, "example-worker", "--mode", "http"],
    );
    let pid = get_json(&stub)["pid"].as_u64().unwrap();
    stub.wait_for("paused", Duration::from_secs(5), |s| {
        s.metric("wepoq_workers{state=\"paused\"}") == 1.0
    });
    stub.wait_for("swept", Duration::from_secs(5), |s| {
        s.metric("wepoq_workers_swept_total") == 1.0
    });
    let t = Instant::now();
    // A stopped process keeps SIGTERM pending: the backend must wake it to let it end.
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && proc_state(pid) != 'Z' {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "swept paused worker {pid} still runs"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(get_json(&stub)["worker"], "w2", "cold-started again");
}

#[test]
fn a_program_that_exits_at_once_backs_off_and_is_refused_with_a_reason() {
    let stub = Stub::start(
        &["--protocol", "http", "--queue-timeout", "10s"],
        &["false"],
    );
    let t = Instant::now();
    let (status, head, _) = http_get(stub.addr(), "/");
    assert_eq!(status, 503, "{head}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "refused when the start failed, not after the queue timeout: {:?}",
        t.elapsed()
    );
    assert!(head.contains("Retry-After: "), "{head}");
    // Within the backoff, refused at once without another start.
    let started = stub.metric("wepoq_workers_started_total");
    let (status, _, _) = http_get(stub.addr(), "/");
    assert_eq!(status, 503);
    stub.wait_for("records", Duration::from_secs(5), |s| {
        s.records().len() == 2
    });
    for r in stub.records() {
        assert_eq!(r["outcome"], "start_failed");
        let why = r["why"].as_str().unwrap();
        assert!(
            why.contains("before registering") && why.contains("exit status: 1"),
            "{why}"
        );
    }
    assert!(stub.metric("wepoq_workers_started_total") <= started + 1.0);
    // The backoff grows: many connections start few workers.
    for _ in 0..20 {
        assert_eq!(http_get(stub.addr(), "/").0, 503);
    }
    assert!(
        stub.metric("wepoq_workers_started_total") < 10.0,
        "backing off, not a tight loop"
    );
}
