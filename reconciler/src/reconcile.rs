//! Reconciling: observe the NB, diff against the desired rows, apply the difference as one
//! guarded transaction, and re-observe and re-plan when someone else changed the NB
//! meanwhile. Level-triggered: it does not matter why it runs, so it is idempotent.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wepoq_compiler::nb::{self, RowKey};
use wepoq_compiler::plan::{self, Observed as PlanSource, Plan};

use crate::observe::{self, Conflict, Observed};
use crate::ovsdb::{self, Client, NB_DB, Remotes, Schema, Timeouts, TlsConfig};
use crate::row_cache::RowCache;
use crate::transaction;

/// The desired NB state: rows per owner (namespace FQDN), as the compiler emits them.
#[derive(Debug, Clone)]
pub struct Desired {
    pub spec_hash: String,
    pub namespaces: Vec<(String, Vec<nb::Row>)>,
}

impl Desired {
    /// The owners (namespace FQDNs) the desired state covers.
    pub fn owners(&self) -> Vec<String> {
        self.namespaces.iter().map(|(o, _)| o.clone()).collect()
    }

    fn wanted(&self) -> HashSet<RowKey> {
        self.namespaces
            .iter()
            .flat_map(|(_, rows)| rows.iter().map(|r| r.key.clone()))
            .collect()
    }

    fn owner_of(&self, key: &RowKey) -> Option<String> {
        self.namespaces
            .iter()
            .find(|(_, rows)| rows.iter().any(|r| &r.key == key))
            .map(|(o, _)| o.clone())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Ovsdb(#[from] ovsdb::Error),
    #[error("{} row(s) in the NB carry names wepoq wants but are not this namespace's: {}", .0.len(), describe_conflicts(.0))]
    Conflicts(Vec<Conflict>),
    #[error("the saved plan is stale: the NB changed since it was made ({})", .changed.join(", "))]
    Stale { changed: Vec<String> },
    #[error("gave up after {attempts} attempts: the NB kept changing under the plan")]
    Contended { attempts: usize },
    #[error("destroying {key} would delete rows that are not wepoq's: {}", .children.join(", "))]
    WouldDeleteForeign { key: String, children: Vec<String> },
    #[error("the saved plan covers {plan:?} but was applied for {given:?}")]
    WrongNamespaces {
        plan: Vec<String>,
        given: Vec<String>,
    },
}

impl ReconcileError {
    /// Worth running again as is (a lost connection, a concurrent writer)?
    pub fn is_retryable(&self) -> bool {
        match self {
            ReconcileError::Ovsdb(e) => e.is_retryable(),
            ReconcileError::Contended { .. } => true,
            _ => false,
        }
    }
}

fn describe_conflicts(conflicts: &[Conflict]) -> String {
    let mut parts: Vec<String> = conflicts
        .iter()
        .take(5)
        .map(|c| match &c.owner {
            Some(owner) => format!("{} (owned by {owner})", c.key),
            None => format!("{} (not made by wepoq)", c.key),
        })
        .collect();
    if conflicts.len() > 5 {
        parts.push(format!("and {} more", conflicts.len() - 5));
    }
    parts.join(", ")
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub summary: plan::Summary,
    /// Operations in the transaction (0 when there was nothing to do).
    pub operations: usize,
    pub attempts: usize,
    pub elapsed: Duration,
    /// What happened on the way that the user should hear of: a connection lost with a
    /// transaction in flight, and what re-reading the NB found about it.
    pub notes: Vec<String>,
}

/// Options of a reconcile.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Take over rows that carry wanted names but are not ours (`--adopt`).
    pub adopt: bool,
    /// Re-observe and re-plan at most this many times when the NB changes underneath.
    pub attempts: usize,
    /// Read and plan again at most this many times after losing the connection (a
    /// clustered NB's leader dying or stepping down); 0 gives up at the first loss.
    pub reconnects: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            adopt: false,
            attempts: 3,
            reconnects: 5,
        }
    }
}

/// A connection to the NB with its schema checked.
#[derive(Clone)]
pub struct Reconciler {
    pub client: Client,
    schema: Arc<Schema>,
    /// Where observations keep their row cache (see [`crate::row_cache`]); none by default.
    cache_dir: Option<PathBuf>,
}

impl Reconciler {
    /// Connects and refuses an NB whose schema wepoq does not speak.
    pub async fn connect(url: &str, timeouts: Timeouts) -> Result<Reconciler, ReconcileError> {
        Reconciler::connect_with(&Remotes::parse(url)?, None, timeouts).await
    }

    /// [`Reconciler::connect`] to a list of remotes (a cluster's members), with TLS for
    /// `ssl:` ones: see [`Client::connect_with`].
    pub async fn connect_with(
        remotes: &Remotes,
        tls: Option<&TlsConfig>,
        timeouts: Timeouts,
    ) -> Result<Reconciler, ReconcileError> {
        let client = Client::connect_with(remotes, tls, timeouts).await?;
        let schema = client.nb_schema().await?;
        Ok(Reconciler {
            client,
            schema,
            cache_dir: None,
        })
    }

    /// Keeps a cache of the owned rows in `dir`, so that observations read only the rows
    /// that changed since the last one (`None`: read every row every time).
    pub fn with_row_cache(mut self, dir: Option<PathBuf>) -> Reconciler {
        self.cache_dir = dir;
        self
    }

    /// The row cache of `owners`, if there is a cache directory. It is keyed by the NB's
    /// identity: its cluster id when it is clustered (whichever member answers, in whatever
    /// order the members are listed), else the remotes as given.
    pub fn row_cache(&self, owners: &[String]) -> Option<RowCache> {
        let identity = match self.client.cluster_id(NB_DB) {
            Some(cid) => format!("cid:{}", cid.as_str()),
            None => self.client.url().to_owned(),
        };
        self.cache_dir
            .as_deref()
            .map(|dir| RowCache::new(dir, &identity, owners, &self.schema))
    }

    /// The NB schema, as checked at connect.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    pub async fn observe(
        &self,
        desired: &Desired,
        options: Options,
    ) -> Result<Observed, ReconcileError> {
        self.observe_with(desired, options, true).await
    }

    /// [`Reconciler::observe`], reading every row when `use_cache` is false.
    async fn observe_with(
        &self,
        desired: &Desired,
        options: Options,
        use_cache: bool,
    ) -> Result<Observed, ReconcileError> {
        let owners = desired.owners();
        let cache = self.row_cache(&owners).filter(|_| use_cache);
        let mut observed = observe::observe(
            &self.client,
            &self.schema,
            &owners,
            &desired.wanted(),
            cache.as_ref(),
        )
        .await?;
        if options.adopt {
            observe::adopt(&self.client, &self.schema, &mut observed, |k| {
                desired.owner_of(k)
            })
            .await?;
        } else if !observed.conflicts.is_empty() {
            return Err(ReconcileError::Conflicts(observed.conflicts));
        }
        Ok(observed)
    }

    /// The plan from `observed` to `desired`. The fingerprint of what was read (needed only
    /// by a plan that is saved, and costly on a big NB) is left empty: see [`Reconciler::fingerprinted`].
    pub fn plan(desired: &Desired, observed: &Observed) -> Plan {
        let empty = Vec::new();
        let mut changes = Vec::new();
        for (owner, rows) in &desired.namespaces {
            changes.extend(plan::diff(
                owner,
                rows,
                observed.rows.get(owner).unwrap_or(&empty),
            ));
        }
        changes.sort_by(|a, b| a.key.cmp(&b.key));
        Plan {
            spec_hash: desired.spec_hash.clone(),
            namespaces: desired.owners(),
            observed: PlanSource::Live {
                fingerprint: String::new(),
                rows: Vec::new(),
            },
            changes,
            containers: Vec::new(),
        }
    }

    /// `plan` with the fingerprint and row digests of `observed` filled in, as a saved plan
    /// needs them.
    pub fn fingerprinted(mut plan: Plan, observed: &Observed) -> Plan {
        plan.observed = PlanSource::Live {
            fingerprint: observed.fingerprint(),
            rows: observed.digests(),
        };
        plan
    }

    /// Refuses a plan that would take another tool's rows down with ours (a foreign port on a
    /// switch the plan deletes). `apply_plan` checks it too; callers that do other work
    /// first (removing containers) check it before that work.
    pub fn check_foreign(plan: &Plan, observed: &Observed) -> Result<(), ReconcileError> {
        for change in plan
            .changes
            .iter()
            .filter(|c| c.action == plan::Action::Destroy)
        {
            if let Some(children) = observed.foreign_children.get(&change.key) {
                return Err(ReconcileError::WouldDeleteForeign {
                    key: change.key.to_string(),
                    children: children.clone(),
                });
            }
        }
        Ok(())
    }

    /// Applies `plan`, computed from `observed`, as one transaction. A failed guard is
    /// returned as is (`ovsdb::Error::GuardFailed`); [`Reconciler::reconcile`] retries.
    pub async fn apply_plan(
        &self,
        plan: &Plan,
        observed: &Observed,
    ) -> Result<usize, ReconcileError> {
        if plan.changes.is_empty() {
            return Ok(0);
        }
        Reconciler::check_foreign(plan, observed)?;
        let comment = format!(
            "wepoq apply {} spec {}",
            plan.namespaces.join(" "),
            plan.spec_hash
        );
        let phase = Instant::now();
        let ops = transaction::build(&plan.changes, observed, &comment);
        timing("apply: building the transaction", phase);
        let phase = Instant::now();
        self.client.transact(NB_DB, &ops).await?;
        timing("apply: the transaction", phase);
        Ok(ops.len())
    }

    /// Observe, plan, and apply; on a concurrent change, again from the top. A connection
    /// lost while the transaction was in flight leaves its outcome unknown: the NB is read
    /// again (from whichever server the client moved to) and planned again, which the
    /// guards make safe, and [`Applied::notes`] says what happened. `confirm` sees each
    /// plan before it is applied and may refuse it (returns false).
    pub async fn reconcile(
        &self,
        desired: &Desired,
        options: Options,
        mut confirm: impl FnMut(&Plan, usize) -> bool,
    ) -> Result<(Plan, Applied), ReconcileError> {
        let start = Instant::now();
        let mut notes = Vec::new();
        let mut in_doubt = false;
        let (mut attempt, mut contended, mut losses) = (0, 0, 0);
        loop {
            attempt += 1;
            let phase = Instant::now();
            // A retry reads every row: whatever made the guards fail, a cache file that is
            // wrong in a way its checks miss cannot make it fail again.
            let observed = match self.observe_with(desired, options, attempt == 1).await {
                Err(ReconcileError::Ovsdb(e)) if is_connection_loss(&e) => {
                    losses += 1;
                    if losses > options.reconnects {
                        return Err(ReconcileError::Ovsdb(e));
                    }
                    notes.push(format!(
                        "the connection was lost while reading the NB ({e}); reading it again"
                    ));
                    continue;
                }
                other => other?,
            };
            timing("observe", phase);
            let phase = Instant::now();
            let plan = Reconciler::plan(desired, &observed);
            timing("plan", phase);
            if in_doubt {
                in_doubt = false;
                let server = self.client.current_url();
                notes.push(if plan.changes.is_empty() {
                    format!("read again from {server}: the transaction had committed; nothing is left to do")
                } else {
                    format!("read again from {server}: the transaction had not committed; applying the new plan ({} changes)", plan.changes.len())
                });
            }
            if !plan.changes.is_empty() && !confirm(&plan, attempt) {
                let applied = Applied {
                    summary: plan::Summary::default(),
                    operations: 0,
                    attempts: attempt,
                    elapsed: start.elapsed(),
                    notes,
                };
                return Ok((plan, applied));
            }
            let phase = Instant::now();
            let server = self.client.current_url();
            let result = self.apply_plan(&plan, &observed).await;
            timing("apply", phase);
            observed.free_in_background();
            match result {
                Ok(operations) => {
                    let applied = Applied {
                        summary: plan.summary(),
                        operations,
                        attempts: attempt,
                        elapsed: start.elapsed(),
                        notes,
                    };
                    return Ok((plan, applied));
                }
                Err(ReconcileError::Ovsdb(e)) if is_contention(&e) => {
                    contended += 1;
                    if contended >= options.attempts.max(1) {
                        return Err(ReconcileError::Contended {
                            attempts: contended,
                        });
                    }
                }
                Err(ReconcileError::Ovsdb(e)) if is_connection_loss(&e) => {
                    losses += 1;
                    if losses > options.reconnects {
                        return Err(ReconcileError::Ovsdb(e));
                    }
                    notes.push(format!(
                        "the connection to {server} was lost after the transaction was sent ({e}): its outcome is unknown, so the NB is read again and planned again"
                    ));
                    in_doubt = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Applies a saved plan: refused as stale unless the NB still holds exactly what the plan
    /// was computed from.
    pub async fn apply_saved(
        &self,
        saved: &Plan,
        desired_owners: &[String],
    ) -> Result<Applied, ReconcileError> {
        let start = Instant::now();
        let PlanSource::Live { fingerprint, rows } = &saved.observed else {
            return Err(ReconcileError::Stale {
                changed: vec![
                    "the plan was made offline, against an empty state; make it with --db".into(),
                ],
            });
        };
        if !desired_owners.is_empty() && desired_owners != saved.namespaces.as_slice() {
            return Err(ReconcileError::WrongNamespaces {
                plan: saved.namespaces.clone(),
                given: desired_owners.to_vec(),
            });
        }
        let wanted: HashSet<RowKey> = saved.changes.iter().map(|c| c.key.clone()).collect();
        let cache = self.row_cache(&saved.namespaces);
        let observed = observe::observe(
            &self.client,
            &self.schema,
            &saved.namespaces,
            &wanted,
            cache.as_ref(),
        )
        .await?;
        if &observed.fingerprint() != fingerprint {
            return Err(ReconcileError::Stale {
                changed: what_changed(rows, &observed.digests()),
            });
        }
        match self.apply_plan(saved, &observed).await {
            Ok(operations) => Ok(Applied {
                summary: saved.summary(),
                operations,
                attempts: 1,
                elapsed: start.elapsed(),
                notes: Vec::new(),
            }),
            Err(ReconcileError::Ovsdb(e)) if is_contention(&e) => Err(ReconcileError::Stale {
                changed: vec!["the NB changed while the plan was being applied".into()],
            }),
            Err(e) => Err(e),
        }
    }
}

/// With `WEPOQ_TIMINGS` set, how long each phase took goes to stderr.
pub(crate) fn timing(phase: &str, since: Instant) {
    if std::env::var_os("WEPOQ_TIMINGS").is_some() {
        eprintln!(
            "wepoq: {phase} took {:.1} ms",
            since.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// The connection went away (or the server stopped answering) under a request: the
/// client reconnects by itself, and a transaction's outcome is unknown.
pub(crate) fn is_connection_loss(e: &ovsdb::Error) -> bool {
    match e {
        ovsdb::Error::ConnectionLost { .. } | ovsdb::Error::Timeout { .. } => true,
        // A clustered server that lost its leadership with the transaction in hand
        // ("cluster error": "lost leadership", "not leader"): the client moves on.
        ovsdb::Error::CommitFailed { error, .. } | ovsdb::Error::OpFailed { error, .. } => {
            error == "cluster error"
        }
        _ => false,
    }
}

/// A failed guard or a unique-index clash at commit: someone else wrote meanwhile.
pub fn is_contention(e: &ovsdb::Error) -> bool {
    match e {
        ovsdb::Error::GuardFailed { .. } => true,
        ovsdb::Error::CommitFailed { error, .. } => error == "constraint violation",
        _ => false,
    }
}

fn what_changed(before: &[(String, String)], now: &[(String, String)]) -> Vec<String> {
    let before: std::collections::BTreeMap<&str, &str> = before
        .iter()
        .map(|(k, d)| (k.as_str(), d.as_str()))
        .collect();
    let now_map: std::collections::BTreeMap<&str, &str> =
        now.iter().map(|(k, d)| (k.as_str(), d.as_str())).collect();
    let mut out = Vec::new();
    for (k, d) in &now_map {
        match before.get(k) {
            None => out.push(format!("{k} appeared")),
            Some(old) if old != d => out.push(format!("{k} changed")),
            _ => {}
        }
    }
    for k in before.keys().filter(|k| !now_map.contains_key(*k)) {
        out.push(format!("{k} disappeared"));
    }
    let total = out.len();
    out.truncate(10);
    if total > 10 {
        out.push(format!("and {} more", total - 10));
    }
    if out.is_empty() {
        out.push("the rows read differ".into());
    }
    out
}
