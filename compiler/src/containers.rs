//! Containers as desired state, and the pure diff against what a Docker host shows.
//!
//! A side that declares `container` runs each of its endpoints as one long-lived container,
//! named after the endpoint's logical port (`s1.svr.redis.ovn-vote.ns`) and labelled with the
//! endpoint's FQDN, the owner, and a hash of its configuration (Docker Compose's idiom): a
//! later run tells "mine and current", "mine but stale" and "not mine" apart from the labels
//! alone. The reconciler observes the host and resolves image tags to ids; this module
//! decides what to do, so an offline plan and a live one are the same code.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::Container;

/// One container wepoq wants to run: an endpoint, its addresses and its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerUnit {
    /// The container's name: the endpoint's logical switch port name.
    pub name: String,
    /// The endpoint's FQDN, also the value of the endpoint label.
    pub endpoint: String,
    /// The namespace that owns it (`ns.wepoq.net`).
    pub owner: String,
    pub mac: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    /// The side's router port: gateway, and OVN's DNS for the endpoint.
    pub gateway: Ipv4Addr,
    /// The namespace's network (`10.64.0.0/16`), routed through the gateway.
    pub network: String,
    #[serde(flatten)]
    pub container: Container,
}

impl ContainerUnit {
    /// What the config-hash label holds: everything that, changed, means a new container.
    /// The image enters by id (a tag rebuilt to a new image is a change); offline, where no id
    /// is known, by name.
    pub fn config_hash(&self, image_id: Option<&str>) -> String {
        let mut hasher = Sha256::new();
        let config = serde_json::to_vec(self).expect("container units serialize");
        hasher.update((config.len() as u64).to_be_bytes());
        hasher.update(&config);
        hasher.update(image_id.unwrap_or(&self.container.image).as_bytes());
        let digest = hasher.finalize();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A container as the host shows it, reduced to what the diff reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    pub id: String,
    pub name: String,
    /// The owner label, when present.
    pub owner: Option<String>,
    /// The endpoint label, when present.
    pub endpoint: Option<String>,
    pub config_hash: Option<String>,
    pub image_id: String,
    pub running: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerAction {
    Create,
    /// Remove, then create with the same name and addresses.
    Replace,
    /// The container is current but not running (stopped by hand, or it exited).
    Start,
    Remove,
}

/// One container's change. `unit` is the desired container, absent on `Remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerChange {
    pub action: ContainerAction,
    pub name: String,
    pub owner: String,
    /// Why a container is replaced or started (`image changed`, `stopped`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// The observed container's id, for replace, start and remove.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id: Option<String>,
    /// The config hash the created container gets.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub config_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unit: Option<ContainerUnit>,
}

/// A container that stands where wepoq wants one but is not wepoq's to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerConflict {
    pub name: String,
    pub id: String,
    pub why: String,
}

/// A desired unit with the image id the host resolved its image to (`None` offline, or when
/// the image is missing: the create will say so).
pub struct Desired<'a> {
    pub unit: &'a ContainerUnit,
    pub image_id: Option<&'a str>,
}

/// What must happen on the host so that exactly the desired containers of `owners` run.
/// Containers of other owners, and unlabelled ones, are never changed: one that stands in a
/// desired container's way (same name, or same endpoint label) is a conflict, unless `adopt`.
pub fn diff(
    owners: &[String],
    desired: &[Desired<'_>],
    observed: &[ObservedContainer],
    adopt: bool,
) -> Result<Vec<ContainerChange>, Vec<ContainerConflict>> {
    let mut changes = Vec::new();
    let mut conflicts = Vec::new();
    let ours = |c: &ObservedContainer| c.owner.as_ref().is_some_and(|o| owners.contains(o));
    for want in desired {
        let unit = want.unit;
        let hash = unit.config_hash(want.image_id);
        let mut found: Option<&ObservedContainer> = None;
        for c in observed {
            let same_name = c.name == unit.name;
            let same_endpoint = c.endpoint.as_deref() == Some(unit.endpoint.as_str());
            if !same_name && !same_endpoint {
                continue;
            }
            if c.owner.as_deref() == Some(unit.owner.as_str()) && same_name {
                found = Some(c);
                continue;
            }
            if adopt && (same_name || same_endpoint) {
                changes.push(remove(
                    c,
                    &unit.owner,
                    Some("adopted: made by others".into()),
                ));
                continue;
            }
            let why = match (&c.owner, same_name) {
                (Some(o), _) if o != &unit.owner => format!("it belongs to {o}"),
                (None, true) => "it has this name but no wepoq owner label".to_string(),
                _ => format!("it claims endpoint {} without being wepoq's", unit.endpoint),
            };
            conflicts.push(ContainerConflict {
                name: c.name.clone(),
                id: c.id.clone(),
                why,
            });
        }
        let change = |action, reason: Option<&str>, id: Option<&String>| ContainerChange {
            action,
            name: unit.name.clone(),
            owner: unit.owner.clone(),
            reason: reason.map(str::to_owned),
            id: id.cloned(),
            config_hash: Some(hash.clone()),
            unit: Some(unit.clone()),
        };
        match found {
            None => changes.push(change(ContainerAction::Create, None, None)),
            Some(c) if c.config_hash.as_deref() != Some(hash.as_str()) => {
                let reason = match want.image_id {
                    Some(id) if id != c.image_id => format!(
                        "image changed: {} -> {}",
                        short_id(&c.image_id),
                        short_id(id)
                    ),
                    _ => "configuration changed".to_string(),
                };
                changes.push(change(ContainerAction::Replace, Some(&reason), Some(&c.id)));
            }
            Some(c) if !c.running => {
                changes.push(change(
                    ContainerAction::Start,
                    Some("not running"),
                    Some(&c.id),
                ));
            }
            Some(_) => {}
        }
    }
    for c in observed.iter().filter(|c| ours(c)) {
        let wanted = desired
            .iter()
            .any(|d| d.unit.name == c.name && c.owner.as_deref() == Some(d.unit.owner.as_str()));
        if !wanted {
            changes.push(remove(c, c.owner.as_deref().unwrap_or_default(), None));
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    changes.sort_by(|a, b| (&a.name, a.action).cmp(&(&b.name, b.action)));
    Ok(changes)
}

fn remove(c: &ObservedContainer, owner: &str, reason: Option<String>) -> ContainerChange {
    ContainerChange {
        action: ContainerAction::Remove,
        name: c.name.clone(),
        owner: owner.to_string(),
        reason,
        id: Some(c.id.clone()),
        config_hash: None,
        unit: None,
    }
}

/// `sha256:0123456789ab` from a full image id.
fn short_id(id: &str) -> &str {
    let end = id.find(':').map_or(12, |colon| colon + 13);
    &id[..end.min(id.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str) -> ContainerUnit {
        ContainerUnit {
            name: name.into(),
            endpoint: format!("{name}.wepoq.net"),
            owner: "ns.wepoq.net".into(),
            mac: "0a:58:0a:40:00:23".into(),
            ip: Ipv4Addr::new(10, 64, 0, 35),
            prefix: 28,
            gateway: Ipv4Addr::new(10, 64, 0, 33),
            network: "10.64.0.0/16".into(),
            container: Container {
                image: "wepoq/probe:dev".into(),
                entrypoint: None,
                command: None,
                env: Default::default(),
                user: None,
                memory_bytes: None,
                nano_cpus: None,
                docker_network: false,
                labels: Default::default(),
                run_mounts: Vec::new(),
            },
        }
    }

    fn seen(u: &ContainerUnit, image: &str, running: bool) -> ObservedContainer {
        ObservedContainer {
            id: format!("id-{}", u.name),
            name: u.name.clone(),
            owner: Some(u.owner.clone()),
            endpoint: Some(u.endpoint.clone()),
            config_hash: Some(u.config_hash(Some(image))),
            image_id: image.into(),
            running,
        }
    }

    fn actions(changes: &[ContainerChange]) -> Vec<(ContainerAction, &str)> {
        changes
            .iter()
            .map(|c| (c.action, c.name.as_str()))
            .collect()
    }

    #[test]
    fn creates_replaces_starts_and_removes() {
        let owners = ["ns.wepoq.net".to_string()];
        let (a, b, c, d) = (unit("s1.a"), unit("s1.b"), unit("s1.c"), unit("s1.gone"));
        let desired = [
            Desired {
                unit: &a,
                image_id: Some("sha256:1"),
            },
            Desired {
                unit: &b,
                image_id: Some("sha256:2"),
            },
            Desired {
                unit: &c,
                image_id: Some("sha256:1"),
            },
        ];
        let observed = [
            seen(&b, "sha256:1", true),
            seen(&c, "sha256:1", false),
            seen(&d, "sha256:1", true),
        ];
        let changes = diff(&owners, &desired, &observed, false).unwrap();
        assert_eq!(
            actions(&changes),
            [
                (ContainerAction::Create, "s1.a"),
                (ContainerAction::Replace, "s1.b"),
                (ContainerAction::Start, "s1.c"),
                (ContainerAction::Remove, "s1.gone"),
            ]
        );
        assert_eq!(
            changes[1].reason.as_deref(),
            Some("image changed: sha256:1 -> sha256:2")
        );
        let current = [seen(&a, "sha256:1", true)];
        let none = diff(&owners, &desired[..1], &current, false).unwrap();
        assert!(none.is_empty(), "{none:?}");
    }

    #[test]
    fn foreign_containers_conflict_unless_adopted_and_are_never_removed() {
        let owners = ["ns.wepoq.net".to_string()];
        let a = unit("s1.a");
        let desired = [Desired {
            unit: &a,
            image_id: None,
        }];
        let mut by_hand = seen(&a, "sha256:1", true);
        by_hand.owner = None;
        let other = ObservedContainer {
            name: "unrelated".into(),
            owner: Some("other.wepoq.net".into()),
            endpoint: None,
            ..seen(&a, "sha256:1", true)
        };
        let conflicts =
            diff(&owners, &desired, &[by_hand.clone(), other.clone()], false).unwrap_err();
        assert_eq!(conflicts.len(), 1);
        assert!(
            conflicts[0].why.contains("no wepoq owner label"),
            "{conflicts:?}"
        );
        let adopted = diff(&owners, &desired, &[by_hand, other], true).unwrap();
        assert_eq!(
            actions(&adopted),
            [
                (ContainerAction::Create, "s1.a"),
                (ContainerAction::Remove, "s1.a")
            ]
        );
    }
}
