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
    pub docker_up: AtomicBool,
    pub ovs_up: AtomicBool,
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
        let _ = writeln!(
            out,
            "# HELP wepoq_agent_errors_total failures by kind\n# TYPE wepoq_agent_errors_total counter"
        );
        for (kind, n) in self.errors.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "wepoq_agent_errors_total{{kind=\"{kind}\"}} {n}");
        }
        self.attach_latency.render(
            "wepoq_agent_attach_seconds",
            "from the container's start event to its attachment",
            &mut out,
        );
        out
    }
}
