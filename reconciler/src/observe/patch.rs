//! Keeping a derived observation current row by row: the rows that changed are converted
//! again, and so are the rows that refer to a row whose key appeared, vanished or moved
//! (a reference converts to that key, or is dropped when the row is not ours). Used by the
//! connected reconciler (rows a monitor reports) and by reads through the row cache (rows
//! the cache held in an older version).

use std::collections::{HashMap, HashSet};

use wepoq_compiler::nb::{self, RowKey, Table};

use super::{Observed, foreign_children, marked_key, owner_mark};
use crate::convert::to_nb_row;
use crate::ovsdb::{self, Schema, Uuid};

/// What a patch needs to know beyond the observation itself.
pub(crate) struct Patcher {
    /// Owner and key of every owned row in the observation, by UUID.
    owned: HashMap<Uuid, (String, RowKey)>,
    /// Tables with a managed column that references rows: only their rows can convert
    /// differently when another row's key changes.
    referring: HashSet<Table>,
}

impl Patcher {
    /// For an empty observation.
    pub(crate) fn new(schema: &Schema) -> Patcher {
        let referring = Table::ALL
            .into_iter()
            .filter(|t| {
                t.managed_columns().iter().any(|c| {
                    schema.column(t.name(), c).is_some_and(|ty| {
                        ty.key.ref_table.is_some()
                            || ty.value.as_ref().is_some_and(|v| v.ref_table.is_some())
                    })
                })
            })
            .collect();
        Patcher {
            owned: HashMap::new(),
            referring,
        }
    }

    /// For `observed` as derived in full, each row's owner known by UUID.
    pub(crate) fn for_observed(
        schema: &Schema,
        observed: &Observed,
        owner_of: impl Fn(&Uuid) -> Option<String>,
    ) -> Patcher {
        let mut patcher = Patcher::new(schema);
        patcher.owned = observed
            .ids
            .by_uuid
            .iter()
            .filter_map(|(uuid, key)| Some((uuid.clone(), (owner_of(uuid)?, key.clone()))))
            .collect();
        patcher
    }

    pub(crate) fn clear(&mut self) {
        self.owned.clear();
    }

    /// Re-derives `rows` (table name, UUID) in `observed` from `lookup`, which gives each
    /// owned row as it is now (`None`: gone, or not ours).
    pub(crate) fn update<'a>(
        &mut self,
        observed: &mut Observed,
        schema: &Schema,
        lookup: impl Fn(&str, &Uuid) -> Option<&'a ovsdb::Row>,
        rows: &[(String, Uuid)],
    ) {
        let mut edits = Edits::default();
        // 1. Forget what these rows were, and learn what they are now (their keys first:
        //    converting one row resolves references to the others).
        let mut remapped: HashSet<Uuid> = HashSet::new();
        let mut now: Vec<(String, RowKey, Uuid)> = Vec::new();
        for (table_name, uuid) in rows {
            let Some(table) = Table::from_name(table_name) else {
                continue;
            };
            let before = self.owned.remove(uuid);
            if let Some((owner, key)) = &before {
                if let Some(uuid) = observed.ids.by_key.remove(key) {
                    observed.ids.by_uuid.remove(&uuid);
                }
                edits.forget(observed, owner, key);
            }
            let after = lookup(table_name, uuid).and_then(|row| {
                let (key, _) = marked_key(table, row)?;
                Some((owner_mark(row)?.to_owned(), key))
            });
            if before != after {
                remapped.insert(uuid.clone());
            }
            if let Some((owner, key)) = after {
                observed.ids.insert(key.clone(), uuid.clone());
                self.owned
                    .insert(uuid.clone(), (owner.clone(), key.clone()));
                now.push((owner, key, uuid.clone()));
            }
        }
        // 2. Rows that refer to a row whose key appeared, vanished or moved convert
        //    differently now (a reference to a row that is not ours is dropped).
        let fresh: HashSet<&Uuid> = now.iter().map(|(_, _, u)| u).collect();
        let mut dependents = Vec::new();
        if !remapped.is_empty() {
            for (uuid, (owner, key)) in self.owned.iter() {
                if !self.referring.contains(&key.table) || fresh.contains(uuid) {
                    continue;
                }
                let Some(row) = lookup(key.table.name(), uuid) else {
                    continue;
                };
                if refers_to_any(row, &remapped) {
                    dependents.push((owner.clone(), key.clone(), uuid.clone()));
                }
            }
            for (owner, key, _) in &dependents {
                edits.forget(observed, owner, key);
            }
        }
        // 3. Convert.
        for (owner, key, uuid) in now.into_iter().chain(dependents) {
            let Some(row) = lookup(key.table.name(), &uuid) else {
                continue;
            };
            let foreign = foreign_children(key.table, row, &observed.ids);
            if !foreign.is_empty() {
                observed.foreign_children.insert(key.clone(), foreign);
            }
            edits
                .added
                .entry(owner)
                .or_default()
                .push(to_nb_row(key, row, schema, &observed.ids));
        }
        edits.apply(observed);
    }
}

/// Changes to the sorted row lists, applied together: one at a time is a shift of the
/// whole list each, which on the first reply (every row at once) would be quadratic.
#[derive(Default)]
struct Edits {
    removed: HashMap<String, HashSet<RowKey>>,
    added: HashMap<String, Vec<nb::Row>>,
}

impl Edits {
    /// Drops a row's converted form (its key mapping is the caller's business).
    fn forget(&mut self, observed: &mut Observed, owner: &str, key: &RowKey) {
        observed.foreign_children.remove(key);
        self.removed
            .entry(owner.to_owned())
            .or_default()
            .insert(key.clone());
    }

    fn apply(mut self, observed: &mut Observed) {
        let owners: HashSet<String> = self
            .removed
            .keys()
            .chain(self.added.keys())
            .cloned()
            .collect();
        for owner in owners {
            let rows = observed.rows.entry(owner.clone()).or_default();
            let removed = self.removed.remove(&owner).unwrap_or_default();
            let added = self.added.remove(&owner).unwrap_or_default();
            if removed.len() + added.len() <= 32 {
                for key in &removed {
                    if let Ok(i) = rows.binary_search_by(|r| r.key.cmp(key)) {
                        rows.remove(i);
                    }
                }
                for row in added {
                    match rows.binary_search_by(|r| r.key.cmp(&row.key)) {
                        Ok(i) => rows[i] = row,
                        Err(i) => rows.insert(i, row),
                    }
                }
            } else {
                rows.retain(|r| !removed.contains(&r.key));
                rows.extend(added);
                rows.sort_by(|a, b| a.key.cmp(&b.key));
                // Copied once more in key order, so that each diff, which walks the rows in
                // that order, reads memory in order too (converted in uuid order, they lay
                // scattered: the diff ran three times slower).
                *rows = rows.to_vec();
            }
        }
    }
}

fn refers_to_any(row: &ovsdb::Row, uuids: &HashSet<Uuid>) -> bool {
    row.iter().any(|(_, value)| match value {
        ovsdb::Value::Set(set) => set
            .iter()
            .filter_map(ovsdb::Atom::as_uuid)
            .any(|u| uuids.contains(u)),
        ovsdb::Value::Map(map) => map.iter().any(|(k, v)| {
            [k, v]
                .into_iter()
                .filter_map(ovsdb::Atom::as_uuid)
                .any(|u| uuids.contains(u))
        }),
    })
}
