//! Deployments: the flows runs are made of, with their defaults and run controls.

use crate::model::time::Timestamp;
use crate::model::Deployment;
use crate::service::ServiceError;
use crate::store::Tx;

use super::super::runs::compile_key;
use super::{Core, Outcome};

impl Core {
    /// Creates or replaces a deployment (`create_only`: refuses a name in use). Answers it as
    /// stored and whether it was created.
    pub(super) fn put_deployment(
        &mut self,
        tx: &Tx,
        mut deployment: Deployment,
        create_only: bool,
        now: Timestamp,
    ) -> Outcome<(Deployment, bool)> {
        let existing = tx.deployment(&deployment.name)?;
        if create_only && existing.is_some() {
            return Ok(Err(ServiceError::Conflict { what: "deployment", id: deployment.name }));
        }
        let key = match compile_key(&deployment) {
            Ok(key) => key,
            Err(problems) => return Ok(Err(ServiceError::Invalid(problems))),
        };
        deployment.created = Some(existing.as_ref().and_then(|d| d.created).unwrap_or(now));
        deployment.updated = Some(now);
        tx.put_deployment(&deployment)?;
        self.runs.set_deployment(deployment.clone(), key);
        Ok(Ok((deployment, existing.is_none())))
    }

    /// Removes a deployment; its triggers stay, and fire without a run until it is back.
    pub(super) fn delete_deployment(&mut self, tx: &Tx, name: String) -> Outcome<()> {
        let removed = tx.delete_deployment(&name)?;
        self.runs.remove_deployment(&name);
        Ok(if removed { Ok(()) } else { Err(ServiceError::NotFound { what: "deployment", id: name }) })
    }
}
