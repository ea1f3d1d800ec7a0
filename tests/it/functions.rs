//! Functions end to end (issue 11): examples/ovn-vote with vote and result run as functions,
//! and a UDP service beside them, brought up by one `wepoq apply` on a real OVN data plane and
//! the real Docker engine, with the host agent as the control plane. A client container in
//! the topology resolves a VIP through OVN's DNS and gets its answer from a worker container
//! that the test proves has only `lo`, no capabilities, no-new-privileges and a read-only
//! root; a paused worker is woken by a connection; an overflow is refused with 429 and
//! Retry-After; result scales to zero and back; a room controller answers datagrams sent to
//! its VIP; `destroy` leaves nothing.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use wepoq_reconciler::sandbox::containers::{Containers, docker, proc_status};

use crate::stage::Stage;

/// result's servers as functions: one endpoint (so every connection meets the same stub),
/// one slow worker at most and one queued connection, scale to zero after a second idle.
const RESULT_AS_FUNCTIONS: &str = "      result:
        svr:
          replicas: 1
          ports: [80/tcp]
          calls: [db]
          runtime:
            image: IMAGE
            command: [/wepoq-runtime, example-worker, --mode, http, --delay, 1500ms]
            protocol: http
            min_warm: 0
            max_workers: 1
            queue: 1
            precreate: 0
            idle_timeout: 1s
";

/// A UDP service: the stub hands its bound port to a worker on the first datagram.
const ROOMS: &str = "    services:
      rooms:
        svr:
          ports: [7001/udp]
          runtime:
            image: IMAGE
            command: [/wepoq-runtime, example-worker]
            min_warm: 0
        cli:
          replicas: 1
          container:
            image: IMAGE
            command: [/wepoq-runtime, probe, wait]
";

fn functions_spec(spec: String, image: &str) -> String {
    let start = spec.find("      result:\n").expect("result in the example");
    let end = start
        + spec[start..]
            .find("        cli:\n")
            .expect("result's clients");
    let mut spec = format!(
        "{}{}{}",
        &spec[..start],
        RESULT_AS_FUNCTIONS.replace("IMAGE", image),
        &spec[end..]
    );
    // vote's idle workers are paused at once, to be woken by the test's connection.
    let vote = "            idle_timeout: 2m\n";
    assert!(spec.contains(vote), "vote's runtime in the example");
    spec = spec.replacen(vote, &format!("{vote}            pause_after: 300ms\n"), 1);
    spec.replacen("    services:\n", &ROOMS.replace("IMAGE", image), 1)
}

/// The worker container with worker id `id` (the id a worker names in its answers).
fn worker_container(id: &str) -> String {
    let filter = format!("label=wepoq.net/worker={id}");
    let found = docker(&["ps", "-aq", "--no-trunc", "--filter", &filter]).unwrap();
    assert!(!found.is_empty(), "no worker container {id}");
    found.lines().next().unwrap().to_owned()
}

/// Waits for `f`, failing with `what` after `within`.
fn wait_for(what: &str, within: Duration, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ovn_vote_as_functions_end_to_end() {
    let Some(mut s) = Stage::new("functions", |spec| {
        let image = spec
            .lines()
            .find_map(|l| l.trim().strip_prefix("image: "))
            .expect("an image in the example")
            .to_owned();
        functions_spec(spec, &image)
    }) else {
        return;
    };
    let stubs: BTreeSet<String> = s
        .units
        .iter()
        .filter(|u| u.container.labels.contains_key("wepoq.net/runtime"))
        .map(|u| u.name.clone())
        .collect();
    let ns = s.ns.clone();
    let stub = |endpoint: &str| format!("{endpoint}.ovn-vote.{ns}");
    assert_eq!(
        stubs,
        BTreeSet::from([
            stub("s1.svr.result"),
            stub("s1.svr.rooms"),
            stub("s1.svr.vote"),
            stub("s2.svr.vote")
        ]),
        "a stub container per server endpoint of each runtime side"
    );

    // One apply: the NB, the containers, the stubs; it returns once each stub listens and
    // has its min_warm workers registered (vote's one each, made by the agent).
    s.start_agent();
    assert_eq!(s.apply(), 2, "the first apply changes things");
    for name in [stub("s1.svr.vote"), stub("s2.svr.vote")] {
        let workers = Containers::workers_of(&name).unwrap();
        assert!(
            workers
                .iter()
                .any(|(_, state)| state == "running" || state == "paused"),
            "apply returned before {name} had its warm worker: {workers:?}"
        );
    }
    s.step("applied: stubs listening, vote's warm workers registered");

    // A client in the topology reaches result's VIP by name; a worker container answers.
    let result_vip = format!("{}:80", s.fqdn("vip.svr.result"));
    let answer = s.answers("c1.cli.result", &result_vip, 1).remove(0);
    let served: serde_json::Value = serde_json::from_str(&answer)
        .unwrap_or_else(|e| panic!("not a worker's answer: {answer}: {e}"));
    assert_eq!(served["fqdn"], s.fqdn("s1.svr.result"), "{served}");
    let worker = worker_container(served["worker"].as_str().unwrap());
    let inspected = docker(&[
        "inspect",
        "-f",
        "{{.State.Pid}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.NetworkMode}}",
        &worker,
    ])
    .unwrap();
    let mut fields = inspected.split_whitespace();
    let pid = fields.next().unwrap().to_owned();
    assert_eq!(fields.next(), Some("true"), "a read-only root: {inspected}");
    assert_eq!(
        proc_status(&pid, "CapEff"),
        "0000000000000000",
        "no capability"
    );
    assert_eq!(proc_status(&pid, "NoNewPrivs"), "1");
    assert!(proc_status(&pid, "Uid").starts_with("65534"), "not root");
    let links: Vec<String> = std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .unwrap()
        .lines()
        .skip(2)
        .filter_map(|l| Some(l.split(':').next()?.trim().to_owned()))
        .collect();
    assert_eq!(links, ["lo"], "the worker's only network is lo");
    s.step("a hardened, network-less worker container answered through the VIP");

    // Overflow: one worker busy for 1.5 s, one connection queued, the rest refused with 429
    // and a Retry-After, at once.
    let answers: Vec<String> = std::thread::scope(|scope| {
        let asks: Vec<_> = ["c1.cli.result", "c2.cli.result", "c3.cli.result"]
            .into_iter()
            .map(|client| {
                let s = &s;
                let target = result_vip.clone();
                scope.spawn(move || {
                    s.probe(client, &["get", &target, "--full", "--timeout-ms", "8000"])
                        .unwrap_or_else(|e| e)
                })
            })
            .collect();
        asks.into_iter().map(|a| a.join().unwrap()).collect()
    });
    let refused: Vec<&String> = answers.iter().filter(|a| a.contains(" 429 ")).collect();
    assert!(
        !refused.is_empty() && refused.iter().all(|a| a.contains("Retry-After:")),
        "no 429 with Retry-After: {answers:?}"
    );
    assert!(
        answers
            .iter()
            .any(|a| a.starts_with("HTTP/1.1 200") || a.contains("\"worker\"")),
        "nobody was served: {answers:?}"
    );
    s.step("overflow refused with 429 and Retry-After");

    // Scale to zero: idle past idle_timeout and the sweep's grace, result has no worker
    // container left (none pre-created either); the next connection starts one again.
    let result_stub = stub("s1.svr.result");
    wait_for("result to scale to zero", Duration::from_secs(40), || {
        Containers::workers_of(&result_stub).unwrap().is_empty()
    });
    s.step("result scaled to zero");
    let again = s.answers("c1.cli.result", &result_vip, 1).remove(0);
    assert!(again.contains("\"worker\""), "{again}");
    s.step("and back");

    // A paused worker is woken by a connection: vote's warm workers pause when idle.
    let vote_stubs = [stub("s1.svr.vote"), stub("s2.svr.vote")];
    let paused = || -> BTreeSet<String> {
        vote_stubs
            .iter()
            .flat_map(|n| Containers::workers_of(n).unwrap())
            .filter(|(_, state)| state == "paused")
            .map(|(id, _)| id)
            .collect()
    };
    wait_for("vote's workers to pause", Duration::from_secs(20), || {
        paused().len() == 2
    });
    let before = paused();
    let answer = s
        .answers("s1.svr.ctl", &format!("{}:80", s.fqdn("vip.svr.vote")), 1)
        .remove(0);
    let served: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let woken = worker_container(served["worker"].as_str().unwrap());
    assert!(
        before.contains(&woken),
        "the answer came from {woken}, not one of the paused workers {before:?}"
    );
    s.step("a paused worker woken by a connection");

    // UDP: a room controller's port, handed whole to a worker on the first datagram,
    // answers through its VIP.
    let rooms_vip = s.fqdn("vip.svr.rooms");
    let echoed = s
        .probe(
            "c1.cli.rooms",
            &["send", &format!("{rooms_vip}:7001"), "hello room"],
        )
        .unwrap_or_else(|e| panic!("no answer from the room controller: {e}"));
    assert!(echoed.contains("hello room"), "{echoed}");
    let rooms_workers = Containers::workers_of(&stub("s1.svr.rooms")).unwrap();
    assert_eq!(
        rooms_workers
            .iter()
            .filter(|(_, state)| state == "running")
            .count(),
        1,
        "one worker holds the room's port (beside a pre-created one): {rooms_workers:?}"
    );
    s.step("a datagram to the room's VIP answered by its worker");

    // Destroy: the stubs, their workers and everything else of the stage go.
    let out = s.wepoq(&["destroy", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(0), "destroy");
    let left = s.containers(true, true);
    assert!(left.is_empty(), "left behind: {left:?}");
    s.step("destroyed; nothing left");
}
