//! Desired OVN Northbound state as rows of the NB schema (7.0.0), in a form both the offline
//! plan and the live reconciler diff.
//!
//! Rows are identified by table plus wepoq name (the `wepoq.net/name` external id), never by
//! UUID: references between desired rows are [`RowKey`]s, which the reconciler maps to UUIDs
//! or named-uuids on the wire.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

/// external_ids key holding the owning namespace (`ns.wepoq.net`).
pub const OWNER_KEY: &str = "wepoq.net/owner";
/// external_ids key holding the row's wepoq name, unique per table within an owner.
pub const NAME_KEY: &str = "wepoq.net/name";

/// The NB tables wepoq writes, in the order plans list them (parents first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Table {
    #[serde(rename = "Logical_Router")]
    LogicalRouter,
    #[serde(rename = "Logical_Router_Port")]
    LogicalRouterPort,
    #[serde(rename = "Logical_Switch")]
    LogicalSwitch,
    #[serde(rename = "Logical_Switch_Port")]
    LogicalSwitchPort,
    #[serde(rename = "Load_Balancer")]
    LoadBalancer,
    #[serde(rename = "DNS")]
    Dns,
    #[serde(rename = "Port_Group")]
    PortGroup,
    #[serde(rename = "ACL")]
    Acl,
}

impl Table {
    pub const ALL: [Table; 8] = [
        Table::LogicalRouter,
        Table::LogicalRouterPort,
        Table::LogicalSwitch,
        Table::LogicalSwitchPort,
        Table::LoadBalancer,
        Table::Dns,
        Table::PortGroup,
        Table::Acl,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Table::LogicalRouter => "Logical_Router",
            Table::LogicalRouterPort => "Logical_Router_Port",
            Table::LogicalSwitch => "Logical_Switch",
            Table::LogicalSwitchPort => "Logical_Switch_Port",
            Table::LoadBalancer => "Load_Balancer",
            Table::Dns => "DNS",
            Table::PortGroup => "Port_Group",
            Table::Acl => "ACL",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Non-root tables keep a row only while a strong reference points at it, so such rows
    /// must be inserted in the same transaction as the reference that holds them.
    pub fn is_root(&self) -> bool {
        !matches!(self, Table::LogicalRouterPort | Table::LogicalSwitchPort | Table::Acl)
    }

    /// Whether the table's `name` column is a unique index (the others need a guard).
    pub fn name_is_indexed(&self) -> bool {
        matches!(self, Table::LogicalRouterPort | Table::LogicalSwitchPort | Table::PortGroup)
    }

    /// Whether the table has a `name` column wepoq fills in.
    pub fn has_name_column(&self) -> bool {
        !matches!(self, Table::Dns | Table::Acl)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A row's identity: its table and wepoq name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RowKey {
    pub table: Table,
    pub name: String,
}

impl RowKey {
    pub fn new(table: Table, name: impl Into<String>) -> RowKey {
        RowKey { table, name: name.into() }
    }
}

impl fmt::Display for RowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.table, self.name)
    }
}

/// An OVSDB atom. References name the row they point at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Atom {
    Integer(i64),
    Boolean(bool),
    String(String),
    Ref(RowKey),
}

impl From<&str> for Atom {
    fn from(s: &str) -> Atom {
        Atom::String(s.to_string())
    }
}

impl From<String> for Atom {
    fn from(s: String) -> Atom {
        Atom::String(s)
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Integer(i) => write!(f, "{i}"),
            Atom::Boolean(b) => write!(f, "{b}"),
            Atom::String(s) => write!(f, "{s:?}"),
            Atom::Ref(k) => write!(f, "@{}", k.name),
        }
    }
}

/// A column value, canonical by construction: sets and maps are ordered, so two values that
/// OVSDB considers equal compare equal here.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    Atom(Atom),
    Set(BTreeSet<Atom>),
    Map(BTreeMap<Atom, Atom>),
}

impl Value {
    pub fn str(s: impl Into<String>) -> Value {
        Value::Atom(Atom::String(s.into()))
    }

    pub fn int(i: i64) -> Value {
        Value::Atom(Atom::Integer(i))
    }

    pub fn set<A: Into<Atom>>(items: impl IntoIterator<Item = A>) -> Value {
        Value::Set(items.into_iter().map(Into::into).collect())
    }

    pub fn refs(table: Table, names: impl IntoIterator<Item = String>) -> Value {
        Value::Set(names.into_iter().map(|n| Atom::Ref(RowKey::new(table, n))).collect())
    }

    pub fn map<K: Into<Atom>, V: Into<Atom>>(items: impl IntoIterator<Item = (K, V)>) -> Value {
        Value::Map(items.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }

    /// Whether this is a set of references (such columns are shared with other writers and
    /// are changed by membership, never replaced).
    pub fn is_ref_set(&self) -> bool {
        matches!(self, Value::Set(s) if s.iter().any(|a| matches!(a, Atom::Ref(_))))
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Atom(a) => write!(f, "{a}"),
            Value::Set(items) => {
                f.write_str("[")?;
                for (i, a) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str("]")
            }
            Value::Map(items) => {
                f.write_str("{")?;
                for (i, (k, v)) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}={v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// One desired (or observed) row: the columns wepoq manages. Columns it does not list are
/// left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub key: RowKey,
    pub columns: BTreeMap<String, Value>,
}

impl Row {
    pub fn new(table: Table, name: impl Into<String>) -> Row {
        Row { key: RowKey::new(table, name), columns: BTreeMap::new() }
    }

    pub fn with(mut self, column: &str, value: Value) -> Row {
        self.columns.insert(column.to_string(), value);
        self
    }

    pub fn column(&self, column: &str) -> Option<&Value> {
        self.columns.get(column)
    }
}
