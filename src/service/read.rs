//! The read side: every read the API needs, as service methods that do their own blocking
//! and answer service errors. The edges never touch the store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::model::affinity::{affinity, describe_required};
use crate::model::event_filter::EventFilter;
use crate::model::StateReason;

use crate::engine::compile::NodeKind;
use crate::engine::{BucketKey, BucketPage, BucketQuery, BucketView, CompositeView};
use crate::model::{
    Deployment, Event, Firing, JsonPath, LogLine, Problems, Run, ScopeFilter, Span, Timestamp, TriggerRecord,
    TriggerStats,
};
use crate::store::{Store, StoreError};

use super::{Service, ServiceError};

/// Stored events one page scans at most looking for matches.
pub const EVENT_SCAN_LIMIT: usize = 100_000;

/// Which way a page of events runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Newest first; the cursor is the sequence number to stop before.
    NewestFirst,
    /// Oldest first; the cursor is the sequence number to start at.
    OldestFirst,
}

/// A page of stored events and the cursor of the next page, when there is one.
#[derive(Clone, Debug, Default)]
pub struct EventPage {
    /// The events, in the page's order.
    pub events: Vec<Event>,
    /// Where the next page starts.
    pub next: Option<u64>,
}

/// A page of a definition's live buckets, each with the evidence its window keeps (its last
/// event, with whether it opened the window or counted): "why did or didn't it fire?".
#[derive(Clone, Debug, Serialize)]
pub struct BucketsPage {
    /// The definition's id.
    pub trigger: String,
    /// The buckets, by (event trigger, key).
    pub buckets: Vec<Value>,
    /// The cursor of the next page (`after=`), when there is one.
    pub next: Option<String>,
    /// Each compound and sequence trigger's progress, on the first page: which children
    /// fired (the latest firing kept of each), how many are needed, and until when each
    /// counts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub composites: Vec<Value>,
}

/// A page of a run's log.
#[derive(Clone, Debug, Serialize)]
pub struct LogPage {
    /// The lines, oldest first.
    pub lines: Vec<LogLine>,
    /// Pass as `from` for the lines after these (absent when there are none yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

/// Evidence events read from the store per blocking step: a client that goes away stops the
/// work at the next step.
const EVIDENCE_CHUNK: usize = 50;

impl Service {
    /// Runs a read against the store on the blocking pool.
    pub(super) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|_| ServiceError::ShuttingDown)?
            .map_err(Into::into)
    }

    /// A page of stored events that pass `keep`, at most `limit`, scanning at most
    /// `scan_limit` (and the store's byte bounds).
    pub async fn events(
        &self,
        order: Order,
        cursor: Option<u64>,
        limit: usize,
        scan_limit: usize,
        keep: impl FnMut(&Event) -> bool + Send + 'static,
    ) -> Result<EventPage, ServiceError> {
        let (stored, next) = self
            .read(move |store| match order {
                Order::NewestFirst => store.events_desc(cursor, limit, scan_limit, keep),
                Order::OldestFirst => store.events_asc(cursor, limit, scan_limit, keep),
            })
            .await?;
        Ok(EventPage { events: stored.into_iter().map(|s| s.event).collect(), next })
    }

    /// Stored events read per store call while backfilling.
    const BACKFILL_SCAN_CHUNK: usize = 1000;

    /// A page of a subscriber's backfill (`/api/events/out` with `backfill`): the stored
    /// events `filter` includes that were received at `cutoff` or later, newest first by
    /// arrival, at most `limit`, from before the cursor `before`. `next` is absent once the
    /// events end or the first one received before `cutoff` is met.
    pub(crate) async fn backfill_page(
        &self,
        filter: Arc<EventFilter>,
        cutoff: Timestamp,
        before: Option<u64>,
        limit: usize,
    ) -> Result<EventPage, ServiceError> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let reached = Arc::new(AtomicBool::new(false));
        let seen = reached.clone();
        let mut page = self
            .events(Order::NewestFirst, before, limit, Self::BACKFILL_SCAN_CHUNK, move |e| {
                if seen.load(Ordering::Relaxed) || e.received.is_none_or(|r| r < cutoff) {
                    seen.store(true, Ordering::Relaxed);
                    return false;
                }
                filter.includes(e)
            })
            .await?;
        if reached.load(Ordering::Relaxed) {
            page.next = None;
        }
        Ok(page)
    }

    /// One stored event by id (`None`: never stored, or pruned past the retention period).
    pub async fn event(&self, id: Uuid) -> Result<Option<Event>, ServiceError> {
        self.read(move |store| store.event(&id)).await
    }

    /// How many events are stored, in all.
    pub async fn event_count(&self) -> Result<u64, ServiceError> {
        self.read(|store| store.event_count()).await
    }

    /// The latest firings of every definition, newest first.
    pub async fn recent_firings(&self, limit: usize) -> Result<Vec<Firing>, ServiceError> {
        self.read(move |store| store.firings(limit, |_| true)).await
    }

    /// A page of firings, newest first, with the cursor of the next page: of one trigger if
    /// `trigger` is given, whose `at` is within `since..=until`.
    pub async fn firing_page(
        &self,
        trigger: Option<String>,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Firing>, Option<u64>), ServiceError> {
        self.read(move |store| {
            store.firing_page(before, limit, |f| {
                trigger.as_deref().is_none_or(|t| f.trigger == t)
                    && since.is_none_or(|s| f.at >= s)
                    && until.is_none_or(|u| f.at <= u)
            })
        })
        .await
    }

    /// How many stored events pass `keep`, within one page's scan bounds.
    pub async fn count_events(
        &self,
        mut keep: impl FnMut(&Event) -> bool + Send + 'static,
    ) -> Result<usize, ServiceError> {
        self.read(move |store| {
            let mut total = 0usize;
            store.events_desc(None, usize::MAX, EVENT_SCAN_LIMIT, |e| {
                total += usize::from(keep(e));
                false
            })?;
            Ok(total)
        })
        .await
    }

    /// Every definition, each with a warning when its deployment does not exist (yet).
    pub async fn triggers(&self) -> Result<Vec<TriggerRecord>, ServiceError> {
        self.read(|store| records_with_warnings(store, store.triggers()?)).await
    }

    /// Every definition, each with its warning and what it does now ([`TriggerStats`]): its
    /// live buckets as last counted, and its firings in the last hour, from one newest-first
    /// pass over the stored firings that stops at the first older than an hour (or after
    /// 100,000 firings, then marked partial).
    pub async fn triggers_with_stats(&self) -> Result<Vec<TriggerRecord>, ServiceError> {
        let since = self.now().minus(Span::minutes(60));
        let (mut records, fired, partial) = self
            .read(move |store| {
                let records = records_with_warnings(store, store.triggers()?)?;
                let mut fired: HashMap<String, (u64, Timestamp)> = HashMap::new();
                let partial = store.firings_while(|f| {
                    if f.triggered < since {
                        return false;
                    }
                    let (count, last) = fired.entry(f.trigger.clone()).or_insert((0, f.triggered));
                    *count += 1;
                    *last = (*last).max(f.triggered);
                    true
                })?;
                Ok((records, fired, partial))
            })
            .await?;
        for record in &mut records {
            let (firings_last_hour, last_firing) =
                fired.get(&record.definition.id).map_or((0, None), |(n, last)| (*n, Some(*last)));
            record.stats = Some(TriggerStats {
                live_buckets: self.inner.metrics.live_buckets_of(&record.definition.id),
                firings_last_hour,
                firings_partial: partial,
                last_firing,
            });
        }
        Ok(records)
    }

    /// One definition, with its warning.
    pub async fn trigger(&self, id: String) -> Result<TriggerRecord, ServiceError> {
        let found = self
            .read({
                let id = id.clone();
                move |store| records_with_warnings(store, store.trigger(&id)?.into_iter().collect())
            })
            .await?;
        found.into_iter().next().ok_or(ServiceError::NotFound { what: "trigger", id })
    }

    /// The definitions that run `deployment`.
    pub async fn deployment_triggers(&self, deployment: String) -> Result<Vec<TriggerRecord>, ServiceError> {
        self.read(move |store| {
            if store.deployment(&deployment)?.is_none() {
                return Ok(Err(ServiceError::NotFound { what: "deployment", id: deployment }));
            }
            let all = store.triggers()?;
            Ok(Ok(all
                .into_iter()
                .filter(|r| r.definition.deployment.as_deref() == Some(deployment.as_str()))
                .collect()))
        })
        .await?
    }

    /// A definition's latest firings, newest first.
    pub async fn firings(&self, id: String, limit: usize) -> Result<Vec<Firing>, ServiceError> {
        self.read(move |store| {
            if store.trigger(&id)?.is_none() {
                return Ok(Err(ServiceError::NotFound { what: "trigger", id }));
            }
            Ok(Ok(store.firings(limit, |f| f.trigger == id)?))
        })
        .await?
    }

    /// A page of a definition's live buckets with their evidence (see [`BucketsPage`]).
    pub async fn explain(&self, id: String, request: BucketsRequest) -> Result<BucketsPage, ServiceError> {
        let query = bucket_query(request)?;
        let first_page = query.after.is_none();
        let page = self.bucket_page(id.clone(), query).await?;
        self.explained_page(id, page, first_page).await
    }

    /// A page of buckets with the evidence each keeps, read from the store, and (on the first
    /// page) the composites' progress.
    pub(super) async fn explained_page(
        &self,
        id: String,
        page: Option<BucketPage>,
        first_page: bool,
    ) -> Result<BucketsPage, ServiceError> {
        let Some(page) = page else {
            return Ok(BucketsPage { trigger: id, buckets: Vec::new(), next: None, composites: Vec::new() });
        };
        let mut buckets = Vec::with_capacity(page.buckets.len());
        for chunk in page.buckets.chunks(EVIDENCE_CHUNK) {
            let ids: Vec<Option<Uuid>> = chunk.iter().map(|b| b.bucket.last_event).collect();
            let events: Vec<Option<Event>> = self
                .read(move |store| ids.iter().map(|id| id.map_or(Ok(None), |id| store.event(&id))).collect())
                .await?;
            for (b, event) in chunk.iter().zip(events) {
                buckets.push(explained(b, event, &page.definition.nodes));
            }
        }
        let next = page.next.map(|(node, key)| format!("{node}:{}", key.as_str()));
        let composites = if first_page { page.composites.iter().map(progress).collect() } else { Vec::new() };
        Ok(BucketsPage { trigger: id, buckets, next, composites })
    }

    /// Every deployment.
    pub async fn deployments(&self) -> Result<Vec<Deployment>, ServiceError> {
        self.read(|store| store.deployments()).await
    }

    /// One deployment.
    pub async fn deployment(&self, name: String) -> Result<Deployment, ServiceError> {
        let found = self.read({
            let name = name.clone();
            move |store| store.deployment(&name)
        });
        found.await?.ok_or(ServiceError::NotFound { what: "deployment", id: name })
    }

    /// Runs newest first that pass `keep`, at most `limit`.
    pub async fn runs(
        &self,
        limit: usize,
        keep: impl FnMut(&Run) -> bool + Send + 'static,
    ) -> Result<Vec<Run>, ServiceError> {
        let mut runs = self.read(move |store| store.runs(limit, keep)).await?;
        self.explain_waiting(&mut runs).await?;
        Ok(runs)
    }

    /// One run.
    pub async fn run(&self, id: Uuid) -> Result<Run, ServiceError> {
        let run = self.read(move |store| store.run(&id)).await?;
        let mut runs: Vec<Run> = run.into_iter().collect();
        self.explain_waiting(&mut runs).await?;
        runs.pop().ok_or(ServiceError::NotFound { what: "run", id: id.to_string() })
    }

    /// The children `parent` spawned, by key (every attempt's: a retried parent finds its
    /// children again rather than making new ones).
    pub async fn children(&self, parent: Uuid) -> Result<Vec<Run>, ServiceError> {
        use crate::model::child::MAX_CHILDREN_PER_RUN;
        let runs = self
            .read(move |store| match store.run(&parent)? {
                None => Ok(None),
                Some(_) => store.children(&parent, MAX_CHILDREN_PER_RUN).map(Some),
            })
            .await?;
        let mut runs = runs.ok_or(ServiceError::NotFound { what: "run", id: parent.to_string() })?;
        self.explain_waiting(&mut runs).await?;
        Ok(runs)
    }

    /// Says why a waiting run that no live worker can take waits: its deployment requires
    /// labels that no online worker serving it has (`reason: no_matching_worker`, and
    /// `waiting` in words). Worked out as the run is read, from the workers heard from.
    async fn explain_waiting(&self, runs: &mut [Run]) -> Result<(), ServiceError> {
        let waiting = |r: &Run| r.state == crate::model::RunState::Scheduled && r.reason.is_none();
        if !runs.iter().any(waiting) {
            return Ok(());
        }
        let deployments = self.read(|store| store.deployments()).await?;
        let now = self.now();
        for run in runs.iter_mut().filter(|r| waiting(r)) {
            let Some(d) = deployments.iter().find(|d| d.name == run.deployment) else { continue };
            if !d.desired_labels.values().any(|l| l.required) {
                continue;
            }
            let serving = self.inner.workers.peers(std::slice::from_ref(&d.name), "", now);
            if serving.is_empty() || serving.iter().any(|p| affinity(&d.desired_labels, &p.labels).is_some()) {
                continue;
            }
            let names: Vec<String> = serving.iter().map(|p| p.name.clone()).collect();
            run.reason = Some(StateReason::NoMatchingWorker);
            run.waiting = Some(format!(
                "no live worker serving `{}` has the labels it requires ({}); online: {}",
                d.name,
                describe_required(&d.desired_labels),
                names.join(", ")
            ));
        }
        Ok(())
    }

    /// Up to `limit` chunks of a run's stream from position `from`, and the run's state (a
    /// final run's stream has ended).
    pub async fn stream_page(
        &self,
        id: Uuid,
        from: u64,
        limit: usize,
    ) -> Result<(Vec<crate::model::StreamChunk>, crate::model::RunState), ServiceError> {
        let (run, chunks) = self.read(move |store| Ok((store.run(&id)?, store.run_stream(&id, from, limit)?))).await?;
        let run = run.ok_or(ServiceError::NotFound { what: "run", id: id.to_string() })?;
        Ok((chunks, run.state))
    }

    /// A page of a run's log, from line `from`.
    pub async fn logs(&self, id: Uuid, from: u64, limit: usize) -> Result<LogPage, ServiceError> {
        let (exists, lines) =
            self.read(move |store| Ok((store.run(&id)?.is_some(), store.run_logs(&id, from, limit)?))).await?;
        if !exists {
            return Err(ServiceError::NotFound { what: "run", id: id.to_string() });
        }
        let next = lines.last().map(|(pos, _)| pos + 1);
        Ok(LogPage { lines: lines.into_iter().map(|(_, l)| l).collect(), next })
    }

    /// Every scope filter.
    pub async fn filters(&self) -> Result<Vec<ScopeFilter>, ServiceError> {
        self.read(|store| store.filters()).await
    }

    /// One scope filter.
    pub async fn filter(&self, id: Uuid) -> Result<ScopeFilter, ServiceError> {
        let found = self.read(move |store| store.filter(&id)).await?;
        found.ok_or(ServiceError::NotFound { what: "filter", id: id.to_string() })
    }
}

/// Sets each record's warning from the deployments that exist.
fn records_with_warnings(store: &Store, mut records: Vec<TriggerRecord>) -> Result<Vec<TriggerRecord>, StoreError> {
    if records.iter().any(|r| r.definition.deployment.is_some()) {
        let deployments: HashSet<String> = store.deployments()?.into_iter().map(|d| d.name).collect();
        for r in &mut records {
            r.note_deployment(|name| deployments.contains(name));
        }
    }
    Ok(records)
}

/// One bucket as the explain view shows it, with its last event as evidence.
/// Which page of buckets to show, as a client asks for it.
#[derive(Clone, Debug, Default)]
pub struct BucketsRequest {
    /// One value per `for_each` label (in sorted-label order) looks one bucket up; one value
    /// for several labels matches any of them.
    pub key: Option<Vec<String>>,
    /// The previous page's `next`.
    pub after: Option<String>,
    /// Buckets per page.
    pub limit: usize,
}

/// The engine's query for a client's request (400 naming `after` for a cursor it did not
/// give).
pub(super) fn bucket_query(BucketsRequest { key, after, limit }: BucketsRequest) -> Result<BucketQuery, ServiceError> {
    let after = match after {
        None => None,
        Some(cursor) => match cursor.split_once(':').and_then(|(n, k)| Some((n.parse::<usize>().ok()?, k))) {
            Some((node, key)) => Some((node, BucketKey::from_packed(key))),
            None => {
                let mut problems = Problems::default();
                problems.add(&JsonPath::root().key("after"), "expected the `next` cursor of a previous page");
                return Err(ServiceError::Invalid(problems));
            }
        },
    };
    Ok(BucketQuery { key, after, limit })
}

/// A compound or sequence trigger's progress, for people: each child with its kept firing,
/// when that firing stops counting, and whether it already has.
fn progress(c: &CompositeView) -> Value {
    let children: Vec<Value> = c
        .children
        .iter()
        .zip(&c.fired)
        .map(|(node, fired)| match fired {
            None => json!({"node": node, "fired": null}),
            Some(f) => {
                let until = c.within.map(|w| f.triggered.plus(w));
                json!({
                    "node": node,
                    "fired": f.triggered,
                    "at": f.at,
                    "events": f.events,
                    "counts_until": until,
                    "expired": until.is_some_and(|u| u < c.clock),
                })
            }
        })
        .collect();
    let counting = c.fired.iter().flatten().filter(|f| c.within.is_none_or(|w| f.triggered.plus(w) >= c.clock)).count();
    json!({
        "node": c.node,
        "kind": if c.sequence { "sequence" } else { "compound" },
        "required": c.required,
        "within": c.within.map(Span::as_secs_f64),
        "counting": counting,
        "children": children,
    })
}

fn explained(b: &BucketView, event: Option<Event>, nodes: &[crate::engine::compile::Node]) -> Value {
    let evidence: Vec<Value> = event
        .map(Arc::new)
        .and_then(|e| {
            let NodeKind::Event(node) = &nodes.get(b.node)?.kind else { return None };
            let role = node.role_of(&e)?;
            Some(json!({"id": e.id, "event": e.event, "occurred": e.occurred, "opens": role.opens, "counts": role.counts}))
        })
        .into_iter()
        .collect();
    json!({
        "node": b.node,
        "labels": b.labels,
        "phase": b.phase,
        "posture": b.posture,
        "start": b.bucket.start,
        "end": b.bucket.end,
        "count": b.bucket.count,
        "threshold": b.threshold,
        "last_event": b.bucket.last_event,
        "sweep_at": b.sweep_at,
        "events": evidence,
    })
}
