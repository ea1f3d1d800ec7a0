//! An endpoint's [`Vif`] as the NB says it must be.
//!
//! The logical port is found by `external_ids:wepoq-name` (the endpoint FQDN); its
//! `addresses` give MAC and IP. The side's router port gives prefix and gateway: the port's
//! switch, that switch's router-type port, its `options:router-port`, that
//! Logical_Router_Port's `networks`. The router's other ports' networks are the routes.

use std::net::Ipv4Addr;

use crate::ovsdb::{self, Condition, NB_DB, OpResult, Operation, Row, Value};

use super::{AttachError, Vif};

pub(crate) async fn select(
    nb: &ovsdb::Client,
    ops: &[Operation],
) -> Result<Vec<Vec<Row>>, AttachError> {
    let results = nb.transact(NB_DB, ops).await.map_err(AttachError::Nb)?;
    Ok(results
        .into_iter()
        .map(|r| match r {
            OpResult::Select { rows } => rows,
            _ => Vec::new(),
        })
        .collect())
}

/// `10.64.0.113/28` → (address, prefix).
fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, prefix) = text.split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then_some((ip.parse().ok()?, prefix))
}

fn network((ip, prefix): (Ipv4Addr, u8)) -> (Ipv4Addr, u8) {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    (Ipv4Addr::from(u32::from(ip) & mask), prefix)
}

fn strings(row: &Row, column: &str) -> Vec<String> {
    row.get(column)
        .and_then(Value::as_set)
        .map(|set| {
            set.iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Looks up the Vif of the endpoint named `fqdn`; `None` when no logical port carries that
/// name. `default_route` is left false: whether the container has another network is the
/// caller's to know.
pub async fn resolve_vif(nb: &ovsdb::Client, fqdn: &str) -> Result<Option<Vif>, AttachError> {
    let lsps = select(
        nb,
        &[Operation::select_columns(
            "Logical_Switch_Port",
            vec![Condition::includes(
                "external_ids",
                Value::map([("wepoq-name", fqdn)]),
            )],
            &["_uuid", "name", "addresses"],
        )],
    )
    .await?;
    let Some(lsp) = lsps.into_iter().flatten().next() else {
        return Ok(None);
    };
    let port = lsp.str("name").unwrap_or_default().to_owned();
    let bad = |reason: String| AttachError::BadVif {
        port: port.clone(),
        reason,
    };
    let addresses = strings(&lsp, "addresses");
    let (mac, ip) = addresses
        .iter()
        .find_map(|a| {
            let mut words = a.split_whitespace();
            let mac = words.next()?;
            let ip: Ipv4Addr = words.next()?.parse().ok()?;
            Some((mac.to_owned(), ip))
        })
        .ok_or_else(|| {
            bad(format!(
                "addresses {addresses:?} name no MAC and IPv4 address"
            ))
        })?;
    let uuid = lsp.uuid().cloned().expect("selected rows carry _uuid");

    // The switch, and every router-type port (few: one per side).
    let found = select(
        nb,
        &[
            Operation::select_columns(
                "Logical_Switch",
                vec![Condition::includes("ports", Value::uuid(uuid))],
                &["ports"],
            ),
            Operation::select_columns(
                "Logical_Switch_Port",
                vec![Condition::eq("type", "router")],
                &["_uuid", "options"],
            ),
        ],
    )
    .await?;
    let switch_ports = found[0]
        .first()
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_set)
        .cloned()
        .ok_or_else(|| bad("is on no logical switch".into()))?;
    let router_port = found[1]
        .iter()
        .filter(|r| {
            r.uuid()
                .is_some_and(|u| switch_ports.contains(&ovsdb::Atom::Uuid(u.clone())))
        })
        .find_map(|r| {
            r.get("options")?
                .get("router-port")?
                .as_str()
                .map(str::to_owned)
        })
        .ok_or_else(|| bad("its switch has no router port".into()))?;

    let lrps = select(
        nb,
        &[Operation::select_columns(
            "Logical_Router_Port",
            vec![Condition::eq("name", router_port.as_str())],
            &["_uuid", "networks"],
        )],
    )
    .await?;
    let lrp = lrps
        .into_iter()
        .flatten()
        .next()
        .ok_or_else(|| bad(format!("router port {router_port} does not exist")))?;
    let (gateway, prefix) = strings(&lrp, "networks")
        .iter()
        .filter_map(|n| parse_cidr(n))
        .find(|&net| network(net) == network((ip, net.1)))
        .ok_or_else(|| {
            bad(format!(
                "router port {router_port} has no network holding {ip}"
            ))
        })?;

    // The router's other networks.
    let lrp_uuid = lrp.uuid().cloned().expect("selected rows carry _uuid");
    let routers = select(
        nb,
        &[Operation::select_columns(
            "Logical_Router",
            vec![Condition::includes("ports", Value::uuid(lrp_uuid.clone()))],
            &["ports"],
        )],
    )
    .await?;
    let others: Vec<Operation> = routers
        .iter()
        .flatten()
        .flat_map(|r| {
            r.get("ports")
                .and_then(Value::as_set)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|a| a.as_uuid().cloned())
        .filter(|u| *u != lrp_uuid)
        .map(|u| {
            Operation::select_columns(
                "Logical_Router_Port",
                vec![Condition::uuid(&u)],
                &["networks"],
            )
        })
        .collect();
    let mut routes: Vec<(Ipv4Addr, u8)> = if others.is_empty() {
        Vec::new()
    } else {
        select(nb, &others)
            .await?
            .iter()
            .flatten()
            .flat_map(|r| strings(r, "networks"))
            .filter_map(|n| parse_cidr(&n))
            .map(network)
            .filter(|net| *net != network((gateway, prefix)))
            .collect()
    };
    routes.sort();
    routes.dedup();
    Ok(Some(Vif {
        port,
        mac,
        ip,
        prefix,
        gateway,
        routes,
        default_route: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_mask_host_bits() {
        assert_eq!(
            network(parse_cidr("10.64.0.113/28").unwrap()),
            ("10.64.0.112".parse().unwrap(), 28)
        );
        assert_eq!(
            network(("1.2.3.4".parse().unwrap(), 0)),
            (Ipv4Addr::UNSPECIFIED, 0)
        );
        assert_eq!(parse_cidr("10.0.0.1/33"), None);
    }
}
