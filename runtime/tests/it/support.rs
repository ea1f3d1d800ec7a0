//! Test helpers: a stub process started from the built binary, and small loopback clients.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_wepoq-runtime");

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A fresh scratch directory for one test.
pub fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wepoq-it-{}-{}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running `wepoq-runtime stub`, killed on drop.
pub struct Stub {
    pub child: Child,
    pub addrs: Vec<SocketAddr>,
    pub udp: Vec<SocketAddr>,
    pub admin: SocketAddr,
    pub socket: PathBuf,
    pub dir: PathBuf,
    pub records: PathBuf,
}

impl Stub {
    /// Starts a stub on loopback port 0 with `args` before `--` and `worker` after it.
    pub fn start(args: &[&str], worker: &[&str]) -> Stub {
        Stub::start_listening(&["127.0.0.1:0"], args, worker)
    }

    pub fn start_listening(listen: &[&str], args: &[&str], worker: &[&str]) -> Stub {
        let dir = scratch();
        let records = dir.join("records.jsonl");
        let mut cmd = Command::new(BIN);
        cmd.arg("stub");
        for l in listen {
            cmd.args(["--listen", l]);
        }
        cmd.args(["--admin", "127.0.0.1:0", "--socket-dir"])
            .arg(dir.join("sock"))
            .arg("--records")
            .arg(&records)
            .args(args)
            .arg("--")
            .args(worker)
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start stub");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("wepoq-stub ready") {
                    let _ = tx.send(line);
                } else {
                    eprintln!("[stub] {line}");
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("stub did not report ready");
        let field = |name: &str| {
            line.split(' ')
                .find_map(|f| f.strip_prefix(name))
                .unwrap()
                .to_owned()
        };
        let addrs_of = |name: &str| -> Vec<SocketAddr> {
            field(name)
                .split(',')
                .filter(|a| !a.is_empty())
                .map(|a| a.parse().unwrap())
                .collect()
        };
        let addrs = addrs_of("listen=");
        let udp = addrs_of("udp=");
        Stub {
            child,
            addrs,
            udp,
            admin: field("admin=").parse().unwrap(),
            socket: PathBuf::from(field("socket=")),
            dir,
            records: records.clone(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The Prometheus text from the admin endpoint.
    pub fn metrics(&self) -> String {
        let (status, _, body) = http_get(self.admin, "/metrics");
        assert_eq!(status, 200);
        body
    }

    /// One sample value, by its full name with labels.
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.metrics();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
            .parse()
            .unwrap()
    }

    /// Polls until `f` holds, panicking with `what` after `within`.
    pub fn wait_for(&self, what: &str, within: Duration, f: impl Fn(&Stub) -> bool) {
        let start = Instant::now();
        while !f(self) {
            assert!(
                start.elapsed() < within,
                "timed out waiting for {what}\n{}",
                self.metrics()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.records)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    pub fn terminate(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plain HTTP/1.0 GET: (status, header block, body). Status 0 means no response at all.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new(), String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(format!("GET {path} HTTP/1.0\r\nHost: t\r\n\r\n").as_bytes());
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_http(&String::from_utf8_lossy(&raw))
}

pub fn parse_http(text: &str) -> (u16, String, String) {
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return (0, String::new(), text.to_owned());
    };
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// Sets SO_LINGER to zero so a close resets instead of leaving TIME_WAIT behind; tests that
/// open tens of thousands of connections would otherwise run out of ports.
pub fn no_linger(s: &TcpStream) {
    let l = nix::sys::socket::sockopt::Linger;
    nix::sys::socket::setsockopt(
        s,
        l,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .unwrap();
}

/// Whether this process may create network namespaces; when CI=true it must.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs root and CI=true is set: it must run, not skip"
    );
    eprintln!("skipping {test}: needs root (network namespaces)");
    false
}
