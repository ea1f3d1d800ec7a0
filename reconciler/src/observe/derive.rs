//! From the owned rows as read to an [`Observed`]: keys and UUIDs, rows in the compiler's
//! form sorted by key, and the foreign rows held inside owned ones.

use wepoq_compiler::nb::{self, RowKey, Table};

use super::{Observed, foreign_children, marked_key};
use crate::convert::{RowIds, to_nb_row};
use crate::ovsdb::{self, Schema};
use crate::row_cache::RowCache;

/// Derives the owned part of an observation from `rows` (owner, table, row as read); rows
/// without a name mark are not ones wepoq knows and are left out. With `store_to`, those
/// rows are written to the row cache meanwhile. `parallel` converts on two threads (when
/// the server is idle; not while it is answering, on a machine with two cores).
pub(super) fn derive(
    rows: Vec<(String, Table, ovsdb::Row)>,
    schema: &Schema,
    store_to: Option<&RowCache>,
    parallel: bool,
) -> Observed {
    let mut observed = Observed::default();
    let mut owned: Vec<(String, RowKey, ovsdb::Row)> = Vec::with_capacity(rows.len());
    for (owner, table, row) in rows {
        let Some((key, uuid)) = marked_key(table, &row) else {
            continue;
        };
        observed.ids.insert(key.clone(), uuid);
        owned.push((owner, key, row));
    }
    for (_, key, row) in &owned {
        let foreign = foreign_children(key.table, row, &observed.ids);
        if !foreign.is_empty() {
            observed.foreign_children.insert(key.clone(), foreign);
        }
    }
    // Conversion is the biggest part of an observation after parsing. The cache is written
    // meanwhile.
    let converted = std::thread::scope(|scope| {
        if let Some(cache) = store_to {
            let owned = &owned;
            scope.spawn(move || store(cache, owned.iter().map(|(_, key, row)| (key.table, row))));
        }
        convert_all(&owned, schema, &observed.ids, parallel)
    });
    for ((owner, key, row), nb_row) in owned.into_iter().zip(converted) {
        observed.rows.entry(owner).or_default().push(nb_row);
        observed.raw.insert(key, row);
    }
    for rows in observed.rows.values_mut() {
        rows.sort_by(|a, b| a.key.cmp(&b.key));
    }
    observed
}

/// Writes the row cache; a failure only costs the next run time, so it is a warning.
pub(super) fn store<'a>(
    cache: &RowCache,
    rows: impl ExactSizeIterator<Item = (Table, &'a ovsdb::Row)>,
) {
    if let Err(e) = cache.store(rows) {
        eprintln!(
            "wepoq: warning: could not write the row cache {}: {e}",
            cache.path().display()
        );
    }
}

fn convert_all(
    owned: &[(String, RowKey, ovsdb::Row)],
    schema: &Schema,
    ids: &RowIds,
    parallel: bool,
) -> Vec<nb::Row> {
    let convert = |part: &[(String, RowKey, ovsdb::Row)]| {
        part.iter()
            .map(|(_, key, row)| to_nb_row(key.clone(), row, schema, ids))
            .collect::<Vec<_>>()
    };
    if !parallel || owned.len() < 2048 {
        return convert(owned);
    }
    let (first, second) = owned.split_at(owned.len() / 2);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| convert(second));
        let mut rows = convert(first);
        rows.extend(other.join().expect("conversion does not panic"));
        rows
    })
}
