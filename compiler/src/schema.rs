//! The JSON Schema of `wepoq.yaml`, generated from the types in `spec`.

use crate::spec::Spec;

/// The schema as a JSON value (draft 2020-12).
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Spec)).expect("a generated schema serializes")
}

/// The schema as the pretty-printed text kept in `schema/wepoq.schema.json`.
pub fn json_schema_text() -> String {
    let mut text =
        serde_json::to_string_pretty(&json_schema()).expect("a generated schema serializes");
    text.push('\n');
    text
}
