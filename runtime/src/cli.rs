//! The runtime's command-line surface, flattened into the `wepoq` CLI and `wepoq-runtime`.

use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::example_worker::ExampleMode;
use crate::process_backend::ProcessBackend;
use crate::remote_backend::RemoteBackend;
use crate::shim::ShimMode;
use crate::stub::control::CredentialPolicy;
use crate::stub::{Protocol, StubConfig};

/// Commands that run on the data plane (inside an endpoint's namespace or a container).
// Parsed once per process: the size of the stub's arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, clap::Subcommand)]
pub enum RuntimeCommand {
    /// Accept connections and hand them to warm workers
    Stub(StubArgs),
    /// Run an unmodified program per connection (systemd socket activation or inetd)
    Shim(ShimArgs),
    /// An example warm worker (echo or a small HTTP responder)
    ExampleWorker(ExampleWorkerArgs),
    /// A tiny endpoint for examples and tests: a server that names itself, a client that
    /// resolves through the endpoint's nameserver
    #[command(subcommand)]
    Probe(crate::probe::ProbeCommand),
}

#[derive(Debug, clap::Args)]
pub struct StubArgs {
    /// Address to serve, IP:PORT or IP:PORT/tcp (accept and hand each connection over) or
    /// IP:PORT/udp (hand the bound socket to a worker on the first datagram); repeatable
    #[arg(long, required = true, value_parser = parse_listen)]
    pub listen: Vec<Listen>,
    /// The service's fully qualified name, passed to workers
    #[arg(long, default_value = "service.local")]
    pub fqdn: String,
    /// How to refuse when the queue is full
    #[arg(long, value_enum, default_value_t = Protocol::Tcp)]
    pub protocol: Protocol,
    /// Directory of the worker socket (created 0700)
    #[arg(long, default_value = "/run/wepoq")]
    pub socket_dir: PathBuf,
    /// uid allowed to register as a worker (repeatable; default: our own)
    #[arg(long)]
    pub allow_uid: Vec<u32>,
    /// gid allowed to register as a worker (repeatable)
    #[arg(long)]
    pub allow_gid: Vec<u32>,
    /// Connections one worker takes at a time
    #[arg(long, default_value_t = 1)]
    pub concurrency: u32,
    /// Connections that may wait for a worker before the stub refuses
    #[arg(long, default_value_t = 1024)]
    pub queue: usize,
    #[arg(long, default_value_t = 0)]
    pub min_workers: usize,
    #[arg(long, default_value_t = 8)]
    pub max_workers: usize,
    /// Idle time before a worker is marked for sweeping (e.g. 60s, 500ms)
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub idle_timeout: Duration,
    /// Time a marked idle worker survives before it is stopped
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub sweep_grace: Duration,
    /// Idle time before a warm worker is paused (no CPU until a connection comes for it);
    /// 0 never pauses
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub pause_after: Duration,
    /// Longest wait in the queue
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub queue_timeout: Duration,
    /// Deadline handed to the worker, from accept
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub conn_timeout: Duration,
    /// Longest time for a started worker to register
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub start_timeout: Duration,
    /// Longest graceful drain on SIGTERM
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub drain_timeout: Duration,
    /// Local address for Prometheus metrics (GET /metrics)
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// File for per-connection JSON lines (`-` for stdout)
    #[arg(long)]
    pub records: Option<PathBuf>,
    /// File kept up to date with `{"listening":true,"registered":N,"pid":P}` once the stub
    /// listens (what `wepoq apply` waits on)
    #[arg(long, value_name = "FILE")]
    pub status_file: Option<PathBuf>,
    /// Keep workers in the stub's network namespace even when root
    #[arg(long)]
    pub no_isolate_network: bool,
    /// Pin the stub and its process workers to these CPUs (e.g. 1 or 0-1 or 0,2): handoffs
    /// then wake a worker on the stub's own core instead of another, idle one
    #[arg(long, value_parser = parse_cpus)]
    pub cpus: Option<CpuList>,
    /// The host agent's control socket: workers are asked of the agent over the control
    /// protocol instead of started here as processes
    #[arg(long, conflicts_with = "worker")]
    pub control: Option<PathBuf>,
    /// This stub's name in its hello to the agent (default: --fqdn)
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The worker command the process backend starts, after `--` (not with --control)
    #[arg(last = true, required_unless_present = "control")]
    pub worker: Vec<OsString>,
}

#[derive(Debug, clap::Args)]
pub struct ShimArgs {
    /// Where the program finds its connection
    #[arg(long, value_enum, default_value_t = ShimMode::Systemd)]
    pub mode: ShimMode,
    /// The program and its arguments, after `--`
    #[arg(last = true, required = true)]
    pub program: Vec<OsString>,
}

#[derive(Debug, clap::Args)]
pub struct ExampleWorkerArgs {
    #[arg(long, value_enum, default_value_t = ExampleMode::Echo)]
    pub mode: ExampleMode,
    /// Pretend each connection takes this long (e.g. 200ms)
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub delay: Duration,
}

/// One `--listen` address and its transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Udp(SocketAddr),
}

/// Parses `IP:PORT`, `IP:PORT/tcp` or `IP:PORT/udp` (IPv6 as `[::1]:53/udp`).
fn parse_listen(s: &str) -> Result<Listen, String> {
    let (addr, proto) = match s.rsplit_once('/') {
        Some((a, p)) => (a, p),
        None => (s, "tcp"),
    };
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("bad address {addr:?} (IP:PORT, optionally /tcp or /udp)"))?;
    match proto {
        "tcp" => Ok(Listen::Tcp(addr)),
        "udp" => Ok(Listen::Udp(addr)),
        other => Err(format!("unknown transport {other:?} in {s:?} (tcp or udp)")),
    }
}

/// A set of CPU numbers, as `taskset -c` takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// Parses a CPU list such as `1`, `0-3` or `0,2`.
fn parse_cpus(s: &str) -> Result<CpuList, String> {
    let mut cpus = Vec::new();
    for part in s.split(',') {
        let bad = || format!("bad cpu list {s:?}");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(CpuList(cpus))
}

/// Parses `250ms`, `2s`, `1m` or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (us, ms, s, m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Runs one runtime command to completion.
pub fn run(command: RuntimeCommand) -> ExitCode {
    match command {
        RuntimeCommand::Stub(args) => run_stub(args),
        RuntimeCommand::Shim(args) => match crate::shim::run(args.mode, &args.program) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => report(&e),
        },
        RuntimeCommand::Probe(command) => match crate::probe::run(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => report(&e),
        },
        RuntimeCommand::ExampleWorker(args) => {
            match crate::example_worker::run(args.mode, args.delay) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => report(&e),
            }
        }
    }
}

fn report(e: &dyn std::error::Error) -> ExitCode {
    let mut msg = format!("error: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    eprintln!("{msg}");
    ExitCode::FAILURE
}

fn run_stub(args: StubArgs) -> ExitCode {
    let mut policy = CredentialPolicy {
        uids: args.allow_uid,
        gids: args.allow_gid,
    };
    if policy.uids.is_empty() && policy.gids.is_empty() {
        policy.uids.push(nix::unistd::geteuid().as_raw());
    }
    let (mut listen, mut udp) = (Vec::new(), Vec::new());
    for l in args.listen {
        match l {
            Listen::Tcp(a) => listen.push(a),
            Listen::Udp(a) => udp.push(a),
        }
    }
    let config = StubConfig {
        listen,
        udp,
        fqdn: args.fqdn,
        protocol: args.protocol,
        socket_dir: args.socket_dir,
        policy,
        concurrency: args.concurrency,
        queue_limit: args.queue,
        min_workers: args.min_workers,
        max_workers: args.max_workers,
        idle_timeout: args.idle_timeout,
        sweep_grace: args.sweep_grace,
        pause_after: args.pause_after,
        queue_timeout: args.queue_timeout,
        conn_timeout: args.conn_timeout,
        start_timeout: args.start_timeout,
        drain_timeout: args.drain_timeout,
        admin: args.admin,
        records: args.records,
        status_file: args.status_file,
    };
    if let Some(CpuList(cpus)) = &args.cpus {
        // Set before anything starts: workers inherit the mask through fork.
        let mut set = nix::sched::CpuSet::new();
        for &cpu in cpus {
            if set.set(cpu).is_err() {
                eprintln!("error: cpu {cpu} is out of range");
                return ExitCode::FAILURE;
            }
        }
        if let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set) {
            return report(&e);
        }
    }
    // One runtime thread is plenty: the hot path (accept, handoff, done reports) runs on the
    // stub's own dispatcher thread; the runtime only registers workers, talks to the backend,
    // serves the admin endpoint and waits for signals.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return report(&e),
    };
    let backend: Arc<dyn crate::backend::WorkerBackend> = match args.control {
        Some(path) => {
            let endpoint = args.endpoint.unwrap_or_else(|| config.fqdn.clone());
            let _enter = runtime.enter();
            Arc::new(RemoteBackend::start(path, endpoint))
        }
        None => {
            let mut worker = args.worker.into_iter();
            let program = PathBuf::from(worker.next().expect("clap requires a worker command"));
            let isolate = !args.no_isolate_network && ProcessBackend::can_isolate_network();
            if !isolate && !args.no_isolate_network {
                eprintln!("wepoq-stub: not root, so workers share the stub's network namespace");
            }
            match ProcessBackend::new(program, worker.collect(), isolate) {
                Ok(b) => Arc::new(b),
                Err(e) => {
                    // Fail closed: a root stub that cannot isolate its workers must not run them.
                    eprintln!(
                        "error: cannot make an empty network namespace for workers: {e} \
                         (--no-isolate-network runs them in the stub's own)"
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let result = runtime.block_on(crate::stub::run(config, backend, |ready| {
        let listen: Vec<String> = ready.listen.iter().map(|a| a.to_string()).collect();
        let udp: Vec<String> = ready.udp.iter().map(|a| a.to_string()).collect();
        let admin = ready
            .admin
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into());
        // Machine-readable, so whoever started us (tests, scripts) learns the bound ports.
        eprintln!(
            "wepoq-stub ready listen={} udp={} admin={admin} socket={}",
            listen.join(","),
            udp.join(","),
            ready.socket.display()
        );
        let _ = std::io::stderr().flush();
    }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn listen_addresses_take_a_transport() {
        let a: SocketAddr = "10.0.0.1:7001".parse().unwrap();
        assert_eq!(parse_listen("10.0.0.1:7001"), Ok(Listen::Tcp(a)));
        assert_eq!(parse_listen("10.0.0.1:7001/tcp"), Ok(Listen::Tcp(a)));
        assert_eq!(parse_listen("10.0.0.1:7001/udp"), Ok(Listen::Udp(a)));
        assert_eq!(
            parse_listen("[::1]:53/udp"),
            Ok(Listen::Udp("[::1]:53".parse().unwrap()))
        );
        assert!(
            parse_listen("10.0.0.1:7001/sctp")
                .unwrap_err()
                .contains("sctp")
        );
        assert!(parse_listen("nowhere:1").is_err());
    }

    #[test]
    fn cpu_lists_take_ranges() {
        assert_eq!(parse_cpus("1"), Ok(CpuList(vec![1])));
        assert_eq!(parse_cpus("0-2,5"), Ok(CpuList(vec![0, 1, 2, 5])));
        assert!(parse_cpus("3-1").is_err());
        assert!(parse_cpus("x").is_err());
    }
}
