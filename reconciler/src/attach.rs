//! Next-to-lay attachment: a second interface in a container, on OVN.
//!
//! [`Attacher::attach`] gives a running container (found by its pid) a veth whose container
//! end (`wq0`) has exactly a logical port's MAC and IP/prefix and routes through the side's
//! router port, and whose host end sits on the integration bridge with
//! `external_ids:iface-id` = the logical port, so ovn-controller binds it. Links are made
//! through netlink (one socket per network namespace, opened on a thread that entered it, as
//! podman's netavark does) and OVS is configured through wepoq's own OVSDB client against
//! the local `Open_vSwitch` database. [`resolve_vif`] reads what an endpoint's interface must
//! look like from the NB.
//!
//! Order of work, so that nothing half-made looks finished: the veth and everything inside
//! the container come first; the OVS port, inserted last in one transaction, is the commit
//! mark. Its `external_ids` record what it was made for (container, network namespace
//! inode, addresses), so an attachment is "correct" exactly when that record matches and
//! the host end still exists. Any failure undoes what this call made.
//!
//! Ownership: the OVS Port and Interface carry [`OWNER_KEY`]=[`OWNER_VALUE`] and
//! [`CONTAINER_KEY`]=container id. Ports without the mark are never changed or removed.

mod ethtool;
mod lock;
pub(crate) mod netns;
pub(crate) mod ovs;
pub(crate) mod resolve;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

pub use ovs::{CONTAINER_KEY, NETNS_KEY, OWNER_KEY, OWNER_VALUE, VIF_KEY};
pub use resolve::resolve_vif;

use crate::ovsdb::{self, Timeouts};
use netns::{Netns, NsLink};

/// The interface name inside the container.
pub const CONTAINER_IFNAME: &str = "wq0";

/// What one container's OVN interface must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vif {
    /// Logical_Switch_Port name = `iface-id`, e.g. `s1.svr.result.ovn-vote.ns`.
    pub port: String,
    /// `0a:58:0a:40:00:73`
    pub mac: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    /// The side's router port address (also OVN's DNS for the side).
    pub gateway: Ipv4Addr,
    /// Networks routed via the gateway (the namespace's other networks).
    pub routes: Vec<(Ipv4Addr, u8)>,
    /// True when the container has no other network: the default route goes via OVN too.
    pub default_route: bool,
}

impl Vif {
    /// One line naming every property of the interface: recorded on the OVS Interface, so
    /// a changed address or route makes the attachment stale.
    pub fn fingerprint(&self) -> String {
        let mut text = format!(
            "{} {}/{} via {}",
            self.mac, self.ip, self.prefix, self.gateway
        );
        for (net, prefix) in &self.routes {
            text.push_str(&format!(" {net}/{prefix}"));
        }
        if self.default_route {
            text.push_str(" default");
        }
        text
    }

    fn mac_bytes(&self) -> Result<Vec<u8>, AttachError> {
        let bytes: Option<Vec<u8>> = self
            .mac
            .split(':')
            .map(|b| u8::from_str_radix(b, 16).ok())
            .collect();
        match bytes {
            Some(b) if b.len() == 6 => Ok(b),
            _ => Err(AttachError::BadVif {
                port: self.port.clone(),
                reason: format!("`{}` is not a MAC address", self.mac),
            }),
        }
    }
}

/// Where OVS is.
#[derive(Debug, Clone)]
pub struct AttachConfig {
    /// The local `Open_vSwitch` database: `unix:PATH` (see [`AttachConfig::default_ovs_db`]).
    pub ovs_db: String,
    /// The integration bridge, `br-int`.
    pub bridge: String,
    /// The network namespace ovs-vswitchd's ports live in (the OVN sandbox runs it in its
    /// own); `None` is our own.
    pub ovs_netns: Option<PathBuf>,
}

impl AttachConfig {
    /// Where ovs-vsctl looks: `$OVS_RUNDIR/db.sock`, by default under /var/run/openvswitch.
    pub fn default_ovs_db() -> String {
        let dir = std::env::var("OVS_RUNDIR").unwrap_or_else(|_| "/var/run/openvswitch".into());
        format!("unix:{dir}/db.sock")
    }
}

impl Default for AttachConfig {
    fn default() -> Self {
        AttachConfig {
            ovs_db: AttachConfig::default_ovs_db(),
            bridge: "br-int".into(),
            ovs_netns: None,
        }
    }
}

/// One attachment found on the bridge (owned by wepoq).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub container_id: String,
    /// The OVS port and host veth name.
    pub interface: String,
    /// The logical port (`iface-id`).
    pub port: String,
    pub mac: String,
    /// Inode of the network namespace it was made in.
    pub netns: u64,
}

/// Why an attach or detach failed. [`AttachError::kind`] names the class for metrics.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("OVS database {at}: {source}")]
    Ovsdb {
        at: String,
        #[source]
        source: ovsdb::Error,
    },
    #[error("NB: {0}")]
    Nb(#[source] ovsdb::Error),
    #[error("netlink, {what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("container {container} is not running (it exited before or during attach)")]
    ContainerGone { container: String },
    #[error("no bridge {0} in the OVS database")]
    NoBridge(String),
    #[error("logical port {port} is already attached to {by}")]
    PortClaimed { port: String, by: String },
    #[error("OVS port {name} exists and is not wepoq's: left alone")]
    ForeignPort { name: String },
    #[error("logical port {port}: {reason}")]
    BadVif { port: String, reason: String },
}

impl AttachError {
    /// Outages and races pass; a claimed port or a bad row needs someone to change something
    /// (but the agent retries those too, slowly: the other claimant may go away).
    pub fn is_retryable(&self) -> bool {
        match self {
            AttachError::Ovsdb { source, .. } | AttachError::Nb(source) => source.is_retryable(),
            AttachError::Netlink { .. } | AttachError::Io { .. } => true,
            AttachError::ContainerGone { .. }
            | AttachError::NoBridge(_)
            | AttachError::PortClaimed { .. }
            | AttachError::ForeignPort { .. }
            | AttachError::BadVif { .. } => false,
        }
    }

    /// A short stable name for the `kind` label of the error metric.
    pub fn kind(&self) -> &'static str {
        match self {
            AttachError::Ovsdb { .. } => "ovsdb",
            AttachError::Nb(_) => "nb",
            AttachError::Netlink { .. } => "netlink",
            AttachError::Io { .. } => "io",
            AttachError::ContainerGone { .. } => "container_gone",
            AttachError::NoBridge(_) => "no_bridge",
            AttachError::PortClaimed { .. } => "port_claimed",
            AttachError::ForeignPort { .. } => "foreign_port",
            AttachError::BadVif { .. } => "bad_port",
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AttachError {
        let what = what.into();
        move |source| AttachError::Io { what, source }
    }

    pub(crate) fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> AttachError {
        let what = what.into();
        move |source| AttachError::Netlink { what, source }
    }
}

/// The host veth (and OVS port) name of a container: `wq` + 12 hex digits of its id, within
/// the 15 characters an interface name may have.
pub fn host_ifname(container_id: &str) -> String {
    let short: String = container_id.chars().take(12).collect();
    format!("wq{short}")
}

/// Attaches containers to OVN on this host; see the module docs. Cheap to share by
/// reference between tasks.
pub struct Attacher {
    ovs: ovs::Ovs,
    /// Netlink in ovs-vswitchd's namespace, where host ends live.
    host: NsLink,
}

/// The local OVS database and netlink where ovs-vswitchd's ports live: what every user of
/// the chassis' OVS (the attacher, the gateway) starts from.
pub(crate) async fn connect_host(
    cfg: &AttachConfig,
) -> Result<(ovsdb::Client, NsLink), AttachError> {
    let timeouts = Timeouts {
        connect: Duration::from_secs(5),
        request: Duration::from_secs(10),
        ..Timeouts::default()
    };
    let client = ovsdb::Client::connect(&cfg.ovs_db, timeouts)
        .await
        .map_err(|source| AttachError::Ovsdb {
            at: cfg.ovs_db.clone(),
            source,
        })?;
    let host_ns = match &cfg.ovs_netns {
        Some(path) => {
            Some(Netns::open(path).map_err(AttachError::io(format!("open {}", path.display())))?)
        }
        None => None,
    };
    let host = NsLink::open(host_ns.as_ref())
        .await
        .map_err(AttachError::io("netlink in the OVS network namespace"))?;
    Ok((client, host))
}

impl Attacher {
    /// Connects to the OVS database and opens netlink in `ovs_netns`.
    pub async fn connect(cfg: AttachConfig) -> Result<Attacher, AttachError> {
        let (client, host) = connect_host(&cfg).await?;
        Ok(Attacher {
            ovs: ovs::Ovs::new(client, cfg.ovs_db, cfg.bridge),
            host,
        })
    }

    /// The OVS database connection (to notice reconnects: [`ovsdb::Client::stats`]).
    pub fn ovs_client(&self) -> &ovsdb::Client {
        &self.ovs.client
    }

    /// Attaches `container_id` (whose process is `pid`) as `vif`. Idempotent: an existing
    /// correct attachment is left as is; a stale one (another network namespace after a
    /// restart, other addresses) is replaced. On failure nothing made by this call remains.
    /// Another attach or detach of the same container, from this process or another, is
    /// waited for.
    pub async fn attach(&self, container_id: &str, pid: u32, vif: &Vif) -> Result<(), AttachError> {
        let name = host_ifname(container_id);
        let _one_at_a_time = lock::exclusive(&name).await?;
        let mac = vif.mac_bytes()?;
        let gone = || AttachError::ContainerGone {
            container: container_id.to_owned(),
        };
        let ns = Netns::of_pid(pid).map_err(|_| gone())?;
        let fingerprint = vif.fingerprint();
        let state = self.ovs.state(&name, &vif.port).await?;
        state.check_claims(&name, &vif.port, container_id)?;
        // A namespace's inode number is reused once it is freed, so a restarted container
        // can show the same one: the interface inside is what proves the attachment current.
        if state.matches(container_id, ns.inode, &fingerprint)
            && self.host.link_index(&name).await?.is_some()
            && NsLink::open(Some(&ns))
                .await
                .map_err(|_| gone())?
                .link_index(CONTAINER_IFNAME)
                .await?
                .is_some()
        {
            return Ok(());
        }
        if state.port.is_some() || self.host.link_index(&name).await?.is_some() {
            self.detach_named(&name).await?;
        }

        // Made from here on: undone on any error.
        let result = async {
            let inside = NsLink::open(Some(&ns))
                .await
                .map_err(AttachError::io(format!(
                    "netlink in the network namespace of pid {pid}"
                )))?;
            // A leftover from an interrupted attach into this same namespace.
            if let Some(index) = inside.link_index(CONTAINER_IFNAME).await? {
                inside.delete_link(index).await?;
            }
            self.host
                .add_veth(&name, CONTAINER_IFNAME, &mac, &ns)
                .await?;
            inside.configure(CONTAINER_IFNAME, vif).await?;
            self.host.bring_up_offloadless(&name).await?;
            self.ovs
                .insert(
                    &name,
                    state.bridge_uuid(&self.ovs.bridge)?,
                    container_id,
                    ns.inode,
                    vif,
                    &fingerprint,
                )
                .await?;
            // The namespace handle kept it alive: make sure the container still uses it.
            if Netns::inode_of_pid(pid) != Some(ns.inode) {
                return Err(gone());
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            // Best effort: what failed may be the very thing cleanup needs.
            let _ = self.detach_named(&name).await;
            return Err(e);
        }
        Ok(())
    }

    /// Removes the OVS port and host veth of `container_id` (no-op when absent; a port that
    /// is not wepoq's is left alone).
    pub async fn detach(&self, container_id: &str) -> Result<(), AttachError> {
        let name = host_ifname(container_id);
        let _one_at_a_time = lock::exclusive(&name).await?;
        self.detach_named(&name).await
    }

    async fn detach_named(&self, name: &str) -> Result<(), AttachError> {
        if !self.ovs.remove(name).await? {
            // Someone else's port of that name: neither it nor its link is ours to remove.
            return Ok(());
        }
        if let Some(index) = self.host.link_index(name).await? {
            self.host.delete_link(index).await?;
        }
        Ok(())
    }

    /// Every wepoq attachment on the bridge (for resync, garbage collection and destroy).
    pub async fn attached(&self) -> Result<Vec<Attachment>, AttachError> {
        self.ovs.attached().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vif() -> Vif {
        Vif {
            port: "s1.svr.result.ovn-vote.ns".into(),
            mac: "0a:58:0a:40:00:73".into(),
            ip: "10.64.0.115".parse().unwrap(),
            prefix: 28,
            gateway: "10.64.0.113".parse().unwrap(),
            routes: vec![("10.64.0.0".parse().unwrap(), 16)],
            default_route: false,
        }
    }

    #[test]
    fn host_names_fit_an_interface_name_and_differ_per_container() {
        let a = host_ifname("3f2a9c0d11e24b7f9a0c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809101");
        assert_eq!(a, "wq3f2a9c0d11e2");
        assert!(a.len() <= 15);
        assert_ne!(a, host_ifname("3f2a9c0d11e3"));
    }

    #[test]
    fn the_fingerprint_changes_with_every_property_that_is_configured() {
        let base = vif().fingerprint();
        let mut other = vif();
        other.routes.clear();
        assert_ne!(other.fingerprint(), base);
        let mut other = vif();
        other.default_route = true;
        assert_ne!(other.fingerprint(), base);
        let mut other = vif();
        other.mac = "0a:58:0a:40:00:74".into();
        assert_ne!(other.fingerprint(), base);
    }

    #[test]
    fn a_bad_mac_is_refused_naming_the_port() {
        let mut bad = vif();
        bad.mac = "0a:58:zz".into();
        let err = bad.mac_bytes().unwrap_err().to_string();
        assert!(
            err.contains("s1.svr.result.ovn-vote.ns") && err.contains("0a:58:zz"),
            "{err}"
        );
        assert_eq!(
            vif().mac_bytes().unwrap(),
            vec![0x0a, 0x58, 0x0a, 0x40, 0, 0x73]
        );
    }
}
