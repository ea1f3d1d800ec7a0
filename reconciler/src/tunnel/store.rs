//! The gateway's key store: its own private key and the public key of every client it
//! accepts, under `WEPOQ_TUNNEL_STORE` (default /var/lib/wepoq/tunnel). Directories 0700,
//! files 0600. Revoking a client deletes its public key; a running gateway notices within a
//! second ([`super::gateway`] reloads the store).
//!
//! ```text
//! <store>/gateway.key                 the gateway's private key
//! <store>/clients/<client FQDN>.pub   one accepted client
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use boringtun::x25519::{PublicKey, StaticSecret};

use super::{files, keys};

pub const DEFAULT_STORE: &str = "/var/lib/wepoq/tunnel";
pub const STORE_ENV: &str = "WEPOQ_TUNNEL_STORE";

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// An FQDN is a file name here: DNS characters only.
fn check_fqdn(fqdn: &str) -> Result<(), String> {
    let ok = !fqdn.is_empty()
        && fqdn.len() <= 253
        && !fqdn.starts_with('.')
        && fqdn
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!("`{fqdn}` is not an endpoint FQDN"))
    }
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    /// `$WEPOQ_TUNNEL_STORE`, else the default.
    pub fn from_env() -> Store {
        Store::new(
            std::env::var_os(STORE_ENV).map_or_else(|| PathBuf::from(DEFAULT_STORE), PathBuf::from),
        )
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn clients_dir(&self) -> PathBuf {
        self.dir.join("clients")
    }

    /// The gateway's private key, made on first use.
    pub fn gateway_secret(&self) -> Result<StaticSecret, String> {
        let path = self.dir.join("gateway.key");
        let err = |e: std::io::Error| format!("{}: {e}", path.display());
        if path.exists() {
            let text = files::read_secret(&path).map_err(err)?;
            return keys::secret_from(&text).map_err(|e| format!("{}: {e}", path.display()));
        }
        files::private_dir(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let secret = keys::generate();
        files::write_secret(&path, &(keys::encode(&secret.to_bytes()) + "\n"), false)
            .map_err(err)?;
        Ok(secret)
    }

    /// Accepts `fqdn` with `public` from now on (replacing an earlier key of it).
    pub fn authorize(&self, fqdn: &str, public: &PublicKey) -> Result<(), String> {
        check_fqdn(fqdn)?;
        let dir = self.clients_dir();
        files::private_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(format!("{fqdn}.pub"));
        files::write_secret(&path, &(keys::encode(public.as_bytes()) + "\n"), true)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Stops accepting `fqdn`; false when it was not accepted.
    pub fn revoke(&self, fqdn: &str) -> Result<bool, String> {
        check_fqdn(fqdn)?;
        let path = self.clients_dir().join(format!("{fqdn}.pub"));
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// When the set of accepted clients last changed: the clients directory's mtime, which
    /// every [`Store::authorize`] (a rename into it) and [`Store::revoke`] (an unlink)
    /// moves. `None` when there is no such directory yet.
    pub fn clients_changed(&self) -> Option<std::time::SystemTime> {
        std::fs::metadata(self.clients_dir())
            .and_then(|m| m.modified())
            .ok()
    }

    /// Every accepted client's public key. Unreadable entries are skipped and reported.
    pub fn clients(&self) -> (BTreeMap<String, PublicKey>, Vec<String>) {
        let mut found = BTreeMap::new();
        let mut problems = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.clients_dir()) else {
            return (found, problems);
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(fqdn) = name.strip_suffix(".pub") else {
                continue;
            };
            match std::fs::read_to_string(entry.path())
                .map_err(|e| e.to_string())
                .and_then(|t| keys::public_from(&t))
            {
                Ok(key) => {
                    found.insert(fqdn.to_owned(), key);
                }
                Err(e) => problems.push(format!("{}: {e}", entry.path().display())),
            }
        }
        (found, problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_private_files_and_revoke_removes_the_client() {
        let dir = std::env::temp_dir().join(format!("wepoq-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::new(&dir);
        let secret = store.gateway_secret().unwrap();
        assert_eq!(
            store.gateway_secret().unwrap().to_bytes(),
            secret.to_bytes()
        );
        let public = keys::public_of(&keys::generate());
        assert_eq!(store.clients_changed(), None, "no client yet");
        store.authorize("c1.cli.a.ns.wepoq.net", &public).unwrap();
        let stamp = store
            .clients_changed()
            .expect("a stamp once a client is accepted");
        assert!(store.authorize("../x", &public).is_err());
        for path in [
            dir.join("gateway.key"),
            dir.join("clients/c1.cli.a.ns.wepoq.net.pub"),
        ] {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(store.clients().0.len(), 1);
        // File times tick coarsely: the revoke must come later than the stamp to move it.
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(store.revoke("c1.cli.a.ns.wepoq.net").unwrap());
        assert_ne!(
            store.clients_changed(),
            Some(stamp),
            "revoke moves the stamp"
        );
        assert!(store.clients().0.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
