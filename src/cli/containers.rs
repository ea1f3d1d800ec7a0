//! The Docker half of the live commands: which containers the specs want, what the host
//! holds, the changes between them (shown beside the NB plan), carrying them out after the
//! NB transaction, and waiting until every container's logical port is up.

use std::time::{Duration, Instant};

use clap::Args;
use wepoq_compiler::Compiled;
use wepoq_compiler::containers::{self, ContainerAction, ContainerChange, ContainerUnit};
use wepoq_compiler::plan::Plan;
use wepoq_reconciler::docker::image::SelfImage;
use wepoq_reconciler::docker::{self, DockerError};
use wepoq_reconciler::ovsdb::{self, MonitorSpec, NB_DB};

pub use super::attacher::{AttachArgs, attacher};
use super::stubs;

/// Where the Docker engine is.
#[derive(Debug, Clone, Args)]
pub struct DockerArgs {
    /// The Docker engine: unix:///PATH or tcp://HOST:PORT (default: $DOCKER_HOST, else
    /// /var/run/docker.sock). Needed only by specs that declare containers.
    #[arg(long, value_name = "URL")]
    pub docker: Option<String>,
    /// Leave containers alone: plan, apply and destroy only the NB (the endpoints, stubs
    /// included, are run by something else or on other hosts)
    #[arg(long, env = "WEPOQ_NO_CONTAINERS", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_containers: bool,
}

/// The container changes of a plan, and what is needed to carry them out.
pub struct ContainerPlan {
    /// `None` when no spec declares a container and no engine answered: nothing to do.
    pub docker: Option<docker::Docker>,
    pub changes: Vec<ContainerChange>,
    /// Desired containers that stay as they are, with their ids: apply still checks that
    /// each is attached.
    pub current: Vec<(ContainerUnit, String)>,
    /// Every desired container, for the readiness wait.
    pub desired: Vec<ContainerUnit>,
    /// wepoq's own image, when a stub container needs it: imported by apply if missing.
    pub self_image: Option<SelfImage>,
    /// Worker containers of the stubs being removed (`destroy`), removed after them.
    pub workers: Vec<String>,
}

impl ContainerPlan {
    /// No containers, and no engine needed.
    pub fn nothing() -> ContainerPlan {
        ContainerPlan {
            docker: None,
            changes: Vec::new(),
            current: Vec::new(),
            desired: Vec::new(),
            self_image: None,
            workers: Vec::new(),
        }
    }

    /// `plan` with this plan's container changes, for showing.
    pub fn shown(&self, plan: &Plan) -> Plan {
        Plan {
            containers: self.changes.clone(),
            ..plan.clone()
        }
    }
}

/// Compares what the specs want with what the Docker host holds. A spec with containers and
/// no engine is refused here, before anything is written; specs without containers need no
/// engine (but one that answers is asked, so containers of a spec that dropped them go).
pub async fn plan(
    compiled: &Compiled,
    args: &DockerArgs,
    adopt: bool,
) -> Result<ContainerPlan, String> {
    let desired: Vec<ContainerUnit> = compiled
        .namespaces
        .iter()
        .flat_map(|ns| ns.containers.iter().cloned())
        .collect();
    plan_for(compiled, desired, args, adopt).await
}

/// The plan that removes every container of the specs' namespaces, for `destroy`.
pub async fn plan_removal(compiled: &Compiled, args: &DockerArgs) -> Result<ContainerPlan, String> {
    if args.no_containers {
        return Ok(ContainerPlan::nothing());
    }
    let declared = compiled
        .namespaces
        .iter()
        .any(|ns| !ns.containers.is_empty());
    let plan = plan_for(compiled, Vec::new(), args, false).await;
    let plan = match plan {
        Ok(mut p) => {
            if let Some(docker) = &p.docker {
                let owners: Vec<String> = compiled.namespaces.iter().map(|ns| ns.owner()).collect();
                p.workers = docker::observe::workers(docker, &owners)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(p)
        }
        e => e,
    };
    match plan {
        Ok(p) if p.docker.is_none() && declared => Err(
            "the specs declare containers but no Docker engine answered: cannot remove them\nhelp: start Docker, or name it with --docker or DOCKER_HOST".into(),
        ),
        other => other,
    }
}

async fn plan_for(
    compiled: &Compiled,
    mut desired: Vec<ContainerUnit>,
    args: &DockerArgs,
    adopt: bool,
) -> Result<ContainerPlan, String> {
    if args.no_containers {
        return Ok(ContainerPlan::nothing());
    }
    let owners: Vec<String> = compiled.namespaces.iter().map(|ns| ns.owner()).collect();
    let self_image = stubs::resolve_self_image(&mut desired)?;
    let docker = match docker::connect(args.docker.as_deref()).await {
        Ok(docker) => docker,
        Err(_) if desired.is_empty() => {
            return Ok(ContainerPlan::nothing());
        }
        Err(e) => {
            return Err(format!(
                "{e}\nhelp: the specs declare {} containers; start Docker, or name it with --docker or DOCKER_HOST",
                desired.len()
            ));
        }
    };
    let units: Vec<&ContainerUnit> = desired.iter().collect();
    // wepoq's own image is imported by apply; the others must be on the host already.
    let others: Vec<&ContainerUnit> = units
        .iter()
        .copied()
        .filter(|u| !stubs::is_self_image(&u.container.image))
        .collect();
    let image_ids = docker::observe::image_ids(&docker, &others)
        .await
        .map_err(|e| match e {
            DockerError::ImagesMissing { .. } => format!(
                "{e}\nhelp: there is no registry to pull from: build or load them first (see examples/ovn-vote/README.md)"
            ),
            e => e.to_string(),
        })?;
    let observed = docker::observe::containers(&docker, &units)
        .await
        .map_err(|e| e.to_string())?;
    let wanted: Vec<containers::Desired<'_>> = desired
        .iter()
        .map(|unit| containers::Desired {
            unit,
            image_id: image_ids.get(&unit.container.image).map(String::as_str),
        })
        .collect();
    let changes = containers::diff(&owners, &wanted, &observed, adopt).map_err(|conflicts| {
        let mut text = String::from("containers stand where wepoq wants its own:");
        for c in conflicts {
            text.push_str(&format!(
                "\n  {} ({}): {}",
                c.name,
                &c.id[..c.id.len().min(12)],
                c.why
            ));
        }
        text.push_str(
            "\nhelp: remove or rename them, or pass --adopt to replace them with wepoq's",
        );
        text
    })?;
    let changed: Vec<&str> = changes.iter().map(|c| c.name.as_str()).collect();
    let current = desired
        .iter()
        .filter(|u| !changed.contains(&u.name.as_str()))
        .filter_map(|u| {
            let seen = observed
                .iter()
                .find(|o| o.name == u.name && o.owner.as_deref() == Some(u.owner.as_str()))?;
            Some((u.clone(), seen.id.clone()))
        })
        .collect();
    Ok(ContainerPlan {
        docker: Some(docker),
        changes,
        current,
        desired,
        self_image,
        workers: Vec::new(),
    })
}

/// Carries out the container changes and says, container by container, what was done and
/// what was not. `Err` when anything failed: the next apply converges from there.
pub async fn apply(
    plan: &ContainerPlan,
    attacher: &dyn docker::apply::Attach,
    host: docker::apply::Host<'_>,
) -> Result<usize, String> {
    let Some(docker) = &plan.docker else {
        return Ok(0);
    };
    if plan.changes.is_empty() && plan.current.is_empty() && plan.workers.is_empty() {
        return Ok(0);
    }
    if let Some(image) = &plan.self_image
        && plan.changes.iter().any(|c| c.unit.is_some())
    {
        image.ensure(docker).await.map_err(|e| {
            format!("{e}\nnote: the NB transaction was applied; no container was changed")
        })?;
    }
    let current: Vec<(&ContainerUnit, String)> =
        plan.current.iter().map(|(u, id)| (u, id.clone())).collect();
    let started = Instant::now();
    let mut outcome = docker::apply::apply(docker, attacher, &plan.changes, &current, host).await;
    // The workers go after their stubs, so that no stub asks for a new one meanwhile.
    for id in &plan.workers {
        if let Err(e) = docker::apply::remove_worker(docker, id).await {
            outcome.failed.push((
                ContainerAction::Remove,
                format!("worker {}", &id[..id.len().min(12)]),
                e,
            ));
        }
    }
    for (action, name) in &outcome.done {
        println!("  {} container {name}", past(*action));
    }
    if outcome.failed.is_empty() {
        if !outcome.done.is_empty() {
            println!(
                "Containers: {} changed in {} ms.",
                outcome.done.len(),
                started.elapsed().as_millis()
            );
        }
        return Ok(outcome.done.len());
    }
    let mut text = format!(
        "{} of {} container changes failed ({} done, listed above):",
        outcome.failed.len(),
        outcome.failed.len() + outcome.done.len(),
        outcome.done.len()
    );
    for (action, name, why) in &outcome.failed {
        text.push_str(&format!("\n  {action:?} {name}: {why}"));
    }
    text.push_str(
        "\nnote: the NB transaction was applied; run apply again to converge the containers",
    );
    Err(text)
}

fn past(action: ContainerAction) -> &'static str {
    match action {
        ContainerAction::Create => "created",
        ContainerAction::Replace => "replaced",
        ContainerAction::Start => "started",
        ContainerAction::Remove => "removed",
    }
}

/// Waits until the logical port of every desired container is bound and `up`; on timeout,
/// names the ports that are not.
pub async fn wait_ports_up(
    client: &ovsdb::Client,
    desired: &[ContainerUnit],
    timeout: Duration,
) -> Result<(), String> {
    if desired.is_empty() {
        return Ok(());
    }
    let mut monitor = client
        .monitor(
            NB_DB,
            MonitorSpec::new().table("Logical_Switch_Port", &["name", "up"]),
        )
        .await
        .map_err(|e| e.to_string())?;
    // The ports not up yet, as the monitored copy shows them.
    let down = |tables: &ovsdb::Tables| -> Vec<String> {
        let up: std::collections::BTreeSet<&str> = tables
            .get("Logical_Switch_Port")
            .into_iter()
            .flat_map(|rows| rows.values())
            .filter(|row| row.get("up").and_then(ovsdb::Value::as_bool) == Some(true))
            .filter_map(|row| row.str("name"))
            .collect();
        desired
            .iter()
            .filter(|u| !up.contains(u.name.as_str()))
            .map(|u| u.name.clone())
            .collect()
    };
    match monitor.wait_for(timeout, |t| down(t).is_empty()).await {
        Ok(()) => Ok(()),
        Err(ovsdb::Error::Timeout { .. }) => Err(format!(
            "not up after {} s: {}",
            timeout.as_secs(),
            monitor.with(down).join(", ")
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// The container part of a saved plan, to carry out as saved (each step is idempotent:
/// a container already created or removed is taken as done by the next plan).
pub async fn from_saved(plan: &Plan, args: &DockerArgs) -> Result<ContainerPlan, String> {
    if args.no_containers {
        return Ok(ContainerPlan::nothing());
    }
    let desired: Vec<ContainerUnit> = plan
        .containers
        .iter()
        .filter_map(|c| c.unit.clone())
        .collect();
    let docker = if plan.containers.is_empty() {
        None
    } else {
        Some(
            docker::connect(args.docker.as_deref())
                .await
                .map_err(|e| e.to_string())?,
        )
    };
    let self_image = stubs::saved_self_image(&desired)?;
    Ok(ContainerPlan {
        docker,
        changes: plan.containers.clone(),
        current: Vec::new(),
        desired,
        self_image,
        workers: Vec::new(),
    })
}

/// One `apply --watch` round for the containers: plan, print and apply what changed.
/// Returns whether it failed (to retry later).
pub async fn watch_round(
    compiled: &Compiled,
    docker: &DockerArgs,
    attach: &AttachArgs,
    nb: &ovsdb::Client,
    spec_hash: &str,
    adopt: bool,
) -> bool {
    let host = docker::apply::Host {
        spec_hash,
        run_dir: &attach.run_dir,
    };
    let plan = match self::plan(compiled, docker, adopt).await {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("error: {e}");
            return true;
        }
    };
    if plan.changes.is_empty() && plan.current.is_empty() {
        return false;
    }
    for change in &plan.changes {
        let why = change
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        println!("  {:?} container {}{why}", change.action, change.name);
    }
    let attacher = match self::attacher(attach, nb.clone()).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return true;
        }
    };
    match apply(&plan, attacher.as_ref(), host).await {
        Ok(_) => false,
        Err(e) => {
            eprintln!("error: {e}");
            true
        }
    }
}
