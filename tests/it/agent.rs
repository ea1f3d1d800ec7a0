//! `wepoq agent` as a user runs it: refused with a clear message and exit 1 when the NB or
//! OVS is missing; once running, /healthz and /metrics on --admin, and SIGTERM stops it
//! with exit 0.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wepoq_reconciler::sandbox::{Component, Sandbox, require};

use crate::support::{free_loopback_addr, http_get};

fn agent(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wepoq"));
    cmd.arg("agent")
        .args(args)
        .env_remove("WEPOQ_DB")
        .env_remove("OVN_NB_DB")
        .env_remove("WEPOQ_OVS_DB")
        .env_remove("WEPOQ_OVS_NETNS");
    cmd
}

#[test]
fn the_agent_refuses_to_start_without_its_databases() {
    let out = agent(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--db"));

    let out = agent(&["--db", "unix:/nonexistent/nb.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NB unix:/nonexistent/nb.sock"), "{err}");
}

#[test]
fn the_agent_reports_health_and_metrics_and_stops_on_sigterm() {
    if require(Component::Docker).is_none() {
        return;
    }
    let Some(sb) = Sandbox::data_plane_or_skip() else {
        return;
    };
    let nb = sb.nb_unix_url();

    // OVS missing: refused, naming it.
    let out = agent(&["--db", &nb, "--ovs-db", "unix:/nonexistent/db.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("OVS database"));

    let admin = free_loopback_addr();
    let mut child = agent(&[
        "--db",
        &nb,
        "--admin",
        &admin,
        "--only-label",
        "wepoq.net/test=none",
    ])
    .envs(sb.ovs_env().unwrap())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if http_get(&admin, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            break;
        }
        assert!(Instant::now() < deadline, "never healthy");
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = http_get(&admin, "/metrics").unwrap();
    assert!(metrics.contains("wepoq_agent_attached 0\n"), "{metrics}");
    assert!(metrics.contains("wepoq_agent_docker_up 1\n"), "{metrics}");
    assert!(
        http_get(&admin, "/nope")
            .unwrap()
            .starts_with("HTTP/1.1 404")
    );

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("attachments left in place"), "{err}");
}
