//! Workers started by the host agent: the backend that speaks the control protocol over the
//! agent's unix socket (`--control PATH`).
//!
//! One task owns the connection. It connects (retrying with backoff until the socket exists
//! and answers), sends `hello` on every connect, writes requests in the order the stub made
//! them and matches answers by id. Exit notices are kept by worker id across reconnects, so
//! an agent that restarts and re-reports its workers loses nothing; requests unanswered when
//! the connection drops fail (the stub backs off a spawn and retries), and requests made
//! while disconnected wait for the next connection.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use crate::backend::{
    BackendError, BoxFuture, ExitNotice, SpawnRequest, Started, Steps, WorkerBackend,
};
use crate::control_proto::{AgentEvent, FromAgent, LineDecoder, Reply, Request, encode};

/// Why the agent did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The agent answered with an error (terminal for this request).
    #[error("agent refused: {0}")]
    Refused(String),
    /// The connection dropped before the answer (retryable: the agent restarts).
    #[error("connection to the agent lost before it answered")]
    Lost,
    /// The backend's task is gone (the stub is shutting down).
    #[error("control connection closed")]
    Closed,
    /// An answer to `spawn` without a worker id.
    #[error("agent's spawn answer has no worker_id")]
    NoWorkerId,
}

impl RemoteError {
    /// Whether asking again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RemoteError::Lost | RemoteError::Closed)
    }
}

/// A request waiting to be written, with where its answer goes.
struct Outgoing {
    op: Op,
    answer: oneshot::Sender<Result<Reply, RemoteError>>,
}

enum Op {
    Spawn {
        concurrency: u32,
        exited: ExitNotice,
    },
    Stop(String),
    Pause(String),
    Resume(String),
}

/// The remote backend; cheap to share, the connection lives in its own task.
#[derive(Debug, Clone)]
pub struct RemoteBackend {
    requests: mpsc::UnboundedSender<Outgoing>,
}

impl RemoteBackend {
    /// Starts the connection task on the current tokio runtime. `endpoint` names this stub
    /// in its `hello`.
    pub fn start(path: PathBuf, endpoint: String) -> RemoteBackend {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(path, endpoint, rx));
        RemoteBackend { requests: tx }
    }

    /// Queues `op` now (so calls act in the order they were made) and waits for its answer.
    fn ask(&self, op: Op) -> BoxFuture<'static, Result<Reply, RemoteError>> {
        let (answer, rx) = oneshot::channel();
        let sent = self.requests.send(Outgoing { op, answer });
        Box::pin(async move {
            sent.map_err(|_| RemoteError::Closed)?;
            rx.await.map_err(|_| RemoteError::Closed)?
        })
    }

    fn control(
        &self,
        op: &'static str,
        worker_id: &str,
        make: fn(String) -> Op,
    ) -> BoxFuture<'static, Result<Steps, BackendError>> {
        let answer = self.ask(make(worker_id.to_owned()));
        let worker_id = worker_id.to_owned();
        Box::pin(async move {
            answer
                .await
                .map(|reply| steps(&reply))
                .map_err(|e| BackendError::Control {
                    op,
                    worker_id,
                    source: Box::new(e),
                })
        })
    }
}

/// The steps' times an answer carries.
fn steps(reply: &Reply) -> Steps {
    let us = |v: Option<u64>| v.map(|v| v as f64);
    Steps {
        create_us: us(reply.create_us),
        start_us: us(reply.start_us),
        unpause_us: us(reply.unpause_us),
    }
}

impl WorkerBackend for RemoteBackend {
    fn spawn(
        &self,
        request: SpawnRequest,
        exited: ExitNotice,
    ) -> BoxFuture<'_, Result<Started, BackendError>> {
        let answer = self.ask(Op::Spawn {
            concurrency: request.concurrency,
            exited,
        });
        Box::pin(async move {
            let reply = answer.await.map_err(|e| BackendError::Spawn {
                source: Box::new(e),
            })?;
            let steps = steps(&reply);
            let worker_id = reply.worker_id.ok_or_else(|| BackendError::Spawn {
                source: Box::new(RemoteError::NoWorkerId),
            })?;
            Ok(Started { worker_id, steps })
        })
    }

    fn stop(&self, worker_id: &str) -> BoxFuture<'static, Result<(), BackendError>> {
        let stopped = self.control("stop", worker_id, Op::Stop);
        Box::pin(async move { stopped.await.map(drop) })
    }

    fn pause(&self, worker_id: &str) -> BoxFuture<'static, Result<(), BackendError>> {
        let paused = self.control("pause", worker_id, Op::Pause);
        Box::pin(async move { paused.await.map(drop) })
    }

    fn resume(&self, worker_id: &str) -> BoxFuture<'static, Result<Steps, BackendError>> {
        self.control("resume", worker_id, Op::Resume)
    }
}

/// A request written and not yet answered.
struct Pending {
    answer: Option<oneshot::Sender<Result<Reply, RemoteError>>>,
    /// For a spawn: kept under the worker's id once the agent names it.
    exited: Option<ExitNotice>,
}

/// The connection task: until every backend handle is dropped.
async fn run(path: PathBuf, endpoint: String, mut requests: mpsc::UnboundedReceiver<Outgoing>) {
    let mut next_id: u64 = 1;
    // Worker id to its exit notice: survives reconnects.
    let mut notices: HashMap<String, ExitNotice> = HashMap::new();
    let mut backoff = Duration::from_millis(20);
    let mut warned = false;
    loop {
        let stream = match UnixStream::connect(&path).await {
            Ok(s) => s,
            Err(e) => {
                if !warned {
                    eprintln!(
                        "wepoq-stub: cannot reach the agent at {}: {e} (retrying)",
                        path.display()
                    );
                    warned = true;
                }
                if requests.is_closed() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(20);
        warned = false;
        let (mut read, mut write) = stream.into_split();
        let mut pending: HashMap<u64, Pending> = HashMap::new();
        let hello = Request::Hello {
            id: next_id,
            endpoint: endpoint.clone(),
        };
        pending.insert(
            next_id,
            Pending {
                answer: None,
                exited: None,
            },
        );
        next_id += 1;
        if write.write_all(&encode(&hello)).await.is_err() {
            continue;
        }
        let mut decoder = LineDecoder::new();
        let mut buf = vec![0u8; 8192];
        let ended = loop {
            tokio::select! {
                outgoing = requests.recv() => {
                    let Some(Outgoing { op, answer }) = outgoing else { return };
                    let id = next_id;
                    next_id += 1;
                    let (request, exited) = match op {
                        Op::Spawn { concurrency, exited } => {
                            (Request::Spawn { id, concurrency }, Some(exited))
                        }
                        Op::Stop(worker_id) => (Request::Stop { id, worker_id }, None),
                        Op::Pause(worker_id) => (Request::Pause { id, worker_id }, None),
                        Op::Resume(worker_id) => (Request::Resume { id, worker_id }, None),
                    };
                    pending.insert(id, Pending { answer: Some(answer), exited });
                    if let Err(e) = write.write_all(&encode(&request)).await {
                        break format!("write failed: {e}");
                    }
                }
                read_result = read.read(&mut buf) => {
                    let n = match read_result {
                        Ok(0) => break "the agent closed the connection".to_owned(),
                        Ok(n) => n,
                        Err(e) => break format!("read failed: {e}"),
                    };
                    decoder.push(&buf[..n]);
                    while let Some(message) = decoder.next_message::<FromAgent>() {
                        match message {
                            Ok(FromAgent::Reply(reply)) => answered(&mut pending, &mut notices, reply),
                            Ok(FromAgent::Event(AgentEvent::Exited { worker_id, why })) => {
                                match notices.remove(&worker_id) {
                                    Some(notice) => notice.exited(why),
                                    None => eprintln!(
                                        "wepoq-stub: agent reports unknown worker {worker_id} ended: {why}"
                                    ),
                                }
                            }
                            Err(e) => eprintln!("wepoq-stub: bad line from the agent: {e}"),
                        }
                    }
                }
            }
        };
        eprintln!("wepoq-stub: control connection lost ({ended}); reconnecting");
        for (_, p) in pending.drain() {
            if let Some(answer) = p.answer {
                let _ = answer.send(Err(RemoteError::Lost));
            }
        }
    }
}

fn answered(
    pending: &mut HashMap<u64, Pending>,
    notices: &mut HashMap<String, ExitNotice>,
    reply: Reply,
) {
    let Some(p) = pending.remove(&reply.id) else {
        eprintln!("wepoq-stub: agent answered unknown request {}", reply.id);
        return;
    };
    let result = match reply.outcome() {
        Ok(_) => {
            if let (Some(exited), Some(worker_id)) = (p.exited, &reply.worker_id) {
                notices.insert(worker_id.clone(), exited);
            }
            Ok(reply)
        }
        Err(why) => Err(RemoteError::Refused(why)),
    };
    match p.answer {
        Some(answer) => {
            let _ = answer.send(result);
        }
        // The hello's answer: nobody waits for it, but a refusal is worth a line.
        None => {
            if let Err(e) = result {
                eprintln!("wepoq-stub: hello: {e}");
            }
        }
    }
}
