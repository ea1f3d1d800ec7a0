//! A `wepoq-runtime stub` process with process workers, for benchmarks: started from a
//! given binary on loopback ports, read through its admin endpoint, killed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A stub process, killed on drop.
pub struct ProcessStub {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    dir: PathBuf,
}

impl ProcessStub {
    /// `bin stub --listen 127.0.0.1:0 --admin 127.0.0.1:0 --socket-dir DIR ARGS -- WORKER`,
    /// returned once it printed its ready line.
    pub fn start(bin: &Path, name: &str, args: &[&str], worker: &[&str]) -> ProcessStub {
        let dir = std::env::temp_dir().join(format!("wepoq-bench-{}-{name}", std::process::id()));
        let mut child = Command::new(bin)
            .args([
                "stub",
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--socket-dir",
            ])
            .arg(&dir)
            .args(args)
            .arg("--")
            .args(worker)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start stub");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let line = loop {
            let line = lines.next().expect("stub ready line").unwrap();
            if line.starts_with("wepoq-stub ready") {
                break line;
            }
        };
        // Keep draining stderr so the stub never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let field = |name: &str| {
            line.split(' ')
                .find_map(|f| f.strip_prefix(name))
                .unwrap()
                .to_owned()
        };
        ProcessStub {
            child,
            addr: field("listen=").parse().unwrap(),
            admin: field("admin=").parse().unwrap(),
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One figure from `/metrics`, by its full name (labels included).
    pub fn metric(&self, name: &str) -> f64 {
        let mut s = TcpStream::connect(self.admin).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no metric {name}"))
            .parse()
            .unwrap()
    }

    /// Workers in any state.
    pub fn workers(&self) -> f64 {
        ["starting", "idle", "busy", "marked", "paused"]
            .iter()
            .map(|s| self.metric(&format!("wepoq_workers{{state=\"{s}\"}}")))
            .sum()
    }

    pub fn wait_for(&self, what: &str, f: impl Fn(&ProcessStub) -> bool) {
        let start = Instant::now();
        while !f(self) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for ProcessStub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
