//! Network namespaces and netlink inside them.
//!
//! A netlink (or any) socket belongs to the namespace it was created in, whatever thread
//! uses it later. So, as podman's netavark does, a short-lived thread enters the target
//! namespace with setns(2), creates the sockets there and exits; the sockets are then driven
//! from the async runtime like any other. Our own threads never change namespace.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use tokio::task::JoinHandle;

use super::{AttachError, Vif, ethtool};

/// An open network namespace. Holding it keeps the namespace alive.
pub(crate) struct Netns {
    file: File,
    pub inode: u64,
}

impl Netns {
    pub fn open(path: &Path) -> std::io::Result<Netns> {
        let file = File::open(path)?;
        let inode = file.metadata()?.ino();
        Ok(Netns { file, inode })
    }

    /// A namespace already open (e.g. a private one a thread unshared).
    pub fn from_file(file: File) -> std::io::Result<Netns> {
        let inode = file.metadata()?.ino();
        Ok(Netns { file, inode })
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }

    /// Runs `f` on a short-lived thread inside this namespace (sockets it makes stay here).
    pub fn run_inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let fd = self.file.try_clone()?;
        std::thread::Builder::new()
            .name("wepoq-netns".into())
            .spawn(move || {
                nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)?;
                f()
            })?
            .join()
            .map_err(|_| std::io::Error::other("netns thread panicked"))?
    }

    /// The namespace process `pid` is in (`/proc/PID/ns/net`).
    pub fn of_pid(pid: u32) -> std::io::Result<Netns> {
        Netns::open(Path::new(&format!("/proc/{pid}/ns/net")))
    }

    /// The inode of `pid`'s namespace now, `None` when the process is gone.
    pub fn inode_of_pid(pid: u32) -> Option<u64> {
        std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .ok()
            .map(|m| m.ino())
    }
}

/// A netlink handle and an ioctl socket in one namespace.
pub(crate) struct NsLink {
    pub handle: Handle,
    ioctl: OwnedFd,
    connection: JoinHandle<()>,
}

impl Drop for NsLink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

type Sockets = (
    rtnetlink::proto::Connection<rtnetlink::packet_route::RouteNetlinkMessage>,
    Handle,
    OwnedFd,
);

fn sockets() -> std::io::Result<Sockets> {
    let (connection, handle, _) = rtnetlink::new_connection()?;
    // SAFETY: socket(2) has no memory-safety preconditions; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    let ioctl = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok((connection, handle, ioctl))
}

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

impl NsLink {
    /// Opens netlink in `ns` (`None`: the caller's own namespace).
    pub async fn open(ns: Option<&Netns>) -> std::io::Result<NsLink> {
        let (connection, handle, ioctl) = match ns {
            None => sockets()?,
            Some(ns) => {
                let fd = ns.file.try_clone()?;
                let runtime = tokio::runtime::Handle::current();
                let (tx, rx) = tokio::sync::oneshot::channel();
                std::thread::Builder::new()
                    .name("wepoq-netns".into())
                    .spawn(move || {
                        // The tokio socket registers with the caller's runtime.
                        let _guard = runtime.enter();
                        let result = nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                            .map_err(std::io::Error::from)
                            .and_then(|()| sockets());
                        let _ = tx.send(result);
                    })?;
                rx.await
                    .map_err(|_| std::io::Error::other("netns thread vanished"))??
            }
        };
        Ok(NsLink {
            handle,
            ioctl,
            connection: tokio::spawn(connection),
        })
    }

    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, AttachError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.try_next().await {
            Ok(link) => Ok(link.map(|l| l.header.index)),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(AttachError::netlink(format!("find link {name}"))(e)),
        }
    }

    pub async fn delete_link(&self, index: u32) -> Result<(), AttachError> {
        match self.handle.link().del(index).execute().await {
            Err(e) if !is_errno(&e, libc::ENODEV) => {
                Err(AttachError::netlink(format!("delete link {index}"))(e))
            }
            _ => Ok(()),
        }
    }

    /// A veth pair: `name` here, `peer` (with `mac`) created straight in `peer_ns`.
    pub async fn add_veth(
        &self,
        name: &str,
        peer: &str,
        mac: &[u8],
        peer_ns: &Netns,
    ) -> Result<(), AttachError> {
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_owned())
            .address(mac.to_vec())
            .setns_by_fd(peer_ns.file.as_raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(name.to_owned())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(AttachError::netlink(format!("create veth {name}")))
    }

    /// Sets `name` up with TX checksum offload off (TCP through the userspace datapath
    /// silently fails otherwise).
    pub async fn bring_up_offloadless(&self, name: &str) -> Result<u32, AttachError> {
        let index = self
            .link_index(name)
            .await?
            .ok_or_else(|| AttachError::Io {
                what: format!("link {name}"),
                source: std::io::Error::from_raw_os_error(libc::ENODEV),
            })?;
        ethtool::tx_checksum_off(&self.ioctl, name).map_err(AttachError::io(format!(
            "turn TX checksum offload off on {name}"
        )))?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(AttachError::netlink(format!("set {name} up")))?;
        Ok(index)
    }

    /// Puts `ip/prefix` on link `index` (`name`, for errors); replaces what is there.
    pub async fn add_address(
        &self,
        index: u32,
        name: &str,
        ip: std::net::Ipv4Addr,
        prefix: u8,
    ) -> Result<(), AttachError> {
        self.handle
            .address()
            .add(index, IpAddr::V4(ip), prefix)
            .replace()
            .execute()
            .await
            .map_err(AttachError::netlink(format!("add {ip}/{prefix} to {name}")))
    }

    /// Routes `net/prefix` out of link `index`: via `gateway`, or on-link without one.
    pub async fn add_route(
        &self,
        index: u32,
        net: std::net::Ipv4Addr,
        prefix: u8,
        gateway: Option<std::net::Ipv4Addr>,
    ) -> Result<(), AttachError> {
        let builder = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .destination_prefix(net, prefix)
            .output_interface(index);
        let route = match gateway {
            Some(via) => builder.gateway(via).build(),
            None => builder
                .scope(rtnetlink::packet_route::route::RouteScope::Link)
                .build(),
        };
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(AttachError::netlink(match gateway {
                Some(via) => format!("route {net}/{prefix} via {via}"),
                None => format!("route {net}/{prefix} on link {index}"),
            }))
    }

    /// The container end: address, up, `lo` up, routes via the gateway.
    pub async fn configure(&self, name: &str, vif: &Vif) -> Result<(), AttachError> {
        let index = self.bring_up_offloadless(name).await?;
        self.add_address(index, name, vif.ip, vif.prefix).await?;
        if let Some(lo) = self.link_index("lo").await? {
            self.handle
                .link()
                .set(LinkUnspec::new_with_index(lo).up().build())
                .execute()
                .await
                .map_err(AttachError::netlink("set lo up"))?;
        }
        let default = vif
            .default_route
            .then_some((std::net::Ipv4Addr::UNSPECIFIED, 0));
        for (net, prefix) in vif.routes.iter().copied().chain(default) {
            self.add_route(index, net, prefix, Some(vif.gateway))
                .await?;
        }
        Ok(())
    }
}
