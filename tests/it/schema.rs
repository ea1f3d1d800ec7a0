//! `schema/wepoq.schema.json` is generated from the Rust types and kept current here; the
//! examples validate against it with an independent validator.

use std::process::Command;

use crate::support::{repo, require};

#[test]
fn committed_schema_is_current() {
    let path = repo().join("schema/wepoq.schema.json");
    let generated = wepoq_compiler::schema::json_schema_text();
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        std::fs::write(&path, &generated).unwrap();
        panic!("schema/wepoq.schema.json was out of date and has been rewritten; commit it");
    }
}

#[test]
fn examples_validate_with_check_jsonschema() {
    if !require(
        "check-jsonschema",
        "validates the examples against the schema independently",
    ) {
        return;
    }
    let mut specs = vec![
        repo().join("examples/ovn-vote/wepoq.yaml"),
        repo().join("examples/roominator/wepoq.yaml"),
    ];
    for case in crate::support::cases()
        .into_iter()
        .filter(|c| c.name.starts_with("good-"))
    {
        specs.extend(case.specs);
    }
    let out = Command::new("check-jsonschema")
        .arg("--schemafile")
        .arg(repo().join("schema/wepoq.schema.json"))
        .args(&specs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // And the validator does reject what wepoq rejects for shape.
    let bad = repo().join("tests/data/bad-unknown-keys/wepoq.yaml");
    let out = Command::new("check-jsonschema")
        .arg("--schemafile")
        .arg(repo().join("schema/wepoq.schema.json"))
        .arg(&bad)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "check-jsonschema accepted a spec with unknown keys"
    );
}
