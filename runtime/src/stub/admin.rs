//! The local admin endpoint: `GET /metrics` in Prometheus text format, nothing else.
//! [`serve_routes`] is the same small HTTP server for other paths (the host agent adds a
//! health check).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// A path to (status, body), `None` for 404.
pub type Route = Arc<dyn Fn(&str) -> Option<(u16, String)> + Send + Sync>;

/// Serves scrapes until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    serve_routes(
        listener,
        Arc::new(move |path: &str| (path == "/metrics").then(|| (200, metrics.render()))),
    )
    .await
}

/// Answers `GET PATH` with what `route` gives for PATH: a status and a text body (404 for
/// `None`). Serves until the task is dropped.
pub async fn serve_routes(listener: TcpListener, route: Route) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let route = route.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1024);
            let read = tokio::time::timeout(Duration::from_secs(2), async {
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                true
            })
            .await;
            if read != Ok(true) {
                return;
            }
            let path = buf
                .strip_prefix(b"GET ")
                .and_then(|rest| rest.split(|b| *b == b' ').next())
                .map(String::from_utf8_lossy);
            let response = if let Some((status, body)) = path.and_then(|p| route(&p)) {
                let reason = if status == 200 {
                    "OK"
                } else {
                    "Service Unavailable"
                };
                format!(
                    "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
