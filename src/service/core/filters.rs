//! Hatchet-style scope filters: which scoped events run a deployment's single-key trigger,
//! and with which payload.

use uuid::Uuid;

use crate::engine::compile::CompiledScopeFilter;
use crate::engine::Engine;
use crate::model::time::Timestamp;
use crate::model::{JsonPath, ScopeFilter};
use crate::service::ServiceError;
use crate::store::Tx;

use super::{Core, Outcome};

/// Installs a stored filter; one that no longer compiles is skipped with an error logged.
pub(super) fn install_filter(engine: &mut Engine, filter: ScopeFilter) {
    let id = filter.id;
    match CompiledScopeFilter::new(filter, &JsonPath::root()) {
        Ok(c) => engine.put_scope_filter(c),
        Err(problems) => tracing::error!(filter = %id, %problems, "stored filter does not compile; skipped"),
    }
}

impl Core {
    /// Creates or replaces a filter of an existing deployment.
    pub(super) fn put_filter(&mut self, tx: &Tx, mut filter: ScopeFilter, now: Timestamp) -> Outcome<ScopeFilter> {
        if tx.deployment(&filter.deployment)?.is_none() {
            return Ok(Err(ServiceError::NotFound { what: "deployment", id: filter.deployment }));
        }
        filter.created = Some(now);
        let compiled = match CompiledScopeFilter::new(filter.clone(), &JsonPath::root()) {
            Ok(c) => c,
            Err(problems) => return Ok(Err(ServiceError::Invalid(problems))),
        };
        self.advance_for_change(tx, now)?;
        self.engine.put_scope_filter(compiled);
        tx.put_filter(&filter)?;
        Ok(Ok(filter))
    }

    /// Removes a filter.
    pub(super) fn delete_filter(&mut self, tx: &Tx, id: Uuid, now: Timestamp) -> Outcome<()> {
        if !tx.delete_filter(&id)? {
            return Ok(Err(ServiceError::NotFound { what: "filter", id: id.to_string() }));
        }
        self.advance_for_change(tx, now)?;
        self.engine.remove_scope_filter(&id);
        Ok(Ok(()))
    }
}
