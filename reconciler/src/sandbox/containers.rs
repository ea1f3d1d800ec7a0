//! Containers for tests and benches: a FROM-scratch image of the repository's own static
//! `wepoq-runtime` (built by `scripts/static-image`), containers marked with a per-test
//! label and removed by it (never a prune), and a small NB topology to attach them to.
//!
//! Every container made here carries [`TEST_LABEL`]=a tag unique to one [`Containers`];
//! dropping it removes exactly those.

use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Endpoint, Sandbox, checked};

/// Marks the containers a test made, so it removes only its own.
pub const TEST_LABEL: &str = "wepoq.net/test";

/// The image reference `scripts/static-image` printed (built once per process).
pub fn static_image() -> io::Result<String> {
    static IMAGE: OnceLock<Result<String, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/static-image");
            let out = Command::new(script)
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| e.to_string())?;
            let out = checked("scripts/static-image", out).map_err(|e| e.to_string())?;
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .clone()
        .map_err(io::Error::other)
}

/// `docker ARGS`, stdout on success, stderr in the error.
pub fn docker(args: &[&str]) -> io::Result<String> {
    let out = Command::new("docker").args(args).output()?;
    let out = checked(&format!("docker {}", args.join(" ")), out)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The containers of one test; see the module docs.
pub struct Containers {
    pub tag: String,
    pub image: String,
}

/// A command that keeps running and answers TCP on 8080 (the stub with echo workers).
pub const ECHO_SERVER: &[&str] = &[
    "/wepoq-runtime",
    "stub",
    "--listen",
    "0.0.0.0:8080",
    "--no-isolate-network",
    "--socket-dir",
    "/run/wepoq",
    "--",
    "/wepoq-runtime",
    "example-worker",
];

impl Containers {
    pub fn new() -> io::Result<Containers> {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Ok(Containers {
            tag: format!("t{}-{n}-{nanos:x}", std::process::id()),
            image: static_image()?,
        })
    }

    /// `docker run -d --network none` of [`ECHO_SERVER`] with the test label and `labels`;
    /// returns the full container id.
    pub fn run(&self, labels: &[(&str, &str)]) -> io::Result<String> {
        self.run_args(labels, &["--network", "none"])
    }

    /// Like [`Containers::run`] with other `docker run` options.
    pub fn run_args(&self, labels: &[(&str, &str)], options: &[&str]) -> io::Result<String> {
        let test = format!("{TEST_LABEL}={}", self.tag);
        let mut args = vec!["run", "-d", "--label", &test];
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for l in &labels {
            args.extend(["--label", l]);
        }
        args.extend(options);
        args.push(&self.image);
        args.extend(ECHO_SERVER);
        docker(&args)
    }

    /// A stub container for the agent's container workers: `wepoq-runtime stub --control`
    /// named `name`, labelled with the test label and `wepoq.net/runtime=<runtime>`, its run
    /// directory `<run_dir>/stubs/<name>` bind-mounted at `/run/wepoq`, on the host's network
    /// listening on 127.0.0.1 at a free port (returned once it listens), admitting uid 65534
    /// workers, with the stub's `flags`.
    pub fn run_stub(
        &self,
        name: &str,
        run_dir: &Path,
        runtime: &serde_json::Value,
        flags: &[&str],
    ) -> io::Result<std::net::SocketAddr> {
        let dir = run_dir.join("stubs").join(name);
        std::fs::create_dir_all(&dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let listen = format!("127.0.0.1:{port}");
        let runtime = format!("wepoq.net/runtime={runtime}");
        let test = format!("{TEST_LABEL}={}", self.tag);
        let volume = format!("{}:/run/wepoq", dir.display());
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "host",
            "--label",
            &test,
            "--label",
            &runtime,
            "-v",
            &volume,
            &self.image,
            "/wepoq-runtime",
            "stub",
            "--listen",
            &listen,
            "--socket-dir",
            "/run/wepoq",
            "--control",
            "/run/wepoq/control.sock",
            "--allow-uid",
            "65534",
        ];
        args.extend(flags);
        docker(&args)?;
        // Host network: the listening socket shows in the host's /proc/net/tcp (connecting
        // to find out would ask for a worker).
        let local = format!("0100007F:{port:04X} 00000000:0000 0A");
        let t = std::time::Instant::now();
        while !std::fs::read_to_string("/proc/net/tcp").is_ok_and(|t| t.contains(&local)) {
            if t.elapsed() > std::time::Duration::from_secs(20) {
                let logs = docker(&["logs", name]).unwrap_or_default();
                return Err(io::Error::other(format!(
                    "stub {name} not listening: {logs}"
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(listen.parse().expect("an address"))
    }

    /// Worker containers of stub `name` (label `wepoq.net/stub`), any state: (id, state).
    pub fn workers_of(name: &str) -> io::Result<Vec<(String, String)>> {
        let filter = format!("label=wepoq.net/stub={name}");
        let format = "{{.ID}} {{.State}}";
        Ok(docker(&[
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            &filter,
            "--format",
            format,
        ])?
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect())
    }

    /// The pid of a running container.
    pub fn pid(&self, id: &str) -> io::Result<u32> {
        docker(&["inspect", "-f", "{{.State.Pid}}", id])?
            .parse()
            .map_err(|e| io::Error::other(format!("pid of {id}: {e}")))
    }

    /// Ids of this test's containers (running or not).
    pub fn ids(&self) -> io::Result<Vec<String>> {
        let filter = format!("label={TEST_LABEL}={}", self.tag);
        Ok(docker(&["ps", "-aq", "--no-trunc", "--filter", &filter])?
            .lines()
            .map(str::to_owned)
            .collect())
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        if let Ok(ids) = self.ids()
            && !ids.is_empty()
        {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = docker(&args);
        }
    }
}

/// A namespace's worth of NB rows made by hand: router `lab`, switch `svr.lab`
/// (10.77.0.0/24, gateway .1) with `servers` ports named `sN.svr.lab` whose
/// `external_ids:wepoq-name` is `sN.svr.lab.ns.wepoq.net`, and switch `cli.lab`
/// (10.77.1.0/24) with one client port wired to a network namespace. No ACLs.
pub struct Lab {
    pub client: Endpoint,
    pub servers: Vec<LabPort>,
}

#[derive(Debug, Clone)]
pub struct LabPort {
    pub port: String,
    pub fqdn: String,
    pub mac: String,
    pub ip: String,
}

impl Lab {
    pub fn build(sb: &Sandbox, servers: usize) -> io::Result<Lab> {
        let mut cmds: Vec<Vec<String>> = Vec::new();
        let mut add = |args: &[&str]| cmds.push(args.iter().map(|s| s.to_string()).collect());
        add(&["lr-add", "lab"]);
        for (sw, mac, gw) in [
            ("svr.lab", "02:77:00:00:00:01", "10.77.0.1/24"),
            ("cli.lab", "02:77:00:00:01:01", "10.77.1.1/24"),
        ] {
            let lrp = format!("lrp.{sw}");
            let rtr = format!("rtr.{sw}");
            add(&["ls-add", sw]);
            add(&["lrp-add", "lab", &lrp, mac, gw]);
            add(&["lsp-add", sw, &rtr]);
            add(&["lsp-set-type", &rtr, "router"]);
            add(&["lsp-set-addresses", &rtr, "router"]);
            add(&["lsp-set-options", &rtr, &format!("router-port={lrp}")]);
        }
        let mut ports = Vec::new();
        for i in 1..=servers {
            let port = format!("s{i}.svr.lab");
            let fqdn = format!("{port}.ns.wepoq.net");
            let mac = format!("0a:58:0a:4d:{:02x}:{:02x}", i / 256, i % 256);
            let ip = format!("10.77.0.{}", 10 + i);
            add(&["lsp-add", "svr.lab", &port]);
            add(&["lsp-set-addresses", &port, &format!("{mac} {ip}")]);
            add(&[
                "set",
                "Logical_Switch_Port",
                &port,
                &format!("external_ids:wepoq-name=\"{fqdn}\""),
            ]);
            ports.push(LabPort {
                port,
                fqdn,
                mac,
                ip,
            });
        }
        add(&["lsp-add", "cli.lab", "c1.cli.lab"]);
        add(&[
            "lsp-set-addresses",
            "c1.cli.lab",
            "0a:58:0a:4d:01:0a 10.77.1.10",
        ]);
        // One ovn-nbctl run: `--` separates the commands.
        let mut args: Vec<&str> = Vec::new();
        for c in &cmds {
            if !args.is_empty() {
                args.push("--");
            }
            args.extend(c.iter().map(String::as_str));
        }
        sb.nbctl(&args)?;
        let client = sb.add_endpoint(
            "c1.cli.lab",
            "0a:58:0a:4d:01:0a",
            "10.77.1.10/24",
            "10.77.1.1",
        )?;
        Ok(Lab {
            client,
            servers: ports,
        })
    }

    /// What the echo server at `ip` answered the client (empty when nothing came).
    pub fn echo(&self, sb: &Sandbox, ip: &str) -> String {
        const CLIENT: &str = "import socket,sys\ntry:\n s=socket.create_connection((sys.argv[1],8080),2)\n s.sendall(b'wepoq\\n')\n print(s.recv(100).decode().strip())\nexcept OSError as e:\n print('ERR',e)\n";
        sb.exec(&self.client, &["python3", "-c", CLIENT, ip])
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }
}

/// A field of `/proc/PID/status` (`CapEff`, `NoNewPrivs`, `Uid`), as tests read a
/// container's process from the host.
pub fn proc_status(pid: &str, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}
