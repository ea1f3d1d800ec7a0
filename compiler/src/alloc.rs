//! Sticky address allocation: every side gets a subnet, every endpoint an address and a MAC.
//! What `wepoq.lock` records is kept; only what is new gets allocated.
//!
//! Layout of a side's subnet: offset 0 is the network, 1 the router port (gateway and DNS
//! server), 2 the VIP (server sides; kept free on client sides so both look alike), endpoints
//! from 3, the last address is broadcast. The namespace network's first /28 is kept for the
//! namespace itself (its name server address in the zone).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use crate::cidr::{Ipv4Net, prefix_for};
use crate::diagnostic::Diagnostic;
use crate::lock::{self, Lock, Mac, mac_for};
use crate::model::{Namespace, SideKind};
use crate::source::Span;
use crate::tags;

pub const GATEWAY_OFFSET: u32 = 1;
pub const VIP_OFFSET: u32 = 2;
pub const FIRST_ENDPOINT_OFFSET: u32 = 3;
/// The reserved block at the start of the namespace network.
pub const RESERVED_PREFIX: u8 = 28;
/// The smallest subnet handed to a side.
pub const MIN_SIDE_PREFIX: u8 = 28;

/// One side's subnet and its endpoints in replica order (`s1` first).
#[derive(Debug, Clone)]
pub struct SideAllocation {
    pub net: Ipv4Net,
    /// (port name such as `s1.svr.result.ovn-vote.ns`, address, MAC)
    pub endpoints: Vec<(String, u32, Mac)>,
}

#[derive(Debug, Clone)]
pub struct Allocation {
    /// Side name (`svr.result.ovn-vote.ns`) to its subnet and endpoints.
    pub sides: HashMap<String, SideAllocation>,
    /// Each external client's port name to its VLAN tag on its gateway's trunk.
    pub tags: HashMap<String, u16>,
    /// The lockfile that records this allocation.
    pub lock_text: String,
}

impl Allocation {
    pub fn gateway(net: &Ipv4Net) -> Ipv4Addr {
        net.nth(GATEWAY_OFFSET)
    }

    pub fn vip(net: &Ipv4Net) -> Ipv4Addr {
        net.nth(VIP_OFFSET)
    }
}

/// Addresses a subnet can give to endpoints.
fn capacity(net: &Ipv4Net) -> u64 {
    net.size()
        .saturating_sub(u64::from(FIRST_ENDPOINT_OFFSET) + 1)
}

/// A new side's subnet leaves room to double, so scaling up rarely outgrows it.
fn new_prefix(replicas: u32) -> u8 {
    prefix_for(u64::from(replicas) * 2 + u64::from(FIRST_ENDPOINT_OFFSET) + 1).min(MIN_SIDE_PREFIX)
}

pub fn endpoint_port_name(side_name: &str, kind: SideKind, n: u32) -> String {
    format!("{}{n}.{side_name}", kind.endpoint_prefix())
}

/// Non-overlapping address intervals, for first-fit placement of aligned blocks.
#[derive(Default)]
struct Occupied(BTreeMap<u32, u32>);

impl Occupied {
    fn overlapping(&self, first: u32, last: u32) -> Option<u32> {
        let (_, end) = self.0.range(..=last).next_back()?;
        (*end >= first).then_some(*end)
    }

    fn insert(&mut self, net: &Ipv4Net) {
        self.0.insert(net.first(), net.last());
    }

    /// The first free aligned block of `prefix` at or after `from`.
    fn find(&self, network: &Ipv4Net, prefix: u8, from: u32) -> Option<Ipv4Net> {
        let size = 1u64 << (32 - prefix);
        let align = |x: u64| x.div_ceil(size) * size;
        let mut cand = align(u64::from(from.max(network.first())));
        loop {
            let last = cand + size - 1;
            if last > u64::from(network.last()) {
                return None;
            }
            match self.overlapping(cand as u32, last as u32) {
                Some(end) => cand = align(u64::from(end) + 1),
                None => return Some(Ipv4Net::new(cand as u32, prefix)),
            }
        }
    }
}

/// One side while it is being filled: port names, the address each kept from the lockfile,
/// and which offsets of the subnet are taken.
type Placed = (Vec<String>, Vec<Option<(u32, Mac)>>, Vec<bool>);

pub fn allocate(ns: &Namespace, lock: &Lock) -> (Option<Allocation>, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let network = ns.network;
    let sides: Vec<(String, SideKind, u32)> = ns
        .sides()
        .map(|(_, s, k)| (ns.side_name(s, k), k, s.side(k).replicas))
        .collect();
    let wanted: HashMap<&str, u32> = sides.iter().map(|(n, _, r)| (n.as_str(), *r)).collect();

    let mut occupied = Occupied::default();
    if network.prefix() <= RESERVED_PREFIX {
        occupied.insert(&Ipv4Net::new(network.first(), RESERVED_PREFIX));
    }

    // Locked subnets of sides that still exist.
    let mut subnets: HashMap<String, Ipv4Net> = HashMap::new();
    let mut subnet_spans: HashMap<String, Span> = HashMap::new();
    for locked in &lock.subnets {
        let Some(&replicas) = wanted.get(locked.side.as_str()) else {
            continue;
        };
        if !network.contains_net(&locked.net) {
            diagnostics.push(
                Diagnostic::error(
                    "wepoq::lock::outside_network",
                    format!(
                        "wepoq.lock gives `{}` the subnet {}, outside the network {network}",
                        locked.side, locked.net
                    ),
                )
                .label(locked.span, "outside the namespace network")
                .label_opt(ns.network_span, "the network")
                .help("delete this line (and its endpoint lines) to allocate a new subnet"),
            );
            continue;
        }
        if let Some(end) = occupied.overlapping(locked.net.first(), locked.net.last()) {
            let other = lock.subnets.iter().find(|o| {
                o.net.first() <= end && o.net.last() >= locked.net.first() && o.side != locked.side
            });
            let mut d = Diagnostic::error(
                "wepoq::lock::overlap",
                format!(
                    "wepoq.lock gives `{}` the subnet {}, which overlaps another allocation",
                    locked.side, locked.net
                ),
            )
            .label(locked.span, "overlaps");
            d = match other {
                Some(o) => d.label(o.span, format!("{}'s subnet", o.side)),
                None => {
                    d.help("the namespace network's first /28 is reserved for the namespace itself")
                }
            };
            diagnostics.push(d);
            continue;
        }
        if capacity(&locked.net) < u64::from(replicas) {
            diagnostics.push(
                Diagnostic::error("wepoq::lock::subnet_full", format!("`{}` needs {replicas} addresses but its subnet {} holds {}", locked.side, locked.net, capacity(&locked.net)))
                    .label(locked.span, "too small for the replicas asked for")
                    .help("wepoq does not renumber on its own: delete this subnet line and its endpoint lines from wepoq.lock to give the side a larger subnet (its endpoints get new addresses)"),
            );
            continue;
        }
        occupied.insert(&locked.net);
        subnet_spans.insert(locked.side.clone(), locked.span);
        subnets.insert(locked.side.clone(), locked.net);
    }

    // New subnets, in side order, first fit after the last one placed.
    let mut cursor = network.first();
    let mut missing = 0u64;
    for (name, _, replicas) in &sides {
        if subnets.contains_key(name) {
            continue;
        }
        let prefix = new_prefix(*replicas);
        let found = occupied
            .find(&network, prefix, cursor)
            .or_else(|| occupied.find(&network, prefix, network.first()));
        match found {
            Some(net) => {
                occupied.insert(&net);
                cursor = net.last().wrapping_add(1).max(cursor);
                subnets.insert(name.clone(), net);
            }
            None => missing += 1u64 << (32 - prefix),
        }
    }
    if missing > 0 {
        let needed: u64 = 16
            + sides
                .iter()
                .map(|(n, _, r)| {
                    subnets
                        .get(n)
                        .map_or(1u64 << (32 - new_prefix(*r)), Ipv4Net::size)
                })
                .sum::<u64>();
        diagnostics.push(
            Diagnostic::error(
                "wepoq::net::too_small",
                format!(
                    "network {network} holds {} addresses; this namespace needs about {needed}",
                    network.size()
                ),
            )
            .label_opt(
                ns.network_span,
                format!(
                    "too small for {} endpoints in {} sides",
                    ns.endpoint_count(),
                    sides.len()
                ),
            )
            .help(format!(
                "use a larger network, e.g. /{}",
                prefix_for(needed).max(1)
            )),
        );
    }

    // Endpoints: keep locked addresses that are still valid, then fill the gaps.
    let mut used_ips: HashMap<u32, Span> = HashMap::new();
    let mut used_macs: HashMap<Mac, Span> = HashMap::new();
    let locked_by_port: HashMap<&str, &lock::LockedEndpoint> = lock
        .endpoints
        .iter()
        .map(|e| (e.port.as_str(), e))
        .collect();
    // Per side: port names, and the address each got from the lockfile (if any).
    let mut placed: Vec<Placed> = Vec::with_capacity(sides.len());
    for (name, kind, replicas) in &sides {
        let ports: Vec<String> = (1..=*replicas)
            .map(|n| endpoint_port_name(name, *kind, n))
            .collect();
        let mut addrs = vec![None; ports.len()];
        let Some(net) = subnets.get(name) else {
            placed.push((ports, addrs, Vec::new()));
            continue;
        };
        let mut slots = vec![false; net.size() as usize];
        let subnet_locked = subnet_spans.contains_key(name);
        for (i, port) in ports.iter().enumerate() {
            let Some(locked) = locked_by_port.get(port.as_str()) else {
                continue;
            };
            if !network.contains(locked.ip) {
                diagnostics.push(
                    Diagnostic::error("wepoq::lock::address_outside_network", format!("wepoq.lock gives `{port}` the address {}, outside the network {network}", Ipv4Addr::from(locked.ip)))
                        .label(locked.ip_span, "outside the namespace network")
                        .label_opt(ns.network_span, "the network")
                        .help("delete the line to allocate a new address"),
                );
                continue;
            }
            if !net.contains(locked.ip) {
                if subnet_locked {
                    diagnostics.push(
                        Diagnostic::error("wepoq::lock::address_outside_subnet", format!("wepoq.lock gives `{port}` the address {}, outside its side's subnet {net}", Ipv4Addr::from(locked.ip)))
                            .label(locked.ip_span, "outside the subnet")
                            .label_opt(subnet_spans.get(name).copied(), "the side's subnet")
                            .help("delete the line to allocate a new address"),
                    );
                }
                // Without a locked subnet the side is being renumbered: reallocate quietly.
                continue;
            }
            let offset = locked.ip - net.first();
            if offset < FIRST_ENDPOINT_OFFSET || u64::from(offset) == net.size() - 1 {
                diagnostics.push(
                    Diagnostic::error(
                        "wepoq::lock::reserved_address",
                        format!(
                            "wepoq.lock gives `{port}` the reserved address {}",
                            Ipv4Addr::from(locked.ip)
                        ),
                    )
                    .label(
                        locked.ip_span,
                        "the network, gateway, VIP or broadcast address",
                    )
                    .help("delete the line to allocate a new address"),
                );
                continue;
            }
            if let Some(first) = used_ips.get(&locked.ip) {
                diagnostics.push(
                    Diagnostic::error(
                        "wepoq::lock::duplicate_address",
                        format!(
                            "wepoq.lock gives {} to two endpoints",
                            Ipv4Addr::from(locked.ip)
                        ),
                    )
                    .label(locked.ip_span, format!("`{port}`"))
                    .label(*first, "already given here")
                    .help("delete one of the lines to allocate it a new address"),
                );
                continue;
            }
            if let Some(first) = used_macs.get(&locked.mac) {
                diagnostics.push(
                    Diagnostic::error(
                        "wepoq::lock::duplicate_mac",
                        format!(
                            "wepoq.lock gives the MAC {} to two endpoints",
                            lock::format_mac(&locked.mac)
                        ),
                    )
                    .label(locked.mac_span, format!("`{port}`"))
                    .label(*first, "already given here")
                    .help("delete one of the lines to allocate it a new MAC"),
                );
                continue;
            }
            used_ips.insert(locked.ip, locked.ip_span);
            used_macs.insert(locked.mac, locked.mac_span);
            slots[offset as usize] = true;
            addrs[i] = Some((locked.ip, locked.mac));
        }
        placed.push((ports, addrs, slots));
    }
    let external: Vec<tags::ExternalSide<'_>> = ns
        .sides()
        .zip(&placed)
        .filter_map(|((_, service, kind), (ports, _, _))| {
            Some(tags::ExternalSide {
                gateway: service.side(kind).gateway.as_deref()?,
                ports,
                span: service.span,
            })
        })
        .collect();
    let tags = tags::allocate(&external, lock, &mut diagnostics);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return (None, diagnostics);
    }
    let mut allocated: HashMap<String, SideAllocation> = HashMap::with_capacity(sides.len());
    for ((name, _, _), (ports, addrs, mut slots)) in sides.iter().zip(placed) {
        let net = subnets[name];
        let mut next = FIRST_ENDPOINT_OFFSET as usize;
        let endpoints = ports
            .into_iter()
            .zip(addrs)
            .map(|(port, addr)| {
                let (ip, mac) = addr.unwrap_or_else(|| {
                    while slots[next] {
                        next += 1;
                    }
                    slots[next] = true;
                    let ip = net.first() + next as u32;
                    (ip, mac_for(ip))
                });
                (port, ip, mac)
            })
            .collect();
        allocated.insert(name.clone(), SideAllocation { net, endpoints });
    }
    let rendered = sides
        .iter()
        .map(|(name, _, _)| {
            let side = &allocated[name];
            lock::RenderedSide {
                side: name,
                net: side.net,
                endpoints: side
                    .endpoints
                    .iter()
                    .map(|(p, ip, mac)| (p.as_str(), *ip, *mac, tags.get(p).copied()))
                    .collect(),
            }
        })
        .collect();
    let lock_text = lock::render(&ns.fqdn(), rendered);
    (
        Some(Allocation {
            sides: allocated,
            tags,
            lock_text,
        }),
        diagnostics,
    )
}
