//! External-client benchmark (issue "Client-side wepoq"): the viewer
//! `c3.cli.result.ovn-vote.ns.wepoq.net` talking to result's VIP on a real OVN data plane,
//! side by side in one run:
//!
//! - **direct**: the client attached to br-int with a veth, as any endpoint on the chassis
//!   (the anchor);
//! - **wepoq connect**: the same client on an external host (a namespace that reaches the
//!   chassis only through a routed veth), its frames in VXLAN inside WireGuard to the gateway
//!   agent, then the trunk's bridge (br-wepoq-<h>), its patch port and br-int;
//! - **plain VXLAN** (the floor): another client on a second external host, its kernel VXLAN
//!   straight over the routed link to an access port on that bridge, no WireGuard and no
//!   userspace. The same bridges, trunk and encapsulation: what any tunnel through this
//!   gateway path could reach at best.
//!
//! Figures: round trips of 64 bytes on one TCP connection (p50, p99), one TCP stream's
//! throughput (the median of the rounds, counted by the receiver), and connect time (from
//! starting `wepoq connect` to the first answered round trip through the VIP). Targets: added
//! round-trip p50 at most 200 µs over direct, throughput at least 50% of direct.
//!
//! Run: `cargo bench --bench external_client` (as root, with the OVN packages).
//! ROUNDS (default 5) bulk rounds per path of SECONDS (default 3); SAMPLES (default 5000)
//! round trips per path.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wepoq_compiler::emit::Endpoint;
use wepoq_compiler::{Input, Sources, compile};
use wepoq_reconciler::sandbox::spec_edit::with_external_clients;
use wepoq_reconciler::sandbox::traffic::{self, in_netns};
use wepoq_reconciler::sandbox::{Component, Sandbox, require, without_blocks};
use wepoq_runtime::bench::loopback::percentile;

const TUNNEL_PORT: u16 = 51820;
const VIEWER: &str = "c3.cli.result.ovn-vote.ns";
/// The anchor's copy of ovn-vote.
const DIRECT_NS: &str = "nd";
const FLOOR_CLIENT: &str = "c1.cli.result.ovn-vote.ns";
/// The floor's VXLAN device on the chassis (an access port the agent keeps).
const FLOOR_NETDEV: &str = "wqfloor";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Settings {
    rounds: u64,
    seconds: u64,
    samples: usize,
}

/// One path's figures.
struct Figures {
    name: &'static str,
    rtt_p50: f64,
    rtt_p99: f64,
    mbits: f64,
    all_mbits: Vec<f64>,
}

/// Every path in turn, round after round: a slice of the round trips, then one bulk
/// transfer each, so a slow moment of the machine falls on all of them alike.
fn measure_in_turns<const N: usize>(
    paths: &[(&'static str, String, SocketAddr); N],
    s: &Settings,
) -> [Figures; N] {
    let mut rtts: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::new());
    let mut mbits: [Vec<f64>; N] = std::array::from_fn(|_| Vec::new());
    let per_round = (s.samples / s.rounds as usize).max(1);
    for round in 0..s.rounds {
        for (i, (name, netns, to)) in paths.iter().enumerate() {
            let to = *to;
            rtts[i].extend(
                in_netns(netns, move || traffic::round_trips(to, 64, per_round))
                    .unwrap_or_else(|e| panic!("{name}: round trips: {e}")),
            );
            let duration = Duration::from_secs(s.seconds);
            let got = in_netns(netns, move || traffic::bulk(to, duration))
                .unwrap_or_else(|e| panic!("{name}: bulk: {e}"));
            eprintln!("  round {}: {name}: {got:.0} Mbit/s", round + 1);
            mbits[i].push(got);
        }
    }
    std::array::from_fn(|i| {
        rtts[i].sort();
        let micros = |q: f64| percentile(&rtts[i], q).as_secs_f64() * 1e6;
        let mut sorted = mbits[i].clone();
        sorted.sort_by(f64::total_cmp);
        Figures {
            name: paths[i].0,
            rtt_p50: micros(0.5),
            rtt_p99: micros(0.99),
            mbits: sorted[sorted.len() / 2],
            all_mbits: mbits[i].clone(),
        }
    })
}

struct Bench {
    sb: Sandbox,
    dir: PathBuf,
    children: Vec<Child>,
}

impl Drop for Bench {
    fn drop(&mut self) {
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Bench {
    fn wepoq(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wepoq"));
        cmd.current_dir(&self.dir)
            .env("WEPOQ_NO_CONTAINERS", "1")
            .env("WEPOQ_TUNNEL_STORE", self.dir.join("store"))
            .env("NO_COLOR", "1");
        cmd
    }

    fn run(&self, cmd: &mut Command, what: &str) -> String {
        let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{what} failed: {text}");
        text
    }

    fn in_ovs_netns(&self, script: &str) {
        let netns = self.sb.ovs_netns().unwrap();
        self.run(
            Command::new("nsenter")
                .arg(format!("--net={}", netns.display()))
                .args(["sh", "-euc", script]),
            script,
        );
    }

    fn spawn_logged(&mut self, mut cmd: Command, log: &str) {
        let log = std::fs::File::create(self.dir.join(log)).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }
}

fn endpoints(spec: &str, lock: &str) -> Vec<Endpoint> {
    let mut sources = Sources::new();
    let spec = sources.add("wepoq.yaml", spec);
    let lock = Some(sources.add("wepoq.lock", lock));
    let mut compiled =
        compile(&sources, &[Input { spec, lock }]).unwrap_or_else(|d| panic!("{d:?}"));
    compiled.namespaces.remove(0).endpoints
}

fn find<'a>(endpoints: &'a [Endpoint], port: &str) -> &'a Endpoint {
    endpoints
        .iter()
        .find(|e| e.port == port)
        .unwrap_or_else(|| panic!("no endpoint {port}"))
}

fn vip(sb: &Sandbox, namespace: &str) -> SocketAddr {
    let lb = format!("lb.tcp.result.ovn-vote.{namespace}");
    let vips = sb.nbctl(&["get", "Load_Balancer", &lb, "vips"]).unwrap();
    vips.split('"')
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("result's VIP from {vips}"))
}

/// result's three servers of `endpoints`, each serving the traffic protocol on port 80.
fn start_servers(sb: &Sandbox, endpoints: &[Endpoint], namespace: &str) {
    for n in 1..=3 {
        let e = find(endpoints, &format!("s{n}.svr.result.ovn-vote.{namespace}"));
        let ns = sb.plug(e).unwrap();
        let listener = in_netns(&ns.netns, || TcpListener::bind("0.0.0.0:80")).unwrap();
        traffic::serve(listener).unwrap();
        sb.wait_port_up(&e.port, Duration::from_secs(30)).unwrap();
    }
}

fn main() {
    if require(Component::DataPlane).is_none() {
        return;
    }
    let s = Settings {
        rounds: env_or("ROUNDS", 5),
        seconds: env_or("SECONDS", 3),
        samples: env_or("SAMPLES", 5000) as usize,
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = repo.join("examples/ovn-vote");
    let plain = without_blocks(
        &std::fs::read_to_string(example.join("wepoq.yaml")).unwrap(),
        "container",
    );
    let lock = std::fs::read_to_string(example.join("wepoq.lock")).unwrap();

    let sb = Sandbox::data_plane().expect("a data-plane sandbox");
    let dir = sb.dir().join("external-bench");
    let mut b = Bench {
        sb,
        dir,
        children: Vec::new(),
    };
    let started = Instant::now();
    let step = |what: &str| eprintln!("[{:>6.1}s] {what}", started.elapsed().as_secs_f64());

    // Two copies of ovn-vote side by side, so that every path is measured in turns, in the
    // same seconds: namespace `nd` as the example has it (the anchor: the viewer on br-int
    // with a veth), and `ns` with result's clients external.
    // (Namespaces may not overlap: the copy moves to 10.66.0.0/16, its lock with it.)
    let direct_spec = plain
        .replace("namespace: ns\n", &format!("namespace: {DIRECT_NS}\n"))
        .replace("network: 10.64.0.0/16", "network: 10.66.0.0/16");
    let direct_lock = lock
        .replace("ovn-vote.ns ", &format!("ovn-vote.{DIRECT_NS} "))
        .replace("namespace ns.", &format!("namespace {DIRECT_NS}."))
        .replace(" 10.64.", " 10.66.")
        .replace(" 0a:58:0a:40:", " 0a:58:0a:42:");
    let external = with_external_clients(&plain, "result");
    let specs = [
        (b.dir.join("direct"), direct_spec, direct_lock),
        (b.dir.join("external"), external, lock),
    ];
    for (dir, spec, lock) in &specs {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("wepoq.yaml"), spec).unwrap();
        std::fs::write(dir.join("wepoq.lock"), lock).unwrap();
    }
    let db = b.sb.nb_unix_url();
    b.run(
        b.wepoq()
            .args(["apply", "--db", &db, "--auto-approve"])
            .args(specs.iter().map(|(dir, ..)| dir.join("wepoq.yaml"))),
        "wepoq apply",
    );
    // Compiled from the lockfiles apply kept: the addresses the NB has.
    let [direct_endpoints, external_endpoints] = specs.map(|(dir, spec, _)| {
        endpoints(
            &spec,
            &std::fs::read_to_string(dir.join("wepoq.lock")).unwrap(),
        )
    });
    start_servers(&b.sb, &direct_endpoints, DIRECT_NS);
    start_servers(&b.sb, &external_endpoints, "ns");
    let direct_vip = vip(&b.sb, DIRECT_NS);
    let vip = vip(&b.sb, "ns");

    let direct_viewer = format!("c3.cli.result.ovn-vote.{DIRECT_NS}");
    let viewer = find(&direct_endpoints, &direct_viewer);
    let direct_ns = b.sb.plug(viewer).unwrap();
    b.sb.wait_port_up(&viewer.port, Duration::from_secs(30))
        .unwrap();
    in_netns(&direct_ns.netns, move || {
        traffic::until_echo(direct_vip, Duration::from_secs(30))
    })
    .unwrap();
    step(&format!("direct viewer reaches result's VIP {direct_vip}"));

    // In `ns` result's viewers are external: child ports of the gateway's trunk. The floor
    // is viewer c1: kernel VXLAN over a routed link, straight onto the trunk's bridge.
    let floor = find(&external_endpoints, FLOOR_CLIENT);
    let floor_tag = floor.external.as_ref().expect("external").tag;
    let (floor_host, floor_ip, floor_chassis) = b.sb.add_external_host().unwrap();
    let vxlan = |local: Ipv4Addr, remote: Ipv4Addr, name: &str| {
        format!(
            "ip link add {name} type vxlan id {floor_tag} local {local} remote {remote} \
             dstport 4789 nolearning && ethtool -K {name} tx off gro off >/dev/null && \
             ip link set {name} mtu 1450 up"
        )
    };
    b.in_ovs_netns(&vxlan(floor_chassis, floor_ip, FLOOR_NETDEV));
    b.run(
        Command::new("ip")
            .args(["netns", "exec", &floor_host.netns, "sh", "-euc"])
            .arg(format!(
                "{} && ip link set wqf0 address {} && ip addr add {}/{} dev wqf0 && \
             ip route add default via {} dev wqf0",
                vxlan(floor_ip, floor_chassis, "wqf0"),
                floor.mac,
                floor.ip,
                floor.prefix,
                floor.gateway
            )),
        "the floor's client end",
    );

    let mut agent = b.wepoq();
    agent
        .args(["agent", "--db", &b.sb.nb_unix_url(), "--gateway", "gw"])
        .args(["--gateway-interval", "500ms"])
        .args(["--tunnel-listen", &format!("0.0.0.0:{TUNNEL_PORT}")])
        .envs(b.sb.ovs_env().unwrap())
        .arg("--run-dir")
        .arg(b.dir.join("run"))
        .args([
            "--only-label",
            &format!("wepoq.net/bench={}", std::process::id()),
        ])
        .args([
            "--gateway-access",
            &format!("{FLOOR_NETDEV}={}", floor.fqdn),
        ]);
    b.spawn_logged(agent, "agent.log");
    let trunk = floor.external.as_ref().unwrap().trunk.clone();
    for port in [trunk.as_str(), FLOOR_CLIENT, VIEWER] {
        b.sb.wait_port_up(port, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{port}: {e}\n{}", b.log("agent.log")));
    }
    in_netns(&floor_host.netns, move || {
        traffic::until_echo(vip, Duration::from_secs(30))
    })
    .unwrap_or_else(|e| panic!("floor: {e}\n{}", b.log("agent.log")));
    step("the plain-VXLAN client reaches the VIP");

    let (host, _, chassis) = b.sb.add_external_host().unwrap();
    let credential = b.dir.join("c3.credential");
    let viewer_fqdn = find(&external_endpoints, VIEWER).fqdn.clone();
    b.run(
        b.wepoq()
            .args(["credentials", "issue", &viewer_fqdn])
            .args(["--endpoint", &format!("{chassis}:{TUNNEL_PORT}")])
            .arg("--out")
            .arg(&credential)
            .args(["--db", &b.sb.nb_unix_url()]),
        "wepoq credentials issue",
    );
    let mut connect = Command::new("ip");
    connect
        .args(["netns", "exec", &host.netns, env!("CARGO_BIN_EXE_wepoq")])
        .args(["connect", &viewer_fqdn, "--credential"])
        .arg(&credential);
    let connect_started = Instant::now();
    b.spawn_logged(connect, "connect.log");
    in_netns(&host.netns, move || {
        traffic::until_echo(vip, Duration::from_secs(30))
    })
    .unwrap_or_else(|e| {
        panic!(
            "wepoq connect: {e}\n{}\n{}",
            b.log("connect.log"),
            b.log("agent.log")
        )
    });
    let connect_ms = connect_started.elapsed().as_secs_f64() * 1e3;
    step(&format!(
        "wepoq connect: first answer through the VIP after {connect_ms:.0} ms"
    ));
    let paths = [
        (
            "direct (veth on br-int)",
            direct_ns.netns.clone(),
            direct_vip,
        ),
        ("wepoq connect (WireGuard + VXLAN)", host.netns.clone(), vip),
        ("plain VXLAN (floor)", floor_host.netns.clone(), vip),
    ];
    let [direct, tunnel, floor] = measure_in_turns(&paths, &s);
    println!(
        "\nexternal client vs direct, result's VIP {vip}, 64-byte TCP round trips x{}, {} x {} s of one TCP stream",
        s.samples, s.rounds, s.seconds
    );
    println!(
        "{:<36} {:>12} {:>12} {:>14} {:>10}",
        "path", "rtt p50 µs", "rtt p99 µs", "Mbit/s", "of direct"
    );
    for f in [&direct, &tunnel, &floor] {
        println!(
            "{:<36} {:>12.0} {:>12.0} {:>14.0} {:>9.0}%",
            f.name,
            f.rtt_p50,
            f.rtt_p99,
            f.mbits,
            f.mbits / direct.mbits * 100.0
        );
    }
    for f in [&direct, &tunnel, &floor] {
        let rounds: Vec<String> = f.all_mbits.iter().map(|m| format!("{m:.0}")).collect();
        println!("  {} Mbit/s by round: {}", f.name, rounds.join(" "));
    }
    let added = tunnel.rtt_p50 - direct.rtt_p50;
    println!(
        "added round trip p50: {added:.0} µs (target <= 200: {})",
        if added <= 200.0 { "met" } else { "missed" }
    );
    let ratio = tunnel.mbits / direct.mbits;
    println!(
        "throughput: {:.0}% of direct (target >= 50%: {}); the plain-VXLAN floor is {:.0}% of direct, wepoq connect {:.0}% of the floor",
        ratio * 100.0,
        if ratio >= 0.5 { "met" } else { "missed" },
        floor.mbits / direct.mbits * 100.0,
        tunnel.mbits / floor.mbits * 100.0
    );
    println!(
        "connect time: {connect_ms:.0} ms from starting `wepoq connect` to the first answered round trip"
    );
    if let Some(line) = b.log("connect.log").lines().find(|l| l.contains("up (")) {
        println!("  wepoq connect says: {}", line.trim());
    }
}
