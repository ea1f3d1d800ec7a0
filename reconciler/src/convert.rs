//! Translation between the compiler's NB rows (references by wepoq name) and OVSDB's (by
//! UUID), driven by the live schema so each column gets its canonical shape.

use std::collections::HashMap;

use wepoq_compiler::nb::{self, RowKey, Table};

use crate::ovsdb::{self, ColumnKind, Schema, Uuid};

/// Where each wepoq row lives: its UUID in the NB, or the named-uuid it gets in this
/// transaction.
#[derive(Debug, Default, Clone)]
pub struct RowIds {
    pub by_key: HashMap<RowKey, Uuid>,
    pub by_uuid: HashMap<Uuid, RowKey>,
}

impl RowIds {
    pub fn insert(&mut self, key: RowKey, uuid: Uuid) {
        self.by_uuid.insert(uuid.clone(), key.clone());
        self.by_key.insert(key, uuid);
    }
}

/// An OVSDB row as the compiler sees it: only the managed columns, references to other
/// owned rows as names, references to anything else dropped (those members belong to others
/// and are never touched).
pub fn to_nb_row(key: RowKey, row: &ovsdb::Row, schema: &Schema, ids: &RowIds) -> nb::Row {
    let mut out = nb::Row::new(key.table, key.name.clone());
    for &column in key.table.managed_columns() {
        let Some(ty) = schema.column(key.table.name(), column) else {
            continue;
        };
        let value = row
            .get(column)
            .cloned()
            .unwrap_or_else(|| ty.default_value());
        let converted = match (ty.kind(), &value) {
            (ColumnKind::Map, ovsdb::Value::Map(map)) => nb::Value::Map(
                map.iter()
                    .filter_map(|(k, v)| Some((to_nb_atom(k, ids)?, to_nb_atom(v, ids)?)))
                    .collect(),
            ),
            (ColumnKind::Scalar, ovsdb::Value::Set(set)) if set.len() == 1 => {
                match set.iter().next().and_then(|a| to_nb_atom(a, ids)) {
                    Some(atom) => nb::Value::Atom(atom),
                    None => continue,
                }
            }
            (_, ovsdb::Value::Set(set)) => {
                nb::Value::Set(set.iter().filter_map(|a| to_nb_atom(a, ids)).collect())
            }
            _ => continue,
        };
        out = out.with(column, converted);
    }
    out
}

fn to_nb_atom(atom: &ovsdb::Atom, ids: &RowIds) -> Option<nb::Atom> {
    Some(match atom {
        ovsdb::Atom::Integer(i) => nb::Atom::Integer(*i),
        ovsdb::Atom::Boolean(b) => nb::Atom::Boolean(*b),
        ovsdb::Atom::String(s) => nb::Atom::String(s.clone()),
        ovsdb::Atom::Uuid(u) => nb::Atom::Ref(ids.by_key_of(u)?.clone()),
        ovsdb::Atom::Real(_) | ovsdb::Atom::NamedUuid(_) => return None,
    })
}

impl RowIds {
    fn by_key_of(&self, uuid: &Uuid) -> Option<&RowKey> {
        self.by_uuid.get(uuid)
    }
}

/// How a reference is written in the transaction: a UUID for a row that exists, a
/// named-uuid for one inserted by it.
pub fn to_ovsdb_atom(
    atom: &nb::Atom,
    ids: &RowIds,
    named: &HashMap<RowKey, String>,
) -> ovsdb::Atom {
    match atom {
        nb::Atom::Integer(i) => ovsdb::Atom::Integer(*i),
        nb::Atom::Boolean(b) => ovsdb::Atom::Boolean(*b),
        nb::Atom::String(s) => ovsdb::Atom::String(s.clone()),
        nb::Atom::Ref(key) => match (named.get(key), ids.by_key.get(key)) {
            (Some(name), _) => ovsdb::Atom::NamedUuid(name.clone()),
            (None, Some(uuid)) => ovsdb::Atom::Uuid(uuid.clone()),
            // A reference to a row neither present nor created: the compiler emits none, so
            // this is a bug; an unresolvable named-uuid makes the server refuse the whole
            // transaction rather than write half of it.
            (None, None) => ovsdb::Atom::NamedUuid(format!("missing_{}", key.table.name())),
        },
    }
}

pub fn to_ovsdb_value(
    value: &nb::Value,
    ids: &RowIds,
    named: &HashMap<RowKey, String>,
) -> ovsdb::Value {
    match value {
        nb::Value::Atom(a) => ovsdb::Value::atom(to_ovsdb_atom(a, ids, named)),
        nb::Value::Set(s) => ovsdb::Value::set(s.iter().map(|a| to_ovsdb_atom(a, ids, named))),
        nb::Value::Map(m) => ovsdb::Value::map(
            m.iter()
                .map(|(k, v)| (to_ovsdb_atom(k, ids, named), to_ovsdb_atom(v, ids, named))),
        ),
    }
}

/// The tables (and strong-reference columns) that hold a non-root row alive; deleting such a
/// row means removing it from every one of them.
pub fn strong_parents(table: Table) -> &'static [(&'static str, &'static str)] {
    match table {
        Table::LogicalSwitchPort => &[("Logical_Switch", "ports")],
        Table::LogicalRouterPort => &[("Logical_Router", "ports")],
        Table::Acl => &[("Port_Group", "acls"), ("Logical_Switch", "acls")],
        _ => &[],
    }
}

/// The strong-reference columns of a table: rows they point at die with the row.
pub fn strong_children(table: Table) -> &'static [(&'static str, &'static str)] {
    match table {
        Table::LogicalSwitch => &[("Logical_Switch_Port", "ports"), ("ACL", "acls")],
        Table::LogicalRouter => &[("Logical_Router_Port", "ports")],
        Table::PortGroup => &[("ACL", "acls")],
        _ => &[],
    }
}
