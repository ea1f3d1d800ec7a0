//! Lowers a deserialized spec into the model, checking names, networks, ports, durations and
//! calls on the way. Every problem becomes a diagnostic pointing at the YAML; none stops the
//! others from being found.

use std::collections::{BTreeMap, HashMap};

use crate::cidr::{CidrError, Ipv4Net};
use crate::diagnostic::Diagnostic;
use crate::model::{
    Container, Namespace, Port, Proto, Runtime, Service, ServiceId, Side, SideKind,
};
use crate::names::{domain_problem, label_problem};
use crate::source::{FileId, Span};
use crate::spec::{self, Spec};
use crate::suggest::nearest;
use crate::yaml::Node;

/// A path into the YAML tree: mapping keys and list indexes.
#[derive(Debug, Clone, Default)]
struct Path(Vec<String>);

impl Path {
    fn join(&self, key: impl Into<String>) -> Path {
        let mut p = self.0.clone();
        p.push(key.into());
        Path(p)
    }
}

struct Lowering<'a> {
    root: &'a Node,
    diagnostics: Vec<Diagnostic>,
}

impl Lowering<'_> {
    fn node(&self, path: &Path) -> Option<&Node> {
        let mut node = self.root;
        for seg in &path.0 {
            node = match seg.parse::<usize>() {
                Ok(i) if node.index(i).is_some() => node.index(i)?,
                _ => node.get(seg)?,
            };
        }
        Some(node)
    }

    /// The span of the value at `path`.
    fn span(&self, path: &Path) -> Option<Span> {
        self.node(path).map(|n| n.span)
    }

    /// The span of the key that ends `path` (for naming errors, the name itself).
    fn key_span(&self, path: &Path) -> Option<Span> {
        let (last, parent) = path.0.split_last()?;
        self.node(&Path(parent.to_vec()))?
            .entry(last)
            .map(|e| e.key_span)
    }

    fn check_label(&mut self, label: &str, span: Option<Span>, what: &str) {
        if let Some(problem) = label_problem(label) {
            self.diagnostics.push(
                Diagnostic::error("wepoq::name::invalid_label", format!("{what} `{label}` is not a valid DNS label"))
                    .label_opt(span, problem)
                    .help("names become DNS labels: 1 to 63 lower case letters, digits or `-`, not at either end"),
            );
        }
    }
}

/// A call as written, before resolution.
struct RawCall {
    caller: usize,
    side: SideKind,
    target: String,
    span: Option<Span>,
}

pub fn lower(file: FileId, spec: &Spec, root: &Node) -> (Option<Namespace>, Vec<Diagnostic>) {
    let mut l = Lowering {
        root,
        diagnostics: Vec::new(),
    };
    let top = Path::default();

    l.check_label(&spec.namespace, l.span(&top.join("namespace")), "namespace");
    if let Some(problem) = domain_problem(&spec.domain) {
        l.diagnostics.push(
            Diagnostic::error(
                "wepoq::name::invalid_domain",
                format!("domain `{}` is not a valid DNS name", spec.domain),
            )
            .label_opt(l.span(&top.join("domain")), problem),
        );
    }
    let network_span = l.span(&top.join("network"));
    let network = match Ipv4Net::parse(&spec.network) {
        Ok(net) => Some(net),
        Err(e) => {
            let (why, help) = match e {
                CidrError::Syntax => (
                    "not an IPv4 CIDR".to_string(),
                    "write the network as ADDRESS/PREFIX, e.g. 10.64.0.0/16".to_string(),
                ),
                CidrError::Prefix => (
                    "the prefix length must be 0 to 32".to_string(),
                    "e.g. 10.64.0.0/16".to_string(),
                ),
                CidrError::HostBits(net) => (
                    "host bits are set".to_string(),
                    format!("did you mean `{net}`?"),
                ),
            };
            l.diagnostics.push(
                Diagnostic::error(
                    "wepoq::net::cidr_invalid",
                    format!("network `{}` is invalid: {why}", spec.network),
                )
                .label_opt(network_span, why)
                .help(help),
            );
            None
        }
    };

    let mut services = Vec::new();
    let mut calls = Vec::new();
    lower_services(
        &mut l,
        &spec.services,
        &[],
        &top.join("services"),
        &mut services,
        &mut calls,
    );
    for (name, scope) in &spec.apps {
        lower_scope(
            &mut l,
            name,
            scope,
            &[],
            &top.join("apps").join(name.as_str()),
            &mut services,
            &mut calls,
        );
    }

    // Sort by path so ids, names and every output are independent of map order.
    let mut order: Vec<usize> = (0..services.len()).collect();
    order.sort_by_key(|&i| services[i].path());
    let mut new_index = vec![0; services.len()];
    for (new, &old) in order.iter().enumerate() {
        new_index[old] = new;
    }
    let mut sorted: Vec<Service> = order.iter().map(|&i| services[i].clone()).collect();
    resolve_calls(&mut l, &mut sorted, calls, &new_index);
    check_name_lengths(&mut l, spec, &sorted);

    let namespace = network.map(|network| Namespace {
        name: spec.namespace.clone(),
        domain: spec.domain.clone(),
        network,
        services: sorted,
        file,
        network_span,
        namespace_span: l.span(&top.join("namespace")),
    });
    (namespace, l.diagnostics)
}

fn lower_scope(
    l: &mut Lowering<'_>,
    name: &str,
    scope: &spec::Scope,
    parents: &[String],
    path: &Path,
    services: &mut Vec<Service>,
    calls: &mut Vec<RawCall>,
) {
    l.check_label(name, l.key_span(path), "scope");
    let mut scopes = parents.to_vec();
    scopes.push(name.to_string());
    lower_services(
        l,
        &scope.services,
        &scopes,
        &path.join("services"),
        services,
        calls,
    );
    for (child, sub) in &scope.scopes {
        lower_scope(
            l,
            child,
            sub,
            &scopes,
            &path.join("scopes").join(child.as_str()),
            services,
            calls,
        );
    }
}

fn lower_services(
    l: &mut Lowering<'_>,
    specs: &BTreeMap<String, spec::Service>,
    scopes: &[String],
    path: &Path,
    services: &mut Vec<Service>,
    calls: &mut Vec<RawCall>,
) {
    for (name, svc) in specs {
        let svc_path = path.join(name.as_str());
        let span = l.key_span(&svc_path);
        l.check_label(name, span, "service");
        let index = services.len();
        let svr_path = svc_path.join("svr");
        let ports = lower_ports(l, &svc.svr.ports, &svr_path.join("ports"));
        let runtime = svc
            .svr
            .runtime
            .as_ref()
            .map(|r| lower_runtime(l, r, &svr_path.join("runtime")));
        for (i, target) in svc.svr.calls.iter().enumerate() {
            calls.push(RawCall {
                caller: index,
                side: SideKind::Svr,
                target: target.clone(),
                span: l.span(&svr_path.join("calls").join(i.to_string())),
            });
        }
        let svr_container = svc
            .svr
            .container
            .as_ref()
            .map(|c| lower_container(l, c, &svr_path.join("container")));
        if let (Some(_), Some(_)) = (&svc.svr.container, &svc.svr.runtime) {
            l.diagnostics.push(
                Diagnostic::error(
                    "wepoq::container::with_runtime",
                    "a server side runs either a container or a runtime, not both",
                )
                .label_opt(l.key_span(&svr_path.join("container")), "a container here")
                .label_opt(l.key_span(&svr_path.join("runtime")), "and a runtime here")
                .help("keep `runtime` to serve connections with functions, or `container` for long-lived servers"),
            );
        }
        let cli = svc.cli.clone().unwrap_or(spec::Client {
            replicas: 0,
            calls: Vec::new(),
            container: None,
            peers: false,
            external: false,
            gateway: None,
        });
        let cli_container = cli
            .container
            .as_ref()
            .map(|c| lower_container(l, c, &svc_path.join("cli").join("container")));
        let cli_gateway = lower_external(l, &cli, &svc_path.join("cli"));
        for (i, target) in cli.calls.iter().enumerate() {
            calls.push(RawCall {
                caller: index,
                side: SideKind::Cli,
                target: target.clone(),
                span: l.span(&svc_path.join("cli").join("calls").join(i.to_string())),
            });
        }
        services.push(Service {
            name: name.clone(),
            scopes: scopes.to_vec(),
            ports,
            svr: Side {
                kind: SideKind::Svr,
                replicas: svc.svr.replicas,
                calls: Vec::new(),
                container: svr_container,
                peers: svc.svr.peers,
                gateway: None,
            },
            cli: Side {
                kind: SideKind::Cli,
                replicas: cli.replicas,
                calls: Vec::new(),
                container: cli_container,
                peers: cli.peers,
                gateway: cli_gateway,
            },
            runtime,
            span,
        });
    }
}

/// The default gateway of external client sides.
pub const DEFAULT_GATEWAY: &str = "gw";

/// An external client side's gateway (`None` for a side on the cluster), checked: a gateway
/// name only with `external`, and no container (its endpoints run on other hosts).
fn lower_external(l: &mut Lowering<'_>, cli: &spec::Client, path: &Path) -> Option<String> {
    if let Some(name) = &cli.gateway {
        l.check_label(name, l.span(&path.join("gateway")), "gateway");
        if !cli.external {
            l.diagnostics.push(
                Diagnostic::error(
                    "wepoq::external::gateway_without_external",
                    "`gateway` names the trunk of external clients, but this side is not external",
                )
                .label_opt(l.span(&path.join("gateway")), "a gateway here")
                .help("add `external: true` to connect these clients from other hosts, or remove `gateway`"),
            );
        }
    }
    if !cli.external {
        return None;
    }
    if cli.container.is_some() {
        l.diagnostics.push(
            Diagnostic::error(
                "wepoq::external::with_container",
                "external clients run on their own hosts, so wepoq cannot run them as containers",
            )
            .label_opt(l.key_span(&path.join("external")), "external")
            .label_opt(l.key_span(&path.join("container")), "but a container here")
            .help("remove `container` (each client host runs `wepoq connect`), or `external` to run the clients on the cluster"),
        );
    }
    Some(
        cli.gateway
            .clone()
            .unwrap_or_else(|| DEFAULT_GATEWAY.to_string()),
    )
}

fn lower_ports(l: &mut Lowering<'_>, ports: &[String], path: &Path) -> Vec<Port> {
    let mut out: Vec<Port> = Vec::new();
    let mut seen: HashMap<Port, Option<Span>> = HashMap::new();
    for (i, text) in ports.iter().enumerate() {
        let span = l.span(&path.join(i.to_string()));
        let Some(port) = parse_port(l, text, span) else {
            continue;
        };
        if let Some(first) = seen.get(&port) {
            l.diagnostics.push(
                Diagnostic::error(
                    "wepoq::port::duplicate",
                    format!("port {port} is listed twice"),
                )
                .label_opt(span, "listed again here")
                .label_opt(*first, "first listed here")
                .help("list each port once"),
            );
            continue;
        }
        seen.insert(port, span);
        out.push(port);
    }
    out.sort();
    out
}

fn parse_port(l: &mut Lowering<'_>, text: &str, span: Option<Span>) -> Option<Port> {
    let Some((number, proto)) = text.split_once('/') else {
        l.diagnostics.push(
            Diagnostic::error(
                "wepoq::port::invalid",
                format!("port `{text}` has no protocol"),
            )
            .label_opt(span, "expected PORT/PROTO")
            .help(format!("write it as `{text}/tcp` or `{text}/udp`")),
        );
        return None;
    };
    let proto = match proto {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        other => {
            let help = match nearest(other, ["tcp", "udp"]) {
                Some(near) => format!("did you mean `{number}/{near}`?"),
                None => "the protocol is `tcp` or `udp`".to_string(),
            };
            l.diagnostics.push(
                Diagnostic::error(
                    "wepoq::port::invalid",
                    format!("port `{text}` has an unknown protocol `{other}`"),
                )
                .label_opt(span, "unknown protocol")
                .help(help),
            );
            return None;
        }
    };
    match number.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Some(Port {
            proto,
            number: n as u16,
        }),
        Ok(_) => {
            l.diagnostics.push(
                Diagnostic::error(
                    "wepoq::port::range",
                    format!("port `{text}` is out of range"),
                )
                .label_opt(span, "must be 1 to 65535"),
            );
            None
        }
        Err(_) => {
            l.diagnostics.push(
                Diagnostic::error(
                    "wepoq::port::invalid",
                    format!("port `{text}` is not a number"),
                )
                .label_opt(span, "expected PORT/PROTO")
                .help("e.g. `80/tcp`"),
            );
            None
        }
    }
}

fn lower_runtime(l: &mut Lowering<'_>, r: &spec::Runtime, path: &Path) -> Runtime {
    let idle_timeout_ms = duration_in(
        l,
        &r.idle_timeout,
        &path.join("idle_timeout"),
        1_000..=86_400_000,
        "idle timeout",
        "must be 1s to 24h",
    );
    let pause_after_ms = duration_in(
        l,
        &r.pause_after,
        &path.join("pause_after"),
        0..=86_400_000,
        "pause_after",
        "must be 0s (never) to 24h",
    );
    if r.min_warm > r.max_workers {
        l.diagnostics.push(
            Diagnostic::error(
                "wepoq::runtime::min_warm",
                format!(
                    "min_warm ({}) is more than max_workers ({})",
                    r.min_warm, r.max_workers
                ),
            )
            .label_opt(
                l.span(&path.join("min_warm")),
                "more warm workers than may run",
            )
            .label_opt(l.span(&path.join("max_workers")), "the limit")
            .help("keep min_warm at or below max_workers"),
        );
    }
    let memory_bytes =
        memory_limit(l, &r.memory, &path.join("memory"), "wepoq::runtime::memory").unwrap_or(0);
    let nano_cpus = r
        .cpus
        .and_then(|cpus| cpu_limit(l, cpus, &path.join("cpus"), "wepoq::runtime::cpus"));
    let (uid, gid) = match r.user.split_once(':').map(|(u, g)| (u.parse(), g.parse())) {
        Some((Ok(uid), Ok(gid))) if uid != 0 => (uid, gid),
        _ => {
            l.diagnostics.push(
                Diagnostic::error(
                    "wepoq::runtime::user",
                    format!("worker user `{}` is not a numeric non-root UID:GID", r.user),
                )
                .label_opt(l.span(&path.join("user")), "expected e.g. `65534:65534`")
                .help("workers run untrusted code: give them an unprivileged numeric uid and gid (the stub admits that uid alone)"),
            );
            (0, 0)
        }
    };
    Runtime {
        image: r.image.clone(),
        min_warm: r.min_warm,
        max_workers: r.max_workers,
        concurrency: r.concurrency,
        idle_timeout_ms,
        queue: r.queue,
        command: r.command.clone(),
        precreate: r.precreate,
        pause_after_ms,
        memory_bytes,
        nano_cpus,
        pids: r.pids,
        uid,
        gid,
        shim: r.shim,
        protocol: r.protocol,
    }
}

/// A duration key in `range` milliseconds; 0 after reporting why it is not.
fn duration_in(
    l: &mut Lowering<'_>,
    text: &str,
    path: &Path,
    range: std::ops::RangeInclusive<u64>,
    what: &str,
    range_text: &str,
) -> u64 {
    match parse_duration_ms(text) {
        Some(ms) if range.contains(&ms) => ms,
        Some(_) => {
            l.diagnostics.push(
                Diagnostic::error(
                    "wepoq::duration::range",
                    format!("{what} `{text}` is out of range"),
                )
                .label_opt(l.span(path), range_text.to_string()),
            );
            0
        }
        None => {
            l.diagnostics.push(
                Diagnostic::error(
                    "wepoq::duration::invalid",
                    format!("`{text}` is not a duration"),
                )
                .label_opt(l.span(path), "expected NUMBER followed by ms, s, m or h")
                .help("e.g. `30s`, `5m`, `1h`"),
            );
            0
        }
    }
}

/// A memory limit in bytes, at least Docker's smallest; `None` after reporting why not.
fn memory_limit(l: &mut Lowering<'_>, text: &str, path: &Path, code: &'static str) -> Option<i64> {
    let parsed = parse_memory(text).filter(|b| *b >= MIN_CONTAINER_MEMORY);
    if parsed.is_none() {
        l.diagnostics.push(
            Diagnostic::error(code, format!("memory limit `{text}` is not a size of at least 6Mi"))
                .label_opt(l.span(path), "expected e.g. `64Mi` or `1Gi`")
                .help("Docker refuses limits under 6 MiB; write bytes or a number with Ki, Mi, Gi, k, M or G"),
        );
    }
    parsed
}

/// A CPU limit as Docker's `NanoCpus`; `None` after reporting why not.
fn cpu_limit(l: &mut Lowering<'_>, cpus: f64, path: &Path, code: &'static str) -> Option<i64> {
    if cpus > 0.0 && cpus <= 1024.0 {
        return Some((cpus * 1e9).round() as i64);
    }
    l.diagnostics.push(
        Diagnostic::error(code, format!("cpu limit {cpus} is out of range"))
            .label_opt(l.span(path), "must be above 0 and at most 1024")
            .help("e.g. `cpus: 0.5` for half a CPU"),
    );
    None
}

fn lower_container(l: &mut Lowering<'_>, c: &spec::Container, path: &Path) -> Container {
    let memory_bytes = c
        .memory
        .as_deref()
        .and_then(|text| memory_limit(l, text, &path.join("memory"), "wepoq::container::memory"));
    let nano_cpus = c
        .cpus
        .and_then(|cpus| cpu_limit(l, cpus, &path.join("cpus"), "wepoq::container::cpus"));
    for name in c.env.keys() {
        let valid = name
            .chars()
            .enumerate()
            .all(|(i, ch)| ch == '_' || ch.is_ascii_alphabetic() || (i > 0 && ch.is_ascii_digit()));
        if !valid || name.is_empty() {
            l.diagnostics.push(
                Diagnostic::error(
                    "wepoq::container::env",
                    format!("`{name}` is not an environment variable name"),
                )
                .label_opt(
                    l.key_span(&path.join("env").join(name.as_str())),
                    "not a name",
                )
                .help("use letters, digits and `_`, not starting with a digit"),
            );
        }
    }
    Container {
        image: c.image.clone(),
        entrypoint: c.entrypoint.clone(),
        command: c.command.clone(),
        env: c.env.clone(),
        user: c.user.clone(),
        memory_bytes,
        nano_cpus,
        docker_network: c.docker_network,
        labels: Default::default(),
        run_mounts: Vec::new(),
    }
}

/// Docker's smallest memory limit.
const MIN_CONTAINER_MEMORY: i64 = 6 * 1024 * 1024;

/// `65536`, `64Mi`, `1Gi`, `512M` in bytes.
pub fn parse_memory(text: &str) -> Option<i64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().ok()?;
    let scale: i64 = match unit {
        "" => 1,
        "k" => 1_000,
        "Ki" => 1 << 10,
        "M" => 1_000_000,
        "Mi" => 1 << 20,
        "G" => 1_000_000_000,
        "Gi" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// `250ms`, `30s`, `5m`, `1h` in milliseconds.
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    n.checked_mul(scale)
}

fn resolve_calls(
    l: &mut Lowering<'_>,
    services: &mut [Service],
    calls: Vec<RawCall>,
    new_index: &[usize],
) {
    let by_path: HashMap<String, usize> = services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.path(), i))
        .collect();
    for call in calls {
        let caller = new_index[call.caller];
        let scopes = services[caller].scopes.clone();
        let target = if call.target.contains('/') {
            by_path.get(call.target.trim_start_matches('/')).copied()
        } else {
            // Lexical lookup: the caller's scope first, then each enclosing one.
            (0..=scopes.len()).rev().find_map(|depth| {
                let mut path = scopes[..depth].join("/");
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(&call.target);
                by_path.get(&path).copied()
            })
        };
        let Some(target) = target else {
            let candidates: Vec<String> = services
                .iter()
                .flat_map(|s| [s.path(), s.name.clone()])
                .collect();
            let help = match nearest(&call.target, candidates.iter().map(String::as_str)) {
                Some(near) => format!("did you mean `{near}`?"),
                None => format!(
                    "known services: {}",
                    services
                        .iter()
                        .map(Service::path)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            l.diagnostics.push(
                Diagnostic::error(
                    "wepoq::call::unknown",
                    format!(
                        "`{}` calls `{}`, which is not a service of this namespace",
                        services[caller].path(),
                        call.target
                    ),
                )
                .label_opt(call.span, "unknown service")
                .help(help),
            );
            continue;
        };
        if target == caller {
            l.diagnostics.push(
                Diagnostic::warning(
                    "wepoq::call::self",
                    format!("`{}` calls itself", services[caller].path()),
                )
                .label_opt(
                    call.span,
                    "a service's clients always reach it; this entry changes nothing",
                ),
            );
            if call.side == SideKind::Cli {
                continue;
            }
        }
        let side = match call.side {
            SideKind::Svr => &mut services[caller].svr,
            SideKind::Cli => &mut services[caller].cli,
        };
        if !side.calls.contains(&ServiceId(target)) {
            side.calls.push(ServiceId(target));
            side.calls.sort();
        }
    }
}

/// Names are checked at their longest: the last endpoint of each side.
fn check_name_lengths(l: &mut Lowering<'_>, spec: &Spec, services: &[Service]) {
    for s in services {
        for side in [&s.svr, &s.cli] {
            if side.replicas == 0 {
                continue;
            }
            let name = format!(
                "{}{}.{}.{}.{}.{}",
                side.kind.endpoint_prefix(),
                side.replicas,
                side.kind.as_str(),
                s.dotted(),
                spec.namespace,
                spec.domain
            );
            if name.len() > 253 {
                l.diagnostics.push(
                    Diagnostic::error(
                        "wepoq::name::too_long",
                        format!("the name `{name}` is {} octets, over DNS's 253", name.len()),
                    )
                    .label_opt(s.span, "this service's names are too long")
                    .help("shorten the service, scope, namespace or domain names"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("5m"), Some(300_000));
        assert_eq!(parse_duration_ms("5"), None);
        assert_eq!(parse_duration_ms("5d"), None);
        assert_eq!(parse_duration_ms("99999999999999999999s"), None);
    }
}
