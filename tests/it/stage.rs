//! The stage of the end-to-end tests of examples/ovn-vote on a real OVN data plane and the
//! real Docker engine: the example under a namespace of its own per run (containers' names
//! are global on the host), with the image the repository builds from its static binary, a
//! run directory of its own, and the host agent limited to this stage's containers. Whatever
//! the stage made is removed when it ends, pass or fail.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use wepoq_compiler::containers::ContainerUnit;
use wepoq_reconciler::sandbox::containers::{Containers, docker};
use wepoq_reconciler::sandbox::{Component, Sandbox, require};

use crate::support::{compile_text, repo, temp_dir};

pub struct Stage {
    pub sb: Sandbox,
    /// The image, and removal of the foreign container the test makes.
    pub foreign: Containers,
    pub dir: PathBuf,
    /// Stubs' directories (`--run-dir`), shared by apply and the agent.
    pub run_dir: PathBuf,
    /// `t…`: the namespace label; containers are named `<port>.ovn-vote.<ns>`.
    pub ns: String,
    pub units: Vec<ContainerUnit>,
    pub agent: Option<Child>,
    started: Instant,
    what: &'static str,
}

impl Stage {
    /// The example as `edit` makes it from its text (with the namespace and image already
    /// this stage's), or `None` (skipped) without a data plane or Docker.
    pub fn new(what: &'static str, edit: impl Fn(String) -> String) -> Option<Stage> {
        require(Component::DataPlane)?;
        require(Component::Docker)?;
        let started = Instant::now();
        let sb = Sandbox::data_plane().expect("a data-plane sandbox");
        let foreign = Containers::new().expect("the static image");
        let ns = format!("t{}", &foreign.tag.replace(['-', '_'], "")[1..]).to_lowercase();
        let ns: String = ns.chars().take(20).collect();
        let spec = std::fs::read_to_string(repo().join("examples/ovn-vote/wepoq.yaml"))
            .unwrap()
            .replace("namespace: ns\n", &format!("namespace: {ns}\n"))
            .replace("wepoq/probe:dev", &foreign.image);
        let spec = edit(spec);
        let dir = temp_dir(what);
        let run_dir = dir.join("run");
        std::fs::write(dir.join("wepoq.yaml"), &spec).unwrap();
        let units = compile_text(&spec, None)
            .expect("the example compiles")
            .namespaces[0]
            .containers
            .clone();
        let stage = Stage {
            sb,
            foreign,
            dir,
            run_dir,
            ns,
            units,
            agent: None,
            started,
            what,
        };
        stage.step("sandbox up, image built");
        Some(stage)
    }

    pub fn step(&self, what: &str) {
        eprintln!(
            "[{} {:>6.2}s] {what}",
            self.what,
            self.started.elapsed().as_secs_f64()
        );
    }

    pub fn owner(&self) -> String {
        format!("{}.wepoq.net", self.ns)
    }

    pub fn env(&self, cmd: &mut Command) {
        cmd.env("WEPOQ_DB", self.sb.nb_unix_url())
            .envs(self.sb.ovs_env().unwrap())
            .env("WEPOQ_RUN_DIR", &self.run_dir)
            .env("NO_COLOR", "1")
            .current_dir(&self.dir);
    }

    pub fn wepoq(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wepoq"));
        cmd.args(args);
        self.env(&mut cmd);
        let out = cmd.output().unwrap();
        eprintln!(
            "$ wepoq {} -> {:?}\n{}{}",
            args.join(" "),
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr)
        );
        out
    }

    pub fn apply(&self) -> i32 {
        let out = self.wepoq(&[
            "apply",
            "--auto-approve",
            "--detailed-exitcode",
            "--wait-timeout",
            "60s",
        ]);
        out.status.code().unwrap_or(-1)
    }

    /// `wepoq agent` for this stage's containers only (other tests' stubs and containers
    /// share the Docker engine).
    pub fn start_agent(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wepoq"));
        cmd.args([
            "agent",
            "--only-label",
            &format!("wepoq.net/owner={}", self.owner()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        self.env(&mut cmd);
        self.agent = Some(cmd.spawn().unwrap());
    }

    pub fn stop_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
    }

    pub fn unit(&self, endpoint: &str) -> &ContainerUnit {
        let name = format!("{endpoint}.ovn-vote.{}", self.ns);
        self.units
            .iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("no container unit {name}"))
    }

    pub fn fqdn(&self, name: &str) -> String {
        format!("{name}.ovn-vote.{}.wepoq.net", self.ns)
    }

    /// `probe ARGS` inside the container of `endpoint`.
    pub fn probe(&self, endpoint: &str, args: &[&str]) -> Result<String, String> {
        let name = &self.unit(endpoint).name;
        let mut argv = vec!["exec", name.as_str(), "/wepoq-runtime", "probe"];
        argv.extend(args);
        docker(&argv).map_err(|e| e.to_string())
    }

    /// Answers of `count` connections from `client` to `target` (NAME:PORT), retried for a
    /// while: a port just bound may need a moment before its flows are in.
    pub fn answers(&self, client: &str, target: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.probe(client, &["get", target, "--count", &count.to_string()]) {
                Ok(out) => return out.lines().map(str::to_owned).collect(),
                Err(e) if Instant::now() > deadline => panic!("{client} -> {target}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    /// The names of this stage's containers with `state` (`docker ps` filter), workers left
    /// out or not.
    pub fn containers(&self, all: bool, workers: bool) -> BTreeSet<String> {
        let filter = format!("label=wepoq.net/owner={}", self.owner());
        let mut args = vec![
            "ps",
            "--filter",
            &filter,
            "--format",
            "{{.Names}} {{.Label \"wepoq.net/worker\"}}",
        ];
        if all {
            args.push("-a");
        }
        docker(&args)
            .unwrap()
            .lines()
            .filter_map(|l| {
                let (name, worker) = l.split_once(' ').unwrap_or((l, ""));
                (workers || worker.trim().is_empty()).then(|| name.to_owned())
            })
            .collect()
    }

    /// The running containers of the stage, workers left out.
    pub fn running(&self) -> BTreeSet<String> {
        self.containers(false, false)
    }

    /// The MAC of the container's OVN interface, as the container itself sees it.
    /// The agent follows the same container's start and may still be finishing its own
    /// (idempotent) attach when apply returns, so the interface is given a few seconds.
    pub fn vif_mac(&self, endpoint: &str) -> String {
        let name = &self.unit(endpoint).name;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match docker(&["exec", name, "/wepoq-runtime", "probe", "mac", "wq0"]) {
                Ok(mac) if !mac.trim().is_empty() => return mac.trim().to_owned(),
                other if Instant::now() > deadline => return other.unwrap_or_default(),
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    pub fn ovs_ports(&self) -> BTreeSet<String> {
        let out = Command::new("ovs-vsctl")
            .arg(format!("--db={}", self.sb.ovs_db_url()))
            .args(["list-ports", "br-int"])
            .output()
            .unwrap();
        text(&out.stdout).lines().map(str::to_owned).collect()
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        self.stop_agent();
        let filter = format!("label=wepoq.net/owner={}", self.owner());
        if let Ok(ids) = docker(&["ps", "-aq", "--filter", &filter])
            && !ids.is_empty()
        {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.lines());
            let _ = docker(&args);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
