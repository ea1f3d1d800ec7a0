//! The agent's gateway loop: on a host started with `--gateway NAME` it syncs br-wepoq
//! (see [`crate::gateway`]) at start and then every `interval`, so an NB change (a client
//! added, a tag changed, a trunk gone) or a veth removed by hand is repaired within one
//! interval. Access ports (one netdev per connected external client) are handed in through
//! a [`GatewayHandle`]; every sync, periodic or prompted, runs one at a time.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::attach::{AttachConfig, AttachError};
use crate::gateway::{Gateway, GatewayConfig, SyncReport};
use crate::ovsdb;

/// What the agent (or a tunnel) uses to put client netdevs on br-wepoq. Cheap to clone.
#[derive(Clone)]
pub struct GatewayHandle {
    gateway: Arc<Gateway>,
    nb: ovsdb::Client,
    /// Syncs read then write OVS: two at once would both add a missing port.
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
}

impl GatewayHandle {
    /// Puts the existing netdev `netdev` (in ovs-vswitchd's namespace) on br-wepoq as the
    /// access port of client `client_fqdn`, with the tag the NB gives that client; changed
    /// tags follow the NB at every sync. Idempotent. A client the NB does not name gets no
    /// port (its frames could reach no child port anyway).
    pub async fn ensure_access_port(
        &self,
        netdev: &str,
        client_fqdn: &str,
    ) -> Result<SyncReport, AttachError> {
        let _one = self.one_at_a_time.lock().await;
        logged(
            self.gateway
                .ensure_access_port(&self.nb, netdev, client_fqdn)
                .await,
        )
    }

    /// Takes `netdev` off br-wepoq (the netdev itself is left to whoever made it).
    pub async fn remove_access_port(&self, netdev: &str) -> Result<SyncReport, AttachError> {
        let _one = self.one_at_a_time.lock().await;
        logged(self.gateway.remove_access_port(&self.nb, netdev).await)
    }

    /// Makes br-wepoq what the NB and the handed-in access ports ask for, now.
    pub async fn sync(&self) -> Result<SyncReport, AttachError> {
        let _one = self.one_at_a_time.lock().await;
        logged(self.gateway.sync(&self.nb).await)
    }

    /// Client FQDN → tag, as of the last sync.
    pub fn client_tags(&self) -> BTreeMap<String, u16> {
        self.gateway.client_tags()
    }

    pub fn config(&self) -> &GatewayConfig {
        self.gateway.config()
    }
}

/// Says what a sync changed (nothing when it changed nothing).
fn logged(result: Result<SyncReport, AttachError>) -> Result<SyncReport, AttachError> {
    if let Ok(report) = &result {
        for name in &report.added {
            eprintln!("wepoq agent: gateway added port {name}");
        }
        for name in &report.removed {
            eprintln!("wepoq agent: gateway removed port {name}");
        }
    }
    result
}

/// The running gateway loop and the handle to it.
pub struct Running {
    pub handle: GatewayHandle,
    pub task: JoinHandle<()>,
}

/// Connects to OVS and starts syncing. Fails only when OVS cannot be reached; sync errors
/// are logged and retried at the next interval.
pub async fn start(
    attach: &AttachConfig,
    cfg: GatewayConfig,
    nb: ovsdb::Client,
) -> Result<Running, AttachError> {
    let interval = cfg.interval;
    let handle = GatewayHandle {
        gateway: Arc::new(Gateway::connect(attach, cfg).await?),
        nb,
        one_at_a_time: Arc::new(tokio::sync::Mutex::new(())),
    };
    let looping = handle.clone();
    let task = tokio::spawn(async move {
        let mut every = tokio::time::interval(interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_error: Option<String> = None;
        loop {
            every.tick().await;
            match looping.sync().await {
                Ok(_) => last_error = None,
                Err(e) => {
                    // Once per distinct error, not every interval.
                    let text = e.to_string();
                    if last_error.as_deref() != Some(&text) {
                        eprintln!("wepoq agent: gateway sync failed: {text}");
                    }
                    last_error = Some(text);
                }
            }
        }
    });
    Ok(Running { handle, task })
}
