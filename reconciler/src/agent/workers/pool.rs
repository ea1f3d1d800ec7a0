//! One stub's pool of worker containers: a task that owns the pool's state, fed by the
//! control socket (requests), Docker jobs (results), Docker events (a worker died, the stub
//! started again), a tick (listing the workers by label, keeping stem cells ready: the
//! safety net for any event missed) and the scan (shutdown when the stub is gone).
//!
//! Tiers as OpenWhisk keeps them: `Stem` (created, not started, `precreate` of them kept
//! ready so a spawn is a start), `Warm` (started), `Paused` (Docker pause). A spawn starts a
//! stem cell or creates and starts one; stop removes. A worker whose container ends is
//! reported to the stub (`exited`) and removed; one that ends within [`CRASH_WINDOW`] of its
//! start counts as a failure of the image, and failures back off spawns (answered with the
//! reason) until a worker lives longer.
//!
//! A restarted stub knows none of the workers started for its previous process (they hold a
//! socket to a process that is gone, or sit paused): when the stub's container reports a
//! newer start time (its `start` event, its reconnecting, or a pool started by an agent that
//! was down meanwhile), every worker started before it is removed.
//!
//! When the stub goes the pool removes its workers and waits for its Docker jobs still in
//! flight, removing what they made; when the agent stops, the pool stops with it and leaves
//! its containers to the next agent.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::{InspectContainerOptions, ListContainersOptions};
use tokio::sync::{mpsc, watch};
use wepoq_runtime::control_proto::{AgentEvent, FromAgent, Reply, Request, RuntimeLabel, encode};

use super::container;
use super::control;
use super::timestamp;
use super::{STUB_LABEL, WORKER_LABEL, WorkersConfig};
use crate::agent::Metrics;
use crate::docker::Docker;

/// A worker that ends this soon after its start counts as a failing image.
const CRASH_WINDOW: Duration = Duration::from_secs(3);
/// How long a pool whose stub is gone waits for its Docker jobs still in flight.
const SHUTDOWN_JOBS: Duration = Duration::from_secs(60);

pub enum Input {
    Connected(u64, mpsc::UnboundedSender<Vec<u8>>),
    Disconnected(u64),
    Request(u64, Request),
    Malformed(u64, String),
    Job(Job),
    /// Worker containers as listed at the given instant.
    Listed(Instant, Vec<Found>),
    /// Docker's `die` event of a worker container.
    Died {
        worker: String,
        why: String,
    },
    /// Docker's `start` event of the stub's container: it may have restarted.
    StubStarted,
    /// Docker's `die` (or `destroy`) event of the stub's container, at (Unix ns).
    StubDied(u64),
    Tick,
    Shutdown,
}

pub struct Found {
    worker: String,
    container: String,
    state: String,
    status: String,
}

pub struct Job {
    worker: String,
    /// The request to answer: (connection, id).
    reply: Option<(u64, u64)>,
    done: Done,
}

enum Done {
    Created(Result<String, String>),
    Started {
        container: Option<String>,
        result: Result<(), String>,
        /// When the start was asked (Unix ns), and what the create (if any) and start took.
        asked_ns: u64,
        create_us: Option<u64>,
        start_us: u64,
    },
    Paused(Result<(), String>),
    Resumed {
        result: Result<(), String>,
        unpause_us: u64,
    },
    Removed(Result<(), String>),
    /// The stub container's start time (Unix ns), as Docker has it now.
    StubInspected(Result<u64, String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Creating,
    Stem,
    Starting,
    Warm,
    Pausing,
    Paused,
    Resuming,
    Removing,
}

struct Worker {
    container: Option<String>,
    tier: Tier,
    /// When the pool learnt of it: a listing older than this may not show it.
    since: Instant,
    started: Option<Instant>,
    /// When its start was asked (Unix ns; 0 for one adopted running): a worker started
    /// before the stub's container is of a previous stub process.
    started_ns: u64,
}

struct Pool {
    engine: Docker,
    metrics: Arc<Metrics>,
    inputs: mpsc::UnboundedSender<Input>,
    name: String,
    labels: HashMap<String, String>,
    rt: RuntimeLabel,
    dir: PathBuf,
    shim_binary: Option<PathBuf>,
    cmd: Result<Option<Vec<String>>, String>,
    conn: Option<(u64, mpsc::UnboundedSender<Vec<u8>>)>,
    served_before: bool,
    workers: HashMap<String, Worker>,
    failures: u32,
    backoff_until: Option<Instant>,
    last_failure: String,
    counter: u64,
    /// Until the first listing, the pool does not know what a previous agent left: requests
    /// wait here and no stem cell is made, so nothing is made twice.
    listed: bool,
    deferred: Vec<(u64, Request)>,
    /// The stub container's start (Unix ns, from Docker); 0 until known.
    stub_started_ns: u64,
    /// Docker jobs started and not yet back.
    jobs: usize,
}

/// Binds the stub's control socket and starts its pool; the sender feeds the pool, which
/// lists (and ticks) every `tick`, and stops, leaving its containers, when `alive` closes.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    cfg: Arc<WorkersConfig>,
    engine: Docker,
    metrics: Arc<Metrics>,
    name: String,
    labels: HashMap<String, String>,
    rt: RuntimeLabel,
    tick: Duration,
    mut alive: watch::Receiver<()>,
) -> Result<mpsc::UnboundedSender<Input>, String> {
    let dir = cfg.run_dir.join("stubs").join(&name);
    let (listener, socket) = control::bind(&dir)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut pool = Pool {
        engine,
        metrics,
        inputs: tx.clone(),
        name,
        labels,
        rt,
        dir,
        shim_binary: cfg.shim_binary.clone(),
        cmd: Err("not resolved yet".into()),
        conn: None,
        served_before: false,
        workers: HashMap::new(),
        failures: 0,
        backoff_until: None,
        last_failure: String::new(),
        counter: 0,
        listed: false,
        deferred: Vec::new(),
        stub_started_ns: 0,
        jobs: 0,
    };
    pool.resolve_command().await;
    let server = tokio::spawn(control::serve(listener, tx.clone(), pool.metrics.clone()));
    let ticker = {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(tick);
            loop {
                every.tick().await;
                if tx.send(Input::Tick).is_err() {
                    return;
                }
            }
        })
    };
    tokio::spawn(async move {
        // Before the first listing, so no stale worker is adopted.
        pool.drop_stale_workers().await;
        tokio::select! {
            () = pool.run(rx) => control::unbind(&socket),
            // The agent stops: its containers stay for the next one, which adopts them.
            _ = alive.changed() => {}
        }
        server.abort();
        ticker.abort();
    });
    Ok(tx)
}

/// The stub container's start time, in Unix nanoseconds.
async fn stub_started_ns(engine: &Docker, name: &str) -> Result<u64, String> {
    let inspected = engine
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .map_err(|e| format!("inspect {name}: {e}"))?;
    let at = inspected
        .state
        .and_then(|s| s.started_at)
        .unwrap_or_default();
    timestamp::unix_ns(&at).ok_or_else(|| format!("{name}: no start time in {at:?}"))
}

fn unix_ns_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

fn started_tier(t: Tier) -> bool {
    matches!(
        t,
        Tier::Starting | Tier::Warm | Tier::Pausing | Tier::Paused | Tier::Resuming
    )
}

impl Pool {
    async fn resolve_command(&mut self) {
        self.cmd = match (&self.rt.shim, &self.rt.command) {
            (None, _) => Ok(self.rt.command.clone()),
            (Some(_), _) if self.shim_binary.is_none() => {
                Err("the image needs the shim and the agent has no --shim-binary".into())
            }
            (Some(_), Some(_)) => Ok(container::command(&self.rt, Vec::new())),
            (Some(_), None) => container::image_command(&self.engine, &self.rt.image)
                .await
                .map(|own| container::command(&self.rt, own)),
        };
    }

    async fn run(&mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
        while let Some(input) = rx.recv().await {
            let stop = match input {
                Input::Shutdown => true,
                // Not one replayed from before the stub's current run.
                Input::StubDied(at) => at > self.stub_started_ns,
                _ => false,
            };
            if stop {
                self.shutdown(rx).await;
                return;
            }
            self.handle(input);
            self.publish();
        }
    }

    /// Workers left by a previous agent that were started before the stub's container last
    /// started: the stub process they registered with is gone. Removed before anything else.
    async fn drop_stale_workers(&mut self) {
        let stub_started = match stub_started_ns(&self.engine, &self.name).await {
            Ok(t) => t,
            Err(why) => {
                eprintln!("wepoq agent: stub {}: {why}", self.name);
                return;
            }
        };
        self.stub_started_ns = stub_started;
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{STUB_LABEL}={}", self.name)],
        )]);
        let Ok(listed) = self
            .engine
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
        else {
            return;
        };
        for c in listed {
            let state = c.state.map(|s| s.to_string()).unwrap_or_default();
            let Some(id) = c.id else { continue };
            if !matches!(state.as_str(), "running" | "paused") {
                continue;
            }
            let Ok(inspected) = self
                .engine
                .inspect_container(&id, None::<InspectContainerOptions>)
                .await
            else {
                continue;
            };
            let started = inspected
                .state
                .and_then(|s| s.started_at)
                .and_then(|t| timestamp::unix_ns(&t));
            if started.is_some_and(|t| t < stub_started) {
                eprintln!(
                    "wepoq agent: stub {}: removing worker {id}, started before the stub restarted",
                    self.name
                );
                let _ = container::remove(&self.engine, &id).await;
            }
        }
    }

    fn publish(&self) {
        let mut by_tier = [0u64; 3];
        for w in self.workers.values() {
            match w.tier {
                Tier::Stem => by_tier[0] += 1,
                Tier::Warm | Tier::Pausing | Tier::Starting => by_tier[1] += 1,
                Tier::Paused | Tier::Resuming => by_tier[2] += 1,
                Tier::Creating | Tier::Removing => {}
            }
        }
        self.metrics.set_pool(&self.name, Some(by_tier));
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Connected(generation, out) => {
                if self.served_before {
                    // A new connection in the same agent's life: a restarted stub, or the
                    // same one reconnecting. Its container's start time tells.
                    self.check_stub_start();
                }
                self.served_before = true;
                self.conn = Some((generation, out));
            }
            Input::StubStarted => self.check_stub_start(),
            Input::StubDied(_) => {}
            Input::Died { worker, why } => self.ended(&worker, why),
            Input::Disconnected(generation) => {
                if self.conn.as_ref().is_some_and(|(g, _)| *g == generation) {
                    self.conn = None;
                }
            }
            Input::Malformed(generation, why) => {
                if let Some((g, out)) = &self.conn
                    && *g == generation
                {
                    let _ = out.send(control::malformed(&why));
                }
            }
            Input::Request(generation, request) => {
                if !self.listed {
                    self.deferred.push((generation, request));
                } else if self.conn.as_ref().is_some_and(|(g, _)| *g == generation) {
                    self.request(generation, request);
                }
            }
            Input::Job(job) => self.done(job),
            Input::Listed(at, found) => {
                self.take_listing(at, found);
                if !self.listed {
                    self.listed = true;
                    for (generation, request) in std::mem::take(&mut self.deferred) {
                        if self.conn.as_ref().is_some_and(|(g, _)| *g == generation) {
                            self.request(generation, request);
                        }
                    }
                    self.replenish();
                }
            }
            Input::Tick => self.tick(),
            Input::Shutdown => {}
        }
    }

    fn send(&self, generation: u64, message: FromAgent) {
        if let Some((g, out)) = &self.conn
            && *g == generation
        {
            let _ = out.send(encode(&message));
        }
    }

    fn reply(&self, to: Option<(u64, u64)>, reply: impl FnOnce(u64) -> Reply) {
        if let Some((generation, id)) = to {
            self.send(generation, FromAgent::Reply(reply(id)));
        }
    }

    fn exited(&self, worker: &str, why: String) {
        if let Some((generation, _)) = &self.conn {
            self.send(
                *generation,
                FromAgent::Event(AgentEvent::Exited {
                    worker_id: worker.into(),
                    why,
                }),
            );
        }
    }

    fn request(&mut self, generation: u64, request: Request) {
        let to = Some((generation, request.id()));
        match request {
            Request::Hello { .. } => self.reply(to, Reply::ok),
            Request::Spawn { .. } => self.spawn(to),
            Request::Stop { worker_id, .. } => {
                if self.workers.contains_key(&worker_id) {
                    self.remove(&worker_id, to);
                } else {
                    self.reply(to, Reply::ok);
                }
            }
            Request::Pause { worker_id, .. } => match self.workers.get_mut(&worker_id) {
                Some(w) if w.tier == Tier::Warm => {
                    w.tier = Tier::Pausing;
                    let c = w.container.clone().unwrap_or_default();
                    self.job(worker_id, to, move |e, _| async move {
                        Done::Paused(
                            e.pause_container(&c)
                                .await
                                .map_err(|e| format!("pause: {e}")),
                        )
                    });
                }
                Some(w) if w.tier == Tier::Paused => self.reply(to, Reply::ok),
                Some(w) => {
                    let why = format!("worker is {:?}, not running", w.tier);
                    self.reply(to, |id| Reply::error(id, why));
                }
                None => self.reply(to, |id| Reply::error(id, "no such worker")),
            },
            Request::Resume { worker_id, .. } => match self.workers.get_mut(&worker_id) {
                Some(w) if w.tier == Tier::Paused => {
                    w.tier = Tier::Resuming;
                    let c = w.container.clone().unwrap_or_default();
                    self.job(worker_id, to, move |e, m| async move {
                        let t = Instant::now();
                        let r = e.unpause_container(&c).await;
                        m.unpause_latency.observe(t.elapsed());
                        Done::Resumed {
                            result: r.map_err(|e| format!("unpause: {e}")),
                            unpause_us: us(t.elapsed()),
                        }
                    });
                }
                Some(w) if w.tier == Tier::Warm => self.reply(to, Reply::ok),
                Some(w) => {
                    let why = format!("worker is {:?}, not paused", w.tier);
                    self.reply(to, |id| Reply::error(id, why));
                }
                None => self.reply(to, |id| Reply::error(id, "no such worker")),
            },
        }
    }

    fn job<F, Fut>(&mut self, worker: String, reply: Option<(u64, u64)>, f: F)
    where
        F: FnOnce(Docker, Arc<Metrics>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Done> + Send,
    {
        self.jobs += 1;
        let (engine, metrics, inputs) = (
            self.engine.clone(),
            self.metrics.clone(),
            self.inputs.clone(),
        );
        tokio::spawn(async move {
            let done = f(engine, metrics).await;
            let _ = inputs.send(Input::Job(Job {
                worker,
                reply,
                done,
            }));
        });
    }

    fn new_worker_id(&mut self) -> String {
        self.counter += 1;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        format!("c-{:x}{:02x}", nanos & 0xff_ffff_ffff, self.counter & 0xff)
    }

    fn count(&self, f: impl Fn(Tier) -> bool) -> usize {
        self.workers.values().filter(|w| f(w.tier)).count()
    }

    fn backing_off(&self) -> Option<Duration> {
        self.backoff_until
            .and_then(|t| t.checked_duration_since(Instant::now()))
    }

    fn spawn(&mut self, to: Option<(u64, u64)>) {
        let cmd = match &self.cmd {
            Ok(cmd) => cmd.clone(),
            Err(why) => {
                let why = why.clone();
                self.metrics.count_error("spawn_refused");
                return self.reply(to, |id| Reply::error(id, why));
            }
        };
        if let Some(wait) = self.backing_off() {
            self.metrics.count_error("spawn_refused");
            let why = format!(
                "image {} is failing ({}); next try in {:.1}s",
                self.rt.image,
                self.last_failure,
                wait.as_secs_f64()
            );
            return self.reply(to, |id| Reply::error(id, why));
        }
        if self.count(started_tier) >= self.rt.max_workers.max(1) {
            self.metrics.count_error("spawn_refused");
            let why = format!("max_workers ({}) reached", self.rt.max_workers);
            return self.reply(to, |id| Reply::error(id, why));
        }
        let stem = self
            .workers
            .iter()
            .find(|(_, w)| w.tier == Tier::Stem)
            .map(|(id, w)| (id.clone(), w.container.clone()));
        let (worker, existing, body) = match stem {
            Some((id, container)) => (id, container, None),
            None => {
                let id = self.new_worker_id();
                let body = self.body(&id, cmd);
                self.workers.insert(
                    id.clone(),
                    Worker {
                        container: None,
                        tier: Tier::Starting,
                        since: Instant::now(),
                        started: None,
                        started_ns: 0,
                    },
                );
                (id, None, Some(body))
            }
        };
        if let Some(w) = self.workers.get_mut(&worker) {
            w.tier = Tier::Starting;
        }
        let name = format!("{}-{worker}", self.name);
        self.job(worker, to, move |e, m| async move {
            let asked_ns = unix_ns_now();
            let (container, create_us) = match (existing, body) {
                (Some(c), _) => (c, None),
                (None, Some(body)) => {
                    let t = Instant::now();
                    match container::create(&e, &name, body).await {
                        Ok(c) => {
                            m.create_latency.observe(t.elapsed());
                            (c, Some(us(t.elapsed())))
                        }
                        Err(why) => {
                            return Done::Started {
                                container: None,
                                result: Err(why),
                                asked_ns,
                                create_us: None,
                                start_us: 0,
                            };
                        }
                    }
                }
                (None, None) => unreachable!("a spawn has a stem cell or a create body"),
            };
            let t = Instant::now();
            let result = container::start(&e, &container).await;
            m.start_latency.observe(t.elapsed());
            Done::Started {
                container: Some(container),
                result,
                asked_ns,
                create_us,
                start_us: us(t.elapsed()),
            }
        });
        self.replenish();
    }

    fn body(&self, worker: &str, cmd: Option<Vec<String>>) -> bollard::models::ContainerCreateBody {
        container::create_body(
            &self.rt,
            &self.dir,
            self.shim_binary.as_deref(),
            container::worker_labels(&self.name, &self.labels, worker),
            worker,
            cmd,
        )
    }

    /// Keeps `precreate` stem cells ready (not while the image is failing).
    fn replenish(&mut self) {
        let Ok(cmd) = self.cmd.clone() else { return };
        if !self.listed {
            return;
        }
        if self.backing_off().is_some() {
            return;
        }
        while self.count(|t| matches!(t, Tier::Stem | Tier::Creating)) < self.rt.precreate {
            let worker = self.new_worker_id();
            let body = self.body(&worker, cmd.clone());
            self.workers.insert(
                worker.clone(),
                Worker {
                    container: None,
                    tier: Tier::Creating,
                    since: Instant::now(),
                    started: None,
                    started_ns: 0,
                },
            );
            let name = format!("{}-{worker}", self.name);
            self.job(worker, None, move |e, m| async move {
                let t = Instant::now();
                let r = container::create(&e, &name, body).await;
                if r.is_ok() {
                    m.create_latency.observe(t.elapsed());
                }
                Done::Created(r)
            });
        }
    }

    fn remove(&mut self, worker: &str, to: Option<(u64, u64)>) {
        let Some(w) = self.workers.get_mut(worker) else {
            return self.reply(to, Reply::ok);
        };
        w.tier = Tier::Removing;
        let container = w.container.clone();
        self.job(worker.into(), to, move |e, _| async move {
            Done::Removed(match container {
                Some(c) => container::remove(&e, &c).await,
                None => Ok(()),
            })
        });
    }

    fn fail(&mut self, why: String) {
        self.failures += 1;
        let wait = Duration::from_millis(1000u64 << self.failures.min(6).saturating_sub(1))
            .min(Duration::from_secs(30));
        self.backoff_until = Some(Instant::now() + wait);
        eprintln!(
            "wepoq agent: stub {}: {why} (failure {}, spawns refused for {:.1}s)",
            self.name,
            self.failures,
            wait.as_secs_f64()
        );
        self.last_failure = why;
    }

    fn done(&mut self, job: Job) {
        self.jobs -= 1;
        let Job {
            worker,
            reply,
            done,
        } = job;
        match done {
            Done::Created(Ok(c)) => match self.workers.get_mut(&worker) {
                Some(w) if w.tier == Tier::Creating => {
                    w.container = Some(c);
                    w.tier = Tier::Stem;
                    w.since = Instant::now();
                }
                // Removed while being created (the stub went away): the container goes too.
                _ => {
                    let engine = self.engine.clone();
                    tokio::spawn(async move { container::remove(&engine, &c).await });
                }
            },
            Done::Created(Err(why)) => {
                self.metrics.count_error("docker");
                self.workers.remove(&worker);
                self.fail(format!("cannot create a worker: {why}"));
            }
            Done::Started {
                container,
                result,
                asked_ns,
                create_us,
                start_us,
            } => {
                let ok = result.is_ok();
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.container = container.or(w.container.take());
                    if ok && w.tier == Tier::Starting {
                        w.tier = Tier::Warm;
                        w.started = Some(Instant::now());
                        w.started_ns = asked_ns;
                        w.since = Instant::now();
                    }
                }
                match result {
                    Ok(()) => self.reply(reply, |id| Reply {
                        create_us,
                        start_us: Some(start_us),
                        ..Reply::spawned(id, worker.clone())
                    }),
                    Err(why) => {
                        self.metrics.count_error("docker");
                        self.remove(&worker, None);
                        self.fail(format!("cannot start a worker: {why}"));
                        self.reply(reply, |id| Reply::error(id, why));
                    }
                }
            }
            Done::StubInspected(Ok(at)) => {
                if at > self.stub_started_ns {
                    let known = self.stub_started_ns;
                    self.stub_started_ns = at;
                    if known != 0 {
                        self.drop_workers_started_before(at);
                    }
                }
            }
            Done::StubInspected(Err(why)) => {
                self.metrics.count_error("docker");
                eprintln!("wepoq agent: stub {}: {why}", self.name);
            }
            Done::Resumed { result, unpause_us } => {
                self.thawed_or_frozen(&worker, reply, result, |id| Reply {
                    unpause_us: Some(unpause_us),
                    ..Reply::ok(id)
                })
            }
            Done::Paused(result) => self.thawed_or_frozen(&worker, reply, result, Reply::ok),
            Done::Removed(result) => {
                let was = self.workers.remove(&worker);
                match result {
                    Ok(()) => {
                        if was.is_some_and(|w| w.started.is_some()) {
                            self.exited(&worker, "removed".into());
                        }
                        self.reply(reply, Reply::ok)
                    }
                    Err(why) => {
                        self.metrics.count_error("docker");
                        self.reply(reply, |id| Reply::error(id, why));
                    }
                }
            }
        }
    }

    /// A pause or unpause came back: the worker's tier follows, the stub gets `ok`.
    fn thawed_or_frozen(
        &mut self,
        worker: &str,
        reply: Option<(u64, u64)>,
        result: Result<(), String>,
        ok: impl FnOnce(u64) -> Reply,
    ) {
        let done = result.is_ok();
        if let Some(w) = self.workers.get_mut(worker) {
            w.tier = match (w.tier, done) {
                (Tier::Pausing, true) => Tier::Paused,
                (Tier::Pausing, false) => Tier::Warm,
                (Tier::Resuming, true) => Tier::Warm,
                (Tier::Resuming, false) => Tier::Paused,
                (t, _) => t,
            };
        }
        match result {
            Ok(()) => self.reply(reply, ok),
            Err(why) => {
                self.metrics.count_error("docker");
                self.reply(reply, |id| Reply::error(id, why));
            }
        }
    }

    /// Asks Docker when the stub's container started; a newer start than the pool knows
    /// is a restarted stub (see [`Pool::drop_workers_started_before`]).
    fn check_stub_start(&mut self) {
        let name = self.name.clone();
        self.job(String::new(), None, move |e, _| async move {
            Done::StubInspected(stub_started_ns(&e, &name).await)
        });
    }

    /// The stub restarted at `at`: the workers started before hold a socket to its previous
    /// process (or sit paused for it) and the new one knows none of them. Removed; the new
    /// stub asks for fresh ones.
    fn drop_workers_started_before(&mut self, at: u64) {
        let stale: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| started_tier(w.tier) && w.started_ns < at)
            .map(|(id, _)| id.clone())
            .collect();
        if !stale.is_empty() {
            eprintln!(
                "wepoq agent: stub {} restarted: removing {} worker(s) of its previous process",
                self.name,
                stale.len()
            );
        }
        for id in stale {
            self.remove(&id, None);
        }
    }

    /// A worker's container ended (event or listing): reported to the stub and removed; one
    /// that ended right after its start counts against the image.
    fn ended(&mut self, worker: &str, why: String) {
        let Some(w) = self.workers.get_mut(worker) else {
            return;
        };
        if !matches!(
            w.tier,
            Tier::Warm | Tier::Paused | Tier::Pausing | Tier::Resuming
        ) {
            // Starting: the listing after the start catches it. Removing: ours.
            return;
        }
        let started = w.started.take(); // reported now, not again when removed
        if started.is_some_and(|s| s.elapsed() < CRASH_WINDOW) {
            self.fail(format!("worker {worker} {why} right after its start"));
        }
        self.metrics.count_error("worker_exited");
        if started.is_some() {
            self.exited(worker, why);
        }
        self.remove(worker, None);
    }

    fn take_listing(&mut self, at: Instant, found: Vec<Found>) {
        let mut seen = std::collections::HashSet::new();
        for f in found {
            seen.insert(f.worker.clone());
            let ended = matches!(f.state.as_str(), "exited" | "dead");
            match self.workers.get(&f.worker).map(|w| (w.tier, w.started)) {
                None => {
                    // Made by a previous agent: adopted as it is, or removed once ended.
                    let tier = match f.state.as_str() {
                        "created" => Tier::Stem,
                        "running" => Tier::Warm,
                        "paused" => Tier::Paused,
                        _ => Tier::Removing,
                    };
                    self.workers.insert(
                        f.worker.clone(),
                        Worker {
                            container: Some(f.container),
                            tier,
                            since: Instant::now(),
                            started: (tier != Tier::Stem).then(Instant::now),
                            // Started before this pool; a stale one was removed at its start.
                            started_ns: 0,
                        },
                    );
                    if tier == Tier::Removing {
                        self.remove(&f.worker, None);
                    }
                }
                Some((Tier::Warm | Tier::Paused, _)) if ended => {
                    self.ended(&f.worker, f.status.to_lowercase());
                }
                // A stem cell found started: a previous agent's spawn that finished after it
                // stopped, for a request the stub saw fail. Nobody uses it: removed.
                Some((Tier::Stem, _)) if f.state != "created" => self.remove(&f.worker, None),
                Some(_) => {}
            }
        }
        // Containers removed behind the pool's back.
        let gone: Vec<String> = self
            .workers
            .iter()
            .filter(|(id, w)| {
                !seen.contains(*id)
                    && w.since < at
                    && matches!(w.tier, Tier::Stem | Tier::Warm | Tier::Paused)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(w) = self.workers.remove(&id)
                && w.started.is_some()
            {
                self.exited(&id, "container removed".into());
            }
        }
    }

    fn tick(&mut self) {
        // A worker that outlived the crash window clears the image's failures.
        if self.failures > 0
            && self.workers.values().any(|w| {
                w.tier == Tier::Warm && w.started.is_some_and(|s| s.elapsed() >= CRASH_WINDOW)
            })
        {
            self.failures = 0;
        }
        self.replenish();
        let (engine, name, inputs) = (self.engine.clone(), self.name.clone(), self.inputs.clone());
        tokio::spawn(async move {
            let at = Instant::now();
            let filters =
                HashMap::from([("label".to_owned(), vec![format!("{STUB_LABEL}={name}")])]);
            let Ok(listed) = engine
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(filters),
                    ..Default::default()
                }))
                .await
            else {
                return;
            };
            let found = listed
                .into_iter()
                .filter_map(|c| {
                    Some(Found {
                        worker: c.labels?.get(WORKER_LABEL)?.clone(),
                        container: c.id?,
                        state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                        status: c.status.unwrap_or_default(),
                    })
                })
                .collect();
            let _ = inputs.send(Input::Listed(at, found));
        });
    }

    /// The stub is gone: every worker goes too, and whatever a Docker job still in flight
    /// makes (a stem cell being created as the stub went was once left behind).
    async fn shutdown(&mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
        for (_, w) in self.workers.drain() {
            if let Some(c) = w.container {
                let _ = container::remove(&self.engine, &c).await;
            }
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_JOBS;
        while self.jobs > 0 {
            let Ok(Some(input)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
                break;
            };
            let Input::Job(job) = input else { continue };
            self.jobs -= 1;
            let made = match job.done {
                Done::Created(Ok(c)) => Some(c),
                Done::Started { container, .. } => container,
                _ => None,
            };
            if let Some(c) = made {
                let _ = container::remove(&self.engine, &c).await;
            }
        }
        self.metrics.set_pool(&self.name, None);
        eprintln!("wepoq agent: stub {} gone, its workers removed", self.name);
    }
}
