//! Converging one container: look at what is, then attach or detach.
//!
//! Running with a [`ENDPOINT_LABEL`] and a pid: attach to the port the NB has for that
//! name. Anything else (stopped, removed, paused out of existence, label naming no port):
//! detach, which only ever removes wepoq's own port for that container.

use std::time::SystemTime;

use bollard::Docker;

use super::JobError;
use crate::attach::{Attacher, resolve_vif};
use crate::docker::{DockerError, ENDPOINT_LABEL};
use crate::ovsdb;

/// What every job shares.
pub struct Ctx {
    pub nb: ovsdb::Client,
    pub attacher: Attacher,
    /// `KEY=VALUE` a container must also carry (see `AgentConfig::only_label`).
    pub only_label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Attached { port: String },
    Detached,
}

/// A finished job, back to the dispatcher.
pub struct Report {
    pub id: String,
    pub outcome: Result<Outcome, JobError>,
    /// The start event that asked for this job, for the latency histogram.
    pub started_at: Option<SystemTime>,
}

/// What an attach needs from Docker's inspect, `None` when the container should not be
/// attached (gone, not running, unlabelled).
async fn wanted(
    engine: &Docker,
    id: &str,
    only: Option<&str>,
) -> Result<Option<(u32, String, bool)>, JobError> {
    let info = match engine.inspect_container(id, None).await {
        Ok(info) => info,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(None),
        Err(e) => return Err(DockerError::api(format!("inspect {id}"))(e).into()),
    };
    let state = info.state.unwrap_or_default();
    let pid = state.pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0);
    if state.running != Some(true) || pid == 0 {
        return Ok(None);
    }
    let mut labels = info.config.and_then(|c| c.labels).unwrap_or_default();
    if let Some((key, value)) = only.and_then(|o| o.split_once('='))
        && labels.get(key).map(String::as_str) != Some(value)
    {
        return Ok(None);
    }
    let Some(fqdn) = labels.remove(ENDPOINT_LABEL) else {
        return Ok(None);
    };
    // A container on no other network routes everything through OVN.
    let mode = info
        .host_config
        .and_then(|h| h.network_mode)
        .unwrap_or_default();
    let other_network = !(mode == "none" || mode.is_empty());
    Ok(Some((pid, fqdn, other_network)))
}

pub async fn converge(ctx: &Ctx, engine: &Docker, id: &str) -> Result<Outcome, JobError> {
    let Some((pid, fqdn, other_network)) = wanted(engine, id, ctx.only_label.as_deref()).await?
    else {
        ctx.attacher.detach(id).await?;
        return Ok(Outcome::Detached);
    };
    let Some(mut vif) = resolve_vif(&ctx.nb, &fqdn).await? else {
        // The port may have been removed since it was attached: nothing of it stays.
        ctx.attacher.detach(id).await?;
        return Err(JobError::NoPort {
            label: ENDPOINT_LABEL,
            fqdn,
        });
    };
    vif.default_route = !other_network;
    ctx.attacher.attach(id, pid, &vif).await?;
    Ok(Outcome::Attached { port: vif.port })
}
