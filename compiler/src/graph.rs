//! The topology as a petgraph graph: scopes, services, sides, endpoints and call edges.
//! Checks walk it (reachability) and `wepoq graph` draws it.

use std::fmt::Write;

use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences};

use crate::diagnostic::Diagnostic;
use crate::model::{Namespace, SideKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    Namespace,
    Scope,
    Service,
    Side(SideKind),
    /// A group of endpoints of one side, drawn as one node (`s1..s3`).
    Endpoints {
        count: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphNode {
    pub kind: NodeKind,
    /// Dotted name, e.g. `svr.result.ovn-vote.ns`.
    pub name: String,
    pub label: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Contains,
    /// A side may call a service's VIP.
    Calls,
}

pub struct Topology {
    pub graph: StableDiGraph<GraphNode, Edge>,
}

pub fn build(ns: &Namespace) -> Topology {
    let mut graph = StableDiGraph::new();
    let root = graph.add_node(GraphNode {
        kind: NodeKind::Namespace,
        name: ns.name.clone(),
        label: ns.fqdn(),
    });
    let mut scopes: std::collections::HashMap<Vec<String>, NodeIndex> =
        std::collections::HashMap::new();
    scopes.insert(Vec::new(), root);
    let mut service_nodes = Vec::new();
    let mut side_nodes = Vec::new();
    for service in &ns.services {
        let mut parent = root;
        for depth in 1..=service.scopes.len() {
            let path = service.scopes[..depth].to_vec();
            parent = *scopes.entry(path.clone()).or_insert_with(|| {
                let mut dotted: Vec<&str> = path.iter().rev().map(String::as_str).collect();
                dotted.push(&ns.name);
                let node = graph.add_node(GraphNode {
                    kind: NodeKind::Scope,
                    name: dotted.join("."),
                    label: path[depth - 1].clone(),
                });
                graph.add_edge(parent, node, Edge::Contains);
                node
            });
        }
        let svc = graph.add_node(GraphNode {
            kind: NodeKind::Service,
            name: format!("{}.{}", service.dotted(), ns.name),
            label: format!(
                "{} ({})",
                service.name,
                service
                    .ports
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        });
        graph.add_edge(parent, svc, Edge::Contains);
        service_nodes.push(svc);
        let mut sides = Vec::new();
        for kind in [SideKind::Svr, SideKind::Cli] {
            let side = service.side(kind);
            if side.replicas == 0 {
                sides.push(None);
                continue;
            }
            let name = ns.side_name(service, kind);
            let node = graph.add_node(GraphNode {
                kind: NodeKind::Side(kind),
                name: name.clone(),
                label: kind.as_str().to_string(),
            });
            graph.add_edge(svc, node, Edge::Contains);
            let p = kind.endpoint_prefix();
            let label = if side.replicas == 1 {
                format!("{p}1")
            } else {
                format!("{p}1..{p}{}", side.replicas)
            };
            let eps = graph.add_node(GraphNode {
                kind: NodeKind::Endpoints {
                    count: side.replicas,
                },
                name: format!("endpoints.{name}"),
                label,
            });
            graph.add_edge(node, eps, Edge::Contains);
            sides.push(Some(node));
        }
        side_nodes.push(sides);
    }
    for (i, service) in ns.services.iter().enumerate() {
        for (k, kind) in [SideKind::Svr, SideKind::Cli].into_iter().enumerate() {
            let Some(from) = side_nodes[i][k] else {
                continue;
            };
            for t in service.targets(crate::model::ServiceId(i), kind) {
                graph.add_edge(from, service_nodes[t.0], Edge::Calls);
            }
        }
    }
    Topology { graph }
}

/// Services nothing can call: no clients of their own and no caller. They get addresses and
/// a VIP, but every packet to them is dropped, which is seldom what the author meant.
pub fn check_reachability(ns: &Namespace, topology: &Topology) -> Vec<Diagnostic> {
    let g = &topology.graph;
    let mut out = Vec::new();
    for (idx, service) in g
        .node_indices()
        .filter(|i| g[*i].kind == NodeKind::Service)
        .zip(&ns.services)
    {
        let called = g
            .edges_directed(idx, Direction::Incoming)
            .any(|e| *e.weight() == Edge::Calls);
        if !called {
            out.push(
                Diagnostic::warning(
                    "wepoq::graph::unreachable",
                    format!("nothing can reach `{}`", service.path()),
                )
                .label_opt(service.span, "no clients and no caller")
                .help(
                    "give it clients (`cli: {replicas: N}`) or list it in another side's `calls`",
                ),
            );
        }
    }
    out
}

/// Graphviz DOT: scopes as clusters, call edges dashed.
pub fn to_dot(topology: &Topology) -> String {
    let g = &topology.graph;
    let mut out = String::new();
    let _ = writeln!(out, "digraph wepoq {{");
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(out, "  node [fontname=\"Helvetica\", fontsize=10];");
    for idx in g.node_indices() {
        let n = &g[idx];
        // Boxes only, told apart by colour: the SVG renderer draws just a few shapes.
        let color = match n.kind {
            NodeKind::Namespace => "black",
            NodeKind::Scope => "gray40",
            NodeKind::Service => "darkgreen",
            NodeKind::Side(SideKind::Svr) => "blue",
            NodeKind::Side(SideKind::Cli) => "orange",
            NodeKind::Endpoints { .. } => "gray60",
        };
        let _ = writeln!(
            out,
            "  {:?} [label={:?}, shape=box, color={color}];",
            n.name, n.label
        );
    }
    for edge in g.edge_references() {
        let (a, b) = (&g[edge.source()].name, &g[edge.target()].name);
        match edge.weight() {
            Edge::Contains => {
                let _ = writeln!(out, "  {a:?} -> {b:?} [arrowhead=none, color=gray50];");
            }
            Edge::Calls => {
                let _ = writeln!(
                    out,
                    "  {a:?} -> {b:?} [style=dashed, color=blue, label=\"calls\"];"
                );
            }
        }
    }
    out.push_str("}\n");
    out
}
