//! A copy of the owned rows on local disk, so that a one-shot `plan` or `apply` reads only
//! what changed since the last run.
//!
//! Reading every owned row is the server's most expensive answer: on a 50k-row NB,
//! ovsdb-server alone spends about a second building the JSON. Listing the rows' `_uuid` and
//! `_version` costs it about half that, and OVSDB gives every row a new `_version` whenever
//! any of its columns changes. So a cached row whose `_uuid` and `_version` the server still
//! lists is exactly the row the server holds, and only the rest are fetched. Nothing is
//! trusted that the server did not confirm in this run: a stale, foreign or damaged file
//! costs a full read, never a wrong plan.
//!
//! One file per NB address and owner set, under `$WEPOQ_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/wepoq`, else `~/.cache/wepoq` (directory 0700, files 0600: they hold
//! what the NB holds).

pub mod codec;

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wepoq_compiler::nb::Table;

pub use codec::CachedRow;

use crate::ovsdb::{self, Schema};

/// Where the cached rows of one NB address and owner set live.
#[derive(Debug, Clone)]
pub struct RowCache {
    path: PathBuf,
    /// Names everything a file's meaning depends on; a file under another key is not read.
    key: String,
}

impl RowCache {
    /// The cache of `owners`' rows in the NB at `url`, in `dir`.
    pub fn new(dir: &Path, url: &str, owners: &[String], schema: &Schema) -> RowCache {
        let v = schema.version;
        let columns: Vec<String> = Table::ALL.iter().map(|t| format!("{}:{}", t.name(), t.managed_columns().join(","))).collect();
        let key = format!("url={url}\nowners={}\nschema={}.{}.{}\ncolumns={}", owners.join(" "), v.major, v.minor, v.patch, columns.join(";"));
        let name = hex(&Sha256::digest(format!("{url}\n{}", owners.join(" ")).as_bytes()));
        RowCache { path: dir.join(format!("{}.rows", &name[..32])), key }
    }

    /// The default directory: `$WEPOQ_CACHE_DIR`, `$XDG_CACHE_HOME/wepoq` or `~/.cache/wepoq`.
    pub fn default_dir() -> Option<PathBuf> {
        let nonempty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        nonempty("WEPOQ_CACHE_DIR")
            .or_else(|| nonempty("XDG_CACHE_HOME").map(|d| d.join("wepoq")))
            .or_else(|| nonempty("HOME").map(|d| d.join(".cache").join("wepoq")))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cached rows; none when there is no file, or one that is damaged or was written
    /// for something else.
    pub fn load(&self) -> Vec<CachedRow> {
        // A file others could have written is not believed: it could hide drift.
        let private = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.mode() & 0o022 == 0);
        if !private(&self.path) || !self.path.parent().is_some_and(private) {
            return Vec::new();
        }
        let Ok(bytes) = std::fs::read(&self.path) else { return Vec::new() };
        codec::decode(&self.key, &bytes).unwrap_or_default()
    }

    /// Replaces the file with `rows` (each with its `_uuid` and `_version`). Written aside
    /// and renamed, so a reader sees the old file or the new one, never half of one. A cache
    /// that cannot be written only makes the next run slower: the caller may ignore errors.
    pub fn store<'a>(&self, rows: impl ExactSizeIterator<Item = (Table, &'a ovsdb::Row)>) -> std::io::Result<()> {
        let Some(bytes) = codec::encode(&self.key, rows) else {
            return Err(std::io::Error::other("a row could not be encoded"));
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        // Unique per process and per call: two writers never share the file set aside.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let aside = self.path.with_extension(format!("{}.{}.tmp", std::process::id(), WRITES.fetch_add(1, Ordering::Relaxed)));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&aside)
            .and_then(|mut f| f.write_all(&bytes))
            .and_then(|()| std::fs::rename(&aside, &self.path));
        if written.is_err() {
            let _ = std::fs::remove_file(&aside);
        }
        written
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
