//! A stub's control socket: binds `control.sock` in the stub's directory, admits only uid 0
//! peers (SO_PEERCRED: the stub is root in its container, workers are not, so a worker cannot
//! ask for workers) and turns lines into the pool's inputs. One connection at a time: a new
//! one (a restarted stub) replaces the previous.
//!
//! The directory is also the one bind-mounted into the stub's workers (for `stub.sock`), so
//! a worker sees `control.sock`: the file's mode (0700, root's) refuses its connect (EACCES)
//! and SO_PEERCRED refuses any non-root peer that gets past the mode. Both rest on workers
//! never running as uid 0, which the runtime label enforces (`RuntimeLabel::parse`).

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use wepoq_runtime::control_proto::{CONTROL_SOCKET, LineDecoder, Reply, Request, encode};

use super::pool::Input;
use crate::agent::Metrics;

/// The socket file one pool bound: removed when the pool ends unless a newer pool (the same
/// stub name, a new container) has bound its own there meanwhile.
pub struct BoundSocket {
    path: PathBuf,
    inode: u64,
}

/// Removes `socket` if it is still the file this pool bound.
pub fn unbind(socket: &BoundSocket) {
    if std::fs::metadata(&socket.path).is_ok_and(|m| m.ino() == socket.inode) {
        let _ = std::fs::remove_file(&socket.path);
    }
}

/// Makes the stub's directory (0711) and binds its control socket (0700: only root reaches
/// it through the file system, and SO_PEERCRED checks again).
pub fn bind(dir: &Path) -> Result<(UnixListener, BoundSocket), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)
        .map_err(|e| format!("create {}: {e}", dir.display()))?;
    let path = dir.join(CONTROL_SOCKET);
    // A previous agent's socket: nobody listens on it any more.
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).map_err(|e| format!("bind {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    let inode = std::fs::metadata(&path)
        .map_err(|e| format!("stat {}: {e}", path.display()))?
        .ino();
    Ok((listener, BoundSocket { path, inode }))
}

/// Accepts connections until the pool goes away; a refused peer counts as
/// `wepoq_agent_errors_total{kind="control_refused"}`.
pub async fn serve(
    listener: UnixListener,
    pool: mpsc::UnboundedSender<Input>,
    metrics: Arc<Metrics>,
) {
    let mut generation = 0u64;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        if uid != Some(0) {
            metrics.count_error("control_refused");
            eprintln!("wepoq agent: control socket: refused a peer with uid {uid:?} (only root)");
            continue;
        }
        generation += 1;
        let (mut read, mut write) = stream.into_split();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        if pool.send(Input::Connected(generation, out_tx)).is_err() {
            return;
        }
        tokio::spawn(async move {
            while let Some(line) = out_rx.recv().await {
                if write.write_all(&line).await.is_err() {
                    return;
                }
            }
        });
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut decoder = LineDecoder::new();
            let mut buf = vec![0u8; 8192];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => decoder.push(&buf[..n]),
                }
                while let Some(message) = decoder.next_message::<Request>() {
                    let input = match message {
                        Ok(request) => Input::Request(generation, request),
                        Err(e) => Input::Malformed(generation, e.to_string()),
                    };
                    if pool.send(input).is_err() {
                        return;
                    }
                }
            }
            let _ = pool.send(Input::Disconnected(generation));
        });
    }
}

/// The line answering a request that could not be parsed (id unknown: 0).
pub fn malformed(why: &str) -> Vec<u8> {
    encode(&Reply::error(0, format!("bad request: {why}")))
}
