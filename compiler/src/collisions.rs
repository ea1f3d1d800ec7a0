//! Checks across namespaces compiled together: one owner per namespace, disjoint networks,
//! and OVN names that stay unique once mapped to OVN's restricted identifiers.

use std::collections::{BTreeMap, HashMap};

use crate::CompiledNamespace;
use crate::diagnostic::Diagnostic;
use crate::model::Namespace;
use crate::nb::Table;

pub fn check_namespaces<'a>(namespaces: impl Iterator<Item = &'a Namespace>) -> Vec<Diagnostic> {
    let namespaces: Vec<&Namespace> = namespaces.collect();
    let mut out = Vec::new();
    for (i, a) in namespaces.iter().enumerate() {
        for b in &namespaces[..i] {
            if a.fqdn() == b.fqdn() {
                out.push(
                    Diagnostic::error(
                        "wepoq::namespace::duplicate",
                        format!("namespace `{}` is declared twice", a.fqdn()),
                    )
                    .label_opt(a.namespace_span, "declared again here")
                    .label_opt(b.namespace_span, "first declared here")
                    .help("one file describes one namespace; merge them or rename one"),
                );
            } else if a.network.overlaps(&b.network) {
                out.push(
                    Diagnostic::error(
                        "wepoq::net::cidr_overlap",
                        format!(
                            "networks {} ({}) and {} ({}) overlap",
                            a.network,
                            a.fqdn(),
                            b.network,
                            b.fqdn()
                        ),
                    )
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
/// group implies), and wepoq guards switch and router names: two namespaces must not produce
/// the same one, after mapping. One diagnostic per pair of namespaces, with examples.
pub fn check_rows(namespaces: &[CompiledNamespace]) -> Vec<Diagnostic> {
    // Only two namespaces can collide; one alone would cost a hash of every name for nothing.
    if namespaces.len() < 2 {
        return Vec::new();
    }
    let mut seen: HashMap<(Table, String), usize> = HashMap::new();
    // (earlier namespace, later namespace) -> colliding names
    let mut clashes: BTreeMap<(usize, usize), Vec<String>> = BTreeMap::new();
    for (i, ns) in namespaces.iter().enumerate() {
        for row in &ns.rows {
            let table = row.key.table;
            if !(table.name_is_indexed()
                || matches!(table, Table::LogicalSwitch | Table::LogicalRouter))
            {
                continue;
            }
            let mut names = vec![row.key.name.clone()];
            if table == Table::PortGroup {
                names.push(format!("{}_ip4", row.key.name));
                names.push(format!("{}_ip6", row.key.name));
            }
            for name in names {
                // Port groups and their implied address sets share one space of names.
                let space = if table == Table::PortGroup {
                    Table::PortGroup
                } else {
                    table
                };
                match seen.get(&(space, name.clone())) {
                    Some(&other) if other != i => clashes
                        .entry((other, i))
                        .or_default()
                        .push(format!("{table} `{name}`")),
                    Some(_) => {}
                    None => {
                        seen.insert((space, name), i);
                    }
                }
            }
        }
    }
    clashes
        .into_iter()
        .map(|((a, b), names)| {
            let (first, second) = (&namespaces[a], &namespaces[b]);
            let shown: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
            let more = if names.len() > 3 { format!(" and {} more", names.len() - 3) } else { String::new() };
            Diagnostic::error(
                "wepoq::name::ovn_collision",
                format!("{} and {} produce the same OVN names: {}{more}", first.owner(), second.owner(), shown.join(", ")),
            )
            .label_opt(second.namespace.namespace_span, format!("{} maps onto names of {}", second.owner(), first.owner()))
            .label_opt(first.namespace.namespace_span, format!("{} is here", first.owner()))
            .help("OVN names leave out the domain and map `-` to `_` (Port_Group `x` also implies address sets `x_ip4` and `x_ip6`); rename a namespace so the two stay apart")
        })
        .collect()
}
