//! Observations through the row cache against a real NB: whatever the cache holds (nothing,
//! the rows as they were, rows edited by hand since, a damaged file, another NB's file), an
//! observation equals one that reads every row.

use wepoq_reconciler::observe::Observed;
use wepoq_reconciler::ovsdb::Timeouts;
use wepoq_reconciler::reconcile::{Desired, Options, Reconciler};
use wepoq_reconciler::row_cache::RowCache;
use wepoq_reconciler::sandbox::{Component, Sandbox, require};

use crate::cached::{OWNER, add_foreign_switch, assert_plans_alike, desired, spec};

/// Everything a full read gives, the rows as read (the guards' reference) and conflicts too.
fn assert_same(through_cache: &Observed, full: &Observed, want: &Desired) {
    assert_plans_alike(through_cache, full, want);
    assert_eq!(through_cache.raw, full.raw, "rows as read differ");
    assert_eq!(through_cache.conflicts, full.conflicts);
}

#[tokio::test]
async fn observations_through_the_row_cache_equal_full_reads() {
    if require(Component::NbServer).is_none() {
        return;
    }
    let sandbox = Sandbox::nb_only().expect("NB sandbox");
    let url = sandbox.nb_unix_url();
    let dir = sandbox.dir().join("row-cache");
    let full = Reconciler::connect(&url, Timeouts::default())
        .await
        .unwrap();
    let cached = Reconciler::connect(&url, Timeouts::default())
        .await
        .unwrap()
        .with_row_cache(Some(dir.clone()));
    let file = RowCache::new(&dir, &url, &[OWNER.to_string()], full.schema())
        .path()
        .to_path_buf();
    add_foreign_switch(&sandbox);
    let mut lock = None;
    let want = desired(&spec(3, true), &mut lock);
    full.reconcile(&want, Options::default(), |_, _| true)
        .await
        .unwrap();
    let owned = full
        .observe(&want, Options::default())
        .await
        .unwrap()
        .raw
        .len();
    assert!(owned > 30, "{owned} owned rows");

    // 1. No file yet: every row is read whole, and the file is written.
    let first = cached.observe(&want, Options::default()).await.unwrap();
    assert!(first.read.full_read, "{:?}", first.read);
    assert!(file.exists(), "no cache file at {}", file.display());
    let mode = std::fs::metadata(&file).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    assert_same(
        &first,
        &full.observe(&want, Options::default()).await.unwrap(),
        &want,
    );

    // 2. Nothing changed: every row comes from the file, none is fetched.
    let second = cached.observe(&want, Options::default()).await.unwrap();
    assert_eq!(
        (
            second.read.from_cache,
            second.read.fetched,
            second.read.full_read
        ),
        (owned, 0, false)
    );
    assert_same(
        &second,
        &full.observe(&want, Options::default()).await.unwrap(),
        &want,
    );

    // 3. Hand edits since: an address rewritten, a port deleted, another tool's port on a
    //    wepoq switch, a port that lost its name mark (so its switch, unchanged, now holds a
    //    port wepoq does not know). Only the edited rows are fetched, and the picture is the
    //    full read's, drift and foreign rows included.
    sandbox
        .nbctl(&[
            "lsp-set-addresses",
            "s1.svr.web.store.shop",
            "0a:58:0a:46:00:99 10.70.0.99",
        ])
        .unwrap();
    sandbox
        .nbctl(&["lsp-del", "c1.cli.api.store.shop"])
        .unwrap();
    sandbox
        .nbctl(&["lsp-add", "svr.db.store.shop", "intruder"])
        .unwrap();
    sandbox
        .nbctl(&[
            "remove",
            "Logical_Switch_Port",
            "s1.svr.api.store.shop",
            "external_ids",
            "wepoq.net/name",
        ])
        .unwrap();
    let third = cached.observe(&want, Options::default()).await.unwrap();
    assert!(
        !third.read.full_read && third.read.fetched > 0 && third.read.fetched < 10,
        "{:?}",
        third.read
    );
    let now = full.observe(&want, Options::default()).await.unwrap();
    assert_same(&third, &now, &want);
    let drift: Vec<String> = Reconciler::plan(&want, &third)
        .changes
        .iter()
        .map(|c| c.key.to_string())
        .collect();
    for key in [
        "Logical_Switch_Port s1.svr.web.store.shop",
        "Logical_Switch_Port c1.cli.api.store.shop",
        "Logical_Switch svr.api.store.shop",
    ] {
        assert!(
            drift.iter().any(|k| k == key),
            "{key} missing from the drift {drift:?}"
        );
    }
    assert!(
        third
            .foreign_children
            .keys()
            .any(|k| k.to_string() == "Logical_Switch svr.db.store.shop"),
        "{:?}",
        third.foreign_children
    );

    // 4. The mark put back; repaired through the cache (the apply's guards are built from
    //    cached rows), then nothing left to do.
    sandbox
        .nbctl(&[
            "set",
            "Logical_Switch_Port",
            "s1.svr.api.store.shop",
            "external_ids:wepoq.net/name=s1.svr.api.store.shop",
        ])
        .unwrap();
    let (_, applied) = cached
        .reconcile(&want, Options::default(), |_, _| true)
        .await
        .unwrap();
    assert!(
        applied.operations > 0 && applied.attempts == 1,
        "{applied:?}"
    );
    let (again, applied) = cached
        .reconcile(&want, Options::default(), |_, _| true)
        .await
        .unwrap();
    assert!(
        again.changes.is_empty() && applied.operations == 0,
        "{:?}",
        again.changes
    );
    assert_same(
        &cached.observe(&want, Options::default()).await.unwrap(),
        &full.observe(&want, Options::default()).await.unwrap(),
        &want,
    );

    // 5. A file others may write, a damaged file, and a file of another NB put in its
    //    place: none is believed.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let writable = cached.observe(&want, Options::default()).await.unwrap();
    assert_eq!(writable.read.from_cache, 0, "{:?}", writable.read);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        cached
            .observe(&want, Options::default())
            .await
            .unwrap()
            .read
            .from_cache
            > 0
    );
    std::fs::write(&file, b"wqrows\0\n\x01\0\0\0garbage").unwrap();
    let damaged = cached.observe(&want, Options::default()).await.unwrap();
    assert_eq!(damaged.read.from_cache, 0, "{:?}", damaged.read);
    assert_same(
        &damaged,
        &full.observe(&want, Options::default()).await.unwrap(),
        &want,
    );
    let other = Sandbox::nb_only().expect("a second NB sandbox");
    let other_url = other.nb_unix_url();
    let elsewhere = Reconciler::connect(&other_url, Timeouts::default())
        .await
        .unwrap()
        .with_row_cache(Some(dir.clone()));
    elsewhere
        .reconcile(&want, Options::default(), |_, _| true)
        .await
        .unwrap();
    elsewhere.observe(&want, Options::default()).await.unwrap();
    let other_file = RowCache::new(&dir, &other_url, &[OWNER.to_string()], full.schema())
        .path()
        .to_path_buf();
    std::fs::copy(&other_file, &file).unwrap();
    let foreign = cached.observe(&want, Options::default()).await.unwrap();
    assert_eq!(foreign.read.from_cache, 0, "{:?}", foreign.read);
    assert_same(
        &foreign,
        &full.observe(&want, Options::default()).await.unwrap(),
        &want,
    );
}
