//! The OVSDB client against a real ovsdb-server loaded with the OVN NB schema

use std::time::Duration;

use wepoq_reconciler::ovsdb::{
    Client, Condition, Error, MonitorSpec, Mutation, NB_DB, OpOutcome, Operation, Row, Timeouts,
    Value, WaitUntil,
};
use wepoq_reconciler::sandbox::{Component, Sandbox, require};

fn quick() -> Timeouts {
    Timeouts {
        request: Duration::from_secs(10),
        ..Timeouts::default()
    }
}

fn switch_with_port(switch: &str, port: &str, addresses: &str) -> Vec<Operation> {
    vec![
        Operation::insert_named("Logical_Switch", Row::new().with("name", switch), "sw"),
        Operation::insert_named(
            "Logical_Switch_Port",
            Row::new()
                .with("name", port)
                .with("addresses", Value::set([addresses])),
            "lsp",
        ),
        Operation::mutate(
            "Logical_Switch",
            vec![Condition::eq("_uuid", Value::named_uuid("sw"))],
            vec![Mutation::insert("ports", Value::named_uuid("lsp"))],
        ),
    ]
}

async fn port_names(client: &Client) -> Vec<String> {
    let rows = client
        .select(NB_DB, "Logical_Switch_Port", vec![], &["name"])
        .await
        .unwrap();
    // Only what was asked for, plus the row's identity.
    assert!(
        rows.iter().all(|r| r.len() == 2 && r.uuid().is_some()),
        "{rows:?}"
    );
    let mut names: Vec<String> = rows
        .iter()
        .map(|r| r.str("name").unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_over_unix_and_tcp_and_checks_the_schema() {
    let Some(sb) = Sandbox::nb_only_or_skip() else {
        return;
    };
    for url in [sb.nb_unix_url(), sb.nb_tcp_url()] {
        let client = Client::connect(&url, quick()).await.unwrap();
        assert!(
            client.list_dbs().await.unwrap().contains(&NB_DB.to_owned()),
            "{url}"
        );
        let schema = client.nb_schema().await.unwrap();
        assert_eq!(schema.version.major, 7);
        assert!(!schema.tables["Logical_Switch_Port"].is_root);
        client.echo().await.unwrap();
    }
    let err = Client::connect(&format!("unix:{}/nope.sock", sb.dir().display()), quick())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, Error::Connect { .. }) && err.is_retryable(),
        "{err}"
    );
    let err = Client::connect(&sb.nb_unix_url(), quick())
        .await
        .unwrap()
        .schema("Nope")
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Rpc { .. }) && !err.is_retryable(),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_other_nb_schema_versions() {
    if require(Component::NbServer).is_none() {
        return;
    }
    let text = std::fs::read_to_string("/usr/share/ovn/ovn-nb.ovsschema").unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    for version in ["6.0.0", "8.0.0", "7.9.1"] {
        json["version"] = version.into();
        let path = std::env::temp_dir().join(format!(
            "wepoq-nb-{}-{version}.ovsschema",
            std::process::id()
        ));
        std::fs::write(&path, json.to_string()).unwrap();
        let sb = Sandbox::nb_only_with_schema(&path).unwrap();
        let client = Client::connect(&sb.nb_unix_url(), quick()).await.unwrap();
        let result = client.nb_schema().await;
        std::fs::remove_file(&path).unwrap();
        if version.starts_with("7.") {
            assert_eq!(result.unwrap().version.to_string(), version);
            continue;
        }
        let err = result.unwrap_err();
        assert!(
            matches!(err, Error::SchemaMismatch { .. }) && !err.is_retryable(),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("OVN_Northbound {version}")) && msg.contains("7.x"),
            "{msg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transact_insert_select_mutate_delete() {
    let Some(sb) = Sandbox::nb_only_or_skip() else {
        return;
    };
    let client = Client::connect(&sb.nb_unix_url(), quick()).await.unwrap();

    // A child is inserted together with the parent's mutate that references it.
    let results = client
        .transact(
            NB_DB,
            &switch_with_port("sw0", "p1", "00:00:00:00:00:01 10.0.0.2"),
        )
        .await
        .unwrap();
    let sw0 = results[0].uuid().unwrap().clone();
    let p1 = results[1].uuid().unwrap().clone();
    assert_eq!(results[2].count(), Some(1));
    let rows = client
        .transact(
            NB_DB,
            &[Operation::select(
                "Logical_Switch",
                vec![Condition::uuid(&sw0)],
            )],
        )
        .await
        .unwrap();
    assert_eq!(
        rows[0].rows()[0].get("ports"),
        Some(&Value::uuid(p1.clone()))
    );
    let sw_row = &rows[0].rows()[0];
    assert_eq!(sw_row.uuid(), Some(&sw0));
    // The server sends the one-element set back as a bare atom: equal all the same.
    let lsp = client
        .transact(
            NB_DB,
            &[Operation::select(
                "Logical_Switch_Port",
                vec![Condition::eq("name", "p1")],
            )],
        )
        .await
        .unwrap();
    assert_eq!(
        lsp[0].rows()[0].get("addresses"),
        Some(&Value::set(["00:00:00:00:00:01 10.0.0.2"]))
    );

    // An orphan insert into a non-root table "succeeds" and is collected at once.
    let orphan = client
        .transact(
            NB_DB,
            &[Operation::insert(
                "Logical_Switch_Port",
                Row::new().with("name", "orphan"),
            )],
        )
        .await
        .unwrap();
    assert!(orphan[0].uuid().is_some());
    assert_eq!(port_names(&client).await, ["p1"]);

    // Mutate maps and sets by key; add a second port to the existing switch.
    let ops = [
        Operation::mutate(
            "Logical_Switch",
            vec![Condition::uuid(&sw0)],
            vec![Mutation::insert(
                "external_ids",
                Value::map([("wepoq.owner", "test"), ("k", "v")]),
            )],
        ),
        Operation::insert_named("Logical_Switch_Port", Row::new().with("name", "p2"), "p2"),
        Operation::mutate(
            "Logical_Switch",
            vec![Condition::uuid(&sw0)],
            vec![Mutation::insert("ports", Value::named_uuid("p2"))],
        ),
        Operation::mutate(
            "Logical_Switch",
            vec![Condition::uuid(&sw0)],
            vec![Mutation::delete("external_ids", Value::set(["k"]))],
        ),
        Operation::select_columns(
            "Logical_Switch",
            vec![Condition::uuid(&sw0)],
            &["external_ids", "ports"],
        ),
    ];
    let results = client.transact(NB_DB, &ops).await.unwrap();
    let row = &results[4].rows()[0];
    assert_eq!(
        row.get("external_ids"),
        Some(&Value::map([("wepoq.owner", "test")]))
    );
    assert_eq!(
        row.get("ports").and_then(Value::as_set).map(|s| s.len()),
        Some(2)
    );
    assert_eq!(port_names(&client).await, ["p1", "p2"]);

    // A duplicate in a unique index fails at commit: terminal, and nothing is applied.
    let err = client
        .transact(NB_DB, &switch_with_port("sw-dup", "p1", "dynamic"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::CommitFailed { error, .. } if error == "constraint violation"),
        "{err}"
    );
    assert!(!err.is_retryable());
    let switches = client
        .transact(NB_DB, &[Operation::select("Logical_Switch", vec![])])
        .await
        .unwrap();
    assert_eq!(switches[0].rows().len(), 1);

    // Removing the reference deletes the child; delete removes the root row.
    let ops = [Operation::mutate(
        "Logical_Switch",
        vec![Condition::uuid(&sw0)],
        vec![Mutation::delete("ports", Value::uuid(p1))],
    )];
    client.transact(NB_DB, &ops).await.unwrap();
    assert_eq!(port_names(&client).await, ["p2"]);
    let results = client
        .transact(
            NB_DB,
            &[Operation::delete(
                "Logical_Switch",
                vec![Condition::eq("name", "sw0")],
            )],
        )
        .await
        .unwrap();
    assert_eq!(results[0].count(), Some(1));
    assert!(port_names(&client).await.is_empty());

    // Dry run: everything before abort ran, nothing is kept.
    let mut ops = switch_with_port("sw-dry", "p9", "dynamic");
    ops.push(Operation::Abort);
    let reply = client.transact_reply(NB_DB, &ops).await.unwrap();
    assert!(matches!(reply.outcomes[0], OpOutcome::Done(_)));
    assert!(matches!(&reply.outcomes[3], OpOutcome::Failed(e) if e.error == "aborted"));
    assert!(port_names(&client).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_wait_guard_aborts_the_transaction() {
    let Some(sb) = Sandbox::nb_only_or_skip() else {
        return;
    };
    let client = Client::connect(&sb.nb_tcp_url(), quick()).await.unwrap();
    sb.nbctl(&["ls-add", "sw0"]).unwrap();
    // Creation guard: "no switch named sw0" no longer holds, so the insert must not happen.
    let guard = Operation::wait(
        "Logical_Switch",
        vec![Condition::eq("name", "sw0")],
        &["name"],
        WaitUntil::NotEqual,
        vec![Row::new().with("name", "sw0")],
    );
    let ops = [
        guard.clone(),
        Operation::insert("Logical_Switch", Row::new().with("name", "sw0")),
    ];
    let err = client.transact(NB_DB, &ops).await.unwrap_err();
    assert!(matches!(err, Error::GuardFailed { index: 0, .. }), "{err}");
    assert!(err.is_retryable());
    assert_eq!(
        sb.nbctl(&["--bare", "--columns=name", "list", "Logical_Switch"])
            .unwrap()
            .trim(),
        "sw0"
    );

    // A guard on what was read passes while nothing changed.
    let read = Operation::wait(
        "Logical_Switch",
        vec![Condition::eq("name", "sw0")],
        &["name", "external_ids"],
        WaitUntil::Equal,
        vec![
            Row::new()
                .with("name", "sw0")
                .with("external_ids", Value::map::<&str, &str>([])),
        ],
    );
    client
        .transact(NB_DB, &[read.clone(), Operation::comment("guarded")])
        .await
        .unwrap();
    sb.nbctl(&["set", "Logical_Switch", "sw0", "external_ids:x=y"])
        .unwrap();
    let err = client
        .transact(NB_DB, &[read, Operation::comment("guarded")])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::GuardFailed { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_cache_follows_changes() {
    let Some(sb) = Sandbox::nb_only_or_skip() else {
        return;
    };
    let client = Client::connect(&sb.nb_unix_url(), quick()).await.unwrap();
    sb.nbctl(&["ls-add", "before"]).unwrap();
    let spec = MonitorSpec::new()
        .table("Logical_Switch", &["name", "ports", "external_ids"])
        .table("Logical_Switch_Port", &[]);
    let mut mon = client.monitor(NB_DB, spec).await.unwrap();
    assert_eq!(mon.find("Logical_Switch", "name", "before").len(), 1);

    // A change made by another client (ovn-nbctl) arrives as update2.
    sb.nbctl(&[
        "ls-add",
        "sw1",
        "--",
        "set",
        "Logical_Switch",
        "sw1",
        "external_ids:a=b",
    ])
    .unwrap();
    let t = Duration::from_secs(5);
    mon.wait_for(t, |t| {
        t["Logical_Switch"]
            .values()
            .any(|r| r.str("name") == Some("sw1"))
    })
    .await
    .unwrap();
    let sw1 = mon.find("Logical_Switch", "name", "sw1").pop().unwrap();
    assert_eq!(sw1.get("external_ids"), Some(&Value::map([("a", "b")])));
    // Columns left at their default are filled in, not missing.
    assert_eq!(sw1.get("ports"), Some(&Value::empty()));

    // Map and set diffs (modify) apply: replace a key, add a port.
    sb.nbctl(&[
        "set",
        "Logical_Switch",
        "sw1",
        "external_ids:a=c",
        "--",
        "lsp-add",
        "sw1",
        "p1",
    ])
    .unwrap();
    mon.wait_for(t, |t| t["Logical_Switch_Port"].len() == 1)
        .await
        .unwrap();
    let sw1 = mon.find("Logical_Switch", "name", "sw1").pop().unwrap();
    assert_eq!(sw1.get("external_ids"), Some(&Value::map([("a", "c")])));
    let p1 = mon.find("Logical_Switch_Port", "name", "p1").pop().unwrap();
    assert_eq!(
        sw1.get("ports"),
        Some(&Value::uuid(p1.uuid().unwrap().clone()))
    );

    // Our own transaction: its update arrives before its reply, so no waiting is needed.
    client
        .transact(NB_DB, &switch_with_port("sw2", "p2", "dynamic"))
        .await
        .unwrap();
    assert_eq!(mon.find("Logical_Switch_Port", "name", "p2").len(), 1);
    client
        .transact(
            NB_DB,
            &[Operation::delete(
                "Logical_Switch",
                vec![Condition::eq("name", "sw2")],
            )],
        )
        .await
        .unwrap();
    assert!(mon.find("Logical_Switch", "name", "sw2").is_empty());
    assert!(mon.find("Logical_Switch_Port", "name", "p2").is_empty());

    sb.nbctl(&["ls-del", "sw1"]).unwrap();
    mon.wait_for(t, |t| {
        t["Logical_Switch"].len() == 1 && t["Logical_Switch_Port"].is_empty()
    })
    .await
    .unwrap();

    // The predicate never holding is a timeout, not a hang.
    let err = mon
        .wait_for(Duration::from_millis(200), |t| {
            t["Logical_Switch"].len() == 5
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_echo_and_stays_connected_when_idle() {
    let Some(sb) = Sandbox::nb_only_or_skip() else {
        return;
    };
    // No probes of our own: only answering the server's echo keeps the session alive.
    let client = Client::connect(
        &sb.nb_tcp_url(),
        Timeouts {
            probe: None,
            ..quick()
        },
    )
    .await
    .unwrap();
    client.list_dbs().await.unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;
    client.list_dbs().await.unwrap();
    let stats = client.stats();
    assert!(stats.echo_replies >= 1, "{stats:?}");
    assert_eq!(stats.connects, 1, "the server dropped us: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_server_restarts() {
    let Some(mut sb) = Sandbox::nb_only_or_skip() else {
        return;
    };
    let timeouts = Timeouts {
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(200),
        ..quick()
    };
    let client = Client::connect(&sb.nb_unix_url(), timeouts).await.unwrap();
    let mut mon = client
        .monitor(NB_DB, MonitorSpec::new().table("Logical_Switch", &["name"]))
        .await
        .unwrap();

    // A request in flight when the server goes away fails as retryable: it may or may not
    // have run. (A wait with a long timeout keeps it in flight.)
    let blocked = [Operation::Wait {
        table: "Logical_Switch".into(),
        conditions: vec![],
        columns: vec!["name".into()],
        until: WaitUntil::Equal,
        rows: vec![Row::new().with("name", "never")],
        timeout_ms: Some(30_000),
    }];
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.transact(NB_DB, &blocked).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    sb.stop_nb().unwrap();
    let err = in_flight.await.unwrap().unwrap_err();
    assert!(
        matches!(err, Error::ConnectionLost { .. }) && err.is_retryable(),
        "{err}"
    );

    // The database survives the restart; a change made while we were away shows up in
    // the re-synced cache.
    sb.start_nb().unwrap();
    sb.nbctl(&["ls-add", "after-restart"]).unwrap();
    let names = port_names(&client).await;
    assert!(names.is_empty());
    mon.wait_for(Duration::from_secs(5), |t| {
        t["Logical_Switch"]
            .values()
            .any(|r| r.str("name") == Some("after-restart"))
    })
    .await
    .unwrap();
    assert!(client.stats().connects >= 2, "{:?}", client.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_time_out() {
    let Some(sb) = Sandbox::nb_only_or_skip() else {
        return;
    };
    let client = Client::connect(
        &sb.nb_unix_url(),
        Timeouts {
            request: Duration::from_millis(300),
            ..quick()
        },
    )
    .await
    .unwrap();
    // The server holds a wait with a timeout until its rows match or its own timeout ends.
    let held = [Operation::Wait {
        table: "Logical_Switch".into(),
        conditions: vec![],
        columns: vec!["name".into()],
        until: WaitUntil::Equal,
        rows: vec![Row::new().with("name", "never")],
        timeout_ms: Some(5_000),
    }];
    let started = std::time::Instant::now();
    let err = client.transact(NB_DB, &held).await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout { .. }) && err.is_retryable(),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // The connection is still usable.
    client.list_dbs().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_guard_transactions() {
    let Some(sb) = Sandbox::nb_only_or_skip() else {
        return;
    };
    let a = Client::connect(&sb.nb_unix_url(), quick()).await.unwrap();
    let b = Client::connect(&sb.nb_unix_url(), quick()).await.unwrap();
    assert!(a.try_lock("wepoq_reconciler").await.unwrap());
    assert!(!b.try_lock("wepoq_reconciler").await.unwrap());
    let guarded = |name: &str| {
        vec![
            Operation::Assert {
                lock: "wepoq_reconciler".into(),
            },
            Operation::insert("Logical_Switch", Row::new().with("name", name)),
        ]
    };
    a.transact(NB_DB, &guarded("from-a")).await.unwrap();
    let err = b.transact(NB_DB, &guarded("from-b")).await.unwrap_err();
    assert!(
        matches!(&err, Error::OpFailed { index: 0, error, .. } if error == "not owner"),
        "{err}"
    );
    a.unlock("wepoq_reconciler").await.unwrap();
    // b asked first, so it was queued and now holds the lock.
    b.transact(NB_DB, &guarded("from-b")).await.unwrap();
    assert_eq!(
        sb.nbctl(&["--bare", "--columns=name", "list", "Logical_Switch"])
            .unwrap()
            .split_whitespace()
            .count(),
        2
    );
}
