//! Proof that the topology the compiler will emit works on a real OVN data plane
//!
//! Built with ovn-nbctl on a data-plane sandbox, shaped like the compiler's output for
//! one namespace `ns`: one router; per service side (svr/cli) a switch with its own /28
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

use wepoq_reconciler::ovsdb::{Client, Timeouts};
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

fn build(sb: Sandbox) -> Probe {
    let nb = |args: &[&str]| sb.nbctl(args).unwrap();
    nb(&["lr-add", "lr.ns"]);
    // (switch, gateway, router port MAC)
    for (sw, gw, mac) in [
        ("svr.x", "10.0.0.1", "02:00:00:00:00:01"),
        ("cli.x", "10.0.0.17", "02:00:00:00:00:11"),
        ("svr.y", "10.0.0.33", "02:00:00:00:00:21"),
        ("cli.y", "10.0.0.49", "02:00:00:00:00:31"),
    ] {
        let (rp, sp) = (format!("rp-{sw}"), format!("sp-{sw}"));
        nb(&["ls-add", sw]);
        nb(&["lrp-add", "lr.ns", &rp, mac, &format!("{gw}/28")]);
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
            &format!("router-port={rp}"),
        ]);
    }
    // (switch, port, MAC, IP, gateway)
    let eps = [
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
    for (sw, lsp, mac, ip, _) in eps {
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
    nb(&[
        "lb-add",
        "lb.x",
        &format!("{VIP_X}:{PORT}"),
        &format!("10.0.0.2:{PORT},10.0.0.3:{PORT}"),
        "tcp",
    ]);
    nb(&[
        "lb-add",
        "lb.y",
        &format!("{VIP_Y}:{PORT}"),
        &format!("10.0.0.34:{PORT}"),
        "tcp",
    ]);
    nb(&["ls-lb-add", "cli.x", "lb.x"]);
    nb(&["ls-lb-add", "cli.y", "lb.y"]);
    let records = format!(
        "records={{\"vip.svr.x.ns.wepoq.net\"=\"{VIP_X}\",\"vip.svr.y.ns.wepoq.net\"=\"{VIP_Y}\"}}"
    );
    let dns = nb(&["create", "DNS", &records]);
    for sw in ["svr.x", "cli.x", "svr.y", "cli.y"] {
        nb(&["add", "Logical_Switch", sw, "dns_records", dns.trim()]);
    }
    nb(&["pg-add", "wepoq.ns", "x-s1", "x-s2", "x-c1", "y-s1", "y-c1"]);
    nb(&["pg-add", "wepoq.svr.x.ns", "x-s1", "x-s2"]);
    nb(&["pg-add", "wepoq.cli.x.ns", "x-c1"]);
    nb(&["pg-add", "wepoq.svr.y.ns", "y-s1"]);
    nb(&["pg-add", "wepoq.cli.y.ns", "y-c1"]);
    nb(&[
        "acl-add",
        "wepoq.ns",
        "from-lport",
        "100",
        "inport == @wepoq.ns && ip",
        "drop",
    ]);
    nb(&[
        "acl-add",
        "wepoq.ns",
        "to-lport",
        "100",
        "outport == @wepoq.ns && ip",
        "drop",
    ]);
    // DNS only to the gateways: OVN 23.03 lets `udp.src == 53` skip to-lport ACLs on a
    // switch with DNS records, so a plain `udp.dst == 53` allow would let any endpoint send
    // 53 -> 53 datagrams to any other.
    let dns_acl = "inport == @wepoq.ns && ip4.dst == {10.0.0.1, 10.0.0.17, 10.0.0.33, 10.0.0.49} && udp.dst == 53";
    nb(&[
        "acl-add",
        "wepoq.ns",
        "from-lport",
        "1000",
        dns_acl,
        "allow-related",
    ]);
    for (cli, svc, vip) in [("x", "x", VIP_X), ("y", "y", VIP_Y)] {
        add_allow_pair(&sb, cli, svc, vip);
    }
    let mut endpoints = Vec::new();
    for (_, lsp, mac, ip, gw) in eps {
        endpoints.push(sb.add_endpoint(lsp, mac, &format!("{ip}/28"), gw).unwrap());
    }
    std::fs::write(sb.dir().join("server.py"), SERVER).unwrap();
    std::fs::write(sb.dir().join("client.py"), CLIENT).unwrap();
    std::fs::write(sb.dir().join("udp_recv.py"), UDP_RECV).unwrap();
    std::fs::write(sb.dir().join("udp_send.py"), UDP_SEND).unwrap();
    let probe = Probe { sb, endpoints };
    for (_, lsp, ..) in eps {
        probe.sb.wait_port_up(lsp, Duration::from_secs(30)).unwrap();
    }
    let server = probe.sb.dir().join("server.py");
    for lsp in ["x-s1", "x-s2", "y-s1"] {
        probe
            .sb
            .spawn(
                probe.ep(lsp),
                &["python3", server.to_str().unwrap(), lsp, PORT],
            )
            .unwrap();
    }
    probe.sync();
    probe
}

/// The ACL pair that lets clients of `cli` call service `svc` through its VIP.
fn add_allow_pair(sb: &Sandbox, cli: &str, svc: &str, vip: &str) {
    // New connections only to the VIP; established ones (already DNATed by conntrack when
    // the ACL is re-evaluated) to the servers. A direct SYN to a server stays dropped.
    let from = format!(
        "inport == @wepoq.cli.{cli}.ns && tcp.dst == {PORT} && (ip4.dst == {vip} || (ct.est && ip4.dst == $wepoq.svr.{svc}.ns_ip4))"
    );
    let to = format!(
        "outport == @wepoq.svr.{svc}.ns && ip4.src == $wepoq.cli.{cli}.ns_ip4 && tcp.dst == {PORT}"
    );
    // Each ACL hangs on the narrowest port group it matches: an ACL lands on every switch
    // holding a port of its group, and ovn-controller cannot parse a match naming a group
    // with no port on that switch.
    sb.nbctl(&[
        "acl-add",
        &format!("wepoq.cli.{cli}.ns"),
        "from-lport",
        "1000",
        &from,
        "allow-related",
    ])
    .unwrap();
    sb.nbctl(&[
        "acl-add",
        &format!("wepoq.svr.{svc}.ns"),
        "to-lport",
        "1000",
        &to,
        "allow-related",
    ])
    .unwrap();
}

#[test]
fn topology_recipe_works_on_the_data_plane() {
    let Some(sb) = Sandbox::data_plane_or_skip() else {
        return;
    };
    let p = build(sb);

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

    // (d) Declaring the call cli.y -> X: the ACL pair, and X's LB on the caller's switch.
    add_allow_pair(&p.sb, "y", "x", VIP_X);
    p.nbctl(&["ls-lb-add", "cli.y", "lb.x"]);
    p.sync();
    let got = p.reaches("y-c1", VIP_X);
    assert!(got == "x-s1" || got == "x-s2", "{got}");
    // Exactly that path: the rest stays closed.
    assert!(p.blocked("x-c1", VIP_Y), "x-c1 reached Y's VIP");
    assert!(p.blocked("y-s1", VIP_X), "the Y server reached X");
    assert!(p.blocked("x-s1", "10.0.0.3"), "servers reach each other");

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

    // northd and ovn-controller took every match.
    let northd = p.sb.log("northd");
    assert!(!northd.contains("|ERR|"), "northd errors:\n{northd}");
    let controller = p.sb.log("controller");
    assert!(
        !controller.contains("error parsing match"),
        "ovn-controller refused a match:\n{controller}"
    );
}
