//! The checked, lowered form of a spec: what every later stage reads.

use std::fmt;

use crate::cidr::Ipv4Net;
use crate::source::{FileId, Span};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(&self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    pub proto: Proto,
    pub number: u16,
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.number, self.proto.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SideKind {
    Svr,
    Cli,
}

impl SideKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            SideKind::Svr => "svr",
            SideKind::Cli => "cli",
        }
    }

    /// Endpoint label prefix: `s1`, `c1`.
    pub fn endpoint_prefix(&self) -> char {
        match self {
            SideKind::Svr => 's',
            SideKind::Cli => 'c',
        }
    }
}

/// Index of a service in [`Namespace::services`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId(pub usize);

/// How a server endpoint runs behind wepoq's stub (the spec's `runtime`, checked).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Runtime {
    pub image: String,
    pub min_warm: u32,
    pub max_workers: u32,
    pub concurrency: u32,
    pub idle_timeout_ms: u64,
    pub queue: u32,
    pub command: Option<Vec<String>>,
    pub precreate: u32,
    /// 0: never pause.
    pub pause_after_ms: u64,
    pub memory_bytes: i64,
    /// CPUs in billionths, as Docker's `NanoCpus`.
    pub nano_cpus: Option<i64>,
    pub pids: u32,
    pub uid: u32,
    pub gid: u32,
    pub shim: Option<crate::spec::ShimMode>,
    pub protocol: crate::spec::RefusalProtocol,
}

/// A long-lived container per endpoint of a side (the spec's `container`, checked).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Container {
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty", default)]
    pub env: std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub memory_bytes: Option<i64>,
    /// CPUs in billionths, as Docker's `NanoCpus`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub nano_cpus: Option<i64>,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub docker_network: bool,
    /// Labels besides wepoq's own (a stub's runtime settings, for the host agent).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty", default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Directories under the host's run directory (`wepoq agent --run-dir`) mounted into the
    /// container: a stub's socket directory, shared with the agent and the stub's workers.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub run_mounts: Vec<RunMount>,
}

/// `<run dir>/<source>` on the host, mounted read-write at `target`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunMount {
    pub source: String,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Side {
    pub kind: SideKind,
    pub replicas: u32,
    /// Services this side may call besides its own (resolved, deduplicated, sorted).
    pub calls: Vec<ServiceId>,
    /// Each endpoint of the side runs as one such container.
    pub container: Option<Container>,
    /// The side's endpoints reach each other.
    pub peers: bool,
    /// An external client side: the gateway whose logical trunk carries its endpoints.
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    /// Enclosing scopes, outermost first (e.g. `["roominator", "room3"]`).
    pub scopes: Vec<String>,
    pub ports: Vec<Port>,
    pub svr: Side,
    pub cli: Side,
    pub runtime: Option<Runtime>,
    /// The service's key in the spec, for diagnostics.
    pub span: Option<Span>,
}

impl Service {
    /// `result.ovn-vote` style: service, then scopes innermost first (no namespace).
    pub fn dotted(&self) -> String {
        let mut name = self.name.clone();
        for scope in self.scopes.iter().rev() {
            name.push('.');
            name.push_str(scope);
        }
        name
    }

    /// `ovn-vote/result` style: the path a `calls` entry uses.
    pub fn path(&self) -> String {
        let mut path = self.scopes.join("/");
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(&self.name);
        path
    }

    /// The services a side may call, sorted: declared calls, and for a client side its own
    /// service (`own` is this service's id).
    pub fn targets(&self, own: ServiceId, kind: SideKind) -> Vec<ServiceId> {
        let mut targets = self.side(kind).calls.clone();
        if kind == SideKind::Cli {
            targets.push(own);
        }
        targets.sort();
        targets.dedup();
        targets
    }

    pub fn side(&self, kind: SideKind) -> &Side {
        match kind {
            SideKind::Svr => &self.svr,
            SideKind::Cli => &self.cli,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Namespace {
    pub name: String,
    pub domain: String,
    pub network: Ipv4Net,
    /// Sorted by path, so everything derived from it is deterministic.
    pub services: Vec<Service>,
    pub file: FileId,
    pub network_span: Option<Span>,
    pub namespace_span: Option<Span>,
}

impl Namespace {
    /// `ns.wepoq.net`: the owner mark on every row and the zone's origin.
    pub fn fqdn(&self) -> String {
        format!("{}.{}", self.name, self.domain)
    }

    pub fn service(&self, id: ServiceId) -> &Service {
        &self.services[id.0]
    }

    /// `svr.result.ovn-vote.ns`: the name of a side's switch and the base of its ports' names.
    pub fn side_name(&self, service: &Service, kind: SideKind) -> String {
        format!("{}.{}.{}", kind.as_str(), service.dotted(), self.name)
    }

    /// Every side that exists (a client side with no replicas has no switch).
    pub fn sides(&self) -> impl Iterator<Item = (ServiceId, &Service, SideKind)> {
        self.services.iter().enumerate().flat_map(|(i, s)| {
            [SideKind::Svr, SideKind::Cli]
                .into_iter()
                .filter(move |k| s.side(*k).replicas > 0)
                .map(move |k| (ServiceId(i), s, k))
        })
    }

    pub fn endpoint_count(&self) -> u64 {
        self.services
            .iter()
            .map(|s| u64::from(s.svr.replicas) + u64::from(s.cli.replicas))
            .sum()
    }
}
