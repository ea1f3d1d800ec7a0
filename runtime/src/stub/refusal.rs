//! Saying no explicitly: an HTTP status with Retry-After, or for raw TCP a close.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::stub::Protocol;

/// Connections we may keep open to let a refusal reach the client; beyond it we just close.
const MAX_LINGERING: usize = 512;

/// Why we refuse, which picks the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The queue is full: 429 Too Many Requests.
    QueueFull,
    /// It waited too long: 503 Service Unavailable.
    Expired,
    /// The stub is stopping: 503.
    Stopping,
    /// No worker can be started (the backend keeps failing): 503.
    Unavailable,
}

/// Refuses `stream` and gives it up. Never blocks the caller.
pub fn refuse(
    stream: TcpStream,
    protocol: Protocol,
    why: Refusal,
    retry_after_secs: u64,
    lingering: &Arc<AtomicUsize>,
) {
    if protocol == Protocol::Tcp {
        // Dropping closes: the client reads end-of-stream at once.
        return;
    }
    let status = match why {
        Refusal::QueueFull => "429 Too Many Requests",
        Refusal::Expired | Refusal::Stopping | Refusal::Unavailable => "503 Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nRetry-After: {retry_after_secs}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    // A fresh socket's send buffer always has room for these few bytes.
    let _ = (&stream).write(response.as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
    // Closing with the request still unread would send a reset that can overtake the
    // response, so read and discard for a short, bounded while.
    if lingering.fetch_add(1, Ordering::Relaxed) >= MAX_LINGERING {
        lingering.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let lingering = lingering.clone();
    let Ok(mut stream) = tokio::net::TcpStream::from_std(stream) else {
        lingering.fetch_sub(1, Ordering::Relaxed);
        return;
    };
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(n) = stream.read(&mut buf).await {
                total += n;
                if n == 0 || total > 64 * 1024 {
                    break;
                }
            }
        })
        .await;
        lingering.fetch_sub(1, Ordering::Relaxed);
    });
}
