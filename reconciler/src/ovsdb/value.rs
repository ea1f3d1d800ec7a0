//! OVSDB values (RFC 7047 section 5.1): atoms, sets and maps, compared canonically
//!
//! A column value is always a [`Value`]: a set of atoms or a map of atom to atom. A bare
//! atom on the wire is a one-element set, and an optional scalar is a 0/1-element set, so
//! the two spellings decode to the same value. Sets and maps are ordered collections, so
//! element order never shows up as a difference either: `==` on two values is the
//! canonical comparison the diff needs.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Value as Json, json};

use super::error::Error;

/// A row UUID as the server spells it (lowercase, 8-4-4-4-12 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uuid(String);

impl Uuid {
    /// Parses the textual form; uppercase digits are accepted and lowered.
    pub fn parse(text: &str) -> Option<Uuid> {
        // 8-4-4-4-12 hex digits; checked in place (an observation parses a uuid per row
        // and per reference, so no allocation but the result's).
        let bytes = text.as_bytes();
        let ok = bytes.len() == 36
            && bytes.iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        ok.then(|| Uuid(text.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One OVSDB atom.
///
/// `NamedUuid` only appears in requests: it names a row inserted earlier in the same
/// transaction (`uuid-name`).
#[derive(Debug, Clone)]
pub enum Atom {
    Integer(i64),
    Real(f64),
    Boolean(bool),
    String(String),
    Uuid(Uuid),
    NamedUuid(String),
}

impl Atom {
    /// Rank of the atom's kind in the canonical order; integers and reals share one rank
    /// because the server prints a real that happens to be whole without a fraction, so it
    /// decodes as an integer and must still compare equal.
    fn rank(&self) -> u8 {
        match self {
            Atom::Integer(_) | Atom::Real(_) => 0,
            Atom::Boolean(_) => 1,
            Atom::String(_) => 2,
            Atom::Uuid(_) => 3,
            Atom::NamedUuid(_) => 4,
        }
    }

    pub fn to_json(&self) -> Json {
        match self {
            Atom::Integer(i) => json!(i),
            Atom::Real(r) => json!(r),
            Atom::Boolean(b) => json!(b),
            Atom::String(s) => json!(s),
            Atom::Uuid(u) => json!(["uuid", u.as_str()]),
            Atom::NamedUuid(n) => json!(["named-uuid", n]),
        }
    }

    /// Decodes an atom; `None` when the JSON is not an atom (e.g. a set or a map).
    pub fn from_json(json: &Json) -> Result<Option<Atom>, Error> {
        Ok(Some(match json {
            Json::Bool(b) => Atom::Boolean(*b),
            Json::String(s) => Atom::String(s.clone()),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Atom::Integer(i),
                None => Atom::Real(n.as_f64().ok_or_else(|| decode("number", json))?),
            },
            Json::Array(a) if a.len() == 2 && a[0] == "uuid" => {
                let text = a[1].as_str().ok_or_else(|| decode("uuid", json))?;
                Atom::Uuid(Uuid::parse(text).ok_or_else(|| decode("uuid", json))?)
            }
            Json::Array(a) if a.len() == 2 && a[0] == "named-uuid" => Atom::NamedUuid(
                a[1].as_str()
                    .ok_or_else(|| decode("named-uuid", json))?
                    .to_owned(),
            ),
            _ => return Ok(None),
        }))
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Atom::Integer(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_uuid(&self) -> Option<&Uuid> {
        match self {
            Atom::Uuid(u) => Some(u),
            _ => None,
        }
    }
}

impl Ord for Atom {
    fn cmp(&self, other: &Self) -> Ordering {
        use Atom::*;
        match (self, other) {
            (Integer(a), Integer(b)) => a.cmp(b),
            (Real(a), Real(b)) => a.total_cmp(b),
            (Integer(a), Real(b)) => (*a as f64).total_cmp(b),
            (Real(a), Integer(b)) => a.total_cmp(&(*b as f64)),
            (Boolean(a), Boolean(b)) => a.cmp(b),
            (String(a), String(b)) => a.cmp(b),
            (Uuid(a), Uuid(b)) => a.cmp(b),
            (NamedUuid(a), NamedUuid(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Atom {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Atom {}

impl From<&str> for Atom {
    fn from(s: &str) -> Self {
        Atom::String(s.to_owned())
    }
}

impl From<String> for Atom {
    fn from(s: String) -> Self {
        Atom::String(s)
    }
}

impl From<i64> for Atom {
    fn from(i: i64) -> Self {
        Atom::Integer(i)
    }
}

impl From<bool> for Atom {
    fn from(b: bool) -> Self {
        Atom::Boolean(b)
    }
}

impl From<Uuid> for Atom {
    fn from(u: Uuid) -> Self {
        Atom::Uuid(u)
    }
}

/// A column value: a set of atoms or a map of atoms.
///
/// Equality is canonical: element order and the bare-atom spelling of a one-element set
/// never matter, and an empty set equals an empty map (the wire spells an empty map column
/// either way).
#[derive(Debug, Clone)]
pub enum Value {
    Set(BTreeSet<Atom>),
    Map(BTreeMap<Atom, Atom>),
}

impl Value {
    /// The empty set: an absent optional value.
    pub fn empty() -> Value {
        Value::Set(BTreeSet::new())
    }

    /// A one-element set: how scalars are held.
    pub fn atom(atom: impl Into<Atom>) -> Value {
        Value::Set(BTreeSet::from([atom.into()]))
    }

    pub fn set<A: Into<Atom>>(atoms: impl IntoIterator<Item = A>) -> Value {
        Value::Set(atoms.into_iter().map(Into::into).collect())
    }

    pub fn map<K: Into<Atom>, V: Into<Atom>>(pairs: impl IntoIterator<Item = (K, V)>) -> Value {
        Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    pub fn uuid(uuid: Uuid) -> Value {
        Value::atom(Atom::Uuid(uuid))
    }

    /// A reference to a row inserted earlier in the same transaction.
    pub fn named_uuid(name: &str) -> Value {
        Value::atom(Atom::NamedUuid(name.to_owned()))
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Value::Set(s) => s.is_empty(),
            Value::Map(m) => m.is_empty(),
        }
    }

    /// The single atom of a one-element set.
    pub fn as_atom(&self) -> Option<&Atom> {
        match self {
            Value::Set(s) if s.len() == 1 => s.first(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        self.as_atom().and_then(Atom::as_str)
    }

    pub fn as_i64(&self) -> Option<i64> {
        self.as_atom().and_then(Atom::as_i64)
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.as_atom() {
            Some(Atom::Boolean(b)) => Some(*b),
            _ => None,
        }
    }

    pub fn as_uuid(&self) -> Option<&Uuid> {
        self.as_atom().and_then(Atom::as_uuid)
    }

    pub fn as_set(&self) -> Option<&BTreeSet<Atom>> {
        match self {
            Value::Set(s) => Some(s),
            Value::Map(_) => None,
        }
    }

    pub fn as_map(&self) -> Option<&BTreeMap<Atom, Atom>> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The map's value for a string key (external_ids, options).
    pub fn get(&self, key: &str) -> Option<&Atom> {
        self.as_map()?.get(&Atom::from(key))
    }

    /// Wire form: a one-element set goes out as the bare atom.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Set(s) if s.len() == 1 => s.first().map(Atom::to_json).unwrap_or(Json::Null),
            Value::Set(s) => json!(["set", s.iter().map(Atom::to_json).collect::<Vec<_>>()]),
            Value::Map(m) => {
                json!([
                    "map",
                    m.iter()
                        .map(|(k, v)| json!([k.to_json(), v.to_json()]))
                        .collect::<Vec<_>>()
                ])
            }
        }
    }

    pub fn from_json(json: &Json) -> Result<Value, Error> {
        if let Some(atom) = Atom::from_json(json)? {
            return Ok(Value::atom(atom));
        }
        let pair = json.as_array().filter(|a| a.len() == 2);
        match pair.map(|a| (&a[0], &a[1])) {
            Some((Json::String(tag), Json::Array(items))) if tag == "set" => {
                let mut set = BTreeSet::new();
                for item in items {
                    set.insert(Atom::from_json(item)?.ok_or_else(|| decode("set element", item))?);
                }
                Ok(Value::Set(set))
            }
            Some((Json::String(tag), Json::Array(items))) if tag == "map" => {
                let mut map = BTreeMap::new();
                for item in items {
                    let kv = item
                        .as_array()
                        .filter(|a| a.len() == 2)
                        .ok_or_else(|| decode("map pair", item))?;
                    let k = Atom::from_json(&kv[0])?.ok_or_else(|| decode("map key", item))?;
                    let v = Atom::from_json(&kv[1])?.ok_or_else(|| decode("map value", item))?;
                    map.insert(k, v);
                }
                Ok(Value::Map(map))
            }
            _ => Err(decode("value", json)),
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Set(a), Value::Set(b)) => a == b,
            (Value::Map(a), Value::Map(b)) => a == b,
            (a, b) => a.is_empty() && b.is_empty(),
        }
    }
}

impl Eq for Value {}

impl<T: Into<Atom>> From<T> for Value {
    fn from(atom: T) -> Self {
        Value::atom(atom)
    }
}

pub(crate) fn decode(what: &str, json: &Json) -> Error {
    let mut text = json.to_string();
    if text.len() > 200 {
        // At a character boundary: the server's strings are UTF-8 (found by fuzzing).
        let cut = (0..=200)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push_str("...");
    }
    Error::Decode {
        what: what.to_owned(),
        reason: format!("unexpected {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_in_errors_are_cut_between_characters() {
        for pad in 0..4 {
            let json = Json::String(format!("{}{}", "x".repeat(pad), "é".repeat(150)));
            let Error::Decode { reason, .. } = decode("value", &json) else {
                panic!()
            };
            assert!(reason.ends_with("...") && reason.len() <= 220, "{reason}");
        }
    }

    fn u(n: u8) -> Uuid {
        Uuid::parse(&format!("{n:08x}-0000-4000-8000-000000000000")).unwrap()
    }

    #[test]
    fn one_element_set_is_the_bare_atom_both_ways() {
        let v = Value::atom("sw0");
        assert_eq!(v.to_json(), json!("sw0"));
        assert_eq!(Value::from_json(&json!(["set", ["sw0"]])).unwrap(), v);
        assert_eq!(Value::from_json(&json!("sw0")).unwrap(), v);
    }

    #[test]
    fn sets_compare_regardless_of_order() {
        let a = Value::from_json(&json!(["set", ["b", "a", "c"]])).unwrap();
        let b = Value::from_json(&json!(["set", ["c", "b", "a"]])).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, Value::set(["a", "b"]));
        // Canonical encoding is sorted, so re-encoding is stable.
        assert_eq!(a.to_json(), json!(["set", ["a", "b", "c"]]));
    }

    #[test]
    fn maps_compare_regardless_of_order() {
        let a = Value::from_json(&json!(["map", [["k2", "v2"], ["k1", "v1"]]])).unwrap();
        let b = Value::map([("k1", "v1"), ("k2", "v2")]);
        assert_eq!(a, b);
        assert_ne!(a, Value::map([("k1", "v1"), ("k2", "other")]));
        assert_eq!(b.to_json(), json!(["map", [["k1", "v1"], ["k2", "v2"]]]));
        assert_eq!(a.get("k2").and_then(Atom::as_str), Some("v2"));
    }

    #[test]
    fn empty_optional_and_empty_map_are_equal_but_keep_their_spelling() {
        assert_eq!(Value::empty(), Value::Map(BTreeMap::new()));
        assert_eq!(Value::empty().to_json(), json!(["set", []]));
        assert_eq!(Value::Map(BTreeMap::new()).to_json(), json!(["map", []]));
        assert_ne!(Value::empty(), Value::atom(0));
    }

    #[test]
    fn uuids_and_named_uuids_round_trip() {
        let v = Value::set([Atom::Uuid(u(1)), Atom::Uuid(u(2))]);
        let wire = v.to_json();
        assert_eq!(
            wire[1][0],
            json!(["uuid", "00000001-0000-4000-8000-000000000000"])
        );
        assert_eq!(Value::from_json(&wire).unwrap(), v);
        let named = Value::named_uuid("new_lsp");
        assert_eq!(named.to_json(), json!(["named-uuid", "new_lsp"]));
        assert_eq!(Value::from_json(&named.to_json()).unwrap(), named);
        // The server may send upper case in hand-written data; the canonical form is lower.
        assert_eq!(
            Uuid::parse("0000000A-0000-4000-8000-000000000000")
                .unwrap()
                .as_str(),
            "0000000a-0000-4000-8000-000000000000"
        );
        assert!(Uuid::parse("not-a-uuid").is_none());
    }

    #[test]
    fn whole_reals_equal_integers() {
        assert_eq!(
            Value::from_json(&json!(2)).unwrap(),
            Value::atom(Atom::Real(2.0))
        );
        assert_ne!(Value::atom(Atom::Real(2.5)), Value::atom(2));
        assert_eq!(
            Value::from_json(&json!(2.5)).unwrap(),
            Value::atom(Atom::Real(2.5))
        );
    }

    #[test]
    fn atom_kinds_are_distinct() {
        assert_ne!(Value::atom("1"), Value::atom(1));
        assert_ne!(Value::atom(true), Value::atom("true"));
        assert_ne!(Value::atom(Atom::Uuid(u(1))), Value::atom(u(1).as_str()));
    }

    #[test]
    fn malformed_values_are_refused() {
        assert!(Value::from_json(&json!(["set", [["set", []]]])).is_err());
        assert!(Value::from_json(&json!(["map", [["k"]]])).is_err());
        assert!(Value::from_json(&json!(null)).is_err());
        assert!(Value::from_json(&json!(["uuid", "zz"])).is_err());
        assert!(Value::from_json(&json!({"a": 1})).is_err());
    }
}
