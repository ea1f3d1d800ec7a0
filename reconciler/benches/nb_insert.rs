//! Benchmark anchor: 10k logical switch ports into an empty NB in one transaction, against ovn-nbctl
//!
//! Run with `cargo bench -p wepoq-reconciler --bench nb_insert`. Each side gets its own
//! empty NB ovsdb-server from the sandbox harness. ovn-nbctl runs one process per
//! command, as a script driving it would; since that takes minutes for 10k ports, only
//! the first `NBCTL_SAMPLE` ports are timed and the rest is extrapolated linearly, which
//! flatters ovn-nbctl: each process reads the whole database first, so it slows down as
//! the NB grows.

use std::process::Command;
use std::time::{Duration, Instant};

use wepoq_reconciler::ovsdb::{
    Atom, Client, Condition, MonitorSpec, Mutation, NB_DB, Operation, Row, Timeouts, Value,
};
use wepoq_reconciler::sandbox::{Component, Sandbox, require};

const SWITCHES: usize = 100;
const PORTS_PER_SWITCH: usize = 100;
const NBCTL_SAMPLE: usize = 500;

fn port(sw: usize, p: usize) -> (String, String) {
    let n = sw * PORTS_PER_SWITCH + p;
    let addresses = format!(
        "0a:00:00:00:{:02x}:{:02x} 10.{}.{}.{}",
        n / 256,
        n % 256,
        sw,
        p / 250,
        p % 250 + 2
    );
    (format!("lsp-{sw}-{p}"), addresses)
}

fn one_transaction() -> Vec<Operation> {
    let mut ops = Vec::with_capacity(SWITCHES * (PORTS_PER_SWITCH + 2));
    for sw in 0..SWITCHES {
        let sw_name = format!("sw{sw}");
        ops.push(Operation::insert_named(
            "Logical_Switch",
            Row::new().with("name", sw_name.as_str()),
            &sw_name,
        ));
        let mut refs = Vec::with_capacity(PORTS_PER_SWITCH);
        for p in 0..PORTS_PER_SWITCH {
            let (name, addresses) = port(sw, p);
            let uuid_name = name.replace('-', "_");
            let row = Row::new()
                .with("name", name.as_str())
                .with("addresses", Value::set([addresses.as_str()]))
                .with("port_security", Value::set([addresses.as_str()]));
            ops.push(Operation::insert_named(
                "Logical_Switch_Port",
                row,
                &uuid_name,
            ));
            refs.push(Atom::NamedUuid(uuid_name));
        }
        ops.push(Operation::mutate(
            "Logical_Switch",
            vec![Condition::eq("_uuid", Value::named_uuid(&sw_name))],
            vec![Mutation::insert("ports", Value::set(refs))],
        ));
    }
    ops
}

async fn client_side() -> (Duration, Duration, usize, Duration, usize) {
    let sb = Sandbox::nb_only().expect("start NB sandbox");
    let client = Client::connect(&sb.nb_unix_url(), Timeouts::default())
        .await
        .expect("connect");
    client.nb_schema().await.expect("NB schema");
    let ops = one_transaction();
    // The client's own share: encoding the request (decoding the reply is in the total).
    let started = Instant::now();
    let bytes = serde_json::to_vec(&ops.iter().map(Operation::to_json).collect::<Vec<_>>())
        .unwrap()
        .len();
    let encode = started.elapsed();
    let started = Instant::now();
    let results = client.transact(NB_DB, &ops).await.expect("transact");
    let elapsed = started.elapsed();
    assert_eq!(results.len(), ops.len());
    // Observing what is there, as plan will: a monitor's initial sync of both tables.
    let started = Instant::now();
    let spec = MonitorSpec::new()
        .table("Logical_Switch", &[])
        .table("Logical_Switch_Port", &[]);
    let monitor = client.monitor(NB_DB, spec).await.expect("monitor");
    let observe = started.elapsed();
    let stored = monitor.rows("Logical_Switch_Port").len();
    (elapsed, encode, bytes, observe, stored)
}

fn nbctl_side() -> (Duration, Duration, usize) {
    let sb = Sandbox::nb_only().expect("start NB sandbox");
    let db = format!("--db={}", sb.nb_unix_url());
    let run = |args: &[&str]| {
        let status = Command::new("ovn-nbctl")
            .arg(&db)
            .args(args)
            .status()
            .expect("run ovn-nbctl");
        assert!(status.success(), "ovn-nbctl {args:?}");
    };
    let started = Instant::now();
    for sw in 0..SWITCHES {
        run(&["ls-add", &format!("sw{sw}")]);
    }
    let switches = started.elapsed();
    let started = Instant::now();
    let mut done = 0;
    'outer: for p in 0..PORTS_PER_SWITCH {
        for sw in 0..SWITCHES {
            if done == NBCTL_SAMPLE {
                break 'outer;
            }
            let (name, addresses) = port(sw, p);
            let sw_name = format!("sw{sw}");
            run(&[
                "lsp-add",
                &sw_name,
                &name,
                "--",
                "lsp-set-addresses",
                &name,
                &addresses,
                "--",
                "lsp-set-port-security",
                &name,
                &addresses,
            ]);
            done += 1;
        }
    }
    (switches, started.elapsed(), done)
}

fn main() {
    if require(Component::NbServer).is_none() {
        return;
    }
    let total = SWITCHES * PORTS_PER_SWITCH;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (client_time, encode_time, bytes, observe_time, stored) = rt.block_on(client_side());
    assert_eq!(stored, total, "ports stored");
    let (switch_time, sample_time, sampled) = nbctl_side();
    let per_cmd = sample_time / sampled as u32;
    let extrapolated = switch_time + per_cmd * total as u32;

    println!(
        "nb_insert: {total} logical switch ports (addresses + port_security) on {SWITCHES} switches, empty NB"
    );
    println!(
        "  wepoq ovsdb client, one transaction ({} ops): {:>9.3} s  (of which encoding the {:.1} MB request: {:.3} s)",
        SWITCHES * (PORTS_PER_SWITCH + 2),
        client_time.as_secs_f64(),
        bytes as f64 / 1e6,
        encode_time.as_secs_f64(),
    );
    println!(
        "  wepoq ovsdb client, monitor initial sync of the {SWITCHES} switches and {total} ports: {:.3} s",
        observe_time.as_secs_f64()
    );
    println!(
        "  ovn-nbctl, one process per command:          {:>9.3} s  (extrapolated: {SWITCHES} ls-add took {:.3} s, \
         the first {sampled} lsp-add took {:.3} s = {:.1} ms each, times {total}; a lower bound, nbctl slows as the NB grows)",
        extrapolated.as_secs_f64(),
        switch_time.as_secs_f64(),
        sample_time.as_secs_f64(),
        per_cmd.as_secs_f64() * 1e3,
    );
    println!(
        "  ratio: {:.0}x",
        extrapolated.as_secs_f64() / client_time.as_secs_f64()
    );
}
