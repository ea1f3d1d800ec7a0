//! The `wepoq.yaml` language as Rust types: what serde deserializes and what the JSON Schema
//! is generated from. Doc comments here become the schema's descriptions.
//!
//! Values whose syntax needs a precise diagnostic (names, CIDRs, ports, durations) stay
//! strings here; `lower` parses them and points at the exact text when they are wrong.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const DEFAULT_DOMAIN: &str = "wepoq.net";

/// A wepoq namespace: the application network one file describes.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "wepoq.yaml", extend("$id" = "https://wepoq.net/schema/wepoq.schema.json"))]
pub struct Spec {
    /// The namespace: one DNS label (lower case letters, digits and `-`). It is the label
    /// before the domain in every name, e.g. `ns` in `vip.svr.result.ovn-vote.ns.wepoq.net`.
    pub namespace: String,
    /// The DNS domain under which the namespace's names live.
    #[serde(default = "default_domain")]
    pub domain: String,
    /// The namespace's IPv4 network in CIDR notation, e.g. `10.64.0.0/16`. Every service side
    /// gets a subnet carved out of it; its first /28 is kept for the namespace's own use.
    pub network: String,
    /// Services at namespace level, such as a namespace controller `ctl`.
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    /// Apps: scopes that hold services and, nested, further scopes (an app's rooms).
    #[serde(default)]
    pub apps: BTreeMap<String, Scope>,
}

/// A scope (an app, or a scope inside one): a DNS label holding services and sub-scopes.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Services in this scope, by name (a DNS label).
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    /// Nested scopes, by name (a DNS label).
    #[serde(default)]
    pub scopes: BTreeMap<String, Scope>,
}

/// A service: servers behind a load-balanced VIP, and the clients that call it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// The server side: endpoints `s1..sN` behind `vip.svr.<service>...`.
    pub svr: Server,
    /// The client side: endpoints `c1..cN` that call this service. Absent means no clients.
    #[serde(default)]
    pub cli: Option<Client>,
}

/// The server side of a service.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// How many server endpoints (`s1..sN`) the VIP balances over.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1024))]
    pub replicas: u32,
    /// Ports the servers listen on, as `PORT/PROTO` with PROTO `tcp` or `udp`, e.g. `80/tcp`.
    #[schemars(length(min = 1), inner(regex(pattern = r"^[0-9]{1,5}/(tcp|udp)$")))]
    pub ports: Vec<String>,
    /// Other services the servers may call (see `cli.calls` for how names resolve).
    #[serde(default)]
    pub calls: Vec<String>,
    /// The servers reach each other (any port): a peer-to-peer side. Each resolves the
    /// others' names through OVN's DNS; nobody else gains anything.
    #[serde(default)]
    pub peers: bool,
    /// How the servers run as functions behind wepoq's stub; absent when the endpoints are
    /// managed elsewhere.
    #[serde(default)]
    pub runtime: Option<Runtime>,
    /// Runs each server endpoint (`s1..sN`) as one long-lived container attached to its
    /// logical port; absent when the endpoints are started elsewhere (they join by label).
    #[serde(default)]
    pub container: Option<Container>,
}

/// The client side of a service.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Client {
    /// How many client endpoints (`c1..cN`).
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 65535))]
    pub replicas: u32,
    /// Other services these clients may call, besides their own. A bare name (`db`) is looked
    /// up in the caller's scope, then in each enclosing scope; a path (`ovn-vote/db`) is taken
    /// from the namespace.
    #[serde(default)]
    pub calls: Vec<String>,
    /// The clients reach each other (any port): a peer-to-peer side, such as the players of
    /// one room. Each resolves the others' names through OVN's DNS; nobody else gains anything.
    #[serde(default)]
    pub peers: bool,
    /// Runs each client endpoint (`c1..cN`) as one long-lived container attached to its
    /// logical port; absent when the endpoints are started elsewhere (they join by label).
    #[serde(default)]
    pub container: Option<Container>,
    /// The clients connect from hosts outside the cluster (`wepoq connect`): each endpoint is
    /// a child port, with its own VLAN tag, of the logical trunk port of a gateway, whose
    /// agent carries the client's frames from its host over an encrypted tunnel.
    #[serde(default)]
    pub external: bool,
    /// The gateway whose logical trunk carries these external clients (a DNS label; the
    /// host agent started with `--gateway NAME` serves it). Default `gw`.
    #[serde(default)]
    pub gateway: Option<String>,
}

/// A long-lived container per endpoint of a side: wepoq creates it, gives it the endpoint's
/// OVN interface (MAC, IP, routes, OVN's DNS as resolver) and keeps it running.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Container {
    /// The image, present on the Docker host (built locally; no registry is assumed).
    #[schemars(length(min = 1))]
    pub image: String,
    /// Replaces the image's entrypoint.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's command (the arguments to its entrypoint).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Environment variables, by name.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The user to run as: `UID`, `UID:GID` or a name the image knows.
    #[serde(default)]
    pub user: Option<String>,
    /// Memory limit: bytes, or a number with `Ki`, `Mi`, `Gi` (or `k`, `M`, `G`), e.g. `64Mi`.
    #[serde(default)]
    #[schemars(regex(pattern = r"^[0-9]+(|k|Ki|M|Mi|G|Gi)$"))]
    pub memory: Option<String>,
    /// CPU limit in CPUs, e.g. `0.5`.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Also keep Docker's default network (outbound access through the host). Without it
    /// the container's only network is its OVN interface.
    #[serde(default)]
    pub docker_network: bool,
}

/// Settings for the stub and warm pool that serve a server endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// The worker image (built locally; no registry is assumed).
    #[schemars(length(min = 1))]
    pub image: String,
    /// Workers kept warm when idle (0 allows scale to zero).
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 1024))]
    pub min_warm: u32,
    /// The most workers one endpoint runs.
    #[serde(default = "default_max_workers")]
    #[schemars(range(min = 1, max = 4096))]
    pub max_workers: u32,
    /// Connections one worker serves at once.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1024))]
    pub concurrency: u32,
    /// How long a worker stays idle before it is swept, e.g. `30s`, `5m`, `1h`, `250ms`.
    #[serde(default = "default_idle_timeout")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h)$"))]
    pub idle_timeout: String,
    /// Connections queued while every worker is busy; beyond it the stub refuses (HTTP 429
    /// or a close).
    #[serde(default = "default_queue")]
    #[schemars(range(min = 0, max = 65536))]
    pub queue: u32,
    /// Replaces the worker image's command (the arguments to its entrypoint).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Worker containers created ahead and not started ("stem cells"), so that a cold start
    /// is a container start, not a create.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 64))]
    pub precreate: u32,
    /// A warm worker idle this long is paused (no CPU until a connection comes for it);
    /// `0s` never pauses.
    #[serde(default = "default_pause_after")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h)$"))]
    pub pause_after: String,
    /// Memory limit of each worker container: bytes, or a number with `Ki`, `Mi`, `Gi` (or
    /// `k`, `M`, `G`).
    #[serde(default = "default_worker_memory")]
    #[schemars(regex(pattern = r"^[0-9]+(|k|Ki|M|Mi|G|Gi)$"))]
    pub memory: String,
    /// CPU limit of each worker container in CPUs, e.g. `0.5`.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Processes (and threads) each worker container may run.
    #[serde(default = "default_pids")]
    #[schemars(range(min = 1, max = 65536))]
    pub pids: u32,
    /// The numeric `UID:GID` workers run as; never root. The stub admits that uid alone on
    /// its socket.
    #[serde(default = "default_worker_user")]
    #[schemars(regex(pattern = r"^[0-9]+:[0-9]+$"))]
    pub user: String,
    /// Serve an unmodified image: its own entrypoint and command run under wepoq's shim,
    /// which hands each connection over as systemd socket activation does (`LISTEN_FDS=1`,
    /// fd 3) or as inetd does (stdin and stdout). Absent for images built on the worker
    /// library.
    #[serde(default)]
    pub shim: Option<ShimMode>,
    /// How the stub refuses a connection it cannot serve: `http` answers 429 or 503 with
    /// `Retry-After`, `tcp` closes it.
    #[serde(default)]
    pub protocol: RefusalProtocol,
}

/// How an unmodified worker image receives its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ShimMode {
    Systemd,
    Inetd,
}

/// How the stub refuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RefusalProtocol {
    #[default]
    Tcp,
    Http,
}

impl ShimMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            ShimMode::Systemd => "systemd",
            ShimMode::Inetd => "inetd",
        }
    }
}

impl RefusalProtocol {
    pub fn as_str(&self) -> &'static str {
        match self {
            RefusalProtocol::Tcp => "tcp",
            RefusalProtocol::Http => "http",
        }
    }
}

fn default_domain() -> String {
    DEFAULT_DOMAIN.to_string()
}
fn one() -> u32 {
    1
}
fn default_max_workers() -> u32 {
    8
}
fn default_idle_timeout() -> String {
    "5m".to_string()
}
fn default_queue() -> u32 {
    64
}
fn default_pause_after() -> String {
    "2s".to_string()
}
fn default_worker_memory() -> String {
    "64Mi".to_string()
}
fn default_pids() -> u32 {
    64
}
fn default_worker_user() -> String {
    "65534:65534".to_string()
}
