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
//! One file per NB and owner set, under `$WEPOQ_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/wepoq`, else `~/.cache/wepoq` (directory 0700, files 0600: they hold
//! what the NB holds). Files not written for 30 days are removed when another is written.

pub mod codec;

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wepoq_compiler::nb::Table;

pub use codec::CachedRow;

use crate::observe::hex;
use crate::ovsdb::{self, Schema};

/// Where the cached rows of one NB and owner set live. The NB is named by its identity:
/// a clustered NB's cluster id (the same whichever member answers), else its address.
#[derive(Debug, Clone)]
pub struct RowCache {
    path: PathBuf,
    /// Names everything a file's meaning depends on; a file under another key is not read.
    key: String,
}

impl RowCache {
    /// The cache of `owners`' rows in the NB named `url` (its identity: see
    /// `Reconciler::row_cache`), in `dir`.
    pub fn new(dir: &Path, url: &str, owners: &[String], schema: &Schema) -> RowCache {
        let v = schema.version;
        let columns: Vec<String> = Table::ALL
            .iter()
            .map(|t| format!("{}:{}", t.name(), t.managed_columns().join(",")))
            .collect();
        let key = format!(
            "url={url}\nowners={}\nschema={}.{}.{}\ncolumns={}",
            owners.join(" "),
            v.major,
            v.minor,
            v.patch,
            columns.join(";")
        );
        let name = hex(&Sha256::digest(format!("{url}\n{}", owners.join(" ")).as_bytes())[..16]);
        RowCache {
            path: dir.join(format!("{name}.rows")),
            key,
        }
    }

    /// The default directory: `$WEPOQ_CACHE_DIR`, `$XDG_CACHE_HOME/wepoq` or `~/.cache/wepoq`.
    pub fn default_dir() -> Option<PathBuf> {
        let nonempty = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
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
        let Ok(bytes) = std::fs::read(&self.path) else {
            return Vec::new();
        };
        codec::decode(&self.key, &bytes).unwrap_or_default()
    }

    /// Replaces the file with `rows` (each with its `_uuid` and `_version`). Written aside
    /// and renamed, so a reader sees the old file or the new one, never half of one. A cache
    /// that cannot be written only makes the next run slower: the caller may ignore errors.
    pub fn store<'a>(
        &self,
        rows: impl ExactSizeIterator<Item = (Table, &'a ovsdb::Row)>,
    ) -> std::io::Result<()> {
        let Some(bytes) = codec::encode(&self.key, rows) else {
            return Err(std::io::Error::other("a row could not be encoded"));
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        // Unique per process and per call: two writers never share the file set aside.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let aside = self.path.with_extension(format!(
            "{}.{}.tmp",
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ));
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
        prune(dir, std::time::SystemTime::now());
        written
    }
}

/// A file not written for this long belongs to an NB (or a sandbox) that is gone.
const FORGET_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);
/// A file set aside this long ago belongs to a writer that died before renaming it.
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// Removes cache files of NBs not planned against for [`FORGET_AFTER`], and aside files
/// older than [`ABANDONED_AFTER`]: one file per NB address and owner set would otherwise
/// pile up (every throwaway sandbox has an address of its own).
fn prune(dir: &Path, now: std::time::SystemTime) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let limit = match path.extension().and_then(|e| e.to_str()) {
            Some("rows") => FORGET_AFTER,
            Some("tmp") => ABANDONED_AFTER,
            _ => continue,
        };
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok());
        if age.is_some_and(|age| age > limit) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_files_are_pruned_and_others_kept() {
        let dir =
            std::env::temp_dir().join(format!("wepoq-row-cache-prune-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let now = std::time::SystemTime::now();
        let files = [
            ("old.rows", FORGET_AFTER * 2, false),
            ("recent.rows", FORGET_AFTER / 2, true),
            ("x.1.0.tmp", ABANDONED_AFTER * 2, false),
            ("y.1.1.tmp", ABANDONED_AFTER / 2, true),
            ("notes.txt", FORGET_AFTER * 2, true),
        ];
        for (name, age, _) in files {
            let file = std::fs::File::create(dir.join(name)).unwrap();
            file.set_modified(now - age).unwrap();
        }
        prune(&dir, now);
        for (name, _, kept) in files {
            assert_eq!(dir.join(name).exists(), kept, "{name}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
