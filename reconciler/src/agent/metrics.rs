//! The agent's gauges and counters, rendered for Prometheus, and its health.
//!
//! Atomics and one small map under a mutex: the dispatcher writes, scrapes read.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use wepoq_runtime::histogram::Histogram;

#[derive(Debug, Default)]
pub struct Metrics {
    /// Containers attached now.
    pub attached: AtomicU64,
    pub attaches: AtomicU64,
    pub detaches: AtomicU64,
    pub resyncs: AtomicU64,
    /// From the Docker start event to the attachment in place.
    pub attach_latency: Histogram,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Worker containers per stub: stem cells, warm, paused.
    pools: Mutex<BTreeMap<String, [u64; 3]>>,
    /// A worker's spawn, split: create (none when a stem cell was ready), start, unpause.
    pub create_latency: Histogram,
    pub start_latency: Histogram,
    pub unpause_latency: Histogram,
    pub docker_up: AtomicBool,
    pub ovs_up: AtomicBool,
    /// A gateway's tunnel (`--tunnel-listen`), once started.
    pub tunnel: std::sync::OnceLock<std::sync::Arc<crate::tunnel::engine::Counters>>,
}

impl Metrics {
    pub fn count_error(&self, kind: &'static str) {
        *self
            .errors
            .lock()
            .expect("metrics lock")
            .entry(kind)
            .or_default() += 1;
    }

    pub fn errors(&self, kind: &str) -> u64 {
        self.errors
            .lock()
            .expect("metrics lock")
            .get(kind)
            .copied()
            .unwrap_or(0)
    }

    /// A stub's pool by tier (stem, warm, paused); `None` when the stub is gone.
    pub fn set_pool(&self, stub: &str, by_tier: Option<[u64; 3]>) {
        let mut pools = self.pools.lock().expect("metrics lock");
        match by_tier {
            Some(t) => {
                pools.insert(stub.to_owned(), t);
            }
            None => {
                pools.remove(stub);
            }
        }
    }

    /// Worker containers in each tier (stem, warm, paused), over every stub.
    pub fn workers_by_tier(&self) -> [u64; 3] {
        let pools = self.pools.lock().expect("metrics lock");
        pools
            .values()
            .fold([0; 3], |a, t| [a[0] + t[0], a[1] + t[1], a[2] + t[2]])
    }

    /// Healthy while Docker's event stream and the OVS database are connected.
    pub fn healthy(&self) -> bool {
        self.docker_up.load(Relaxed) && self.ovs_up.load(Relaxed)
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut line = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        line(
            "wepoq_agent_attached",
            "gauge",
            "containers attached to OVN",
            self.attached.load(Relaxed),
        );
        line(
            "wepoq_agent_attaches_total",
            "counter",
            "attachments made or confirmed",
            self.attaches.load(Relaxed),
        );
        line(
            "wepoq_agent_detaches_total",
            "counter",
            "attachments removed",
            self.detaches.load(Relaxed),
        );
        line(
            "wepoq_agent_resyncs_total",
            "counter",
            "full re-syncs (start, Docker or OVSDB reconnect)",
            self.resyncs.load(Relaxed),
        );
        line(
            "wepoq_agent_docker_up",
            "gauge",
            "1 while the Docker event stream is connected",
            u64::from(self.docker_up.load(Relaxed)),
        );
        line(
            "wepoq_agent_ovs_up",
            "gauge",
            "1 while the OVS database answers",
            u64::from(self.ovs_up.load(Relaxed)),
        );
        if let Some(t) = self.tunnel.get() {
            for (name, help, counter) in [
                (
                    "rx",
                    "packets from clients' tunnels, decrypted and passed",
                    &t.rx_packets,
                ),
                ("tx", "packets sent into clients' tunnels", &t.tx_packets),
                (
                    "refused",
                    "datagrams from no known peer or failing authentication",
                    &t.refused,
                ),
                (
                    "filtered",
                    "authentic packets the inner filter dropped (not the peer's own VXLAN)",
                    &t.filtered,
                ),
            ] {
                line(
                    &format!("wepoq_gateway_tunnel_{name}_total"),
                    "counter",
                    help,
                    counter.load(Relaxed),
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP wepoq_agent_errors_total failures by kind\n# TYPE wepoq_agent_errors_total counter"
        );
        for (kind, n) in self.errors.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "wepoq_agent_errors_total{{kind=\"{kind}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP wepoq_agent_workers worker containers by tier\n# TYPE wepoq_agent_workers gauge"
        );
        for (tier, n) in ["precreated", "warm", "paused"]
            .iter()
            .zip(self.workers_by_tier())
        {
            let _ = writeln!(out, "wepoq_agent_workers{{tier=\"{tier}\"}} {n}");
        }
        self.create_latency.render(
            "wepoq_agent_worker_create_seconds",
            "Docker create of a worker container",
            &mut out,
        );
        self.start_latency.render(
            "wepoq_agent_worker_start_seconds",
            "Docker start of a worker container (a spawn)",
            &mut out,
        );
        self.unpause_latency.render(
            "wepoq_agent_worker_unpause_seconds",
            "Docker unpause of a worker container (a resume)",
            &mut out,
        );
        self.attach_latency.render(
            "wepoq_agent_attach_seconds",
            "from the container's start event to its attachment",
            &mut out,
        );
        out
    }
}
