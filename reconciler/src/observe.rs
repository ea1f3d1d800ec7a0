//! Reads what wepoq owns in the NB: every row marked with an owner being reconciled, plus the
//! names of all rows in named tables (to find rows that carry a wepoq name but are not
//! wepoq's). Without a row cache, one transaction of selects, so the picture is consistent;
//! with one, see [`read`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wepoq_compiler::nb::{self, NAME_KEY, OWNER_KEY, RowKey, Table};

use crate::convert::{RowIds, to_nb_row};
use crate::row_cache::RowCache;

mod derive;
pub(crate) mod patch;
mod read;

use crate::ovsdb::{self, Client, Condition, NB_DB, Operation, Schema, Uuid};
pub use read::ReadStats;
use read::{Owned, Read};

/// A row that carries a name wepoq wants but is not marked as this namespace's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub key: RowKey,
    pub uuid: Uuid,
    /// The owner it is marked with, if another wepoq namespace's; `None` if no wepoq row.
    pub owner: Option<String>,
}

/// Everything read in one observation.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Owned rows per owner, in the compiler's form, sorted by key.
    pub rows: BTreeMap<String, Vec<nb::Row>>,
    /// The owned rows as read, for the guards of the transaction.
    pub raw: HashMap<RowKey, ovsdb::Row>,
    pub ids: RowIds,
    /// Rows with a wanted name that are not the owner's (refused unless adopted).
    pub conflicts: Vec<Conflict>,
    /// Rows that are not wepoq's but live inside an owned row through a strong reference
    /// (another tool's port on a wepoq switch): deleting the owned row would delete them.
    pub foreign_children: BTreeMap<RowKey, Vec<String>>,
    /// How the owned rows were read.
    pub read: ReadStats,
}

impl Observed {
    /// Frees the observation on a thread of its own when it is large (see
    /// [`ovsdb::drop_in_background`]).
    pub fn free_in_background(self) {
        let large = self.raw.len() > 1000;
        ovsdb::drop_in_background(self, large);
    }

    /// A hash of the owned rows read; a saved plan carries it and is stale once it differs.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        for (key, digest) in self.digests() {
            hasher.update(key.as_bytes());
            hasher.update(digest.as_bytes());
        }
        format!("sha256:{}", hex(&hasher.finalize()))
    }

    /// A short digest per owned row, keyed `Table name`, to say what moved under a stale plan.
    pub fn digests(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .rows
            .values()
            .flatten()
            .map(|row| {
                let mut hasher = Sha256::new();
                if let Some(uuid) = self.ids.by_key.get(&row.key) {
                    hasher.update(uuid.as_str().as_bytes());
                }
                for (column, value) in row.columns() {
                    hasher.update(column.as_bytes());
                    hash_value(&mut hasher, value);
                }
                (row.key.to_string(), hex(&hasher.finalize()[..8]))
            })
            .collect();
        out.sort_unstable();
        out
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Feeds a value to the hasher without building its text: tagged and length-prefixed, so
/// different values cannot run together into the same bytes.
fn hash_value(h: &mut Sha256, value: &nb::Value) {
    fn atom(h: &mut Sha256, a: &nb::Atom) {
        match a {
            nb::Atom::Integer(i) => {
                h.update([b'i']);
                h.update(i.to_be_bytes());
            }
            nb::Atom::Boolean(b) => h.update([b'b', u8::from(*b)]),
            nb::Atom::String(s) => {
                h.update([b's']);
                h.update((s.len() as u64).to_be_bytes());
                h.update(s.as_bytes());
            }
            nb::Atom::Ref(k) => {
                h.update([b'r']);
                h.update(k.table.name().as_bytes());
                h.update((k.name.len() as u64).to_be_bytes());
                h.update(k.name.as_bytes());
            }
        }
    }
    match value {
        nb::Value::Atom(a) => atom(h, a),
        nb::Value::Set(s) => {
            h.update([b'S']);
            h.update((s.len() as u64).to_be_bytes());
            s.iter().for_each(|a| atom(h, a));
        }
        nb::Value::Map(m) => {
            h.update([b'M']);
            h.update((m.len() as u64).to_be_bytes());
            for (k, v) in m.iter() {
                atom(h, k);
                atom(h, v);
            }
        }
    }
}

/// Rows marked as `owner`'s.
pub(crate) fn owner_condition(owner: &str) -> Condition {
    Condition::includes("external_ids", ovsdb::Value::map([(OWNER_KEY, owner)]))
}

/// Observes the NB for `owners`. `wanted` names the rows the desired state holds, so that a
/// foreign row with one of those names is reported as a conflict. With a `cache`, only the
/// rows it lacks (or holds in an older version) are read whole, and it is brought up to date.
pub async fn observe(
    client: &Client,
    schema: &Arc<Schema>,
    owners: &[String],
    wanted: &HashSet<RowKey>,
    cache: Option<&RowCache>,
) -> Result<Observed, ovsdb::Error> {
    let started = std::time::Instant::now();
    let Read {
        owned,
        named,
        stats,
        cache_outdated,
    } = read::read(client, schema, owners, cache).await?;
    if std::env::var_os("WEPOQ_TIMINGS").is_some() {
        eprintln!(
            "wepoq: observe: rows read in {:.1} ms ({stats:?})",
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    let mut observed = match owned {
        Owned::Derived(observed) => {
            if let Some(cache) = cache.filter(|_| cache_outdated) {
                derive::store(
                    cache,
                    observed.raw.iter().map(|(key, row)| (key.table, row)),
                );
            }
            *observed
        }
        Owned::Rows(rows) => derive::derive(rows, schema, cache.filter(|_| cache_outdated), true),
    };
    observed.read = stats;
    for (table, row) in named {
        let (Some(name), Some(uuid)) = (row.str("name"), row.uuid()) else {
            continue;
        };
        let key = RowKey::new(table, name);
        if wanted.contains(&key) && !observed.ids.by_uuid.contains_key(uuid) {
            observed.conflicts.push(Conflict {
                key,
                uuid: uuid.clone(),
                owner: None,
            });
        }
    }
    // Conflicts are rare; say whose rows they are with one more read (one transaction).
    if !observed.conflicts.is_empty() {
        let ops: Vec<Operation> = observed
            .conflicts
            .iter()
            .map(|c| {
                Operation::select_columns(
                    c.key.table.name(),
                    vec![Condition::uuid(&c.uuid)],
                    &["external_ids"],
                )
            })
            .collect();
        for (c, result) in observed
            .conflicts
            .iter_mut()
            .zip(client.transact(NB_DB, &ops).await?)
        {
            c.owner = result
                .rows()
                .first()
                .and_then(|r| r.get("external_ids"))
                .and_then(|ids| ids.get(OWNER_KEY))
                .and_then(ovsdb::Atom::as_str)
                .map(str::to_owned);
        }
    }
    for owner in owners {
        observed.rows.entry(owner.clone()).or_default();
    }
    observed.conflicts.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(observed)
}

/// The key a row's ownership marks give it, and its UUID; `None` for a row without a
/// `wepoq.net/name` mark.
pub(crate) fn marked_key(table: Table, row: &ovsdb::Row) -> Option<(RowKey, Uuid)> {
    let name = row.get("external_ids")?.get(NAME_KEY)?.as_str()?;
    Some((RowKey::new(table, name), row.uuid()?.clone()))
}

/// The owner mark of a row.
pub(crate) fn owner_mark(row: &ovsdb::Row) -> Option<&str> {
    row.get("external_ids")?.get(OWNER_KEY)?.as_str()
}

/// Members of an owned row's strong-reference columns that are not wepoq's (another tool's
/// port on a wepoq switch): deleting the row would delete them too.
pub(crate) fn foreign_children(table: Table, row: &ovsdb::Row, ids: &RowIds) -> Vec<String> {
    let mut foreign = Vec::new();
    for (_, column) in crate::convert::strong_children(table) {
        let Some(ovsdb::Value::Set(members)) = row.get(*column) else {
            continue;
        };
        foreign.extend(
            members
                .iter()
                .filter_map(ovsdb::Atom::as_uuid)
                .filter(|u| !ids.by_uuid.contains_key(*u))
                .map(|u| format!("{column} {}", u.as_str())),
        );
    }
    foreign
}

/// Takes over conflicting rows (`--adopt`): reads them whole and treats them as owned by
/// `owner_of(key)`, so the plan rewrites their columns and ownership marks.
pub async fn adopt(
    client: &Client,
    schema: &Schema,
    observed: &mut Observed,
    owner_of: impl Fn(&RowKey) -> Option<String>,
) -> Result<(), ovsdb::Error> {
    let conflicts = std::mem::take(&mut observed.conflicts);
    for c in &conflicts {
        observed.ids.insert(c.key.clone(), c.uuid.clone());
    }
    let adopted: Vec<(Conflict, String)> = conflicts
        .into_iter()
        .filter_map(|c| owner_of(&c.key).map(|o| (c, o)))
        .collect();
    if adopted.is_empty() {
        return Ok(());
    }
    // Every adopted row whole, in one transaction.
    let ops: Vec<Operation> = adopted
        .iter()
        .map(|(c, _)| {
            Operation::select_columns(
                c.key.table.name(),
                vec![Condition::uuid(&c.uuid)],
                &read::full_columns(c.key.table),
            )
        })
        .collect();
    let results = client.transact(NB_DB, &ops).await?;
    for ((c, owner), result) in adopted.into_iter().zip(results) {
        if let Some(row) = result.rows().first().cloned() {
            let nb_row = to_nb_row(c.key.clone(), &row, schema, &observed.ids);
            let list = observed.rows.entry(owner).or_default();
            list.push(nb_row);
            list.sort_by(|a, b| a.key.cmp(&b.key));
            observed.raw.insert(c.key, row);
        }
    }
    Ok(())
}
