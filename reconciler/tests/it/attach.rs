//! Next-to-lay attachment of real Docker containers to a real OVN data plane
//!
//! The image is the repository's own static `wepoq-runtime` (scripts/static-image); the
//! containers run its stub with echo workers on TCP 8080 and have no other network.

use std::time::Duration;

use wepoq_reconciler::attach::{
    AttachConfig, AttachError, Attacher, CONTAINER_IFNAME, host_ifname, resolve_vif,
};
use wepoq_reconciler::ovsdb::{Client, Timeouts};
use wepoq_reconciler::sandbox::containers::{Containers, Lab, docker};
use wepoq_reconciler::sandbox::{Component, Sandbox, require};

/// A data-plane sandbox and Docker, or a printed skip (never under CI=true).
pub fn sandbox_with_docker() -> Option<Sandbox> {
    require(Component::Docker)?;
    Sandbox::data_plane_or_skip()
}

pub async fn attacher(sb: &Sandbox) -> Attacher {
    Attacher::connect(AttachConfig {
        ovs_db: sb.ovs_db_url(),
        bridge: "br-int".into(),
        ovs_netns: Some(sb.ovs_netns().unwrap()),
    })
    .await
    .unwrap()
}

pub fn vsctl(sb: &Sandbox, args: &[&str]) -> String {
    let db = format!("--db={}", sb.ovs_db_url());
    let out = std::process::Command::new("ovs-vsctl")
        .arg(db)
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_matches('"')
        .to_owned()
}

/// Names of the ports on br-int.
pub fn bridge_ports(sb: &Sandbox) -> Vec<String> {
    let mut ports: Vec<String> = vsctl(sb, &["list-ports", "br-int"])
        .lines()
        .map(str::to_owned)
        .collect();
    ports.sort();
    ports
}

/// Links in ovs-vswitchd's namespace.
pub fn host_links(sb: &Sandbox) -> String {
    let ns = sb.ovs_netns().unwrap();
    let name = ns.file_name().unwrap().to_str().unwrap().to_owned();
    let out = std::process::Command::new("ip")
        .args(["-n", &name, "-o", "link"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_gets_the_ports_addresses_and_traffic_flows() {
    let Some(sb) = sandbox_with_docker() else {
        return;
    };
    let lab = Lab::build(&sb, 2).unwrap();
    let containers = Containers::new().unwrap();
    let nb = Client::connect(&sb.nb_unix_url(), Timeouts::default())
        .await
        .unwrap();
    let at = attacher(&sb).await;
    let foreign_before = bridge_ports(&sb);

    // The NB says what the interface must be.
    let s1 = &lab.servers[0];
    let vif = resolve_vif(&nb, &s1.fqdn).await.unwrap().unwrap();
    assert_eq!(vif.port, s1.port);
    assert_eq!(vif.mac, s1.mac);
    assert_eq!(vif.ip.to_string(), s1.ip);
    assert_eq!(
        (vif.prefix, vif.gateway.to_string()),
        (24, "10.77.0.1".into())
    );
    assert_eq!(vif.routes, vec![("10.77.1.0".parse().unwrap(), 24)]);
    assert!(
        resolve_vif(&nb, "nope.svr.lab.ns.wepoq.net")
            .await
            .unwrap()
            .is_none()
    );

    let id = containers.run(&[]).unwrap();
    let pid = containers.pid(&id).unwrap();
    at.attach(&id, pid, &vif).await.unwrap();
    sb.wait_port_up(&vif.port, Duration::from_secs(20)).unwrap();
    // Inside: exactly the port's MAC and address on wq0.
    // A scratch image has no `ip`: look from the host, in the container's namespace.
    // `ip -o OBJECT show wq0` inside the container's network namespace.
    let inside = |object: &str| {
        let out = std::process::Command::new("nsenter")
            .args([
                "-t",
                &pid.to_string(),
                "-n",
                "ip",
                "-o",
                object,
                "show",
                CONTAINER_IFNAME,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let addr = inside("addr");
    assert!(addr.contains(&format!("{}/24", s1.ip)), "{addr}");
    assert!(inside("link").contains(&s1.mac));
    // TCP across the router (the route via the gateway) reaches the container's server.
    assert_eq!(lab.echo(&sb, &s1.ip), "wepoq");
    let name = host_ifname(&id);
    assert_eq!(
        vsctl(&sb, &["get", "Interface", &name, "external_ids:iface-id"]),
        vif.port
    );
    assert_eq!(
        vsctl(
            &sb,
            &["get", "Interface", &name, "external_ids:attached-mac"]
        ),
        vif.mac
    );

    // Again: a no-op, the same rows stay.
    let uuid = vsctl(&sb, &["get", "Interface", &name, "_uuid"]);
    at.attach(&id, pid, &vif).await.unwrap();
    assert_eq!(vsctl(&sb, &["get", "Interface", &name, "_uuid"]), uuid);
    let listed = at.attached().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].container_id.as_str(), listed[0].port.as_str()),
        (id.as_str(), s1.port.as_str())
    );

    // A second container claiming the same port is refused and leaves nothing behind.
    let other = containers.run(&[]).unwrap();
    let err = at
        .attach(&other, containers.pid(&other).unwrap(), &vif)
        .await
        .unwrap_err();
    assert!(matches!(err, AttachError::PortClaimed { .. }), "{err}");
    assert!(err.to_string().contains(&id), "{err}");
    assert!(!bridge_ports(&sb).contains(&host_ifname(&other)));
    assert!(!host_links(&sb).contains(&host_ifname(&other)));

    // A container that is gone: refused, nothing left.
    let pid_other = containers.pid(&other).unwrap();
    docker(&["kill", &other]).unwrap();
    let vif2 = resolve_vif(&nb, &lab.servers[1].fqdn)
        .await
        .unwrap()
        .unwrap();
    let err = at.attach(&other, pid_other, &vif2).await.unwrap_err();
    assert!(matches!(err, AttachError::ContainerGone { .. }), "{err}");
    assert!(!bridge_ports(&sb).contains(&host_ifname(&other)));

    // Two attachers at once on one new container, as apply and the host agent both attach
    // the containers they see made: one makes it, the other waits and finds it made, and
    // neither undoes the other's work.
    let racer = attacher(&sb).await;
    let third = containers.run(&[]).unwrap();
    let pid3 = containers.pid(&third).unwrap();
    let (first, second) = tokio::join!(
        at.attach(&third, pid3, &vif2),
        racer.attach(&third, pid3, &vif2)
    );
    first.unwrap();
    second.unwrap();
    let name3 = host_ifname(&third);
    assert!(host_links(&sb).contains(&name3), "the host end is gone");
    let inside3 = std::process::Command::new("nsenter")
        .args(["-t", &pid3.to_string(), "-n", "ip", "-o", "link", "show"])
        .output()
        .unwrap();
    let inside3 = String::from_utf8_lossy(&inside3.stdout).into_owned();
    assert!(
        inside3.contains(CONTAINER_IFNAME) && inside3.contains(&vif2.mac),
        "no {CONTAINER_IFNAME} with {} inside: {inside3}",
        vif2.mac
    );
    // Whole and current: attaching again changes nothing.
    let uuid3 = vsctl(&sb, &["get", "Interface", &name3, "_uuid"]);
    racer.attach(&third, pid3, &vif2).await.unwrap();
    assert_eq!(vsctl(&sb, &["get", "Interface", &name3, "_uuid"]), uuid3);
    racer.detach(&third).await.unwrap();

    // Restart: a new network namespace; the old attachment is stale and replaced.
    docker(&["restart", "-t", "0", &id]).unwrap();
    let pid = containers.pid(&id).unwrap();
    at.attach(&id, pid, &vif).await.unwrap();
    assert_ne!(vsctl(&sb, &["get", "Interface", &name, "_uuid"]), uuid);
    sb.wait_port_up(&vif.port, Duration::from_secs(20)).unwrap();
    let mut answer = String::new();
    for _ in 0..5 {
        answer = lab.echo(&sb, &s1.ip);
        if answer == "wepoq" {
            break;
        }
    }
    assert_eq!(answer, "wepoq");

    // Detach removes port and veth; again is a no-op; foreign ports stay.
    at.detach(&id).await.unwrap();
    at.detach(&id).await.unwrap();
    assert!(!bridge_ports(&sb).contains(&name));
    assert!(!host_links(&sb).contains(&name));
    assert!(at.attached().await.unwrap().is_empty());
    assert_eq!(bridge_ports(&sb), foreign_before);
}
