//! Shared test helpers: loading cases, finding external programs, temp dirs.

use std::path::{Path, PathBuf};
use std::process::Command;

use wepoq_compiler::{Compiled, Diagnostic, Input, Sources, compile};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether an external program is there. Under CI it must be: a missing one fails the test
/// rather than skipping it; on a developer machine the test skips with the reason printed.
pub fn require(program: &str, why: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{program} is required under CI ({why}); .ci/run installs it");
        }
        eprintln!("skipping: {program} is not installed ({why})");
    }
    found
}

/// A case: a directory holding one or more `wepoq.yaml` (one namespace each), each with an
/// optional `wepoq.lock` beside it.
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub specs: Vec<PathBuf>,
}

fn specs_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "wepoq.yaml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

pub fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (prefix, root) in [
        ("example-", repo().join("examples")),
        ("", repo().join("tests/data")),
    ] {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for dir in dirs {
            let name = format!("{prefix}{}", dir.file_name().unwrap().to_string_lossy());
            cases.push(Case {
                name,
                specs: specs_under(&dir),
                dir,
            });
        }
    }
    cases
}

impl Case {
    pub fn is_bad(&self) -> bool {
        self.name.starts_with("bad-")
    }

    /// Compiles the case; file names in diagnostics are relative to the case directory, so
    /// snapshots do not depend on where the repository lives.
    pub fn compile(&self) -> (Sources, Result<Compiled, Vec<Diagnostic>>) {
        let mut sources = Sources::new();
        let mut inputs = Vec::new();
        for spec in &self.specs {
            let rel = spec.strip_prefix(&self.dir).unwrap().display().to_string();
            // Bytes, as the CLI reads them: a case may hold text that is not UTF-8.
            let spec_id = sources.add_bytes(rel.clone(), std::fs::read(spec).unwrap());
            let lock = spec.with_file_name("wepoq.lock");
            let lock_id = lock.exists().then(|| {
                let rel = lock.strip_prefix(&self.dir).unwrap().display().to_string();
                sources.add_bytes(rel, std::fs::read(&lock).unwrap())
            });
            inputs.push(Input {
                spec: spec_id,
                lock: lock_id,
            });
        }
        let result = compile(&sources, &inputs);
        (sources, result)
    }
}

pub fn compile_text(spec: &str, lock: Option<&str>) -> Result<Compiled, Vec<Diagnostic>> {
    let mut sources = Sources::new();
    let spec = sources.add("wepoq.yaml", spec);
    let lock = lock.map(|l| sources.add("wepoq.lock", l));
    compile(&sources, &[Input { spec, lock }])
}

/// A directory under the system temp dir, removed when the test process exits (tests hold
/// paths into it, so it outlives the value that made it: see `cleanup`).
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wepoq-test-{}-{tag}-{}",
        std::process::id(),
        unique()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes this process's temp dirs once every test has run (registered at first use).
#[used]
#[unsafe(link_section = ".fini_array")]
static CLEANUP: extern "C" fn() = cleanup;

extern "C" fn cleanup() {
    let prefix = format!("wepoq-test-{}-", std::process::id());
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Runs `named-checkzone` on a zone text; returns its output on failure.
pub fn check_zone(origin: &str, zone: &str) -> Result<(), String> {
    let dir = temp_dir("zone");
    let file = dir.join("zone");
    std::fs::write(&file, zone).unwrap();
    let out = Command::new("named-checkzone")
        .arg(origin)
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The spec without its `container:` blocks: each goes with the lines indented deeper.
pub fn without_containers(spec: &str) -> String {
    wepoq_reconciler::sandbox::without_blocks(spec, "container")
}

/// An example's spec with its containers left out (tests whose endpoints are not containers,
/// or that have no OVS to attach them to).
pub fn example_without_containers(name: &str) -> String {
    let spec =
        std::fs::read_to_string(repo().join("examples").join(name).join("wepoq.yaml")).unwrap();
    without_containers(&spec)
}

/// `wepoq` for the tests of the NB alone: containers (stubs of runtime sides included) are
/// left to the container tests (`--no-containers`).
pub fn wepoq_nb_only() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wepoq"));
    cmd.env("WEPOQ_NO_CONTAINERS", "1");
    cmd
}

/// A loopback address with a port nobody listens on just now (for a child's --admin).
pub fn free_loopback_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// `GET path` over HTTP/1.0 from `addr`: the whole response, or `None` if nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}
