//! Sticky VLAN tags of external clients: each client endpoint of an external side is a child
//! of its gateway's logical trunk port and needs a tag that no other client of that gateway
//! has. Tags are kept in `wepoq.lock` like addresses: a client host's credential names its
//! tag, so a tag stays with its endpoint for as long as the endpoint exists.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::diagnostic::Diagnostic;
use crate::lock::{Lock, TAGS};
use crate::source::Span;

/// The endpoints of one external client side, in replica order.
pub struct ExternalSide<'a> {
    pub gateway: &'a str,
    pub ports: &'a [String],
    /// The service's key in the spec, for diagnostics.
    pub span: Option<Span>,
}

/// Port name to tag, for every port of `sides`; what the lock gives is kept when valid.
pub fn allocate(
    sides: &[ExternalSide<'_>],
    lock: &Lock,
    diagnostics: &mut Vec<Diagnostic>,
) -> HashMap<String, u16> {
    let locked: HashMap<&str, (u16, Span)> = lock
        .tags
        .iter()
        .map(|t| (t.port.as_str(), (t.tag, t.span)))
        .collect();
    let mut by_gateway: BTreeMap<&str, Vec<&ExternalSide<'_>>> = BTreeMap::new();
    for side in sides {
        by_gateway.entry(side.gateway).or_default().push(side);
    }
    let capacity = TAGS.len();
    let mut tags = HashMap::new();
    for (gateway, sides) in by_gateway {
        let count: usize = sides.iter().map(|s| s.ports.len()).sum();
        if count > capacity {
            let mut d = Diagnostic::error(
                "wepoq::external::too_many_clients",
                format!("gateway `{gateway}` would carry {count} external clients; one trunk carries at most {capacity} (one VLAN tag each)"),
            )
            .help("spread the external client sides over several gateways with `cli.gateway`");
            for side in &sides {
                d = d.label_opt(side.span, format!("{} clients here", side.ports.len()));
            }
            diagnostics.push(d);
            continue;
        }
        // Locked tags first, so a new client never takes a tag an old one still holds.
        let mut used: HashMap<u16, Span> = HashMap::new();
        let mut free_ports = Vec::new();
        for port in sides.iter().flat_map(|s| s.ports.iter()) {
            match locked.get(port.as_str()) {
                Some(&(tag, span)) => match used.get(&tag) {
                    Some(first) => diagnostics.push(
                        Diagnostic::error(
                            "wepoq::lock::duplicate_tag",
                            format!("wepoq.lock gives the tag {tag} to two clients of gateway `{gateway}`"),
                        )
                        .label(span, format!("`{port}`"))
                        .label(*first, "already given here")
                        .help("delete one of the lines to allocate it a new tag (its client needs a new credential)"),
                    ),
                    None => {
                        used.insert(tag, span);
                        tags.insert(port.clone(), tag);
                    }
                },
                None => free_ports.push(port),
            }
        }
        let taken: BTreeSet<u16> = used.keys().copied().collect();
        let mut free = TAGS.filter(|t| !taken.contains(t));
        for port in free_ports {
            // Counted above: there is a free tag for every port.
            if let Some(tag) = free.next() {
                tags.insert(port.clone(), tag);
            }
        }
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::LockedTag;
    use crate::source::FileId;

    fn ports(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn new_clients_take_the_lowest_tags_the_lock_leaves_free() {
        let a = ports(&["c1.a", "c2.a", "c3.a"]);
        let lock = Lock {
            tags: vec![LockedTag {
                port: "c2.a".into(),
                tag: 1,
                span: Span::new(FileId(0), 0..1),
            }],
            ..Lock::default()
        };
        let mut diags = Vec::new();
        let sides = [ExternalSide {
            gateway: "gw",
            ports: &a,
            span: None,
        }];
        let tags = allocate(&sides, &lock, &mut diags);
        assert!(diags.is_empty());
        assert_eq!((tags["c1.a"], tags["c2.a"], tags["c3.a"]), (2, 1, 3));
    }

    #[test]
    fn gateways_number_their_clients_apart_and_duplicates_are_reported() {
        let a = ports(&["c1.a"]);
        let b = ports(&["c1.b", "c2.b"]);
        let span = |at| Span::new(FileId(0), at..at + 1);
        let lock = Lock {
            tags: vec![
                LockedTag {
                    port: "c1.b".into(),
                    tag: 5,
                    span: span(0),
                },
                LockedTag {
                    port: "c2.b".into(),
                    tag: 5,
                    span: span(2),
                },
            ],
            ..Lock::default()
        };
        let mut diags = Vec::new();
        let sides = [
            ExternalSide {
                gateway: "gw",
                ports: &a,
                span: None,
            },
            ExternalSide {
                gateway: "edge",
                ports: &b,
                span: None,
            },
        ];
        let tags = allocate(&sides, &lock, &mut diags);
        assert_eq!(tags["c1.a"], 1);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].code, "wepoq::lock::duplicate_tag");
    }
}
