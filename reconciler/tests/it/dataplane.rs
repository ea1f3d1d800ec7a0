//! Proof that the topology the compiler will emit works on a real OVN data plane
//!
//! Built on a data-plane sandbox twice, with ovn-nbctl and as one transaction through
//! the OVSDB client (what apply will do), shaped like the compiler's output for one
//! namespace `ns`: one router; per service side (svr/cli) a switch with its own /28
//! whose first host is the router port (gateway and DNS server); endpoint ports with fixed
//! addresses and port security; a Load_Balancer per service on the client switches; one
//! DNS row on every switch; port groups per side and ACLs (default deny, DNS, per-service
//! allow pairs). Service X has two servers and a client, service Y one of each.
//!
//! Findings this test pins down (see also the reconciler report):
//! - From-lport ACLs on a switch with a load balancer are re-evaluated for established
//!   packets *after* conntrack has already DNATed them, so a match on the VIP alone lets
//!   the SYN through and drops the rest. `ip4.dst == {VIP, $svr_ip4}` works but also lets
//!   clients connect to servers directly; `(ip4.dst == VIP || (ct.est && ip4.dst ==
//!   $svr_ip4))` allows only the VIP path.
//! - The client's switch must carry the service's Load_Balancer, also for a declared call
//!   from another service's clients; on the (distributed, gateway-less) router it does
//!   nothing.
//! - DNS: OVN answers any UDP/53 query crossing a switch with records (whatever its
//!   destination), and in 23.03 lets `udp.src == 53` skip to-lport ACLs. With a plain
//!   `udp.dst == 53` allow, any endpoint can send 53 -> 53 datagrams to any other through
//!   the default deny; allowing DNS only to the gateway addresses closes that.
//! - Port group names with dots work in matches. An ACL is installed on every switch that
//!   has a port of the ACL's own port group; where a group named in its match has no
//!   port, ovn-controller logs "Syntax error ... expecting port group name" and skips the
//!   flow. Harmless, but noisy: hang each allow ACL on the narrowest group (from-lport on
//!   the client side's group, to-lport on the server side's) and the default deny on the
//!   namespace-wide group; ACL priorities compare across groups on a switch.

use std::collections::BTreeSet;
use std::time::Duration;

use wepoq_reconciler::ovsdb::{
    Atom, Client, Condition, Mutation, NB_DB, Operation, Row, Timeouts, Value,
};
use wepoq_reconciler::sandbox::{Endpoint, Sandbox};

const PORT: &str = "8080";
const VIP_X: &str = "10.0.0.14";
const VIP_Y: &str = "10.0.0.46";

const SERVER: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[2])))
s.listen(16)
while True:
    c, _ = s.accept()
    c.sendall((sys.argv[1] + "\n").encode())
    c.close()
"#;

const UDP_RECV: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(float(sys.argv[2]))
try:
    s.recvfrom(100)
    print("GOT")
except socket.timeout:
    print("NOTHING")
"#;

const UDP_SEND: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
for _ in range(3):
    s.sendto(b"hi", (sys.argv[2], int(sys.argv[3])))
"#;

const CLIENT: &str = r#"
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    print(s.recv(100).decode().strip())
except OSError as e:
    print("ERR", type(e).__name__)
"#;

struct Probe {
    sb: Sandbox,
    endpoints: Vec<Endpoint>,
}

impl Probe {
    fn nbctl(&self, args: &[&str]) -> String {
        self.sb.nbctl(args).unwrap()
    }

    fn ep(&self, lsp: &str) -> &Endpoint {
        self.endpoints.iter().find(|e| e.lsp == lsp).unwrap()
    }

    /// What the server answered, or "ERR ..." when the connection failed.
    fn connect(&self, from: &str, ip: &str, timeout_s: &str) -> String {
        let client = self.sb.dir().join("client.py");
        let out = self
            .sb
            .exec(
                self.ep(from),
                &["python3", client.to_str().unwrap(), ip, PORT, timeout_s],
            )
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Positive checks retry a little: flows may still be landing after `--wait=hv`.
    fn reaches(&self, from: &str, ip: &str) -> String {
        for _ in 0..5 {
            let got = self.connect(from, ip, "2");
            if !got.starts_with("ERR") {
                return got;
            }
        }
        panic!("{from} cannot reach {ip}:{PORT}")
    }

    fn blocked(&self, from: &str, ip: &str) -> bool {
        self.connect(from, ip, "1").starts_with("ERR")
    }

    /// Whether datagrams from `from`'s port `sport` arrive at `to`'s port `dport`.
    fn udp_delivered(&self, from: &str, sport: &str, to: &str, to_ip: &str, dport: &str) -> bool {
        let recv = self.sb.dir().join("udp_recv.py");
        let send = self.sb.dir().join("udp_send.py");
        std::thread::scope(|scope| {
            let receiver = scope.spawn(|| {
                self.sb
                    .exec(
                        self.ep(to),
                        &["python3", recv.to_str().unwrap(), dport, "2"],
                    )
                    .unwrap()
            });
            std::thread::sleep(Duration::from_millis(500));
            let send = send.to_str().unwrap();
            self.sb
                .exec(self.ep(from), &["python3", send, sport, to_ip, dport])
                .unwrap();
            let out = receiver.join().unwrap();
            String::from_utf8_lossy(&out.stdout).trim() == "GOT"
        })
    }

    fn dig(&self, from: &str, server: &str, name: &str) -> String {
        let out = self
            .sb
            .exec(
                self.ep(from),
                &[
                    "dig",
                    "+noedns",
                    "+short",
                    "+time=2",
                    "+tries=2",
                    &format!("@{server}"),
                    name,
                ],
            )
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn sync(&self) {
        self.nbctl(&["--wait=hv", "--timeout=30", "sync"]);
    }
}

/// (switch, gateway = router port address, router port MAC)
const SWITCHES: [(&str, &str, &str); 4] = [
    ("svr.x", "10.0.0.1", "02:00:00:00:00:01"),
    ("cli.x", "10.0.0.17", "02:00:00:00:00:11"),
    ("svr.y", "10.0.0.33", "02:00:00:00:00:21"),
    ("cli.y", "10.0.0.49", "02:00:00:00:00:31"),
];

/// (switch, port, MAC, IP, gateway)
const ENDPOINTS: [(&str, &str, &str, &str, &str); 5] = [
    ("svr.x", "x-s1", "02:00:00:00:01:02", "10.0.0.2", "10.0.0.1"),
    ("svr.x", "x-s2", "02:00:00:00:01:03", "10.0.0.3", "10.0.0.1"),
    (
        "cli.x",
        "x-c1",
        "02:00:00:00:01:12",
        "10.0.0.18",
        "10.0.0.17",
    ),
    (
        "svr.y",
        "y-s1",
        "02:00:00:00:01:22",
        "10.0.0.34",
        "10.0.0.33",
    ),
    (
        "cli.y",
        "y-c1",
        "02:00:00:00:01:32",
        "10.0.0.50",
        "10.0.0.49",
    ),
];

/// The namespace-wide ACLs: default deny both ways, DNS to the gateways only. OVN 23.03
/// lets `udp.src == 53` skip to-lport ACLs on a switch with DNS records, so a plain
/// `udp.dst == 53` allow would let any endpoint send 53 -> 53 datagrams to any other.
const NS_ACLS: [(&str, i64, &str, &str); 3] = [
    ("from-lport", 100, "inport == @wepoq.ns && ip", "drop"),
    ("to-lport", 100, "outport == @wepoq.ns && ip", "drop"),
    (
        "from-lport",
        1000,
        "inport == @wepoq.ns && ip4.dst == {10.0.0.1, 10.0.0.17, 10.0.0.33, 10.0.0.49} && udp.dst == 53",
        "allow-related",
    ),
];

/// The ACL pair that lets clients of `cli` call service `svc` through its VIP:
/// (from-lport match for the client group, to-lport match for the server group).
fn allow_pair(cli: &str, svc: &str, vip: &str) -> (String, String) {
    // New connections only to the VIP; established ones (already DNATed by conntrack when
    // the ACL is re-evaluated) to the servers. A direct SYN to a server stays dropped.
    let from = format!(
        "inport == @wepoq.cli.{cli}.ns && tcp.dst == {PORT} && \
         (ip4.dst == {vip} || (ct.est && ip4.dst == $wepoq.svr.{svc}.ns_ip4))"
    );
    let to = format!(
        "outport == @wepoq.svr.{svc}.ns && ip4.src == $wepoq.cli.{cli}.ns_ip4 && tcp.dst == {PORT}"
    );
    (from, to)
}

fn lb_vips(service: &str) -> (String, String) {
    match service {
        "x" => (
            format!("{VIP_X}:{PORT}"),
            format!("10.0.0.2:{PORT},10.0.0.3:{PORT}"),
        ),
        _ => (format!("{VIP_Y}:{PORT}"), format!("10.0.0.34:{PORT}")),
    }
}

const DNS_RECORDS: [(&str, &str); 2] = [
    ("vip.svr.x.ns.wepoq.net", VIP_X),
    ("vip.svr.y.ns.wepoq.net", VIP_Y),
];

fn build_with_nbctl(sb: &Sandbox) {
    let nb = |args: &[&str]| sb.nbctl(args).unwrap();
    nb(&["lr-add", "lr.ns"]);
    for (sw, gw, mac) in SWITCHES {
        let (rp, sp) = (format!("rp-{sw}"), format!("sp-{sw}"));
        nb(&["ls-add", sw]);
        nb(&["lrp-add", "lr.ns", &rp, mac, &format!("{gw}/28")]);
        let router_port = format!("router-port={rp}");
        nb(&[
            "lsp-add",
            sw,
            &sp,
            "--",
            "lsp-set-type",
            &sp,
            "router",
            "--",
            "lsp-set-addresses",
            &sp,
            "router",
            "--",
            "lsp-set-options",
            &sp,
            &router_port,
        ]);
    }
    for (sw, lsp, mac, ip, _) in ENDPOINTS {
        let addr = format!("{mac} {ip}");
        nb(&[
            "lsp-add",
            sw,
            lsp,
            "--",
            "lsp-set-addresses",
            lsp,
            &addr,
            "--",
            "lsp-set-port-security",
            lsp,
            &addr,
        ]);
    }
    for svc in ["x", "y"] {
        let (vip, backends) = lb_vips(svc);
        nb(&["lb-add", &format!("lb.{svc}"), &vip, &backends, "tcp"]);
        nb(&["ls-lb-add", &format!("cli.{svc}"), &format!("lb.{svc}")]);
    }
    let records: Vec<String> = DNS_RECORDS
        .iter()
        .map(|(n, a)| format!("\"{n}\"=\"{a}\""))
        .collect();
    let dns = nb(&[
        "create",
        "DNS",
        &format!("records={{{}}}", records.join(",")),
    ]);
    for (sw, ..) in SWITCHES {
        nb(&["add", "Logical_Switch", sw, "dns_records", dns.trim()]);
    }
    nb(&["pg-add", "wepoq.ns", "x-s1", "x-s2", "x-c1", "y-s1", "y-c1"]);
    nb(&["pg-add", "wepoq.svr.x.ns", "x-s1", "x-s2"]);
    nb(&["pg-add", "wepoq.cli.x.ns", "x-c1"]);
    nb(&["pg-add", "wepoq.svr.y.ns", "y-s1"]);
    nb(&["pg-add", "wepoq.cli.y.ns", "y-c1"]);
    for (dir, prio, m, action) in NS_ACLS {
        nb(&["acl-add", "wepoq.ns", dir, &prio.to_string(), m, action]);
    }
    for (svc, vip) in [("x", VIP_X), ("y", VIP_Y)] {
        add_allow_pair_nbctl(sb, svc, svc, vip);
    }
}

/// Each ACL hangs on the narrowest port group it matches: an ACL lands on every switch
/// holding a port of its group, and ovn-controller cannot parse a match naming a group
/// with no port on that switch.
fn add_allow_pair_nbctl(sb: &Sandbox, cli: &str, svc: &str, vip: &str) {
    let (from, to) = allow_pair(cli, svc, vip);
    let (cli_pg, svr_pg) = (format!("wepoq.cli.{cli}.ns"), format!("wepoq.svr.{svc}.ns"));
    sb.nbctl(&[
        "acl-add",
        &cli_pg,
        "from-lport",
        "1000",
        &from,
        "allow-related",
    ])
    .unwrap();
    sb.nbctl(&["acl-add", &svr_pg, "to-lport", "1000", &to, "allow-related"])
        .unwrap();
}

/// A uuid-name for a row: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn named(prefix: &str, name: &str) -> String {
    format!("{prefix}_{}", name.replace(['.', '-'], "_"))
}

fn refs(names: impl IntoIterator<Item = String>) -> Value {
    Value::set(names.into_iter().map(Atom::NamedUuid))
}

fn acl_row(direction: &str, priority: i64, m: &str, action: &str) -> Row {
    Row::new()
        .with("direction", direction)
        .with("priority", priority)
        .with("match", m)
        .with("action", action)
}

/// The same topology as [`build_with_nbctl`], as one transaction of typed operations:
/// children first, each referenced by uuid-name from the row that owns it.
fn topology_ops() -> Vec<Operation> {
    let mut ops = Vec::new();
    for svc in ["x", "y"] {
        let (vip, backends) = lb_vips(svc);
        let row = Row::new()
            .with("name", format!("lb.{svc}"))
            .with("vips", Value::map([(vip, backends)]))
            .with("protocol", "tcp");
        ops.push(Operation::insert_named(
            "Load_Balancer",
            row,
            &named("lb", svc),
        ));
    }
    let records = Row::new().with("records", Value::map(DNS_RECORDS));
    ops.push(Operation::insert_named("DNS", records, "dns"));
    for (sw, gw, mac) in SWITCHES {
        let (rp, sp) = (format!("rp-{sw}"), format!("sp-{sw}"));
        let lrp = Row::new()
            .with("name", rp.as_str())
            .with("mac", mac)
            .with("networks", Value::set([format!("{gw}/28")]));
        ops.push(Operation::insert_named(
            "Logical_Router_Port",
            lrp,
            &named("lrp", sw),
        ));
        let router_lsp = Row::new()
            .with("name", sp.as_str())
            .with("type", "router")
            .with("addresses", Value::set(["router"]))
            .with("options", Value::map([("router-port", rp.as_str())]));
        ops.push(Operation::insert_named(
            "Logical_Switch_Port",
            router_lsp,
            &named("lsp", &sp),
        ));
        let mut ports = vec![named("lsp", &sp)];
        for (_, lsp, mac, ip, _) in ENDPOINTS.iter().filter(|e| e.0 == sw) {
            let addr = format!("{mac} {ip}");
            let row = Row::new()
                .with("name", *lsp)
                .with("addresses", Value::set([addr.as_str()]))
                .with("port_security", Value::set([addr.as_str()]));
            ops.push(Operation::insert_named(
                "Logical_Switch_Port",
                row,
                &named("lsp", lsp),
            ));
            ports.push(named("lsp", lsp));
        }
        let lbs = sw.strip_prefix("cli.").map(|svc| named("lb", svc));
        let ls = Row::new()
            .with("name", sw)
            .with("ports", refs(ports))
            .with("load_balancer", refs(lbs))
            .with("dns_records", Value::named_uuid("dns"));
        ops.push(Operation::insert_named(
            "Logical_Switch",
            ls,
            &named("ls", sw),
        ));
    }
    let router_ports = SWITCHES.iter().map(|(sw, ..)| named("lrp", sw));
    let lr = Row::new()
        .with("name", "lr.ns")
        .with("ports", refs(router_ports));
    ops.push(Operation::insert("Logical_Router", lr));

    let mut ns_acls = Vec::new();
    for (i, (dir, prio, m, action)) in NS_ACLS.into_iter().enumerate() {
        let name = format!("acl_ns_{i}");
        ops.push(Operation::insert_named(
            "ACL",
            acl_row(dir, prio, m, action),
            &name,
        ));
        ns_acls.push(name);
    }
    let all_ports = ENDPOINTS.iter().map(|e| named("lsp", e.1));
    let pg = Row::new()
        .with("name", "wepoq.ns")
        .with("ports", refs(all_ports))
        .with("acls", refs(ns_acls));
    ops.push(Operation::insert("Port_Group", pg));
    for (svc, vip) in [("x", VIP_X), ("y", VIP_Y)] {
        let (from, to) = allow_pair(svc, svc, vip);
        for (side, dir, m) in [("cli", "from-lport", from), ("svr", "to-lport", to)] {
            let acl = format!("acl_{side}_{svc}");
            ops.push(Operation::insert_named(
                "ACL",
                acl_row(dir, 1000, &m, "allow-related"),
                &acl,
            ));
            let ports = ENDPOINTS
                .iter()
                .filter(|e| e.0 == format!("{side}.{svc}"))
                .map(|e| named("lsp", e.1));
            let pg = Row::new()
                .with("name", format!("wepoq.{side}.{svc}.ns"))
                .with("ports", refs(ports))
                .with("acls", refs([acl]));
            ops.push(Operation::insert("Port_Group", pg));
        }
    }
    ops
}

/// Endpoints, test scripts, servers: the part that is the same however the NB was
/// written.
fn start(sb: Sandbox) -> Probe {
    let mut endpoints = Vec::new();
    for (_, lsp, mac, ip, gw) in ENDPOINTS {
        endpoints.push(sb.add_endpoint(lsp, mac, &format!("{ip}/28"), gw).unwrap());
    }
    for (file, text) in [
        ("server.py", SERVER),
        ("client.py", CLIENT),
        ("udp_recv.py", UDP_RECV),
        ("udp_send.py", UDP_SEND),
    ] {
        std::fs::write(sb.dir().join(file), text).unwrap();
    }
    let probe = Probe { sb, endpoints };
    for (_, lsp, ..) in ENDPOINTS {
        probe.sb.wait_port_up(lsp, Duration::from_secs(30)).unwrap();
    }
    let server = probe.sb.dir().join("server.py");
    for lsp in ["x-s1", "x-s2", "y-s1"] {
        let argv = ["python3", server.to_str().unwrap(), lsp, PORT];
        probe.sb.spawn(probe.ep(lsp), &argv).unwrap();
    }
    probe.sync();
    probe
}

/// (a) to (c): DNS, load balancing through the VIP, and nothing undeclared.
fn check_declared_paths_only(p: &Probe) {
    // (a) OVN's DNS responder answers on the gateway address, for every service name.
    assert_eq!(p.dig("x-c1", "10.0.0.17", "vip.svr.x.ns.wepoq.net"), VIP_X);
    assert_eq!(p.dig("y-c1", "10.0.0.49", "vip.svr.y.ns.wepoq.net"), VIP_Y);
    assert_eq!(p.dig("y-c1", "10.0.0.49", "vip.svr.x.ns.wepoq.net"), VIP_X);

    // (b) TCP to the VIP reaches a server, and over several connections more than one.
    let mut seen = BTreeSet::new();
    for _ in 0..24 {
        seen.insert(p.reaches("x-c1", VIP_X));
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen, BTreeSet::from(["x-s1".to_owned(), "x-s2".to_owned()]));
    assert_eq!(p.reaches("y-c1", VIP_Y), "y-s1");
    // Only through the VIP: not to the servers' own addresses.
    assert!(
        p.blocked("x-c1", "10.0.0.2"),
        "x-c1 reached a server directly"
    );

    // (c) No path that was not declared: Y's client to X, X's client to Y, server to server.
    assert!(p.blocked("y-c1", VIP_X), "y-c1 reached X's VIP");
    assert!(p.blocked("y-c1", "10.0.0.2"), "y-c1 reached an X server");
    assert!(p.blocked("x-c1", VIP_Y), "x-c1 reached Y's VIP");
    assert!(p.blocked("x-c1", "10.0.0.34"), "x-c1 reached the Y server");
    assert!(p.blocked("x-s1", "10.0.0.3"), "servers reach each other");
    // DNS-looking datagrams between endpoints stay blocked (the udp.src == 53 hole).
    assert!(
        p.udp_delivered("x-s1", "4000", "x-s1", "127.0.0.1", "4001"),
        "the udp probe is broken"
    );
    assert!(
        !p.udp_delivered("x-c1", "53", "y-c1", "10.0.0.50", "53"),
        "udp 53 -> 53 crossed services"
    );
}

/// (d), after the call cli.y -> X was declared: exactly that path opened.
fn check_declared_call(p: &Probe) {
    let got = p.reaches("y-c1", VIP_X);
    assert!(got == "x-s1" || got == "x-s2", "{got}");
    assert!(
        p.blocked("y-c1", "10.0.0.2"),
        "the call opened a server's own address"
    );
    assert!(p.blocked("x-c1", VIP_Y), "x-c1 reached Y's VIP");
    assert!(p.blocked("y-s1", VIP_X), "the Y server reached X");
    assert!(p.blocked("x-s1", "10.0.0.3"), "servers reach each other");
}

/// northd and ovn-controller took every match.
fn check_logs(p: &Probe) {
    let northd = p.sb.log("northd");
    assert!(!northd.contains("|ERR|"), "northd errors:\n{northd}");
    let controller = p.sb.log("controller");
    assert!(
        !controller.contains("error parsing match"),
        "ovn-controller refused a match:\n{controller}"
    );
}

#[test]
fn topology_recipe_works_on_the_data_plane() {
    let Some(sb) = Sandbox::data_plane_or_skip() else {
        return;
    };
    build_with_nbctl(&sb);
    let p = start(sb);
    check_declared_paths_only(&p);

    // (d) Declaring the call cli.y -> X: the ACL pair, and X's LB on the caller's switch.
    add_allow_pair_nbctl(&p.sb, "y", "x", VIP_X);
    p.nbctl(&["ls-lb-add", "cli.y", "lb.x"]);
    p.sync();
    check_declared_call(&p);

    // The client's `--wait=hv`: nb_cfg bumped, hv_cfg catches up once ovn-controller
    // has the flows.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::connect(&p.sb.nb_unix_url(), Timeouts::default())
            .await
            .unwrap();
        let before = client.sync_hv(Duration::from_secs(30)).await.unwrap();
        p.nbctl(&["set", "Load_Balancer", "lb.y", "external_ids:touched=1"]);
        assert!(client.sync_hv(Duration::from_secs(30)).await.unwrap() > before);
    });
    check_logs(&p);
}

#[test]
fn one_client_transaction_builds_the_same_topology() {
    let Some(sb) = Sandbox::data_plane_or_skip() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(async {
        let client = Client::connect(&sb.nb_unix_url(), Timeouts::default())
            .await
            .unwrap();
        client.nb_schema().await.unwrap();
        let ops = topology_ops();
        let results = client.transact(NB_DB, &ops).await.unwrap();
        assert_eq!(results.len(), ops.len());
        client
    });
    // Non-root rows were kept: every port, router port and ACL hangs from its owner.
    let ports = sb
        .nbctl(&["--bare", "--columns=name", "list", "Logical_Switch_Port"])
        .unwrap();
    assert_eq!(
        ports.split_whitespace().count(),
        ENDPOINTS.len() + SWITCHES.len()
    );
    let acls = sb
        .nbctl(&["--bare", "--columns=_uuid", "list", "ACL"])
        .unwrap();
    assert_eq!(acls.split_whitespace().count(), NS_ACLS.len() + 4);
    let p = start(sb);
    check_declared_paths_only(&p);

    // (d) as apply would do it: new ACLs hung from existing port groups, X's LB added to
    // the caller's switch, all in one transaction, then wait for the chassis.
    rt.block_on(async {
        let lb = client
            .select(
                NB_DB,
                "Load_Balancer",
                vec![Condition::eq("name", "lb.x")],
                &[],
            )
            .await
            .unwrap();
        let lb_x = lb[0].uuid().unwrap().clone();
        let (from, to) = allow_pair("y", "x", VIP_X);
        let ops = [
            Operation::insert_named(
                "ACL",
                acl_row("from-lport", 1000, &from, "allow-related"),
                "call_from",
            ),
            Operation::mutate(
                "Port_Group",
                vec![Condition::eq("name", "wepoq.cli.y.ns")],
                vec![Mutation::insert("acls", Value::named_uuid("call_from"))],
            ),
            Operation::insert_named(
                "ACL",
                acl_row("to-lport", 1000, &to, "allow-related"),
                "call_to",
            ),
            Operation::mutate(
                "Port_Group",
                vec![Condition::eq("name", "wepoq.svr.x.ns")],
                vec![Mutation::insert("acls", Value::named_uuid("call_to"))],
            ),
            Operation::mutate(
                "Logical_Switch",
                vec![Condition::eq("name", "cli.y")],
                vec![Mutation::insert("load_balancer", Value::uuid(lb_x))],
            ),
        ];
        let results = client.transact(NB_DB, &ops).await.unwrap();
        assert_eq!(results[1].count(), Some(1));
        client.sync_hv(Duration::from_secs(30)).await.unwrap();
    });
    check_declared_call(&p);
    check_logs(&p);
}
