//! How the owned rows are read: every row whole in one transaction, or through the row
//! cache, where the server lists `_uuid` and `_version` and only the rows the cache lacks
//! (or holds in an older version) are fetched.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use wepoq_compiler::nb::{OWNER_KEY, Table};

use super::patch::Patcher;
use super::{Observed, derive::derive, owner_condition, owner_mark};
use crate::ovsdb::{self, Client, Condition, Function, NB_DB, OpResult, Operation, Schema, Uuid};
use crate::row_cache::{CachedRow, RowCache};

/// How an observation read the owned rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Rows taken from the row cache, their `_version` confirmed by the server.
    pub from_cache: usize,
    /// Rows read one by one because the cache lacked them or held an older version.
    pub fetched: usize,
    /// Every owned row was read whole (no cache, or it held too little to help).
    pub full_read: bool,
}

/// Rows the cache may miss (or hold stale) before it is rewritten: rewriting it costs more
/// than fetching a few rows again next time.
const REWRITE_AFTER: usize = 64;

/// What [`read`] found.
pub(super) struct Read {
    pub owned: Owned,
    /// `_uuid` and `name` of the rows in named tables that are not the first owner's.
    pub named: Vec<(Table, ovsdb::Row)>,
    pub stats: ReadStats,
    /// The cache does not hold the rows read (closely enough).
    pub cache_outdated: bool,
}

pub(super) enum Owned {
    /// Every row marked as one of the owners', with that owner and its table.
    Rows(Vec<(String, Table, ovsdb::Row)>),
    /// Already derived: the cache held exactly what the server listed.
    Derived(Box<Observed>),
}

/// Columns read for an owned row: the managed ones, `_uuid`, and `_version` for the cache.
pub(super) fn full_columns(table: Table) -> Vec<&'static str> {
    table
        .managed_columns()
        .iter()
        .copied()
        .chain(["_uuid", "_version"])
        .collect()
}

/// One select per owner and table of the owned rows' `columns`, and one per named table of
/// the `_uuid` and `name` of rows that are not the first owner's (the server sends few rows
/// when wepoq owns most of the NB; owners of a conflicting row are read afterwards).
fn selects(
    owners: &[String],
    columns: impl Fn(Table) -> Vec<&'static str>,
) -> (Vec<Operation>, Vec<(Option<&str>, Table)>) {
    let mut ops = Vec::new();
    let mut plan = Vec::new();
    for owner in owners {
        for table in Table::ALL {
            ops.push(Operation::select_columns(
                table.name(),
                vec![owner_condition(owner)],
                &columns(table),
            ));
            plan.push((Some(owner.as_str()), table));
        }
    }
    let not_ours: Vec<Condition> = owners
        .first()
        .map(|o| {
            Condition::new(
                "external_ids",
                Function::Excludes,
                ovsdb::Value::map([(OWNER_KEY, o.as_str())]),
            )
        })
        .into_iter()
        .collect();
    for table in Table::ALL.into_iter().filter(Table::has_name_column) {
        ops.push(Operation::select_columns(
            table.name(),
            not_ours.clone(),
            &["_uuid", "name"],
        ));
        plan.push((None, table));
    }
    (ops, plan)
}

type Split = (Vec<(String, Table, ovsdb::Row)>, Vec<(Table, ovsdb::Row)>);

/// The results of [`selects`]: owned rows with their owner and table, and named rows.
fn split(plan: Vec<(Option<&str>, Table)>, results: Vec<OpResult>) -> Split {
    let (mut owned, mut named) = (Vec::new(), Vec::new());
    for ((owner, table), result) in plan.into_iter().zip(results) {
        let OpResult::Select { rows } = result else {
            continue;
        };
        match owner {
            Some(owner) => owned.extend(rows.into_iter().map(|r| (owner.to_owned(), table, r))),
            None => named.extend(rows.into_iter().map(|r| (table, r))),
        }
    }
    (owned, named)
}

/// Every owned row whole, in one transaction.
async fn read_full(
    client: &Client,
    owners: &[String],
    cache: Option<&RowCache>,
) -> Result<Read, ovsdb::Error> {
    let (ops, plan) = selects(owners, full_columns);
    let (owned, named) = split(plan, client.transact(NB_DB, &ops).await?);
    Ok(Read {
        owned: Owned::Rows(owned),
        named,
        stats: ReadStats {
            full_read: true,
            ..ReadStats::default()
        },
        cache_outdated: cache.is_some(),
    })
}

/// The cache's rows, and the observation derived from them as if the server confirms them
/// all (it usually does: computed while it lists the versions, it costs nothing then).
struct Speculation {
    /// Table, `_version` and owner of each cached row.
    versions: HashMap<Uuid, (Table, Uuid, String)>,
    observed: Observed,
}

fn speculate(cache: &RowCache, schema: &Schema) -> Speculation {
    let rows = cache.load();
    let mut versions = HashMap::with_capacity(rows.len());
    let mut owned = Vec::with_capacity(rows.len());
    for CachedRow {
        table,
        version,
        row,
    } in rows
    {
        let (Some(uuid), Some(owner)) = (row.uuid(), owner_mark(&row)) else {
            continue;
        };
        versions.insert(uuid.clone(), (table, version, owner.to_owned()));
        owned.push((owner.to_owned(), table, row));
    }
    Speculation {
        versions,
        observed: derive(owned, schema, None, false),
    }
}

/// Reads the owned rows, from the cache where the server confirms its version. One
/// transaction lists versions (and named rows), a second fetches what the cache lacks. Rows
/// fetched may be newer than the listing: each row is as the server held it at one moment,
/// which is what the transaction's guards check, row by row.
pub(super) async fn read(
    client: &Client,
    schema: &Arc<Schema>,
    owners: &[String],
    cache: Option<&RowCache>,
) -> Result<Read, ovsdb::Error> {
    // Without a file, listing versions first would only add to the full read.
    let Some(file) = cache.filter(|c| c.path().exists()) else {
        return read_full(client, owners, cache).await;
    };
    let started = Instant::now();
    let speculating = {
        let (file, schema) = (file.clone(), schema.clone());
        std::thread::spawn(move || {
            let speculation = speculate(&file, &schema);
            timing_since("observe: row cache loaded and derived", started);
            speculation
        })
    };
    let (ops, plan) = selects(owners, |_| vec!["_uuid", "_version"]);
    let listed = client.transact(NB_DB, &ops).await;
    timing_since("observe: versions listed", started);
    let Ok(Speculation { versions, observed }) = speculating.join() else {
        return read_full(client, owners, cache).await;
    };
    let (listed, named) = split(plan, listed?);
    let listing: Vec<(String, Table, Uuid, Uuid)> = listed
        .into_iter()
        .filter_map(|(owner, table, row)| {
            Some((
                owner,
                table,
                row.uuid()?.clone(),
                row.get("_version")?.as_uuid()?.clone(),
            ))
        })
        .collect();
    let confirmed = |(owner, table, uuid, version): &(String, Table, Uuid, Uuid)| {
        versions
            .get(uuid)
            .is_some_and(|(t, v, o)| t == table && v == version && o == owner)
    };
    if listing.len() == versions.len() && listing.iter().all(confirmed) {
        let stats = ReadStats {
            from_cache: listing.len(),
            ..ReadStats::default()
        };
        return Ok(Read {
            owned: Owned::Derived(Box::new(observed)),
            named,
            stats,
            cache_outdated: false,
        });
    }

    // Something changed since the file was written: keep what the server confirms, fetch
    // the rest, and patch the speculation where they differ (re-deriving it whole would
    // convert every row again).
    let mut patcher = Patcher::for_observed(schema, &observed, |uuid| {
        versions.get(uuid).map(|(_, _, owner)| owner.clone())
    });
    let mut observed = observed;
    let mut rows: HashMap<Uuid, (Table, ovsdb::Row)> = std::mem::take(&mut observed.raw)
        .into_iter()
        .filter_map(|(key, row)| Some((row.uuid()?.clone(), (key.table, row))))
        .collect();
    let mut missing = Vec::new();
    let mut listed = HashSet::with_capacity(listing.len());
    for entry in listing {
        if !(confirmed(&entry) && rows.contains_key(&entry.2)) {
            missing.push(entry.clone());
        }
        listed.insert(entry.2);
    }
    let gone: Vec<Uuid> = rows
        .keys()
        .filter(|uuid| !listed.contains(*uuid))
        .cloned()
        .collect();
    let cache_outdated = missing.len() + gone.len() > REWRITE_AFTER;
    // Fetching row by row costs the server more per row than one select: when the cache
    // holds less than half, read everything.
    if missing.len() > 256 && missing.len() * 2 > listed.len() {
        ovsdb::drop_in_background((rows, observed), true);
        return read_full(client, owners, cache).await;
    }
    let stats = ReadStats {
        from_cache: listed.len() - missing.len(),
        fetched: missing.len(),
        full_read: false,
    };
    let mut touched: Vec<(String, Uuid)> = Vec::with_capacity(missing.len() + gone.len());
    for uuid in gone {
        if let Some((table, _)) = rows.remove(&uuid) {
            touched.push((table.name().to_owned(), uuid));
        }
    }
    if !missing.is_empty() {
        let ops: Vec<Operation> = missing
            .iter()
            .map(|(_, table, uuid, _)| {
                Operation::select_columns(
                    table.name(),
                    vec![Condition::uuid(uuid)],
                    &full_columns(*table),
                )
            })
            .collect();
        for ((owner, table, uuid, _), result) in
            missing.into_iter().zip(client.transact(NB_DB, &ops).await?)
        {
            rows.remove(&uuid);
            let OpResult::Select { rows: fetched } = result else {
                continue;
            };
            // None if the row went meanwhile; not ours any more if its mark changed.
            if let Some(row) = fetched
                .into_iter()
                .find(|r| owner_mark(r) == Some(owner.as_str()))
            {
                rows.insert(uuid.clone(), (table, row));
            }
            touched.push((table.name().to_owned(), uuid));
        }
    }
    patcher.update(
        &mut observed,
        schema,
        |_, uuid| rows.get(uuid).map(|(_, row)| row),
        &touched,
    );
    observed.raw = rows
        .into_iter()
        .filter_map(|(uuid, (_, row))| Some((observed.ids.by_uuid.get(&uuid)?.clone(), row)))
        .collect();
    Ok(Read {
        owned: Owned::Derived(Box::new(observed)),
        named,
        stats,
        cache_outdated,
    })
}

fn timing_since(what: &str, since: Instant) {
    if std::env::var_os("WEPOQ_TIMINGS").is_some() {
        eprintln!(
            "wepoq: {what} after {:.1} ms",
            since.elapsed().as_secs_f64() * 1e3
        );
    }
}
