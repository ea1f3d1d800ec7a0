//! Checks across namespaces compiled together: one owner per namespace, disjoint networks,
//! and OVN names that stay unique once mapped to OVN's restricted identifiers.

use std::collections::HashMap;

use crate::diagnostic::Diagnostic;
use crate::model::Namespace;
use crate::nb::Table;
use crate::CompiledNamespace;

pub fn check_namespaces<'a>(namespaces: impl Iterator<Item = &'a Namespace>) -> Vec<Diagnostic> {
    let namespaces: Vec<&Namespace> = namespaces.collect();
    let mut out = Vec::new();
    for (i, a) in namespaces.iter().enumerate() {
        for b in &namespaces[..i] {
            if a.fqdn() == b.fqdn() {
                out.push(
                    Diagnostic::error("wepoq::namespace::duplicate", format!("namespace `{}` is declared twice", a.fqdn()))
                        .label_opt(a.namespace_span, "declared again here")
                        .label_opt(b.namespace_span, "first declared here")
                        .help("one file describes one namespace; merge them or rename one"),
                );
            } else if a.network.overlaps(&b.network) {
                out.push(
                    Diagnostic::error("wepoq::net::cidr_overlap", format!("networks {} ({}) and {} ({}) overlap", a.network, a.fqdn(), b.network, b.fqdn()))
                        .label_opt(a.network_span, "this network")
                        .label_opt(b.network_span, "overlaps this one")
                        .help("give every namespace a network of its own"),
                );
            }
        }
    }
    out
}

/// OVN indexes LSP, LRP and Port_Group names (and the `_ip4`/`_ip6` address sets each port
/// group implies): two namespaces must not produce the same one, after mapping.
pub fn check_rows(namespaces: &[CompiledNamespace]) -> Vec<Diagnostic> {
    let mut seen: HashMap<(Table, String), &CompiledNamespace> = HashMap::new();
    let mut out = Vec::new();
    for ns in namespaces {
        for row in &ns.rows {
            if !row.key.table.name_is_indexed() && row.key.table != Table::LogicalSwitch && row.key.table != Table::LogicalRouter {
                continue;
            }
            let mut names = vec![(row.key.table, row.key.name.clone())];
            if row.key.table == Table::PortGroup {
                // Port groups and their implied address sets share one namespace of names.
                names = vec![
                    (Table::PortGroup, row.key.name.clone()),
                    (Table::PortGroup, format!("{}_ip4", row.key.name)),
                    (Table::PortGroup, format!("{}_ip6", row.key.name)),
                ];
            }
            for key in names {
                match seen.get(&key) {
                    Some(other) if other.owner() != ns.owner() => {
                        out.push(
                            Diagnostic::error("wepoq::name::ovn_collision", format!("{} `{}` of {} collides with one of {}", key.0, key.1, ns.owner(), other.owner()))
                                .label_opt(ns.namespace.namespace_span, format!("{} produces it", ns.owner()))
                                .label_opt(other.namespace.namespace_span, format!("{} produces it too", other.owner()))
                                .help("OVN names drop the domain and map `-` to `_`; rename a namespace so the two stay apart"),
                        );
                    }
                    Some(_) => {}
                    None => {
                        seen.insert(key, ns);
                    }
                }
            }
        }
    }
    out.truncate(20);
    out
}
