//! The dispatcher: the one owner of the agent's state. Inputs mark containers to converge;
//! at most `parallel` converge jobs run at once, at most one per container; a container
//! marked again while its job runs is converged once more afterwards.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use bollard::Docker;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::converge::{self, Ctx, Outcome, Report};
use super::{Input, JobError, Metrics};
use crate::attach::AttachError;

#[derive(Default)]
struct Entry {
    busy: bool,
    dirty: bool,
    queued: bool,
    started_at: Option<SystemTime>,
    failures: u32,
    retry_at: Option<Instant>,
}

pub struct Dispatcher {
    ctx: Arc<Ctx>,
    metrics: Arc<Metrics>,
    inputs: mpsc::UnboundedSender<Input>,
    parallel: usize,
    engine: Option<Docker>,
    entries: HashMap<String, Entry>,
    queue: VecDeque<String>,
    running: usize,
    /// Dropped with the dispatcher: a stopped agent leaves no job running.
    jobs: JoinSet<()>,
    attached: HashSet<String>,
    /// Connect counts of the OVS and NB clients: a change means a reconnect, so re-sync.
    connects: (u64, u64),
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn backoff(failures: u32) -> Duration {
    let ms = 500u64.saturating_mul(1 << failures.saturating_sub(1).min(6));
    Duration::from_millis(ms).min(Duration::from_secs(30))
}

impl Dispatcher {
    pub fn new(
        ctx: Arc<Ctx>,
        metrics: Arc<Metrics>,
        inputs: mpsc::UnboundedSender<Input>,
        parallel: usize,
    ) -> Dispatcher {
        let connects = (
            ctx.attacher.ovs_client().stats().connects,
            ctx.nb.stats().connects,
        );
        Dispatcher {
            ctx,
            metrics,
            inputs,
            parallel,
            engine: None,
            entries: HashMap::new(),
            queue: VecDeque::new(),
            running: 0,
            jobs: JoinSet::new(),
            attached: HashSet::new(),
            connects,
        }
    }

    pub async fn run(mut self, mut inputs: mpsc::UnboundedReceiver<Input>) {
        while let Some(input) = inputs.recv().await {
            self.handle(input);
            // Finished tasks' handles are dropped as we go.
            while self.jobs.try_join_next().is_some() {}
            self.pump();
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Listed { ids, engine } => {
                if !self.metrics.docker_up.swap(true, Relaxed) {
                    eprintln!(
                        "wepoq agent: docker connected, {} labelled containers",
                        ids.len()
                    );
                }
                self.engine = Some(engine);
                self.resync(ids);
            }
            Input::Started { id, at } => {
                self.entries.entry(id.clone()).or_default().started_at = at;
                self.mark(id);
            }
            Input::Stopped { id } => self.mark(id),
            Input::DockerLost(why) => {
                if self.metrics.docker_up.swap(false, Relaxed) || self.engine.is_some() {
                    eprintln!("wepoq agent: docker lost ({why}); reconnecting");
                }
                self.metrics.count_error("docker");
                self.engine = None;
            }
            Input::Done(report) => self.done(report),
            Input::Tick => self.tick(),
        }
    }

    /// Every labelled container and every attachment on the bridge, converged again.
    fn resync(&mut self, ids: Vec<String>) {
        self.metrics.resyncs.fetch_add(1, Relaxed);
        for id in ids {
            self.mark(id);
        }
        let ctx = self.ctx.clone();
        let inputs = self.inputs.clone();
        let metrics = self.metrics.clone();
        self.jobs.spawn(async move {
            match ctx.attacher.attached().await {
                Ok(found) => {
                    metrics.ovs_up.store(true, Relaxed);
                    for a in found {
                        // Attachments of containers Docker does not list are detached.
                        let _ = inputs.send(Input::Stopped { id: a.container_id });
                    }
                }
                Err(e) => {
                    eprintln!("wepoq agent: cannot list attachments: {e}");
                    metrics.count_error(e.kind());
                }
            }
        });
    }

    fn mark(&mut self, id: String) {
        let entry = self.entries.entry(id.clone()).or_default();
        entry.dirty = true;
        entry.retry_at = None;
        if !entry.busy && !entry.queued {
            entry.queued = true;
            self.queue.push_back(id);
        }
    }

    fn pump(&mut self) {
        let Some(engine) = self.engine.clone() else {
            return; // Docker first: converging needs inspect.
        };
        while self.running < self.parallel {
            let Some(id) = self.queue.pop_front() else {
                return;
            };
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            entry.queued = false;
            if entry.busy || !entry.dirty {
                continue;
            }
            entry.busy = true;
            entry.dirty = false;
            let started_at = entry.started_at.take();
            self.running += 1;
            let ctx = self.ctx.clone();
            let inputs = self.inputs.clone();
            let engine = engine.clone();
            self.jobs.spawn(async move {
                let outcome = converge::converge(&ctx, &engine, &id).await;
                let _ = inputs.send(Input::Done(Report {
                    id,
                    outcome,
                    started_at,
                }));
            });
        }
    }

    fn done(&mut self, report: Report) {
        self.running -= 1;
        let id = report.id;
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        entry.busy = false;
        match report.outcome {
            Ok(Outcome::Attached { port }) => {
                self.metrics.ovs_up.store(true, Relaxed);
                entry.failures = 0;
                self.metrics.attaches.fetch_add(1, Relaxed);
                if let Some(at) = report.started_at {
                    let took = SystemTime::now().duration_since(at).unwrap_or_default();
                    self.metrics.attach_latency.observe(took);
                }
                if self.attached.insert(id.clone()) {
                    eprintln!("wepoq agent: attached {} as {port}", short(&id));
                }
            }
            Ok(Outcome::Detached) => {
                self.metrics.ovs_up.store(true, Relaxed);
                entry.failures = 0;
                if self.attached.remove(&id) {
                    self.metrics.detaches.fetch_add(1, Relaxed);
                    eprintln!("wepoq agent: detached {}", short(&id));
                }
                if !entry.dirty {
                    self.entries.remove(&id);
                }
            }
            Err(e) => {
                if let JobError::Attach(AttachError::Ovsdb { .. }) = e {
                    self.metrics.ovs_up.store(false, Relaxed);
                }
                self.metrics.count_error(e.kind());
                entry.failures += 1;
                let wait = backoff(entry.failures);
                // The start event is not forgotten: the latency covers the retries.
                entry.started_at = entry.started_at.or(report.started_at);
                if !entry.dirty {
                    entry.retry_at = Some(Instant::now() + wait);
                }
                self.attached.remove(&id);
                eprintln!(
                    "wepoq agent: container {}: {e} [{}] (attempt {}, retry in {:.1}s)",
                    short(&id),
                    e.kind(),
                    entry.failures,
                    wait.as_secs_f64()
                );
            }
        }
        self.metrics
            .attached
            .store(self.attached.len() as u64, Relaxed);
        if self.entries.get(&id).is_some_and(|e| e.dirty) {
            self.mark(id);
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.retry_at.is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.mark(id);
        }
        let connects = (
            self.ctx.attacher.ovs_client().stats().connects,
            self.ctx.nb.stats().connects,
        );
        if connects != self.connects {
            self.connects = connects;
            eprintln!("wepoq agent: OVSDB reconnected; re-syncing");
            let known: Vec<String> = self.entries.keys().cloned().collect();
            self.resync(known);
        }
    }
}
