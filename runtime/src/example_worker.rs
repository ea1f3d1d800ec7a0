//! An example warm worker built on the worker library: echo, or a small HTTP responder that
//! reports what it learned from the handoff (used by the tests and the benchmark).

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::worker::{Connection, Worker, WorkerError};

/// What the example does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExampleMode {
    /// Write back whatever arrives, until the client closes. (A datagram handoff, the
    /// service's UDP port, is echoed datagram by datagram in every mode.)
    Echo,
    /// Answer one HTTP request with a JSON body describing the connection; a request for
    /// `/crash` aborts the worker mid-connection.
    Http,
}

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static MAX_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Registers from the environment and serves until the stub goes away.
pub fn run(mode: ExampleMode, delay: Duration) -> Result<(), WorkerError> {
    let worker = Worker::from_env()?;
    let id = worker.id().to_owned();
    worker.serve(move |conn| {
        let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
        MAX_IN_FLIGHT.fetch_max(now, Ordering::SeqCst);
        let _ = match (conn.datagram(), mode) {
            // The service's UDP port, whatever the mode: echo every datagram to its sender
            // until the stub stops us.
            (Some(socket), _) => udp_echo(socket),
            (None, ExampleMode::Echo) => echo(conn, delay),
            (None, ExampleMode::Http) => http(conn, delay, &id),
        };
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    })
}

thread_local! {
    /// The echo buffer, allocated once per serving thread rather than zeroed on every
    /// connection (16 KiB of memset per connection showed up in the handoff benchmark).
    static ECHO_BUF: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; 16 * 1024].into_boxed_slice());
}

fn echo(conn: &mut Connection, delay: Duration) -> std::io::Result<()> {
    ECHO_BUF.with_borrow_mut(|buf| echo_with(conn, delay, buf))
}

fn echo_with(conn: &mut Connection, delay: Duration, buf: &mut [u8]) -> std::io::Result<()> {
    let stream = conn.stream();
    let mut first = true;
    loop {
        let n = stream.read(buf)?;
        if n == 0 {
            return Ok(());
        }
        if first && !delay.is_zero() {
            std::thread::sleep(delay);
        }
        first = false;
        stream.write_all(&buf[..n])?;
    }
}

fn udp_echo(socket: &std::net::UdpSocket) -> std::io::Result<()> {
    let mut buf = [0u8; 65536];
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        socket.send_to(&buf[..n], from)?;
    }
}

fn http(conn: &mut Connection, delay: Duration, id: &str) -> std::io::Result<()> {
    let h = conn.handoff().clone();
    let stream = conn.stream();
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    if request.starts_with(b"GET /crash ") {
        // Simulates a worker dying with the connection in its hands (SIGKILL: no core file).
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
    let body = serde_json::json!({
        "worker": id,
        "pid": std::process::id(),
        "conn_id": h.conn_id,
        "remote": h.remote.to_string(),
        "peer": stream.peer_addr()?.to_string(),
        "local": h.local.to_string(),
        "fqdn": h.fqdn,
        "max_in_flight": MAX_IN_FLIGHT.load(Ordering::SeqCst),
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())
}
