//! `br-wepoq` in the local Open_vSwitch database: the bridge itself, and wepoq's ports on it
//! (and the trunk veths' ends on br-int). Every row made here carries
//! `external_ids:wepoq.net/owner=gateway`; rows without it are never changed or removed.

use std::collections::BTreeMap;

use crate::attach::AttachError;
use crate::ovsdb::{self, Condition, Mutation, OpResult, Operation, Row, Uuid, Value};

const DB: &str = "Open_vSwitch";
pub const OWNER_KEY: &str = "wepoq.net/owner";
pub const OWNER_VALUE: &str = "gateway";
/// What a port is for: `trunk:<LSP>` or `client:<FQDN>`.
pub const ROLE_KEY: &str = "wepoq.net/gateway-port";

/// One of wepoq's gateway ports as the database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedPort {
    pub name: String,
    pub bridge: String,
    pub tag: Option<u16>,
    pub role: String,
}

/// A port as it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedPort {
    pub bridge: String,
    pub tag: Option<u16>,
    pub role: String,
    /// `iface-id` (the trunk LSP) for the br-int end of a trunk veth.
    pub iface_id: Option<String>,
}

pub struct Bridges {
    pub client: ovsdb::Client,
    at: String,
}

fn owner_ids(role: &str) -> Value {
    Value::map([(OWNER_KEY, OWNER_VALUE), (ROLE_KEY, role)])
}

impl Bridges {
    pub fn new(client: ovsdb::Client, at: String) -> Bridges {
        Bridges { client, at }
    }

    async fn transact(&self, ops: &[Operation]) -> Result<Vec<OpResult>, AttachError> {
        self.client
            .transact(DB, ops)
            .await
            .map_err(|source| AttachError::Ovsdb {
                at: self.at.clone(),
                source,
            })
    }

    /// Makes `bridge` (fail mode standalone: a learning switch) if it is missing, with the
    /// datapath type of `like` (br-int), so both sit in one datapath.
    pub async fn ensure_bridge(&self, bridge: &str, like: &str) -> Result<(), AttachError> {
        let found = self
            .transact(&[
                Operation::select_columns(
                    "Bridge",
                    vec![Condition::eq("name", bridge)],
                    &["_uuid"],
                ),
                Operation::select_columns(
                    "Bridge",
                    vec![Condition::eq("name", like)],
                    &["datapath_type"],
                ),
            ])
            .await?;
        if !found[0].rows().is_empty() {
            return Ok(());
        }
        let datapath = found[1]
            .rows()
            .first()
            .and_then(|r| r.str("datapath_type"))
            .ok_or_else(|| AttachError::NoBridge(like.to_owned()))?
            .to_owned();
        let ops = [
            Operation::insert_named(
                "Interface",
                Row::new().with("name", bridge).with("type", "internal"),
                "iface",
            ),
            Operation::insert_named(
                "Port",
                Row::new()
                    .with("name", bridge)
                    .with("interfaces", Value::named_uuid("iface")),
                "port",
            ),
            Operation::insert_named(
                "Bridge",
                Row::new()
                    .with("name", bridge)
                    .with("ports", Value::named_uuid("port"))
                    .with("fail_mode", "standalone")
                    .with("datapath_type", datapath.as_str())
                    .with("external_ids", owner_ids("bridge")),
                "bridge",
            ),
            Operation::mutate(
                "Open_vSwitch",
                vec![],
                vec![Mutation::insert("bridges", Value::named_uuid("bridge"))],
            ),
        ];
        self.transact(&ops).await?;
        Ok(())
    }

    /// Every port of ours, on any bridge.
    pub async fn owned(&self) -> Result<Vec<OwnedPort>, AttachError> {
        let results = self
            .transact(&[
                Operation::select_columns(
                    "Port",
                    vec![Condition::includes(
                        "external_ids",
                        Value::map([(OWNER_KEY, OWNER_VALUE)]),
                    )],
                    &["_uuid", "name", "tag", "external_ids"],
                ),
                Operation::select_columns("Bridge", vec![], &["name", "ports"]),
            ])
            .await?;
        let mut bridge_of: BTreeMap<Uuid, String> = BTreeMap::new();
        for b in results[1].rows() {
            let name = b.str("name").unwrap_or_default().to_owned();
            for atom in b.get("ports").and_then(Value::as_set).into_iter().flatten() {
                if let Some(u) = atom.as_uuid() {
                    bridge_of.insert(u.clone(), name.clone());
                }
            }
        }
        Ok(results[0]
            .rows()
            .iter()
            .filter_map(|r| {
                let role = r.get("external_ids")?.get(ROLE_KEY)?.as_str()?.to_owned();
                if role == "bridge" {
                    return None;
                }
                Some(OwnedPort {
                    name: r.str("name")?.to_owned(),
                    bridge: bridge_of.get(r.uuid()?).cloned().unwrap_or_default(),
                    tag: r
                        .get("tag")
                        .and_then(Value::as_i64)
                        .and_then(|t| u16::try_from(t).ok()),
                    role,
                })
            })
            .collect())
    }

    /// Adds port `name` (its netdev exists) as `want` says. Refuses a foreign port of that
    /// name.
    pub async fn add(&self, name: &str, want: &WantedPort) -> Result<(), AttachError> {
        let found = self
            .transact(&[
                Operation::select_columns("Port", vec![Condition::eq("name", name)], &["_uuid"]),
                Operation::select_columns(
                    "Bridge",
                    vec![Condition::eq("name", want.bridge.as_str())],
                    &["_uuid"],
                ),
            ])
            .await?;
        if !found[0].rows().is_empty() {
            return Err(AttachError::ForeignPort {
                name: name.to_owned(),
            });
        }
        let bridge = found[1]
            .rows()
            .first()
            .and_then(Row::uuid)
            .cloned()
            .ok_or_else(|| AttachError::NoBridge(want.bridge.clone()))?;
        let mut iface_ids = vec![
            (OWNER_KEY, OWNER_VALUE.to_owned()),
            (ROLE_KEY, want.role.clone()),
        ];
        if let Some(id) = &want.iface_id {
            iface_ids.push(("iface-id", id.clone()));
        }
        let mut port = Row::new()
            .with("name", name)
            .with("interfaces", Value::named_uuid("iface"))
            .with("external_ids", owner_ids(&want.role));
        if let Some(tag) = want.tag {
            port = port.with("tag", i64::from(tag));
        }
        let ops = [
            Operation::insert_named(
                "Interface",
                Row::new()
                    .with("name", name)
                    .with("external_ids", Value::map(iface_ids)),
                "iface",
            ),
            Operation::insert_named("Port", port, "port"),
            Operation::mutate(
                "Bridge",
                vec![Condition::uuid(&bridge)],
                vec![Mutation::insert("ports", Value::named_uuid("port"))],
            ),
        ];
        self.transact(&ops).await?;
        Ok(())
    }

    /// Sets the tag of our port `name`.
    pub async fn retag(&self, name: &str, tag: u16) -> Result<(), AttachError> {
        self.transact(&[Operation::update(
            "Port",
            vec![
                Condition::eq("name", name),
                Condition::includes("external_ids", Value::map([(OWNER_KEY, OWNER_VALUE)])),
            ],
            Row::new().with("tag", i64::from(tag)),
        )])
        .await?;
        Ok(())
    }

    /// Removes our port `name` from its bridge (a foreign one is left alone).
    pub async fn remove(&self, name: &str) -> Result<(), AttachError> {
        let found = self
            .transact(&[Operation::select_columns(
                "Port",
                vec![
                    Condition::eq("name", name),
                    Condition::includes("external_ids", Value::map([(OWNER_KEY, OWNER_VALUE)])),
                ],
                &["_uuid"],
            )])
            .await?;
        let Some(uuid) = found[0].rows().first().and_then(Row::uuid).cloned() else {
            return Ok(());
        };
        self.transact(&[Operation::mutate(
            "Bridge",
            vec![Condition::includes("ports", Value::uuid(uuid.clone()))],
            vec![Mutation::delete("ports", Value::uuid(uuid))],
        )])
        .await?;
        Ok(())
    }
}
