//! Child runs by parent: which run a parent's key names, so that a retried parent finds the
//! children it made before, and so that cancelling a parent reaches its children.
//!
//! Layout: `run_children`: (parent id, key) → child id.

use redb::{ReadableTable, TableDefinition};
use uuid::Uuid;

use crate::model::Run;

use super::{Store, StoreError, Tx};

pub(super) const RUN_CHILDREN: TableDefinition<(u128, &str), u128> = TableDefinition::new("run_children");

/// Where `parent`'s children start and end (none for the last id).
fn of(parent: &Uuid) -> ((u128, &'static str), Option<(u128, &'static str)>) {
    let id = parent.as_u128();
    // The keys from `(id, "")` up to `(id + 1, "")`.
    ((id, ""), id.checked_add(1).map(|next| (next, "")))
}

/// Up to `limit` children of `parent` in a table: (key, child id), by key.
fn list<T: ReadableTable<(u128, &'static str), u128>>(
    table: &T,
    parent: &Uuid,
    limit: usize,
) -> Result<Vec<(String, Uuid)>, StoreError> {
    let (start, end) = of(parent);
    let range = match end {
        Some(end) => table.range(start..end)?,
        None => table.range(start..)?,
    };
    let mut out = Vec::new();
    for item in range.take(limit) {
        let (k, v) = item?;
        out.push((k.value().1.to_owned(), Uuid::from_u128(v.value())));
    }
    Ok(out)
}

/// The run a child entry names; an entry whose run is missing is corruption.
fn child_run(
    parent: &Uuid,
    key: &str,
    id: Uuid,
    run: impl FnOnce(&Uuid) -> Result<Option<Run>, StoreError>,
) -> Result<Run, StoreError> {
    run(&id)?.ok_or_else(|| StoreError::Corrupt {
        what: "child run",
        message: format!("run {parent}'s child `{key}` names run {id}, which is not stored"),
    })
}

impl Store {
    /// Up to `limit` children of `parent`, by key.
    pub fn children(&self, parent: &Uuid, limit: usize) -> Result<Vec<Run>, StoreError> {
        let rx = self.read()?;
        let entries = list(&rx.open_table(RUN_CHILDREN)?, parent, limit)?;
        entries.into_iter().map(|(key, id)| child_run(parent, &key, id, |id| self.run(id))).collect()
    }
}

impl Tx {
    /// The child `parent` made under `key`, if any.
    pub fn child(&self, parent: &Uuid, key: &str) -> Result<Option<Run>, StoreError> {
        let table = self.tx.open_table(RUN_CHILDREN)?;
        let child = table.get((parent.as_u128(), key))?.map(|v| Uuid::from_u128(v.value()));
        child.map(|id| child_run(parent, key, id, |id| self.run(id))).transpose()
    }

    /// The ids of up to `limit` children of `parent`, as the write transaction sees them.
    pub fn children(&self, parent: &Uuid, limit: usize) -> Result<Vec<Uuid>, StoreError> {
        Ok(list(&self.tx.open_table(RUN_CHILDREN)?, parent, limit)?.into_iter().map(|(_, id)| id).collect())
    }

    /// Records `child` as `parent`'s child under `key`.
    pub fn insert_child(&self, parent: &Uuid, key: &str, child: &Uuid) -> Result<(), StoreError> {
        self.writable(RUN_CHILDREN)?.insert((parent.as_u128(), key), child.as_u128())?;
        Ok(())
    }
}
