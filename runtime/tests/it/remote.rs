//! The remote backend against a small control plane written here: it speaks the real
//! protocol on a real unix socket and starts real process workers, as the host agent starts
//! containers (paused with SIGSTOP, as Docker's pause freezes a cgroup).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use wepoq_runtime::control_proto::{AgentEvent, FromAgent, Reply, Request, encode};

use crate::support::{BIN, Stub, http_get, scratch};
use crate::tiers::proc_state;

/// What outlives an agent restart (Docker keeps the containers): the workers, and the log
/// of requests the test looks at.
#[derive(Default)]
struct AgentState {
    log: Mutex<Vec<Request>>,
    pids: Mutex<HashMap<String, u32>>,
    /// The live connection, where exit events go.
    conn: Mutex<Option<UnixStream>>,
    next: Mutex<u32>,
}

/// One run of the agent: its listener, until `kill` (which leaves the accept thread blocked
/// on a socket nobody can reach any more, as a dead process would).
struct TestAgent {
    path: PathBuf,
    state: Arc<AgentState>,
}

impl TestAgent {
    fn start(path: &Path, stub_socket: &Path, state: Arc<AgentState>) -> TestAgent {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        let agent = TestAgent {
            path: path.to_owned(),
            state: state.clone(),
        };
        let stub_socket = stub_socket.to_owned();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                *state.conn.lock().unwrap() = Some(conn.try_clone().unwrap());
                let (state, stub_socket) = (state.clone(), stub_socket.clone());
                std::thread::spawn(move || serve(conn, &state, &stub_socket));
            }
        });
        agent
    }

    /// The agent process ends: its socket goes, its connection drops, the workers stay.
    fn kill(self) {
        if let Some(c) = self.state.conn.lock().unwrap().take() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.path);
    }

    fn requests(&self) -> Vec<Request> {
        self.state.log.lock().unwrap().clone()
    }

    fn count(&self, f: impl Fn(&Request) -> bool) -> usize {
        self.requests().iter().filter(|r| f(r)).count()
    }

    fn wait(&self, what: &str, f: impl Fn(&[Request]) -> bool) {
        let t = Instant::now();
        while !f(&self.requests()) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}: {:?}",
                self.requests()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn pid(&self, worker: &str) -> u32 {
        self.state.pids.lock().unwrap()[worker]
    }
}

fn send(state: &AgentState, line: &[u8]) {
    if let Some(c) = state.conn.lock().unwrap().as_mut() {
        let _ = c.write_all(line);
    }
}

fn serve(conn: UnixStream, state: &Arc<AgentState>, stub_socket: &Path) {
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        let request: Request = serde_json::from_str(&line).expect("the stub speaks the protocol");
        state.log.lock().unwrap().push(request.clone());
        let signal = |worker_id: &str, signals: &[Signal]| {
            let pid = state.pids.lock().unwrap().get(worker_id).copied();
            for &s in signals {
                if let Some(pid) = pid {
                    let _ = kill(Pid::from_raw(pid as i32), s);
                }
            }
            match pid {
                Some(_) => Reply::ok(request.id()),
                None => Reply::error(request.id(), format!("no worker {worker_id}")),
            }
        };
        let reply = match &request {
            Request::Hello { id, .. } => Reply::ok(*id),
            Request::Spawn { id, concurrency } => {
                let worker_id = {
                    let mut n = state.next.lock().unwrap();
                    *n += 1;
                    format!("c-{n}")
                };
                let mut child = Command::new(BIN)
                    .args(["example-worker", "--mode", "http"])
                    .env("WEPOQ_STUB_SOCKET", stub_socket)
                    .env("WEPOQ_WORKER_ID", &worker_id)
                    .env("WEPOQ_CONCURRENCY", concurrency.to_string())
                    .stdin(Stdio::null())
                    .spawn()
                    .unwrap();
                state
                    .pids
                    .lock()
                    .unwrap()
                    .insert(worker_id.clone(), child.id());
                let (state, id_) = (state.clone(), worker_id.clone());
                std::thread::spawn(move || {
                    let status = child.wait().unwrap();
                    state.pids.lock().unwrap().remove(&id_);
                    let event = FromAgent::Event(AgentEvent::Exited {
                        worker_id: id_,
                        why: status.to_string(),
                    });
                    send(&state, &encode(&event));
                });
                Reply::spawned(*id, worker_id)
            }
            Request::Stop { worker_id, .. } => {
                signal(worker_id, &[Signal::SIGTERM, Signal::SIGCONT])
            }
            Request::Pause { worker_id, .. } => signal(worker_id, &[Signal::SIGSTOP]),
            Request::Resume { worker_id, .. } => signal(worker_id, &[Signal::SIGCONT]),
        };
        send(state, &encode(&FromAgent::Reply(reply)));
    }
}

fn get_worker(stub: &Stub) -> String {
    let (status, _, body) = http_get(stub.addr(), "/");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["worker"].as_str().unwrap().to_owned()
}

fn start_stub(control: &Path, extra: &[&str]) -> Stub {
    let mut args = vec![
        "--protocol",
        "http",
        "--control",
        control.to_str().unwrap(),
        "--endpoint",
        "s1.svr.vote.test",
    ];
    args.extend_from_slice(extra);
    Stub::start(&args, &[])
}

#[test]
fn the_agent_starts_pauses_resumes_and_replaces_workers_over_the_control_socket() {
    let dir = scratch();
    let control = dir.join("control.sock");
    let state = Arc::new(AgentState::default());
    // The agent comes second: it learns the stub's socket from the stub's ready line.
    let stub = start_stub(&control, &["--min-workers", "1", "--pause-after", "150ms"]);
    let agent = TestAgent::start(&control, &stub.socket, state);
    agent.wait("hello then spawn", |r| {
        matches!(r.first(), Some(Request::Hello { endpoint, .. }) if endpoint == "s1.svr.vote.test")
            && r.iter().any(|r| matches!(r, Request::Spawn { .. }))
    });
    stub.wait_for("the minimum registered", Duration::from_secs(5), |s| {
        s.metric("wepoq_workers{state=\"idle\"}") + s.metric("wepoq_workers{state=\"paused\"}")
            == 1.0
    });
    assert_eq!(get_worker(&stub), "c-1", "the agent named the worker");
    stub.wait_for("paused", Duration::from_secs(5), |s| {
        s.metric("wepoq_workers{state=\"paused\"}") == 1.0
    });
    agent.wait("pause c-1", |r| {
        r.iter()
            .any(|r| matches!(r, Request::Pause { worker_id, .. } if worker_id == "c-1"))
    });
    assert_eq!(proc_state(agent.pid("c-1") as u64), 'T');
    assert_eq!(get_worker(&stub), "c-1", "the paused worker, resumed");
    assert_eq!(
        agent.count(|r| matches!(r, Request::Resume { worker_id, .. } if worker_id == "c-1")),
        1
    );
    stub.wait_for("records", Duration::from_secs(5), |s| {
        s.records().len() == 2
    });
    let tiers: Vec<_> = stub.records().iter().map(|r| r["tier"].clone()).collect();
    // The minimum was registered before the first client came (and may have been paused
    // already on a slow machine).
    assert_ne!(tiers[0], "cold");
    assert_eq!(tiers[1], "paused");

    // The worker dies behind the stub's back: the agent's exit event replaces it.
    kill(Pid::from_raw(agent.pid("c-1") as i32), Signal::SIGKILL).unwrap();
    agent.wait("a second spawn", |r| {
        r.iter()
            .filter(|r| matches!(r, Request::Spawn { .. }))
            .count()
            == 2
    });
    stub.wait_for("the loss counted", Duration::from_secs(5), |s| {
        s.metric("wepoq_workers_lost_total") == 1.0
    });
    assert_eq!(get_worker(&stub), "c-2");
    drop(stub);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_agent_that_is_late_or_restarts_loses_nothing() {
    let dir = scratch();
    let control = dir.join("control.sock");
    let state = Arc::new(AgentState::default());
    // No agent yet: the stub keeps trying, and its first client waits in the queue.
    let stub = start_stub(&control, &["--min-workers", "1"]);
    let addr = stub.addr();
    let early = std::thread::spawn(move || http_get(addr, "/"));
    std::thread::sleep(Duration::from_millis(300));
    let agent = TestAgent::start(&control, &stub.socket, state.clone());
    let (status, _, body) = early.join().unwrap();
    assert_eq!(status, 200, "served once the agent came: {body}");
    assert_eq!(
        agent.count(|r| matches!(r, Request::Spawn { .. })),
        1,
        "the queued connection and the minimum share one worker"
    );

    agent.kill();
    // The data plane does not need the agent.
    assert_eq!(get_worker(&stub), "c-1");
    let agent = TestAgent::start(&control, &stub.socket, state);
    agent.wait("a hello on reconnect", |r| {
        r.iter()
            .filter(|r| matches!(r, Request::Hello { .. }))
            .count()
            == 2
    });
    // The exit notice survived the restart: the new agent's report replaces the worker.
    kill(Pid::from_raw(agent.pid("c-1") as i32), Signal::SIGKILL).unwrap();
    agent.wait("a replacement", |r| {
        r.iter()
            .filter(|r| matches!(r, Request::Spawn { .. }))
            .count()
            == 2
    });
    assert_eq!(get_worker(&stub), "c-2");
    drop(stub);
    let _ = std::fs::remove_dir_all(&dir);
}
