//! Runs an unmodified program per connection: systemd socket activation or inetd style.
//!
//! The shim is the registered worker; for each connection it forks, puts the socket where
//! the program expects it (fd 3 with `LISTEN_*`, or stdin/stdout), and execs the program.
//! Synchronous and single-threaded on purpose: forking is only simple without threads.

use std::ffi::{CString, OsString};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;

use crate::frame::Handoff;
use crate::worker::{ENV_CONCURRENCY, ENV_SOCKET, ENV_WORKER_ID, Worker, WorkerError};

/// Where the program finds its connection.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ShimMode {
    /// fd 3, `LISTEN_FDS=1`, `LISTEN_PID`, `LISTEN_FDNAMES=connection`.
    Systemd,
    /// The socket is stdin and stdout.
    Inetd,
}

/// Why the shim stopped.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error("program name is empty or contains a nul byte")]
    Program,
    #[error("fork failed")]
    Fork(#[source] nix::Error),
}

/// Registers with the stub and runs `program` once per connection until the stub goes away.
pub fn run(mode: ShimMode, program: &[OsString]) -> Result<(), ShimError> {
    let args: Vec<CString> = program
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| ShimError::Program))
        .collect::<Result<_, _>>()?;
    let Some(file) = args.first().cloned() else {
        return Err(ShimError::Program);
    };
    // The program sees our environment minus the stub's; a shim takes one connection at a time.
    let base_env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| {
            ![ENV_SOCKET, ENV_WORKER_ID, ENV_CONCURRENCY]
                .iter()
                .any(|w| k == w)
                && !k.as_bytes().starts_with(b"LISTEN_")
        })
        .collect();
    let worker = {
        let path = std::env::var_os(ENV_SOCKET).ok_or(WorkerError::Env { var: ENV_SOCKET })?;
        let id =
            std::env::var(ENV_WORKER_ID).unwrap_or_else(|_| format!("pid-{}", std::process::id()));
        Worker::connect(std::path::Path::new(&path), &id, 1)?
    };
    while let Some(mut conn) = worker.accept()? {
        let env = connection_env(&base_env, conn.handoff(), mode);
        let stream = conn.take_fd().expect("fresh connection has its socket");
        let raw = stream.as_raw_fd();
        // SAFETY: this process has a single thread, so the child may allocate and exec.
        match unsafe { nix::unistd::fork() }.map_err(ShimError::Fork)? {
            nix::unistd::ForkResult::Child => exec_child(raw, mode, &file, &args, env),
            nix::unistd::ForkResult::Parent { child } => {
                drop(stream);
                while let Err(nix::errno::Errno::EINTR) = nix::sys::wait::waitpid(child, None) {}
            }
        }
        // Dropping `conn` reports done.
    }
    Ok(())
}

fn connection_env(base: &[(OsString, OsString)], h: &Handoff, mode: ShimMode) -> Vec<CString> {
    let mut env: Vec<CString> = base
        .iter()
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let mut add = |k: &str, v: String| {
        if let Ok(c) = CString::new(format!("{k}={v}")) {
            env.push(c);
        }
    };
    if h.datagram {
        // The bound UDP socket itself: no peer, the program reads datagrams from anyone.
        add("PROTO", "UDP".into());
        add("UDPLOCALIP", h.local.ip().to_string());
        add("UDPLOCALPORT", h.local.port().to_string());
    } else {
        add("REMOTE_ADDR", h.remote.ip().to_string());
        add("REMOTE_PORT", h.remote.port().to_string());
        add("PROTO", "TCP".into());
        add("TCPREMOTEIP", h.remote.ip().to_string());
        add("TCPREMOTEPORT", h.remote.port().to_string());
        add("TCPLOCALIP", h.local.ip().to_string());
        add("TCPLOCALPORT", h.local.port().to_string());
    }
    add("WEPOQ_CONN_ID", h.conn_id.to_string());
    add("WEPOQ_FQDN", h.fqdn.clone());
    add("WEPOQ_DEADLINE_UNIX_NS", h.deadline_unix_ns.to_string());
    if mode == ShimMode::Systemd {
        add("LISTEN_FDS", "1".into());
        // systemd's names: an accepted connection (Accept=yes) or the listening datagram
        // socket (Accept=no).
        let name = if h.datagram { "datagram" } else { "connection" };
        add("LISTEN_FDNAMES", name.into());
    }
    env
}

fn exec_child(
    raw: i32,
    mode: ShimMode,
    file: &CString,
    args: &[CString],
    mut env: Vec<CString>,
) -> ! {
    // SAFETY: plain syscalls on descriptors this process owns, between fork and exec.
    unsafe {
        // The program must not outlive a shim that is stopped or crashes.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // Rust starts us with SIGPIPE ignored, and an ignored signal survives exec; the
        // program expects the default.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let targets: &[i32] = match mode {
            ShimMode::Systemd => &[3],
            ShimMode::Inetd => &[0, 1],
        };
        for &t in targets {
            if raw == t {
                // Already in place, but close-on-exec: clear that, or exec would close it.
                libc::fcntl(t, libc::F_SETFD, 0);
            } else if libc::dup2(raw, t) < 0 {
                libc::_exit(126);
            }
        }
        if !targets.contains(&raw) {
            libc::close(raw);
        }
        let t = targets[0];
        let flags = libc::fcntl(t, libc::F_GETFL);
        libc::fcntl(t, libc::F_SETFL, flags & !libc::O_NONBLOCK);
    }
    if mode == ShimMode::Systemd {
        // LISTEN_PID must be the program's pid, which exec keeps: ours, now.
        if let Ok(c) = CString::new(format!("LISTEN_PID={}", std::process::id())) {
            env.push(c);
        }
    }
    let err = nix::unistd::execvpe(file, args, &env).unwrap_err();
    eprintln!("wepoq shim: cannot exec {}: {err}", file.to_string_lossy());
    // SAFETY: leave without running the parent's atexit handlers or destructors.
    unsafe { libc::_exit(127) }
}
