//! External clients on a real OVN data plane (issue: client-side wepoq, seed 002). ovn-vote
//! with result's clients (the viewers) made external: the gateway agent binds the logical
//! trunk, an "external host" (a network namespace that reaches the chassis only through a
//! routed veth, no OVN on it) runs `wepoq connect` with a credential from
//! `wepoq credentials issue`, and reaches result's VIP through OVN's DNS, ACLs and load
//! balancer, over VXLAN inside WireGuard. Then the refusals (no credential, a forged key,
//! a revoked one, spoofed MAC or IP, an undeclared service) and the recoveries (disconnect,
//! path loss, agent restart), which must happen by themselves.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wepoq_compiler::emit::Endpoint as Compiled;
use wepoq_reconciler::sandbox::spec_edit::with_external_clients;
use wepoq_reconciler::sandbox::{Endpoint, Sandbox};

use crate::support::{compile_text, repo, temp_dir, wepoq_nb_only, without_containers};

const TUNNEL_PORT: u16 = 51820;
const VIEWER: &str = "c3.cli.result.ovn-vote.ns.wepoq.net";
const OTHER_VIEWER: &str = "c1.cli.result.ovn-vote.ns.wepoq.net";
const VIP_NAME: &str = "vip.svr.result.ovn-vote.ns.wepoq.net";

/// Fetches `http://IP/` (or says ERR), with a timeout: what a viewer does.
const GET: &str = r#"
import sys, urllib.request
try:
    print(urllib.request.urlopen("http://%s:%s/" % (sys.argv[1], sys.argv[2]), timeout=float(sys.argv[3])).read().decode().strip())
except Exception as e:
    print("ERR", type(e).__name__, e)
"#;

struct Lab {
    sb: Sandbox,
    dir: PathBuf,
    endpoints: Vec<Compiled>,
    agent: Option<Child>,
    connections: Vec<(String, Child)>,
    started: Instant,
    /// The agent's --admin address (/metrics).
    admin: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, mut c) in self.connections.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        if std::thread::panicking() {
            for log in ["agent.log", "agent2.log"] {
                eprintln!(
                    "== {log}\n{}",
                    std::fs::read_to_string(self.dir.join(log)).unwrap_or_default()
                );
            }
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

impl Lab {
    fn step(&self, what: &str) {
        eprintln!(
            "[external {:>6.2}s] {what}",
            self.started.elapsed().as_secs_f64()
        );
    }

    fn endpoint(&self, port: &str) -> &Compiled {
        self.endpoints
            .iter()
            .find(|e| e.port == port)
            .unwrap_or_else(|| panic!("no endpoint {port}"))
    }

    fn wepoq(&self) -> Command {
        let mut cmd = wepoq_nb_only();
        cmd.current_dir(&self.dir)
            .env("WEPOQ_TUNNEL_STORE", self.dir.join("store"))
            .env("NO_COLOR", "1");
        cmd
    }

    fn start_agent(&mut self, log: &str) {
        let log = std::fs::File::create(self.dir.join(log)).unwrap();
        let child = self
            .wepoq()
            .args([
                "agent",
                "--db",
                &self.sb.nb_unix_url(),
                "--gateway",
                "gw",
                "--gateway-interval",
                "500ms",
            ])
            .args(["--tunnel-listen", &format!("0.0.0.0:{TUNNEL_PORT}")])
            .args(["--admin", &self.admin])
            .envs(self.sb.ovs_env().unwrap())
            .arg("--run-dir")
            .arg(self.dir.join("run"))
            // No container of this test exists: the agent attaches none of anyone else's.
            .args([
                "--only-label",
                &format!("wepoq.net/test=external-{}", std::process::id()),
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agent = Some(child);
    }

    fn stop_agent(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
    }

    fn issue(&self, fqdn: &str, chassis: Ipv4Addr, out: &Path) {
        let got = self
            .wepoq()
            .args([
                "credentials",
                "issue",
                fqdn,
                "--endpoint",
                &format!("{chassis}:{TUNNEL_PORT}"),
            ])
            .arg("--out")
            .arg(out)
            .args(["--db", &self.sb.nb_unix_url()])
            .output()
            .unwrap();
        assert!(
            got.status.success(),
            "issue {fqdn}: {}{}",
            text(&got.stdout),
            text(&got.stderr)
        );
    }

    /// `wepoq connect` inside `host`, in the background; its output goes to `<name>.log`.
    fn connect(&mut self, name: &str, host: &Endpoint, fqdn: &str, credential: &Path) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &host.netns,
                env!("CARGO_BIN_EXE_wepoq"),
                "connect",
                fqdn,
            ])
            .arg("--credential")
            .arg(credential)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.connections.push((name.to_owned(), child));
    }

    fn disconnect(&mut self, name: &str) {
        let i = self
            .connections
            .iter()
            .position(|(n, _)| n == name)
            .unwrap();
        let (_, mut child) = self.connections.remove(i);
        // SIGTERM: the clean way out (the interface and resolver are put back).
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let _ = child.wait();
    }

    /// The agent's counter `name` from /metrics.
    fn metric(&self, name: &str) -> u64 {
        let page = crate::support::http_get(&self.admin, "/metrics").unwrap_or_default();
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in the agent's /metrics:\n{page}"))
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    fn exec(&self, host: &Endpoint, argv: &[&str]) -> String {
        let out = self.sb.exec(host, argv).unwrap();
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    }

    fn get(&self, host: &Endpoint, ip: Ipv4Addr, port: u16, timeout: &str) -> String {
        let script = self.dir.join("get.py");
        self.exec(
            host,
            &[
                "python3",
                script.to_str().unwrap(),
                &ip.to_string(),
                &port.to_string(),
                timeout,
            ],
        )
    }

    fn dig(&self, host: &Endpoint, server: Ipv4Addr, name: &str) -> String {
        // OVN's DNS answers plain queries only (no EDNS).
        self.exec(
            host,
            &[
                "dig",
                "+noedns",
                "+short",
                "+time=1",
                "+tries=2",
                &format!("@{server}"),
                name,
            ],
        )
    }

    /// Polls until `host` gets an answer from the VIP (within `limit`); the time it took.
    fn until_reached(
        &self,
        host: &Endpoint,
        vip: Ipv4Addr,
        limit: Duration,
        what: &str,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let got = self.get(host, vip, 80, "1");
            if got.starts_with('s') {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "{what}: no answer from {vip} within {limit:?} (last: {got})"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn assert_unreached(&self, host: &Endpoint, ip: Ipv4Addr, port: u16, what: &str) {
        let got = self.get(host, ip, port, "1.5");
        assert!(
            got.starts_with("ERR"),
            "{what}: reached {ip}:{port} and got {got:?}"
        );
    }
}

fn lab() -> Option<Lab> {
    let started = Instant::now();
    let sb = Sandbox::data_plane_or_skip()?;
    let dir = temp_dir("external");
    let example = repo().join("examples/ovn-vote");
    let spec = std::fs::read_to_string(example.join("wepoq.yaml")).unwrap();
    let spec = with_external_clients(&without_containers(&spec), "result");
    let lock = std::fs::read_to_string(example.join("wepoq.lock")).unwrap();
    std::fs::write(dir.join("wepoq.yaml"), &spec).unwrap();
    std::fs::write(dir.join("wepoq.lock"), &lock).unwrap();
    std::fs::write(dir.join("get.py"), GET).unwrap();
    let mut compiled = compile_text(&spec, Some(&lock)).unwrap_or_else(|d| panic!("{d:?}"));
    let endpoints = compiled.namespaces.remove(0).endpoints;
    Some(Lab {
        sb,
        dir,
        endpoints,
        agent: None,
        connections: Vec::new(),
        started,
        admin: crate::support::free_loopback_addr(),
    })
}

#[test]
fn external_clients_through_the_gateway_tunnel() {
    let _serial = crate::dataplane::serial();
    let Some(mut lab) = lab() else { return };
    lab.step("sandbox up");

    // The NB, then result's three servers (each answers its own name over HTTP).
    let out = lab
        .wepoq()
        .args(["apply", "--db", &lab.sb.nb_unix_url(), "--auto-approve"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "apply: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let viewer = lab.endpoint("c3.cli.result.ovn-vote.ns").clone();
    let other = lab.endpoint("c1.cli.result.ovn-vote.ns").clone();
    let trunk = viewer
        .external
        .clone()
        .expect("result's clients are external");
    assert_eq!(
        (trunk.trunk.as_str(), trunk.gateway.as_str()),
        ("trunk.gw.ns", "gw")
    );
    for n in 1..=3 {
        let port = format!("s{n}.svr.result.ovn-vote.ns");
        let e = lab.endpoint(&port).clone();
        let ns = lab.sb.plug(&e).unwrap();
        // wepoq's probe answers HTTP with its host name: s1, s2, s3 (own UTS namespaces).
        let serve = format!(
            "hostname s{n} && exec {} probe serve --port 80",
            env!("CARGO_BIN_EXE_wepoq")
        );
        lab.sb
            .spawn(&ns, &["unshare", "--uts", "sh", "-c", &serve])
            .unwrap();
        lab.sb.wait_port_up(&port, Duration::from_secs(30)).unwrap();
        // Each server answers on its own address before any client is timed.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !lab.get(&ns, e.ip, 80, "1").starts_with('s') {
            assert!(Instant::now() < deadline, "{port}'s server never answered");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    lab.step("result's servers answer");
    let vip_of = |service: &str| -> Ipv4Addr {
        let lb = format!("lb.tcp.{service}.ovn-vote.ns");
        let vips = lab
            .sb
            .nbctl(&["get", "Load_Balancer", &lb, "vips"])
            .unwrap();
        let vip = vips.split('"').nth(1).and_then(|v| v.split(':').next());
        vip.and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{lb}'s VIP from {vips}"))
    };
    let (vip, db_vip) = (vip_of("result"), vip_of("db"));

    // The gateway agent binds the trunk port on this chassis.
    lab.start_agent("agent.log");
    lab.sb
        .wait_port_up(&trunk.trunk, Duration::from_secs(30))
        .unwrap();
    lab.step("trunk bound by the gateway agent");
    for port in ["c1.cli.result.ovn-vote.ns", "c3.cli.result.ovn-vote.ns"] {
        lab.sb.wait_port_up(port, Duration::from_secs(30)).unwrap();
    }
    lab.step("its children bound (ovn-controller)");

    // 1. A viewer joins from its own host and reaches result through OVN.
    let (host1, _, chassis1) = lab.sb.add_external_host().unwrap();
    let credential = lab.dir.join("c3.credential");
    lab.issue(VIEWER, chassis1, &credential);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&credential).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secret = std::fs::read_to_string(&credential).unwrap();
    let key_line = secret
        .lines()
        .find(|l| l.starts_with("private-key"))
        .unwrap();
    let private_key = key_line.split('=').nth(1).unwrap().trim().to_owned();
    assert_eq!(
        lab.get(&host1, vip, 80, "1").split_whitespace().next(),
        Some("ERR"),
        "reached before connecting"
    );
    let connect_started = Instant::now();
    lab.connect("viewer", &host1, VIEWER, &credential);
    let took = lab.until_reached(&host1, vip, Duration::from_secs(20), "connect");
    lab.step(&format!(
        "viewer connected; first answer {:.0} ms after `wepoq connect` ({:.0} ms of polling)",
        connect_started.elapsed().as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e3
    ));
    eprintln!("{}", lab.log("viewer"));
    assert!(
        lab.log("viewer")
            .contains(&format!("{VIEWER} is {} {}/", viewer.mac, viewer.ip)),
        "{}",
        lab.log("viewer")
    );
    assert_eq!(
        lab.dig(&host1, viewer.gateway, VIP_NAME),
        vip.to_string(),
        "OVN's DNS answers the viewer"
    );
    let mut answered = BTreeSet::new();
    for _ in 0..30 {
        answered.insert(lab.get(&host1, vip, 80, "2"));
    }
    assert!(
        answered.len() >= 2 && answered.iter().all(|a| a.starts_with('s')),
        "the VIP balances: {answered:?}"
    );
    // Nothing else opens: db is not declared for result's clients (neither its name nor its VIP).
    let db_name = lab.dig(&host1, viewer.gateway, "vip.svr.db.ovn-vote.ns.wepoq.net");
    assert!(
        !db_name
            .lines()
            .any(|l| l.trim().parse::<Ipv4Addr>().is_ok()),
        "db's name resolves: {db_name}"
    );
    lab.assert_unreached(&host1, db_vip, 5432, "an undeclared service");
    lab.step("DNS, VIP and balancing through the tunnel; undeclared db refused");

    // 2. A second host: a forged credential for another viewer (its own key) is refused;
    //    the genuine one works. Then spoofing by an authenticated client is dropped.
    let (host2, _, chassis2) = lab.sb.add_external_host().unwrap();
    let genuine = lab.dir.join("c1.credential");
    lab.issue(OTHER_VIEWER, chassis2, &genuine);
    let forged = lab.dir.join("c1.forged");
    let fresh = wepoq_reconciler::tunnel::keys::encode(
        &wepoq_reconciler::tunnel::keys::generate().to_bytes(),
    );
    let text_of_genuine = std::fs::read_to_string(&genuine).unwrap();
    let genuine_key = text_of_genuine
        .lines()
        .find(|l| l.starts_with("private-key"))
        .unwrap()
        .to_owned();
    wepoq_reconciler::tunnel::write_secret(
        &forged,
        &text_of_genuine.replace(&genuine_key, &format!("private-key = {fresh}")),
        false,
    )
    .unwrap();
    lab.connect("forger", &host2, OTHER_VIEWER, &forged);
    std::thread::sleep(Duration::from_secs(3));
    lab.assert_unreached(&host2, vip, 80, "a forged credential");
    assert!(
        !lab.log("forger").contains("up ("),
        "the forger's handshake completed:\n{}",
        lab.log("forger")
    );
    assert!(
        lab.metric("wepoq_gateway_tunnel_refused_total") > 0,
        "the forger's handshakes are counted as refused"
    );
    assert!(
        lab.metric("wepoq_gateway_tunnel_rx_total") > 0,
        "the viewer's packets are counted"
    );
    lab.disconnect("forger");
    lab.connect("other", &host2, OTHER_VIEWER, &genuine);
    lab.until_reached(
        &host2,
        vip,
        Duration::from_secs(20),
        "the genuine credential",
    );
    lab.step("a forged key is refused, the genuine one admitted");

    // Spoofing, by a client that did authenticate: the other viewer's IP, then its MAC.
    let readdress = |ip: Ipv4Addr| {
        lab.exec(&host1, &["ip", "addr", "flush", "dev", "wq0"]);
        let cidr = format!("{ip}/{}", viewer.prefix);
        lab.exec(&host1, &["ip", "addr", "add", &cidr, "dev", "wq0"]);
        let (to, via) = (format!("{vip}/32"), viewer.gateway.to_string());
        let route = ["ip", "route", "replace", &to, "via", &via, "dev", "wq0"];
        lab.exec(&host1, &route);
    };
    readdress(other.ip);
    lab.assert_unreached(&host1, vip, 80, "c3 claiming c1's IP");
    lab.exec(&host1, &["ip", "link", "set", "wq0", "address", &other.mac]);
    readdress(viewer.ip);
    lab.assert_unreached(&host1, vip, 80, "c3 claiming c1's MAC");
    lab.until_reached(&host2, vip, Duration::from_secs(5), "c1 itself, meanwhile");
    lab.step("spoofed IP and MAC dropped by port security");

    // 3. Recovery by itself: disconnect and reconnect; the path lost and back; the agent
    //    restarted under a connected client.
    lab.disconnect("viewer");
    let gone = lab.exec(&host1, &["ip", "link", "show", "wq0"]);
    assert!(
        gone.contains("does not exist"),
        "wq0 outlived wepoq connect: {gone}"
    );
    lab.connect("viewer", &host1, VIEWER, &credential);
    let t = lab.until_reached(&host1, vip, Duration::from_secs(20), "reconnect");
    lab.step(&format!("reconnected in {:.0} ms", t.as_secs_f64() * 1e3));

    lab.exec(&host1, &["ip", "link", "set", "eth0", "down"]);
    lab.assert_unreached(&host1, vip, 80, "with the path down");
    std::thread::sleep(Duration::from_secs(2));
    lab.exec(&host1, &["ip", "link", "set", "eth0", "up"]);
    let t = lab.until_reached(&host1, vip, Duration::from_secs(30), "path back");
    lab.step(&format!(
        "path back: answered again after {:.1} s",
        t.as_secs_f64()
    ));

    lab.stop_agent();
    lab.assert_unreached(&host1, vip, 80, "with the gateway agent down");
    lab.start_agent("agent2.log");
    let t = lab.until_reached(&host1, vip, Duration::from_secs(40), "agent restart");
    lab.until_reached(
        &host2,
        vip,
        Duration::from_secs(40),
        "agent restart (second client)",
    );
    lab.step(&format!(
        "agent restarted: the viewer answered again after {:.1} s, nothing done on its host",
        t.as_secs_f64()
    ));
    let agent2 = std::fs::read_to_string(lab.dir.join("agent2.log")).unwrap();
    assert!(
        agent2.contains("Up {"),
        "the restarted agent saw no client come up:\n{agent2}"
    );

    // Revocation ends a running session.
    let out = lab
        .wepoq()
        .args(["credentials", "revoke", VIEWER])
        .output()
        .unwrap();
    assert!(out.status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab.get(&host1, vip, 80, "1").starts_with("ERR") {
        assert!(
            Instant::now() < deadline,
            "a revoked client still gets answers"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    lab.step("revoked: refused within seconds");

    // The private key never appears in what wepoq prints.
    for log in [
        "agent.log",
        "agent2.log",
        "viewer.log",
        "other.log",
        "forger.log",
    ] {
        let text = std::fs::read_to_string(lab.dir.join(log)).unwrap_or_default();
        assert!(!text.contains(&private_key), "{log} shows a private key");
    }
    let plan = lab
        .wepoq()
        .args(["plan", "--db", &lab.sb.nb_unix_url()])
        .output()
        .unwrap();
    assert!(!text(&plan.stdout).contains(&private_key));
    assert!(
        !std::fs::read_to_string(lab.dir.join("wepoq.lock"))
            .unwrap()
            .contains(&private_key)
    );
}
