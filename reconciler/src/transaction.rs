//! Turns a plan into ONE OVSDB transaction: guards on what was read, inserts with the
//! references that keep them, membership changes by `mutate`, deletes by reference removal
//! for non-root rows, and a comment naming the spec.
//!
//! Guards: every row the plan changes or deletes must still hold what was read (a `wait` on
//! its UUID); every new row whose name is not a unique index must not exist yet (ACLs inside a
//! port group created by the same transaction aside: the group's index covers them). New rows
//! whose name is indexed (ports, port groups) need no guard: a twin fails the commit with a
//! constraint violation, which the caller treats like a failed guard. Rows the plan does not
//! touch are not guarded: guarding the whole owned set would cost a scan of every owned row
//! per apply, and a concurrent change to an untouched row is simply seen by the next plan.

use std::collections::{HashMap, HashSet};

use wepoq_compiler::nb::{Atom, AtomMap, AtomSet, NAME_KEY, OWNER_KEY, RowKey, Value as NbValue};
use wepoq_compiler::plan::{Action, Change, FieldChange};

use crate::convert::{RowIds, strong_parents, to_ovsdb_value};
use crate::observe::Observed;
use crate::ovsdb::{self, Condition, Mutation, Operation, WaitUntil};

/// Builds the operations for `changes` against what `observed` read.
pub fn build(changes: &[Change], observed: &Observed, comment: &str) -> Vec<Operation> {
    let ids: &RowIds = &observed.ids;
    // Named-uuids for the rows this transaction creates: `r0`, `r1`, ... (the alphabet OVSDB
    // allows), so references between new rows resolve within the transaction.
    let named: HashMap<RowKey, String> = changes
        .iter()
        .filter(|c| c.action == Action::Create)
        .enumerate()
        .map(|(i, c)| (c.key.clone(), format!("r{i}")))
        .collect();

    let mut ops = vec![Operation::comment(comment)];
    guard_read_rows(&mut ops, changes, observed);
    guard_new_names(&mut ops, changes);

    for change in changes.iter().filter(|c| c.action == Action::Create) {
        let mut row = ovsdb::Row::new();
        // An empty set or map is every column's default: left out, the server has less to
        // parse (on a 10k-endpoint namespace, a fifth of the columns inserted).
        for (column, after) in change
            .fields
            .iter()
            .filter_map(|f| Some((&f.column, f.after.as_ref()?)))
        {
            if !is_empty_container(after) {
                row.insert(column, to_ovsdb_value(after, ids, &named));
            }
        }
        ops.push(Operation::insert_named(
            change.key.table.name(),
            row,
            &named[&change.key],
        ));
    }
    for change in changes.iter().filter(|c| c.action == Action::Update) {
        let Some(uuid) = ids.by_key.get(&change.key) else {
            continue;
        };
        let table = change.key.table.name();
        let mut row = ovsdb::Row::new();
        let mut mutations = Vec::new();
        for f in &change.fields {
            match delta(f) {
                // Shared membership: add and remove only wepoq's own members.
                Some(Delta::Set { added, removed }) => {
                    if !added.is_empty() {
                        mutations.push(Mutation::insert(
                            &f.column,
                            to_ovsdb_value(&NbValue::Set(added), ids, &named),
                        ));
                    }
                    if !removed.is_empty() {
                        mutations.push(Mutation::delete(
                            &f.column,
                            to_ovsdb_value(&NbValue::Set(removed), ids, &named),
                        ));
                    }
                }
                // Maps: the entries that differ (a revalued key is deleted, then inserted:
                // OVSDB's map insert never overwrites).
                Some(Delta::Map { removed, inserted }) => {
                    if !removed.is_empty() {
                        mutations.push(Mutation::delete(
                            &f.column,
                            to_ovsdb_value(&NbValue::Set(removed), ids, &named),
                        ));
                    }
                    if !inserted.is_empty() {
                        mutations.push(Mutation::insert(
                            &f.column,
                            to_ovsdb_value(&NbValue::Map(inserted), ids, &named),
                        ));
                    }
                }
                None => {
                    if let Some(after) = &f.after {
                        row.insert(&f.column, to_ovsdb_value(after, ids, &named));
                    }
                }
            }
        }
        if !row.is_empty() {
            ops.push(Operation::update(table, vec![Condition::uuid(uuid)], row));
        }
        if !mutations.is_empty() {
            ops.push(Operation::mutate(
                table,
                vec![Condition::uuid(uuid)],
                mutations,
            ));
        }
    }
    for change in changes.iter().filter(|c| c.action == Action::Destroy) {
        let Some(uuid) = ids.by_key.get(&change.key) else {
            continue;
        };
        if change.key.table.is_root() {
            ops.push(Operation::delete(
                change.key.table.name(),
                vec![Condition::uuid(uuid)],
            ));
        } else {
            // A non-root row lives while a strong reference holds it: remove it from every
            // parent (ours or not), and OVSDB collects it.
            for (parent, column) in strong_parents(change.key.table) {
                let member = ovsdb::Value::uuid(uuid.clone());
                ops.push(Operation::mutate(
                    parent,
                    vec![Condition::includes(column, member.clone())],
                    vec![Mutation::delete(column, member)],
                ));
            }
        }
    }
    ops
}

/// How a changed column is written when the row already exists: by its delta (a `mutate`), or
/// whole (an `update`, on `None`).
enum Delta {
    /// Reference sets, shared with other writers (another tool's port on our switch).
    Set { added: AtomSet, removed: AtomSet },
    /// Maps, which can be large (one DNS row holds a record per endpoint name).
    Map { removed: AtomSet, inserted: AtomMap },
}

fn delta(f: &FieldChange) -> Option<Delta> {
    if is_ref_set(f) {
        return f
            .set_delta()
            .map(|(added, removed)| Delta::Set { added, removed });
    }
    f.map_delta()
        .map(|(removed, inserted)| Delta::Map { removed, inserted })
}

fn is_empty_container(value: &NbValue) -> bool {
    matches!(value, NbValue::Set(s) if s.is_empty())
        || matches!(value, NbValue::Map(m) if m.is_empty())
}

fn is_ref_set(f: &FieldChange) -> bool {
    [&f.before, &f.after]
        .into_iter()
        .flatten()
        .any(NbValue::is_ref_set)
}

/// Every row the plan changes or deletes still exists and holds what was read, column by
/// column. Columns written by their delta are left out: the delta is right whatever else
/// happened to them meanwhile, and guarding a map of thousands of entries would send it
/// whole. Shared reference sets are never guarded (other writers add to them).
fn guard_read_rows(ops: &mut Vec<Operation>, changes: &[Change], observed: &Observed) {
    for change in changes.iter().filter(|c| c.action != Action::Create) {
        let (Some(uuid), Some(raw)) = (
            observed.ids.by_key.get(&change.key),
            observed.raw.get(&change.key),
        ) else {
            continue;
        };
        // Each owner's rows are sorted by key.
        let current = observed.rows.values().find_map(|rows| {
            rows.binary_search_by(|r| r.key.cmp(&change.key))
                .ok()
                .map(|i| &rows[i])
        });
        let by_delta: Vec<&str> = change
            .fields
            .iter()
            .filter(|f| delta(f).is_some())
            .map(|f| f.column.as_str())
            .collect();
        let columns: Vec<&str> = std::iter::once("_uuid")
            .chain(change.key.table.managed_columns().iter().copied())
            .filter(|c| {
                !current
                    .and_then(|r| r.column(c))
                    .is_some_and(NbValue::is_ref_set)
            })
            .filter(|c| !by_delta.contains(c))
            .filter(|c| raw.contains_key(*c))
            .collect();
        let mut expected = ovsdb::Row::new();
        for c in &columns {
            expected.insert(c, raw[*c].clone());
        }
        ops.push(Operation::wait(
            change.key.table.name(),
            vec![Condition::uuid(uuid)],
            &columns,
            WaitUntil::Equal,
            vec![expected],
        ));
    }
}

/// Names that are not a unique index (switches, routers, load balancers) get a "must not
/// exist" guard, or a concurrent writer could leave two rows of one name. Rows without a
/// name column (ACLs, DNS) are found by their marks, which costs the server a scan of the
/// table per guard; an ACL that lives only inside a port group created by this same
/// transaction needs none (a twin of the group fails its unique name, and takes its ACLs
/// with it), which spares a fresh namespace thousands of scans.
fn guard_new_names(ops: &mut Vec<Operation>, changes: &[Change]) {
    let creates = || changes.iter().filter(|c| c.action == Action::Create);
    let inside_new_parent: HashSet<&RowKey> = creates()
        .flat_map(|c| c.fields.iter().filter_map(|f| f.after.as_ref()))
        .filter_map(|v| match v {
            NbValue::Set(set) => Some(set.iter()),
            _ => None,
        })
        .flatten()
        .filter_map(|a| match a {
            Atom::Ref(key) if !key.table.is_root() => Some(key),
            _ => None,
        })
        .collect();
    for change in creates() {
        let table = change.key.table;
        if table.has_name_column() && !table.name_is_indexed() {
            ops.push(Operation::wait(
                table.name(),
                vec![Condition::eq("name", change.key.name.as_str())],
                &["_uuid"],
                WaitUntil::Equal,
                vec![],
            ));
        } else if !table.has_name_column() && !inside_new_parent.contains(&change.key) {
            let marks = ovsdb::Value::map([
                (OWNER_KEY, change.owner.as_str()),
                (NAME_KEY, change.key.name.as_str()),
            ]);
            ops.push(Operation::wait(
                table.name(),
                vec![Condition::includes("external_ids", marks)],
                &["_uuid"],
                WaitUntil::Equal,
                vec![],
            ));
        }
    }
}
