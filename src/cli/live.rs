//! What the commands that talk to a live NB share: the `--db` option, connecting, turning a
//! compilation into desired rows, asking for confirmation, and explaining failures.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use clap::Args;
use wepoq_compiler::Compiled;
use wepoq_reconciler::ovsdb::{self, Timeouts};
use wepoq_reconciler::reconcile::{Desired, ReconcileError, Reconciler};
use wepoq_reconciler::row_cache::RowCache;

/// Where the OVN Northbound database is.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// The NB: `unix:PATH` or `tcp:HOST:PORT` (default: $WEPOQ_DB)
    #[arg(long, env = "WEPOQ_DB", value_name = "URL")]
    pub db: Option<String>,
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

pub async fn connect(db: &DbArgs) -> Result<Reconciler, ReconcileError> {
    let url = db.db.as_deref().unwrap_or_default();
    let timeouts = Timeouts {
        connect: db.timeout.min(Duration::from_secs(10)),
        request: db.timeout,
        ..Timeouts::default()
    };
    let cache_dir = if db.no_cache {
        None
    } else {
        RowCache::default_dir()
    };
    Ok(Reconciler::connect(url, timeouts)
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

/// Prints an error with what to do about it.
pub fn report(error: &ReconcileError, db: &DbArgs) {
    let no_db = db.db.is_none()
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
        _ if no_db => Some("name the NB with --db unix:PATH or --db tcp:HOST:PORT, or set WEPOQ_DB".to_string()),
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
    if error.is_retryable() {
        eprintln!("note: this error is transient; nothing was changed");
    } else {
        eprintln!("note: nothing was changed");
    }
}
