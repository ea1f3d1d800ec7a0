//! The end-to-end proof on a real OVN data plane: `wepoq apply` of examples/ovn-vote into a
//! sandboxed OVN (NB, SB, northd, ovs-vswitchd on the userspace datapath, ovn-controller),
//! endpoints in network namespaces bound to the compiled logical ports, and traffic through
//! what the compiler emitted: OVN's DNS, the load-balanced VIPs, the default deny and the
//! declared calls, then idempotence and a destroy that leaves foreign rows alone. A second
//! test runs the runtime's stub and warm workers on vote's servers and reaches them through
//! the VIP.
//!
//! Addresses, MACs, port names and gateways all come from the compiler (the example's lock),
//! never from constants here. Data-plane sandboxes are heavy: the tests take a lock and run
//! one at a time. On failure the NB, ACLs, logs and flows are printed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use wepoq_compiler::emit;
use wepoq_compiler::nb::{Atom, Row, Table, Value};
use wepoq_reconciler::sandbox::{Endpoint, Sandbox};

use crate::support::{compile_text, repo, temp_dir, without_containers};

const NS: &str = "ovn-vote.ns";
const DOMAIN: &str = "wepoq.net";

/// One data-plane sandbox at a time, across the tests of this module.
static SERIAL: Mutex<()> = Mutex::new(());

pub(crate) fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A TCP server that sends its name and closes.
const SERVER: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[2], int(sys.argv[3])))
s.listen(64)
while True:
    c, _ = s.accept()
    try:
        c.sendall((sys.argv[1] + "\n").encode())
    finally:
        c.close()
"#;

/// Connects with a timeout, optionally sends a payload, prints everything received until
/// close (or "ERR <kind>" when the connection fails).
const CLIENT: &str = r#"
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    if len(sys.argv) > 4:
        s.sendall(sys.argv[4].encode())
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    print(data.decode(errors="replace").strip())
except OSError as e:
    print("ERR", type(e).__name__)
"#;

fn fqdn(endpoint: &str) -> String {
    format!("{endpoint}.{NS}.{DOMAIN}")
}

fn port(endpoint: &str) -> String {
    format!("{endpoint}.{NS}")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What the compiler says about the spec in a directory.
struct Compiled {
    endpoints: Vec<emit::Endpoint>,
    runtime: Vec<emit::RuntimeUnit>,
    rows: Vec<Row>,
}

impl Compiled {
    fn of(dir: &Path) -> Compiled {
        let spec = std::fs::read_to_string(dir.join("wepoq.yaml")).unwrap();
        let lock = std::fs::read_to_string(dir.join("wepoq.lock")).ok();
        let mut compiled = compile_text(&spec, lock.as_deref())
            .unwrap_or_else(|d| panic!("the spec does not compile: {d:?}"));
        assert_eq!(compiled.namespaces.len(), 1);
        let ns = compiled.namespaces.remove(0);
        assert!(!ns.lock_changed, "the example's lock is not current");
        Compiled {
            endpoints: ns.endpoints,
            runtime: ns.runtime,
            rows: ns.rows,
        }
    }

    fn endpoint(&self, port: &str) -> &emit::Endpoint {
        self.endpoints
            .iter()
            .find(|e| e.port == port)
            .unwrap_or_else(|| {
                panic!(
                    "no endpoint {port} in {:?}",
                    self.endpoints.iter().map(|e| &e.port).collect::<Vec<_>>()
                )
            })
    }

    fn rows(&self, table: Table) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(move |r| r.key.table == table)
    }

    /// The DNS records wepoq emitted (every service's row): name -> address.
    fn records(&self) -> BTreeMap<String, String> {
        self.rows(Table::Dns)
            .flat_map(|dns| {
                let Some(Value::Map(map)) = dns.column("records") else {
                    panic!("DNS records: {:?}", dns.column("records"))
                };
                map.iter().map(|(k, v)| match (k, v) {
                    (Atom::String(k), Atom::String(v)) => (k.clone(), v.clone()),
                    other => panic!("record {other:?}"),
                })
            })
            .collect()
    }

    /// The VIP of a service, by its DNS name `vip.svr.<service>...`.
    fn vip(&self, service: &str) -> Ipv4Addr {
        let name = fqdn(&format!("vip.svr.{service}"));
        self.records()
            .get(&name)
            .unwrap_or_else(|| panic!("no record {name}"))
            .parse()
            .unwrap()
    }

    /// Every (switch, [(VIP:port, backends)]) of the load balancers on each switch.
    fn lb_vips(&self) -> Vec<(String, String, String)> {
        let mut vips_of = BTreeMap::new();
        for lb in self.rows(Table::LoadBalancer) {
            let Some(Value::Map(vips)) = lb.column("vips") else {
                continue;
            };
            let list: Vec<(String, String)> = vips
                .iter()
                .map(|(k, v)| match (k, v) {
                    (Atom::String(k), Atom::String(v)) => (k.clone(), v.clone()),
                    other => panic!("vip {other:?}"),
                })
                .collect();
            vips_of.insert(lb.key.name.clone(), list);
        }
        let mut out = Vec::new();
        for ls in self.rows(Table::LogicalSwitch) {
            let Some(Value::Set(lbs)) = ls.column("load_balancer") else {
                continue;
            };
            for lb in lbs.iter() {
                let Atom::Ref(key) = lb else {
                    panic!("load_balancer {lb:?}")
                };
                for (vip, backends) in &vips_of[&key.name] {
                    out.push((ls.key.name.clone(), vip.clone(), backends.clone()));
                }
            }
        }
        out
    }

    fn switches(&self) -> Vec<String> {
        self.rows(Table::LogicalSwitch)
            .map(|r| r.key.name.clone())
            .collect()
    }
}

/// A sandbox with the example applied by the `wepoq` binary, and some endpoints wired.
struct World {
    sb: Sandbox,
    dir: PathBuf,
    compiled: Compiled,
    netns: BTreeMap<String, Endpoint>,
    started: Instant,
}

impl World {
    /// A data-plane sandbox (or None when this machine cannot run one and CI is not set) and a
    /// copy of examples/ovn-vote in a temp dir.
    fn new(tag: &str) -> Option<World> {
        World::of_example(tag, "ovn-vote")
    }

    fn of_example(tag: &str, name: &str) -> Option<World> {
        World::of_variant(tag, name, |spec| spec.to_owned())
    }

    /// The example `name` with its spec edited by `edit` (after its containers are left
    /// out); when the edit needs new lock entries (e.g. external clients' tags), the lock
    /// the compiler writes is kept, so addresses already locked stay.
    fn of_variant(tag: &str, name: &str, edit: impl Fn(&str) -> String) -> Option<World> {
        let started = Instant::now();
        let sb = Sandbox::data_plane_or_skip()?;
        let dir = temp_dir(tag);
        // Endpoints here are network namespaces the test wires itself: the example's
        // containers (tests/it/containers.rs runs those) are left out, addresses unchanged.
        let example = repo().join("examples").join(name);
        let spec = edit(&without_containers(
            &std::fs::read_to_string(example.join("wepoq.yaml")).unwrap(),
        ));
        std::fs::write(dir.join("wepoq.yaml"), &spec).unwrap();
        let lock = std::fs::read_to_string(example.join("wepoq.lock")).unwrap();
        let lock = match compile_text(&spec, Some(&lock)) {
            Ok(c) if c.namespaces.len() == 1 && c.namespaces[0].lock_changed => {
                c.namespaces[0].lock_text.clone()
            }
            _ => lock,
        };
        std::fs::write(dir.join("wepoq.lock"), lock).unwrap();
        for (file, body) in [("server.py", SERVER), ("client.py", CLIENT)] {
            std::fs::write(sb.dir().join(file), body).unwrap();
        }
        let compiled = Compiled::of(&dir);
        let world = World {
            sb,
            dir,
            compiled,
            netns: BTreeMap::new(),
            started,
        };
        world.step("sandbox up");
        Some(world)
    }

    fn step(&self, what: &str) {
        eprintln!(
            "[dataplane {:>6.2}s] {what}",
            self.started.elapsed().as_secs_f64()
        );
    }

    fn nbctl(&self, args: &[&str]) -> String {
        self.sb.nbctl(args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn sbctl(&self, args: &[&str]) -> String {
        let sb = self.sb.sb_sock().expect("a data-plane sandbox");
        let out = Command::new("ovn-sbctl")
            .arg(format!("--db=unix:{}", sb.display()))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ovn-sbctl {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Runs the `wepoq` binary in the spec's directory against the sandbox's NB.
    fn wepoq(&self, args: &[&str]) -> Output {
        let url = self.sb.nb_unix_url();
        let mut argv: Vec<&str> = args.to_vec();
        argv.extend(["--db", &url, "--auto-approve"]);
        let out = crate::support::wepoq_nb_only()
            .args(&argv)
            .current_dir(&self.dir)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        eprintln!(
            "$ wepoq {} -> {:?}\n{}{}",
            argv.join(" "),
            out.status.code(),
            tail(&text(&out.stdout), 40),
            tail(&text(&out.stderr), 40)
        );
        out
    }

    /// `wepoq apply --wait hv --detailed-exitcode`; returns the exit code (0 nothing changed,
    /// 2 changed).
    fn apply(&self) -> i32 {
        let out = self.wepoq(&[
            "apply",
            "--wait",
            "hv",
            "--wait-timeout",
            "30s",
            "--detailed-exitcode",
        ]);
        let code = out.status.code().unwrap_or(-1);
        assert!(
            code == 0 || code == 2,
            "wepoq apply failed ({code}):\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        code
    }

    /// Puts each of `ports` (endpoints of the compiled spec) in a network namespace with the
    /// compiled MAC, address and gateway, and waits until ovn-controller has bound them all.
    fn wire(&mut self, ports: &[String]) {
        for p in ports {
            let e = self.compiled.endpoint(p);
            let ns = self
                .sb
                .plug(e)
                .unwrap_or_else(|err| panic!("endpoint {p}: {err}"));
            self.netns.insert(p.clone(), ns);
        }
        for p in ports {
            self.sb
                .wait_port_up(p, Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("{p} never came up: {e}"));
        }
        self.sync();
        self.step(&format!("{} endpoints bound", ports.len()));
    }

    fn sync(&self) {
        self.nbctl(&["--wait=hv", "--timeout=30", "sync"]);
    }

    fn ns(&self, port: &str) -> &Endpoint {
        self.netns
            .get(port)
            .unwrap_or_else(|| panic!("{port} is not wired"))
    }

    fn ip(&self, port: &str) -> Ipv4Addr {
        self.compiled.endpoint(port).ip
    }

    /// A TCP server on `port`'s address that answers its own endpoint name.
    fn serve(&self, port: &str, tcp: u16) {
        let server = self.sb.dir().join("server.py");
        let ip = self.ip(port).to_string();
        self.sb
            .spawn(
                self.ns(port),
                &[
                    "python3",
                    server.to_str().unwrap(),
                    port,
                    &ip,
                    &tcp.to_string(),
                ],
            )
            .unwrap();
    }

    fn exec(&self, port: &str, argv: &[&str]) -> Output {
        self.sb.exec(self.ns(port), argv).unwrap()
    }

    /// What came back from `ip:tcp`, or "ERR ..." when the connection failed within
    /// `timeout_s` seconds.
    fn connect(
        &self,
        from: &str,
        ip: Ipv4Addr,
        tcp: u16,
        timeout_s: &str,
        payload: Option<&str>,
    ) -> String {
        let client = self.sb.dir().join("client.py");
        let (ip, tcp) = (ip.to_string(), tcp.to_string());
        let mut argv = vec![
            "timeout",
            "10",
            "python3",
            client.to_str().unwrap(),
            &ip,
            &tcp,
            timeout_s,
        ];
        argv.extend(payload);
        let out = self.exec(from, &argv);
        let got = text(&out.stdout).trim().to_owned();
        if got.is_empty() {
            format!(
                "ERR no output ({}): {}",
                out.status,
                text(&out.stderr).trim()
            )
        } else {
            got
        }
    }

    /// Positive checks retry a little: flows may still be settling.
    fn reaches(&self, from: &str, ip: Ipv4Addr, tcp: u16) -> String {
        self.reaches_with(from, ip, tcp, None)
    }

    fn reaches_with(&self, from: &str, ip: Ipv4Addr, tcp: u16, payload: Option<&str>) -> String {
        let mut last = String::new();
        for _ in 0..5 {
            last = self.connect(from, ip, tcp, "2", payload);
            if !last.starts_with("ERR") && !last.is_empty() {
                return last;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{from} cannot reach {ip}:{tcp}: {last}")
    }

    /// A negative check: the connection must fail within a second.
    fn assert_blocked(&self, from: &str, ip: Ipv4Addr, tcp: u16, what: &str) {
        let got = self.connect(from, ip, tcp, "1", None);
        assert!(
            got.starts_with("ERR"),
            "{what}: {from} reached {ip}:{tcp} and got {got:?}"
        );
    }

    fn dig(&self, from: &str, server: Ipv4Addr, name: &str) -> String {
        let at = format!("@{server}");
        let out = self.exec(
            from,
            &["dig", "+noedns", "+short", "+time=2", "+tries=2", &at, name],
        );
        text(&out.stdout).trim().to_owned()
    }

    /// Everything in the NB except NB_Global (whose counters move), to compare before/after.
    fn nb_snapshot(&self) -> String {
        let mut out = String::new();
        for table in NB_TABLES {
            out.push_str(&format!("== {table}\n{}", self.nbctl(&["list", table])));
        }
        out
    }

    /// The logical flows, by datapath name.
    fn lflows(&self) -> BTreeMap<String, String> {
        let mut by_dp: BTreeMap<String, String> = BTreeMap::new();
        let mut current = String::new();
        for line in self.sbctl(&["lflow-list"]).lines() {
            if let Some(rest) = line.strip_prefix("Datapath: \"") {
                current = rest.split('"').next().unwrap_or_default().to_owned();
            }
            let entry = by_dp.entry(current.clone()).or_default();
            entry.push_str(line);
            entry.push('\n');
        }
        by_dp
    }

    fn diagnostics(&self) {
        eprintln!(
            "==== dataplane failure diagnostics (sandbox {}) ====",
            self.sb.dir().display()
        );
        for args in [
            &["show"][..],
            &["list", "ACL"],
            &["list", "Port_Group"],
            &["list", "Load_Balancer"],
            &["list", "DNS"],
        ] {
            match self.sb.nbctl(args) {
                Ok(out) => eprintln!("---- ovn-nbctl {}\n{}", args.join(" "), tail(&out, 200)),
                Err(e) => eprintln!("---- ovn-nbctl {}: {e}", args.join(" ")),
            }
        }
        if let Some(sb) = self.sb.sb_sock() {
            for args in [&["show"][..], &["lflow-list"]] {
                if let Ok(out) = Command::new("ovn-sbctl")
                    .arg(format!("--db=unix:{}", sb.display()))
                    .args(args)
                    .output()
                {
                    let body = text(&out.stdout);
                    // The ACL and LB stages are what matter; all of lflow-list is thousands of lines.
                    let body = if args[0] == "lflow-list" {
                        body.lines()
                            .filter(|l| {
                                l.starts_with("Datapath")
                                    || ["acl", "_lb", "dns", "pre_"].iter().any(|s| l.contains(s))
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    } else {
                        body
                    };
                    eprintln!("---- ovn-sbctl {}\n{}", args.join(" "), tail(&body, 400));
                }
            }
        }
        for daemon in ["northd", "controller"] {
            eprintln!(
                "---- {daemon}.log (tail)\n{}",
                tail(&self.sb.log(daemon), 60)
            );
        }
        let mut stub_logs: Vec<PathBuf> = std::fs::read_dir(self.sb.dir())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        stub_logs.retain(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy().starts_with("stub-") && n.to_string_lossy().ends_with(".log")
            })
        });
        stub_logs.sort();
        for log in stub_logs {
            eprintln!(
                "---- {} (tail)\n{}",
                log.display(),
                tail(&std::fs::read_to_string(&log).unwrap_or_default(), 40)
            );
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.diagnostics();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        self.step("done");
    }
}

const NB_TABLES: [&str; 15] = [
    "Logical_Switch",
    "Logical_Switch_Port",
    "Logical_Router",
    "Logical_Router_Port",
    "Logical_Router_Static_Route",
    "Logical_Router_Policy",
    "NAT",
    "ACL",
    "Port_Group",
    "Address_Set",
    "Load_Balancer",
    "Load_Balancer_Group",
    "DNS",
    "DHCP_Options",
    "QoS",
];

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    let from = all.len().saturating_sub(lines);
    let mut out = all[from..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// 1. northd and ovn-controller took everything, and there are flows for every switch, every
///    VIP on the switches that carry its load balancer, and the DNS records.
fn check_accepted(w: &World) {
    let northd = w.sb.log("northd");
    let errs: Vec<&str> = northd.lines().filter(|l| l.contains("|ERR|")).collect();
    assert!(errs.is_empty(), "ovn-northd errors:\n{}", errs.join("\n"));
    let controller = w.sb.log("controller");
    let bad: Vec<&str> = controller
        .lines()
        .filter(|l| {
            l.contains("|ERR|") || l.contains("Syntax error") || l.contains("error parsing")
        })
        .collect();
    assert!(
        bad.is_empty(),
        "ovn-controller refused matches:\n{}",
        bad.join("\n")
    );

    let flows = w.lflows();
    for switch in w.compiled.switches() {
        let Some(f) = flows.get(&switch) else {
            panic!(
                "no logical flows for switch {switch}; datapaths: {:?}",
                flows.keys().collect::<Vec<_>>()
            )
        };
        assert!(f.contains("dns_lookup()"), "no DNS lookup flow on {switch}");
    }
    // The DNS records reached the SB, whose DNS table ovn-controller answers from.
    let sb_dns = w.sbctl(&["--bare", "--columns=records", "list", "DNS"]);
    for (name, addr) in w.compiled.records() {
        assert!(
            sb_dns.contains(&format!("{name}={addr}")),
            "record {name}={addr} is not in the SB: {sb_dns}"
        );
    }
    let lb_vips = w.compiled.lb_vips();
    assert!(!lb_vips.is_empty());
    for (switch, vip, backends) in &lb_vips {
        let (ip, tcp) = vip.split_once(':').unwrap();
        let f = &flows[switch];
        let want = format!("ip4.dst == {ip} && tcp.dst == {tcp}");
        assert!(
            f.contains(&want),
            "no flow matching `{want}` (VIP {vip}) on {switch}"
        );
        let action = format!("backends={backends})");
        assert!(
            f.contains(&action),
            "no flow balancing {vip} over `{action}` on {switch}"
        );
    }
    // Every VIP has its switches; result's is on result's client switch.
    let result_vip = w.compiled.vip("result");
    assert!(
        lb_vips
            .iter()
            .any(|(s, v, _)| s == &format!("cli.result.{NS}") && v == &format!("{result_vip}:80")),
        "result's VIP is not on its client switch: {lb_vips:?}"
    );
}

/// Creates rows wepoq does not own: a switch with a port and an ACL, a port group.
fn create_foreign_rows(w: &World) {
    w.nbctl(&["ls-add", "foreign-sw"]);
    w.nbctl(&[
        "lsp-add",
        "foreign-sw",
        "foreign-p1",
        "--",
        "lsp-set-addresses",
        "foreign-p1",
        "02:00:00:00:99:01 192.168.99.1",
    ]);
    w.nbctl(&[
        "acl-add",
        "foreign-sw",
        "to-lport",
        "900",
        "outport == \"foreign-p1\" && ip4.src == 192.168.99.0/24",
        "allow",
    ]);
    w.nbctl(&["pg-add", "foreign_pg", "foreign-p1"]);
    w.nbctl(&[
        "acl-add",
        "foreign_pg",
        "from-lport",
        "901",
        "inport == @foreign_pg && ip4",
        "drop",
    ]);
}

#[test]
fn ovn_vote_on_a_real_data_plane() {
    let _serial = serial();
    let Some(mut w) = World::new("dataplane") else {
        return;
    };

    // Foreign rows first: apply must not touch them, destroy must leave exactly them.
    create_foreign_rows(&w);
    let before = w.nb_snapshot();

    assert_eq!(w.apply(), 2, "the first apply must report changes");
    w.step("applied");

    let c_result = port("c1.cli.result");
    let c_vote = port("c1.cli.vote");
    let result_servers: Vec<String> = (1..=3).map(|i| port(&format!("s{i}.svr.result"))).collect();
    let s_db = port("s1.svr.db");
    let mut wired = vec![c_result.clone(), c_vote.clone(), s_db.clone()];
    wired.extend(result_servers.iter().cloned());
    w.wire(&wired);
    for s in &result_servers {
        w.serve(s, 80);
    }
    w.serve(&s_db, 5432);

    // 1. Accepted by northd and ovn-controller; flows for switches, VIPs, DNS.
    check_accepted(&w);
    w.step("flows checked");

    // 2. OVN's DNS answers on the client's gateway with the VIP; TCP to VIP:80 is balanced.
    let result_vip = w.compiled.vip("result");
    let db_vip = w.compiled.vip("db");
    let gw = w.compiled.endpoint(&c_result).gateway;
    let name = fqdn("vip.svr.result");
    assert_eq!(
        w.dig(&c_result, gw, &name),
        result_vip.to_string(),
        "dig @{gw} {name} from {c_result}"
    );
    // An endpoint resolves its own service's names and those it may call, nothing else.
    let vote_gw = w.compiled.endpoint(&c_vote).gateway;
    assert_eq!(
        w.dig(&c_vote, vote_gw, &fqdn("vip.svr.vote")),
        w.compiled.vip("vote").to_string(),
        "vote's client resolves its own service"
    );
    let undeclared = w.dig(&c_vote, vote_gw, &name);
    assert!(
        !undeclared.contains(&result_vip.to_string()),
        "vote's client resolved {name} before declaring the call: {undeclared:?}"
    );
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        let got = w.reaches(&c_result, result_vip, 80);
        assert!(
            result_servers.contains(&got),
            "an answer that is not a result server: {got:?}"
        );
        seen.insert(got);
        if seen.len() == 3 {
            break;
        }
    }
    assert!(
        seen.len() > 1,
        "30 connections to {result_vip}:80 all reached {seen:?}"
    );
    w.assert_blocked(
        &c_result,
        w.ip(&result_servers[0]),
        80,
        "a client reaches a server only through the VIP",
    );
    // The control for 3.: db's listener answers a declared caller (result's servers call db).
    assert_eq!(
        w.reaches(&result_servers[0], db_vip, 5432),
        s_db,
        "result's server calls db"
    );
    w.step(&format!("DNS and load balancing: {seen:?}"));

    // 3. vote's client has not declared result: neither the VIP nor a server answers.
    w.assert_blocked(
        &c_vote,
        result_vip,
        80,
        "vote's client did not declare result",
    );
    w.assert_blocked(
        &c_vote,
        w.ip(&result_servers[0]),
        80,
        "vote's client did not declare result",
    );
    w.assert_blocked(&c_vote, db_vip, 5432, "vote's client did not declare db");

    // ... then it declares `calls: [result]`.
    let spec_path = w.dir.join("wepoq.yaml");
    let spec = std::fs::read_to_string(&spec_path).unwrap();
    let old = "        cli:\n          replicas: 4\n";
    assert_eq!(
        spec.matches(old).count(),
        1,
        "vote's client side moved in the example:\n{spec}"
    );
    std::fs::write(
        &spec_path,
        spec.replace(
            old,
            "        cli:\n          replicas: 4\n          calls: [result]\n",
        ),
    )
    .unwrap();
    w.compiled = Compiled::of(&w.dir);
    assert_eq!(w.apply(), 2, "declaring a call must change the NB");
    w.step("re-applied with vote's clients calling result");
    assert_eq!(
        w.dig(&c_vote, vote_gw, &name),
        result_vip.to_string(),
        "a declared call makes the name resolvable"
    );
    let got = w.reaches(&c_vote, result_vip, 80);
    assert!(
        result_servers.contains(&got),
        "vote's client reached {got:?}"
    );
    w.assert_blocked(
        &c_vote,
        w.ip(&result_servers[0]),
        80,
        "the call opened a server's own address",
    );
    w.assert_blocked(&c_vote, db_vip, 5432, "vote's client did not declare db");
    w.assert_blocked(
        &c_vote,
        w.ip(&s_db),
        5432,
        "vote's client did not declare db",
    );
    assert_eq!(
        w.reaches(&result_servers[0], db_vip, 5432),
        s_db,
        "db still answers its callers"
    );
    check_accepted(&w);

    // 4. Idempotent, and destroy leaves exactly the foreign rows.
    assert_eq!(w.apply(), 0, "a second apply must change nothing");
    let out = w.wepoq(&["destroy"]);
    assert!(
        out.status.success(),
        "wepoq destroy failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let after = w.nb_snapshot();
    if after != before {
        let diff = similar_lines(&before, &after);
        panic!("destroy did not restore the NB to its foreign rows:\n{diff}");
    }
    assert!(
        !after.contains("wepoq.net/"),
        "rows marked by wepoq remain:\n{after}"
    );
    assert!(
        after.contains("foreign-sw") && after.contains("foreign_pg"),
        "the foreign rows are gone:\n{after}"
    );
    w.step("destroyed");
}

/// Lines only in one of the two texts, marked - and +.
fn similar_lines(before: &str, after: &str) -> String {
    let b: BTreeSet<&str> = before.lines().collect();
    let a: BTreeSet<&str> = after.lines().collect();
    let mut out = String::new();
    for l in b.difference(&a) {
        out.push_str(&format!("- {l}\n"));
    }
    for l in a.difference(&b) {
        out.push_str(&format!("+ {l}\n"));
    }
    out
}

/// 5. The runtime: the stub on each of vote's servers (listening where the compiled runtime
///    unit says), warm workers behind it, and a client of result reaching them through the VIP.
#[test]
fn runtime_stub_behind_the_vip() {
    let _serial = serial();
    let Some(mut w) = World::new("dataplane-rt") else {
        return;
    };
    assert_eq!(w.apply(), 2);
    let c_vote = port("c1.cli.vote");
    let units: Vec<emit::RuntimeUnit> = w
        .compiled
        .runtime
        .iter()
        .filter(|u| u.port.ends_with(&format!(".svr.vote.{NS}")))
        .cloned()
        .collect();
    assert_eq!(
        units.len(),
        2,
        "vote's two servers have runtime units: {:?}",
        w.compiled.runtime
    );
    let mut wired: Vec<String> = units.iter().map(|u| u.port.clone()).collect();
    wired.push(c_vote.clone());
    w.wire(&wired);

    let bin = env!("CARGO_BIN_EXE_wepoq");
    for unit in &units {
        let mut argv: Vec<String> = vec![bin.into(), "stub".into()];
        for listen in &unit.listen {
            let addr = listen
                .strip_suffix("/tcp")
                .unwrap_or_else(|| panic!("a tcp listen address: {listen}"));
            argv.extend(["--listen".into(), addr.to_owned()]);
        }
        let socket_dir =
            w.sb.dir()
                .join(format!("stub-{}", unit.port.split('.').next().unwrap()));
        argv.extend([
            "--fqdn".into(),
            unit.endpoint.clone(),
            "--protocol".into(),
            "http".into(),
            "--socket-dir".into(),
            socket_dir.display().to_string(),
            "--min-workers".into(),
            "1".into(),
            "--max-workers".into(),
            unit.settings.max_workers.max(1).to_string(),
            "--".into(),
            bin.into(),
            "example-worker".into(),
            "--mode".into(),
            "http".into(),
        ]);
        // Through sh only to keep the stub's output for the diagnostics; exec keeps the pid,
        // so the sandbox still kills the stub itself (and its workers die with it).
        let log = w.sb.dir().join(format!("stub-{}.log", unit.port));
        let redirect = format!("exec \"$0\" \"$@\" >>'{}' 2>&1", log.display());
        let mut sh: Vec<&str> = vec!["sh", "-c", &redirect];
        sh.extend(argv.iter().map(String::as_str));
        w.sb.spawn(w.ns(&unit.port), &sh).unwrap();
    }
    w.step("stubs started");

    let vip = w.compiled.vip("vote");
    let client_ip = w.ip(&c_vote);
    let fqdns: Vec<&str> = units.iter().map(|u| u.endpoint.as_str()).collect();
    let request = "GET / HTTP/1.0\r\nHost: vote\r\n\r\n";
    let mut seen = BTreeSet::new();
    for _ in 0..12 {
        // A cold start may still be under way on the first connections: retry.
        let reply = w.reaches_with(&c_vote, vip, 80, Some(request));
        assert!(
            reply.starts_with("HTTP/1.") && reply.contains(" 200 "),
            "not a worker's HTTP answer: {reply:?}"
        );
        assert!(
            reply.contains("\"worker\":"),
            "no worker in the reply: {reply:?}"
        );
        let served = fqdns
            .iter()
            .find(|f| reply.contains(&format!("\"fqdn\":\"{f}\"")));
        let Some(served) = served else {
            panic!("the reply names none of vote's servers {fqdns:?}: {reply:?}")
        };
        // The stub hands over the client's own socket: the worker sees the client's address.
        assert!(
            reply.contains(&format!("\"remote\":\"{client_ip}:")),
            "the worker did not see the client {client_ip}: {reply:?}"
        );
        seen.insert(*served);
        if seen.len() > 1 {
            break;
        }
    }
    assert!(seen.len() > 1, "every connection went to {seen:?}");
    w.step(&format!("stub workers answered through the VIP: {seen:?}"));
}

/// Peer-to-peer (seed 002): a room's players reach each other by name, and nobody else
/// reaches them (another room's player, the app's client), nor do they reach anyone else.
#[test]
fn roominator_room_players_are_peers_and_only_peers() {
    let _serial = serial();
    let Some(mut w) = World::of_example("dataplane-peers", "roominator") else {
        return;
    };
    assert_eq!(w.apply(), 2);
    let p = |name: &str| format!("{name}.roominator.ns");
    let (r1c1, r1c2, r2c1, app_c1) = (
        p("c1.cli.ctl.room1"),
        p("c2.cli.ctl.room1"),
        p("c1.cli.ctl.room2"),
        p("c1.cli.ctl"),
    );
    w.wire(&[r1c1.clone(), r1c2.clone(), r2c1.clone(), app_c1.clone()]);
    for player in [&r1c2, &r2c1] {
        w.serve(player, 7100);
    }
    w.step("wired and serving");
    let gw = w.compiled.endpoint(&r1c1).gateway;
    let peer_name = format!("{r1c2}.wepoq.net");
    assert_eq!(
        w.dig(&r1c1, gw, &peer_name),
        w.ip(&r1c2).to_string(),
        "a player resolves its peer"
    );
    assert_eq!(
        w.reaches(&r1c1, w.ip(&r1c2), 7100),
        r1c2,
        "a player reaches its peer"
    );
    w.assert_blocked(&r2c1, w.ip(&r1c2), 7100, "another room's player");
    w.assert_blocked(&app_c1, w.ip(&r1c2), 7100, "the app controller's client");
    w.assert_blocked(&r1c1, w.ip(&r2c1), 7100, "a player of another room");
    w.step("peers reach each other and nobody else");
}

mod gateway;
