//! Traffic for benchmarks through a sandbox's data plane: a TCP server that echoes or sinks,
//! and the clients that time round trips and bulk transfers against it. Everything runs as
//! threads of the calling process: a socket made inside a namespace ([`in_netns`]) stays
//! there, whichever thread then uses it.
//!
//! The protocol is one mode byte after connecting: `E` echoes every byte back (round
//! trips), `B` counts bytes until the client shuts its side, then answers the count as a
//! big-endian u64 (bulk throughput, measured at the receiver).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::attach::netns::Netns;

const ECHO: u8 = b'E';
const BULK: u8 = b'B';
const CHUNK: usize = 64 * 1024;

/// Runs `f` on a thread inside network namespace `netns` (a name under /var/run/netns).
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    Netns::open(&Path::new("/var/run/netns").join(netns))?.run_inside(f)
}

/// Serves the echo/bulk protocol on `listener` on background threads (one per connection),
/// for the life of the process.
pub fn serve(listener: TcpListener) -> io::Result<()> {
    std::thread::Builder::new()
        .name("traffic-serve".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = std::thread::Builder::new()
                    .name("traffic-conn".into())
                    .spawn(move || serve_one(stream));
            }
        })?;
    Ok(())
}

fn serve_one(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut mode = [0u8];
    stream.read_exact(&mut mode)?;
    let mut buf = vec![0u8; CHUNK];
    match mode[0] {
        ECHO => loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            stream.write_all(&buf[..n])?;
        },
        BULK => {
            let mut total = 0u64;
            loop {
                let n = stream.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            stream.write_all(&total.to_be_bytes())
        }
        _ => Ok(()),
    }
}

/// One round trip of one byte on a fresh echo connection (`timeout` for each step): what
/// "reachable" means to a benchmark.
pub fn echo_once(to: SocketAddr, timeout: Duration) -> io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&to, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    stream.write_all(&[ECHO, 7])?;
    let mut got = [0u8];
    stream.read_exact(&mut got)?;
    if got[0] != 7 {
        return Err(io::Error::other("echo answered the wrong byte"));
    }
    Ok(())
}

/// Polls [`echo_once`] until it succeeds or `limit` passes; the time it took.
pub fn until_echo(to: SocketAddr, limit: Duration) -> io::Result<Duration> {
    let start = Instant::now();
    loop {
        match echo_once(to, Duration::from_millis(200)) {
            Ok(()) => return Ok(start.elapsed()),
            Err(e) if start.elapsed() > limit => {
                return Err(io::Error::other(format!(
                    "no echo from {to} within {limit:?}: {e}"
                )));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// `count` round trips of `size` bytes on one connection (after `count / 10` unmeasured
/// ones), sorted (for `wepoq_runtime::bench::loopback::percentile`).
pub fn round_trips(to: SocketAddr, size: usize, count: usize) -> io::Result<Vec<Duration>> {
    let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(&[ECHO])?;
    let message = vec![0x5au8; size];
    let mut back = vec![0u8; size];
    let mut samples = Vec::with_capacity(count);
    for i in 0..count + count / 10 {
        let start = Instant::now();
        stream.write_all(&message)?;
        stream.read_exact(&mut back)?;
        if i >= count / 10 {
            samples.push(start.elapsed());
        }
    }
    samples.sort();
    Ok(samples)
}

/// One TCP stream sending for `duration`; the bytes the receiver counted per second of the
/// whole transfer (until its count came back), in Mbit/s.
pub fn bulk(to: SocketAddr, duration: Duration) -> io::Result<f64> {
    let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(&[BULK])?;
    let chunk = vec![0xa5u8; CHUNK];
    let start = Instant::now();
    while start.elapsed() < duration {
        stream.write_all(&chunk)?;
    }
    stream.shutdown(Shutdown::Write)?;
    let mut count = [0u8; 8];
    stream.read_exact(&mut count)?;
    let bytes = u64::from_be_bytes(count);
    Ok(bytes as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_and_bulk_over_loopback() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        serve(listener).unwrap();
        echo_once(to, Duration::from_secs(2)).unwrap();
        let rtts = round_trips(to, 64, 100).unwrap();
        assert_eq!(rtts.len(), 100);
        assert!(rtts.windows(2).all(|w| w[0] <= w[1]), "sorted");
        let mbits = bulk(to, Duration::from_millis(100)).unwrap();
        assert!(mbits > 1.0, "loopback moved {mbits} Mbit/s");
    }
}
