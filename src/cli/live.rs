//! What the commands that talk to a live NB share: the `--db` option, connecting, turning a
//! compilation into desired rows, asking for confirmation, and explaining failures.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use wepoq_compiler::Compiled;
use wepoq_reconciler::ovsdb::{self, Remotes, Timeouts, TlsConfig, TlsFiles};
use wepoq_reconciler::reconcile::{Desired, ReconcileError, Reconciler};
use wepoq_reconciler::row_cache::RowCache;

/// Where the OVN Northbound database is, and how to authenticate to it.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// The NB: `unix:PATH`, `tcp:HOST:PORT`, `ssl:HOST:PORT`, or a comma-separated list of
    /// them (the members of a clustered NB: the leader is found and followed) (default:
    /// $WEPOQ_DB, else $OVN_NB_DB)
    #[arg(long, env = "WEPOQ_DB", value_name = "URLS")]
    pub db: Option<String>,
    /// Private key for `ssl:` remotes (PEM) [env: WEPOQ_PRIVATE_KEY]
    #[arg(long, env = "WEPOQ_PRIVATE_KEY", value_name = "FILE", hide_env = true)]
    pub private_key: Option<PathBuf>,
    /// Certificate for that key (PEM), signed by the CA the NB trusts [env: WEPOQ_CERTIFICATE]
    #[arg(long, env = "WEPOQ_CERTIFICATE", value_name = "FILE", hide_env = true)]
    pub certificate: Option<PathBuf>,
    /// CA certificate (PEM) that signed the NB's certificate; the chain is checked, not
    /// the host name, as OVS does [env: WEPOQ_CA_CERT]
    #[arg(long, env = "WEPOQ_CA_CERT", value_name = "FILE", hide_env = true)]
    pub ca_cert: Option<PathBuf>,
    /// Time limit for each request to the NB, e.g. 30s
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Read every owned row from the NB instead of only those changed since the last run
    /// (the row cache lives in $WEPOQ_CACHE_DIR, else $XDG_CACHE_HOME/wepoq or ~/.cache/wepoq)
    #[arg(long)]
    pub no_cache: bool,
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    wepoq_compiler::lower::parse_duration_ms(text)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is not a duration (e.g. 500ms, 30s, 5m)"))
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}

impl DbArgs {
    /// `--db`, else $WEPOQ_DB (both through clap), else $OVN_NB_DB, which OVN users
    /// already set for ovn-nbctl.
    pub fn remotes_text(&self) -> Option<String> {
        self.db
            .clone()
            .or_else(|| std::env::var("OVN_NB_DB").ok().filter(|v| !v.is_empty()))
    }

    pub fn tls(&self, remotes: &Remotes) -> Result<Option<TlsConfig>, ovsdb::Error> {
        let files = TlsFiles {
            private_key: self.private_key.clone(),
            certificate: self.certificate.clone(),
            ca_cert: self.ca_cert.clone(),
        };
        // TLS files given for plain remotes are not an error (the environment may hold
        // them for other commands); they are just not used.
        if !remotes.needs_tls() {
            return Ok(None);
        }
        TlsConfig::load(&files).map(Some)
    }

    /// `--timeout` for requests; connecting gives up sooner (at most 10 s).
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: self.timeout.min(Duration::from_secs(10)),
            request: self.timeout,
            ..Timeouts::default()
        }
    }

    /// A plain OVSDB client of the NB (no reconciler), for commands that only look rows up;
    /// `why` says what the NB is needed for when no remote is given.
    pub async fn client(&self, why: &str) -> Result<ovsdb::Client, String> {
        let text = self.remotes_text().ok_or_else(|| {
            format!("the NB is needed {why}: pass --db URL or set WEPOQ_DB (or OVN_NB_DB)")
        })?;
        let remotes = Remotes::parse(&text).map_err(|e| e.to_string())?;
        let tls = self.tls(&remotes).map_err(|e| e.to_string())?;
        ovsdb::Client::connect_with(&remotes, tls.as_ref(), self.timeouts())
            .await
            .map_err(|e| format!("NB {text}: {e}"))
    }
}

/// Resolves at the first SIGINT or SIGTERM: how the long-running commands stop. `None`
/// (the error printed) when the handlers cannot be installed.
pub fn stop_signal() -> Option<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers =
        signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)));
    let (mut interrupt, mut terminate) = match handlers {
        Ok(both) => both,
        Err(e) => {
            eprintln!("error: cannot install the SIGINT/SIGTERM handlers: {e}");
            return None;
        }
    };
    Some(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

pub async fn connect(db: &DbArgs) -> Result<Reconciler, ReconcileError> {
    let remotes = Remotes::parse(&db.remotes_text().unwrap_or_default())?;
    let tls = db.tls(&remotes)?;
    let timeouts = db.timeouts();
    let cache_dir = if db.no_cache {
        None
    } else {
        RowCache::default_dir()
    };
    Ok(Reconciler::connect_with(&remotes, tls.as_ref(), timeouts)
        .await?
        .with_row_cache(cache_dir))
}

/// The desired state of `compiled`, whose rows it takes (a 50k-row namespace is not copied).
pub fn desired(compiled: &mut Compiled) -> Desired {
    Desired {
        spec_hash: compiled.spec_hash.clone(),
        namespaces: compiled
            .namespaces
            .iter_mut()
            .map(|ns| (ns.owner(), std::mem::take(&mut ns.rows)))
            .collect(),
    }
}

/// Asks on the terminal; refuses outright when there is none (a pipeline must say
/// `--auto-approve`, so that nothing is changed by accident).
pub fn confirm(question: &str) -> Result<bool, String> {
    if !std::io::stdin().is_terminal() {
        return Err(
            "no terminal to confirm on: pass --auto-approve to apply without asking".into(),
        );
    }
    print!("\n{question}\n  Only 'yes' will be accepted: ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| e.to_string())?;
    Ok(answer.trim() == "yes")
}

/// Prints what a reconcile had to say about the way (a lost connection, a failover).
pub fn print_notes(notes: &[String]) {
    for note in notes {
        println!("note: {note}");
    }
}

/// Prints an error with what to do about it.
pub fn report(error: &ReconcileError, db: &DbArgs) {
    let no_db = db.remotes_text().is_none()
        && matches!(
            error,
            ReconcileError::Ovsdb(ovsdb::Error::InvalidUrl { .. })
        );
    if no_db {
        eprintln!("error: no Northbound database given");
    } else {
        eprintln!("error: {error}");
    }
    let help = match error {
        _ if no_db => Some("name the NB with --db unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT (a comma-separated list for a cluster), or set WEPOQ_DB or OVN_NB_DB".to_string()),
        ReconcileError::Ovsdb(ovsdb::Error::Tls { .. } | ovsdb::Error::TlsMissing { .. } | ovsdb::Error::TlsConfig { .. }) => {
            Some("ssl: remotes need --private-key and --certificate (signed by the CA the NB trusts) and --ca-cert (the CA that signed the NB's certificate); also $WEPOQ_PRIVATE_KEY, $WEPOQ_CERTIFICATE, $WEPOQ_CA_CERT".to_string())
        }
        ReconcileError::Ovsdb(ovsdb::Error::NoUsableServer { .. }) => {
            Some("a clustered NB serves writes from its leader only: list every member in --db, and check that a majority of them is up (`ovs-appctl -t ... cluster/status OVN_Northbound`)".to_string())
        }
        ReconcileError::Ovsdb(ovsdb::Error::Connect { .. } | ovsdb::Error::InvalidUrl { .. }) => {
            Some("is ovsdb-server running with the OVN NB there? `scripts/ovn-sandbox nb DIR` starts one".to_string())
        }
        ReconcileError::Ovsdb(ovsdb::Error::SchemaMismatch { .. }) => Some("wepoq speaks OVN_Northbound 7.x (OVN 23.03)".to_string()),
        ReconcileError::Conflicts(_) => Some("those rows were made by someone else; rename them, remove them, or pass --adopt to take them over".to_string()),
        ReconcileError::Stale { .. } => Some("make a new plan (`wepoq plan --db ... --out FILE`) and review it".to_string()),
        ReconcileError::WouldDeleteForeign { .. } => Some("move or delete those rows first (they belong to another tool), then run again".to_string()),
        ReconcileError::Contended { .. } => Some("another writer keeps changing the same rows; try again".to_string()),
        _ => None,
    };
    if let Some(help) = help {
        eprintln!("help: {help}");
    }
    let lost = matches!(
        error,
        ReconcileError::Ovsdb(ovsdb::Error::ConnectionLost { .. } | ovsdb::Error::Timeout { .. })
    );
    if lost {
        eprintln!(
            "note: if a transaction was in flight, its outcome is unknown: the NB holds the state before or after it, never between; run the command again"
        );
    } else if error.is_retryable() {
        eprintln!("note: this error is transient; nothing was changed");
    } else {
        eprintln!("note: nothing was changed");
    }
}
