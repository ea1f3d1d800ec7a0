//! The host agent against real Docker and a real OVN data plane: resync at start, joins by
//! label (whoever started the container), re-attach after `docker restart`, detach on
//! removal, bad labels, and a kill during a burst of starts.
//!
//! The agent runs in-process; aborting its task is the kill (no cleanup runs, jobs in flight
//! are dropped wherever they are).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wepoq_reconciler::agent::{self, AgentConfig, Metrics};
use wepoq_reconciler::attach::{AttachConfig, host_ifname};
use wepoq_reconciler::docker::ENDPOINT_LABEL;
use wepoq_reconciler::ovsdb::Timeouts;
use wepoq_reconciler::sandbox::Sandbox;
use wepoq_reconciler::sandbox::containers::{Containers, Lab, TEST_LABEL, docker};

use super::attach::{bridge_ports, host_links, sandbox_with_docker, vsctl};

struct Running {
    task: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
}

impl Running {
    fn kill(self) {
        self.task.abort();
    }
}

fn start_agent(sb: &Sandbox, c: &Containers) -> Running {
    let cfg = AgentConfig {
        docker: None,
        nb: sb.nb_unix_url(),
        nb_tls: None,
        nb_timeouts: Timeouts::default(),
        attach: AttachConfig {
            ovs_db: sb.ovs_db_url(),
            bridge: "br-int".into(),
            ovs_netns: Some(sb.ovs_netns().unwrap()),
        },
        parallel: 8,
        // Tests run side by side on one Docker engine: each agent sees its own containers.
        only_label: Some(format!("{TEST_LABEL}={}", c.tag)),
        workers: None,
        gateway: None,
    };
    let metrics = Arc::new(Metrics::default());
    let m = metrics.clone();
    let task = tokio::spawn(async move {
        agent::run(cfg, m, std::future::pending()).await.unwrap();
    });
    Running { task, metrics }
}

/// Polls `check` every 100 ms for up to 30 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn port_up(sb: &Sandbox, port: &str) -> bool {
    sb.nbctl(&["get", "Logical_Switch_Port", port, "up"])
        .is_ok_and(|o| o.trim() == "true")
}

fn echo_until(lab: &Lab, sb: &Sandbox, ip: &str) -> String {
    let mut got = String::new();
    for _ in 0..5 {
        got = lab.echo(sb, ip);
        if got == "wepoq" {
            break;
        }
    }
    got
}

/// Owned ports on br-int (every wepoq attachment is named after its container).
fn owned_ports(sb: &Sandbox) -> Vec<String> {
    bridge_ports(sb)
        .into_iter()
        .filter(|p| vsctl(sb, &["get", "Port", p, "external_ids:\"wepoq.net/owner\""]) == "attach")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_keeps_labelled_containers_attached() {
    let Some(sb) = sandbox_with_docker() else {
        return;
    };
    let lab = Lab::build(&sb, 3).unwrap();
    let c = Containers::new().unwrap();
    let (s1, s2) = (&lab.servers[0], &lab.servers[1]);
    let foreign = bridge_ports(&sb);

    // Running before the agent starts: attached by the resync at start.
    let first = c.run(&[(ENDPOINT_LABEL, &s1.fqdn)]).unwrap();
    let unlabelled = c.run(&[]).unwrap();
    let agent = start_agent(&sb, &c);
    eventually("s1 up", || port_up(&sb, &s1.port)).await;
    assert_eq!(echo_until(&lab, &sb, &s1.ip), "wepoq");

    // Started by hand with only the label (seed 001): joins.
    let by_hand = c.run(&[(ENDPOINT_LABEL, &s2.fqdn)]).unwrap();
    eventually("s2 up", || port_up(&sb, &s2.port)).await;
    assert_eq!(echo_until(&lab, &sb, &s2.ip), "wepoq");

    // docker restart: a new network namespace, re-attached (a new Interface row: the
    // namespace's inode number may well be the old one's, reused), traffic flows again.
    let name = host_ifname(&first);
    let row = vsctl(&sb, &["get", "Interface", &name, "_uuid"]);
    docker(&["restart", "-t", "0", &first]).unwrap();
    eventually("a re-attachment in the new namespace", || {
        let now = vsctl(&sb, &["get", "Interface", &name, "_uuid"]);
        !now.is_empty() && now != row && port_up(&sb, &s1.port)
    })
    .await;
    assert_eq!(echo_until(&lab, &sb, &s1.ip), "wepoq");

    // Removed by hand: its port and veth go.
    docker(&["rm", "-f", &by_hand]).unwrap();
    eventually("the removed container's port gone", || {
        !bridge_ports(&sb).contains(&host_ifname(&by_hand))
    })
    .await;
    assert!(!host_links(&sb).contains(&host_ifname(&by_hand)));

    // A label naming no port, and a second claimant of s1: errors by kind, nothing attached.
    let stray = c
        .run(&[(ENDPOINT_LABEL, "nope.svr.lab.ns.wepoq.net")])
        .unwrap();
    let twin = c.run(&[(ENDPOINT_LABEL, &s1.fqdn)]).unwrap();
    eventually("both refusals counted", || {
        agent.metrics.errors("no_port") >= 1 && agent.metrics.errors("port_claimed") >= 1
    })
    .await;
    for id in [&stray, &twin, &unlabelled] {
        assert!(!bridge_ports(&sb).contains(&host_ifname(id)), "{id}");
    }
    assert_eq!(echo_until(&lab, &sb, &s1.ip), "wepoq");

    let text = agent.metrics.render();
    assert!(text.contains("wepoq_agent_attached 1\n"), "{text}");
    assert!(
        text.contains("wepoq_agent_errors_total{kind=\"no_port\"}"),
        "{text}"
    );
    assert!(agent.metrics.attach_latency.count() >= 2, "{text}");

    // Stopped: attachments stay; foreign ports were never touched.
    agent.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(port_up(&sb, &s1.port));
    let mut expected = foreign.clone();
    expected.push(name);
    expected.sort();
    assert_eq!(bridge_ports(&sb), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_a_burst_it_converges_with_nothing_half_attached() {
    let Some(sb) = sandbox_with_docker() else {
        return;
    };
    let lab = Lab::build(&sb, 8).unwrap();
    let c = Containers::new().unwrap();
    let agent = start_agent(&sb, &c);

    // A burst of starts, the agent killed in the middle of it.
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = lab
            .servers
            .iter()
            .map(|p| s.spawn(|| c.run(&[(ENDPOINT_LABEL, &p.fqdn)]).unwrap()))
            .collect();
        std::thread::sleep(Duration::from_millis(400));
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    agent.kill();
    // While no agent runs: two die, one of them removed.
    docker(&["kill", &ids[0]]).unwrap();
    docker(&["rm", "-f", &ids[1]]).unwrap();

    let agent = start_agent(&sb, &c);
    let mut want: Vec<String> = ids[2..].iter().map(|id| host_ifname(id)).collect();
    want.sort();
    eventually("exactly the running containers attached and up", || {
        owned_ports(&sb) == want && lab.servers[2..].iter().all(|p| port_up(&sb, &p.port))
    })
    .await;
    // No leftover veths: the host ends in ovs-vswitchd's namespace are exactly those.
    let links = host_links(&sb);
    for id in &ids[..2] {
        assert!(!links.contains(&host_ifname(id)), "{links}");
    }
    for p in &lab.servers[2..] {
        assert_eq!(echo_until(&lab, &sb, &p.ip), "wepoq", "{}", p.port);
    }
    assert!(
        agent
            .metrics
            .resyncs
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    agent.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ovsdb_outage_is_survived_and_followed_by_a_resync() {
    let Some(sb) = sandbox_with_docker() else {
        return;
    };
    let lab = Lab::build(&sb, 2).unwrap();
    let c = Containers::new().unwrap();
    let agent = start_agent(&sb, &c);
    let (s1, s2) = (&lab.servers[0], &lab.servers[1]);
    c.run(&[(ENDPOINT_LABEL, &s1.fqdn)]).unwrap();
    eventually("s1 up", || port_up(&sb, &s1.port)).await;
    let resyncs = agent
        .metrics
        .resyncs
        .load(std::sync::atomic::Ordering::Relaxed);

    // The local Open_vSwitch database goes away; a container starts meanwhile.
    let pid = std::fs::read_to_string(sb.dir().join("vs.pid")).unwrap();
    assert!(
        std::process::Command::new("kill")
            .arg(pid.trim())
            .status()
            .unwrap()
            .success()
    );
    c.run(&[(ENDPOINT_LABEL, &s2.fqdn)]).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Back (same database file): the agent reconnects, re-syncs and attaches it.
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ovn-sandbox");
    let out = std::process::Command::new(script)
        .arg("up")
        .arg(sb.dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("s2 attached and up after the outage", || {
        port_up(&sb, &s2.port)
    })
    .await;
    eventually("a resync after the reconnect", || {
        agent
            .metrics
            .resyncs
            .load(std::sync::atomic::Ordering::Relaxed)
            > resyncs
    })
    .await;
    assert!(port_up(&sb, &s1.port));
    assert_eq!(echo_until(&lab, &sb, &s2.ip), "wepoq");
    assert_eq!(echo_until(&lab, &sb, &s1.ip), "wepoq");
    agent.kill();
}
