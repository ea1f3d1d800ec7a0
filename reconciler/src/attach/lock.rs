//! One attach or detach of a container at a time, across processes: `wepoq apply` and the
//! host agent both attach the containers they see made, and two attaches of one container
//! at once undo each other's work (the second finds a half-made veth, takes it for stale and
//! deletes it, so the first returns with an interface that is gone).
//!
//! An advisory `flock` on a file per container under [`LOCK_DIR`]: held for the operation,
//! let go when the file is closed, also when its process dies. The files stay (empty, on
//! tmpfs): removing one while another process waits on it would let two in.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use super::AttachError;

/// Host-wide, whatever `--run-dir` says: it is shared by every wepoq on the host, and
/// container ids (in the file names) are unique on a host.
pub const LOCK_DIR: &str = "/run/wepoq/attach-locks";

/// Waits for and takes the lock of host interface `name` (one per container).
pub async fn exclusive(name: &str) -> Result<File, AttachError> {
    let path = PathBuf::from(LOCK_DIR).join(format!("{name}.lock"));
    let what = format!("lock {}", path.display());
    // flock blocks: off the async threads (the other holder may be a task of this runtime).
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(LOCK_DIR)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        loop {
            // SAFETY: flock on a descriptor this File owns, kept open with it.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(file);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    .map_err(AttachError::io(what))
}
