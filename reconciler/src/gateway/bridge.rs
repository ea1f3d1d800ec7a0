//! `br-wepoq` in the local Open_vSwitch database: the bridge itself, and wepoq's ports on it
//! (and the trunk patch ports' ends on br-int). Every row made here carries
//! `external_ids:wepoq.net/owner=gateway`; rows without it are never changed or removed.

use std::collections::BTreeMap;

use crate::attach::AttachError;
use crate::attach::ovs::{bump_cfg, wait_applied};
use crate::ovsdb::{self, Condition, Mutation, OpResult, Operation, Row, Uuid, Value};

const DB: &str = "Open_vSwitch";
pub const OWNER_KEY: &str = "wepoq.net/owner";
pub const OWNER_VALUE: &str = "gateway";
/// What a port is for: `trunk:<LSP>` or `client:<FQDN>`.
pub const ROLE_KEY: &str = "wepoq.net/gateway-port";
/// On the Interface: the ifindex of the netdev it was added for.
pub const IFINDEX_KEY: &str = "wepoq.net/ifindex";

/// One of wepoq's gateway ports as the database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedPort {
    pub name: String,
    pub bridge: String,
    pub tag: Option<u16>,
    pub role: String,
    /// The netdev's ifindex when the port was added ([`IFINDEX_KEY`]). A netdev deleted
    /// and made again under the same name has a new one, and ovs-vswitchd (userspace
    /// datapath) keeps reading the old socket: such a port must be removed and added again.
    pub ifindex: Option<u32>,
    /// A patch port's peer (`options:peer`).
    pub patch_peer: Option<String>,
}

/// What the database holds of ours, read in one transaction.
pub struct Owned {
    /// Our ports, on any bridge.
    pub ports: Vec<OwnedPort>,
    /// Every bridge by name, and whether it is ours (marked by [`Bridges::ensure_bridge`]).
    pub bridges: BTreeMap<String, bool>,
}

/// A port as it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedPort {
    pub bridge: String,
    pub tag: Option<u16>,
    pub role: String,
    /// `iface-id` (the trunk LSP) for the br-int end of a trunk.
    pub iface_id: Option<String>,
    /// A netdev's ifindex now (none for a patch port).
    pub ifindex: Option<u32>,
    /// A patch port to this peer (a trunk's ends), rather than a netdev.
    pub patch_peer: Option<String>,
}

impl WantedPort {
    /// Whether `port` is this one already (same place, role, netdev or peer).
    pub fn is(&self, port: &OwnedPort) -> bool {
        self.bridge == port.bridge
            && self.role == port.role
            && self.ifindex == port.ifindex
            && self.patch_peer == port.patch_peer
    }
}

pub struct Bridges {
    pub client: ovsdb::Client,
    at: String,
}

fn owner_ids(role: &str) -> Value {
    Value::map([(OWNER_KEY, OWNER_VALUE), (ROLE_KEY, role)])
}

/// Whether `row` carries our owner mark.
fn marked_ours(row: &Row) -> bool {
    row.get("external_ids")
        .and_then(|ids| ids.get(OWNER_KEY))
        .and_then(|v| v.as_str())
        == Some(OWNER_VALUE)
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

    /// Deletes our bridge `name` if every port left on it is ours or its own internal
    /// port; a bridge holding someone else's port is kept. Whether it was deleted.
    pub async fn remove_bridge_if_ours(&self, name: &str) -> Result<bool, AttachError> {
        let found = self
            .transact(&[
                Operation::select_columns(
                    "Bridge",
                    vec![
                        Condition::eq("name", name),
                        Condition::includes("external_ids", Value::map([(OWNER_KEY, OWNER_VALUE)])),
                    ],
                    &["_uuid", "ports"],
                ),
                Operation::select_columns("Port", vec![], &["_uuid", "name", "external_ids"]),
            ])
            .await?;
        let Some(bridge) = found[0].rows().first() else {
            return Ok(false);
        };
        let ports: Vec<&Uuid> = bridge
            .get("ports")
            .and_then(Value::as_set)
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_uuid())
            .collect();
        let foreign = found[1].rows().iter().any(|p| {
            p.uuid().is_some_and(|u| ports.contains(&u))
                && p.str("name") != Some(name)
                && !marked_ours(p)
        });
        if foreign {
            return Ok(false);
        }
        let uuid = bridge
            .uuid()
            .cloned()
            .ok_or_else(|| AttachError::NoBridge(name.to_owned()))?;
        self.transact(&[Operation::mutate(
            "Open_vSwitch",
            vec![],
            vec![Mutation::delete("bridges", Value::uuid(uuid))],
        )])
        .await?;
        Ok(true)
    }

    /// Every port of ours, on any bridge, and every bridge.
    pub async fn owned(&self) -> Result<Owned, AttachError> {
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
                Operation::select_columns("Bridge", vec![], &["name", "ports", "external_ids"]),
                Operation::select_columns(
                    "Interface",
                    vec![Condition::includes(
                        "external_ids",
                        Value::map([(OWNER_KEY, OWNER_VALUE)]),
                    )],
                    &["name", "external_ids", "options"],
                ),
            ])
            .await?;
        let ifindex_of: BTreeMap<String, u32> = results[2]
            .rows()
            .iter()
            .filter_map(|r| {
                let index = r
                    .get("external_ids")?
                    .get(IFINDEX_KEY)?
                    .as_str()?
                    .parse()
                    .ok()?;
                Some((r.str("name")?.to_owned(), index))
            })
            .collect();
        let peer_of: BTreeMap<String, String> = results[2]
            .rows()
            .iter()
            .filter_map(|r| {
                let peer = r.get("options")?.get("peer")?.as_str()?;
                Some((r.str("name")?.to_owned(), peer.to_owned()))
            })
            .collect();
        let mut bridge_of: BTreeMap<Uuid, String> = BTreeMap::new();
        let mut bridges = BTreeMap::new();
        for b in results[1].rows() {
            let name = b.str("name").unwrap_or_default().to_owned();
            let ours = marked_ours(b);
            bridges.insert(name.clone(), ours);
            for atom in b.get("ports").and_then(Value::as_set).into_iter().flatten() {
                if let Some(u) = atom.as_uuid() {
                    bridge_of.insert(u.clone(), name.clone());
                }
            }
        }
        let ports = results[0]
            .rows()
            .iter()
            .filter_map(|r| {
                let role = r.get("external_ids")?.get(ROLE_KEY)?.as_str()?.to_owned();
                if role == "bridge" {
                    return None;
                }
                let name = r.str("name")?.to_owned();
                Some(OwnedPort {
                    ifindex: ifindex_of.get(&name).copied(),
                    patch_peer: peer_of.get(&name).cloned(),
                    name,
                    bridge: bridge_of.get(r.uuid()?).cloned().unwrap_or_default(),
                    tag: r
                        .get("tag")
                        .and_then(Value::as_i64)
                        .and_then(|t| u16::try_from(t).ok()),
                    role,
                })
            })
            .collect();
        Ok(Owned { ports, bridges })
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
        if let Some(index) = want.ifindex {
            iface_ids.push((IFINDEX_KEY, index.to_string()));
        }
        let mut iface = Row::new()
            .with("name", name)
            .with("external_ids", Value::map(iface_ids));
        if let Some(peer) = &want.patch_peer {
            iface = iface
                .with("type", "patch")
                .with("options", Value::map([("peer", peer.as_str())]));
        }
        let mut port = Row::new()
            .with("name", name)
            .with("interfaces", Value::named_uuid("iface"))
            .with("external_ids", owner_ids(&want.role));
        if let Some(tag) = want.tag {
            port = port.with("tag", i64::from(tag));
        }
        let ops = [
            Operation::insert_named("Interface", iface, "iface"),
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

    /// Waits (up to 5 s) until ovs-vswitchd has applied every change made so far. A port
    /// removed and added again under one name before it looked would keep the old netdev
    /// open: it compares ports by name.
    pub async fn applied(&self) -> Result<(), AttachError> {
        let results = self.transact(&bump_cfg()).await?;
        wait_applied(&self.client, &self.at, &results).await
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
