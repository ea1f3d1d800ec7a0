//! Emits the desired NB rows, endpoint list and runtime units of one namespace from its model
//! and address allocation.
//!
//! Topology: one Logical_Router per namespace; a Logical_Switch per service side with its own
//! subnet, joined to the router by a port whose address is the side's gateway and DNS server;
//! a Load_Balancer per service and protocol on every switch whose ports may call the service
//! (a load balancer acts on traffic entering from its switch's ports, before routing); a DNS
//! row per service with its names, on the switches of its own sides and of the sides that
//! may call it (OVN answers only from the asking port's switch, so an endpoint resolves
//! exactly the names it may use); a port group per side carrying that side's ACLs: default
//! deny, DNS to its own gateway, and exactly the declared paths.
//!
//! No row grows with the namespace: a change to one service rewrites rows of that service
//! (and its callers' switches), so planning and applying it costs the same in a namespace of
//! ten services or of ten thousand.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::alloc::Allocation;
use crate::containers::ContainerUnit;
use crate::lock::{format_mac, mac_for};
use crate::model::{Namespace, Port, Proto, Runtime, Service, ServiceId, SideKind};
use crate::names::ovn_identifier;
use crate::nb::{NAME_KEY, OWNER_KEY, Row, Table, Value};
use crate::stub_unit;

pub const ACL_DENY_PRIORITY: i64 = 1000;
pub const ACL_DNS_PRIORITY: i64 = 1100;
pub const ACL_ALLOW_PRIORITY: i64 = 1200;

/// An endpoint as the data plane sees it: what to configure inside its network namespace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Endpoint {
    pub fqdn: String,
    /// The Logical_Switch_Port name, also the `iface-id` that binds an interface to it.
    pub port: String,
    pub mac: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub service: String,
    pub side: &'static str,
    /// An external client: the child port of its gateway's trunk that carries it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<TrunkChild>,
}

/// How an external client reaches the cluster: frames with `tag` on the trunk port `trunk`
/// that the agent of `gateway` binds on its chassis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrunkChild {
    pub gateway: String,
    pub trunk: String,
    pub tag: u16,
}

/// The marker on a gateway's trunk port: `external_ids:wepoq-trunk=<gateway>`. The agent
/// started with `--gateway <gateway>` binds the ports that carry it.
pub const TRUNK_KEY: &str = "wepoq-trunk";

/// The trunk port of `gateway` in namespace `ns`: `trunk.gw.ns`.
pub fn trunk_port_name(gateway: &str, ns: &str) -> String {
    format!("trunk.{gateway}.{ns}")
}

/// A logical switch port's `parent_name` and `tag_request`: empty except on a trunk's child.
fn with_parent(row: Row, child: Option<&TrunkChild>) -> Row {
    row.with("parent_name", Value::set(child.map(|c| c.trunk.clone())))
        .with("tag_request", Value::set(child.map(|c| i64::from(c.tag))))
}

/// What runs on a server endpoint: wepoq's stub plus a warm pool of workers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuntimeUnit {
    pub endpoint: String,
    pub port: String,
    pub ip: Ipv4Addr,
    pub listen: Vec<String>,
    #[serde(flatten)]
    pub settings: Runtime,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    pub rows: Vec<Row>,
    pub endpoints: Vec<Endpoint>,
    pub runtime: Vec<RuntimeUnit>,
    pub containers: Vec<ContainerUnit>,
}

struct Emitter<'a> {
    ns: &'a Namespace,
    alloc: &'a Allocation,
    owner: String,
    rows: Vec<Row>,
}

impl Emitter<'_> {
    fn ids(&self, name: &str, extra: &[(&str, String)]) -> Value {
        let own = [
            (OWNER_KEY, self.owner.clone()),
            (NAME_KEY, name.to_string()),
        ];
        Value::map(
            own.into_iter()
                .chain(extra.iter().map(|(k, v)| (*k, v.clone()))),
        )
    }

    fn router_name(&self) -> String {
        format!("router.{}", self.ns.name)
    }

    fn dns_name(&self, service: &Service) -> String {
        format!("dns.{}.{}", service.dotted(), self.ns.name)
    }

    fn vip(&self, service: &Service) -> Option<Ipv4Addr> {
        let side = self.ns.side_name(service, SideKind::Svr);
        self.alloc.sides.get(&side).map(|s| Allocation::vip(&s.net))
    }

    fn lb_name(&self, service: &Service, proto: Proto) -> String {
        format!(
            "lb.{}.{}.{}",
            proto.as_str(),
            service.dotted(),
            self.ns.name
        )
    }
}

/// `tcp.dst == 80 || udp.dst == {53, 5353}`, grouped by protocol.
fn ports_match(ports: &[Port]) -> String {
    let mut by_proto: BTreeMap<Proto, Vec<u16>> = BTreeMap::new();
    for p in ports {
        by_proto.entry(p.proto).or_default().push(p.number);
    }
    let terms: Vec<String> = by_proto
        .iter()
        .map(|(proto, nums)| match nums.as_slice() {
            [one] => format!("{}.dst == {one}", proto.as_str()),
            many => format!(
                "{}.dst == {{{}}}",
                proto.as_str(),
                many.iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
        .collect();
    if terms.len() == 1 {
        terms[0].clone()
    } else {
        format!("({})", terms.join(" || "))
    }
}

pub fn emit(ns: &Namespace, alloc: &Allocation) -> Emitted {
    let mut e = Emitter {
        ns,
        alloc,
        owner: ns.fqdn(),
        rows: Vec::new(),
    };
    let mut endpoints = Vec::new();
    let mut runtime = Vec::new();
    let mut containers = Vec::new();
    // Each service's names: its endpoints (both sides) and its VIP.
    let mut dns_records: BTreeMap<ServiceId, BTreeMap<String, String>> = BTreeMap::new();
    let sides: Vec<(ServiceId, &Service, SideKind)> = ns.sides().collect();

    // Which sides call which services: own clients, then declared calls.
    let mut callers: BTreeMap<ServiceId, Vec<(ServiceId, SideKind)>> = BTreeMap::new();
    for (id, service, kind) in &sides {
        for t in service.targets(*id, *kind) {
            callers.entry(t).or_default().push((*id, *kind));
        }
    }

    let mut router_ports = Vec::new();
    for (id, service, kind) in &sides {
        let side_name = ns.side_name(service, *kind);
        let allocated = &alloc.sides[&side_name];
        let net = allocated.net;
        let service_path = service.path();
        let gateway = Allocation::gateway(&net);
        let ports_text: String = service.ports.iter().map(|p| format!(" {p}")).collect();

        let mut switch_ports = Vec::new();
        let mut group_ports = Vec::new();
        for (port, ip, mac) in &allocated.endpoints {
            let port = port.clone();
            let ip = Ipv4Addr::from(*ip);
            let mac = format_mac(mac);
            let fqdn = format!("{port}.{}", ns.domain);
            let address = format!("{mac} {ip}");
            let external = service
                .side(*kind)
                .gateway
                .as_ref()
                .map(|gateway| TrunkChild {
                    gateway: gateway.clone(),
                    trunk: trunk_port_name(gateway, &ns.name),
                    tag: alloc.tags[&port],
                });
            e.rows.push(with_parent(
                Row::new(Table::LogicalSwitchPort, port.clone())
                    .with("name", Value::str(port.clone()))
                    .with("addresses", Value::set([address.clone()]))
                    .with("port_security", Value::set([address.clone()]))
                    .with("type", Value::str(""))
                    .with("options", Value::map::<&str, &str>([]))
                    .with(
                        "external_ids",
                        e.ids(
                            &port,
                            &[
                                ("wepoq-name", fqdn.clone()),
                                ("wepoq-addr", format!("{address}{ports_text}")),
                            ],
                        ),
                    ),
                external.as_ref(),
            ));
            dns_records
                .entry(*id)
                .or_default()
                .insert(fqdn.clone(), ip.to_string());
            endpoints.push(Endpoint {
                fqdn: fqdn.clone(),
                port: port.clone(),
                mac: mac.clone(),
                ip,
                prefix: net.prefix(),
                gateway,
                service: service_path.clone(),
                side: kind.as_str(),
                external,
            });
            let mut container = service.side(*kind).container.clone();
            if let (SideKind::Svr, Some(rt)) = (kind, &service.runtime) {
                let unit = runtime_unit(&fqdn, &port, ip, &service.ports, rt);
                container = Some(stub_unit::stub_container(&fqdn, &port, &unit.listen, rt));
                runtime.push(unit);
            }
            if let Some(container) = container {
                containers.push(ContainerUnit {
                    name: port.clone(),
                    endpoint: fqdn.clone(),
                    owner: e.owner.clone(),
                    mac: mac.clone(),
                    ip,
                    prefix: net.prefix(),
                    gateway,
                    network: ns.network.to_string(),
                    container,
                });
            }
            switch_ports.push(port.clone());
            group_ports.push(port);
        }

        // The router port and its peer on the switch.
        let lrp = format!("lrp.{side_name}");
        let rtr = format!("rtr.{side_name}");
        e.rows.push(
            Row::new(Table::LogicalRouterPort, lrp.clone())
                .with("name", Value::str(lrp.clone()))
                .with("mac", Value::str(format_mac(&mac_for(u32::from(gateway)))))
                .with(
                    "networks",
                    Value::set([format!("{gateway}/{}", net.prefix())]),
                )
                .with("external_ids", e.ids(&lrp, &[])),
        );
        e.rows.push(with_parent(
            Row::new(Table::LogicalSwitchPort, rtr.clone())
                .with("name", Value::str(rtr.clone()))
                .with("type", Value::str("router"))
                .with("addresses", Value::set(["router"]))
                .with("port_security", Value::set::<&str>([]))
                .with("options", Value::map([("router-port", lrp.clone())]))
                .with("external_ids", e.ids(&rtr, &[])),
            None,
        ));
        router_ports.push(lrp);
        switch_ports.push(rtr);

        // Load balancers of every service this side may call.
        let mut lbs = Vec::new();
        let targets = service.targets(*id, *kind);
        for target in &targets {
            let t = ns.service(*target);
            for proto in protos(&t.ports) {
                lbs.push(e.lb_name(t, proto));
            }
        }
        lbs.sort();
        lbs.dedup();
        // Names of its own service and of every service it may call.
        let dns: Vec<String> = std::iter::once(*id)
            .chain(targets.iter().copied())
            .map(|t| e.dns_name(ns.service(t)))
            .collect();

        e.rows.push(
            Row::new(Table::LogicalSwitch, side_name.clone())
                .with("name", Value::str(side_name.clone()))
                .with("ports", Value::refs(Table::LogicalSwitchPort, switch_ports))
                .with("load_balancer", Value::refs(Table::LoadBalancer, lbs))
                .with("dns_records", Value::refs(Table::Dns, dns))
                .with(
                    "external_ids",
                    e.ids(&side_name, &[("wepoq.net/subnet", net.to_string())]),
                ),
        );

        // The side's port group: default deny both ways, DNS to its own gateway only (OVN
        // 23.03 lets `udp.src == 53` past to-lport ACLs on a switch with DNS records, so a
        // plain `udp.dst == 53` allow would let any endpoint send 53 -> 53 datagrams to any
        // other), and the ACLs that let it call out and be called.
        let group = ovn_identifier(&side_name);
        let (deny_from, deny_to, dns_acl) = (
            format!("deny-from:{side_name}"),
            format!("deny-to:{side_name}"),
            format!("dns:{side_name}"),
        );
        e.rows.push(acl(
            &e,
            &deny_from,
            "from-lport",
            ACL_DENY_PRIORITY,
            format!("inport == @{group} && ip"),
            "drop",
        ));
        e.rows.push(acl(
            &e,
            &deny_to,
            "to-lport",
            ACL_DENY_PRIORITY,
            format!("outport == @{group} && ip"),
            "drop",
        ));
        e.rows.push(acl(
            &e,
            &dns_acl,
            "from-lport",
            ACL_DNS_PRIORITY,
            format!("inport == @{group} && ip4.dst == {gateway} && udp.dst == 53"),
            "allow-related",
        ));
        let mut acls = vec![deny_from, deny_to, dns_acl];
        for &target in &targets {
            let t = ns.service(target);
            let Some(vip) = e.vip(t) else { continue };
            let target_side = ns.side_name(t, SideKind::Svr);
            let name = format!("call:{side_name}:{target_side}");
            // New connections only to the VIP. Packets of an established connection come back
            // to this ACL already DNATed to a server, so those may go to the servers; a SYN
            // sent straight to a server stays dropped.
            let servers = format!("${}_ip4", ovn_identifier(&target_side));
            let matches = format!(
                "inport == @{group} && {} && (ip4.dst == {vip} || (ct.est && ip4.dst == {servers}))",
                ports_match(&t.ports)
            );
            e.rows.push(acl(
                &e,
                &name,
                "from-lport",
                ACL_ALLOW_PRIORITY,
                matches,
                "allow-related",
            ));
            acls.push(name);
        }
        if service.side(*kind).peers {
            // Peers: the side's endpoints to each other, both ways, any port; a name each for
            // both ACLs (from the sender's port, to the receiver's).
            for (name, direction, matches) in [
                (
                    format!("peers-out:{side_name}"),
                    "from-lport",
                    format!("inport == @{group} && ip4.dst == ${group}_ip4"),
                ),
                (
                    format!("peers-in:{side_name}"),
                    "to-lport",
                    format!("outport == @{group} && ip4.src == ${group}_ip4"),
                ),
            ] {
                e.rows.push(acl(
                    &e,
                    &name,
                    direction,
                    ACL_ALLOW_PRIORITY,
                    matches,
                    "allow-related",
                ));
                acls.push(name);
            }
        }
        if *kind == SideKind::Svr {
            for (caller, caller_kind) in callers.get(id).into_iter().flatten() {
                let c = ns.service(*caller);
                let caller_group = ovn_identifier(&ns.side_name(c, *caller_kind));
                let name = format!("accept:{side_name}:{}", ns.side_name(c, *caller_kind));
                e.rows.push(acl(
                    &e,
                    &name,
                    "to-lport",
                    ACL_ALLOW_PRIORITY,
                    format!(
                        "outport == @{group} && ip4.src == ${caller_group}_ip4 && {}",
                        ports_match(&service.ports)
                    ),
                    "allow-related",
                ));
                acls.push(name);
            }
        }
        e.rows.push(
            Row::new(Table::PortGroup, group.clone())
                .with("name", Value::str(group.clone()))
                .with(
                    "ports",
                    Value::refs(Table::LogicalSwitchPort, group_ports.iter().cloned()),
                )
                .with("acls", Value::refs(Table::Acl, acls))
                .with("external_ids", e.ids(&group, &[])),
        );
    }

    // Load balancers, one per service and protocol, with the VIP in the server subnet. They
    // sit on the callers' switches only: on a router without a gateway port they do nothing.
    for (i, service) in ns.services.iter().enumerate() {
        let Some(vip) = e.vip(service) else { continue };
        let svr_side = ns.side_name(service, SideKind::Svr);
        dns_records
            .entry(ServiceId(i))
            .or_default()
            .insert(format!("vip.{svr_side}.{}", ns.domain), vip.to_string());
        for proto in protos(&service.ports) {
            let name = e.lb_name(service, proto);
            let mut vips = BTreeMap::new();
            for port in service.ports.iter().filter(|p| p.proto == proto) {
                let backends: Vec<String> = alloc.sides[&svr_side]
                    .endpoints
                    .iter()
                    .map(|(_, ip, _)| format!("{}:{}", Ipv4Addr::from(*ip), port.number))
                    .collect();
                vips.insert(format!("{vip}:{}", port.number), backends.join(","));
            }
            e.rows.push(
                Row::new(Table::LoadBalancer, name.clone())
                    .with("name", Value::str(name.clone()))
                    .with("protocol", Value::set([proto.as_str()]))
                    .with("vips", Value::map(vips))
                    .with("external_ids", e.ids(&name, &[])),
            );
        }
    }

    emit_trunks(&mut e);

    let router = e.router_name();
    e.rows.push(
        Row::new(Table::LogicalRouter, router.clone())
            .with("name", Value::str(router.clone()))
            .with("ports", Value::refs(Table::LogicalRouterPort, router_ports))
            .with("external_ids", e.ids(&router, &[])),
    );
    for (i, service) in ns.services.iter().enumerate() {
        let dns = e.dns_name(service);
        let records = dns_records.remove(&ServiceId(i)).unwrap_or_default();
        e.rows.push(
            Row::new(Table::Dns, dns.clone())
                .with("records", Value::map(records))
                .with("external_ids", e.ids(&dns, &[])),
        );
    }

    e.rows.sort_by(|a, b| a.key.cmp(&b.key));
    endpoints.sort_by(|a, b| a.port.cmp(&b.port));
    runtime.sort_by(|a, b| a.port.cmp(&b.port));
    containers.sort_by(|a: &ContainerUnit, b| a.name.cmp(&b.name));
    Emitted {
        rows: e.rows,
        endpoints,
        runtime,
        containers,
    }
}

/// Each gateway that external clients use gets a trunk port, alone on the namespace's
/// switch `trunk.<ns>`: the port is only what binds the trunk to the gateway's chassis; its
/// children live on their sides' switches (ACLs, DNS and load balancers as for any client).
fn emit_trunks(e: &mut Emitter<'_>) {
    let gateways: std::collections::BTreeSet<&str> =
        e.ns.sides()
            .filter_map(|(_, service, kind)| service.side(kind).gateway.as_deref())
            .collect();
    if gateways.is_empty() {
        return;
    }
    let mut ports = Vec::new();
    for gateway in gateways {
        let port = trunk_port_name(gateway, &e.ns.name);
        e.rows.push(with_parent(
            Row::new(Table::LogicalSwitchPort, port.clone())
                .with("name", Value::str(port.clone()))
                .with("type", Value::str(""))
                .with("addresses", Value::set::<&str>([]))
                .with("port_security", Value::set::<&str>([]))
                .with("options", Value::map::<&str, &str>([]))
                .with(
                    "external_ids",
                    e.ids(&port, &[(TRUNK_KEY, gateway.to_string())]),
                ),
            None,
        ));
        ports.push(port);
    }
    let switch = format!("trunk.{}", e.ns.name);
    e.rows.push(
        Row::new(Table::LogicalSwitch, switch.clone())
            .with("name", Value::str(switch.clone()))
            .with("ports", Value::refs(Table::LogicalSwitchPort, ports))
            .with(
                "load_balancer",
                Value::refs(Table::LoadBalancer, Vec::new()),
            )
            .with("dns_records", Value::refs(Table::Dns, Vec::new()))
            .with("external_ids", e.ids(&switch, &[])),
    );
}

fn acl(
    e: &Emitter<'_>,
    name: &str,
    direction: &str,
    priority: i64,
    matches: String,
    action: &str,
) -> Row {
    Row::new(Table::Acl, name)
        .with("direction", Value::str(direction))
        .with("priority", Value::int(priority))
        .with("match", Value::str(matches))
        .with("action", Value::str(action))
        .with("external_ids", e.ids(name, &[]))
}

fn protos(ports: &[Port]) -> Vec<Proto> {
    let mut protos: Vec<Proto> = ports.iter().map(|p| p.proto).collect();
    protos.dedup();
    protos
}

fn runtime_unit(fqdn: &str, port: &str, ip: Ipv4Addr, ports: &[Port], rt: &Runtime) -> RuntimeUnit {
    RuntimeUnit {
        endpoint: fqdn.to_string(),
        port: port.to_string(),
        ip,
        listen: ports
            .iter()
            .map(|p| format!("{ip}:{}/{}", p.number, p.proto.as_str()))
            .collect(),
        settings: rt.clone(),
    }
}
