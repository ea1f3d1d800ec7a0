//! One worker container: its hardened create body and the Docker calls a pool makes.
//!
//! Hardening (docs/runtime.md, "Security model"): `NetworkDisabled` (an own network
//! namespace with only `lo`, and no network prestart hook: about half the start time), every
//! capability dropped, `no-new-privileges`, a read-only root with a small `/tmp` tmpfs, a
//! numeric non-root user, pids/memory/CPU limits from the stub's label. The stub's directory
//! is the only thing shared with the host, at `/run/wepoq`.

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use wepoq_runtime::control_proto::{RUNTIME_LABEL, RuntimeLabel};
use wepoq_runtime::shim::ShimMode;
use wepoq_runtime::worker::{ENV_CONCURRENCY, ENV_SOCKET, ENV_WORKER_ID};

use super::{STUB_LABEL, WORKER_LABEL};
use crate::docker::{CONFIG_HASH_LABEL, Docker, ENDPOINT_LABEL};

/// Where the static shim binary appears inside a worker.
pub const SHIM_PATH: &str = "/.wepoq/wepoq-runtime";

/// The labels a worker inherits from its stub (owner, tests' tags), without the ones that
/// would make it a stub or attach it to OVN.
pub fn worker_labels(
    stub: &str,
    stub_labels: &HashMap<String, String>,
    worker_id: &str,
) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = stub_labels
        .iter()
        .filter(|(k, _)| ![RUNTIME_LABEL, ENDPOINT_LABEL, CONFIG_HASH_LABEL].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(STUB_LABEL.into(), stub.into());
    labels.insert(WORKER_LABEL.into(), worker_id.into());
    labels
}

/// The command a worker runs: the label's, or for a shim image the image's own entrypoint
/// and command (`image_cmd`) under `/.wepoq/wepoq-runtime shim --mode M --`.
pub fn command(rt: &RuntimeLabel, image_cmd: Vec<String>) -> Option<Vec<String>> {
    let own = rt.command.clone().unwrap_or(image_cmd);
    match rt.shim {
        None => rt.command.clone(),
        Some(mode) => {
            let mode = match mode {
                ShimMode::Systemd => "systemd",
                ShimMode::Inetd => "inetd",
            };
            let mut cmd = vec![
                SHIM_PATH.into(),
                "shim".into(),
                "--mode".into(),
                mode.into(),
                "--".into(),
            ];
            cmd.extend(own);
            Some(cmd)
        }
    }
}

/// The create request of worker `worker_id`.
pub fn create_body(
    rt: &RuntimeLabel,
    stub_dir: &Path,
    shim_binary: Option<&Path>,
    labels: HashMap<String, String>,
    worker_id: &str,
    cmd: Option<Vec<String>>,
) -> ContainerCreateBody {
    let mut binds = vec![format!("{}:/run/wepoq", stub_dir.display())];
    if rt.shim.is_some()
        && let Some(bin) = shim_binary
    {
        binds.push(format!("{}:{SHIM_PATH}:ro", bin.display()));
    }
    ContainerCreateBody {
        image: Some(rt.image.clone()),
        // A shim image's entrypoint is part of `cmd`, after the shim.
        entrypoint: rt.shim.is_some().then(Vec::new),
        cmd,
        env: Some(vec![
            format!(
                "{ENV_SOCKET}=/run/wepoq/{}",
                wepoq_runtime::control_proto::STUB_SOCKET
            ),
            format!("{ENV_WORKER_ID}={worker_id}"),
            format!("{ENV_CONCURRENCY}={}", rt.concurrency.max(1)),
        ]),
        user: Some(rt.user.clone()),
        labels: Some(labels),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".into(),
                "rw,noexec,nosuid,size=16m".into(),
            )])),
            binds: Some(binds),
            memory: rt.memory_bytes,
            nano_cpus: rt.nano_cpus,
            pids_limit: rt.pids_limit,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The image's entrypoint followed by its command (what `docker run` would run).
pub async fn image_command(engine: &Docker, image: &str) -> Result<Vec<String>, String> {
    let inspected = engine
        .inspect_image(image)
        .await
        .map_err(|e| format!("inspect image {image}: {e}"))?;
    let config = inspected.config.unwrap_or_default();
    let mut cmd = config.entrypoint.unwrap_or_default();
    cmd.extend(config.cmd.unwrap_or_default());
    if cmd.is_empty() {
        return Err(format!("image {image} has neither entrypoint nor command"));
    }
    Ok(cmd)
}

pub async fn create(
    engine: &Docker,
    name: &str,
    body: ContainerCreateBody,
) -> Result<String, String> {
    engine
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.into()),
                ..Default::default()
            }),
            body,
        )
        .await
        .map(|c| c.id)
        .map_err(|e| format!("create: {e}"))
}

pub async fn start(engine: &Docker, id: &str) -> Result<(), String> {
    engine
        .start_container(id, None)
        .await
        .map_err(|e| format!("start: {e}"))
}

/// Removes the container; one already gone is not an error.
pub async fn remove(engine: &Docker, id: &str) -> Result<(), String> {
    let options = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    match engine.remove_container(id, Some(options)).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(format!("remove: {e}")),
    }
}
