//! Backtests (`POST /api/backtest`): trigger definitions run by an engine of their own over the
//! stored events, in arrival order, on a virtual clock (as `tripwire replay` runs a file), on
//! a thread of their own: never the core's, so live ingest goes on.
//!
//! Bounded: at most [`MAX_RUNNING_BACKTESTS`] at once and [`MAX_KEPT_BACKTESTS`] kept (each
//! for [`KEEP_BACKTEST_FOR`] after it ends); events are read [`CHUNK`] at a time, the past
//! events a firing renders from are read back from the store, the engine's buckets are bounded
//! as the live engine's are, and at most [`MAX_BACKTEST_FIRINGS`] firings are kept to be listed
//! (the rest are counted). Cancelling stops it at the next chunk.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::engine::compile::CompiledDefinition;
use crate::engine::{compile, Engine, EngineConfig, PendingFiring, Step};
use crate::model::backtest::merge_patch;
use crate::model::{
    Backtest, BacktestRequest, BacktestState, BacktestSummary, Event, Firing, JsonPath, Problems, Span, Timestamp,
    TriggerDefinition,
};
use crate::store::{Store, StoreError};

use super::read::{bucket_query, BucketsRequest};
use super::{BucketsPage, Service, ServiceError};

/// Backtests running at once; another is refused (503) until one ends.
pub const MAX_RUNNING_BACKTESTS: usize = 2;
/// Backtests kept, running or ended; past it the oldest ended one is forgotten.
pub const MAX_KEPT_BACKTESTS: usize = 16;
/// How long an ended backtest is kept.
pub const KEEP_BACKTEST_FOR: Span = Span::minutes(60);
/// Firings kept to be listed per backtest; past it they are only counted.
pub const MAX_BACKTEST_FIRINGS: usize = 10_000;
/// Events read from the store at a time (with a read transaction of their own).
pub const CHUNK: usize = 256;

/// One backtest: its record, its firings, its engine (for the buckets view at the end), and
/// the flag that cancels it.
struct Job {
    record: Mutex<Backtest>,
    firings: Mutex<Vec<Firing>>,
    engine: Mutex<Option<Engine>>,
    cancel: AtomicBool,
}

impl Job {
    fn record(&self) -> Backtest {
        self.record.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut Backtest)) {
        f(&mut self.record.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// The backtests of one service.
#[derive(Default)]
pub(super) struct Backtests {
    jobs: Mutex<Vec<Arc<Job>>>,
}

impl Backtests {
    fn find(&self, id: Uuid) -> Result<Arc<Job>, ServiceError> {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let found = jobs.iter().find(|j| j.record().id == id).cloned();
        found.ok_or(ServiceError::NotFound { what: "backtest", id: id.to_string() })
    }

    /// Cancels every running backtest (at shutdown).
    pub(super) fn cancel_all(&self) {
        for job in self.jobs.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            job.cancel.store(true, Ordering::Release);
        }
    }

    /// Makes room for one more, or says why not.
    fn admit(&self, job: Arc<Job>, now: Timestamp) -> Result<(), ServiceError> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.retain(|j| j.record().finished.is_none_or(|f| now.since(f) < KEEP_BACKTEST_FOR));
        let running = jobs.iter().filter(|j| j.record().state == BacktestState::Running).count();
        if running >= MAX_RUNNING_BACKTESTS {
            return Err(ServiceError::Overloaded { retry_after_secs: 5 });
        }
        if jobs.len() >= MAX_KEPT_BACKTESTS {
            let oldest = jobs.iter().position(|j| j.record().state != BacktestState::Running);
            jobs.remove(oldest.expect("fewer running than kept, so one has ended"));
        }
        jobs.push(job);
        Ok(())
    }
}

impl Service {
    /// Starts a backtest of `request`'s definitions over the stored events; answers at once
    /// with its record (`running`), which [`Service::backtest`] then follows.
    pub async fn start_backtest(&self, request: BacktestRequest) -> Result<Backtest, ServiceError> {
        request.validate().map_err(ServiceError::Invalid)?;
        let definitions = self.backtest_definitions(&request).await?;
        let now = self.now();
        let until = request.until.unwrap_or(now);
        let events_stored = self.read(|store| store.event_count()).await?;
        let record = Backtest {
            id: self.new_id(),
            state: BacktestState::Running,
            triggers: definitions.iter().map(|d| d.definition.id.clone()).collect(),
            from: request.from,
            until,
            started: now,
            finished: None,
            events_read: 0,
            events_stored,
            summary: BacktestSummary::default(),
            error: None,
        };
        let job = Arc::new(Job {
            record: Mutex::new(record.clone()),
            firings: Mutex::new(Vec::new()),
            engine: Mutex::new(None),
            cancel: AtomicBool::new(false),
        });
        self.inner.backtests.admit(job.clone(), now)?;
        let store = self.inner.store.clone();
        let clock = self.inner.config.clock.clone();
        let range = (request.from, until);
        let spawned = std::thread::Builder::new().name("tripwire-backtest".into()).spawn(move || {
            lowest_priority();
            let outcome = run(&job, &store, definitions, range);
            job.update(|r| {
                r.finished = Some(clock.now());
                match outcome {
                    Ok(()) if job.cancel.load(Ordering::Acquire) => r.state = BacktestState::Cancelled,
                    Ok(()) => r.state = BacktestState::Completed,
                    Err(e) => {
                        r.state = BacktestState::Failed;
                        r.error = Some(e.to_string());
                    }
                }
            });
            tracing::info!(backtest = %job.record().id, state = ?job.record().state, "backtest ended");
        });
        spawned.map_err(|e| ServiceError::Store(StoreError::Database(format!("cannot start a backtest: {e}"))))?;
        Ok(record)
    }

    /// The definitions a request tries, compiled; every problem names its place.
    async fn backtest_definitions(&self, request: &BacktestRequest) -> Result<Vec<CompiledDefinition>, ServiceError> {
        let root = JsonPath::root();
        let mut problems = Problems::default();
        let mut parsed: Vec<(TriggerDefinition, JsonPath)> = Vec::new();
        if let Some(id) = &request.trigger {
            let installed = self.trigger(id.clone()).await?;
            let mut value = serde_json::to_value(&installed.definition).map_err(|e| {
                ServiceError::Store(StoreError::Database(format!("cannot read the definition `{id}`: {e}")))
            })?;
            let path = root.key("changes");
            if let Some(changes) = &request.changes {
                merge_patch(&mut value, changes);
            }
            match TriggerDefinition::from_json(&value, &path) {
                Ok(definition) => parsed.push((definition, path)),
                Err(p) => problems.extend(p),
            }
        }
        for (i, value) in request.definitions.iter().enumerate() {
            let path = root.key("definitions").index(i);
            match TriggerDefinition::from_json(value, &path) {
                Ok(definition) => parsed.push((definition, path)),
                Err(p) => problems.extend(p),
            }
        }
        let mut compiled = Vec::with_capacity(parsed.len());
        for (definition, path) in &parsed {
            if parsed.iter().filter(|(d, _)| d.id == definition.id).count() > 1 {
                problems.add_rule(&path.key("id"), format!("`{}` is given twice", definition.id));
                continue;
            }
            match compile(definition, path) {
                Ok(c) => compiled.push(c),
                Err(p) => problems.extend(p),
            }
        }
        problems.into_result(compiled).map_err(ServiceError::Invalid)
    }

    /// Every backtest kept, newest first.
    pub fn backtests(&self) -> Vec<Backtest> {
        let jobs = self.inner.backtests.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.iter().rev().map(|j| j.record()).collect()
    }

    /// One backtest, as far as it got.
    pub fn backtest(&self, id: Uuid) -> Result<Backtest, ServiceError> {
        Ok(self.inner.backtests.find(id)?.record())
    }

    /// Cancels a running backtest (it stops at its next chunk of events); an ended one is
    /// left as it is.
    pub fn cancel_backtest(&self, id: Uuid) -> Result<Backtest, ServiceError> {
        let job = self.inner.backtests.find(id)?;
        job.cancel.store(true, Ordering::Release);
        Ok(job.record())
    }

    /// A page of a backtest's kept firings, in the order they happened, from position
    /// `from`; with the position of the next page when there is one.
    pub fn backtest_firings(
        &self,
        id: Uuid,
        from: usize,
        limit: usize,
    ) -> Result<(Vec<Firing>, Option<usize>), ServiceError> {
        let job = self.inner.backtests.find(id)?;
        let firings = job.firings.lock().unwrap_or_else(|e| e.into_inner());
        let page: Vec<Firing> = firings.iter().skip(from).take(limit).cloned().collect();
        let end = from.saturating_add(page.len());
        Ok((page, (end < firings.len()).then_some(end)))
    }

    /// A page of one backtested definition's buckets as they were at the end, each with the
    /// evidence it keeps, as `GET /api/triggers/{id}/buckets` answers for a live one: why it
    /// would not have fired. 409 while the backtest runs.
    pub async fn backtest_buckets(
        &self,
        id: Uuid,
        trigger: String,
        request: BucketsRequest,
    ) -> Result<BucketsPage, ServiceError> {
        let query = bucket_query(request)?;
        let first_page = query.after.is_none();
        let page = {
            let job = self.inner.backtests.find(id)?;
            let engine = job.engine.lock().unwrap_or_else(|e| e.into_inner());
            let Some(engine) = engine.as_ref() else {
                return Err(ServiceError::NotReady(format!(
                    "backtest `{id}` is still running: its buckets are shown once it ends"
                )));
            };
            let tried = job.record().triggers.contains(&trigger);
            tried.then(|| engine.bucket_page(&trigger, &query)).flatten()
        };
        let Some(page) = page else { return Err(ServiceError::NotFound { what: "trigger", id: trigger }) };
        self.explained_page(trigger, Some(page), first_page).await
    }
}

/// Puts the calling thread at the lowest CPU priority (nice 19 on Linux; elsewhere it keeps
/// its priority): a backtest takes the CPU that live work leaves over. On two cores, a backtest
/// at the same priority as the core and the HTTP workers tripled paced ingest's p99.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19) {
        tracing::warn!(error = %e, "cannot lower the backtest thread's priority; it competes with live work");
    }
}

/// Reads the events of `range` oldest first through a fresh engine holding `definitions`, as
/// `tripwire replay` reads a file: each event at `max(clock, occurred)`, then the clock on to
/// `until`.
fn run(
    job: &Job,
    store: &Store,
    definitions: Vec<CompiledDefinition>,
    (from, until): (Option<Timestamp>, Timestamp),
) -> Result<(), StoreError> {
    // The store holds each event once and says which leaders were read: the engine needs no
    // record of the ids it saw (as the live engine), so its memory does not grow with them.
    let config = EngineConfig { seen_window: Some(Span::ZERO), ..EngineConfig::default() };
    let mut engine = Engine::new(config);
    for definition in definitions {
        engine.upsert(definition);
    }
    let mut summary = BacktestSummary::default();
    let mut cursor = None;
    let mut first_read: Option<u64> = None;
    let mut reached_until = false;
    while !reached_until && !job.cancel.load(Ordering::Acquire) {
        let (chunk, next) = store.events_asc(cursor, CHUNK, CHUNK, |_| true)?;
        // The chunk's events, by id: most past events a firing renders from are among them.
        let mut recent: HashMap<Uuid, Arc<Event>> = HashMap::with_capacity(chunk.len());
        let mut read = 0;
        for stored in chunk {
            let received = stored.event.received;
            if received.is_some_and(|r| from.is_some_and(|f| r < f)) {
                continue;
            }
            if received.is_some_and(|r| r > until) {
                reached_until = true;
                break;
            }
            let first = *first_read.get_or_insert(stored.seq);
            let event = Arc::new(stored.event);
            let leader_processed = match event.follows {
                Some(leader) => store.event_seq(&leader)?.is_some_and(|s| s >= first && s < stored.seq),
                None => false,
            };
            let now = engine.clock().map_or(event.occurred, |c| c.max(event.occurred));
            recent.insert(event.id, event.clone());
            let step = engine.on_event_with(now, event, leader_processed);
            let step = render(&mut engine, step, &recent, store)?;
            record(job, &mut summary, step);
            read += 1;
        }
        summary.buckets_opened = engine.buckets_opened().map(|(id, n)| (id.to_owned(), n)).collect();
        job.update(|r| {
            r.events_read += read;
            r.summary = summary.clone();
        });
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        // A chunk at a time, then the other threads' turn: live ingest goes first.
        std::thread::yield_now();
    }
    if !job.cancel.load(Ordering::Acquire) && engine.clock().is_none_or(|c| c < until) {
        let step = engine.on_tick(until);
        let step = render(&mut engine, step, &HashMap::new(), store)?;
        record(job, &mut summary, step);
    }
    engine.compact();
    summary.open_buckets =
        engine.bucket_counts().filter(|(_, n)| *n > 0).map(|(id, n)| (id.to_owned(), n as u64)).collect();
    summary.buckets_opened = engine.buckets_opened().map(|(id, n)| (id.to_owned(), n)).collect();
    summary.clock = engine.clock();
    job.update(|r| r.summary = summary);
    *job.engine.lock().unwrap_or_else(|e| e.into_inner()) = Some(engine);
    Ok(())
}

/// Renders a step's firings from the past events they need: the chunk's, else the store's.
fn render(
    engine: &mut Engine,
    step: Step<PendingFiring>,
    recent: &HashMap<Uuid, Arc<Event>>,
    store: &Store,
) -> Result<Step, StoreError> {
    let mut needed = HashMap::new();
    for id in step.needs() {
        match recent.get(&id) {
            Some(event) => {
                needed.insert(id, event.clone());
            }
            None => {
                if let Some(event) = store.event(&id)? {
                    needed.insert(id, Arc::new(event));
                }
            }
        }
    }
    Ok(engine.render(step, &needed))
}

/// Counts a step's firings and keeps the first [`MAX_BACKTEST_FIRINGS`].
fn record(job: &Job, summary: &mut BacktestSummary, step: Step) {
    summary.overflows += step.overflows.len() as u64;
    if step.firings.is_empty() {
        return;
    }
    let mut kept = job.firings.lock().unwrap_or_else(|e| e.into_inner());
    for firing in step.firings {
        *summary.firings.entry(firing.trigger.clone()).or_default() += 1;
        summary.errors += u64::from(firing.error.is_some());
        if kept.len() < MAX_BACKTEST_FIRINGS {
            kept.push(firing);
        }
    }
    summary.firings_kept = kept.len() as u64;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u128, state: BacktestState, finished: Option<Timestamp>) -> Arc<Job> {
        let at = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
        let record = Backtest {
            id: Uuid::from_u128(id),
            state,
            triggers: Vec::new(),
            from: None,
            until: at,
            started: at,
            finished,
            events_read: 0,
            events_stored: 0,
            summary: BacktestSummary::default(),
            error: None,
        };
        Arc::new(Job {
            record: Mutex::new(record),
            firings: Mutex::new(Vec::new()),
            engine: Mutex::new(None),
            cancel: AtomicBool::new(false),
        })
    }

    fn ids(backtests: &Backtests) -> Vec<u128> {
        backtests.jobs.lock().unwrap().iter().map(|j| j.record().id.as_u128()).collect()
    }

    #[test]
    fn a_third_running_backtest_is_refused_until_one_ends() {
        let now = Timestamp::parse("2026-01-01T00:10:00Z").unwrap();
        let backtests = Backtests::default();
        for id in 0..MAX_RUNNING_BACKTESTS as u128 {
            backtests.admit(job(id, BacktestState::Running, None), now).unwrap();
        }
        let refused = backtests.admit(job(9, BacktestState::Running, None), now).unwrap_err();
        assert!(matches!(refused, ServiceError::Overloaded { retry_after_secs: 5 }), "{refused:?}");
        assert_eq!(refused.status(), 503);
        backtests.jobs.lock().unwrap()[0].update(|r| {
            r.state = BacktestState::Completed;
            r.finished = Some(now);
        });
        backtests.admit(job(9, BacktestState::Running, None), now).unwrap();
        assert_eq!(ids(&backtests), vec![0, 1, 9]);
    }

    #[test]
    fn past_the_kept_limit_the_oldest_ended_one_goes_and_an_hour_after_its_end_each_goes() {
        let now = Timestamp::parse("2026-01-01T02:00:00Z").unwrap();
        let backtests = Backtests::default();
        // One running first (never evicted), then ended ones.
        backtests.admit(job(100, BacktestState::Running, None), now).unwrap();
        for id in 0..(MAX_KEPT_BACKTESTS - 1) as u128 {
            backtests.admit(job(id, BacktestState::Completed, Some(now)), now).unwrap();
        }
        assert_eq!(ids(&backtests).len(), MAX_KEPT_BACKTESTS);
        backtests.admit(job(200, BacktestState::Running, None), now).unwrap();
        let kept = ids(&backtests);
        assert_eq!(kept.len(), MAX_KEPT_BACKTESTS);
        assert_eq!(&kept[..2], &[100, 1], "the running one stays; the oldest ended one (0) went");
        assert_eq!(kept.last(), Some(&200));

        // Ended an hour ago or more: forgotten at the next admission.
        backtests.jobs.lock().unwrap().last().unwrap().update(|r| {
            r.state = BacktestState::Completed;
            r.finished = Some(now);
        });
        let later = Timestamp::parse("2026-01-01T03:00:00Z").unwrap();
        backtests.admit(job(300, BacktestState::Completed, Some(later)), later).unwrap();
        assert_eq!(ids(&backtests), vec![100, 300]);
    }
}
