//! A row: column name to [`Value`], as sent in inserts and received from selects/monitors

use std::collections::BTreeMap;
use std::ops::Deref;

use serde_json::{Map, Value as Json};

use super::error::Error;
use super::value::{Uuid, Value, decode};

/// Columns of one row. Rows from the server carry `_uuid` (and, from selects, `_version`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row {
    columns: BTreeMap<String, Value>,
}

impl Row {
    pub fn new() -> Row {
        Row::default()
    }

    /// Builder form: `Row::new().with("name", "sw0")`.
    pub fn with(mut self, column: &str, value: impl Into<Value>) -> Row {
        self.columns.insert(column.to_owned(), value.into());
        self
    }

    pub fn insert(&mut self, column: &str, value: impl Into<Value>) {
        self.columns.insert(column.to_owned(), value.into());
    }

    pub fn remove(&mut self, column: &str) -> Option<Value> {
        self.columns.remove(column)
    }

    pub(crate) fn get_mut(&mut self, column: &str) -> Option<&mut Value> {
        self.columns.get_mut(column)
    }

    /// The row's `_uuid`, present on rows read from the server.
    pub fn uuid(&self) -> Option<&Uuid> {
        self.columns.get("_uuid").and_then(Value::as_uuid)
    }

    /// A string column (one-element set), e.g. `name`.
    pub fn str(&self, column: &str) -> Option<&str> {
        self.columns.get(column).and_then(Value::as_str)
    }

    pub fn to_json(&self) -> Json {
        Json::Object(
            self.columns
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect::<Map<_, _>>(),
        )
    }

    pub fn from_json(json: &Json) -> Result<Row, Error> {
        let object = json.as_object().ok_or_else(|| decode("row", json))?;
        let mut columns = BTreeMap::new();
        for (name, value) in object {
            columns.insert(name.clone(), Value::from_json(value)?);
        }
        Ok(Row { columns })
    }

    pub fn into_columns(self) -> BTreeMap<String, Value> {
        self.columns
    }
}

impl Deref for Row {
    type Target = BTreeMap<String, Value>;

    fn deref(&self) -> &Self::Target {
        &self.columns
    }
}

impl<S: Into<String>> FromIterator<(S, Value)> for Row {
    fn from_iter<I: IntoIterator<Item = (S, Value)>>(iter: I) -> Self {
        Row {
            columns: iter.into_iter().map(|(k, v)| (k.into(), v)).collect(),
        }
    }
}
