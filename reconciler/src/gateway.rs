//! The gateway side of external clients (seed 002's logical trunk): on a gateway chassis the
//! host agent (`wepoq agent --gateway NAME`) keeps an OVS bridge `br-wepoq-<h>` per trunk port
//! of that gateway (one per namespace) and binds the trunk there.
//!
//! ```text
//!   br-int ── wqt<h>i ══patch══ wqt<h>w ── br-wepoq-<h> ── access port, tag 1 (c1's netdev)
//!   (iface-id = trunk.gw.ns)             (trunk: all tags)   └─ access port, tag 2 (c2's)
//! ```
//!
//! Each trunk port in the NB (`external_ids:wepoq-trunk=<gateway>`) gets a pair of OVS patch
//! ports: one end on br-int bound to the trunk port, the other on the trunk's own bridge as
//! a trunk (untagged) port. A bridge per trunk, because tags are allocated per namespace:
//! two namespaces on one gateway host share tags, and on one bridge a shared tag would be
//! one L2 segment across them. A patch port, not a veth: ovs-vswitchd crosses it within one
//! pass of the datapath, where a veth costs a second receive (benches/external_client.rs:
//! an access port's round trip is a direct port's). Each connected client's netdev (a
//! tunnel's device, see [`crate::tunnel`], or any netdev) is an access port on its trunk's
//! bridge with the client's tag, so its frames reach br-int tagged, where ovn-controller
//! hands them to the client's child port (`parent_name` + `tag`): port security, ACLs, DNS
//! and load balancers then treat it like any client.
//!
//! Level-triggered like the rest of the agent: [`Gateway::sync`] reads the NB and OVS and
//! makes the bridges exactly what is wanted, so a restart (or a port removed by hand) is
//! repaired by the next sync. Rows are marked `wepoq.net/owner=gateway`.

mod bridge;
mod clients;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

pub use bridge::{OWNER_KEY, OWNER_VALUE, ROLE_KEY};
pub use clients::{ExternalClient, Trunk, external_clients};

use crate::attach::netns::NsLink;
use crate::attach::{AttachConfig, AttachError};
use crate::ovsdb;
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

/// The bridge of a trunk port's clients: `<base>-<4 hex digits of the trunk's name>`, e.g.
/// `br-wepoq-3fa2`. One per trunk, so each namespace's external clients have a VLAN space
/// of their own: tags are allocated per namespace, and two namespaces served by one gateway
/// host may well use the same ones.
pub fn trunk_bridge(base: &str, trunk_port: &str) -> String {
    format!("{base}-{}", &short_hash(trunk_port)[..4])
}

/// The longest `--gateway-bridge` base: with `-` and 4 hex digits, a bridge name (also the
/// name of its internal netdev) fits the kernel's 15 bytes.
pub const MAX_BRIDGE_BASE: usize = 10;

/// The two patch ports of a trunk port: on br-int (`…i`) and on its bridge (`…w`).
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
        let (client, host) = crate::attach::connect_host(attach).await?;
        Ok(Gateway {
            cfg,
            integration: attach.bridge.clone(),
            bridges: Bridges::new(client, attach.ovs_db.clone()),
            host,
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

    /// Puts the existing netdev `netdev` on client `fqdn`'s trunk bridge (with its tag from
    /// the NB), kept there until [`Gateway::remove_access_port`]; returns once ovs-vswitchd
    /// has it, so that the client's first frames pass. Idempotent.
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
        let report = self.sync(nb).await?;
        if report.added.iter().any(|name| name == netdev) {
            self.bridges.applied().await?;
        }
        Ok(report)
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

    /// Makes the trunks' bridges and patch ports what the NB and the access ports ask for.
    pub async fn sync(&self, nb: &ovsdb::Client) -> Result<SyncReport, AttachError> {
        let (trunks, clients) = external_clients(nb, &self.cfg.name).await?;
        let tags: BTreeMap<String, u16> = clients.iter().map(|c| (c.fqdn.clone(), c.tag)).collect();
        *self.tags.lock().unwrap_or_else(|p| p.into_inner()) = tags.clone();
        let bridge_of_client: BTreeMap<&str, String> = clients
            .iter()
            .map(|c| (c.fqdn.as_str(), trunk_bridge(&self.cfg.bridge, &c.trunk)))
            .collect();

        // One read of what is there: bridges made below start empty, so it stays true.
        let owned = self.bridges.owned().await?;
        let mut wanted: BTreeMap<String, WantedPort> = BTreeMap::new();
        let mut wanted_bridges = std::collections::BTreeSet::new();
        for trunk in &trunks {
            let bridge = trunk_bridge(&self.cfg.bridge, &trunk.port);
            if !owned.bridges.contains_key(&bridge) {
                self.bridges
                    .ensure_bridge(&bridge, &self.integration)
                    .await?;
            }
            wanted_bridges.insert(bridge.clone());
            let (on_int, on_wepoq) = trunk_ifnames(&trunk.port);
            let role = format!("trunk:{}", trunk.port);
            let end = |bridge: &str, peer: &str, iface_id: Option<String>| WantedPort {
                bridge: bridge.to_owned(),
                tag: None,
                role: role.clone(),
                iface_id,
                ifindex: None,
                patch_peer: Some(peer.to_owned()),
            };
            wanted.insert(
                on_int.clone(),
                end(&self.integration, &on_wepoq, Some(trunk.port.clone())),
            );
            wanted.insert(on_wepoq.clone(), end(&bridge, &on_int, None));
        }
        let access = self
            .access
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (netdev, fqdn) in &access {
            // A client the NB no longer names, or whose netdev is gone, gets no port.
            let (Some(&tag), Some(bridge)) = (tags.get(fqdn), bridge_of_client.get(fqdn.as_str()))
            else {
                continue;
            };
            if self.host.link_index(netdev).await?.is_none() {
                continue;
            }
            let ifindex = self.host.bring_up_offloadless(netdev).await?;
            wanted.insert(
                netdev.clone(),
                WantedPort {
                    bridge: bridge.clone(),
                    tag: Some(tag),
                    role: format!("client:{fqdn}"),
                    iface_id: None,
                    ifindex: Some(ifindex),
                    patch_peer: None,
                },
            );
        }

        let mut report = SyncReport {
            trunks: trunks.len(),
            clients: clients.len(),
            ..SyncReport::default()
        };
        let mut kept = std::collections::BTreeSet::new();
        for port in &owned.ports {
            match wanted.get(&port.name) {
                Some(w) if w.is(port) => {
                    if let (Some(tag), true) = (w.tag, w.tag != port.tag) {
                        self.bridges.retag(&port.name, tag).await?;
                    }
                    kept.insert(port.name.clone());
                }
                _ => {
                    self.bridges.remove(&port.name).await?;
                    report.removed.push(port.name.clone());
                }
            }
        }
        if report.removed.iter().any(|name| wanted.contains_key(name)) {
            self.bridges.applied().await?;
        }
        for (name, want) in &wanted {
            if !kept.contains(name) {
                // An agent before patch ports made a veth pair of a trunk's names: gone
                // with it (looked for only when the patch port is being made).
                if want.patch_peer.is_some()
                    && let Some(index) = self.host.link_index(name).await?
                {
                    self.host.delete_link(index).await?;
                }
                self.bridges.add(name, want).await?;
                report.added.push(name.clone());
            }
        }
        // Bridges of trunks that are gone (or the one br-wepoq of an agent before bridges per
        // trunk), once nothing but ours is left on them.
        for (bridge, ours) in owned.bridges {
            if ours
                && !wanted_bridges.contains(&bridge)
                && self.bridges.remove_bridge_if_ours(&bridge).await?
            {
                report.removed.push(bridge);
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netdev_names_fit_the_kernel_limit_and_are_stable() {
        let (i, w) = trunk_ifnames("trunk.a-very-long-gateway-name.some-namespace.ns");
        assert!(i.len() <= 15 && w.len() <= 15, "{i} {w}");
        assert_eq!(trunk_ifnames("trunk.gw.ns"), trunk_ifnames("trunk.gw.ns"));
        assert_ne!(
            trunk_ifnames("trunk.gw.ns").0,
            trunk_ifnames("trunk.gw2.ns").0
        );
        assert!(access_ifname("c1.cli.result.ovn-vote.ns.wepoq.net").len() <= 15);
    }
}
