//! The loopback client of the benchmarks and the server it is compared against: a plain
//! TCP server in the benchmark's own process, answering like the example echo worker.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// connect, 1-byte request, 1-byte reply, close (reset, so no TIME_WAIT piles up).
pub fn round_trip(addr: SocketAddr) -> Duration {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).unwrap();
    nix::sys::socket::setsockopt(
        &s,
        nix::sys::socket::sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .unwrap();
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).expect("one byte back");
    drop(s);
    t.elapsed()
}

/// The `p` quantile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The direct server: `threads` threads accepting on one loopback listener, each serving
/// its connection to the end (read, write back). Stops accepting once `stop` is set.
pub fn start_direct(threads: usize) -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..threads {
        let (l, stop) = (listener.try_clone().unwrap(), stop.clone());
        std::thread::spawn(move || direct_server(l, stop));
    }
    (addr, stop)
}

/// The same server logic as the example echo worker: read, write back, until the client ends.
fn direct_server(listener: TcpListener, stop: Arc<AtomicBool>) {
    let mut buf = [0u8; 64];
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut s) = stream else { continue };
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    }
}
