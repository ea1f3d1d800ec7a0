//! The gateway side of external clients (seed 002's logical trunk): on a gateway chassis the
//! host agent (`wepoq agent --gateway NAME`) keeps the OVS bridge `br-wepoq` and binds the
//! gateway's trunk ports there.
//!
//! ```text
//!   br-int ── wqt<h>i ══veth══ wqt<h>w ── br-wepoq ── access port, tag 1 (client c1's netdev)
//!   (iface-id = trunk.gw.ns)            (trunk: all tags) └─ access port, tag 2 (client c2's)
//! ```
//!
//! Each trunk port in the NB (`external_ids:wepoq-trunk=<gateway>`) gets a veth pair: one end
//! on br-int bound to the trunk port, the other on br-wepoq as a trunk (untagged) port. Each
//! connected client's netdev (a tunnel's device, see [`crate::tunnel`], or any netdev) is an
//! access port on br-wepoq with the client's tag, so its frames reach br-int tagged, where
//! ovn-controller hands them to the client's child port (`parent_name` + `tag`): port
//! security, ACLs, DNS and load balancers then treat it like any client.
//!
//! Level-triggered like the rest of the agent: [`Gateway::sync`] reads the NB and OVS and
//! makes br-wepoq exactly what is wanted, so a restart (or a veth removed by hand) is
//! repaired by the next sync. Rows are marked `wepoq.net/owner=gateway`.

mod bridge;
mod clients;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

pub use bridge::{OWNER_KEY, OWNER_VALUE, ROLE_KEY};
pub use clients::{ExternalClient, Trunk, external_clients};

use crate::attach::netns::{Netns, NsLink};
use crate::attach::{AttachConfig, AttachError};
use crate::ovsdb::{self, Timeouts};
use bridge::{Bridges, WantedPort};

/// What a gateway agent serves.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The gateway's name: trunk ports marked `wepoq-trunk=<name>` are this host's.
    pub name: String,
    /// The bridge for client access ports, `br-wepoq`.
    pub bridge: String,
    /// How often the NB and OVS are compared when nothing else prompts it.
    pub interval: Duration,
}

/// The two veth ends of a trunk port: on br-int (`…i`) and on br-wepoq (`…w`).
pub fn trunk_ifnames(trunk_port: &str) -> (String, String) {
    let h = short_hash(trunk_port);
    (format!("wqt{h}i"), format!("wqt{h}w"))
}

/// The access netdev name wepoq gives a client (at most 15 bytes, stable per FQDN).
pub fn access_ifname(fqdn: &str) -> String {
    format!("wqc{}", short_hash(fqdn))
}

fn short_hash(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// What one sync found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub trunks: usize,
    pub clients: usize,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

pub struct Gateway {
    cfg: GatewayConfig,
    integration: String,
    bridges: Bridges,
    host: NsLink,
    host_ns: Netns,
    /// Access ports handed in (netdev → client FQDN); their tags come from the NB.
    access: Mutex<BTreeMap<String, String>>,
    /// Client FQDN → tag, as of the last sync.
    tags: Mutex<BTreeMap<String, u16>>,
}

impl Gateway {
    /// Connects to the local OVS database and opens netlink where ovs-vswitchd's ports live.
    pub async fn connect(
        attach: &AttachConfig,
        cfg: GatewayConfig,
    ) -> Result<Gateway, AttachError> {
        let timeouts = Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(10),
            ..Timeouts::default()
        };
        let client = ovsdb::Client::connect(&attach.ovs_db, timeouts)
            .await
            .map_err(|source| AttachError::Ovsdb {
                at: attach.ovs_db.clone(),
                source,
            })?;
        let ns_path = attach
            .ovs_netns
            .clone()
            .unwrap_or_else(|| "/proc/self/ns/net".into());
        let host_ns = Netns::open(&ns_path)
            .map_err(AttachError::io(format!("open {}", ns_path.display())))?;
        let host = NsLink::open(attach.ovs_netns.as_ref().map(|_| &host_ns))
            .await
            .map_err(AttachError::io("netlink in the OVS network namespace"))?;
        Ok(Gateway {
            cfg,
            integration: attach.bridge.clone(),
            bridges: Bridges::new(client, attach.ovs_db.clone()),
            host,
            host_ns,
            access: Mutex::new(BTreeMap::new()),
            tags: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.cfg
    }

    /// The path of the namespace where access netdevs must be (ovs-vswitchd's).
    pub fn netns_path(ovs_netns: Option<&Path>) -> std::path::PathBuf {
        ovs_netns.map_or_else(|| "/proc/self/ns/net".into(), Path::to_path_buf)
    }

    /// The tags of the clients the NB gave this gateway at the last sync.
    pub fn client_tags(&self) -> BTreeMap<String, u16> {
        self.tags.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts the existing netdev `netdev` on br-wepoq for client `fqdn` (with its tag from
    /// the NB); kept until [`Gateway::remove_access_port`]. Idempotent.
    pub async fn ensure_access_port(
        &self,
        nb: &ovsdb::Client,
        netdev: &str,
        fqdn: &str,
    ) -> Result<SyncReport, AttachError> {
        self.access
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(netdev.to_owned(), fqdn.to_owned());
        self.sync(nb).await
    }

    pub async fn remove_access_port(
        &self,
        nb: &ovsdb::Client,
        netdev: &str,
    ) -> Result<SyncReport, AttachError> {
        self.access
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(netdev);
        self.sync(nb).await
    }

    /// Makes br-wepoq and the trunk veths what the NB and the access ports ask for.
    pub async fn sync(&self, nb: &ovsdb::Client) -> Result<SyncReport, AttachError> {
        let (trunks, clients) = external_clients(nb, &self.cfg.name).await?;
        let tags: BTreeMap<String, u16> = clients.iter().map(|c| (c.fqdn.clone(), c.tag)).collect();
        *self.tags.lock().unwrap_or_else(|p| p.into_inner()) = tags.clone();
        self.bridges
            .ensure_bridge(&self.cfg.bridge, &self.integration)
            .await?;

        let mut wanted: BTreeMap<String, WantedPort> = BTreeMap::new();
        for trunk in &trunks {
            let (on_int, on_wepoq) = trunk_ifnames(&trunk.port);
            self.ensure_veth(&on_int, &on_wepoq).await?;
            let role = format!("trunk:{}", trunk.port);
            wanted.insert(
                on_int,
                WantedPort {
                    bridge: self.integration.clone(),
                    tag: None,
                    role: role.clone(),
                    iface_id: Some(trunk.port.clone()),
                },
            );
            wanted.insert(
                on_wepoq,
                WantedPort {
                    bridge: self.cfg.bridge.clone(),
                    tag: None,
                    role,
                    iface_id: None,
                },
            );
        }
        let access = self
            .access
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (netdev, fqdn) in &access {
            // A client the NB no longer names, or whose netdev is gone, gets no port.
            let Some(&tag) = tags.get(fqdn) else { continue };
            if self.host.link_index(netdev).await?.is_none() {
                continue;
            }
            self.host.bring_up_offloadless(netdev).await?;
            wanted.insert(
                netdev.clone(),
                WantedPort {
                    bridge: self.cfg.bridge.clone(),
                    tag: Some(tag),
                    role: format!("client:{fqdn}"),
                    iface_id: None,
                },
            );
        }

        let mut report = SyncReport {
            trunks: trunks.len(),
            clients: clients.len(),
            ..SyncReport::default()
        };
        let owned = self.bridges.owned().await?;
        for port in &owned {
            match wanted.get(&port.name) {
                Some(w) if w.bridge == port.bridge && w.role == port.role => {
                    if let (Some(tag), true) = (w.tag, w.tag != port.tag) {
                        self.bridges.retag(&port.name, tag).await?;
                    }
                }
                _ => {
                    self.bridges.remove(&port.name).await?;
                    report.removed.push(port.name.clone());
                }
            }
        }
        for (name, want) in &wanted {
            let present = owned
                .iter()
                .any(|p| &p.name == name && p.bridge == want.bridge && p.role == want.role);
            if !present {
                self.bridges.add(name, want).await?;
                report.added.push(name.clone());
            }
        }
        // Veths of trunks that are gone.
        for port in &owned {
            if port.role.starts_with("trunk:")
                && port.name.ends_with('i')
                && !wanted.contains_key(&port.name)
                && let Some(index) = self.host.link_index(&port.name).await?
            {
                self.host.delete_link(index).await?;
            }
        }
        Ok(report)
    }

    async fn ensure_veth(&self, on_int: &str, on_wepoq: &str) -> Result<(), AttachError> {
        let have_int = self.host.link_index(on_int).await?;
        let have_wepoq = self.host.link_index(on_wepoq).await?;
        if have_int.is_none() || have_wepoq.is_none() {
            // Half a pair (one end deleted by hand) cannot be repaired: make it again.
            for index in [have_int, have_wepoq].into_iter().flatten() {
                self.host.delete_link(index).await?;
            }
            // Locally administered, distinct per trunk (the bytes of the name's hash).
            let h = on_int.as_bytes();
            let mac = [0x0a, 0x58, 0xfe, h[3], h[4], h[5]];
            self.host
                .add_veth(on_int, on_wepoq, &mac, &self.host_ns)
                .await?;
        }
        self.host.bring_up_offloadless(on_int).await?;
        self.host.bring_up_offloadless(on_wepoq).await?;
        Ok(())
    }
}
