//! A three-member clustered NB on loopback: the client finds and follows the leader, an
//! apply survives the leader's death (before or after, never between), and a monitor
//! resumes from its last transaction with only the rows changed meanwhile.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wepoq_compiler::nb::{NAME_KEY, OWNER_KEY, Table};
use wepoq_reconciler::cached::CachedReconciler;
use wepoq_reconciler::ovsdb::{Client, Condition, NB_DB, Timeouts, Value};
use wepoq_reconciler::reconcile::{Desired, Options, Reconciler};
use wepoq_reconciler::sandbox::Sandbox;

use crate::cached::{OWNER, desired, spec};

/// Short enough that a test does not wait long for a new leader, long enough for a
/// busy machine.
fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(20),
        request: Duration::from_secs(60),
        reconnect_min: Duration::from_millis(50),
        ..Timeouts::default()
    }
}

async fn connect(url: &str) -> Reconciler {
    Reconciler::connect(url, timeouts())
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

/// Owned rows of `owner`, and the wepoq names held by more than one row (twins); asks
/// again when the member answering loses its leadership meanwhile.
async fn census(client: &Client, owner: &str) -> (usize, Vec<String>) {
    for _ in 0..5 {
        if let Some(found) = try_census(client, owner).await {
            return found;
        }
    }
    panic!("no census: the connection kept failing");
}

async fn try_census(client: &Client, owner: &str) -> Option<(usize, Vec<String>)> {
    let (mut owned, mut seen) = (0, HashMap::<String, usize>::new());
    for table in Table::ALL {
        for row in client
            .select(NB_DB, table.name(), vec![], &["external_ids"])
            .await
            .ok()?
        {
            let ids = row.get("external_ids").and_then(|v| v.as_map());
            let get = |k: &str| {
                ids.and_then(|m| m.get(&k.into()))
                    .and_then(|a| a.as_str())
                    .map(str::to_owned)
            };
            if get(OWNER_KEY).as_deref() == Some(owner) {
                owned += 1;
            }
            if let Some(name) = get(NAME_KEY) {
                *seen.entry(format!("{} {name}", table.name())).or_default() += 1;
            }
        }
    }
    let twins = seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(k, _)| k)
        .collect();
    Some((owned, twins))
}

async fn plan_is_empty(url: &str, want: &Desired) -> bool {
    let r = connect(url).await;
    let observed = r.observe(want, Options::default()).await.unwrap();
    Reconciler::plan(want, &observed).changes.is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_apply_destroy_through_every_member_and_after_the_leader_dies() {
    let Some(mut cluster) = Sandbox::nb_cluster_or_skip() else {
        return;
    };
    let all = cluster.members_url(&[1, 2, 3]);
    let mut lock = None;
    let v1 = desired(&spec(3, false), &mut lock);
    let leader = cluster.leader().unwrap();

    let r = connect(&all).await;
    assert_eq!(
        r.client.current_url(),
        cluster.member_url(leader),
        "writes go to the leader"
    );
    let cid = r
        .client
        .cluster_id(NB_DB)
        .expect("a clustered NB has a cluster id");
    let (plan, applied) = r
        .reconcile(&v1, Options::default(), |_, _| true)
        .await
        .unwrap();
    assert!(plan.summary().add > 20 && applied.operations > 0);
    assert!(plan_is_empty(&all, &v1).await);

    // The row cache is the cluster's, whichever member answers and however they are listed.
    let dir = cluster.dir().join("row-cache");
    let reversed = connect(&cluster.members_url(&[3, 2, 1])).await;
    assert_eq!(reversed.client.cluster_id(NB_DB), Some(cid));
    let path = |r: &Reconciler| {
        r.clone()
            .with_row_cache(Some(dir.clone()))
            .row_cache(&[OWNER.to_string()])
            .unwrap()
            .path()
            .to_owned()
    };
    assert_eq!(path(&r), path(&reversed));

    // The leader dies: the same list still plans, applies and destroys, through the new one.
    cluster.kill_member(leader).unwrap();
    let started = Instant::now();
    let r = connect(&all).await;
    let new_leader = cluster.leader().unwrap();
    assert_ne!(new_leader, leader);
    assert_eq!(r.client.current_url(), cluster.member_url(new_leader));
    eprintln!(
        "connected to the new leader {:?} after the kill",
        started.elapsed()
    );
    let v2 = desired(&spec(4, true), &mut lock);
    let (plan, _) = r
        .reconcile(&v2, Options::default(), |_, _| true)
        .await
        .unwrap();
    assert_eq!(plan.summary().add, 3, "{:?}", plan.summary());
    assert!(plan_is_empty(&all, &v2).await);
    let nothing = Desired {
        spec_hash: v2.spec_hash.clone(),
        namespaces: vec![(OWNER.to_string(), Vec::new())],
    };
    let (plan, _) = r
        .reconcile(&nothing, Options::default(), |_, _| true)
        .await
        .unwrap();
    assert!(plan.summary().destroy > 20);
    assert_eq!(census(&r.client, OWNER).await, (0, vec![]));

    // The dead member comes back and catches up; it is then a follower.
    cluster.start_member(leader).unwrap();
    assert_eq!(cluster.leader().unwrap(), new_leader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_listed_first_is_not_used_for_writes() {
    let Some(cluster) = Sandbox::nb_cluster_or_skip() else {
        return;
    };
    let leader = cluster.leader().unwrap();
    let followers: Vec<usize> = (1..=3).filter(|n| *n != leader).collect();
    let order = [followers[0], followers[1], leader];
    let r = connect(&cluster.members_url(&order)).await;
    assert_eq!(r.client.current_url(), cluster.member_url(leader));
    let mut lock = None;
    let v1 = desired(&spec(2, false), &mut lock);
    r.reconcile(&v1, Options::default(), |_, _| true)
        .await
        .unwrap();
    assert_eq!(r.client.current_url(), cluster.member_url(leader));
    assert_eq!(r.client.stats().connects, 1);

    // A follower alone is refused, saying why, once the connect time is up.
    let alone = Reconciler::connect(
        &cluster.member_url(followers[0]),
        Timeouts {
            connect: Duration::from_millis(500),
            ..timeouts()
        },
    )
    .await;
    let err = alone
        .err()
        .expect("a follower alone is not used")
        .to_string();
    assert!(err.contains("follower"), "{err}");
}

/// 10,000 endpoints: 500 services of 20.
fn big_spec() -> String {
    let mut s = String::from("namespace: shop\nnetwork: 10.0.0.0/8\napps:\n");
    for app in 0..25 {
        s.push_str(&format!("  app{app}:\n    services:\n"));
        for i in 0..20 {
            s.push_str(&format!("      svc{i}:\n        svr: {{replicas: 4, ports: [80/tcp]}}\n        cli: {{replicas: 16}}\n"));
        }
    }
    s
}

/// A tiny deterministic generator (xorshift), so a failing round can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_during_a_10k_apply_leaves_before_or_after() {
    let Some(mut cluster) = Sandbox::nb_cluster_or_skip() else {
        return;
    };
    let all = cluster.members_url(&[1, 2, 3]);
    let mut lock = None;
    let full = desired(&big_spec(), &mut lock);
    let total = full.namespaces[0].1.len();
    let empty = Desired {
        spec_hash: full.spec_hash.clone(),
        namespaces: vec![(OWNER.to_string(), Vec::new())],
    };
    // Through the row cache, as the CLI does: it is the cluster's (keyed by its id), so it
    // stays good across leaders, and a no-change plan lists versions instead of rows.
    let cache = cluster.dir().join("row-cache");
    let connect = |url: String| {
        let cache = cache.clone();
        async move { connect(&url).await.with_row_cache(Some(cache)) }
    };
    // How long one apply takes here, so the kills spread over all of it, commit included.
    let r = connect(all.clone()).await;
    let started = Instant::now();
    r.reconcile(&full, Options::default(), |_, _| true)
        .await
        .unwrap();
    let took = started.elapsed().as_millis() as u64;
    r.reconcile(&empty, Options::default(), |_, _| true)
        .await
        .unwrap();
    drop(r);

    let mut rng = Rng(0x5eed);
    let (mut before, mut after, mut recovered) = (0, 0, 0);
    let rounds: usize = std::env::var("WEPOQ_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    for round in 0..rounds {
        let r = connect(all.clone()).await;
        let target = if round % 2 == 0 { &full } else { &empty };
        // Half the rounds give up at the first lost connection (to see the NB as the kill
        // left it), half re-observe and re-plan as the CLI does.
        let retry = round % 4 >= 2;
        let options = Options {
            reconnects: if retry { 5 } else { 0 },
            ..Options::default()
        };
        let apply = tokio::spawn({
            let (r, target) = (r.clone(), target.clone());
            async move { r.reconcile(&target, options, |_, _| true).await }
        });
        tokio::time::sleep(Duration::from_millis(rng.below(took + 1))).await;
        let leader = cluster.leader().unwrap();
        cluster.kill_member(leader).unwrap();
        // Back at once (on its old port): the cluster is whole again for the next round.
        cluster.start_member(leader).unwrap();
        let outcome = apply.await.unwrap();

        let owned = owned_count(&r.client, OWNER).await;
        let want = if target.namespaces[0].1.is_empty() {
            0
        } else {
            total
        };
        let was = total - want;
        assert!(
            owned == want || owned == was,
            "round {round}: {owned} owned rows, expected {want} (after) or {was} (before): half a plan, or twins"
        );
        match &outcome {
            Ok((_, applied)) => {
                assert_eq!(owned, want, "round {round}: reported applied");
                if !applied.notes.is_empty() {
                    recovered += 1;
                    eprintln!("round {round}: {}", applied.notes.join("; "));
                }
            }
            Err(e) => assert!(e.is_retryable(), "round {round}: {e}"),
        }
        if owned == want {
            after += 1;
        } else {
            before += 1;
        }
        // A re-run converges: it is a no-op, or the one after it is.
        let (rerun, _) = r
            .reconcile(target, Options::default(), |_, _| true)
            .await
            .unwrap_or_else(|e| panic!("round {round}: the re-run failed: {e}"));
        assert_eq!(rerun.changes.is_empty(), owned == want, "round {round}");
        if !rerun.changes.is_empty() {
            let (again, _) = r
                .reconcile(target, Options::default(), |_, _| true)
                .await
                .unwrap_or_else(|e| panic!("round {round}: the check failed: {e}"));
            assert!(again.changes.is_empty(), "round {round}: not converged");
        }
    }
    let (owned, twins) = census(&connect(all.clone()).await.client, OWNER).await;
    assert!(
        twins.is_empty() && (owned == 0 || owned == total),
        "{owned} {twins:?}"
    );
    eprintln!(
        "leader kills: one apply takes {took} ms; {before} rounds left the NB before the plan, {after} after it; {recovered} applies recovered by themselves"
    );
}

/// The owned rows, counted by the server (only their `_uuid` comes back); asks again when
/// the member answering loses its leadership meanwhile.
async fn owned_count(client: &Client, owner: &str) -> usize {
    let mut last = None;
    for _ in 0..5 {
        let mut total = 0;
        for table in Table::ALL {
            match client
                .select(
                    NB_DB,
                    table.name(),
                    vec![Condition::includes(
                        "external_ids",
                        Value::map([(OWNER_KEY, owner)]),
                    )],
                    &["_uuid"],
                )
                .await
            {
                Ok(rows) => total += rows.len(),
                Err(e) => {
                    last = Some(e);
                    total = usize::MAX;
                    break;
                }
            }
        }
        if total != usize::MAX {
            return total;
        }
    }
    panic!("cannot count the owned rows: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_resumes_after_a_leader_change_with_only_the_changed_rows() {
    let Some(mut cluster) = Sandbox::nb_cluster_or_skip() else {
        return;
    };
    let all = cluster.members_url(&[1, 2, 3]);
    let mut lock = None;
    let v0 = desired(&spec(3, false), &mut lock);
    // A client slow to come back (5 s between passes over the members, where an election
    // takes 1 to 2 s): the drift below is made while it is away, for certain.
    let slow = Timeouts {
        reconnect_min: Duration::from_secs(5),
        reconnect_max: Duration::from_secs(5),
        ..timeouts()
    };
    let reconciler = Reconciler::connect(&all, slow).await.unwrap();
    let mut cached = CachedReconciler::start(reconciler, &[OWNER.to_string()])
        .await
        .unwrap();
    cached
        .reconcile(&v0, Options::default(), |_, _| true)
        .await
        .unwrap();
    let owned = cached.observed().rows[OWNER].len();
    assert!(owned > 20);
    let stats = cached.monitor_stats();
    assert_eq!((stats.full, stats.resumed), (1, 0));
    // A small change after it, as a watcher's life goes on. ovsdb-server keeps no more
    // history than the database's own size: the transaction that created everything is
    // dropped as soon as others follow, and a monitor whose last transaction it was
    // would start over.
    let v1 = desired(&spec(4, false), &mut lock);
    cached
        .reconcile(&v1, Options::default(), |_, _| true)
        .await
        .unwrap();

    // Drift while the client is away: two ports' addresses changed by hand (their OVN names
    // looked up first, so that only the writes wait for the new leader).
    let ports: Vec<String> = v1.namespaces[0]
        .1
        .iter()
        .filter(|r| r.key.table == Table::LogicalSwitchPort)
        .map(|r| r.key.name.clone())
        .take(2)
        .collect();
    let lsp_name = |wepoq_name: &str| {
        cluster
            .nbctl(&[
                "--bare",
                "--columns=name",
                "find",
                "Logical_Switch_Port",
                &format!("external_ids:\"{NAME_KEY}\"=\"{wepoq_name}\""),
            ])
            .unwrap()
            .trim()
            .to_owned()
    };
    let names: Vec<String> = ports.iter().map(|p| lsp_name(p)).collect();
    let leader = cluster.leader().unwrap();
    cluster.kill_member(leader).unwrap();
    for name in &names {
        cluster
            .nbctl(&["lsp-set-addresses", name, "00:00:00:00:00:99 10.99.0.1"])
            .unwrap();
    }
    // The monitor resumes on the new leader with the two changed rows only.
    let deadline = Instant::now() + Duration::from_secs(30);
    while cached.monitor_stats().resumed == 0 {
        assert!(
            Instant::now() < deadline,
            "the monitor did not resume: {:?}, connected to {} ({:?})",
            cached.monitor_stats(),
            cached.reconciler().client.current_url(),
            cached.reconciler().client.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = cached.monitor_stats();
    assert_eq!(
        (stats.full, stats.resumed),
        (1, 1),
        "no full re-read: {stats:?}"
    );
    assert_eq!(
        stats.last_rows,
        ports.len(),
        "the resumed monitor got {} rows, {} changed (of {owned})",
        stats.last_rows,
        ports.len()
    );
    // And the drift is repaired from memory (one round trip first: every notification
    // sent before it is applied).
    cached.reconciler().client.echo().await.unwrap();
    let (plan, applied) = cached
        .reconcile(&v1, Options::default(), |_, _| true)
        .await
        .unwrap();
    assert_eq!(plan.summary().change, ports.len(), "{:?}", plan.summary());
    assert!(applied.operations > 0);
    assert!(plan_is_empty(&all, &v1).await);
    cluster.start_member(leader).unwrap();
}
