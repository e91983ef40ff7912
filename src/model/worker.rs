//! What the server knows of a worker: the deployments it serves, its slots, the runs it holds,
//! and when it was last heard from (`GET /api/workers`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Timestamp;

/// Whether a worker is still heard from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// It claimed, heartbeat or reported a run within its lease plus its claim's wait (and 5
    /// seconds of grace): it is polling or running something.
    Online,
    /// Not heard from for longer than that: stopped, killed, or cut off. Listed for an hour
    /// after it was last heard from, then forgotten.
    Offline,
}

/// A worker as the server last heard from it. Kept in memory: after a restart a worker
/// appears again at its next claim or heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkerStatus {
    /// The name it claims with.
    pub name: String,
    /// Online or offline.
    pub state: WorkerState,
    /// The deployments its last claim named (empty until it claims: a worker heard from only
    /// by heartbeat, as after a server restart).
    pub deployments: Vec<String>,
    /// The runs it can hold at once, as it says in its claims (absent when it does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    /// Its labels, as its last claim gave them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, super::LabelValue>,
    /// The runs it holds now: claimed, not yet completed or failed, lease not lapsed.
    pub running: Vec<Uuid>,
    /// When it was first heard from (since the server started, or since it was forgotten).
    pub first_seen: Timestamp,
    /// When it last claimed, heartbeat, or reported a run.
    pub last_seen: Timestamp,
    /// When it last asked for runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_claim: Option<Timestamp>,
    /// The lease it asks for, in seconds.
    pub lease_seconds: f64,
}
