//! Docker as a stream of inputs: the list of labelled containers, then their events, with
//! no gap between the two, again after every reconnect.
//!
//! The time is taken before listing and the event stream asks for events `since` then, so
//! an event that happens while the list is read is replayed rather than lost (seen twice at
//! worst, which a level-triggered consumer does not mind).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::Input;
use crate::docker::{self, DockerError, ENDPOINT_LABEL};

/// Watches Docker at `address` until `inputs` closes; reconnects with backoff.
pub async fn run(
    address: Option<String>,
    only_label: Option<String>,
    inputs: mpsc::UnboundedSender<Input>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match session(address.as_deref(), only_label.as_deref(), &inputs).await {
            Ok(()) => return, // the dispatcher is gone
            Err(e) => {
                if inputs.send(Input::DockerLost(e.to_string())).is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

fn label_filter(only: Option<&str>, extra: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
    // Several label filters must all match.
    let labels = std::iter::once(ENDPOINT_LABEL)
        .chain(only)
        .map(str::to_owned);
    let mut filters = HashMap::from([("label".to_owned(), labels.collect())]);
    for (k, v) in extra {
        filters.insert((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect());
    }
    filters
}

/// One connection: list, then events until the stream fails. `Ok` when the dispatcher is
/// gone.
async fn session(
    address: Option<&str>,
    only: Option<&str>,
    inputs: &mpsc::UnboundedSender<Input>,
) -> Result<(), DockerError> {
    let engine: Docker = docker::connect(address).await?;
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(Duration::from_secs(1));
    let listed = engine
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(label_filter(only, &[])),
            ..Default::default()
        }))
        .await
        .map_err(DockerError::api("list containers"))?;
    let ids = listed.into_iter().filter_map(|c| c.id).collect();
    let mut events = engine.events(Some(EventsOptions {
        since: Some(format!("{}.{:09}", since.as_secs(), since.subsec_nanos())),
        until: None,
        filters: Some(label_filter(
            only,
            &[
                ("type", &["container"]),
                ("event", &["start", "die", "destroy"]),
            ],
        )),
    }));
    if inputs.send(Input::Listed { ids, engine }).is_err() {
        return Ok(());
    }
    while let Some(event) = events.next().await {
        let event = event.map_err(DockerError::api("events"))?;
        let Some(id) = event.actor.and_then(|a| a.id) else {
            continue;
        };
        let at = event
            .time_nano
            .and_then(|n| u64::try_from(n).ok())
            .map(|n| UNIX_EPOCH + Duration::from_nanos(n));
        let input = match event.action.as_deref() {
            Some("start") => Input::Started { id, at },
            _ => Input::Stopped { id },
        };
        if inputs.send(input).is_err() {
            return Ok(());
        }
    }
    Err(DockerError::Unreachable {
        at: address.map_or_else(docker::default_address, str::to_owned),
        source: bollard::errors::Error::IOError {
            err: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "event stream ended"),
        },
    })
}
