//! Transact replies decoded straight from their bytes into rows and values.
//!
//! An observation's reply is tens of megabytes of JSON; building a `serde_json::Value` tree
//! of it first and converting that took longer than the server took to send it. These
//! visitors give what [`TransactReply::from_json`] gives (a test holds them equal),
//! without the tree in between. They are a little stricter: a malformed value anywhere in
//! the reply is an error, where the tree decoder looks only at the members it needs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;

use super::error::Error;
use super::operation::{OpError, OpOutcome, OpResult, TransactReply};
use super::row::Row;
use super::value::{Atom, Uuid, Value};

impl TransactReply {
    /// As [`TransactReply::from_json`], from the reply's `result` as text.
    pub fn from_str(text: &str, n_ops: usize) -> Result<TransactReply, Error> {
        let items: Vec<Option<Fields>> = serde_json::from_str(text).map_err(|e| Error::Decode {
            what: "transact result".into(),
            reason: e.to_string(),
        })?;
        let mut outcomes = Vec::with_capacity(n_ops);
        let mut commit_error = None;
        for (i, item) in items.into_iter().enumerate() {
            if i >= n_ops {
                // Only an error can follow the per-operation results.
                if let Some(fields) = item {
                    commit_error = Some(
                        fields
                            .op_error()
                            .ok_or_else(|| decode("commit error", "an object without an error"))?,
                    );
                }
                continue;
            }
            outcomes.push(item.map_or(Ok(OpOutcome::NotRun), Fields::outcome)?);
        }
        // Older servers stop at the failing operation instead of padding with nulls.
        outcomes.resize(n_ops, OpOutcome::NotRun);
        Ok(TransactReply {
            outcomes,
            commit_error,
        })
    }
}

fn decode(what: &str, reason: impl fmt::Display) -> Error {
    Error::Decode {
        what: what.to_owned(),
        reason: reason.to_string(),
    }
}

/// The members of an operation's result object (`null` for one not run) wepoq reads (`error` and `details` kept as JSON, since a
/// non-string error is itself a decoding error, as in the tree decoder).
#[derive(Default)]
struct Fields {
    error: Option<Json>,
    details: Option<Json>,
    uuid: Option<Value>,
    rows: Option<Vec<Row>>,
    count: Option<Json>,
}

impl Fields {
    fn op_error(&self) -> Option<OpError> {
        let error = self.error.as_ref()?.as_str()?.to_owned();
        let details = self
            .details
            .as_ref()
            .and_then(Json::as_str)
            .map(str::to_owned);
        Some(OpError { error, details })
    }
}

impl Fields {
    fn outcome(self) -> Result<OpOutcome, Error> {
        let fields = self;
        if fields.error.as_ref().is_some_and(|e| !e.is_null()) {
            return fields
                .op_error()
                .map(OpOutcome::Failed)
                .ok_or_else(|| decode("operation error", "an error that is not a string"));
        }
        let result = if let Some(uuid) = fields.uuid {
            OpResult::Insert {
                uuid: uuid
                    .as_uuid()
                    .cloned()
                    .ok_or_else(|| decode("inserted uuid", "not a uuid"))?,
            }
        } else if let Some(rows) = fields.rows {
            OpResult::Select { rows }
        } else if let Some(count) = fields.count {
            OpResult::Count {
                count: count.as_u64().ok_or_else(|| decode("count", count))?,
            }
        } else {
            OpResult::Empty
        };
        Ok(OpOutcome::Done(result))
    }
}

impl<'de> de::Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fields, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an operation result object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Fields::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match &*key {
                        "error" => fields.error = Some(map.next_value()?),
                        "details" => fields.details = Some(map.next_value()?),
                        "count" => fields.count = Some(map.next_value()?),
                        "uuid" => fields.uuid = Some(map.next_value_seed(ValueSeed)?),
                        "rows" => fields.rows = Some(map.next_value_seed(RowsSeed)?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(fields)
            }
        }
        d.deserialize_map(V)
    }
}

struct RowsSeed;

impl<'de> DeserializeSeed<'de> for RowsSeed {
    type Value = Vec<Row>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Row>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<Row>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of rows")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Row>, A::Error> {
                let mut rows = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(row) = seq.next_element_seed(RowSeed)? {
                    rows.push(row);
                }
                Ok(rows)
            }
        }
        d.deserialize_seq(V)
    }
}

struct RowSeed;

impl<'de> DeserializeSeed<'de> for RowSeed {
    type Value = Row;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Row, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Row;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a row object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row, A::Error> {
                let mut columns: BTreeMap<String, Value> = BTreeMap::new();
                while let Some(name) = map.next_key::<String>()? {
                    columns.insert(name, map.next_value_seed(ValueSeed)?);
                }
                Ok(columns.into_iter().collect())
            }
        }
        d.deserialize_map(V)
    }
}

/// A column value: a bare atom, or `["set", [atoms]]`, `["map", [[k, v]...]]`.
struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(AtomOrValue { atoms_only: false })
            .map(|v| match v {
                Decoded::Atom(a) => Value::atom(a),
                Decoded::Value(v) => v,
            })
    }
}

struct AtomSeed;

impl<'de> DeserializeSeed<'de> for AtomSeed {
    type Value = Atom;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Atom, D::Error> {
        match d.deserialize_any(AtomOrValue { atoms_only: true })? {
            Decoded::Atom(a) => Ok(a),
            Decoded::Value(_) => Err(de::Error::custom("expected an atom")),
        }
    }
}

enum Decoded {
    Atom(Atom),
    Value(Value),
}

/// Atoms are JSON scalars or `["uuid", U]` / `["named-uuid", N]`; with `atoms_only`, a set or
/// map is refused (they do not nest).
struct AtomOrValue {
    atoms_only: bool,
}

impl<'de> Visitor<'de> for AtomOrValue {
    type Value = Decoded;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if self.atoms_only {
            "an atom"
        } else {
            "an OVSDB value"
        })
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Decoded, E> {
        Ok(Decoded::Atom(Atom::Boolean(b)))
    }
    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Decoded, E> {
        Ok(Decoded::Atom(Atom::Integer(i)))
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Decoded, E> {
        // As serde_json's `as_i64`: past i64, the number is read as a real.
        Ok(Decoded::Atom(
            i64::try_from(u).map_or(Atom::Real(u as f64), Atom::Integer),
        ))
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Decoded, E> {
        Ok(Decoded::Atom(Atom::Real(f)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Decoded, E> {
        Ok(Decoded::Atom(Atom::String(s.to_owned())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Decoded, E> {
        Ok(Decoded::Atom(Atom::String(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Decoded, A::Error> {
        let tag: std::borrow::Cow<'de, str> = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom("an empty array"))?;
        let decoded = match &*tag {
            "uuid" => {
                let text: std::borrow::Cow<'de, str> = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("a uuid without its text"))?;
                Decoded::Atom(Atom::Uuid(Uuid::parse(&text).ok_or_else(|| {
                    de::Error::custom(format!("{text:?} is not a uuid"))
                })?))
            }
            "named-uuid" => {
                let name: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("a named-uuid without its name"))?;
                Decoded::Atom(Atom::NamedUuid(name))
            }
            "set" if !self.atoms_only => Decoded::Value(Value::Set(
                seq.next_element_seed(SetSeed)?
                    .ok_or_else(|| de::Error::custom("a set without its elements"))?,
            )),
            "map" if !self.atoms_only => Decoded::Value(Value::Map(
                seq.next_element_seed(MapSeed)?
                    .ok_or_else(|| de::Error::custom("a map without its pairs"))?,
            )),
            other => return Err(de::Error::custom(format!("unexpected [{other:?}, ...]"))),
        };
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("more than two elements"));
        }
        Ok(decoded)
    }
}

struct SetSeed;

impl<'de> DeserializeSeed<'de> for SetSeed {
    type Value = BTreeSet<Atom>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<BTreeSet<Atom>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BTreeSet<Atom>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of atoms")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BTreeSet<Atom>, A::Error> {
                let mut set = BTreeSet::new();
                while let Some(atom) = seq.next_element_seed(AtomSeed)? {
                    set.insert(atom);
                }
                Ok(set)
            }
        }
        d.deserialize_seq(V)
    }
}

struct MapSeed;

impl<'de> DeserializeSeed<'de> for MapSeed {
    type Value = BTreeMap<Atom, Atom>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<BTreeMap<Atom, Atom>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BTreeMap<Atom, Atom>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of [key, value] pairs")
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<BTreeMap<Atom, Atom>, A::Error> {
                let mut map = BTreeMap::new();
                while let Some((k, v)) = seq.next_element_seed(PairSeed)? {
                    map.insert(k, v);
                }
                Ok(map)
            }
        }
        d.deserialize_seq(V)
    }
}

struct PairSeed;

impl<'de> DeserializeSeed<'de> for PairSeed {
    type Value = (Atom, Atom);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(Atom, Atom), D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = (Atom, Atom);
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a [key, value] pair")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(Atom, Atom), A::Error> {
                let k = seq
                    .next_element_seed(AtomSeed)?
                    .ok_or_else(|| de::Error::custom("a pair without its key"))?;
                let v = seq
                    .next_element_seed(AtomSeed)?
                    .ok_or_else(|| de::Error::custom("a pair without its value"))?;
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("a pair of more than two"));
                }
                Ok((k, v))
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape a server sends, decoded from text and from the tree alike.
    #[test]
    fn agrees_with_the_tree_decoder() {
        let replies = [
            r#"[{"rows":[{"_uuid":["uuid","0c5e5b8a-1b7e-4f0e-9d5b-3a0d1f2e3c4b"],"name":"sw0","n":["set",[]],"ports":["set",[["uuid","2c5e5b8a-1b7e-4f0e-9d5b-3a0d1f2e3c4b"],["uuid","1C5E5B8A-1B7E-4F0E-9D5B-3A0D1F2E3C4B"]]],"ids":["map",[["k","v"],["k2","v\"2\\é"]]],"i":-5,"big":18446744073709551615,"r":1.5,"w":2.0,"b":true}]},{"count":3},{"uuid":["uuid","3c5e5b8a-1b7e-4f0e-9d5b-3a0d1f2e3c4b"]},{},{"rows":[]}]"#,
            r#"[{"count":0},{"error":"timed out","details":"\"wait\" timed out"},null,{"error":"constraint violation","details":"twins"}]"#,
            r#"[{"error":"referential integrity violation"}]"#,
            r#"[{"rows":[{"a":["named-uuid","r1"],"m":["map",[]]}]}, null, null]"#,
        ];
        for text in replies {
            let json: Json = serde_json::from_str(text).unwrap();
            for n_ops in [1, 2, 3, 5] {
                match (
                    TransactReply::from_str(text, n_ops),
                    TransactReply::from_json(&json, n_ops),
                ) {
                    (Ok(typed), Ok(tree)) => {
                        assert_eq!(typed, tree, "{text} with {n_ops} operations")
                    }
                    (Err(_), Err(_)) => {}
                    (typed, tree) => {
                        panic!("{text} with {n_ops} operations: {typed:?} but {tree:?}")
                    }
                }
            }
        }
    }

    #[test]
    fn malformed_values_are_errors() {
        for text in [
            r#"[{"rows":[{"a":["set",[["set",[]]]]}]}]"#,
            r#"[{"rows":[{"a":["uuid","not-a-uuid"]}]}]"#,
            r#"[{"rows":[{"a":["uuid","0c5e5b8a-1b7e-4f0e-9d5b-3a0d1f2e3c4b","x"]}]}]"#,
            r#"[{"rows":[{"a":["map",[["k"]]]}]}]"#,
            r#"[{"rows":[{"a":[]}]}]"#,
            r#"[{"rows":[{"a":{"b":1}}]}]"#,
            r#"[{"rows":{}}]"#,
            r#"[{"uuid":"x"}]"#,
            r#"[{"count":-1}]"#,
            r#"{"rows":[]}"#,
            r#"[{"rows":[]}"#,
        ] {
            assert!(TransactReply::from_str(text, 1).is_err(), "{text}");
        }
    }
}
