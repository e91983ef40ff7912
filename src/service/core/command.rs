//! What the core is asked to do: one command per request, each with the channel its answer
//! goes back on after the commit.

use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::engine::{BucketPage, BucketQuery};
use crate::model::Timestamp;
use crate::model::{
    ChildRequest, ClaimRequest, ClaimedRun, Completion, Deployment, FailureReport, Heartbeat, HeartbeatReply, LogBatch,
    RateLimit, RateLimitQuota, Run, ScopeFilter, TriggerDefinition, TriggerSync,
};
use crate::service::{IngestReport, ServiceError};
use crate::store::{PreparedEvent, StoredKey, TriggerRecord};

type Reply<T> = oneshot::Sender<Result<T, ServiceError>>;

/// What the core is asked to do.
#[allow(clippy::large_enum_variant)] // commands are moved once through a channel
pub(in crate::service) enum Command {
    Ingest {
        /// Encoded for storage on the caller's thread.
        events: Vec<PreparedEvent>,
        reply: Reply<IngestReport>,
    },
    Tick {
        reply: Option<oneshot::Sender<()>>,
    },
    PutTrigger {
        definition: Box<TriggerDefinition>,
        create_only: bool,
        reply: Reply<(TriggerRecord, bool)>,
    },
    DeleteTrigger {
        id: String,
        reply: Reply<()>,
    },
    SetEnabled {
        id: String,
        enabled: bool,
        reply: Reply<TriggerRecord>,
    },
    Buckets {
        id: String,
        query: BucketQuery,
        reply: Reply<Option<BucketPage>>,
    },
    PutDeployment {
        deployment: Deployment,
        create_only: bool,
        reply: Reply<(Deployment, bool)>,
    },
    DeleteDeployment {
        name: String,
        reply: Reply<()>,
    },
    PutRateLimit {
        key: String,
        quota: RateLimitQuota,
        reply: Reply<(RateLimit, bool)>,
    },
    DeleteRateLimit {
        key: String,
        reply: Reply<()>,
    },
    CreateRun {
        deployment: String,
        parameters: Option<Value>,
        priority: Option<i32>,
        reply: Reply<Run>,
    },
    SpawnChild {
        parent: Uuid,
        request: ChildRequest,
        reply: Reply<(Run, bool)>,
    },
    SyncTriggers {
        deployment: String,
        definitions: Vec<TriggerDefinition>,
        reply: Reply<TriggerSync>,
    },
    Claim {
        request: ClaimRequest,
        /// The other online workers serving its deployments (for worker affinity).
        peers: Vec<crate::service::workers::Peer>,
        reply: Reply<Vec<ClaimedRun>>,
    },
    Heartbeat {
        id: Uuid,
        heartbeat: Heartbeat,
        reply: Reply<HeartbeatReply>,
    },
    Complete {
        id: Uuid,
        completion: Completion,
        reply: Reply<Run>,
    },
    Fail {
        id: Uuid,
        failure: FailureReport,
        reply: Reply<Run>,
    },
    Cancel {
        id: Uuid,
        reply: Reply<Run>,
    },
    AppendStream {
        id: Uuid,
        batch: crate::model::StreamBatch,
        reply: Reply<usize>,
    },
    AppendLogs {
        id: Uuid,
        batch: LogBatch,
        reply: Reply<usize>,
    },
    PutFilter {
        filter: ScopeFilter,
        reply: Reply<ScopeFilter>,
    },
    DeleteFilter {
        id: Uuid,
        reply: Reply<()>,
    },
    PutKey {
        key: StoredKey,
        reply: Reply<StoredKey>,
    },
    RevokeKey {
        which: String,
        reply: Reply<StoredKey>,
    },
    WriteKeyUses {
        uses: Vec<(String, Timestamp)>,
        reply: Reply<()>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// Panics inside a batch, for the tests of what the core does then.
    #[cfg(test)]
    Explode {
        reply: Reply<()>,
    },
}
