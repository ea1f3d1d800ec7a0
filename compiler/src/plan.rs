//! The plan: what must change to turn observed rows into desired ones. Pure data, built by
//! one diff whatever the source of the observed rows (nothing, for an offline plan, or a
//! live NB). Creating from an empty database is just a diff against nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::nb::{AtomSet, Row, RowKey, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Destroy,
}

/// One column's change. `before` is absent on create, `after` on destroy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    pub column: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl FieldChange {
    /// For reference sets: the members added and removed. Such columns are shared with other
    /// writers (a foreign port on our switch), so they change by membership, never wholesale.
    pub fn set_delta(&self) -> Option<(AtomSet, AtomSet)> {
        let empty = AtomSet::default();
        let before = match &self.before {
            Some(Value::Set(s)) => s,
            None => &empty,
            _ => return None,
        };
        let after = match &self.after {
            Some(Value::Set(s)) => s,
            None => &empty,
            _ => return None,
        };
        Some((after.difference(before), before.difference(after)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub action: Action,
    pub key: RowKey,
    /// The owner (namespace) of the row.
    pub owner: String,
    pub fields: Vec<FieldChange>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
}

impl Summary {
    pub fn is_empty(&self) -> bool {
        self.add + self.change + self.destroy == 0
    }
}

pub fn summarize(changes: &[Change]) -> Summary {
    let mut s = Summary::default();
    for c in changes {
        match c.action {
            Action::Create => s.add += 1,
            Action::Update => s.change += 1,
            Action::Destroy => s.destroy += 1,
        }
    }
    s
}

/// Diffs desired against observed rows of one owner. Both sides list only the columns wepoq
/// manages, with values already canonical (see `nb::Value`), so equal means equal.
pub fn diff(owner: &str, desired: &[Row], observed: &[Row]) -> Vec<Change> {
    let observed_by_key: BTreeMap<&RowKey, &Row> = observed.iter().map(|r| (&r.key, r)).collect();
    let desired_keys: BTreeSet<&RowKey> = desired.iter().map(|r| &r.key).collect();
    let mut changes = Vec::new();
    for row in desired {
        match observed_by_key.get(&row.key) {
            None => changes.push(Change {
                action: Action::Create,
                key: row.key.clone(),
                owner: owner.to_string(),
                fields: row.columns().map(|(c, v)| FieldChange { column: c.to_string(), before: None, after: Some(v.clone()) }).collect(),
            }),
            Some(old) => {
                let fields: Vec<FieldChange> = row
                    .columns()
                    .filter_map(|(c, v)| {
                        let before = old.column(c);
                        (before != Some(v)).then(|| FieldChange { column: c.to_string(), before: before.cloned(), after: Some(v.clone()) })
                    })
                    .collect();
                if !fields.is_empty() {
                    changes.push(Change { action: Action::Update, key: row.key.clone(), owner: owner.to_string(), fields });
                }
            }
        }
    }
    for row in observed {
        if !desired_keys.contains(&row.key) {
            changes.push(Change {
                action: Action::Destroy,
                key: row.key.clone(),
                owner: owner.to_string(),
                fields: row.columns().map(|(c, v)| FieldChange { column: c.to_string(), before: Some(v.clone()), after: None }).collect(),
            });
        }
    }
    changes.sort_by(|a, b| a.key.cmp(&b.key));
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nb::Table;

    fn sw(name: &str, ports: &[&str]) -> Row {
        Row::new(Table::LogicalSwitch, name)
            .with("name", Value::str(name))
            .with("ports", Value::refs(Table::LogicalSwitchPort, ports.iter().map(|p| p.to_string())))
    }

    #[test]
    fn create_update_destroy() {
        let desired = vec![sw("a", &["p1", "p2"]), sw("b", &[])];
        let observed = vec![sw("a", &["p1"]), sw("c", &[])];
        let changes = diff("ns.x", &desired, &observed);
        let actions: Vec<_> = changes.iter().map(|c| (c.action, c.key.name.as_str())).collect();
        assert_eq!(actions, [(Action::Update, "a"), (Action::Create, "b"), (Action::Destroy, "c")]);
        let (added, removed) = changes[0].fields[0].set_delta().unwrap();
        assert_eq!(added.len(), 1);
        assert!(removed.is_empty());
    }

    #[test]
    fn equal_rows_make_no_change() {
        let rows = vec![sw("a", &["p2", "p1"])];
        assert!(diff("ns.x", &rows, &[sw("a", &["p1", "p2"])]).is_empty());
    }
}

/// Where the observed rows came from: nothing (offline) or a live NB, with a fingerprint of
/// what was read so that a saved plan can be refused once the NB has moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Nothing,
    /// `rows` holds a short digest per owned row (`Table name`), to say what moved.
    Live { fingerprint: String, rows: Vec<(String, String)> },
}

/// A complete plan: the changes plus what they were computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `sha256:...` of the spec texts the desired state came from.
    pub spec_hash: String,
    /// Owners (namespace FQDNs) the plan covers.
    pub namespaces: Vec<String>,
    pub observed: Observed,
    pub changes: Vec<Change>,
}

impl Plan {
    pub fn summary(&self) -> Summary {
        summarize(&self.changes)
    }
}
