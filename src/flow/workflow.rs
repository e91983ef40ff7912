//! DAG workflows (Hatchet's): flows with parents, run in dependency order, each task a child
//! run of the workflow's run, so that a workflow run survives its worker as child runs do.
//!
//! A [`Workflow`] is served as a deployment of its own name, whose flow runs the DAG: it spawns
//! every task whose parents completed (keyed by the task's name, so a retried or taken-over
//! workflow run finds the tasks it started), and skips the descendants of a task that failed;
//! then, if any task failed, it runs the on-failure task and fails with what went wrong.
//! Tasks read the workflow's input as their parameters and their parents' outputs with
//! [`FlowContext::parent_output`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::task::JoinSet;

use crate::client::ClientError;
use crate::model::{Deployment, RunState};

use super::api::RunTarget;
use super::{Flow, FlowContext};

/// The key of the on-failure task among a workflow run's children.
pub const ON_FAILURE_KEY: &str = "on-failure";

/// A task of a workflow: a flow and the tasks it runs after.
#[derive(Clone)]
pub struct Task {
    flow: Flow,
    parents: Vec<String>,
}

impl From<Flow> for Task {
    fn from(flow: Flow) -> Task {
        Task { flow, parents: Vec::new() }
    }
}

impl Flow {
    /// This flow as a workflow task that runs once every one of `parents` completed (and is
    /// skipped when one of them fails or is skipped): `b.after(&[&a])`.
    pub fn after(self, parents: &[&Flow]) -> Task {
        Task { flow: self, parents: parents.iter().map(|p| p.name().to_owned()).collect() }
    }
}

/// A DAG of flows, triggered like a deployment of its own name: by triggers, by the API
/// (`POST /api/deployments/{name}/runs`), or with `tw.run_flow(&workflow, input)`.
///
/// ```
/// use serde_json::{json, Value};
/// use tripwire::prelude::*;
///
/// let a = Flow::new("a", |_: FlowContext, input: Value| async move { Ok(input["n"].clone()) });
/// let b = Flow::new("b", |ctx: FlowContext, _: Value| async move {
///     let a = ctx.parent_output("a").await?;
///     Ok(json!(a.as_i64().unwrap_or(0) + 1))
/// });
/// let workflow = Workflow::new("pipeline").task(a.clone()).task(b.after(&[&a]));
/// assert_eq!(workflow.task_names(), ["a", "b"]);
/// ```
#[derive(Clone)]
pub struct Workflow {
    name: String,
    tasks: Vec<Task>,
    on_failure: Option<Flow>,
    problems: Vec<String>,
    deployment: Option<Deployment>,
}

impl Workflow {
    /// An empty workflow named `name` (its deployment's name).
    pub fn new(name: impl Into<String>) -> Workflow {
        Workflow { name: name.into(), tasks: Vec::new(), on_failure: None, problems: Vec::new(), deployment: None }
    }

    /// Adds a task: a flow, or `flow.after(&[&parent, ...])`. Parents must be added first (so
    /// that the graph has no cycle); a task named twice, or a parent not added yet, is
    /// reported when the workflow is served.
    pub fn task(mut self, task: impl Into<Task>) -> Workflow {
        let task = task.into();
        let name = task.flow.name().to_owned();
        if name == ON_FAILURE_KEY {
            self.problems.push(format!("a task may not be named `{ON_FAILURE_KEY}` (the on-failure task's key)"));
        }
        if name == self.name || self.tasks.iter().any(|t| t.flow.name() == name) {
            self.problems.push(format!("task `{name}` is named twice in workflow `{}`", self.name));
        }
        for parent in &task.parents {
            if !self.tasks.iter().any(|t| t.flow.name() == parent) {
                self.problems.push(format!(
                    "task `{name}` runs after `{parent}`, which is not a task of workflow `{}` yet (add parents first)",
                    self.name
                ));
            }
        }
        self.tasks.push(task);
        self
    }

    /// A task that runs when any task failed, after the others ended (Hatchet's on-failure
    /// task). It gets the workflow's input, and reads what failed with
    /// [`FlowContext::failed_tasks`]. The workflow run still fails.
    pub fn on_failure(mut self, flow: Flow) -> Workflow {
        self.on_failure = Some(flow);
        self
    }

    /// The workflow run's own deployment settings (its run controls: concurrency, priority,
    /// rate limits, retries of the whole workflow); the name stays the workflow's.
    pub fn with_deployment(mut self, deployment: Deployment) -> Workflow {
        self.deployment = Some(deployment);
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tasks' names, in the order they were added.
    pub fn task_names(&self) -> Vec<&str> {
        self.tasks.iter().map(|t| t.flow.name()).collect()
    }

    /// What is wrong with the graph (a task named twice, a parent not added first).
    pub(crate) fn problems(&self) -> Result<(), ClientError> {
        match self.problems.is_empty() {
            true => Ok(()),
            false => Err(ClientError::Invalid(self.problems.join("; "))),
        }
    }

    /// The flows a worker serves for it: the workflow's own (which runs the DAG), then each
    /// task's, then the on-failure task's.
    pub(crate) fn flows(&self) -> (Flow, Vec<Flow>) {
        let plan = Arc::new(self.clone());
        let mut runner = Flow::new(self.name.clone(), move |ctx: FlowContext, input: Value| {
            let plan = plan.clone();
            async move { plan.run(ctx, input).await }
        });
        if let Some(deployment) = &self.deployment {
            runner = runner.with_deployment(deployment.clone());
        }
        let mut tasks: Vec<Flow> = self.tasks.iter().map(|t| t.flow.clone()).collect();
        tasks.extend(self.on_failure.clone());
        (runner, tasks)
    }

    /// Runs the DAG inside the workflow's run: every task whose parents completed is spawned
    /// (keyed by its name), a task whose parent failed or was skipped is skipped.
    async fn run(&self, ctx: FlowContext, input: Value) -> super::Result<Value> {
        let mut ended: HashMap<String, Ended> = HashMap::new();
        let mut running = JoinSet::new();
        let mut started: Vec<String> = Vec::new();
        loop {
            for task in &self.tasks {
                let name = task.flow.name();
                if ended.contains_key(name) || started.iter().any(|s| s == name) {
                    continue;
                }
                let parents: Vec<Option<&Ended>> = task.parents.iter().map(|p| ended.get(p)).collect();
                if parents.iter().any(|p| matches!(p, Some(Ended::Failed(_) | Ended::Skipped))) {
                    ended.insert(name.to_owned(), Ended::Skipped);
                } else if parents.iter().all(|p| matches!(p, Some(Ended::Completed(_)))) {
                    started.push(name.to_owned());
                    let spawned = ctx.spawn_keyed(&task.flow, name, &input);
                    let name = name.to_owned();
                    running.spawn(async move { (name, spawned.await) });
                }
            }
            let Some(joined) = running.join_next().await else { break };
            let (name, outcome) = joined.map_err(|e| format!("a task's waiting stopped: {e}"))?;
            started.retain(|s| *s != name);
            ended.insert(
                name,
                match outcome {
                    Ok(output) => Ended::Completed(output),
                    Err(ClientError::RunFailed { state, error, .. }) => Ended::Failed(format!("{state:?}: {error}")),
                    // The server could not be asked: the workflow's attempt fails (and is
                    // retried, finding the tasks it started).
                    Err(other) => return Err(other.into()),
                },
            );
        }
        let mut failed = Vec::new();
        let mut outputs = Map::new();
        for task in &self.tasks {
            let name = task.flow.name();
            match ended.get(name) {
                Some(Ended::Completed(output)) => {
                    outputs.insert(name.to_owned(), output.clone());
                }
                Some(Ended::Failed(error)) => failed.push(format!("task `{name}` failed ({error})")),
                Some(Ended::Skipped) | None => failed.push(format!("task `{name}` was skipped")),
            }
        }
        if failed.is_empty() {
            return Ok(Value::Object(outputs));
        }
        if let Some(handler) = &self.on_failure {
            match ctx.spawn_keyed(handler, ON_FAILURE_KEY, &input).await {
                Ok(_) => failed.push(format!("on-failure task `{}` ran", handler.name())),
                Err(e) => failed.push(format!("on-failure task `{}` failed too: {e}", handler.name())),
            }
        }
        Err(failed.join("; ").into())
    }
}

/// How a task ended in this workflow run.
enum Ended {
    Completed(Value),
    Failed(String),
    Skipped,
}

impl RunTarget for Workflow {
    fn deployment_name(&self) -> &str {
        &self.name
    }
}

impl FlowContext {
    /// The output of `parent`, a task this one runs after in the same workflow run (by flow
    /// or by name). Fails when this run is not a workflow task, or that task has not
    /// completed.
    pub async fn parent_output(&self, parent: &(impl RunTarget + ?Sized)) -> Result<Value, ClientError> {
        let name = parent.deployment_name();
        let siblings = self.siblings().await?;
        match siblings.get(name) {
            Some((RunState::Completed, output)) => Ok(output.clone()),
            Some((state, _)) => Err(ClientError::Invalid(format!(
                "task `{name}` of this workflow run is {state:?}, not completed: run this task after it"
            ))),
            None => Err(ClientError::Invalid(format!("this workflow run has no task `{name}` (yet)"))),
        }
    }

    /// The tasks of this workflow run that failed, with their errors (what an on-failure
    /// task reads).
    pub async fn failed_tasks(&self) -> Result<BTreeMap<String, String>, ClientError> {
        let siblings = self.siblings().await?;
        Ok(siblings
            .into_iter()
            .filter(|(_, (state, _))| matches!(state, RunState::Failed | RunState::Cancelled))
            .map(|(name, (state, error))| (name, error.as_str().map_or_else(|| format!("{state:?}"), str::to_owned)))
            .collect())
    }

    /// The other tasks of the workflow run this run is a task of: name → (state, output or
    /// error).
    async fn siblings(&self) -> Result<HashMap<String, (RunState, Value)>, ClientError> {
        let Some(parent) = &self.run().parent else {
            return Err(ClientError::Invalid(format!("run {} is not a task of a workflow run", self.run_id())));
        };
        let children = self.backend().children(parent.run).await?;
        Ok(children
            .into_iter()
            .filter_map(|c| {
                let key = c.parent?.key;
                let value = match c.state {
                    RunState::Completed => c.output.unwrap_or(Value::Null),
                    _ => c.error.map_or(Value::Null, Value::String),
                };
                Some((key, (c.state, value)))
            })
            .collect())
    }
}
