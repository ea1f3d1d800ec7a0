//! Desired OVN Northbound state as rows of the NB schema (7.0.0), in a form both the offline
//! plan and the live reconciler diff.
//!
//! Rows are identified by table plus wepoq name (the `wepoq.net/name` external id), never by
//! UUID: references between desired rows are [`RowKey`]s, which the reconciler maps to UUIDs
//! or named-uuids on the wire.

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
        !matches!(
            self,
            Table::LogicalRouterPort | Table::LogicalSwitchPort | Table::Acl
        )
    }

    /// Whether the table's `name` column is a unique index (the others need a guard).
    pub fn name_is_indexed(&self) -> bool {
        matches!(
            self,
            Table::LogicalRouterPort | Table::LogicalSwitchPort | Table::PortGroup
        )
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
        RowKey {
            table,
            name: name.into(),
        }
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

impl From<i64> for Atom {
    fn from(i: i64) -> Atom {
        Atom::Integer(i)
    }
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

/// A set of atoms, sorted and without duplicates: canonical by construction, so two sets that
/// OVSDB considers equal compare equal. A sorted vector rather than a BTreeSet: NB rows hold
/// many small sets, and a B-tree node has room for eleven.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AtomSet(Vec<Atom>);

impl AtomSet {
    pub fn iter(&self) -> std::slice::Iter<'_, Atom> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, atom: &Atom) -> bool {
        self.0.binary_search(atom).is_ok()
    }

    /// Members of `self` that `other` lacks: one merge of the two sorted lists, so a port
    /// group of 30k members costs 30k comparisons, not a search for each.
    pub fn difference(&self, other: &AtomSet) -> AtomSet {
        let mut theirs = other.0.iter().peekable();
        let mut out = Vec::new();
        for a in &self.0 {
            while theirs.next_if(|b| *b < a).is_some() {}
            if theirs.peek() != Some(&a) {
                out.push(a.clone());
            }
        }
        AtomSet(out)
    }
}

impl FromIterator<Atom> for AtomSet {
    fn from_iter<I: IntoIterator<Item = Atom>>(iter: I) -> AtomSet {
        let mut items: Vec<Atom> = iter.into_iter().collect();
        items.sort_unstable();
        items.dedup();
        AtomSet(items)
    }
}

/// A map of atoms, sorted by key with unique keys (the first given wins); canonical by
/// construction like [`AtomSet`].
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AtomMap(Vec<(Atom, Atom)>);

impl AtomMap {
    pub fn iter(&self) -> impl Iterator<Item = (&Atom, &Atom)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, key: &Atom) -> Option<&Atom> {
        self.0
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .map(|i| &self.0[i].1)
    }

    pub fn keys(&self) -> impl Iterator<Item = &Atom> {
        self.0.iter().map(|(k, _)| k)
    }
}

impl FromIterator<(Atom, Atom)> for AtomMap {
    fn from_iter<I: IntoIterator<Item = (Atom, Atom)>>(iter: I) -> AtomMap {
        let mut items: Vec<(Atom, Atom)> = iter.into_iter().collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        items.dedup_by(|later, earlier| later.0 == earlier.0);
        AtomMap(items)
    }
}

/// A column value, canonical by construction: sets and maps are ordered, so two values that
/// OVSDB considers equal compare equal here.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    Atom(Atom),
    Set(AtomSet),
    Map(AtomMap),
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
        Value::Set(
            names
                .into_iter()
                .map(|n| Atom::Ref(RowKey::new(table, n)))
                .collect(),
        )
    }

    pub fn map<K: Into<Atom>, V: Into<Atom>>(items: impl IntoIterator<Item = (K, V)>) -> Value {
        Value::Map(
            items
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
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

/// One desired (or observed) row: the columns wepoq manages, sorted by name. Columns it does
/// not list are left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub key: RowKey,
    columns: Vec<(&'static str, Value)>,
}

impl Row {
    pub fn new(table: Table, name: impl Into<String>) -> Row {
        Row {
            key: RowKey::new(table, name),
            columns: Vec::new(),
        }
    }

    /// Sets a column, replacing any earlier value.
    pub fn with(mut self, column: &'static str, value: Value) -> Row {
        match self.columns.binary_search_by(|(c, _)| c.cmp(&column)) {
            Ok(i) => self.columns[i].1 = value,
            Err(i) => self.columns.insert(i, (column, value)),
        }
        self
    }

    pub fn column(&self, column: &str) -> Option<&Value> {
        self.columns
            .iter()
            .find(|(c, _)| *c == column)
            .map(|(_, v)| v)
    }

    pub fn columns(&self) -> impl Iterator<Item = (&'static str, &Value)> {
        self.columns.iter().map(|(c, v)| (*c, v))
    }
}

impl Table {
    /// The columns wepoq writes in each table: what it reads back to compare, and nothing
    /// else (status columns such as `up` belong to others).
    pub fn managed_columns(&self) -> &'static [&'static str] {
        match self {
            Table::LogicalRouter => &["external_ids", "name", "ports"],
            Table::LogicalRouterPort => &["external_ids", "mac", "name", "networks"],
            Table::LogicalSwitch => &[
                "dns_records",
                "external_ids",
                "load_balancer",
                "name",
                "ports",
            ],
            // `tag` is northd's (copied from `tag_request`), not wepoq's.
            Table::LogicalSwitchPort => &[
                "addresses",
                "external_ids",
                "name",
                "options",
                "parent_name",
                "port_security",
                "tag_request",
                "type",
            ],
            Table::LoadBalancer => &["external_ids", "name", "protocol", "vips"],
            Table::Dns => &["external_ids", "records"],
            Table::PortGroup => &["acls", "external_ids", "name", "ports"],
            Table::Acl => &["action", "direction", "external_ids", "match", "priority"],
        }
    }
}
