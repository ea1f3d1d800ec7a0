//! The external clients a gateway carries, as the NB says: the owned child ports of its
//! trunk port (`external_ids:wepoq-trunk=<gateway>`).

use std::net::Ipv4Addr;

use wepoq_compiler::emit::TRUNK_KEY;

use crate::attach::AttachError;
use crate::attach::resolve::select;
use crate::ovsdb::{self, Atom, Condition, Operation, Row, Value};

/// A trunk port of this gateway: the logical port its patch port on br-int binds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Trunk {
    pub port: String,
}

/// One external client: a child of a trunk, carried with `tag`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExternalClient {
    /// The endpoint's FQDN (`external_ids:wepoq-name`), what its credential names.
    pub fqdn: String,
    /// The child Logical_Switch_Port.
    pub port: String,
    pub trunk: String,
    pub tag: u16,
    pub mac: String,
    pub ip: Ipv4Addr,
}

/// The trunks of `gateway` and their children, each sorted.
pub async fn external_clients(
    nb: &ovsdb::Client,
    gateway: &str,
) -> Result<(Vec<Trunk>, Vec<ExternalClient>), AttachError> {
    let found = select(
        nb,
        &[Operation::select_columns(
            "Logical_Switch_Port",
            vec![Condition::includes(
                "external_ids",
                Value::map([(TRUNK_KEY, gateway)]),
            )],
            &["name"],
        )],
    )
    .await?;
    let mut trunks: Vec<Trunk> = found
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some(Trunk {
                port: r.str("name")?.to_owned(),
            })
        })
        .collect();
    trunks.sort();
    if trunks.is_empty() {
        return Ok((trunks, Vec::new()));
    }
    // One select per trunk, in one transaction: children are found by their parent.
    let ops: Vec<Operation> = trunks
        .iter()
        .map(|t| {
            Operation::select_columns(
                "Logical_Switch_Port",
                vec![Condition::eq("parent_name", t.port.as_str())],
                &["name", "addresses", "tag", "tag_request", "external_ids"],
            )
        })
        .collect();
    let found = select(nb, &ops).await?;
    let mut clients = Vec::new();
    for (trunk, rows) in trunks.iter().zip(found) {
        clients.extend(rows.iter().filter_map(|r| child(&trunk.port, r)));
    }
    clients.sort();
    Ok((trunks, clients))
}

fn child(trunk: &str, row: &Row) -> Option<ExternalClient> {
    let fqdn = row
        .get("external_ids")?
        .get("wepoq-name")?
        .as_str()?
        .to_owned();
    let tag = row
        .get("tag")
        .and_then(Value::as_i64)
        .or_else(|| row.get("tag_request").and_then(Value::as_i64))?;
    let address = row
        .get("addresses")?
        .as_set()?
        .iter()
        .find_map(Atom::as_str)?
        .to_owned();
    let mut words = address.split_whitespace();
    let mac = words.next()?.to_owned();
    let ip = words.next()?.parse().ok()?;
    Some(ExternalClient {
        fqdn,
        port: row.str("name")?.to_owned(),
        trunk: trunk.to_owned(),
        tag: u16::try_from(tag).ok()?,
        mac,
        ip,
    })
}
