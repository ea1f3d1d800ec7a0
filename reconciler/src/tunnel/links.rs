//! The kernel devices of a tunnel end, through netlink: the TUN's inner address and route in
//! the private namespace, and the VXLAN device created from there straight into the host's
//! namespace (its UDP socket stays in the private one, on the inner addresses).

use std::net::Ipv4Addr;

use rtnetlink::{LinkUnspec, LinkVxlan};

use super::inner::VXLAN_PORT;
use crate::attach::AttachError;
use crate::attach::netns::{Netns, NsLink};

/// Underlay MTU 1500 less IPv4 + UDP + WireGuard's 32 bytes.
pub const TUN_MTU: u32 = 1500 - 20 - 8 - 32;
/// The TUN's MTU less IPv4 + UDP + VXLAN + the inner Ethernet header.
pub const VXLAN_MTU: u32 = TUN_MTU - 20 - 8 - 8 - 14;

fn missing(name: &str) -> AttachError {
    AttachError::Io {
        what: format!("link {name}"),
        source: std::io::Error::from_raw_os_error(libc::ENODEV),
    }
}

/// Sets `name` up with `ip/prefix` and MTU `mtu`; routes `routes` through it (on-link).
pub async fn configure_tun(
    link: &NsLink,
    name: &str,
    ip: Ipv4Addr,
    routes: &[(Ipv4Addr, u8)],
) -> Result<(), AttachError> {
    let index = link.link_index(name).await?.ok_or_else(|| missing(name))?;
    link.handle
        .link()
        .set(LinkUnspec::new_with_index(index).mtu(TUN_MTU).up().build())
        .execute()
        .await
        .map_err(AttachError::netlink(format!("set {name} up")))?;
    link.add_address(index, name, ip, 32).await?;
    for &(net, prefix) in routes {
        link.add_route(index, net, prefix, None).await?;
    }
    Ok(())
}

/// What a VXLAN end looks like.
pub struct VxlanSpec<'a> {
    pub name: &'a str,
    pub vni: u32,
    pub local: Ipv4Addr,
    pub remote: Ipv4Addr,
    pub mac: Option<[u8; 6]>,
}

/// Creates the VXLAN device from `private` (where its socket lives) into `host`, and sets it
/// up there. An old device of that name in `host` is replaced.
pub async fn add_vxlan(
    private: &NsLink,
    host: &NsLink,
    host_ns: &Netns,
    spec: &VxlanSpec<'_>,
) -> Result<u32, AttachError> {
    if let Some(old) = host.link_index(spec.name).await? {
        host.delete_link(old).await?;
    }
    let mut builder = LinkVxlan::new(spec.name, spec.vni)
        .local(spec.local)
        .remote(spec.remote)
        .port(VXLAN_PORT)
        .learning(false)
        .mtu(VXLAN_MTU)
        .setns_by_fd(host_ns.raw_fd());
    if let Some(mac) = spec.mac {
        builder = builder.address(mac.to_vec());
    }
    private
        .handle
        .link()
        .add(builder.build())
        .execute()
        .await
        .map_err(AttachError::netlink(format!("create VXLAN {}", spec.name)))?;
    host.bring_up_offloadless(spec.name).await
}

/// The client end: its address, and the namespace's networks via its gateway.
pub async fn address_and_routes(
    host: &NsLink,
    index: u32,
    name: &str,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
    routes: &[(Ipv4Addr, u8)],
) -> Result<(), AttachError> {
    host.add_address(index, name, ip, prefix).await?;
    for &(net, len) in routes {
        host.add_route(index, net, len, Some(gateway)).await?;
    }
    Ok(())
}

pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}
