//! Deployments: the flows runs are made of, with their defaults and run controls.

use crate::model::time::Timestamp;
use crate::model::{Deployment, JsonPath, Problems};
use crate::service::ServiceError;
use crate::store::Tx;

use super::super::runs::compile;
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
        let compiled = match compile(&deployment) {
            Ok(compiled) => compiled,
            Err(problems) => return Ok(Err(ServiceError::Invalid(problems))),
        };
        if let Err(problems) = self.check_static_keys(&deployment) {
            return Ok(Err(ServiceError::Invalid(problems)));
        }
        deployment.created = Some(existing.as_ref().and_then(|d| d.created).unwrap_or(now));
        deployment.updated = Some(now);
        tx.put_deployment(&deployment)?;
        self.runs.set_deployment(deployment.clone(), compiled);
        Ok(Ok((deployment, existing.is_none())))
    }

    /// Every static key the deployment names exists, with a quota its units fit in.
    fn check_static_keys(&mut self, deployment: &Deployment) -> Result<(), Problems> {
        let mut problems = Problems::default();
        for (i, r) in deployment.rate_limits.iter().enumerate() {
            let Some(key) = &r.static_key else { continue };
            let path = JsonPath::root().key("rate_limits").index(i);
            match self.runs.limiter().static_limit(key) {
                None => problems.add_rule(
                    &path.key("static_key"),
                    format!(
                        "there is no rate limit `{key}`; make it first (`tripwire rate-limits put {key} 100/minute`, or PUT /api/rate-limits/{key})"
                    ),
                ),
                Some(limit) if r.units > limit.limit => problems.add_rule(
                    &path.key("units"),
                    format!(
                        "{} units per run can never fit `{key}`'s quota of {} per {}",
                        r.units,
                        limit.limit,
                        limit.duration.name()
                    ),
                ),
                Some(_) => {}
            }
        }
        problems.into_result(())
    }

    /// Removes a deployment; its triggers stay, and fire without a run until it is back.
    pub(super) fn delete_deployment(&mut self, tx: &Tx, name: String) -> Outcome<()> {
        let removed = tx.delete_deployment(&name)?;
        self.runs.remove_deployment(&name);
        Ok(if removed { Ok(()) } else { Err(ServiceError::NotFound { what: "deployment", id: name }) })
    }
}
