//! The connected reconciler (`CachedReconciler`) against a real NB: what it plans from memory
//! must be what a fresh observation would give, through its own applies, hand edits made
//! with ovn-nbctl, and rows of other tools on its switches.

use std::time::Duration;

use wepoq_compiler::{Input, Sources, compile};
use wepoq_reconciler::cached::CachedReconciler;
use wepoq_reconciler::observe::Observed;
use wepoq_reconciler::ovsdb::Timeouts;
use wepoq_reconciler::reconcile::{Desired, Options, Reconciler};
use wepoq_reconciler::sandbox::{Component, Sandbox, require};

pub(crate) const OWNER: &str = "shop.wepoq.net";

pub(crate) fn spec(web_replicas: usize, api_calls_db: bool) -> String {
    let calls = if api_calls_db { ", calls: [db]" } else { "" };
    format!(
        "namespace: shop\nnetwork: 10.70.0.0/16\napps:\n  store:\n    services:\n      web:\n        svr: {{replicas: {web_replicas}, ports: [80/tcp]}}\n        cli: {{replicas: 2}}\n      api:\n        svr: {{replicas: 2, ports: [8080/tcp]{calls}}}\n        cli: {{replicas: 1}}\n      db:\n        svr: {{replicas: 1, ports: [5432/tcp]}}\n        cli: {{replicas: 1}}\n"
    )
}

/// Another tool's switch and port, so the owned rows live among foreign ones.
pub(crate) fn add_foreign_switch(sandbox: &Sandbox) {
    sandbox
        .nbctl(&[
            "ls-add",
            "foreign-sw",
            "--",
            "lsp-add",
            "foreign-sw",
            "foreign-port",
        ])
        .unwrap();
}

/// Compiles `text` with `lock` (updated in place, as the CLI keeps wepoq.lock).
pub(crate) fn desired(text: &str, lock: &mut Option<String>) -> Desired {
    let mut sources = Sources::new();
    let spec = sources.add("wepoq.yaml", text);
    let lock_id = lock.as_ref().map(|l| sources.add("wepoq.lock", l.clone()));
    let compiled = compile(
        &sources,
        &[Input {
            spec,
            lock: lock_id,
        }],
    )
    .expect("the test spec compiles");
    let ns = &compiled.namespaces[0];
    *lock = Some(ns.lock_text.clone());
    Desired {
        spec_hash: compiled.spec_hash.clone(),
        namespaces: vec![(ns.owner(), ns.rows.clone())],
    }
}

/// The cached observation equals a fresh one, row for row, and so do their plans.
async fn assert_cache_is_true(cached: &mut CachedReconciler, fresh: &Reconciler, want: &Desired) {
    // Notifications of a commit precede the reply to any later request: one round trip
    // makes sure the cache has seen everything committed so far.
    cached.reconciler().client.echo().await.unwrap();
    let from_cache = cached.observed().clone();
    let observed = fresh.observe(want, Options::default()).await.unwrap();
    assert_plans_alike(&from_cache, &observed, want);
}

/// What a plan is made from is the same in both observations, and so are the plans.
pub(crate) fn assert_plans_alike(a: &Observed, b: &Observed, want: &Desired) {
    assert_eq!(a.rows, b.rows, "converted rows differ");
    assert_eq!(a.ids.by_key, b.ids.by_key);
    assert_eq!(a.foreign_children, b.foreign_children);
    assert_eq!(
        Reconciler::plan(want, a).changes,
        Reconciler::plan(want, b).changes
    );
}

#[tokio::test]
async fn plans_from_memory_agree_with_fresh_observations() {
    if require(Component::NbServer).is_none() {
        return;
    }
    let sandbox = Sandbox::nb_only().expect("NB sandbox");
    let url = sandbox.nb_unix_url();
    let fresh = Reconciler::connect(&url, Timeouts::default())
        .await
        .unwrap();
    let mut lock = None;
    let v1 = desired(&spec(3, false), &mut lock);

    // Another tool's rows first.
    add_foreign_switch(&sandbox);

    let connected = Reconciler::connect(&url, Timeouts::default())
        .await
        .unwrap();
    let mut cached = CachedReconciler::start(connected, &[OWNER.to_string()])
        .await
        .unwrap();
    assert!(cached.observed().rows[OWNER].is_empty());

    // 1. Create everything from memory.
    let (plan, applied) = cached
        .reconcile(&v1, Options::default(), |_, _| true)
        .await
        .unwrap();
    assert!(
        plan.summary().add > 20 && applied.operations > 0,
        "{:?}",
        plan.summary()
    );
    assert_cache_is_true(&mut cached, &fresh, &v1).await;
    let (again, applied) = cached
        .reconcile(&v1, Options::default(), |_, _| true)
        .await
        .unwrap();
    assert!(
        again.changes.is_empty() && applied.operations == 0,
        "a second apply changed {:?}",
        again.summary()
    );

    // 2. A change of one service: a fourth web server, and api now calls db.
    let v2 = desired(&spec(4, true), &mut lock);
    let (plan, _) = cached
        .reconcile(&v2, Options::default(), |_, _| true)
        .await
        .unwrap();
    assert_eq!(
        plan.summary().add,
        3,
        "the port and the call's two ACLs: {:?}",
        plan.changes
            .iter()
            .map(|c| c.key.to_string())
            .collect::<Vec<_>>()
    );
    assert_cache_is_true(&mut cached, &fresh, &v2).await;

    // 3. Hand drift: an address rewritten, a port deleted, and another tool's port put on a
    //    wepoq switch. The monitor reports it without being asked.
    let port = "s1.svr.web.store.shop";
    let changed = tokio::time::timeout(Duration::from_secs(10), cached.changed());
    sandbox
        .nbctl(&["lsp-set-addresses", port, "0a:58:0a:46:00:99 10.70.0.99"])
        .unwrap();
    changed
        .await
        .expect("the monitor reports hand edits")
        .unwrap();
    sandbox
        .nbctl(&["lsp-del", "c1.cli.api.store.shop"])
        .unwrap();
    sandbox
        .nbctl(&["lsp-add", "svr.db.store.shop", "intruder"])
        .unwrap();
    assert_cache_is_true(&mut cached, &fresh, &v2).await;
    // A port that loses its name mark is no longer one wepoq knows, and its switch, which
    // did not change, must now be read as holding someone else's port; and back.
    let api_port = "s1.svr.api.store.shop";
    sandbox
        .nbctl(&[
            "remove",
            "Logical_Switch_Port",
            api_port,
            "external_ids",
            "wepoq.net/name",
        ])
        .unwrap();
    assert_cache_is_true(&mut cached, &fresh, &v2).await;
    let keys: Vec<String> = Reconciler::plan(&v2, cached.observed())
        .changes
        .iter()
        .map(|c| c.key.to_string())
        .collect();
    assert!(
        keys.contains(&"Logical_Switch svr.api.store.shop".to_string()),
        "{keys:?}"
    );
    sandbox
        .nbctl(&[
            "set",
            "Logical_Switch_Port",
            api_port,
            &format!("external_ids:wepoq.net/name={api_port}"),
        ])
        .unwrap();
    assert_cache_is_true(&mut cached, &fresh, &v2).await;
    let drift = Reconciler::plan(&v2, cached.observed());
    let keys: Vec<String> = drift.changes.iter().map(|c| c.key.to_string()).collect();
    assert!(
        keys.contains(&format!("Logical_Switch_Port {port}")),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"Logical_Switch_Port c1.cli.api.store.shop".to_string()),
        "{keys:?}"
    );
    assert!(
        cached
            .observed()
            .foreign_children
            .contains_key(&wepoq_compiler::nb::RowKey::new(
                wepoq_compiler::nb::Table::LogicalSwitch,
                "svr.db.store.shop"
            ))
    );

    // 4. Repaired from memory; the other tool's rows are untouched.
    cached
        .reconcile(&v2, Options::default(), |_, _| true)
        .await
        .unwrap();
    assert_cache_is_true(&mut cached, &fresh, &v2).await;
    assert!(
        Reconciler::plan(&v2, &fresh.observe(&v2, Options::default()).await.unwrap())
            .changes
            .is_empty()
    );
    let ports = sandbox.nbctl(&["lsp-list", "svr.db.store.shop"]).unwrap();
    assert!(ports.contains("intruder"), "{ports}");
    assert!(
        sandbox
            .nbctl(&["lsp-list", "foreign-sw"])
            .unwrap()
            .contains("foreign-port")
    );

    // 5. A row of someone else's that carries a name wepoq now wants: the cached attempt
    //    hits the unique index and hands over to a full reconcile, which names the conflict.
    sandbox
        .nbctl(&["lsp-add", "foreign-sw", "s5.svr.web.store.shop"])
        .unwrap();
    let v3 = desired(&spec(5, true), &mut lock);
    let err = cached
        .reconcile(&v3, Options::default(), |_, _| true)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("s5.svr.web.store.shop"), "{err}");

    // 6. Back to v1: calls and servers removed.
    cached
        .reconcile(&v1, Options::default(), |_, _| true)
        .await
        .unwrap();
    assert_cache_is_true(&mut cached, &fresh, &v1).await;
}

#[tokio::test]
async fn a_server_restart_resyncs_the_copy_and_drift_made_meanwhile_is_seen() {
    if require(Component::NbServer).is_none() {
        return;
    }
    let mut sandbox = Sandbox::nb_only().expect("NB sandbox");
    let url = sandbox.nb_unix_url();
    let quick = Timeouts {
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(200),
        ..Timeouts::default()
    };
    let mut lock = None;
    let want = desired(&spec(2, false), &mut lock);
    let mut cached = CachedReconciler::start(
        Reconciler::connect(&url, quick).await.unwrap(),
        &[OWNER.to_string()],
    )
    .await
    .unwrap();
    cached
        .reconcile(&want, Options::default(), |_, _| true)
        .await
        .unwrap();

    // The server goes away; while wepoq is not connected, someone deletes a port.
    sandbox.stop_nb().unwrap();
    sandbox.start_nb().unwrap();
    sandbox
        .nbctl(&["lsp-del", "s2.svr.web.store.shop"])
        .unwrap();

    // The monitor is re-established with a full copy, and the drift shows up in it.
    let fresh = Reconciler::connect(&url, Timeouts::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let keys: Vec<String> = Reconciler::plan(&want, cached.observed())
            .changes
            .iter()
            .map(|c| c.key.to_string())
            .collect();
        if keys.contains(&"Logical_Switch_Port s2.svr.web.store.shop".to_string()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the re-synced copy never showed the deleted port: {keys:?}"
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), cached.changed()).await;
    }
    assert_cache_is_true(&mut cached, &fresh, &want).await;
    cached
        .reconcile(&want, Options::default(), |_, _| true)
        .await
        .unwrap();
    assert!(
        Reconciler::plan(
            &want,
            &fresh.observe(&want, Options::default()).await.unwrap()
        )
        .changes
        .is_empty(),
        "repaired after the restart"
    );
}
