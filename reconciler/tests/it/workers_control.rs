//! The agent's control socket spoken to directly: this test is the stub. A container
//! labelled as a stub (it runs something else: nothing of it connects) gets a pool and a
//! `control.sock`; the test binds the stub's worker socket itself, asks for a worker and
//! reads the agent's answers and events line by line. The scan is 60 s here, so what
//! arrives sooner came from Docker's events. Also proves who may use the control socket:
//! not a non-root uid on the host (file mode, then SO_PEERCRED), not a worker container.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wepoq_reconciler::agent::Metrics;
use wepoq_reconciler::agent::workers::{self, WorkersConfig};
use wepoq_reconciler::sandbox::containers::{Containers, TEST_LABEL, docker};
use wepoq_reconciler::sandbox::{Component, require};
use wepoq_runtime::control_proto::{CONTROL_SOCKET, RUNTIME_LABEL, STUB_SOCKET};
use wepoq_runtime::seqpacket::SeqPacket;

const SCAN: Duration = Duration::from_secs(60);

/// The agent's side of one control connection, read line by line.
struct Control {
    write: UnixStream,
    read: BufReader<UnixStream>,
}

impl Control {
    fn connect(path: &Path) -> Control {
        let write = UnixStream::connect(path).unwrap();
        write
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let read = BufReader::new(write.try_clone().unwrap());
        Control { write, read }
    }

    fn send(&mut self, line: serde_json::Value) {
        self.write
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    fn next(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.read.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    /// Sends a request and reads its answer (no event is expected meanwhile).
    fn ask(&mut self, request: serde_json::Value) -> serde_json::Value {
        let id = request["id"].clone();
        self.send(request);
        let reply = self.next();
        assert_eq!(reply["id"], id, "{reply}");
        reply
    }
}

/// Connects to `path` as `uid` from a forked child: 2 when connect fails with EACCES, 0 when
/// connected and then closed (or reset) without an answer, 1 when answered, other codes for
/// other ends.
fn connect_as(uid: u32, path: &Path) -> i32 {
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_encoded_bytes();
    assert!(bytes.len() < addr.sun_path.len());
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let hello = b"{\"op\":\"hello\",\"id\":1,\"endpoint\":\"intruder\"}\n";
    // SAFETY: the child only makes async-signal-safe calls on memory prepared before the
    // fork, then `_exit`s.
    unsafe {
        match libc::fork() {
            0 => {
                if libc::setgid(uid) != 0 || libc::setuid(uid) != 0 {
                    libc::_exit(10);
                }
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
                if libc::connect(fd, &addr as *const _ as *const libc::sockaddr, len) != 0 {
                    let refused = *libc::__errno_location() == libc::EACCES;
                    libc::_exit(if refused { 2 } else { 3 });
                }
                let wait = libc::timeval {
                    tv_sec: 10,
                    tv_usec: 0,
                };
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    &wait as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                );
                libc::write(fd, hello.as_ptr().cast(), hello.len());
                let mut buf = [0u8; 64];
                let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                // Closed with our hello unread: end of stream or a reset, never an answer.
                let reset = n < 0 && *libc::__errno_location() == libc::ECONNRESET;
                libc::_exit(match n {
                    0 => 0,
                    _ if reset => 0,
                    n if n > 0 => 1,
                    _ => 4,
                });
            }
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            pid => {
                let mut status = 0;
                assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
                assert!(libc::WIFEXITED(status), "child status {status}");
                libc::WEXITSTATUS(status)
            }
        }
    }
}

/// The worker container the agent made for `worker` (label `wepoq.net/worker`).
fn container_of(worker: &str) -> String {
    docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label=wepoq.net/worker={worker}"),
    ])
    .unwrap()
}

/// The test's run directory, removed however the test ends.
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn wait(what: &str, within: Duration, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_control_socket_answers_with_step_times_reports_a_kill_by_event_and_admits_only_root() {
    if require(Component::Docker).is_none() {
        return;
    }
    let c = Containers::new().unwrap();
    let run_dir = RunDir(std::env::temp_dir().join(format!("wepoq-control-{}", c.tag)));
    let stub = format!("fake-stub-{}", c.tag);
    let label = serde_json::json!({
        "image": c.image, "command": ["/wepoq-runtime", "example-worker"],
        "min_warm": 0, "max_workers": 2, "precreate": 0, "user": "65534:65534",
    });
    c.run_args(
        &[(RUNTIME_LABEL, &label.to_string())],
        &["--name", &stub, "--network", "none"],
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let metrics = Arc::new(Metrics::default());
    let cfg = WorkersConfig {
        docker: None,
        run_dir: run_dir.0.clone(),
        shim_binary: None,
        only_label: Some(format!("{TEST_LABEL}={}", c.tag)),
    };
    let agent = rt.spawn(workers::run_scanning_every(
        cfg,
        SCAN,
        metrics.clone(),
        std::future::pending(),
    ));
    let dir = run_dir.0.join("stubs").join(&stub);
    let control_path = dir.join(CONTROL_SOCKET);
    wait("the control socket", Duration::from_secs(20), || {
        control_path.exists()
    });
    let meta = std::fs::metadata(&control_path).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o700));
    // The stub's worker socket, which workers reach through the same directory.
    let stub_socket = SeqPacket::listen(&dir.join(STUB_SOCKET)).unwrap();
    std::fs::set_permissions(dir.join(STUB_SOCKET), PermissionsExt::from_mode(0o777)).unwrap();

    let mut control = Control::connect(&control_path);
    let hello = control.ask(serde_json::json!({"op": "hello", "id": 1, "endpoint": "test"}));
    assert_eq!(hello["ok"], true, "{hello}");
    // No stem cell (precreate 0): the spawn is a create and a start, each timed.
    let spawned = control.ask(serde_json::json!({"op": "spawn", "id": 2, "concurrency": 1}));
    let worker = spawned["worker_id"].as_str().unwrap().to_owned();
    assert!(spawned["create_us"].as_u64().unwrap() > 0, "{spawned}");
    assert!(spawned["start_us"].as_u64().unwrap() > 0, "{spawned}");
    let t = Instant::now();
    let _registered = loop {
        match stub_socket.accept() {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "the worker never connected"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    let paused = control.ask(serde_json::json!({"op": "pause", "id": 3, "worker_id": worker}));
    assert_eq!(paused["ok"], true, "{paused}");
    let resumed = control.ask(serde_json::json!({"op": "resume", "id": 4, "worker_id": worker}));
    assert!(resumed["unpause_us"].as_u64().unwrap() > 0, "{resumed}");

    // A non-root process on the host: the socket file's mode stops it at connect ...
    assert_eq!(connect_as(65534, &control_path), 2, "EACCES at connect");
    // ... and were the mode wider, SO_PEERCRED refuses it: closed, never answered, counted.
    std::fs::set_permissions(&control_path, PermissionsExt::from_mode(0o777)).unwrap();
    assert_eq!(connect_as(65534, &control_path), 0, "closed unanswered");
    std::fs::set_permissions(&control_path, PermissionsExt::from_mode(0o700)).unwrap();
    assert_eq!(metrics.errors("control_refused"), 1);
    // The refused peer did not take the stub's place: its connection still gets answers.
    let still = control.ask(serde_json::json!({"op": "stop", "id": 5, "worker_id": "none"}));
    assert_eq!(still["ok"], true, "{still}");
    // From inside the worker container (its user, no capabilities, the directory shared
    // with the stub at /run/wepoq): control.sock is there, and connecting to it is refused.
    let container = container_of(&worker);
    let inside = docker(&[
        "exec",
        "-e",
        "WEPOQ_STUB_SOCKET=/run/wepoq/control.sock",
        &container,
        "/wepoq-runtime",
        "example-worker",
    ]);
    let why = inside.expect_err("a worker reached the control socket");
    assert!(
        why.to_string().contains("Permission denied") || why.to_string().contains("os error 13"),
        "{why}"
    );

    // Killed: the agent reports it from Docker's `die` event, long before its next listing
    // (60 s away), and removes the container.
    let t = Instant::now();
    docker(&["kill", &container]).unwrap();
    let exited = control.next();
    let took = t.elapsed();
    assert_eq!(exited["event"], "exited", "{exited}");
    assert_eq!(exited["worker_id"], worker.as_str(), "{exited}");
    assert_eq!(
        exited["why"], "exited (137)",
        "from the event, not a listing: {exited}"
    );
    assert!(took < Duration::from_secs(10), "reported after {took:?}");
    eprintln!("exited notice {took:?} after docker kill");
    wait("the dead worker removed", Duration::from_secs(10), || {
        container_of(&worker).is_empty()
    });
    assert!(metrics.errors("worker_exited") >= 1);

    // The stub goes (an event too): its pool ends and nothing of the test is left.
    docker(&["rm", "-f", &stub]).unwrap();
    wait("the pool gone", Duration::from_secs(20), || {
        metrics.workers_by_tier() == [0, 0, 0] && !control_path.exists()
    });
    agent.abort();
    drop(rt);
    assert!(
        c.ids().unwrap().is_empty(),
        "containers left: {:?}",
        c.ids()
    );
}
