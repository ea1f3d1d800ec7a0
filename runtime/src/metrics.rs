//! The stub's counters and gauges, shared with the admin endpoint that renders them.
//!
//! Atomics rather than a lock: the dispatcher writes on every connection and must never
//! wait for a scrape.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::histogram::Histogram;
use crate::record::{Outcome, Tier};

/// Everything `/metrics` shows.
#[derive(Debug, Default)]
pub struct Metrics {
    pub accepted: AtomicU64,
    outcomes: [AtomicU64; Outcome::ALL.len()],
    pub queue_depth: AtomicU64,
    pub workers_starting: AtomicU64,
    pub workers_idle: AtomicU64,
    pub workers_busy: AtomicU64,
    pub workers_marked: AtomicU64,
    pub workers_paused: AtomicU64,
    tiers: [AtomicU64; Tier::ALL.len()],
    pub workers_paused_total: AtomicU64,
    pub udp_handoffs: AtomicU64,
    pub workers_refused: AtomicU64,
    pub workers_started: AtomicU64,
    pub workers_swept: AtomicU64,
    pub workers_lost: AtomicU64,
    pub handoff_latency: Histogram,
    pub cold_start: Histogram,
    pub spawn_time: Histogram,
}

impl Metrics {
    pub fn count_outcome(&self, outcome: Outcome) {
        self.outcomes[outcome as usize].fetch_add(1, Relaxed);
    }

    pub fn outcome(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome as usize].load(Relaxed)
    }

    pub fn count_tier(&self, tier: Tier) {
        self.tiers[tier as usize].fetch_add(1, Relaxed);
    }

    pub fn tier(&self, tier: Tier) -> u64 {
        self.tiers[tier as usize].load(Relaxed)
    }

    /// Renders the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Relaxed));
        };
        counter(
            &mut out,
            "wepoq_connections_accepted_total",
            "connections accepted",
            &self.accepted,
        );
        labelled(
            &mut out,
            "wepoq_connections_total",
            "connections finished, by outcome",
            "outcome",
            Outcome::ALL.map(|o| (o.as_str(), self.outcome(o))),
        );
        let _ = writeln!(
            out,
            "# HELP wepoq_queue_depth connections waiting for a worker\n# TYPE wepoq_queue_depth gauge\nwepoq_queue_depth {}",
            self.queue_depth.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP wepoq_workers workers by state\n# TYPE wepoq_workers gauge"
        );
        for (state, v) in [
            ("starting", &self.workers_starting),
            ("idle", &self.workers_idle),
            ("busy", &self.workers_busy),
            ("marked", &self.workers_marked),
            ("paused", &self.workers_paused),
        ] {
            let _ = writeln!(
                out,
                "wepoq_workers{{state=\"{state}\"}} {}",
                v.load(Relaxed)
            );
        }
        labelled(
            &mut out,
            "wepoq_handoffs_total",
            "connections (and UDP sockets) handed to a worker, by the tier that took them",
            "tier",
            Tier::ALL.map(|t| (t.as_str(), self.tier(t))),
        );
        counter(
            &mut out,
            "wepoq_udp_handoffs_total",
            "UDP sockets handed to a worker on a first datagram",
            &self.udp_handoffs,
        );
        counter(
            &mut out,
            "wepoq_workers_paused_total",
            "idle workers paused",
            &self.workers_paused_total,
        );
        counter(
            &mut out,
            "wepoq_workers_started_total",
            "workers asked of the backend",
            &self.workers_started,
        );
        counter(
            &mut out,
            "wepoq_workers_swept_total",
            "idle workers stopped by mark-and-sweep",
            &self.workers_swept,
        );
        counter(
            &mut out,
            "wepoq_workers_lost_total",
            "workers that went away unasked",
            &self.workers_lost,
        );
        counter(
            &mut out,
            "wepoq_workers_refused_total",
            "worker connections refused by the credential policy",
            &self.workers_refused,
        );
        self.handoff_latency.render(
            "wepoq_handoff_latency_seconds",
            "accept to handoff to a worker",
            &mut out,
        );
        self.cold_start.render(
            "wepoq_cold_start_seconds",
            "worker start asked to worker registered",
            &mut out,
        );
        self.spawn_time.render(
            "wepoq_spawn_seconds",
            "worker start asked to the backend having it started",
            &mut out,
        );
        out
    }
}

/// A counter with one label: its HELP and TYPE lines, then one sample per label value.
fn labelled<const N: usize>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: [(&str, u64); N],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (value, n) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
    }
}
