//! Container workers on the real Docker engine: the agent's control plane (in this test
//! process) serves a real stub container (the static `wepoq-runtime stub --control`, host
//! network so the test reaches its port) and keeps its worker containers. Proves a worker's
//! hardening from the host (/proc of its init), the tiers (stem cell, warm, paused, swept),
//! a worker killed mid-connection, an agent restart losing and leaking nothing, and a
//! restarted stub getting fresh workers. Every test ends with [`Lab::finish`]: the stub
//! removed, the agent removes every worker and no container of the test is left.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wepoq_reconciler::agent::Metrics;
use wepoq_reconciler::agent::workers::{self, WorkersConfig};
use wepoq_reconciler::sandbox::containers::{Containers, TEST_LABEL, docker, proc_status};
use wepoq_reconciler::sandbox::{Component, require};

struct Lab {
    // First, so it is dropped first: the agent's tasks end before `c` removes containers.
    rt: tokio::runtime::Runtime,
    c: Containers,
    run_dir: PathBuf,
    stub: String,
    addr: SocketAddr,
    agent: Option<tokio::task::JoinHandle<()>>,
    metrics: Arc<Metrics>,
    shim_binary: Option<PathBuf>,
}

impl Lab {
    /// A stub container named after the test with `label` as its runtime label and `flags`
    /// for the stub, and an agent serving it.
    fn new(label: serde_json::Value, flags: &[&str]) -> Lab {
        Lab::with_image(label, flags, None, None)
    }

    /// Like [`Lab::new`] with another worker image (`None`: the static one) and a shim binary.
    fn with_image(
        label: serde_json::Value,
        flags: &[&str],
        image: Option<&str>,
        shim_binary: Option<PathBuf>,
    ) -> Lab {
        let c = Containers::new().unwrap();
        let run_dir = std::env::temp_dir().join(format!("wepoq-workers-{}", c.tag));
        let stub = format!("stub-{}", c.tag);
        let mut label = label;
        label["image"] = image.unwrap_or(&c.image).into();
        let addr = c.run_stub(&stub, &run_dir, &label, flags).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut lab = Lab {
            rt,
            c,
            run_dir,
            stub,
            addr,
            agent: None,
            metrics: Arc::new(Metrics::default()),
            shim_binary,
        };
        lab.start_agent();
        lab
    }

    fn start_agent(&mut self) {
        let cfg = WorkersConfig {
            docker: None,
            run_dir: self.run_dir.clone(),
            shim_binary: self.shim_binary.clone(),
            only_label: Some(format!("{TEST_LABEL}={}", self.c.tag)),
        };
        self.metrics = Arc::new(Metrics::default());
        let m = self.metrics.clone();
        self.agent = Some(self.rt.spawn(workers::run(cfg, m, std::future::pending())));
    }

    /// The end of every test: the stub goes, the agent removes its workers (and whatever
    /// its Docker calls in flight make), and then no container of this test is left.
    fn finish(mut self) {
        let _ = docker(&["rm", "-f", &self.stub]);
        self.wait(
            "the agent removing every worker",
            Duration::from_secs(30),
            |l| l.workers().is_empty(),
        );
        // A create in flight as the stub went lands now at the latest: the pool waits for
        // its jobs before it ends. Give a leak the time to show.
        std::thread::sleep(Duration::from_secs(1));
        self.stop_agent();
        let left = self.c.ids().unwrap();
        assert!(
            left.is_empty(),
            "containers of the test left behind: {:?}",
            left.iter()
                .map(|id| docker(&["inspect", "-f", "{{.Name}} {{.State.Status}}", id]))
                .collect::<Vec<_>>()
        );
    }

    fn stop_agent(&mut self) {
        if let Some(a) = self.agent.take() {
            a.abort();
            let _ = self.rt.block_on(a);
        }
    }

    /// Worker containers of the stub: (id, state).
    fn workers(&self) -> Vec<(String, String)> {
        Containers::workers_of(&self.stub).unwrap()
    }

    fn in_state(&self, state: &str) -> Vec<String> {
        self.workers()
            .into_iter()
            .filter(|(_, s)| s == state)
            .map(|(id, _)| id)
            .collect()
    }

    fn wait(&self, what: &str, within: Duration, f: impl Fn(&Lab) -> bool) {
        let t = Instant::now();
        while !f(self) {
            if t.elapsed() > within {
                let logs = docker(&["logs", &self.stub]).unwrap_or_default();
                panic!(
                    "timed out waiting for {what}; workers {:?}\nstub logs:\n{logs}",
                    self.workers()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The stub's per-connection records so far (`--records /run/wepoq/records.jsonl`).
    fn records(&self) -> Vec<serde_json::Value> {
        let path = self
            .run_dir
            .join("stubs")
            .join(&self.stub)
            .join("records.jsonl");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// One echo round trip on a new connection.
    fn echo(&self, text: &str) -> String {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(text.as_bytes()).unwrap();
        let mut buf = vec![0u8; text.len()];
        s.read_exact(&mut buf).unwrap_or_else(|e| {
            panic!(
                "echo: {e}\nstub logs:\n{}",
                docker(&["logs", &self.stub]).unwrap_or_default()
            )
        });
        String::from_utf8(buf).unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_agent();
        // The workers carry the test label too (inherited from the stub): Containers
        // removes them with the stub.
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

fn label(precreate: u32) -> serde_json::Value {
    serde_json::json!({
        "min_warm": 0, "max_workers": 4, "concurrency": 1, "precreate": precreate,
        "pids_limit": 32, "memory_bytes": 67108864, "user": "65534:65534",
        "command": ["/wepoq-runtime", "example-worker"],
    })
}

#[test]
fn a_hardened_worker_container_serves_pauses_wakes_and_scales_to_zero() {
    if require(Component::Docker).is_none() {
        return;
    }
    let lab = Lab::new(
        label(1),
        &[
            "--pause-after",
            "300ms",
            "--idle-timeout",
            "1500ms",
            "--sweep-grace",
            "0s",
            "--min-workers",
            "0",
            "--records",
            "/run/wepoq/records.jsonl",
        ],
    );
    // A stem cell is made before any connection: created, not started.
    lab.wait("a stem cell", Duration::from_secs(20), |l| {
        l.in_state("created").len() == 1
    });
    // Created network-less: an own network namespace with only `lo`, and Docker skips its
    // network prestart hook (about half of a start).
    let stem = lab.in_state("created").remove(0);
    let network = docker(&[
        "inspect",
        "-f",
        "{{.Config.NetworkDisabled}} {{.HostConfig.NetworkMode}}",
        &stem,
    ])
    .unwrap();
    assert_eq!(network, "true none");
    assert_eq!(lab.echo("hello"), "hello");
    // The worker may answer before Docker's start call returns.
    lab.wait("the worker running", Duration::from_secs(10), |l| {
        l.in_state("running").len() == 1
    });
    let running = lab.in_state("running");
    assert_eq!(running.len(), 1, "{:?}", lab.workers());
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &running[0]]).unwrap();
    assert_eq!(proc_status(&pid, "CapEff"), "0000000000000000");
    assert_eq!(proc_status(&pid, "NoNewPrivs"), "1");
    assert!(proc_status(&pid, "Uid").starts_with("65534"), "not root");
    let netdev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap();
    let ifaces: Vec<&str> = netdev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "{netdev}");
    // The root is read-only even for the host's root going through the container's mounts.
    let write = std::fs::write(format!("/proc/{pid}/root/probe"), b"x");
    assert_eq!(
        write.unwrap_err().raw_os_error(),
        Some(libc::EROFS),
        "the root file system is writable"
    );
    // The spawn used the stem cell, and another is made in the background.
    lab.wait("a new stem cell", Duration::from_secs(20), |l| {
        l.in_state("created").len() == 1
    });
    // Idle: paused by the stub through the agent; a connection wakes it.
    lab.wait("the worker paused", Duration::from_secs(20), |l| {
        l.in_state("paused").len() == 1
    });
    assert_eq!(lab.echo("again"), "again");
    lab.wait("the same worker running", Duration::from_secs(10), |l| {
        l.in_state("running") == running
    });
    let metrics = lab.metrics.render();
    assert!(
        metrics.contains("wepoq_agent_worker_unpause_seconds_count 1"),
        "{metrics}"
    );
    // The records carry the agent's steps: the cold start started the stem cell (no
    // create), the paused one was unpaused.
    lab.wait("two records", Duration::from_secs(5), |l| {
        l.records().len() == 2
    });
    let records = lab.records();
    assert_eq!(records[0]["tier"], "cold", "{records:?}");
    assert!(
        records[0]["start_us"].as_f64().unwrap() > 0.0,
        "{records:?}"
    );
    assert!(records[0].get("create_us").is_none(), "{records:?}");
    assert_eq!(records[1]["tier"], "paused", "{records:?}");
    assert!(
        records[1]["unpause_us"].as_f64().unwrap() > 0.0,
        "{records:?}"
    );
    // Scale to zero: swept after idle, then back on a connection.
    lab.wait("no started worker", Duration::from_secs(30), |l| {
        l.workers().iter().all(|(_, s)| s == "created")
    });
    assert_eq!(lab.echo("back"), "back");
    lab.wait("a worker running again", Duration::from_secs(10), |l| {
        l.in_state("running").len() == 1
    });
    lab.finish();
}

#[test]
fn an_agent_restart_under_load_loses_and_leaks_no_worker_and_a_stub_gone_takes_its_workers() {
    if require(Component::Docker).is_none() {
        return;
    }
    let mut lab = Lab::new(label(1), &["--pause-after", "0", "--min-workers", "2"]);
    lab.wait(
        "two warm workers and a stem cell",
        Duration::from_secs(30),
        |l| l.in_state("running").len() == 2 && l.in_state("created").len() == 1,
    );
    let before = lab.workers();
    // Load across the restart: connections keep being answered while the agent is away.
    let addr = lab.addr;
    let load = std::thread::spawn(move || {
        let mut answered = 0;
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"ping").unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"ping");
            answered += 1;
        }
        answered
    });
    std::thread::sleep(Duration::from_millis(500));
    lab.stop_agent();
    std::thread::sleep(Duration::from_millis(500));
    lab.start_agent();
    assert!(
        load.join().unwrap() > 10,
        "connections answered during the restart"
    );
    // The new agent adopted every worker: none lost (each one before is still there, a
    // stem cell perhaps started since) and none leaked (the agent counts every container
    // Docker shows, and keeps exactly one stem cell).
    lab.wait("the pool settled", Duration::from_secs(10), |l| {
        let [stem, warm, paused] = l.metrics.workers_by_tier();
        let docker = l.workers();
        stem == 1
            && l.in_state("created").len() == 1
            && (warm + paused) as usize == docker.len() - 1
    });
    let after: Vec<String> = lab.workers().into_iter().map(|(id, _)| id).collect();
    for (id, _) in &before {
        assert!(
            after.contains(id),
            "worker {id} lost across the agent restart"
        );
    }
    // The stub goes: its workers go with it, and nothing is left.
    lab.finish();
}

#[test]
fn a_worker_killed_mid_connection_closes_it_and_is_replaced() {
    if require(Component::Docker).is_none() {
        return;
    }
    let lab = Lab::new(
        label(0),
        &[
            "--pause-after",
            "0",
            "--min-workers",
            "0",
            "--records",
            "/run/wepoq/records.jsonl",
        ],
    );
    let mut s = TcpStream::connect(lab.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"one").unwrap();
    let mut buf = [0u8; 3];
    s.read_exact(&mut buf).unwrap();
    lab.wait("the worker running", Duration::from_secs(10), |l| {
        l.in_state("running").len() == 1
    });
    let worker = lab.in_state("running").remove(0);
    docker(&["kill", &worker]).unwrap();
    // The client's connection closes (no hang) ...
    let mut rest = Vec::new();
    let t = Instant::now();
    let _ = s.read_to_end(&mut rest);
    assert!(t.elapsed() < Duration::from_secs(5), "the connection hung");
    // ... the dead container is removed, and the next connection gets a new worker.
    lab.wait("the killed worker removed", Duration::from_secs(10), |l| {
        l.workers().iter().all(|(id, _)| *id != worker)
    });
    // The stub's record of it: lost with its worker. No stem cell (precreate 0): the cold
    // start was a create and a start, both timed by the agent.
    lab.wait("its record", Duration::from_secs(5), |l| {
        !l.records().is_empty()
    });
    let lost = &lab.records()[0];
    assert_eq!(lost["outcome"], "worker_lost", "{lost}");
    assert!(lost["create_us"].as_f64().unwrap() > 0.0, "{lost}");
    assert!(lost["start_us"].as_f64().unwrap() > 0.0, "{lost}");
    assert_eq!(lab.echo("two"), "two");
    lab.finish();
}

#[test]
fn a_crash_looping_image_is_refused_and_its_workers_removed() {
    if require(Component::Docker).is_none() {
        return;
    }
    let mut failing = label(0);
    failing["command"] = serde_json::json!(["/wepoq-runtime", "no-such-command"]);
    let lab = Lab::new(
        failing,
        &[
            "--pause-after",
            "0",
            "--min-workers",
            "0",
            "--start-timeout",
            "2s",
        ],
    );
    // Clients are refused (closed), not left hanging, while the image keeps failing.
    for _ in 0..3 {
        let mut s = TcpStream::connect(lab.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = s.write_all(b"x");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty());
    }
    // The agent saw the image's workers end right after their start (the failures that
    // back off its spawns) and removed every one.
    lab.wait("the failing workers seen", Duration::from_secs(20), |l| {
        l.metrics.errors("worker_exited") >= 1
    });
    lab.wait("no failing worker left", Duration::from_secs(10), |l| {
        l.in_state("running").is_empty() && l.in_state("exited").is_empty()
    });
    lab.finish();
}

/// An image that knows nothing of wepoq: a static inetd-style echo (stdin to stdout), the
/// image's CMD, FROM scratch.
fn inetd_echo_image(tag: &str) -> String {
    let dir = std::env::temp_dir().join(format!("wepoq-inetd-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("echo.c");
    std::fs::write(
        &src,
        "#include <unistd.h>\nint main(void){char b[4096];ssize_t n;\n\
         while((n=read(0,b,sizeof b))>0) if(write(1,b,n)!=n) return 1;\nreturn 0;}\n",
    )
    .unwrap();
    let bin = dir.join("echo");
    let cc = std::process::Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("cc (build-essential) for the unmodified test image");
    assert!(cc.success());
    let tar = dir.join("rootfs.tar");
    let made = std::process::Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .args(["--owner=0", "--group=0", "-cf"])
        .arg(&tar)
        .arg("echo")
        .status()
        .unwrap();
    assert!(made.success());
    let reference = format!("wepoq-inetd-echo:{tag}");
    docker(&[
        "import",
        "--change",
        "CMD [\"/echo\"]",
        tar.to_str().unwrap(),
        &reference,
    ])
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    reference
}

#[test]
fn an_unmodified_image_is_served_through_the_shim() {
    if require(Component::Docker).is_none() {
        return;
    }
    let shim = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/static/x86_64-unknown-linux-gnu/release/wepoq-runtime");
    // The static image's build (scripts/static-image) makes the shim binary too.
    let probe = Containers::new().unwrap();
    drop(probe);
    let tag = format!("t{}", std::process::id());
    let image = inetd_echo_image(&tag);
    let mut rt = label(1);
    rt["command"] = serde_json::Value::Null;
    rt["shim"] = "inetd".into();
    let lab = Lab::with_image(
        rt,
        &["--pause-after", "0", "--min-workers", "0"],
        Some(&image),
        Some(shim),
    );
    assert_eq!(lab.echo("plain program"), "plain program");
    assert_eq!(lab.echo("and again"), "and again");
    lab.finish();
    let _ = docker(&["rmi", &image]);
}

/// Two idle workers, paused (a paused worker cannot even notice that its stub is gone), and
/// the stem cell: their ids by state.
fn paused_pool(lab: &Lab) -> (Vec<String>, Vec<String>) {
    lab.wait(
        "two paused workers and a stem cell",
        Duration::from_secs(30),
        |l| l.in_state("paused").len() == 2 && l.in_state("created").len() == 1,
    );
    (lab.in_state("paused"), lab.in_state("created"))
}

fn restart_flags() -> [&'static str; 4] {
    ["--pause-after", "300ms", "--min-workers", "2"]
}

#[test]
fn a_restarted_stub_gets_fresh_workers_and_the_old_ones_go() {
    if require(Component::Docker).is_none() {
        return;
    }
    let lab = Lab::new(label(1), &restart_flags());
    let (old, _) = paused_pool(&lab);
    docker(&["restart", "-t", "0", &lab.stub]).unwrap();
    // The old workers registered with the stub's previous process: removed. The new
    // process asks for its own two, which serve.
    lab.wait("the old workers removed", Duration::from_secs(30), |l| {
        l.workers().iter().all(|(id, _)| !old.contains(id))
    });
    assert_eq!(lab.echo("after the restart"), "after the restart");
    lab.wait("two fresh workers", Duration::from_secs(30), |l| {
        l.workers().iter().filter(|(_, s)| s != "created").count() == 2
    });
    lab.finish();
}

#[test]
fn a_stub_restarted_while_the_agent_was_down_loses_its_stale_workers() {
    if require(Component::Docker).is_none() {
        return;
    }
    let mut lab = Lab::new(label(1), &restart_flags());
    let (old, stem) = paused_pool(&lab);
    lab.stop_agent();
    docker(&["restart", "-t", "0", &lab.stub]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // The new agent finds the paused workers by label. They were started before the stub's
    // container last started, so they belong to a process that is gone: removed, not
    // adopted. The stem cell (never started) is nobody's yet: kept.
    lab.start_agent();
    lab.wait("the stale workers removed", Duration::from_secs(30), |l| {
        l.workers().iter().all(|(id, _)| !old.contains(id))
    });
    assert_eq!(lab.echo("fresh"), "fresh");
    lab.wait("two fresh workers", Duration::from_secs(30), |l| {
        l.workers().iter().filter(|(_, s)| s != "created").count() == 2
    });
    let all: Vec<String> = lab.workers().into_iter().map(|(id, _)| id).collect();
    assert!(
        all.contains(&stem[0]),
        "the stem cell was adopted (kept, or started for the new stub), not removed as stale"
    );
    lab.finish();
}
