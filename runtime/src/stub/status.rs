//! The stub's status file: whether it listens and how many workers are registered, rewritten
//! (write to a temporary name, then rename) each time the count changes. A stub container's
//! file sits in its directory on the host, where `wepoq apply` reads it to know the stub is
//! ready, without a network path into the container and without asking the agent.

use std::cell::Cell;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What the file holds (one JSON object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Every listening socket is bound (the file exists only once they are).
    pub listening: bool,
    /// Workers registered on the stub's socket (warm, busy, paused or marked).
    pub registered: usize,
    /// The stub's process id in its own pid namespace: a new value means a restarted stub.
    pub pid: u32,
}

/// Writes the status when it changes; errors are reported once, never fatal to the stub.
pub struct StatusFile {
    path: PathBuf,
    last: Cell<Option<usize>>,
    failed: Cell<bool>,
}

impl StatusFile {
    pub fn new(path: PathBuf) -> StatusFile {
        StatusFile {
            path,
            last: Cell::new(None),
            failed: Cell::new(false),
        }
    }

    /// Records `registered` workers, writing the file if the number changed.
    pub fn update(&self, registered: usize) {
        if self.last.get() == Some(registered) {
            return;
        }
        self.last.set(Some(registered));
        let status = Status {
            listening: true,
            registered,
            pid: std::process::id(),
        };
        if let Err(e) = self.write(&status)
            && !self.failed.replace(true)
        {
            eprintln!("wepoq-stub: cannot write {}: {e}", self.path.display());
        }
    }

    fn write(&self, status: &Status) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(status)?)?;
        std::fs::rename(&tmp, &self.path)
    }

    /// Reads a status file; `None` while there is none (the stub has not bound yet).
    pub fn read(path: &std::path::Path) -> io::Result<Option<Status>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_on_change_and_reads_back() {
        let dir = std::env::temp_dir().join(format!("wepoq-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("status.json");
        assert_eq!(StatusFile::read(&path).unwrap(), None);
        let file = StatusFile::new(path.clone());
        file.update(0);
        assert_eq!(StatusFile::read(&path).unwrap().unwrap().registered, 0);
        file.update(2);
        let status = StatusFile::read(&path).unwrap().unwrap();
        assert_eq!((status.listening, status.registered), (true, 2));
        // Unchanged: not rewritten (removing it proves no write happened).
        std::fs::remove_file(&path).unwrap();
        file.update(2);
        assert_eq!(StatusFile::read(&path).unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
