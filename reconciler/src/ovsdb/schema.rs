//! Database schemas from `get_schema`, and the version check for OVN_Northbound

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value as Json;

use super::error::Error;
use super::value::{Atom, Value, decode};

/// The database wepoq writes.
pub const NB_DB: &str = "OVN_Northbound";
/// wepoq targets OVN_Northbound 7.x: same major, any minor (additions only).
pub const NB_MAJOR: u32 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub fn parse(text: &str) -> Option<Version> {
        let mut parts = text.split('.').map(|p| p.parse::<u32>().ok());
        let v = Version {
            major: parts.next()??,
            minor: parts.next()??,
            patch: parts.next()??,
        };
        parts.next().is_none().then_some(v)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomicType {
    Integer,
    Real,
    Boolean,
    String,
    Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseType {
    pub atomic: AtomicType,
    /// For uuid columns: the referenced table and whether the reference is strong.
    pub ref_table: Option<String>,
    pub ref_strong: bool,
}

/// How a column's value is shaped; decides how monitor diffs apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Exactly one atom (min 1, max 1): a diff carries the new value.
    Scalar,
    /// A set, including optional scalars (min 0, max 1): a diff toggles elements.
    Set,
    /// A diff toggles or replaces pairs.
    Map,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    pub key: BaseType,
    pub value: Option<BaseType>,
    pub min: u64,
    /// `None` is "unlimited".
    pub max: Option<u64>,
}

impl ColumnType {
    pub fn kind(&self) -> ColumnKind {
        match (&self.value, self.min, self.max) {
            (Some(_), _, _) => ColumnKind::Map,
            (None, 1, Some(1)) => ColumnKind::Scalar,
            _ => ColumnKind::Set,
        }
    }

    /// The value of a column that was never set; update2 leaves such columns out.
    pub fn default_value(&self) -> Value {
        match self.kind() {
            ColumnKind::Map => Value::Map(BTreeMap::new()),
            ColumnKind::Set => Value::empty(),
            ColumnKind::Scalar => Value::atom(match self.key.atomic {
                AtomicType::Integer => Atom::Integer(0),
                AtomicType::Real => Atom::Real(0.0),
                AtomicType::Boolean => Atom::Boolean(false),
                AtomicType::String => Atom::String(String::new()),
                AtomicType::Uuid => Atom::Uuid(
                    super::value::Uuid::parse("00000000-0000-0000-0000-000000000000")
                        .expect("valid"),
                ),
            }),
        }
    }

    fn from_json(json: &Json) -> Result<ColumnType, Error> {
        if json.is_string() {
            return Ok(ColumnType {
                key: BaseType::from_json(json)?,
                value: None,
                min: 1,
                max: Some(1),
            });
        }
        let key = BaseType::from_json(json.get("key").ok_or_else(|| decode("column type", json))?)?;
        let value = json.get("value").map(BaseType::from_json).transpose()?;
        let min = json
            .get("min")
            .map_or(Some(1), Json::as_u64)
            .ok_or_else(|| decode("column min", json))?;
        let max = match json.get("max") {
            None => Some(1),
            Some(Json::String(s)) if s == "unlimited" => None,
            Some(m) => Some(m.as_u64().ok_or_else(|| decode("column max", json))?),
        };
        Ok(ColumnType {
            key,
            value,
            min,
            max,
        })
    }
}

impl BaseType {
    fn from_json(json: &Json) -> Result<BaseType, Error> {
        let name = json
            .as_str()
            .or_else(|| json.get("type").and_then(Json::as_str));
        let atomic = match name {
            Some("integer") => AtomicType::Integer,
            Some("real") => AtomicType::Real,
            Some("boolean") => AtomicType::Boolean,
            Some("string") => AtomicType::String,
            Some("uuid") => AtomicType::Uuid,
            _ => return Err(decode("base type", json)),
        };
        let ref_table = json
            .get("refTable")
            .and_then(Json::as_str)
            .map(str::to_owned);
        let ref_strong =
            ref_table.is_some() && json.get("refType").and_then(Json::as_str) != Some("weak");
        Ok(BaseType {
            atomic,
            ref_table,
            ref_strong,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    pub columns: BTreeMap<String, ColumnType>,
    /// Non-root rows live only while a strong reference points at them.
    pub is_root: bool,
    pub indexes: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    pub name: String,
    pub version: Version,
    pub cksum: Option<String>,
    pub tables: BTreeMap<String, TableSchema>,
}

impl Schema {
    pub fn from_json(json: &Json) -> Result<Schema, Error> {
        let name = json
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| decode("schema name", json))?;
        let version_text = json
            .get("version")
            .and_then(Json::as_str)
            .unwrap_or("0.0.0");
        let version = Version::parse(version_text).ok_or_else(|| Error::Decode {
            what: "schema version".into(),
            reason: format!("{version_text:?}"),
        })?;
        let mut tables = BTreeMap::new();
        let table_json = json
            .get("tables")
            .and_then(Json::as_object)
            .ok_or_else(|| decode("schema tables", json))?;
        for (tname, t) in table_json {
            let mut columns = BTreeMap::new();
            let cols = t
                .get("columns")
                .and_then(Json::as_object)
                .ok_or_else(|| decode("table columns", t))?;
            for (cname, c) in cols {
                let ty = c.get("type").ok_or_else(|| decode("column", c))?;
                columns.insert(cname.clone(), ColumnType::from_json(ty)?);
            }
            let is_root = t.get("isRoot").and_then(Json::as_bool).unwrap_or(false);
            let indexes = t
                .get("indexes")
                .and_then(Json::as_array)
                .map(|ix| {
                    ix.iter()
                        .filter_map(Json::as_array)
                        .map(|cols| {
                            cols.iter()
                                .filter_map(Json::as_str)
                                .map(str::to_owned)
                                .collect()
                        })
                        .collect()
                })
                .unwrap_or_default();
            tables.insert(
                tname.clone(),
                TableSchema {
                    columns,
                    is_root,
                    indexes,
                },
            );
        }
        let cksum = json.get("cksum").and_then(Json::as_str).map(str::to_owned);
        Ok(Schema {
            name: name.to_owned(),
            version,
            cksum,
            tables,
        })
    }

    /// Refuses a schema of another name or major version, saying what was found.
    pub fn check_compatible(&self, name: &str, major: u32) -> Result<(), Error> {
        if self.name == name && self.version.major == major {
            return Ok(());
        }
        Err(Error::SchemaMismatch {
            db: name.to_owned(),
            found: format!("{} {}", self.name, self.version),
            expected: format!("{name} {major}.x (>= {major}.0.0, < {}.0.0)", major + 1),
        })
    }

    pub fn column(&self, table: &str, column: &str) -> Option<&ColumnType> {
        self.tables.get(table)?.columns.get(column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(version: &str) -> Schema {
        Schema::from_json(&json!({
            "name": "OVN_Northbound", "version": version,
            "tables": {"Logical_Switch_Port": {"columns": {
                "name": {"type": "string"},
                "tag": {"type": {"key": {"type": "integer", "minInteger": 1}, "min": 0, "max": 1}},
                "addresses": {"type": {"key": "string", "min": 0, "max": "unlimited"}},
                "options": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
                "ha_chassis_group": {"type": {"key": {"type": "uuid", "refTable": "HA_Chassis_Group", "refType": "strong"}, "min": 0, "max": 1}}
            }, "indexes": [["name"]]}}
        }))
        .unwrap()
    }

    #[test]
    fn column_kinds() {
        let s = schema("7.0.0");
        assert_eq!(
            s.column("Logical_Switch_Port", "name").unwrap().kind(),
            ColumnKind::Scalar
        );
        assert_eq!(
            s.column("Logical_Switch_Port", "tag").unwrap().kind(),
            ColumnKind::Set
        );
        assert_eq!(
            s.column("Logical_Switch_Port", "addresses").unwrap().kind(),
            ColumnKind::Set
        );
        assert_eq!(
            s.column("Logical_Switch_Port", "options").unwrap().kind(),
            ColumnKind::Map
        );
        let hc = s.column("Logical_Switch_Port", "ha_chassis_group").unwrap();
        assert!(hc.key.ref_strong);
        assert_eq!(
            s.tables["Logical_Switch_Port"].indexes,
            vec![vec!["name".to_owned()]]
        );
        assert!(!s.tables["Logical_Switch_Port"].is_root);
    }

    #[test]
    fn version_check() {
        assert!(schema("7.0.0").check_compatible(NB_DB, NB_MAJOR).is_ok());
        assert!(schema("7.3.1").check_compatible(NB_DB, NB_MAJOR).is_ok());
        for v in ["6.3.0", "8.0.0"] {
            let err = schema(v).check_compatible(NB_DB, NB_MAJOR).unwrap_err();
            assert!(
                err.to_string().contains(&format!("OVN_Northbound {v}")),
                "{err}"
            );
            assert!(err.to_string().contains("7.x"), "{err}");
        }
        assert!(Version::parse("7.0").is_none());
        assert!(Version::parse("7.0.0.1").is_none());
    }
}
