//! The plan as JSON: a documented, versioned format (`format_version`), stable byte for byte
//! for the same input, and read back by `wepoq apply plan.json`.
//!
//! Values use OVSDB's own notation so a reader who knows RFC 7047 can read them: an atom is a
//! JSON string, number or boolean; a set is `["set", [...]]`; a map `["map", [[k, v], ...]]`;
//! a reference to another wepoq row `["ref", TABLE, NAME]`.

use serde_json::{Map, Value as Json, json};

use crate::nb::{Atom, RowKey, Table, Value};
use crate::plan::{Action, Change, FieldChange, Observed, Plan};

pub const FORMAT_VERSION: &str = "2";
/// Versions this wepoq reads: "1" had no containers.
const READABLE_VERSIONS: [&str; 2] = ["1", FORMAT_VERSION];

pub fn to_json(plan: &Plan) -> Json {
    let s = plan.summary();
    let observed = match &plan.observed {
        Observed::Nothing => json!({"source": "none"}),
        Observed::Live { fingerprint, rows } => {
            let rows: Map<String, Json> = rows.iter().map(|(k, d)| (k.clone(), json!(d))).collect();
            json!({"source": "ovsdb", "fingerprint": fingerprint, "rows": rows})
        }
    };
    json!({
        "format_version": FORMAT_VERSION,
        "spec_hash": plan.spec_hash,
        "namespaces": plan.namespaces,
        "observed": observed,
        "summary": {"add": s.add, "change": s.change, "destroy": s.destroy},
        "changes": plan.changes.iter().map(change_to_json).collect::<Vec<_>>(),
        "containers": plan.containers,
    })
}

pub fn to_json_text(plan: &Plan) -> String {
    let mut text = serde_json::to_string_pretty(&to_json(plan)).expect("plans serialize");
    text.push('\n');
    text
}

fn change_to_json(c: &Change) -> Json {
    let action = match c.action {
        Action::Create => "create",
        Action::Update => "update",
        Action::Destroy => "destroy",
    };
    let mut fields = Map::new();
    for f in &c.fields {
        let mut entry = Map::new();
        if let Some(b) = &f.before {
            entry.insert("before".into(), value_to_json(b));
        }
        if let Some(a) = &f.after {
            entry.insert("after".into(), value_to_json(a));
        }
        fields.insert(f.column.clone(), Json::Object(entry));
    }
    json!({"action": action, "table": c.key.table.name(), "name": c.key.name, "owner": c.owner, "columns": fields})
}

fn atom_to_json(a: &Atom) -> Json {
    match a {
        Atom::Integer(i) => json!(i),
        Atom::Boolean(b) => json!(b),
        Atom::String(s) => json!(s),
        Atom::Ref(k) => json!(["ref", k.table.name(), k.name]),
    }
}

pub fn value_to_json(v: &Value) -> Json {
    match v {
        Value::Atom(a) => atom_to_json(a),
        Value::Set(items) => json!(["set", items.iter().map(atom_to_json).collect::<Vec<_>>()]),
        Value::Map(items) => json!([
            "map",
            items
                .iter()
                .map(|(k, v)| json!([atom_to_json(k), atom_to_json(v)]))
                .collect::<Vec<_>>()
        ]),
    }
}

/// Why a plan file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanFormatError {
    #[error("not a wepoq plan: {0}")]
    Shape(String),
    #[error("plan format version {found} is not supported (this wepoq reads {FORMAT_VERSION})")]
    Version { found: String },
}

fn shape(what: &str) -> PlanFormatError {
    PlanFormatError::Shape(what.to_string())
}

pub fn from_json(doc: &Json) -> Result<Plan, PlanFormatError> {
    let version = doc
        .get("format_version")
        .and_then(Json::as_str)
        .ok_or_else(|| shape("no format_version"))?;
    if !READABLE_VERSIONS.contains(&version) {
        return Err(PlanFormatError::Version {
            found: version.to_string(),
        });
    }
    let spec_hash = doc
        .get("spec_hash")
        .and_then(Json::as_str)
        .ok_or_else(|| shape("no spec_hash"))?
        .to_string();
    let namespaces = doc
        .get("namespaces")
        .and_then(Json::as_array)
        .ok_or_else(|| shape("no namespaces"))?
        .iter()
        .map(|n| {
            n.as_str()
                .map(str::to_string)
                .ok_or_else(|| shape("a namespace is not a string"))
        })
        .collect::<Result<_, _>>()?;
    let observed = match doc.pointer("/observed/source").and_then(Json::as_str) {
        Some("none") => Observed::Nothing,
        Some("ovsdb") => Observed::Live {
            fingerprint: doc
                .pointer("/observed/fingerprint")
                .and_then(Json::as_str)
                .ok_or_else(|| shape("no observed fingerprint"))?
                .to_string(),
            rows: doc
                .pointer("/observed/rows")
                .and_then(Json::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
        },
        _ => return Err(shape("observed.source is neither none nor ovsdb")),
    };
    let changes = doc
        .get("changes")
        .and_then(Json::as_array)
        .ok_or_else(|| shape("no changes"))?
        .iter()
        .map(change_from_json)
        .collect::<Result<_, _>>()?;
    let containers = match doc.get("containers") {
        None => Vec::new(),
        Some(list) => serde_json::from_value(list.clone())
            .map_err(|e| PlanFormatError::Shape(format!("containers: {e}")))?,
    };
    Ok(Plan {
        spec_hash,
        namespaces,
        observed,
        changes,
        containers,
    })
}

fn change_from_json(c: &Json) -> Result<Change, PlanFormatError> {
    let action = match c.get("action").and_then(Json::as_str) {
        Some("create") => Action::Create,
        Some("update") => Action::Update,
        Some("destroy") => Action::Destroy,
        _ => return Err(shape("a change has no valid action")),
    };
    let table = c
        .get("table")
        .and_then(Json::as_str)
        .and_then(Table::from_name)
        .ok_or_else(|| shape("a change names an unknown table"))?;
    let name = c
        .get("name")
        .and_then(Json::as_str)
        .ok_or_else(|| shape("a change has no name"))?;
    let owner = c
        .get("owner")
        .and_then(Json::as_str)
        .ok_or_else(|| shape("a change has no owner"))?;
    let columns = c
        .get("columns")
        .and_then(Json::as_object)
        .ok_or_else(|| shape("a change has no columns"))?;
    let mut fields = Vec::new();
    for (column, entry) in columns {
        let before = entry.get("before").map(value_from_json).transpose()?;
        let after = entry.get("after").map(value_from_json).transpose()?;
        fields.push(FieldChange {
            column: column.clone(),
            before,
            after,
        });
    }
    Ok(Change {
        action,
        key: RowKey::new(table, name),
        owner: owner.to_string(),
        fields,
    })
}

fn atom_from_json(j: &Json) -> Result<Atom, PlanFormatError> {
    match j {
        Json::String(s) => Ok(Atom::String(s.clone())),
        Json::Bool(b) => Ok(Atom::Boolean(*b)),
        Json::Number(n) => n
            .as_i64()
            .map(Atom::Integer)
            .ok_or_else(|| shape("a number is not an integer")),
        Json::Array(a) => match a.as_slice() {
            [Json::String(tag), Json::String(table), Json::String(name)] if tag == "ref" => {
                let table = Table::from_name(table)
                    .ok_or_else(|| shape("a reference names an unknown table"))?;
                Ok(Atom::Ref(RowKey::new(table, name.clone())))
            }
            _ => Err(shape("an atom is malformed")),
        },
        _ => Err(shape("an atom is malformed")),
    }
}

pub fn value_from_json(j: &Json) -> Result<Value, PlanFormatError> {
    if let Json::Array(a) = j {
        match a.as_slice() {
            [Json::String(tag), Json::Array(items)] if tag == "set" => {
                return Ok(Value::Set(
                    items.iter().map(atom_from_json).collect::<Result<_, _>>()?,
                ));
            }
            [Json::String(tag), Json::Array(pairs)] if tag == "map" => {
                let mut map = Vec::new();
                for pair in pairs {
                    match pair.as_array().map(Vec::as_slice) {
                        Some([k, v]) => map.push((atom_from_json(k)?, atom_from_json(v)?)),
                        _ => return Err(shape("a map pair is malformed")),
                    }
                }
                return Ok(Value::Map(map.into_iter().collect()));
            }
            _ => {}
        }
    }
    atom_from_json(j).map(Value::Atom)
}
