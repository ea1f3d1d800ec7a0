//! External clients through a gateway's logical trunk, on the real data plane: ovn-vote with
//! result's clients external (gateway `gw`), applied to the NB; `wepoq agent --gateway gw`
//! makes br-wepoq and binds the trunk port `trunk.gw.ovn-vote.ns` with a pair of patch ports; two external
//! hosts (network namespaces) join br-wepoq as access ports with their clients' tags, one
//! handed to the agent (`--gateway-access`), one plugged by the sandbox. Then: OVN's DNS and
//! the VIP answer them, an undeclared service is refused, a client claiming the other's MAC or
//! IP on its own tag is dropped by port security, and an agent restart re-syncs br-wepoq.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wepoq_compiler::emit::TrunkChild;
use wepoq_reconciler::gateway::{OWNER_KEY, OWNER_VALUE, ROLE_KEY, trunk_bridge, trunk_ifnames};
use wepoq_reconciler::sandbox::access_host::AccessHost;
use wepoq_reconciler::sandbox::spec_edit::with_external_clients;

use super::{World, fqdn, port, serial, text};

const GATEWAY: &str = "gw";
/// `--gateway-bridge`'s default: each trunk's clients are on `br-wepoq-<hash>`.
const BRIDGE_BASE: &str = "br-wepoq";

/// `wepoq agent --gateway gw` for the sandbox; killed (SIGTERM, then waited) when dropped.
struct Agent {
    child: Option<Child>,
}

impl Agent {
    fn start(w: &World, access: &[(String, String)]) -> Agent {
        let nb = w.sb.nb_unix_url();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wepoq"));
        cmd.args(["agent", "--db", &nb, "--gateway", GATEWAY])
            // No periodic sync to lean on: the NB watch, at start and on changes, does it all.
            .args(["--gateway-interval", "1h"])
            // No container of this test carries the label: the agent attaches nothing.
            .args(["--only-label", "wepoq.net/test=gateway-none"])
            .envs(w.sb.ovs_env().unwrap())
            .env_remove("WEPOQ_DB")
            .env_remove("OVN_NB_DB")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (netdev, client) in access {
            cmd.args(["--gateway-access", &format!("{netdev}={client}")]);
        }
        Agent {
            child: Some(cmd.spawn().unwrap()),
        }
    }

    /// SIGTERM, then its stderr (shown in the test's output).
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        eprintln!("---- wepoq agent --gateway ({status})\n{err}");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `check` every 100 ms until it holds or `timeout` passes.
fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ports_of(w: &World, bridge: &str) -> Vec<String> {
    w.sb.vsctl(&["list-ports", bridge])
        .map(|out| out.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn link_exists(w: &World, name: &str) -> bool {
    w.sb.ip_in_ovs_netns(&["link", "show", name]).is_ok()
}

/// Puts an external host in a namespace with `client`'s compiled MAC and address; its
/// netdev is plugged into br-wepoq with the client's tag when `plug` is set.
fn external_host(w: &mut World, client: &str, plug: bool) -> (AccessHost, TrunkChild) {
    let e = w.compiled.endpoint(client).clone();
    let child = e
        .external
        .clone()
        .unwrap_or_else(|| panic!("{client} is not an external client"));
    let host =
        w.sb.add_access_host(
            client,
            &e.mac,
            &format!("{}/{}", e.ip, e.prefix),
            &e.gateway.to_string(),
            plug.then_some((trunk_bridge(BRIDGE_BASE, &child.trunk).as_str(), child.tag)),
        )
        .unwrap_or_else(|err| panic!("external host {client}: {err}"));
    w.netns.insert(client.to_owned(), host.endpoint.clone());
    (host, child)
}

#[test]
fn external_clients_through_the_gateway_trunk() {
    let _serial = serial();
    let Some(mut w) = World::of_variant("gateway", "ovn-vote", |spec| {
        with_external_clients(spec, "result")
    }) else {
        return;
    };
    assert_eq!(w.apply(), 2, "the first apply must report changes");
    w.step("applied");

    let (c1, c2) = (port("c1.cli.result"), port("c2.cli.result"));
    let servers: Vec<String> = (1..=3).map(|i| port(&format!("s{i}.svr.result"))).collect();
    w.wire(&servers);
    for s in &servers {
        w.serve(s, 80);
    }

    // c1's netdev is handed to the agent, which makes it an access port with the NB's tag;
    // c2's is plugged by the sandbox (any netdev on br-wepoq with the tag works).
    let (h1, t1) = external_host(&mut w, &c1, false);
    assert_eq!(t1.gateway, GATEWAY);
    let trunk = t1.trunk.clone();
    let (on_int, on_wepoq) = trunk_ifnames(&trunk);
    let bridge = trunk_bridge(BRIDGE_BASE, &trunk);
    let bridge = bridge.as_str();
    // What an agent from before patch ports and bridges per trunk left: the trunk's veth
    // pair and one br-wepoq of its own. The first sync replaces both.
    w.sb.ip_in_ovs_netns(&[
        "link", "add", &on_int, "type", "veth", "peer", "name", &on_wepoq,
    ])
    .unwrap();
    w.sb.vsctl(&[
        "add-br",
        BRIDGE_BASE,
        "--",
        "set",
        "Bridge",
        BRIDGE_BASE,
        "datapath_type=netdev",
        &format!("external_ids:\"{OWNER_KEY}\"={OWNER_VALUE}"),
        &format!("external_ids:\"{ROLE_KEY}\"=bridge"),
    ])
    .unwrap();
    let mut agent = Agent::start(&w, &[(h1.netdev.clone(), fqdn("c1.cli.result"))]);
    wait_until(
        "br-wepoq with the trunk's patch port and c1's access port",
        Duration::from_secs(20),
        || {
            let ports = ports_of(&w, bridge);
            ports.contains(&on_wepoq) && ports.contains(&h1.netdev)
        },
    );
    assert!(
        ports_of(&w, "br-int").contains(&on_int),
        "{on_int} is not on br-int"
    );
    for (end, peer) in [(&on_int, &on_wepoq), (&on_wepoq, &on_int)] {
        assert_eq!(
            w.sb.vsctl(&["get", "Interface", end, "type", "options:peer"])
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["patch", peer.as_str()],
            "{end} is a patch port to {peer}"
        );
        assert!(
            !link_exists(&w, end),
            "{end} is a netdev, not only a patch port"
        );
    }
    wait_until("the old br-wepoq removed", Duration::from_secs(10), || {
        !w.sb
            .vsctl(&["list-br"])
            .unwrap()
            .lines()
            .any(|b| b == BRIDGE_BASE)
    });
    assert_eq!(
        w.sb.vsctl(&["get", "Port", &h1.netdev, "tag"])
            .unwrap()
            .trim(),
        t1.tag.to_string(),
        "c1's access port carries c1's tag"
    );
    assert_eq!(
        w.sb.vsctl(&["get", "Bridge", bridge, "fail_mode"])
            .unwrap()
            .trim(),
        "standalone"
    );
    let (_h2, t2) = external_host(&mut w, &c2, true);
    assert_ne!(t1.tag, t2.tag, "one tag per client");
    assert_eq!(t2.trunk, trunk, "both clients ride the one trunk of gw");
    for p in [&trunk, &c1, &c2] {
        w.sb.wait_port_up(p, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{p} never came up: {e}"));
    }
    w.sync();
    w.step("trunk and both external clients bound");

    // OVN's DNS on each client's gateway address answers result's VIP; the VIP answers.
    let result_vip = w.compiled.vip("result");
    let name = fqdn("vip.svr.result");
    for c in [&c1, &c2] {
        let gw = w.compiled.endpoint(c).gateway;
        assert_eq!(
            w.dig(c, gw, &name),
            result_vip.to_string(),
            "dig @{gw} {name} from {c}"
        );
        let got = w.reaches(c, result_vip, 80);
        assert!(servers.contains(&got), "{c} through the VIP got {got:?}");
    }
    w.step("both external clients resolve and reach result's VIP");

    // An undeclared service: not resolved, not reached.
    let db_vip = w.compiled.vip("db");
    let gw1 = w.compiled.endpoint(&c1).gateway;
    let undeclared = w.dig(&c1, gw1, &fqdn("vip.svr.db"));
    assert!(
        !undeclared.contains(&db_vip.to_string()),
        "an external client resolved db: {undeclared:?}"
    );
    w.assert_blocked(
        &c1,
        db_vip,
        5432,
        "an external client calling an undeclared service",
    );

    // c2 claims c1's MAC, then c1's address, on its own tag: port security drops it.
    let (e1, e2) = (
        w.compiled.endpoint(&c1).clone(),
        w.compiled.endpoint(&c2).clone(),
    );
    let ip_link = |c: &str, args: &[&str]| {
        let mut argv = vec!["ip"];
        argv.extend(args);
        let out = w.exec(c, &argv);
        assert!(out.status.success(), "ip {args:?} in {c}: {out:?}");
    };
    ip_link(&c2, &["link", "set", "eth0", "address", &e1.mac]);
    ip_link(&c2, &["neigh", "flush", "all"]);
    w.assert_blocked(&c2, result_vip, 80, "c2 with c1's MAC");
    ip_link(&c2, &["link", "set", "eth0", "address", &e2.mac]);
    let (cidr1, cidr2) = (
        format!("{}/{}", e1.ip, e1.prefix),
        format!("{}/{}", e2.ip, e2.prefix),
    );
    // Readdresses c2's eth0 from one address to the other, its default route kept.
    let readdress = |from: &str, to: &str| {
        ip_link(&c2, &["addr", "del", from, "dev", "eth0"]);
        ip_link(&c2, &["addr", "add", to, "dev", "eth0"]);
        let via = e2.gateway.to_string();
        ip_link(&c2, &["route", "replace", "default", "via", &via]);
    };
    readdress(&cidr2, &cidr1);
    ip_link(&c2, &["neigh", "flush", "all"]);
    w.assert_blocked(&c2, result_vip, 80, "c2 with c1's address");
    readdress(&cidr1, &cidr2);
    // c1 was never disturbed, and c2 is back once it is itself again.
    w.reaches(&c1, result_vip, 80);
    w.reaches(&c2, result_vip, 80);
    w.step("undeclared service refused, spoofing dropped");

    // Restart: while the agent is down, the trunk's br-int end is deleted by hand and a stale port
    // of the gateway's (marked, for a client the NB does not name) is left on br-wepoq.
    agent.stop();
    w.sb.vsctl(&["del-port", "br-int", &on_int]).unwrap();
    let stale = "wqcstale0";
    w.sb.vsctl(&[
        "add-port",
        bridge,
        stale,
        "tag=99",
        "--",
        "set",
        "Interface",
        stale,
        "type=internal",
        "--",
        "set",
        "Port",
        stale,
        &format!("external_ids:\"{OWNER_KEY}\"={OWNER_VALUE}"),
        &format!("external_ids:\"{ROLE_KEY}\"=\"client:gone.example\""),
    ])
    .unwrap();
    // A foreign port (not marked) must survive the re-sync.
    let foreign = "wqforeign0";
    w.sb.vsctl(&[
        "add-port",
        bridge,
        foreign,
        "--",
        "set",
        "Interface",
        foreign,
        "type=internal",
    ])
    .unwrap();
    let _agent = Agent::start(&w, &[(h1.netdev.clone(), fqdn("c1.cli.result"))]);
    wait_until(
        "the restarted agent's re-sync",
        Duration::from_secs(20),
        || {
            let ports = ports_of(&w, bridge);
            ports_of(&w, "br-int").contains(&on_int)
                && ports.contains(&on_wepoq)
                && !ports.contains(&stale.to_owned())
        },
    );
    let ports = ports_of(&w, bridge);
    assert!(
        ports.contains(&foreign.to_owned()),
        "a foreign port was removed: {ports:?}"
    );
    assert!(
        ports.contains(&h1.netdev),
        "c1's access port is gone: {ports:?}"
    );
    w.sb.wait_port_up(&trunk, Duration::from_secs(30)).unwrap();
    w.sync();
    for c in [&c1, &c2] {
        w.reaches(c, result_vip, 80);
    }
    w.step("restart re-synced: trunk port back, stale port gone, foreign port kept");

    // A tag changed in the NB: the agent retags c1's access port, and c1 still gets through.
    let retag = if t1.tag == 4000 { 4001 } else { 4000 };
    w.nbctl(&[
        "set",
        "Logical_Switch_Port",
        &c1,
        &format!("tag_request={retag}"),
    ]);
    wait_until("c1's access port retagged", Duration::from_secs(20), || {
        w.sb.vsctl(&["get", "Port", &h1.netdev, "tag"])
            .is_ok_and(|t| t.trim() == retag.to_string())
    });
    w.sync();
    w.reaches(&c1, result_vip, 80);
    w.step("a tag changed in the NB followed");

    // A second namespace served by the same gateway: examples/remote-clients, whose board
    // viewers use tags that result's viewers use too. Its trunk gets a bridge of its own, so
    // both namespaces keep their clients, and neither's frames reach the other's.
    let remote_dir = w.dir.join("remote");
    std::fs::create_dir_all(&remote_dir).unwrap();
    let example = crate::support::repo().join("examples/remote-clients");
    let remote_spec = crate::support::without_containers(
        &std::fs::read_to_string(example.join("wepoq.yaml")).unwrap(),
    );
    let remote_lock = std::fs::read_to_string(example.join("wepoq.lock")).unwrap();
    std::fs::write(remote_dir.join("wepoq.yaml"), &remote_spec).unwrap();
    std::fs::write(remote_dir.join("wepoq.lock"), &remote_lock).unwrap();
    let out = w.wepoq(&["apply", "wepoq.yaml", "remote/wepoq.yaml"]);
    assert!(out.status.success(), "apply of both namespaces failed");
    let remote = crate::support::compile_text(&remote_spec, Some(&remote_lock))
        .unwrap_or_else(|d| panic!("{d:?}"))
        .namespaces
        .remove(0)
        .endpoints;
    let viewer = remote
        .iter()
        .find(|e| {
            e.external
                .as_ref()
                .is_some_and(|x| x.gateway == GATEWAY && x.tag == t2.tag)
        })
        .unwrap_or_else(|| panic!("no board viewer shares c2's tag {}", t2.tag))
        .clone();
    let remote_trunk = viewer.external.clone().unwrap().trunk;
    let remote_bridge = trunk_bridge(BRIDGE_BASE, &remote_trunk);
    assert_ne!(remote_bridge, bridge);
    let (remote_int, remote_wepoq) = trunk_ifnames(&remote_trunk);
    wait_until("the second trunk's bridge", Duration::from_secs(20), || {
        ports_of(&w, &remote_bridge).contains(&remote_wepoq)
            && ports_of(&w, "br-int").contains(&remote_int)
    });
    assert!(
        !ports_of(&w, bridge).contains(&remote_wepoq),
        "the second trunk is on the first one's bridge"
    );
    w.sb.wait_port_up(&remote_trunk, Duration::from_secs(30))
        .unwrap();
    let host =
        w.sb.add_access_host(
            &viewer.port,
            &viewer.mac,
            &format!("{}/{}", viewer.ip, viewer.prefix),
            &viewer.gateway.to_string(),
            Some((remote_bridge.as_str(), t2.tag)),
        )
        .unwrap();
    w.netns.insert(viewer.port.clone(), host.endpoint.clone());
    w.sb.wait_port_up(&viewer.port, Duration::from_secs(30))
        .unwrap();
    w.sync();
    let board_vip = w.dig(
        &viewer.port,
        viewer.gateway,
        "vip.svr.board.remote.wepoq.net",
    );
    assert!(
        board_vip.parse::<std::net::Ipv4Addr>().is_ok(),
        "remote's viewer (tag {}) is answered by its own namespace's DNS: {board_vip:?}",
        t2.tag
    );
    let other = w.dig(
        &viewer.port,
        viewer.gateway,
        "vip.svr.result.ovn-vote.ns.wepoq.net",
    );
    assert!(
        !other
            .lines()
            .any(|l| l.parse::<std::net::Ipv4Addr>().is_ok()),
        "remote's viewer resolved a name of ns: {other:?}"
    );
    // The same tag on one bridge would be one L2 segment: remote's viewer would reach c2
    // directly (ARP flooded on the tag, no OVN in between). On bridges of their own, not.
    w.serve(&c2, 7070);
    let c2_ip = w.ip(&c2);
    let onlink = w.exec(
        &viewer.port,
        &["ip", "route", "add", &format!("{c2_ip}/32"), "dev", "eth0"],
    );
    assert!(onlink.status.success(), "{onlink:?}");
    w.assert_blocked(
        &viewer.port,
        c2_ip,
        7070,
        "ns's c2 on the same tag, straight over L2",
    );
    let c2_mac = w.compiled.endpoint(&c2).mac.clone();
    let neigh = w.exec(&viewer.port, &["ip", "neigh", "show", &c2_ip.to_string()]);
    assert!(
        !text(&neigh.stdout).contains(&c2_mac),
        "remote's viewer learnt c2's MAC by ARP across namespaces: {}",
        text(&neigh.stdout)
    );
    w.reaches(&c2, result_vip, 80);
    w.step("a second namespace on the gateway: its own bridge, same tags, both served");
}
