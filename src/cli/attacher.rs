//! How `wepoq apply` and `destroy` attach and detach the containers they start themselves
//! (so a one-shot apply works without an agent): the host's Open vSwitch options, shared with
//! `wepoq agent`, and a container unit turned into the interface it gets.

use clap::Args;
use wepoq_compiler::containers::ContainerUnit;
use wepoq_reconciler::attach::{AttachConfig, Attacher, Vif, resolve_vif};
use wepoq_reconciler::docker::apply::{Attach, BoxFuture};
use wepoq_reconciler::ovsdb;

/// Where this host's Open vSwitch is, for attaching containers (shared with `wepoq agent`).
#[derive(Debug, Clone, Args)]
pub struct AttachArgs {
    /// The local Open_vSwitch database (default: $WEPOQ_OVS_DB, else
    /// unix:$OVS_RUNDIR/db.sock, else unix:/var/run/openvswitch/db.sock)
    #[arg(long, env = "WEPOQ_OVS_DB", value_name = "URL")]
    pub ovs_db: Option<String>,
    /// The network namespace ovs-vswitchd runs in, when not this one (the OVN sandbox's)
    #[arg(long, env = "WEPOQ_OVS_NETNS", value_name = "PATH")]
    pub ovs_netns: Option<std::path::PathBuf>,
    /// The integration bridge
    #[arg(long, default_value = "br-int", value_name = "BRIDGE")]
    pub bridge: String,
    /// Where stubs' directories are: <DIR>/stubs/<stub container name>/ holds the stub's
    /// socket, its status file and the agent's control.sock; it is bind-mounted into the stub
    /// (and its socket into the workers), so apply and the agent must agree on it
    #[arg(
        long,
        env = "WEPOQ_RUN_DIR",
        value_name = "DIR",
        default_value = "/run/wepoq"
    )]
    pub run_dir: std::path::PathBuf,
}

impl AttachArgs {
    pub fn config(&self) -> AttachConfig {
        AttachConfig {
            ovs_db: self
                .ovs_db
                .clone()
                .unwrap_or_else(AttachConfig::default_ovs_db),
            bridge: self.bridge.clone(),
            ovs_netns: self.ovs_netns.clone(),
        }
    }
}

/// The attacher `wepoq apply` and `destroy` use for the containers they start or remove
/// themselves, so a one-shot apply works without an agent (which keeps them attached
/// afterwards). Interfaces are looked up in `nb` exactly as the agent looks them up, so the
/// two never disagree about an attachment and never replace each other's.
pub async fn attacher(args: &AttachArgs, nb: ovsdb::Client) -> Result<Box<dyn Attach>, String> {
    let attacher = Attacher::connect(args.config()).await.map_err(|e| {
        format!("{e}\nhelp: containers are attached through this host's Open vSwitch; name it with --ovs-db")
    })?;
    Ok(Box::new(UnitAttacher { attacher, nb }))
}

struct UnitAttacher {
    attacher: Attacher,
    nb: ovsdb::Client,
}

/// The interface of a unit's container, as the NB describes its logical port: the default
/// route too unless the container keeps Docker's network.
async fn vif(nb: &ovsdb::Client, unit: &ContainerUnit) -> Result<Vif, String> {
    let mut vif = resolve_vif(nb, &unit.endpoint)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the NB has no logical port named {}", unit.endpoint))?;
    vif.default_route = !unit.container.docker_network;
    Ok(vif)
}

impl Attach for UnitAttacher {
    fn attach<'a>(
        &'a self,
        container_id: &'a str,
        pid: u32,
        unit: &'a ContainerUnit,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let vif = vif(&self.nb, unit).await?;
            self.attacher
                .attach(container_id, pid, &vif)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn detach<'a>(&'a self, container_id: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.attacher
                .detach(container_id)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn attached(&self) -> BoxFuture<'_, Result<Vec<String>, String>> {
        Box::pin(async move {
            let found = self.attacher.attached().await.map_err(|e| e.to_string())?;
            Ok(found.into_iter().map(|a| a.container_id).collect())
        })
    }
}
