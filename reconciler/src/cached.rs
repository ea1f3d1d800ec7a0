//! A reconciler that stays connected and keeps what wepoq owns in memory.
//!
//! A conditional monitor follows only the rows marked with the owners being reconciled, and
//! the rows it reports changed are converted to the compiler's form one by one, so a plan
//! comes from memory: no read of the owned rows per change (on a 50k-row NB, most of the cost
//! of a one-shot plan is ovsdb-server listing them). `wepoq apply --watch` is built on it, and
//! so is the benchmark of changing one service in a big NB.
//!
//! The cache is only ever a shortcut. Whenever a transaction built from it fails a guard or
//! hits a unique index (someone else wrote, or a foreign row holds a wanted name), the
//! attempt is handed to [`Reconciler::reconcile`], which observes with selects and reports
//! conflicts exactly as a one-shot apply does.

use std::sync::Arc;
use std::time::Instant;

use wepoq_compiler::nb::Table;
use wepoq_compiler::plan::{self, Plan};

use crate::observe::patch::Patcher;
use crate::observe::{Observed, owner_condition};
use crate::ovsdb::{Condition, Monitor, MonitorSpec, NB_DB, Schema, SyncStats, Uuid};
use crate::reconcile::{
    Applied, Desired, Options, ReconcileError, Reconciler, is_connection_loss, is_contention,
    timing,
};

/// A connection, a monitor of the owned rows, and the observation derived from it.
pub struct CachedReconciler {
    reconciler: Reconciler,
    monitor: Monitor,
    schema: Arc<Schema>,
    owners: Vec<String>,
    observed: Observed,
    /// Keeps `observed` current with the rows the monitor reports touched.
    patcher: Patcher,
}

impl CachedReconciler {
    /// The NB connection, for what else a watching command asks of the NB.
    pub fn client(&self) -> &crate::ovsdb::Client {
        &self.reconciler.client
    }

    /// Starts monitoring the rows marked as `owners`' (the first reply carries all of them,
    /// which costs about what one observation does).
    pub async fn start(
        reconciler: Reconciler,
        owners: &[String],
    ) -> Result<CachedReconciler, ReconcileError> {
        let clauses: Vec<Condition> = owners.iter().map(|o| owner_condition(o)).collect();
        let mut spec = MonitorSpec::new();
        for table in Table::ALL {
            spec = spec.table_where(table.name(), table.managed_columns(), clauses.clone());
        }
        let monitor = reconciler.client.monitor(NB_DB, spec).await?;
        let schema = reconciler.schema().clone();
        let patcher = Patcher::new(&schema);
        let mut cached = CachedReconciler {
            reconciler,
            monitor,
            schema,
            owners: owners.to_vec(),
            observed: Observed::default(),
            patcher,
        };
        cached.refresh();
        Ok(cached)
    }

    pub fn reconciler(&self) -> &Reconciler {
        &self.reconciler
    }

    /// How the monitor's copy was filled: after a reconnect to a clustered NB it resumes
    /// from the last transaction and receives only the rows changed meanwhile.
    pub fn monitor_stats(&self) -> SyncStats {
        self.monitor.sync_stats()
    }

    /// Waits until the NB changes something wepoq owns (drift, or another writer).
    pub async fn changed(&mut self) -> Result<(), ReconcileError> {
        Ok(self.monitor.changed().await?)
    }

    /// The owned rows as the monitor last reported them, in the compiler's form (`raw` holds
    /// only the rows the last applied plan touched: the monitor keeps the rest).
    pub fn observed(&mut self) -> &Observed {
        self.refresh();
        &self.observed
    }

    /// Plans from memory and applies; on a failed guard or index clash (someone else wrote,
    /// or a foreign row holds a wanted name: `--adopt` takes it there), hands over to a full
    /// reconcile, which observes with selects and reports conflicts as a one-shot apply does.
    pub async fn reconcile(
        &mut self,
        desired: &Desired,
        options: Options,
        mut confirm: impl FnMut(&Plan, usize) -> bool,
    ) -> Result<(Plan, Applied), ReconcileError> {
        let start = Instant::now();
        self.refresh();
        timing("cached: catching up with the monitor", start);
        let phase = Instant::now();
        let plan = Reconciler::plan(desired, &self.observed);
        timing("cached: plan from memory", phase);
        if plan.changes.is_empty() || !confirm(&plan, 1) {
            return Ok((
                plan,
                Applied {
                    summary: plan::Summary::default(),
                    operations: 0,
                    attempts: 1,
                    elapsed: start.elapsed(),
                    notes: Vec::new(),
                },
            ));
        }
        // The guards compare what was read: the monitor's copy of the rows the plan touches.
        self.observed.raw = self.monitor.with(|tables| {
            plan.changes
                .iter()
                .filter_map(|c| {
                    let uuid = self.observed.ids.by_key.get(&c.key)?;
                    Some((
                        c.key.clone(),
                        tables.get(c.key.table.name())?.get(uuid)?.clone(),
                    ))
                })
                .collect()
        });
        let server = self.reconciler.client.current_url();
        let mut lost = None;
        match self.reconciler.apply_plan(&plan, &self.observed).await {
            Ok(operations) => {
                let applied = Applied {
                    summary: plan.summary(),
                    operations,
                    attempts: 1,
                    elapsed: start.elapsed(),
                    notes: Vec::new(),
                };
                return Ok((plan, applied));
            }
            Err(ReconcileError::Ovsdb(e)) if is_contention(&e) => {
                timing("cached: the NB moved; a full reconcile follows", start)
            }
            // The outcome is unknown (the client is moving to another server): the full
            // reconcile reads the NB again and says what it found.
            Err(ReconcileError::Ovsdb(e)) if is_connection_loss(&e) => {
                lost = Some(format!(
                    "the connection to {server} was lost after the transaction was sent ({e}): its outcome is unknown, so the NB is read again and planned again"
                ));
            }
            Err(e) => return Err(e),
        }
        let (plan, mut applied) = self
            .reconciler
            .reconcile(desired, options, |p, attempt| confirm(p, attempt + 1))
            .await?;
        applied.elapsed = start.elapsed();
        applied.notes.splice(0..0, lost);
        Ok((plan, applied))
    }

    /// Brings `observed` up to date with the rows the monitor reported changed.
    fn refresh(&mut self) {
        let touched = self.monitor.take_touched();
        if touched.everything {
            self.observed = Observed::default();
            self.patcher.clear();
            let all: Vec<(String, Uuid)> = self.monitor.with(|tables| {
                tables
                    .iter()
                    .flat_map(|(t, rows)| rows.keys().map(move |u| (t.clone(), u.clone())))
                    .collect()
            });
            self.update(&all);
            for owner in &self.owners {
                self.observed.rows.entry(owner.clone()).or_default();
            }
        } else if !touched.rows.is_empty() {
            self.update(&touched.rows);
        }
    }

    /// Re-derives the given rows from the monitor's cache.
    fn update(&mut self, rows: &[(String, Uuid)]) {
        let (patcher, observed, schema) = (&mut self.patcher, &mut self.observed, &self.schema);
        self.monitor.with(|tables| {
            patcher.update(
                observed,
                schema,
                |table, uuid| tables.get(table)?.get(uuid),
                rows,
            )
        });
    }
}
