//! Docker's event stream for the workers' control plane: a worker container that dies is
//! reported to its pool at once, and a stub that starts or dies makes the agent look again,
//! instead of both waiting for the next listing (which stays, as the level-triggered safety
//! net for anything an event missed while the stream was down).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::EventsOptions;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use wepoq_runtime::control_proto::RUNTIME_LABEL;

use super::{STUB_LABEL, WORKER_LABEL};
use crate::docker::Docker;

/// What an event tells the agent.
#[derive(Debug)]
pub enum Notice {
    /// A worker container of stub `stub` ended.
    WorkerDied {
        stub: String,
        worker: String,
        why: String,
    },
    /// A stub container (`id`) started.
    StubStarted { name: String, id: String },
    /// A stub container (`id`) died (or was destroyed) at `at` (Unix ns): its process is
    /// gone, whatever comes next.
    StubDied { name: String, id: String, at: u64 },
}

/// Reads container `start`, `die` and `destroy` events (of containers with `only_label`, when set)
/// into `notices` until the stream ends or `notices` closes. Starts a second back so an
/// event of the listing that preceded it is not missed (seen twice at worst).
pub async fn watch(
    engine: Docker,
    only_label: Option<String>,
    notices: mpsc::UnboundedSender<Notice>,
) {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(Duration::from_secs(1));
    let mut filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        (
            "event".to_owned(),
            ["start", "die", "destroy"].map(str::to_owned).to_vec(),
        ),
    ]);
    // Stubs and workers carry different labels and label filters all have to match, so
    // only the common one filters here; the attributes tell them apart.
    if let Some(only) = only_label {
        filters.insert("label".to_owned(), vec![only]);
    }
    let mut events = engine.events(Some(EventsOptions {
        since: Some(format!("{}.{:09}", since.as_secs(), since.subsec_nanos())),
        until: None,
        filters: Some(filters),
    }));
    while let Some(Ok(event)) = events.next().await {
        let (id, attributes) = event
            .actor
            .map(|a| (a.id.unwrap_or_default(), a.attributes.unwrap_or_default()))
            .unwrap_or_default();
        let action = event.action.as_deref().unwrap_or_default();
        // A stub's `destroy` as well as its `die`: listed right after its `die`, a container
        // being removed may still show as running.
        let died = action == "die" || action == "destroy";
        let notice = if let (Some(stub), Some(worker)) =
            (attributes.get(STUB_LABEL), attributes.get(WORKER_LABEL))
        {
            if action != "die" {
                continue;
            }
            let why = match attributes.get("exitCode") {
                Some(code) => format!("exited ({code})"),
                None => "exited".to_owned(),
            };
            Notice::WorkerDied {
                stub: stub.clone(),
                worker: worker.clone(),
                why,
            }
        } else if attributes.contains_key(RUNTIME_LABEL)
            && let Some(name) = attributes.get("name")
        {
            // Whether a start is a restart, the pool asks Docker (the event replays the last
            // second, so it may be the start the pool already knows).
            if died {
                Notice::StubDied {
                    name: name.clone(),
                    id,
                    at: event
                        .time_nano
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(u64::MAX),
                }
            } else {
                Notice::StubStarted {
                    name: name.clone(),
                    id,
                }
            }
        } else {
            continue;
        };
        if notices.send(notice).is_err() {
            return;
        }
    }
}
