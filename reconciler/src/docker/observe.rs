//! What a Docker host shows of wepoq's containers: every container that carries a wepoq
//! label or bears a name wepoq wants, reduced to what the container diff reads; and the ids
//! of the images the desired containers name.

use std::collections::{BTreeMap, HashMap};

use bollard::Docker;
use bollard::models::ContainerSummaryStateEnum;
use bollard::query_parameters::ListContainersOptions;
use wepoq_compiler::containers::{ContainerUnit, ObservedContainer};

use super::{CONFIG_HASH_LABEL, DockerError, ENDPOINT_LABEL, OWNER_LABEL};
use crate::agent::workers::{STUB_LABEL, WORKER_LABEL};

/// Every container that matters to `desired`: labelled by wepoq (ours, others', or by hand
/// with only an endpoint label) or named as one of the desired containers.
pub async fn containers(
    docker: &Docker,
    desired: &[&ContainerUnit],
) -> Result<Vec<ObservedContainer>, DockerError> {
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            ..Default::default()
        }))
        .await
        .map_err(DockerError::api("list containers"))?;
    let wanted: std::collections::HashSet<&str> = desired.iter().map(|u| u.name.as_str()).collect();
    let mut seen = Vec::new();
    for c in list {
        let labels = c.labels.unwrap_or_default();
        // Docker reports names with a leading slash.
        let name = c
            .names
            .unwrap_or_default()
            .first()
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default();
        let labelled = labels.contains_key(OWNER_LABEL) || labels.contains_key(ENDPOINT_LABEL);
        // A stub's workers carry its owner label, but they are the agent's to keep: a plan
        // neither wants nor removes them one by one (they go with their stub).
        if labels.contains_key(WORKER_LABEL) || (!labelled && !wanted.contains(name.as_str())) {
            continue;
        }
        seen.push(observed(
            c.id.unwrap_or_default(),
            name,
            &labels,
            c.image_id.unwrap_or_default(),
            c.state == Some(ContainerSummaryStateEnum::RUNNING),
        ));
    }
    seen.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(seen)
}

/// The ids of the worker containers of stubs owned by any of `owners`, in any state: what
/// `destroy` removes after the stubs, so that nothing is left even with no agent running.
pub async fn workers(docker: &Docker, owners: &[String]) -> Result<Vec<String>, DockerError> {
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![WORKER_LABEL.to_string()],
            )])),
            ..Default::default()
        }))
        .await
        .map_err(DockerError::api("list worker containers"))?;
    Ok(list
        .into_iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get(OWNER_LABEL))
                .is_some_and(|o| owners.contains(o))
        })
        .filter_map(|c| c.id)
        .collect())
}

/// Pre-created (created, never started) worker containers, counted by stub name.
pub async fn stem_cells(docker: &Docker) -> Result<HashMap<String, u32>, DockerError> {
    let filters = HashMap::from([
        ("label".to_string(), vec![STUB_LABEL.to_string()]),
        ("status".to_string(), vec!["created".to_string()]),
    ]);
    let listed = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(DockerError::api("list pre-created workers"))?;
    let mut count = HashMap::new();
    for c in listed {
        if let Some(stub) = c.labels.as_ref().and_then(|l| l.get(STUB_LABEL)) {
            *count.entry(stub.clone()).or_insert(0) += 1;
        }
    }
    Ok(count)
}

fn observed(
    id: String,
    name: String,
    labels: &HashMap<String, String>,
    image_id: String,
    running: bool,
) -> ObservedContainer {
    ObservedContainer {
        id,
        name,
        owner: labels.get(OWNER_LABEL).cloned(),
        endpoint: labels.get(ENDPOINT_LABEL).cloned(),
        config_hash: labels.get(CONFIG_HASH_LABEL).cloned(),
        image_id,
        running,
    }
}

/// The id of every image the desired containers name, by name. A missing image is an error
/// naming each one, raised before anything is changed: there is no registry to pull from.
pub async fn image_ids(
    docker: &Docker,
    desired: &[&ContainerUnit],
) -> Result<BTreeMap<String, String>, DockerError> {
    let mut ids = BTreeMap::new();
    let mut missing = Vec::new();
    for unit in desired {
        let image = &unit.container.image;
        if ids.contains_key(image) || missing.contains(image) {
            continue;
        }
        match docker.inspect_image(image).await {
            Ok(found) => {
                ids.insert(image.clone(), found.id.unwrap_or_default());
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                missing.push(image.clone());
            }
            Err(e) => return Err(DockerError::api(format!("inspect image {image}"))(e)),
        }
    }
    if !missing.is_empty() {
        return Err(DockerError::ImagesMissing { images: missing });
    }
    Ok(ids)
}
