//! Throwaway OVN sandboxes for tests and benches, driving `scripts/ovn-sandbox`
//!
//! [`Sandbox::nb_only`] starts just an NB ovsdb-server; [`Sandbox::nb_cluster`] a
//! three-member clustered NB on loopback (whose members tests kill and restart);
//! [`Sandbox::nb_ssl`] an NB that speaks only TLS, with certificates made for it;
//! [`Sandbox::data_plane`] starts a whole OVN on the userspace datapath and can put
//! endpoints in network namespaces.
//! Each sandbox lives in a fresh temporary directory with its own sockets, pidfiles, logs
//! and `OVS_RUNDIR`, and its namespace and interface names carry an id derived from that
//! directory, so sandboxes run side by side (tests run in parallel). Drop stops the
//! daemons, kills processes spawned in endpoints, removes namespaces, veths and the
//! directory.
//!
//! The script is the single place that knows how to start and stop OVN, so a human gets
//! the same thing with `eval "$(scripts/ovn-sandbox up /tmp/sb)"` (docs/ovn-sandbox.md).

pub mod access_host;
pub mod containers;
pub mod spec_edit;
pub mod traffic;

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a test needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// ovsdb-server and the OVN NB schema.
    NbServer,
    /// A three-member NB cluster: also `ovsdb-client` and `ss` (free Raft ports).
    NbCluster,
    /// An NB over TLS: also `openssl` (the certificates).
    NbSsl,
    /// The whole OVN data plane: northd, ovs-vswitchd, ovn-controller, network namespaces,
    /// plus `dig` and `python3` to talk through it.
    DataPlane,
    /// A reachable Docker engine (the `docker` CLI and its socket), for tests with
    /// containers.
    Docker,
}

const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";

fn on_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
}

fn missing(component: Component) -> Vec<String> {
    if component == Component::Docker {
        let up = Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        return if up {
            Vec::new()
        } else {
            vec!["a running Docker engine (docker version failed)".to_owned()]
        };
    }
    let mut programs = vec!["ovsdb-server", "ovsdb-tool", "ovs-appctl", "ovn-nbctl"];
    match component {
        Component::NbCluster => programs.extend(["ovsdb-client", "ss"]),
        Component::NbSsl => programs.push("openssl"),
        _ => {}
    }
    if component == Component::DataPlane {
        programs.extend([
            "ovn-northd",
            "ovn-sbctl",
            "ovs-vswitchd",
            "ovs-vsctl",
            "ovn-controller",
            "ip",
            "ethtool",
        ]);
        // What data-plane tests use inside endpoints: DNS queries and tiny TCP peers.
        programs.extend(["dig", "python3"]);
    }
    let mut missing: Vec<String> = programs
        .into_iter()
        .filter(|p| !on_path(p))
        .map(str::to_owned)
        .collect();
    if !Path::new(NB_SCHEMA).is_file() {
        missing.push(NB_SCHEMA.to_owned());
    }
    if component == Component::DataPlane
        && std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(1)
            != 0
    {
        missing.push("root (network namespaces)".to_owned());
    }
    missing
}

/// `Some(())` when `component` can run here. Otherwise: panics under `CI=true` (CI must
/// never skip), else prints why the test is skipped and returns `None`.
pub fn require(component: Component) -> Option<()> {
    let missing = missing(component);
    if missing.is_empty() {
        return Some(());
    }
    let reason = format!("{component:?} needs {}", missing.join(", "));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "CI=true but {reason}: install ovn-central ovn-host openvswitch-switch iproute2 ethtool openssl"
        );
    }
    // Straight to stderr: libtest captures eprintln! of passing tests, and a skip should
    // be seen.
    let _ = writeln!(io::stderr(), "skipping: {reason}");
    None
}

/// A network namespace wired to br-int as logical port `lsp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub lsp: String,
    pub netns: String,
}

/// A running sandbox; see the module docs.
#[derive(Debug)]
pub struct Sandbox {
    dir: PathBuf,
    full: bool,
    nb_tcp_port: u16,
    /// The members' client ports of a cluster sandbox (member `n` at index `n - 1`).
    members: Vec<u16>,
    children: Mutex<Vec<Child>>,
}

fn script() -> PathBuf {
    std::env::var_os("WEPOQ_OVN_SANDBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ovn-sandbox"))
}

fn fresh_dir() -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        // Short: unix socket paths are limited to 107 bytes.
        let dir = std::env::temp_dir().join(format!("wqsb-{}-{n}-{nanos:x}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

fn checked(what: &str, output: Output) -> io::Result<Output> {
    if output.status.success() {
        return Ok(output);
    }
    Err(io::Error::other(format!(
        "{what} failed ({}): {} {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim(),
        String::from_utf8_lossy(&output.stdout).trim()
    )))
}

impl Sandbox {
    /// An NB ovsdb-server only (unix socket and tcp on 127.0.0.1).
    pub fn nb_only() -> io::Result<Sandbox> {
        Sandbox::start("nb", None)
    }

    /// Like [`Sandbox::nb_only`] with another schema file (e.g. an edited version).
    pub fn nb_only_with_schema(schema: &Path) -> io::Result<Sandbox> {
        Sandbox::start("nb", Some(schema))
    }

    /// NB, SB, ovn-northd, ovs-vswitchd (userspace datapath), ovn-controller, br-int.
    pub fn data_plane() -> io::Result<Sandbox> {
        Sandbox::start("up", None)
    }

    /// A three-member clustered NB (members 1 to 3), each listening on its own tcp port.
    pub fn nb_cluster() -> io::Result<Sandbox> {
        Sandbox::start("cluster", None)
    }

    /// [`Sandbox::nb_cluster`] with another Raft election timer (OVS's default is 1 s). A
    /// leader busy committing one very large transaction sends no heartbeats meanwhile:
    /// past the timer the followers elect another, and the transaction is lost with its
    /// leader. Deployments with big NBs raise it; so do benchmarks of 50k rows.
    pub fn nb_cluster_with_election_timer(ms: u64) -> io::Result<Sandbox> {
        Sandbox::start_with(
            "cluster",
            None,
            &[("OVN_SANDBOX_ELECTION_TIMER", ms.to_string())],
        )
    }

    /// An NB whose tcp port speaks TLS only (mutual: clients need a certificate). The
    /// certificates are in [`Sandbox::pki`].
    pub fn nb_ssl() -> io::Result<Sandbox> {
        Sandbox::start("ssl", None)
    }

    /// [`require`] then [`Sandbox::nb_cluster`]; panics if the cluster fails to start.
    pub fn nb_cluster_or_skip() -> Option<Sandbox> {
        require(Component::NbCluster)?;
        Some(Sandbox::nb_cluster().expect("start NB cluster sandbox"))
    }

    /// [`require`] then [`Sandbox::nb_ssl`]; panics if the server fails to start.
    pub fn nb_ssl_or_skip() -> Option<Sandbox> {
        require(Component::NbSsl)?;
        Some(Sandbox::nb_ssl().expect("start NB ssl sandbox"))
    }

    /// [`require`] then [`Sandbox::nb_only`]; panics if the server fails to start.
    pub fn nb_only_or_skip() -> Option<Sandbox> {
        require(Component::NbServer)?;
        Some(Sandbox::nb_only().expect("start NB sandbox"))
    }

    /// [`require`] then [`Sandbox::data_plane`]; panics if it fails to start.
    pub fn data_plane_or_skip() -> Option<Sandbox> {
        require(Component::DataPlane)?;
        Some(Sandbox::data_plane().expect("start data-plane sandbox"))
    }

    fn start(mode: &str, schema: Option<&Path>) -> io::Result<Sandbox> {
        Sandbox::start_with(mode, schema, &[])
    }

    fn start_with(
        mode: &str,
        schema: Option<&Path>,
        env: &[(&str, String)],
    ) -> io::Result<Sandbox> {
        let dir = fresh_dir()?;
        let mut sandbox = Sandbox {
            dir,
            full: mode == "up",
            nb_tcp_port: 0,
            members: Vec::new(),
            children: Mutex::default(),
        };
        // From here on Drop cleans up whatever the script managed to start.
        let mut cmd = Command::new(script());
        cmd.arg(mode).arg(&sandbox.dir);
        if let Some(schema) = schema {
            cmd.env("OVN_SANDBOX_NB_SCHEMA", schema);
        }
        for (name, value) in env {
            cmd.env(name, value);
        }
        let out = checked(
            &format!("ovn-sandbox {mode}"),
            cmd.stderr(Stdio::piped()).output()?,
        )?;
        sandbox.read_ports(&out.stdout)?;
        Ok(sandbox)
    }

    fn read_ports(&mut self, stdout: &[u8]) -> io::Result<()> {
        if let Some(members) = env_value(stdout, "OVN_SANDBOX_NB_MEMBERS") {
            self.members = members
                .split(',')
                .map(|m| m.rsplit(':').next().and_then(|p| p.parse().ok()))
                .collect::<Option<_>>()
                .ok_or_else(|| io::Error::other(format!("bad member list {members}")))?;
            return Ok(());
        }
        let port = env_value(stdout, "OVN_SANDBOX_NB_TCP_PORT")
            .or_else(|| env_value(stdout, "OVN_SANDBOX_NB_SSL_PORT"));
        self.nb_tcp_port = port.and_then(|p| p.parse().ok()).ok_or_else(|| {
            io::Error::other(format!(
                "no NB port in ovn-sandbox output: {}",
                String::from_utf8_lossy(stdout)
            ))
        })?;
        Ok(())
    }

    /// `tcp:127.0.0.1:PORT` of cluster member `n` (1 to 3).
    pub fn member_url(&self, n: usize) -> String {
        format!("tcp:127.0.0.1:{}", self.members[n - 1])
    }

    /// Every member, comma-separated in the order `order` gives (as `--db` takes them).
    pub fn members_url(&self, order: &[usize]) -> String {
        let urls: Vec<String> = order.iter().map(|n| self.member_url(*n)).collect();
        urls.join(",")
    }

    /// Every member's unix socket, comma-separated in the order `order` gives.
    pub fn members_unix_url(&self, order: &[usize]) -> String {
        let socks: Vec<String> = order
            .iter()
            .map(|n| format!("unix:{}", self.dir.join(format!("nb{n}.sock")).display()))
            .collect();
        socks.join(",")
    }

    /// The cluster's leader (1 to 3), waiting for an election to end.
    pub fn leader(&self) -> io::Result<usize> {
        let out = self.run_script(&["leader"])?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| io::Error::other("ovn-sandbox leader printed no number"))
    }

    /// Kills member `n` with SIGKILL: a crash, no goodbye to the others.
    pub fn kill_member(&self, n: usize) -> io::Result<()> {
        self.run_script(&["kill-member", &n.to_string()]).map(drop)
    }

    /// Starts member `n` again on its database; its client port is new.
    pub fn start_member(&mut self, n: usize) -> io::Result<()> {
        let out = self.run_script(&["start-member", &n.to_string()])?;
        self.read_ports(&out.stdout)
    }

    /// `ssl:127.0.0.1:PORT` of an ssl sandbox.
    pub fn nb_ssl_url(&self) -> String {
        format!("ssl:{}", self.nb_tcp_addr())
    }

    /// A file the ssl sandbox made: `ca-cert.pem`, `client-privkey.pem`,
    /// `client-cert.pem`, `other-ca-cert.pem`, `other-client-*.pem`, `expired-client-*.pem`.
    pub fn pki(&self, file: &str) -> PathBuf {
        self.dir.join("pki").join(file)
    }

    fn run_script(&self, args: &[&str]) -> io::Result<Output> {
        let out = Command::new(script())
            .arg(args[0])
            .arg(&self.dir)
            .args(&args[1..])
            .output()?;
        checked(&format!("ovn-sandbox {}", args.join(" ")), out)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn nb_sock(&self) -> PathBuf {
        self.dir.join("nb.sock")
    }

    /// `unix:DIR/nb.sock`, for [`crate::ovsdb::Client::connect`] and `ovn-nbctl --db`.
    pub fn nb_unix_url(&self) -> String {
        format!("unix:{}", self.nb_sock().display())
    }

    pub fn nb_tcp_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.nb_tcp_port))
    }

    pub fn nb_tcp_url(&self) -> String {
        format!("tcp:{}", self.nb_tcp_addr())
    }

    /// The SB socket of a data-plane sandbox.
    pub fn sb_sock(&self) -> Option<PathBuf> {
        self.full.then(|| self.dir.join("sb.sock"))
    }

    /// `unix:DIR/vs.sock`: the local `Open_vSwitch` database of a data-plane sandbox.
    pub fn ovs_db_url(&self) -> String {
        format!("unix:{}", self.dir.join("vs.sock").display())
    }

    /// What points a `wepoq` command (agent, apply) at this sandbox's OVS: its database and
    /// the network namespace ovs-vswitchd runs in. For `Command::envs`.
    pub fn ovs_env(&self) -> io::Result<[(&'static str, std::ffi::OsString); 2]> {
        Ok([
            ("WEPOQ_OVS_DB", self.ovs_db_url().into()),
            ("WEPOQ_OVS_NETNS", self.ovs_netns()?.into()),
        ])
    }

    /// The network namespace ovs-vswitchd runs in (`/run/netns/wqID-h`), where the host
    /// ends of veths go.
    pub fn ovs_netns(&self) -> io::Result<PathBuf> {
        let out = self.run_script(&["env"])?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| {
                l.strip_prefix("export WEPOQ_OVS_NETNS='")?
                    .strip_suffix('\'')
                    .map(PathBuf::from)
            })
            .ok_or_else(|| io::Error::other("ovn-sandbox env printed no WEPOQ_OVS_NETNS"))
    }

    /// Runs `ovn-nbctl --db=unix:... ARGS` (every member's socket in a cluster) and
    /// returns its stdout; an error carries stderr.
    pub fn nbctl(&self, args: &[&str]) -> io::Result<String> {
        let db = if self.members.is_empty() {
            self.nb_unix_url()
        } else {
            // ovn-nbctl gives up when no member leads (an election) or the first one
            // refuses: wait for a leader, and list only running members.
            self.leader()?;
            let running: Vec<usize> = (1..=self.members.len())
                .filter(|n| self.dir.join(format!("nb{n}.pid")).exists())
                .collect();
            self.members_unix_url(&running)
        };
        let out = Command::new("ovn-nbctl")
            .arg(format!("--db={db}"))
            .args(args)
            .output()?;
        let out = checked(&format!("ovn-nbctl {}", args.join(" ")), out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops the NB server, keeping its database (to test reconnects).
    pub fn stop_nb(&self) -> io::Result<()> {
        self.run_script(&["stop-nb"]).map(drop)
    }

    /// Starts the NB server again on the same database and unix socket; the tcp port is
    /// new.
    pub fn start_nb(&mut self) -> io::Result<()> {
        let out = self.run_script(&["nb"])?;
        self.read_ports(&out.stdout)
    }

    /// [`Sandbox::add_endpoint`] for an endpoint of a compiled spec: its logical port, MAC,
    /// address and gateway.
    pub fn plug(&self, e: &wepoq_compiler::emit::Endpoint) -> io::Result<Endpoint> {
        self.add_endpoint(
            &e.port,
            &e.mac,
            &format!("{}/{}", e.ip, e.prefix),
            &e.gateway.to_string(),
        )
    }

    /// Creates a network namespace with a veth pair: `eth0` inside gets `mac`, `ip_cidr`
    /// and a default route via `gateway`; the host end joins br-int with
    /// `external_ids:iface-id=lsp`. TX checksum offload is off on both ends, or TCP fails
    /// silently on the userspace datapath.
    pub fn add_endpoint(
        &self,
        lsp: &str,
        mac: &str,
        ip_cidr: &str,
        gateway: &str,
    ) -> io::Result<Endpoint> {
        let out = self.run_script(&["endpoint", lsp, mac, ip_cidr, gateway])?;
        let netns = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Ok(Endpoint {
            lsp: lsp.to_owned(),
            netns,
        })
    }

    /// An external host: a namespace that reaches the chassis (ovs-vswitchd's namespace)
    /// only through a routed veth, with no OVN on it. Returns it (as an [`Endpoint`] with no
    /// logical port), its address and the chassis' address on that link.
    pub fn add_external_host(&self) -> io::Result<(Endpoint, Ipv4Addr, Ipv4Addr)> {
        let out = self.run_script(&["external"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        let bad = || io::Error::other(format!("ovn-sandbox external printed {text:?}"));
        let netns = words.next().ok_or_else(bad)?.to_owned();
        let host = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
        let chassis = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
        Ok((
            Endpoint {
                lsp: String::new(),
                netns,
            },
            host,
            chassis,
        ))
    }

    /// Runs `argv` inside the endpoint's namespace and waits for it.
    pub fn exec(&self, endpoint: &Endpoint, argv: &[&str]) -> io::Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &endpoint.netns])
            .args(argv)
            .output()
    }

    /// Starts `argv` inside the endpoint's namespace in the background; it is killed when
    /// the sandbox drops (deleting a namespace does not end its processes).
    pub fn spawn(&self, endpoint: &Endpoint, argv: &[&str]) -> io::Result<()> {
        let child = Command::new("ip")
            .args(["netns", "exec", &endpoint.netns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.children.lock().expect("children lock").push(child);
        Ok(())
    }

    /// Waits (up to `timeout`) until ovn-controller reports `lsp` up: bound to a chassis.
    pub fn wait_port_up(&self, lsp: &str, timeout: std::time::Duration) -> io::Result<()> {
        let secs = timeout.as_secs().max(1).to_string();
        self.nbctl(&[
            "--timeout",
            &secs,
            "wait-until",
            "Logical_Switch_Port",
            lsp,
            "up=true",
        ])
        .map(drop)
    }

    /// Text of one of the sandbox's daemon logs (`nb`, `northd`, `controller`, ...).
    pub fn log(&self, daemon: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{daemon}.log"))).unwrap_or_default()
    }
}

/// The value of an `export NAME='VALUE'` line the script printed.
fn env_value(stdout: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(stdout);
    let prefix = format!("export {name}='");
    text.lines()
        .find_map(|l| Some(l.strip_prefix(&prefix)?.strip_suffix('\'')?.to_owned()))
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for mut child in self
            .children
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        match self.run_script(&["down"]) {
            Ok(_) => {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
            // Keep the directory: its logs say what went wrong.
            Err(e) => eprintln!("ovn-sandbox down {}: {e}", self.dir.display()),
        }
    }
}

/// A spec's text without its `KEY:` blocks (the key's line and everything indented under
/// it): tests and benchmarks run an example without its containers or its functions.
pub fn without_blocks(spec: &str, key: &str) -> String {
    let mut out = String::new();
    let mut skipping: Option<usize> = None;
    let start = format!("{key}:");
    for line in spec.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(depth) = skipping {
            if line.trim().is_empty() || indent > depth {
                continue;
            }
            skipping = None;
        }
        if line.trim_start().starts_with(&start) {
            skipping = Some(indent);
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
