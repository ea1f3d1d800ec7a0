//! The plan: what must change to turn observed rows into desired ones. Pure data, built by
//! one diff whatever the source of the observed rows (nothing, for an offline plan, or a
//! live NB). Creating from an empty database is just a diff against nothing.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde::Serialize;

use crate::containers::{ContainerAction, ContainerChange};
use crate::nb::{AtomMap, AtomSet, Row, RowKey, Value};

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
        let (before, after) = self.sides(&empty, |v| match v {
            Value::Set(s) => Some(s),
            _ => None,
        })?;
        Some((after.difference(before), before.difference(after)))
    }

    /// Both sides as the kind `pick` takes (an absent side as `empty`); `None` when a side is
    /// of another kind.
    fn sides<'a, T>(
        &'a self,
        empty: &'a T,
        pick: fn(&'a Value) -> Option<&'a T>,
    ) -> Option<(&'a T, &'a T)> {
        let side = |value: &'a Option<Value>| value.as_ref().map_or(Some(empty), pick);
        Some((side(&self.before)?, side(&self.after)?))
    }

    /// For maps: the keys to remove (gone or revalued) and the pairs to insert (new or
    /// revalued), so a map with thousands of entries (the namespace's DNS records) changes by
    /// the entries that differ rather than being rewritten whole.
    pub fn map_delta(&self) -> Option<(AtomSet, AtomMap)> {
        let empty = AtomMap::default();
        let (before, after) = self.sides(&empty, |v| match v {
            Value::Map(m) => Some(m),
            _ => None,
        })?;
        // One merge of the two key-sorted maps (the DNS row holds a record per endpoint).
        let (mut removed, mut inserted) = (Vec::new(), Vec::new());
        let (mut b, mut a) = (before.iter().peekable(), after.iter().peekable());
        loop {
            match (b.peek(), a.peek()) {
                (None, None) => break,
                (Some((k, _)), None) => {
                    removed.push((*k).clone());
                    b.next();
                }
                (None, Some((k, v))) => {
                    inserted.push(((*k).clone(), (*v).clone()));
                    a.next();
                }
                (Some((kb, vb)), Some((ka, va))) => match kb.cmp(ka) {
                    Ordering::Less => {
                        removed.push((*kb).clone());
                        b.next();
                    }
                    Ordering::Greater => {
                        inserted.push(((*ka).clone(), (*va).clone()));
                        a.next();
                    }
                    Ordering::Equal => {
                        if vb != va {
                            removed.push((*kb).clone());
                            inserted.push(((*ka).clone(), (*va).clone()));
                        }
                        b.next();
                        a.next();
                    }
                },
            }
        }
        let (removed, inserted): (AtomSet, AtomMap) = (
            removed.into_iter().collect(),
            inserted.into_iter().collect(),
        );
        Some((removed, inserted))
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
///
/// A merge of the two sides in key order (the compiler emits rows sorted and observations
/// are sorted; anything else is sorted here first): on a NB of 50k rows a map of keys per
/// side cost more than the comparison itself.
pub fn diff(owner: &str, desired: &[Row], observed: &[Row]) -> Vec<Change> {
    let desired = sorted(desired);
    let observed = sorted(observed);
    let (mut d, mut o) = (desired.iter().peekable(), observed.iter().peekable());
    let mut changes = Vec::new();
    loop {
        let order = match (d.peek(), o.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(want), Some(have)) => want.key.cmp(&have.key),
        };
        match order {
            Ordering::Less => changes.push(create(owner, d.next().expect("peeked"))),
            Ordering::Greater => changes.push(destroy(owner, o.next().expect("peeked"))),
            Ordering::Equal => {
                let (want, have) = (d.next().expect("peeked"), o.next().expect("peeked"));
                changes.extend(update(owner, want, have));
            }
        }
    }
    changes
}

/// The rows in key order, borrowed as they are when they already are (the usual case).
fn sorted(rows: &[Row]) -> Cow<'_, [Row]> {
    if rows.windows(2).all(|w| w[0].key <= w[1].key) {
        Cow::Borrowed(rows)
    } else {
        let mut owned = rows.to_vec();
        owned.sort_by(|a, b| a.key.cmp(&b.key));
        Cow::Owned(owned)
    }
}

fn create(owner: &str, row: &Row) -> Change {
    let fields = row
        .columns()
        .map(|(c, v)| FieldChange {
            column: c.to_string(),
            before: None,
            after: Some(v.clone()),
        })
        .collect();
    Change {
        action: Action::Create,
        key: row.key.clone(),
        owner: owner.to_string(),
        fields,
    }
}

fn destroy(owner: &str, row: &Row) -> Change {
    let fields = row
        .columns()
        .map(|(c, v)| FieldChange {
            column: c.to_string(),
            before: Some(v.clone()),
            after: None,
        })
        .collect();
    Change {
        action: Action::Destroy,
        key: row.key.clone(),
        owner: owner.to_string(),
        fields,
    }
}

fn update(owner: &str, want: &Row, have: &Row) -> Option<Change> {
    if want == have {
        return None;
    }
    let fields: Vec<FieldChange> = want
        .columns()
        .filter_map(|(c, v)| {
            let before = have.column(c);
            (before != Some(v)).then(|| FieldChange {
                column: c.to_string(),
                before: before.cloned(),
                after: Some(v.clone()),
            })
        })
        .collect();
    (!fields.is_empty()).then(|| Change {
        action: Action::Update,
        key: want.key.clone(),
        owner: owner.to_string(),
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nb::{Atom, Table};

    fn sw(name: &str, ports: &[&str]) -> Row {
        Row::new(Table::LogicalSwitch, name)
            .with("name", Value::str(name))
            .with(
                "ports",
                Value::refs(
                    Table::LogicalSwitchPort,
                    ports.iter().map(|p| p.to_string()),
                ),
            )
    }

    fn assert_update_a_create_b_destroy_c(changes: &[Change]) {
        let actions: Vec<_> = changes
            .iter()
            .map(|c| (c.action, c.key.name.as_str()))
            .collect();
        assert_eq!(
            actions,
            [
                (Action::Update, "a"),
                (Action::Create, "b"),
                (Action::Destroy, "c")
            ]
        );
    }

    #[test]
    fn create_update_destroy() {
        let desired = vec![sw("a", &["p1", "p2"]), sw("b", &[])];
        let observed = vec![sw("a", &["p1"]), sw("c", &[])];
        let changes = diff("ns.x", &desired, &observed);
        assert_update_a_create_b_destroy_c(&changes);
        let (added, removed) = changes[0].fields[0].set_delta().unwrap();
        assert_eq!(added.len(), 1);
        assert!(removed.is_empty());
    }

    #[test]
    fn map_delta_names_only_the_entries_that_differ() {
        let map = |pairs: &[(&str, &str)]| {
            Value::Map(
                pairs
                    .iter()
                    .map(|(k, v)| (Atom::String(k.to_string()), Atom::String(v.to_string())))
                    .collect(),
            )
        };
        let change = FieldChange {
            column: "records".into(),
            before: Some(map(&[("a", "1"), ("b", "2"), ("c", "3")])),
            after: Some(map(&[("a", "1"), ("b", "9"), ("d", "4")])),
        };
        let (removed, inserted) = change.map_delta().unwrap();
        let keys: Vec<String> = removed.iter().map(ToString::to_string).collect();
        assert_eq!(keys, ["\"b\"", "\"c\""]);
        assert_eq!(Value::Map(inserted), map(&[("b", "9"), ("d", "4")]));
        assert!(
            FieldChange {
                column: "name".into(),
                before: Some(Value::str("x")),
                after: Some(Value::str("y"))
            }
            .map_delta()
            .is_none()
        );
    }

    #[test]
    fn unsorted_sides_diff_like_sorted_ones() {
        let desired = vec![sw("d", &[]), sw("a", &["p1", "p2"]), sw("b", &[])];
        let observed = vec![sw("c", &[]), sw("a", &["p1"]), sw("d", &[])];
        let mut sorted_desired = desired.clone();
        sorted_desired.sort_by(|x, y| x.key.cmp(&y.key));
        let mut sorted_observed = observed.clone();
        sorted_observed.sort_by(|x, y| x.key.cmp(&y.key));
        let changes = diff("ns.x", &desired, &observed);
        assert_eq!(changes, diff("ns.x", &sorted_desired, &sorted_observed));
        assert_update_a_create_b_destroy_c(&changes);
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
    Live {
        fingerprint: String,
        rows: Vec<(String, String)>,
    },
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
    /// Containers to create, replace, start or remove on the Docker host, after `changes`.
    pub containers: Vec<ContainerChange>,
}

impl Plan {
    /// Rows and containers together; a replaced container counts as one to add and one to
    /// destroy, as Terraform counts a replaced resource.
    pub fn summary(&self) -> Summary {
        let mut s = summarize(&self.changes);
        for c in &self.containers {
            match c.action {
                ContainerAction::Create => s.add += 1,
                ContainerAction::Replace => {
                    s.add += 1;
                    s.destroy += 1;
                }
                ContainerAction::Start => s.change += 1,
                ContainerAction::Remove => s.destroy += 1,
            }
        }
        s
    }
}
