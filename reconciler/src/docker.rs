//! The Docker engine as wepoq sees it: one connection helper and the labels that mark what
//! wepoq owns, shared by `apply`/`destroy` (containers of a spec) and the host agent
//! (attachment of every labelled container).
//!
//! Ownership follows Docker Compose's idiom: labels on the container say who made it and
//! from which configuration, so a later run can tell "mine and current", "mine but stale"
//! and "not mine" apart without any state of its own.

pub mod apply;
pub mod image;
pub mod observe;

pub use bollard::Docker;

/// The namespace (`ns.wepoq.net`) that made the container; absent on containers that others
/// start and only ask to be attached.
pub const OWNER_LABEL: &str = "wepoq.net/owner";
/// The endpoint FQDN the container is (`s1.svr.result.ovn-vote.ns.wepoq.net`). Any running
/// container carrying it is attached to that endpoint's logical port, whoever started it.
pub const ENDPOINT_LABEL: &str = "wepoq.net/endpoint";
/// Hash of the container's configuration (image id, command, env, limits, addresses): a
/// change means replace.
pub const CONFIG_HASH_LABEL: &str = "wepoq.net/config-hash";
/// Hash of the specs and allocation the container was made from (informational, as
/// Compose's project hash).
pub const SPEC_HASH_LABEL: &str = "wepoq.net/spec-hash";

/// Why the engine could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker engine at {at}: {source}")]
    Unreachable {
        at: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("{0}")]
    Image(String),
    #[error("images not on the Docker host: {}", images.join(", "))]
    ImagesMissing { images: Vec<String> },
    #[error("docker {what}: {source}")]
    Api {
        what: String,
        #[source]
        source: bollard::errors::Error,
    },
}

impl DockerError {
    pub fn api(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> DockerError {
        let what = what.into();
        move |source| DockerError::Api { what, source }
    }

    /// An outage may pass; an API error on a given request will not by retrying alone.
    pub fn is_retryable(&self) -> bool {
        matches!(self, DockerError::Unreachable { .. })
    }
}

/// Where `connect(None)` looks: `DOCKER_HOST`, else the default unix socket.
pub fn default_address() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string())
}

/// Connects to `address` (`unix:///path`, `unix:/path`, `/path`, `tcp://host:port` or
/// `http://host:port`), or to [`default_address`], and negotiates the API version down to
/// what the engine speaks (20.10 speaks 1.41; bollard's default is newer). The ping that
/// negotiation needs also proves the engine is there, so callers learn of an outage here and
/// not half-way through an apply.
pub async fn connect(address: Option<&str>) -> Result<Docker, DockerError> {
    let at = address.map(str::to_owned).unwrap_or_else(default_address);
    let unreachable = |source| DockerError::Unreachable {
        at: at.clone(),
        source,
    };
    let docker = if let Some(path) = at.strip_prefix("unix://").or(at.strip_prefix("unix:")) {
        Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
    } else if at.starts_with('/') {
        Docker::connect_with_unix(&at, 120, bollard::API_DEFAULT_VERSION)
    } else {
        let http = at.replacen("tcp://", "http://", 1);
        Docker::connect_with_http(&http, 120, bollard::API_DEFAULT_VERSION)
    }
    .map_err(unreachable)?;
    docker.negotiate_version().await.map_err(unreachable)
}

/// Docker's events about containers of `owners` that can take them off the spec (removed,
/// stopped, died, killed, renamed, updated, paused), one `()` each: what `apply --watch`
/// repairs. The channel closes when the engine goes away.
pub fn drift_events(docker: &Docker, owners: &[String]) -> tokio::sync::mpsc::Receiver<()> {
    use futures_util::StreamExt;
    let labels = owners
        .iter()
        .map(|o| format!("{OWNER_LABEL}={o}"))
        .collect();
    let filters = std::collections::HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        ("label".to_string(), labels),
        (
            "event".to_string(),
            [
                "destroy", "die", "stop", "kill", "rename", "update", "pause",
            ]
            .map(String::from)
            .to_vec(),
        ),
    ]);
    let options = bollard::query_parameters::EventsOptions {
        filters: Some(filters),
        ..Default::default()
    };
    let mut events = docker.events(Some(options));
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(Ok(_)) = events.next().await {
            // A full channel already holds a wake-up: more are not needed.
            if let Err(tokio::sync::mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
                return;
            }
        }
    });
    rx
}
