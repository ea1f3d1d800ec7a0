//! Carries out container changes on a Docker host: removals first, then creations,
//! replacements and starts, independent containers in parallel, each attached to its
//! logical port as soon as it runs.
//!
//! Docker has no transactions. Each container is done or not, and the outcome lists both,
//! so a failure part-way says exactly what happened and the next apply converges from there
//! (the diff is level-triggered: it looks at what is, not at what was meant). A container
//! that started but could not be attached is removed again rather than left running
//! unreachable, so "running" keeps meaning "attached".

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use futures_util::stream::{self, StreamExt};
use wepoq_compiler::containers::{ContainerAction, ContainerChange, ContainerUnit};
use wepoq_compiler::stub_unit::STATUS_FILE;

use super::{CONFIG_HASH_LABEL, ENDPOINT_LABEL, OWNER_LABEL, SPEC_HASH_LABEL};

/// How many containers are created and started at once. The engine serialises much of the
/// work anyway; a few in flight hide each call's latency without piling up timeouts.
const PARALLEL: usize = 8;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Gives a running container its endpoint's interface, and takes it away. The host agent's
/// attacher implements it; the apply code needs nothing else of it.
pub trait Attach: Sync {
    /// Idempotent: an attachment that is already right is left as it is.
    fn attach<'a>(
        &'a self,
        container_id: &'a str,
        pid: u32,
        unit: &'a ContainerUnit,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Removes what `attach` made for the container (nothing when there is nothing).
    fn detach<'a>(&'a self, container_id: &'a str) -> BoxFuture<'a, Result<(), String>>;
    /// The ids of the containers that have an attachment on this host.
    fn attached(&self) -> BoxFuture<'_, Result<Vec<String>, String>>;
}

/// What every container of one apply shares: the spec hash it is labelled with, and the
/// host's run directory, under which containers' run mounts (a stub's directory) live.
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    pub spec_hash: &'a str,
    pub run_dir: &'a std::path::Path,
}

/// What happened to each container of a plan.
#[derive(Debug, Default)]
pub struct Outcome {
    /// `(action, name)` of each change carried out.
    pub done: Vec<(ContainerAction, String)>,
    /// `(action, name, why)` of each change that failed.
    pub failed: Vec<(ContainerAction, String, String)>,
    /// The id of every container running after the apply, by name.
    pub running: HashMap<String, String>,
}

/// Applies `changes`, then makes sure every container in `current` (desired containers the
/// plan left alone, as `(name, id)`) is attached: a container restarted without an agent
/// comes back with a fresh network namespace and no interface.
pub async fn apply(
    docker: &Docker,
    attacher: &dyn Attach,
    changes: &[ContainerChange],
    current: &[(&ContainerUnit, String)],
    host: Host<'_>,
) -> Outcome {
    let mut outcome = Outcome::default();
    if let Err(e) = detach_stale(docker, attacher).await {
        outcome
            .failed
            .push((ContainerAction::Remove, "(stale attachments)".into(), e));
        return outcome;
    }
    let removals = changes
        .iter()
        .filter(|c| c.action == ContainerAction::Remove);
    let results: Vec<_> = stream::iter(removals)
        .map(|c| async move {
            let id = c.id.as_deref().unwrap_or(&c.name);
            (c, remove(docker, attacher, id).await)
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    for (c, result) in results {
        record(&mut outcome, c.action, &c.name, result.map(|()| None));
    }
    let ups = changes
        .iter()
        .filter(|c| c.action != ContainerAction::Remove);
    let results: Vec<_> = stream::iter(ups)
        .map(|c| async move { (c, bring_up(docker, attacher, c, host).await) })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    for (c, result) in results {
        record(&mut outcome, c.action, &c.name, result.map(Some));
    }
    let checks: Vec<_> =
        stream::iter(current)
            .map(|(unit, id)| async move {
                (unit, id, ensure_attached(docker, attacher, id, unit).await)
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
    for (unit, id, result) in checks {
        match result {
            Ok(()) => {
                outcome.running.insert(unit.name.clone(), id.clone());
            }
            Err(e) => outcome
                .failed
                .push((ContainerAction::Start, unit.name.clone(), e)),
        }
    }
    outcome.done.sort();
    outcome.failed.sort();
    outcome
}

/// Detaches every attachment whose container no longer runs (removed or stopped by hand
/// while no agent watched): its port still claims the logical port a new container needs.
async fn detach_stale(docker: &Docker, attacher: &dyn Attach) -> Result<(), String> {
    let attached = attacher.attached().await?;
    if attached.is_empty() {
        return Ok(());
    }
    let running: std::collections::HashSet<String> = docker
        .list_containers(None)
        .await
        .map_err(|e| format!("list containers: {e}"))?
        .into_iter()
        .filter_map(|c| c.id)
        .collect();
    for id in attached.iter().filter(|id| !running.contains(*id)) {
        attacher.detach(id).await?;
    }
    Ok(())
}

fn record(
    outcome: &mut Outcome,
    action: ContainerAction,
    name: &str,
    result: Result<Option<String>, String>,
) {
    match result {
        Ok(id) => {
            outcome.done.push((action, name.to_string()));
            if let Some(id) = id {
                outcome.running.insert(name.to_string(), id);
            }
        }
        Err(e) => outcome.failed.push((action, name.to_string(), e)),
    }
}

/// Create (after removing the old one, for a replacement) or start, then attach. Returns the
/// running container's id.
async fn bring_up(
    docker: &Docker,
    attacher: &dyn Attach,
    change: &ContainerChange,
    host: Host<'_>,
) -> Result<String, String> {
    let unit = change
        .unit
        .as_ref()
        .ok_or_else(|| "the plan holds no container configuration".to_string())?;
    let id = match change.action {
        ContainerAction::Start => change.id.clone().unwrap_or_else(|| unit.name.clone()),
        _ => {
            if change.action == ContainerAction::Replace {
                let old = change.id.as_deref().unwrap_or(&unit.name);
                remove(docker, attacher, old).await?;
            }
            let hash = change.config_hash.clone().unwrap_or_default();
            create(docker, unit, &hash, host).await?
        }
    };
    prepare_run_mounts(unit, host.run_dir)?;
    docker
        .start_container(&id, None)
        .await
        .map_err(|e| format!("start: {e}"))?;
    if let Err(e) = ensure_attached(docker, attacher, &id, unit).await {
        // Nothing half-attached: a container that cannot have its interface does not run.
        let _ = remove(docker, attacher, &id).await;
        return Err(e);
    }
    Ok(id)
}

async fn ensure_attached(
    docker: &Docker,
    attacher: &dyn Attach,
    id: &str,
    unit: &ContainerUnit,
) -> Result<(), String> {
    let pid = running_pid(docker, id).await?;
    // The host agent may be attaching the same container at this moment (it follows Docker's
    // start events): the two then trip over each other's half-made veth or OVS row. Attaching
    // is idempotent, so trying again once the other is done converges on one attachment.
    let mut last = String::new();
    for pause_ms in ATTACH_RETRIES_MS {
        match attacher.attach(id, pid, unit).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
    }
    Err(format!("attach: {last}"))
}

/// Pauses after each failed attach; the agent's attach takes tens of milliseconds.
const ATTACH_RETRIES_MS: [u64; 5] = [50, 100, 200, 400, 0];

/// The pid of the container's init process, which names its network namespace.
pub async fn running_pid(docker: &Docker, id: &str) -> Result<u32, String> {
    let inspected = docker
        .inspect_container(id, None)
        .await
        .map_err(|e| format!("inspect: {e}"))?;
    let state = inspected.state.unwrap_or_default();
    match (state.running, state.pid) {
        (Some(true), Some(pid)) if pid > 0 => Ok(pid as u32),
        _ => Err(format!(
            "the container is not running (exit code {})",
            state.exit_code.unwrap_or_default()
        )),
    }
}

/// Removes a container, gone already counting as removed. A stub's worker containers have
/// no interface, so this is all they need.
pub async fn remove_worker(docker: &Docker, id: &str) -> Result<(), String> {
    let options = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    match docker.remove_container(id, Some(options)).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        // Someone else (the host agent sweeping a stub's workers) is removing it: done once
        // it is gone.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            message,
        }) if message.contains("already in progress") => gone(docker, id).await,
        Err(e) => Err(format!("remove: {e}")),
    }
}

/// Waits until the container is gone.
async fn gone(docker: &Docker, id: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match docker.inspect_container(id, None).await {
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(()),
            _ if tokio::time::Instant::now() > deadline => {
                return Err("remove: another removal of it did not end within 30 s".into());
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

async fn remove(docker: &Docker, attacher: &dyn Attach, id: &str) -> Result<(), String> {
    remove_worker(docker, id).await?;
    // The veth went with the container's namespace; the OVS port row did not.
    attacher
        .detach(id)
        .await
        .map_err(|e| format!("detach: {e}"))
}

/// Makes the host directories of the container's run mounts, and clears what a previous
/// container left there that would mislead: a stub's status file says "ready" until the new
/// stub writes its own.
fn prepare_run_mounts(unit: &ContainerUnit, run_dir: &std::path::Path) -> Result<(), String> {
    for mount in &unit.container.run_mounts {
        let dir = run_dir.join(&mount.source);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        match std::fs::remove_file(dir.join(STATUS_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("cannot clear {}: {e}", dir.display()));
            }
            _ => {}
        }
    }
    Ok(())
}

async fn create(
    docker: &Docker,
    unit: &ContainerUnit,
    config_hash: &str,
    host: Host<'_>,
) -> Result<String, String> {
    let body = create_body(unit, config_hash, host);
    let options = CreateContainerOptions {
        name: Some(unit.name.clone()),
        ..Default::default()
    };
    let created = docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| format!("create: {e}"))?;
    Ok(created.id)
}

/// The create request: the container's own configuration, wepoq's labels, OVN's DNS at the
/// gateway, and no Docker network unless the spec keeps one (the OVN interface comes next).
pub fn create_body(unit: &ContainerUnit, config_hash: &str, host: Host<'_>) -> ContainerCreateBody {
    let c = &unit.container;
    let mut labels: HashMap<String, String> = c.labels.clone().into_iter().collect();
    labels.extend([
        (OWNER_LABEL.to_string(), unit.owner.clone()),
        (ENDPOINT_LABEL.to_string(), unit.endpoint.clone()),
        (CONFIG_HASH_LABEL.to_string(), config_hash.to_string()),
        (SPEC_HASH_LABEL.to_string(), host.spec_hash.to_string()),
    ]);
    let binds: Vec<String> = c
        .run_mounts
        .iter()
        .map(|m| format!("{}:{}", host.run_dir.join(&m.source).display(), m.target))
        .collect();
    let (host, domain) = unit
        .endpoint
        .split_once('.')
        .unwrap_or((unit.endpoint.as_str(), ""));
    ContainerCreateBody {
        image: Some(c.image.clone()),
        entrypoint: c.entrypoint.clone(),
        cmd: c.command.clone(),
        env: (!c.env.is_empty()).then(|| c.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        user: c.user.clone(),
        hostname: Some(host.to_string()),
        domainname: Some(domain.to_string()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some(if c.docker_network { "bridge" } else { "none" }.to_string()),
            dns: Some(vec![unit.gateway.to_string()]),
            binds: (!binds.is_empty()).then_some(binds),
            memory: c.memory_bytes,
            nano_cpus: c.nano_cpus,
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
