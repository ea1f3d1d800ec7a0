//! The client against a scripted in-process server: framing across reads, echo, probes, rpc errors
//!
//! These need no OVS at all, so they run everywhere.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use wepoq_reconciler::ovsdb::{Client, Error, FrameDecoder, Timeouts};

fn socket_path() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "wepoq-fake-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// One side of a scripted conversation.
struct Peer {
    stream: UnixStream,
    buf: Vec<u8>,
    decoder: FrameDecoder,
}

impl Peer {
    async fn accept(listener: &UnixListener) -> Peer {
        let (stream, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("client connects")
            .unwrap();
        Peer {
            stream,
            buf: Vec::new(),
            decoder: FrameDecoder::new(),
        }
    }

    /// Accepts and answers the client's first request, the `_Server` monitor, as a
    /// standalone server does.
    async fn accept_ready(listener: &UnixListener) -> Peer {
        let mut peer = Peer::accept(listener).await;
        let first = peer.read().await;
        assert_eq!(first["method"], "monitor_cond");
        assert_eq!(first["params"][0], "_Server");
        let row = json!({"name": "OVN_Northbound", "model": "standalone", "connected": true, "leader": true});
        peer.write(&json!({"id": first["id"], "error": null, "result": {"Database": {"00000001-0000-4000-8000-000000000000": {"initial": row}}}}))
            .await;
        peer
    }

    async fn read(&mut self) -> Json {
        loop {
            if let Some((msg, used)) = self.decoder.decode(&self.buf).unwrap() {
                self.buf.drain(..used);
                return msg;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
                .await
                .expect("a message")
                .unwrap();
            assert!(n > 0, "client hung up");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn write(&mut self, msg: &Json) {
        self.stream
            .write_all(msg.to_string().as_bytes())
            .await
            .unwrap();
    }

    /// Writes one byte at a time: the client must reassemble messages across reads.
    async fn dribble(&mut self, msg: &Json) {
        for b in msg.to_string().as_bytes() {
            self.stream.write_all(&[*b]).await.unwrap();
            self.stream.flush().await.unwrap();
        }
    }
}

#[tokio::test]
async fn answers_echo_and_reassembles_split_replies() {
    let path = socket_path();
    let listener = UnixListener::bind(&path).unwrap();
    let url = format!("unix:{}", path.display());
    let (client, mut server) = tokio::join!(
        Client::connect(&url, Timeouts::default()),
        Peer::accept_ready(&listener)
    );
    let client = client.unwrap();

    server
        .write(&json!({"method": "echo", "params": ["x"], "id": "e1"}))
        .await;
    assert_eq!(
        server.read().await,
        json!({"result": ["x"], "error": null, "id": "e1"})
    );

    let call = tokio::spawn({
        let client = client.clone();
        async move { client.list_dbs().await }
    });
    let request = server.read().await;
    assert_eq!(request["method"], "list_dbs");
    // A notification for a monitor nobody has, then the reply, both in single bytes.
    server
        .dribble(&json!({"method": "update2", "params": ["nobody", {}], "id": null}))
        .await;
    server
        .dribble(&json!({"id": request["id"], "result": ["A", "B"], "error": null}))
        .await;
    assert_eq!(call.await.unwrap().unwrap(), ["A", "B"]);
    assert_eq!(client.stats().echo_replies, 1);

    // A request the client does not know is refused, not ignored.
    server
        .write(&json!({"method": "frobnicate", "params": [], "id": 99}))
        .await;
    let refusal = server.read().await;
    assert_eq!(refusal["id"], 99);
    assert!(!refusal["error"].is_null());
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn probes_a_silent_server_then_reconnects() {
    let path = socket_path();
    let listener = UnixListener::bind(&path).unwrap();
    let timeouts = Timeouts {
        probe: Some(Duration::from_millis(200)),
        reconnect_min: Duration::from_millis(20),
        request: Duration::from_secs(5),
        ..Timeouts::default()
    };
    let url = format!("unix:{}", path.display());
    let (client, mut first) = tokio::join!(
        Client::connect(&url, timeouts),
        Peer::accept_ready(&listener)
    );
    let client = client.unwrap();
    // Silence makes the client probe; an unanswered probe makes it drop the connection.
    let probe = first.read().await;
    assert_eq!(probe["method"], "echo");
    let mut second = Peer::accept_ready(&listener).await;
    // The client counts the connect once its side returns, which may be just after accept.
    for _ in 0..100 {
        if client.stats().connects == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(client.stats().connects, 2);

    // Server-side errors come back as terminal rpc errors.
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.schema("Nope").await }
    });
    let request = second.read().await;
    assert_eq!(request["method"], "get_schema");
    second.write(&json!({"id": request["id"], "result": null, "error": {"error": "unknown database", "details": "Nope"}})).await;
    let err = call.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::Rpc { error, .. } if error == "unknown database: Nope"),
        "{err}"
    );
    assert!(!err.is_retryable());

    // A connection that dies under a request fails it as retryable.
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.list_dbs().await }
    });
    let _ = second.read().await;
    drop(second);
    let err = call.await.unwrap().unwrap_err();
    assert!(
        matches!(err, Error::ConnectionLost { .. }) && err.is_retryable(),
        "{err}"
    );
    drop(first);
    std::fs::remove_file(&path).unwrap();
}
