//! Reconciler benchmark: compiled namespaces applied to a real NB ovsdb-server, with
//! ovn-nbctl creating the same ports in the same run as the anchor.
//!
//! Run: `cargo bench -p wepoq-reconciler --bench reconcile`. Targets (issue 3): apply 10k
//! endpoints into an empty NB in at most 1 s; a no-change plan against 50k owned rows in at
//! most 1 s from a fresh connection; changing one service in that NB, plan + apply, in at
//! most 100 ms.

use std::process::Command;
use std::time::{Duration, Instant};

use wepoq_compiler::{compile, Input, Sources};
use wepoq_reconciler::ovsdb::Timeouts;
use wepoq_reconciler::reconcile::{Desired, Options, Reconciler};
use wepoq_reconciler::sandbox::{require, Component, Sandbox};

const NBCTL_SAMPLE: usize = 300;

// The same allocator as the `wepoq` binary: glibc's malloc spends a third of the time
// consolidating free lists when millions of small rows are freed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `services` services of 20 endpoints (4 servers, 16 clients); `bump` gives one service a
/// fifth server (the "change one service" edit).
fn spec(services: usize, bump: Option<usize>) -> String {
    let mut s = String::from("namespace: bench\nnetwork: 10.0.0.0/8\napps:\n");
    for app in 0..services.div_ceil(20) {
        s.push_str(&format!("  app{app}:\n    services:\n"));
        for i in 0..20.min(services - app * 20) {
            let replicas = if bump == Some(app * 20 + i) { 5 } else { 4 };
            s.push_str(&format!("      svc{i}:\n        svr: {{replicas: {replicas}, ports: [80/tcp]}}\n        cli: {{replicas: 16}}\n"));
        }
    }
    s
}

/// Compiles with the given lockfile; returns the desired rows, the new lockfile, the endpoint
/// ports (for the anchor) and the compile time.
fn compiled(text: &str, lock: Option<&str>) -> (Desired, String, Vec<(String, String, String)>, Duration) {
    let mut sources = Sources::new();
    let spec = sources.add("wepoq.yaml", text);
    let lock = lock.map(|l| sources.add("wepoq.lock", l));
    let start = Instant::now();
    let c = compile(&sources, &[Input { spec, lock }]).expect("generated specs compile");
    let took = start.elapsed();
    let ns = &c.namespaces[0];
    let ports = ns.endpoints.iter().map(|e| (ns.namespace.name.clone() + "-" + &e.port, e.mac.clone(), e.ip.to_string())).collect();
    let desired = Desired { spec_hash: c.spec_hash.clone(), namespaces: vec![(ns.owner(), ns.rows.clone())] };
    (desired, ns.lock_text.clone(), ports, took)
}

fn rows(desired: &Desired) -> usize {
    desired.namespaces.iter().map(|(_, r)| r.len()).sum()
}

async fn reconcile_fresh(url: &str, desired: &Desired) -> (Duration, usize) {
    let start = Instant::now();
    let reconciler = Reconciler::connect(url, Timeouts::default()).await.expect("connect");
    let (_, applied) = reconciler.reconcile(desired, Options::default(), |_, _| true).await.expect("reconcile");
    (start.elapsed(), applied.operations)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn nbctl(sandbox: &Sandbox, args: &[String]) {
    let out = Command::new("ovn-nbctl").arg(format!("--db={}", sandbox.nb_unix_url())).args(args).output().expect("ovn-nbctl runs");
    assert!(out.status.success(), "ovn-nbctl: {}", String::from_utf8_lossy(&out.stderr));
}

/// The anchor: ovn-nbctl creating the same ports, one process per command (the first
/// NBCTL_SAMPLE timed and extrapolated, which flatters it: each process reads the whole NB
/// first), and all of them in one ovn-nbctl process (one transaction).
fn anchor(ports: &[(String, String, String)]) -> (Duration, Duration) {
    let per_command = {
        let sandbox = Sandbox::nb_only().expect("NB sandbox");
        nbctl(&sandbox, &["ls-add".into(), "anchor".into()]);
        let start = Instant::now();
        for (name, mac, ip) in ports.iter().take(NBCTL_SAMPLE) {
            nbctl(&sandbox, &["lsp-add".into(), "anchor".into(), name.clone(), "--".into(), "lsp-set-addresses".into(), name.clone(), format!("{mac} {ip}")]);
        }
        start.elapsed().mul_f64(ports.len() as f64 / NBCTL_SAMPLE.min(ports.len()) as f64)
    };
    let one_process = {
        let sandbox = Sandbox::nb_only().expect("NB sandbox");
        let mut args: Vec<String> = vec!["ls-add".into(), "anchor".into()];
        for (name, mac, ip) in ports {
            args.extend(["--".into(), "lsp-add".into(), "anchor".into(), name.clone(), "--".into(), "lsp-set-addresses".into(), name.clone(), format!("{mac} {ip}")]);
        }
        let start = Instant::now();
        nbctl(&sandbox, &args);
        start.elapsed()
    };
    (per_command, one_process)
}

/// The anchor for observing: ovsdb-server answering one select of the owned ports (the
/// biggest table), timed with its own client, so the server's share of an observation shows.
fn server_select(url: &str) -> (Duration, usize) {
    let columns = r#"["_uuid","name","addresses","port_security","type","options","external_ids"]"#;
    let query = format!(
        r#"["OVN_Northbound",{{"op":"select","table":"Logical_Switch_Port","where":[["external_ids","includes",["map",[["wepoq.net/owner","bench.wepoq.net"]]]]],"columns":{columns}}}]"#
    );
    let start = Instant::now();
    let out = Command::new("ovsdb-client").args(["transact", url, &query]).output().expect("ovsdb-client runs");
    assert!(out.status.success(), "ovsdb-client: {}", String::from_utf8_lossy(&out.stderr));
    (start.elapsed(), out.stdout.len())
}

fn main() {
    if require(Component::NbServer).is_none() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    println!("wepoq reconcile benchmark (release build; a fresh NB ovsdb-server per scenario)\n");

    // 1. 10k endpoints into an empty NB.
    let (desired, _, ports, compile_10k) = compiled(&spec(500, None), None);
    let sandbox = Sandbox::nb_only().expect("NB sandbox");
    let (apply_10k, ops_10k) = runtime.block_on(reconcile_fresh(&sandbox.nb_unix_url(), &desired));
    let (again_10k, again_ops) = runtime.block_on(reconcile_fresh(&sandbox.nb_unix_url(), &desired));
    drop(sandbox);
    let (per_command, one_process) = anchor(&ports);
    println!("1. apply 10,000 endpoints ({} NB rows) into an empty NB                target <= 1 s", rows(&desired));
    println!("   compile                                  {:>12}", ms(compile_10k));
    println!("   wepoq: connect + observe + plan + apply  {:>12}   ({ops_10k} operations, one transaction)", ms(apply_10k));
    println!("   wepoq: the same again (no change)        {:>12}   ({again_ops} operations)", ms(again_10k));
    println!("   anchor ovn-nbctl, one process per port   {:>12}   (first {NBCTL_SAMPLE} timed, extrapolated; ports only)", ms(per_command));
    println!("   anchor ovn-nbctl, all in one process     {:>12}   (one transaction; ports only)", ms(one_process));

    // 2 and 3. An NB holding ~50k owned rows.
    let services = 1520;
    let (big, lock, _, _) = compiled(&spec(services, None), None);
    let sandbox = Sandbox::nb_only().expect("NB sandbox");
    let url = sandbox.nb_unix_url();
    let (fill, _) = runtime.block_on(reconcile_fresh(&url, &big));
    let (no_change, no_ops) = runtime.block_on(reconcile_fresh(&url, &big));
    println!("\n2. no-change plan against {} owned rows, fresh connection              target <= 1 s", rows(&big));
    println!("   (filling that NB took                    {:>12})", ms(fill));
    println!("   wepoq: connect + observe + plan          {:>12}   ({no_ops} operations)", ms(no_change));
    let (server_only, bytes) = server_select(&url);
    println!("   anchor ovsdb-client: select the owned ports only {:>5}   ({:.1} MB of JSON: the server's share)", ms(server_only), bytes as f64 / 1e6);

    let (bumped, _, _, compile_big) = compiled(&spec(services, Some(777)), Some(&lock));
    let (one_service, one_ops) = runtime.block_on(reconcile_fresh(&url, &bumped));
    let connected = runtime.block_on(Reconciler::connect(&url, Timeouts::default())).unwrap();
    let (back, _, _, _) = compiled(&spec(services, None), Some(&lock));
    let start = Instant::now();
    let (_, applied) = runtime.block_on(connected.reconcile(&back, Options::default(), |_, _| true)).unwrap();
    let steady = start.elapsed();
    println!("\n3. change one service (a fifth server) in that NB: plan + apply          target <= 100 ms");
    println!("   compile (with lockfile)                  {:>12}", ms(compile_big));
    println!("   wepoq: fresh connection                  {:>12}   ({one_ops} operations)", ms(one_service));
    println!("   wepoq: already connected (and back)      {:>12}   ({} operations)", ms(steady), applied.operations);
}
