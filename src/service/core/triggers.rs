//! Trigger definitions: install, replace, enable, remove, a deployment's whole set, and the
//! bucket view.

use std::collections::HashSet;

use crate::engine::{compile, BucketPage, BucketQuery, Engine};
use crate::model::time::Timestamp;
use crate::model::{JsonPath, Problems, TriggerDefinition, TriggerOrigin, TriggerSync};
use crate::service::ServiceError;
use crate::store::{StoreError, TriggerRecord, Tx};

use super::{Core, Outcome};

/// Installs a stored definition. Definitions are validated before they are stored; one that
/// no longer compiles (a newer version's syntax) is skipped rather than stopping the server.
pub(super) fn install(engine: &mut Engine, definition: &TriggerDefinition) {
    match compile(definition, &JsonPath::root()) {
        Ok(c) => engine.upsert(c),
        Err(problems) => {
            tracing::error!(trigger = %definition.id, %problems, "stored trigger does not compile; skipped")
        }
    }
}

impl Core {
    /// Creates or replaces a definition (`create_only`: refuses an id in use). Answers the
    /// record and whether it was created.
    pub(super) fn put_trigger(
        &mut self,
        tx: &Tx,
        definition: TriggerDefinition,
        create_only: bool,
        now: Timestamp,
    ) -> Outcome<(TriggerRecord, bool)> {
        let existing = tx.trigger(&definition.id)?;
        if create_only && existing.is_some() {
            return Ok(Err(ServiceError::Conflict { what: "trigger", id: definition.id }));
        }
        let compiled = match compile(&definition, &JsonPath::root()) {
            Ok(c) => c,
            Err(problems) => return Ok(Err(ServiceError::Invalid(problems))),
        };
        self.advance_for_change(tx, now)?;
        self.engine.upsert(compiled);
        let mut record = TriggerRecord {
            created: existing.as_ref().map_or(now, |r| r.created),
            updated: now,
            definition,
            error: None,
            warning: None,
            stats: None,
            origin: Some(TriggerOrigin::Api),
        };
        tx.put_trigger(&record)?;
        let deployment = record.definition.deployment.as_deref().map(|d| tx.deployment(d)).transpose()?;
        record.note_deployment(|_| deployment.flatten().is_some());
        Ok(Ok((record, existing.is_none())))
    }

    /// Removes a definition and its buckets.
    pub(super) fn delete_trigger(&mut self, tx: &Tx, id: String, now: Timestamp) -> Outcome<()> {
        if tx.trigger(&id)?.is_none() {
            return Ok(Err(ServiceError::NotFound { what: "trigger", id }));
        }
        self.advance_for_change(tx, now)?;
        self.remove_trigger(tx, &id)?;
        Ok(Ok(()))
    }

    /// Enables or disables a definition (enabling clears the error that disabled it).
    pub(super) fn set_enabled(&mut self, tx: &Tx, id: String, enabled: bool, now: Timestamp) -> Outcome<TriggerRecord> {
        let Some(mut record) = tx.trigger(&id)? else {
            return Ok(Err(ServiceError::NotFound { what: "trigger", id }));
        };
        if record.definition.enabled != enabled {
            record.definition.enabled = enabled;
            record.error = None;
            record.updated = now;
            self.advance_for_change(tx, now)?;
            if !self.engine.set_enabled(&id, enabled) {
                install(&mut self.engine, &record.definition);
            }
            tx.put_trigger(&record)?;
        }
        Ok(Ok(record))
    }

    /// One page of a definition's live buckets (`None` when it has no state: disabled, or
    /// skipped at start).
    pub(super) fn buckets(&mut self, tx: &Tx, id: String, query: &BucketQuery) -> Outcome<Option<BucketPage>> {
        if tx.trigger(&id)?.is_none() {
            return Ok(Err(ServiceError::NotFound { what: "trigger", id }));
        }
        Ok(Ok(self.engine.bucket_page(&id, query)))
    }

    /// Makes `definitions` exactly the triggers of `deployment`: new ones are installed,
    /// changed ones replaced, the same ones left alone (their buckets keep their state), and
    /// the deployment's other triggers removed. All or nothing.
    pub(super) fn sync_triggers(
        &mut self,
        tx: &Tx,
        deployment: &str,
        definitions: Vec<TriggerDefinition>,
        now: Timestamp,
    ) -> Outcome<TriggerSync> {
        if tx.deployment(deployment)?.is_none() {
            return Ok(Err(ServiceError::NotFound { what: "deployment", id: deployment.to_owned() }));
        }
        let mut problems = Problems::default();
        let mut compiled = Vec::new();
        let mut seen = HashSet::new();
        for (i, definition) in definitions.iter().enumerate() {
            // The list's paths (`$[3]`) do not say which trigger a worker sent: each
            // message names it.
            let path = JsonPath::root().index(i);
            let id = &definition.id;
            if !seen.insert(id.clone()) {
                problems.add_rule(&path.key("id"), format!("`{id}` appears twice in the list"));
            }
            if definition.deployment.as_deref() != Some(deployment) {
                problems.add_rule(
                    &path.key("deployment"),
                    format!("trigger `{id}`: must be `{deployment}` (or left out), got {:?}", definition.deployment),
                );
            }
            match compile(definition, &path) {
                Ok(c) => compiled.push(c),
                Err(p) => problems.extend(p.about(&format!("trigger `{id}`"))),
            }
        }
        let existing = tx.triggers()?;
        for (definition, record) in
            definitions.iter().filter_map(|d| existing.iter().find(|r| r.definition.id == d.id).map(|r| (d, r)))
        {
            if record.definition.deployment.as_deref() != Some(deployment) {
                problems.add_rule(
                    &JsonPath::root(),
                    format!(
                        "trigger `{}` already exists for {}; give this one another id",
                        definition.id,
                        record
                            .definition
                            .deployment
                            .as_deref()
                            .map_or("no deployment".into(), |d| format!("deployment `{d}`"))
                    ),
                );
            }
        }
        if !problems.is_empty() {
            return Ok(Err(ServiceError::Invalid(problems)));
        }
        let mut report = TriggerSync::default();
        self.advance_for_change(tx, now)?;
        for record in existing.iter().filter(|r| r.definition.deployment.as_deref() == Some(deployment)) {
            let id = &record.definition.id;
            if !definitions.iter().any(|d| d.id == *id) {
                self.remove_trigger(tx, id)?;
                report.deleted.push(id.clone());
                if record.origin == Some(TriggerOrigin::Api) {
                    let warning = format!(
                        "deleted trigger `{id}` of deployment `{deployment}`: it was installed with the triggers \
                         API or the CLI, and serving a deployment makes its triggers exactly the ones served; \
                         serve it with the flow to keep it"
                    );
                    tracing::warn!(trigger = %id, deployment, "{warning}");
                    report.warnings.push(warning);
                }
            }
        }
        for (definition, c) in definitions.into_iter().zip(compiled) {
            let old = existing.iter().find(|r| r.definition.id == definition.id);
            if old.is_some_and(|r| r.definition == definition) {
                report.unchanged.push(definition.id);
                continue;
            }
            self.engine.upsert(c);
            let record = TriggerRecord {
                created: old.map_or(now, |r| r.created),
                updated: now,
                definition,
                error: None,
                warning: None,
                stats: None,
                origin: Some(TriggerOrigin::Worker),
            };
            tx.put_trigger(&record)?;
            if old.is_some() { &mut report.updated } else { &mut report.created }.push(record.definition.id);
        }
        Ok(Ok(report))
    }

    /// Removes a definition (its stored state goes with the batch's state changes); the
    /// caller has done the periodic work due first ([`Core::advance_for_change`]).
    fn remove_trigger(&mut self, tx: &Tx, id: &str) -> Result<(), StoreError> {
        self.engine.remove(id);
        tx.delete_trigger(id)?;
        Ok(())
    }
}
