//! The OVS side of an attachment: Port and Interface rows in the local `Open_vSwitch`
//! database, through wepoq's OVSDB client.

use crate::ovsdb::{self, Condition, Mutation, OpResult, Operation, Row, Uuid, Value};

use super::{AttachError, Attachment, Vif};

pub(crate) const DB: &str = "Open_vSwitch";

/// Marks wepoq's OVS Ports and Interfaces; nothing without it is changed or removed.
pub const OWNER_KEY: &str = "wepoq.net/owner";
pub const OWNER_VALUE: &str = "attach";
/// The Docker container id the port was made for.
pub const CONTAINER_KEY: &str = "wepoq.net/container";
/// Inode of the container's network namespace when attached (a restart changes it).
pub const NETNS_KEY: &str = "wepoq.net/netns";
/// [`Vif::fingerprint`] of what was configured.
pub const VIF_KEY: &str = "wepoq.net/vif";

/// The last two operations of a transaction after which ovs-vswitchd is to be waited for,
/// as `ovs-vsctl --wait` does: they bump `next_cfg` and read it back ([`wait_applied`]).
pub(crate) fn bump_cfg() -> [Operation; 2] {
    [
        Operation::mutate("Open_vSwitch", vec![], vec![Mutation::add("next_cfg", 1)]),
        Operation::select_columns("Open_vSwitch", vec![], &["next_cfg"]),
    ]
}

/// Waits (5 s at most) until ovs-vswitchd reports applied the configuration asked for by the
/// transaction whose `results` end with [`bump_cfg`]'s. Without a vswitchd that reports (or
/// past the bound) it goes on: the caller's changes are in the database either way.
pub(crate) async fn wait_applied(
    client: &ovsdb::Client,
    at: &str,
    results: &[OpResult],
) -> Result<(), AttachError> {
    let Some(next) = results
        .last()
        .and_then(|r| r.rows().first())
        .and_then(|row| row.get("next_cfg").and_then(Value::as_i64))
    else {
        return Ok(());
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let found = client
            .transact(
                DB,
                &[Operation::select_columns(
                    "Open_vSwitch",
                    vec![],
                    &["cur_cfg"],
                )],
            )
            .await
            .map_err(|source| AttachError::Ovsdb {
                at: at.to_owned(),
                source,
            })?;
        let cur = found
            .first()
            .and_then(|r| r.rows().first())
            .and_then(|row| row.get("cur_cfg").and_then(Value::as_i64));
        if cur.is_none_or(|c| c >= next) || std::time::Instant::now() > deadline {
            return Ok(());
        }
        // It usually takes a few milliseconds: a client's first frames wait for it.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

pub(crate) struct Ovs {
    pub client: ovsdb::Client,
    at: String,
    pub bridge: String,
}

/// What the database holds about one would-be attachment, read in one transaction.
pub(crate) struct State {
    pub port: Option<Row>,
    iface: Option<Row>,
    /// Interfaces (of any name) bound to the logical port.
    claims: Vec<Row>,
    bridge: Option<Uuid>,
}

fn ids<'a>(row: &'a Row, key: &str) -> Option<&'a str> {
    row.get("external_ids")?.get(key)?.as_str()
}

fn owned(row: &Row) -> bool {
    ids(row, OWNER_KEY) == Some(OWNER_VALUE)
}

impl State {
    pub fn check_claims(&self, name: &str, port: &str, container: &str) -> Result<(), AttachError> {
        if let Some(p) = &self.port
            && !owned(p)
        {
            return Err(AttachError::ForeignPort {
                name: name.to_owned(),
            });
        }
        for other in &self.claims {
            let other_name = other.str("name").unwrap_or("?");
            if other_name == name {
                continue;
            }
            let by = match ids(other, CONTAINER_KEY) {
                Some(c) if owned(other) && c != container => format!("container {c}"),
                _ => format!("OVS interface {other_name}"),
            };
            return Err(AttachError::PortClaimed {
                port: port.to_owned(),
                by,
            });
        }
        Ok(())
    }

    /// The Port and Interface exist, are ours, and record exactly this attachment.
    pub fn matches(&self, container: &str, netns: u64, fingerprint: &str) -> bool {
        let (Some(port), Some(iface)) = (&self.port, &self.iface) else {
            return false;
        };
        let inode = netns.to_string();
        owned(port)
            && owned(iface)
            && ids(iface, CONTAINER_KEY) == Some(container)
            && ids(iface, NETNS_KEY) == Some(inode.as_str())
            && ids(iface, VIF_KEY) == Some(fingerprint)
    }

    pub fn bridge_uuid(&self, bridge: &str) -> Result<&Uuid, AttachError> {
        self.bridge
            .as_ref()
            .ok_or_else(|| AttachError::NoBridge(bridge.to_owned()))
    }
}

impl Ovs {
    pub fn new(client: ovsdb::Client, at: String, bridge: String) -> Ovs {
        Ovs { client, at, bridge }
    }

    fn err(&self) -> impl FnOnce(ovsdb::Error) -> AttachError + '_ {
        |source| AttachError::Ovsdb {
            at: self.at.clone(),
            source,
        }
    }

    async fn transact(&self, ops: &[Operation]) -> Result<Vec<OpResult>, AttachError> {
        self.client.transact(DB, ops).await.map_err(self.err())
    }

    pub async fn state(&self, name: &str, port: &str) -> Result<State, AttachError> {
        let by_name = || vec![Condition::eq("name", name)];
        let ops = [
            Operation::select_columns("Port", by_name(), &["_uuid", "external_ids"]),
            Operation::select_columns("Interface", by_name(), &["_uuid", "external_ids"]),
            Operation::select_columns(
                "Interface",
                vec![Condition::includes(
                    "external_ids",
                    Value::map([("iface-id", port)]),
                )],
                &["name", "external_ids"],
            ),
            Operation::select_columns(
                "Bridge",
                vec![Condition::eq("name", self.bridge.as_str())],
                &["_uuid"],
            ),
        ];
        let mut results = self.transact(&ops).await?.into_iter().map(|r| match r {
            OpResult::Select { rows } => rows,
            _ => Vec::new(),
        });
        let mut next = || results.next().unwrap_or_default();
        Ok(State {
            port: next().into_iter().next(),
            iface: next().into_iter().next(),
            claims: next(),
            bridge: next().first().and_then(|r| r.uuid().cloned()),
        })
    }

    /// Inserts the Port and Interface in one transaction: the attachment's commit mark.
    pub async fn insert(
        &self,
        name: &str,
        bridge: &Uuid,
        container: &str,
        netns: u64,
        vif: &Vif,
        fingerprint: &str,
    ) -> Result<(), AttachError> {
        let iface_ids = Value::map([
            ("iface-id", vif.port.as_str()),
            ("attached-mac", vif.mac.as_str()),
            (OWNER_KEY, OWNER_VALUE),
            (CONTAINER_KEY, container),
            (NETNS_KEY, netns.to_string().as_str()),
            (VIF_KEY, fingerprint),
        ]);
        let port_ids = Value::map([(OWNER_KEY, OWNER_VALUE), (CONTAINER_KEY, container)]);
        let ops = [
            Operation::insert_named(
                "Interface",
                Row::new()
                    .with("name", name)
                    .with("external_ids", iface_ids),
                "iface",
            ),
            Operation::insert_named(
                "Port",
                Row::new()
                    .with("name", name)
                    .with("interfaces", Value::named_uuid("iface"))
                    .with("external_ids", port_ids),
                "port",
            ),
            Operation::mutate(
                "Bridge",
                vec![Condition::uuid(bridge)],
                vec![Mutation::insert("ports", Value::named_uuid("port"))],
            ),
        ];
        let results = self.transact(&ops).await?;
        if results.get(2).and_then(OpResult::count) != Some(1) {
            return Err(AttachError::NoBridge(self.bridge.clone()));
        }
        Ok(())
    }

    /// Removes port `name` from whichever bridge holds it, if it is ours. `false` when a
    /// port of that name exists and is not ours (left alone).
    pub async fn remove(&self, name: &str) -> Result<bool, AttachError> {
        let ops = [Operation::select_columns(
            "Port",
            vec![Condition::eq("name", name)],
            &["_uuid", "external_ids"],
        )];
        let rows = self.transact(&ops).await?;
        let Some(port) = rows.first().and_then(|r| r.rows().first()) else {
            return Ok(true);
        };
        if !owned(port) {
            return Ok(false);
        }
        let uuid = port.uuid().cloned().expect("selected rows carry _uuid");
        // Port and Interface are not root rows: dropping the bridge's reference deletes both.
        // `next_cfg` is bumped with it, as `ovs-vsctl --wait` does, so that we can wait for
        // ovs-vswitchd to have let go of the port: a port of the same name added before it
        // has (a re-attach after a restart) would keep the old device's socket and carry
        // nothing.
        let [bump, asked] = bump_cfg();
        let ops = [
            Operation::mutate(
                "Bridge",
                vec![Condition::includes("ports", Value::uuid(uuid.clone()))],
                vec![Mutation::delete("ports", Value::uuid(uuid))],
            ),
            bump,
            asked,
        ];
        let results = self.transact(&ops).await?;
        wait_applied(&self.client, &self.at, &results).await?;
        Ok(true)
    }

    pub async fn attached(&self) -> Result<Vec<Attachment>, AttachError> {
        let ops = [Operation::select_columns(
            "Interface",
            vec![Condition::includes(
                "external_ids",
                Value::map([(OWNER_KEY, OWNER_VALUE)]),
            )],
            &["name", "external_ids"],
        )];
        let results = self.transact(&ops).await?;
        let rows = results.first().map(OpResult::rows).unwrap_or_default();
        Ok(rows
            .iter()
            .filter_map(|row| {
                Some(Attachment {
                    container_id: ids(row, CONTAINER_KEY)?.to_owned(),
                    interface: row.str("name")?.to_owned(),
                    port: ids(row, "iface-id").unwrap_or_default().to_owned(),
                    mac: ids(row, "attached-mac").unwrap_or_default().to_owned(),
                    netns: ids(row, NETNS_KEY)
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0),
                })
            })
            .collect())
    }
}
