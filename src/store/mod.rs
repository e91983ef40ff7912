//! redb persistence: events, trigger definitions, the engine's state, firings, deployments,
//! runs and rate limits. Synchronous and narrow: the service calls it from its one writer thread, and
//! from blocking tasks for reads.
//!
//! Durability model: every accepted event is stored in the same transaction as the firings
//! and runs it caused and the engine state it changed (`state.rs`). A restart reads that
//! state back: it is the state that produced the committed firings, so nothing is fired
//! twice or lost. Data directories of schema version 1 kept an input log and snapshots
//! instead; they are read once (`legacy.rs`) and rewritten in the current layout.

mod children;
mod event_codec;
mod keys;
mod legacy;
mod rate_limits;
mod state;
mod streams;

pub use self::event_codec::PreparedEvent;
use self::event_codec::{decode_event, received_and_id};
pub use self::keys::StoredKey;
pub use self::legacy::{LegacyState, LogEntry};

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};
use uuid::Uuid;

use crate::model::time::Timestamp;
pub use crate::model::TriggerRecord;
use crate::model::{Deployment, Event, Firing, LogLine, Run, ScopeFilter};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const EVENT_IDS: TableDefinition<u128, u64> = TableDefinition::new("event_ids");
const TRIGGERS: TableDefinition<&str, &[u8]> = TableDefinition::new("triggers");
const FIRINGS: TableDefinition<u64, &[u8]> = TableDefinition::new("firings");
const DEPLOYMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("deployments");
const RUNS: TableDefinition<u64, &[u8]> = TableDefinition::new("runs");
const RUN_IDS: TableDefinition<u128, u64> = TableDefinition::new("run_ids");
const FILTERS: TableDefinition<u128, &[u8]> = TableDefinition::new("filters");
const RUN_LOGS: TableDefinition<(u128, u64), &[u8]> = TableDefinition::new("run_logs");
/// Runs that are not final (id → sequence number), so that a restart reads the queue without
/// scanning every run ever made.
const ACTIVE_RUNS: TableDefinition<u128, u64> = TableDefinition::new("active_runs");
const ACTIVE_INDEXED_KEY: &str = "active_runs_indexed";
/// Firing id → sequence number in `firings`, so that storing a firing is insert-only (a
/// firing's id is derived from the engine's state: a repeat after recovery has the same id).
const FIRING_IDS: TableDefinition<u128, u64> = TableDefinition::new("firing_ids");
const FIRINGS_INDEXED_KEY: &str = "firing_ids_indexed";

/// The schema version this code writes and reads (it also reads version 1, once, to
/// rewrite it: see [`Store::legacy_recovery`]).
pub const SCHEMA_VERSION: u32 = 2;
const SCHEMA_KEY: &str = "schema_version";

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened, read or written.
    #[error("storage: {0}")]
    Database(String),
    /// A stored value did not decode: the data is corrupt or from another version.
    #[error("corrupt stored {what}: {message}")]
    Corrupt {
        /// The kind of value.
        what: &'static str,
        /// The decoding error.
        message: String,
    },
    /// The data directory was written by an incompatible version.
    #[error("the data was written with schema version {found}; this tripwire reads version {SCHEMA_VERSION}")]
    Version {
        /// The version found.
        found: u32,
    },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Database(e.to_string())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our own types always serialise (no non-string map keys, no failing impls).
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { what, message: e.to_string() })
}

/// A stored event with its sequence number.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// Position in arrival order.
    pub seq: u64,
    /// The event (with `received` set).
    pub event: Event,
}

/// The database.
pub struct Store {
    db: Database,
    /// Inserts refused because the id was stored before (see [`Store::duplicate_ids`]).
    duplicates: Arc<AtomicU64>,
}

/// An open write transaction; commit with [`Tx::commit`].
pub struct Tx {
    tx: redb::WriteTransaction,
    /// Whether anything was written: a transaction that only read is dropped, not committed
    /// (no fsync for an idle timer tick or an empty claim).
    written: std::cell::Cell<bool>,
    /// The store's count of refused duplicate inserts.
    duplicates: Arc<AtomicU64>,
    /// The next event sequence number, once known in this transaction.
    next_seq: std::cell::Cell<Option<u64>>,
}

/// What [`Tx::ingest_event`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingested {
    /// The id was stored before: nothing was written.
    Duplicate,
    /// Stored. `leader_processed`: the event follows another that is stored (processed, as
    /// far as the store knows).
    Stored {
        /// Whether the `follows` leader is stored.
        leader_processed: bool,
    },
}

/// Memory redb may keep as its page cache (its default is 1 GiB: reading a few hundred MB of
/// stored events through one listing grew the server by as much). 32 MiB: with 128 MiB, a
/// million live buckets cost 340 B each in resident memory, 200 B with 32 MiB, and batched
/// ingest was no slower (reads the cache misses are served by the OS's page cache).
pub const CACHE_BYTES: usize = 32 * 1024 * 1024;

impl Store {
    /// Opens (or creates) `dir/tripwire.redb`, with a page cache of [`CACHE_BYTES`].
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Database(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("tripwire.redb");
        let open = || {
            let warned = std::cell::Cell::new(false);
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .set_repair_callback(move |session| {
                    if !warned.replace(true) {
                        tracing::warn!(
                            progress = session.progress(),
                            "the data file was not closed cleanly (a crash or kill): redb is checking it before it opens"
                        );
                    }
                })
                .create(&path)
        };
        let db = match open() {
            Err(redb::DatabaseError::UpgradeRequired(2)) => {
                upgrade_file_format(&path)?;
                open()?
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Database(format!(
                    "another tripwire holds {} (a server running on this data directory, or a `tripwire keys \
                     --data` in progress): stop it, or use another --data",
                    path.display()
                )))
            }
            opened => opened?,
        };
        let store = Store { db, duplicates: Arc::default() };
        let tx = store.begin()?;
        {
            // Create every table so that readers never see a missing one.
            tx.written.set(true);
            let mut meta = tx.tx.open_table(META)?;
            tx.tx.open_table(EVENTS)?;
            tx.tx.open_table(EVENT_IDS)?;
            tx.tx.open_table(state::BUCKETS)?;
            tx.tx.open_table(state::TRIGGER_STATE)?;
            tx.tx.open_table(state::PARKED)?;
            tx.tx.open_table(TRIGGERS)?;
            tx.tx.open_table(FIRINGS)?;
            let mut firing_ids = tx.tx.open_table(FIRING_IDS)?;
            tx.tx.open_table(DEPLOYMENTS)?;
            tx.tx.open_table(RUNS)?;
            tx.tx.open_table(RUN_IDS)?;
            tx.tx.open_table(FILTERS)?;
            tx.tx.open_table(RUN_LOGS)?;
            tx.tx.open_table(keys::API_KEYS)?;
            tx.tx.open_table(rate_limits::RATE_LIMITS)?;
            tx.tx.open_table(rate_limits::RATE_WINDOWS)?;
            tx.tx.open_table(streams::RUN_STREAMS)?;
            tx.tx.open_table(children::RUN_CHILDREN)?;
            let mut active = tx.tx.open_table(ACTIVE_RUNS)?;
            let found = meta.get(SCHEMA_KEY)?.map(|v| decode::<u32>("schema version", v.value())).transpose()?;
            match found {
                None => {
                    meta.insert(SCHEMA_KEY, encode(&SCHEMA_VERSION).as_slice())?;
                }
                Some(v) if v == SCHEMA_VERSION => {}
                Some(1) => {} // rewritten by the service on start: see `legacy.rs`
                Some(found) => return Err(StoreError::Version { found }),
            }
            // Data written before the index existed: build it once.
            if meta.get(ACTIVE_INDEXED_KEY)?.is_none() {
                let runs = tx.tx.open_table(RUNS)?;
                for item in runs.iter()? {
                    let (k, v) = item?;
                    let run: Run = decode("run", v.value())?;
                    if !run.is_final() {
                        active.insert(run.id.as_u128(), k.value())?;
                    }
                }
                meta.insert(ACTIVE_INDEXED_KEY, encode(&true).as_slice())?;
            }
            // Firings stored before their id index existed: index them once.
            if meta.get(FIRINGS_INDEXED_KEY)?.is_none() {
                let firings = tx.tx.open_table(FIRINGS)?;
                for item in firings.iter()? {
                    let (k, v) = item?;
                    let firing: Firing = decode("firing", v.value())?;
                    firing_ids.insert(firing.id.as_u128(), k.value())?;
                }
                meta.insert(FIRINGS_INDEXED_KEY, encode(&true).as_slice())?;
            }
        }
        tx.commit()?;
        Ok(store)
    }

    /// Starts the (single) write transaction.
    pub fn begin(&self) -> Result<Tx, StoreError> {
        Ok(Tx {
            tx: self.db.begin_write()?,
            written: std::cell::Cell::new(false),
            duplicates: self.duplicates.clone(),
            next_seq: std::cell::Cell::new(None),
        })
    }

    /// How many times, since this store was opened, a run or a firing was to be created
    /// under an id already stored ([`Tx::insert_run`], [`Tx::insert_firing`]). Each is an
    /// internal error (a firing repeated, e.g. after recovery), logged when it happens; the
    /// first record was kept. 0 in a healthy service. Counted when refused, so an insert in
    /// a transaction that later fails still counts.
    pub fn duplicate_ids(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    fn read(&self) -> Result<redb::ReadTransaction, StoreError> {
        Ok(self.db.begin_read()?)
    }

    /// The event stored under `seq`.
    pub fn event_by_seq(&self, seq: u64) -> Result<Option<Event>, StoreError> {
        let rx = self.read()?;
        let events = rx.open_table(EVENTS)?;
        let found = events.get(seq)?;
        found.map(|v| decode_event(v.value())).transpose()
    }

    /// The event with this id.
    pub fn event(&self, id: &Uuid) -> Result<Option<Event>, StoreError> {
        let rx = self.read()?;
        event_by_id(&rx.open_table(EVENT_IDS)?, &rx.open_table(EVENTS)?, id)
    }

    /// Events newest first, starting below `before` (a sequence number), that pass `keep`,
    /// at most `limit`; scans at most `scan_limit` events. The second value is the cursor of
    /// the next page (pass it as `before`), if there may be more.
    pub fn events_desc(
        &self,
        before: Option<u64>,
        limit: usize,
        scan_limit: usize,
        keep: impl FnMut(&Event) -> bool,
    ) -> Result<(Vec<StoredEvent>, Option<u64>), StoreError> {
        let rx = self.read()?;
        let events = rx.open_table(EVENTS)?;
        let range = events.range(..before.unwrap_or(u64::MAX))?.rev();
        let (out, next) = collect_events(range, limit, scan_limit, keep)?;
        Ok((out, next.map(|seq| seq + 1)))
    }

    /// Events oldest first, starting at `from` (a sequence number), like
    /// [`Store::events_desc`]; the cursor of the next page is passed as `from`.
    pub fn events_asc(
        &self,
        from: Option<u64>,
        limit: usize,
        scan_limit: usize,
        keep: impl FnMut(&Event) -> bool,
    ) -> Result<(Vec<StoredEvent>, Option<u64>), StoreError> {
        let rx = self.read()?;
        let events = rx.open_table(EVENTS)?;
        let range = events.range(from.unwrap_or(0)..)?;
        collect_events(range, limit, scan_limit, keep)
    }

    /// The arrival position of a stored event (`None`: never stored, or pruned).
    pub fn event_seq(&self, id: &Uuid) -> Result<Option<u64>, StoreError> {
        let rx = self.read()?;
        let found = rx.open_table(EVENT_IDS)?.get(id.as_u128())?.map(|v| v.value());
        Ok(found)
    }

    /// Number of stored events.
    pub fn event_count(&self) -> Result<u64, StoreError> {
        let rx = self.read()?;
        Ok(rx.open_table(EVENTS)?.len()?)
    }

    /// Every stored definition, by id.
    pub fn triggers(&self) -> Result<Vec<TriggerRecord>, StoreError> {
        let rx = self.read()?;
        all_values(&rx.open_table(TRIGGERS)?, "trigger")
    }

    /// One stored definition.
    pub fn trigger(&self, id: &str) -> Result<Option<TriggerRecord>, StoreError> {
        let rx = self.read()?;
        by_name(&rx.open_table(TRIGGERS)?, id, "trigger")
    }

    /// Every deployment, by name.
    pub fn deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        let rx = self.read()?;
        all_values(&rx.open_table(DEPLOYMENTS)?, "deployment")
    }

    /// One deployment.
    pub fn deployment(&self, name: &str) -> Result<Option<Deployment>, StoreError> {
        let rx = self.read()?;
        by_name(&rx.open_table(DEPLOYMENTS)?, name, "deployment")
    }

    /// Runs newest first that pass `keep`, at most `limit`, among the newest
    /// [`MAX_LISTING_SCAN`].
    pub fn runs(&self, limit: usize, keep: impl FnMut(&Run) -> bool) -> Result<Vec<Run>, StoreError> {
        let rx = self.read()?;
        newest_first(&rx.open_table(RUNS)?, "run", limit, keep)
    }

    /// One run.
    pub fn run(&self, id: &Uuid) -> Result<Option<Run>, StoreError> {
        let rx = self.read()?;
        through_index(&rx.open_table(RUN_IDS)?, &rx.open_table(RUNS)?, id, "run")
    }

    /// Every run that is not final (Scheduled or Running), oldest first.
    pub fn active_runs(&self) -> Result<Vec<Run>, StoreError> {
        let rx = self.read()?;
        let runs = rx.open_table(RUNS)?;
        let active = rx.open_table(ACTIVE_RUNS)?;
        let mut seqs = Vec::new();
        for item in active.iter()? {
            seqs.push(item?.1.value());
        }
        seqs.sort_unstable();
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if let Some(v) = runs.get(seq)? {
                out.push(decode("run", v.value())?);
            }
        }
        Ok(out)
    }

    /// A run's log lines from position `from` (0 is the first), at most `limit`, with the
    /// position of each.
    pub fn run_logs(&self, run: &Uuid, from: u64, limit: usize) -> Result<Vec<(u64, LogLine)>, StoreError> {
        let rx = self.read()?;
        let logs = rx.open_table(RUN_LOGS)?;
        let id = run.as_u128();
        let mut out = Vec::new();
        for item in logs.range((id, from)..=(id, u64::MAX))?.take(limit) {
            let (k, v) = item?;
            out.push((k.value().1, decode("log line", v.value())?));
        }
        Ok(out)
    }

    /// Every scope filter, oldest first.
    pub fn filters(&self) -> Result<Vec<ScopeFilter>, StoreError> {
        let rx = self.read()?;
        let mut out: Vec<ScopeFilter> = all_values(&rx.open_table(FILTERS)?, "filter")?;
        out.sort_by_key(|f| (f.created, f.id));
        Ok(out)
    }

    /// One scope filter.
    pub fn filter(&self, id: &Uuid) -> Result<Option<ScopeFilter>, StoreError> {
        let rx = self.read()?;
        let t = rx.open_table(FILTERS)?;
        let found = t.get(id.as_u128())?;
        found.map(|v| decode("filter", v.value())).transpose()
    }

    /// Firings newest first that pass `keep`, at most `limit`, among the newest
    /// [`MAX_LISTING_SCAN`].
    pub fn firings(&self, limit: usize, keep: impl FnMut(&Firing) -> bool) -> Result<Vec<Firing>, StoreError> {
        let rx = self.read()?;
        newest_first(&rx.open_table(FIRINGS)?, "firing", limit, keep)
    }

    /// A page of firings newest first, stored before the cursor `before` (all of them
    /// without one), that pass `keep`: at most `limit`, looking at most at
    /// [`MAX_LISTING_SCAN`] rows. Answers the cursor of the next page, unless the oldest
    /// firing was reached.
    pub fn firing_page(
        &self,
        before: Option<u64>,
        limit: usize,
        mut keep: impl FnMut(&Firing) -> bool,
    ) -> Result<(Vec<Firing>, Option<u64>), StoreError> {
        let rx = self.read()?;
        let table = rx.open_table(FIRINGS)?;
        let mut out = Vec::new();
        let mut next = None;
        for (scanned, item) in table.range(..before.unwrap_or(u64::MAX))?.rev().enumerate() {
            let (k, v) = item?;
            if out.len() == limit || scanned == MAX_LISTING_SCAN {
                next = Some(k.value() + 1);
                break;
            }
            let firing: Firing = decode("firing", v.value())?;
            if keep(&firing) {
                out.push(firing);
            }
        }
        Ok((out, next))
    }

    /// Firings newest first, while `go_on` answers true, looking at most at
    /// [`MAX_LISTING_SCAN`]. Answers true when it stopped at that bound.
    pub fn firings_while(&self, mut go_on: impl FnMut(&Firing) -> bool) -> Result<bool, StoreError> {
        let rx = self.read()?;
        let table = rx.open_table(FIRINGS)?;
        for (scanned, item) in table.iter()?.rev().enumerate() {
            if scanned == MAX_LISTING_SCAN {
                return Ok(true);
            }
            let firing: Firing = decode("firing", item?.1.value())?;
            if !go_on(&firing) {
                break;
            }
        }
        Ok(false)
    }
}

/// Rewrites a data file of redb's file format 2 (tripwire before redb 4) in format 3, in place,
/// with the redb 2 that wrote it, so that a data directory survives the upgrade of tripwire.
fn upgrade_file_format(path: &Path) -> Result<(), StoreError> {
    let failed = |e: &dyn std::fmt::Display| {
        StoreError::Database(format!(
            "{} is in an older file format and could not be upgraded: {e}; back it up and remove it, or run the \
             previous tripwire on it",
            path.display()
        ))
    };
    let mut db = redb2::Database::open(path).map_err(|e| failed(&e))?;
    let upgraded = db.upgrade().map_err(|e| failed(&e))?;
    tracing::info!(path = %path.display(), upgraded, "data file upgraded to redb's file format 3");
    Ok(())
}

/// Reads events from `range` until `limit` pass `keep` or `scan_limit` were read; returns them
/// and the sequence number where reading stopped, if it stopped early.
fn collect_events<'a>(
    range: impl Iterator<
        Item = Result<(redb::AccessGuard<'a, u64>, redb::AccessGuard<'a, &'static [u8]>), redb::StorageError>,
    >,
    limit: usize,
    scan_limit: usize,
    mut keep: impl FnMut(&Event) -> bool,
) -> Result<(Vec<StoredEvent>, Option<u64>), StoreError> {
    let mut out = Vec::new();
    let (mut page_bytes, mut scanned_bytes) = (0usize, 0usize);
    for (scanned, item) in range.enumerate() {
        let (k, v) = item?;
        let seq = k.value();
        let size = v.value().len();
        let page_full = out.len() == limit || (!out.is_empty() && page_bytes + size > MAX_EVENT_PAGE_BYTES);
        if page_full || scanned == scan_limit || scanned_bytes > MAX_EVENT_SCAN_BYTES {
            return Ok((out, Some(seq)));
        }
        scanned_bytes += size;
        let event = decode_event(v.value())?;
        if keep(&event) {
            page_bytes += size;
            out.push(StoredEvent { seq, event });
        }
    }
    Ok((out, None))
}

/// Stored bytes of the events one page holds at most (a page always holds at least one
/// event): past it, the page ends early and the next one starts there.
pub const MAX_EVENT_PAGE_BYTES: usize = 16 * 1024 * 1024;
/// Stored bytes one page reads at most while looking for events that pass its filter; past
/// it the page ends early with a cursor.
pub const MAX_EVENT_SCAN_BYTES: usize = 256 * 1024 * 1024;

/// The value an id index points at: `ids` maps the id to a sequence number in `values`.
/// The event with this id, through the id index.
fn event_by_id(
    ids: &impl ReadableTable<u128, u64>,
    events: &impl ReadableTable<u64, &'static [u8]>,
    id: &Uuid,
) -> Result<Option<Event>, StoreError> {
    let Some(seq) = ids.get(id.as_u128())?.map(|v| v.value()) else { return Ok(None) };
    let found = events.get(seq)?;
    found.map(|v| decode_event(v.value())).transpose()
}

fn through_index<T: DeserializeOwned>(
    ids: &impl ReadableTable<u128, u64>,
    values: &impl ReadableTable<u64, &'static [u8]>,
    id: &Uuid,
    what: &'static str,
) -> Result<Option<T>, StoreError> {
    let Some(seq) = ids.get(id.as_u128())?.map(|v| v.value()) else { return Ok(None) };
    let found = values.get(seq)?;
    found.map(|v| decode(what, v.value())).transpose()
}

/// The value stored under a name, if any.
fn by_name<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
    what: &'static str,
) -> Result<Option<T>, StoreError> {
    let found = table.get(name)?;
    found.map(|v| decode(what, v.value())).transpose()
}

/// Every value of a table, in key order.
fn all_values<K: redb::Key + 'static, T: DeserializeOwned>(
    table: &impl ReadableTable<K, &'static [u8]>,
    what: &'static str,
) -> Result<Vec<T>, StoreError> {
    table
        .iter()?
        .map(|item| {
            let (_, v) = item?;
            decode(what, v.value())
        })
        .collect()
}

/// Values of a table keyed by sequence numbers, newest first, that pass `keep`, at most `limit`.
/// Rows a filtered listing (runs of one deployment, firings of one trigger) reads at most:
/// what it finds among the newest this many, so that one request cannot read a whole table.
pub const MAX_LISTING_SCAN: usize = 100_000;

fn newest_first<T: DeserializeOwned>(
    table: &impl ReadableTable<u64, &'static [u8]>,
    what: &'static str,
    limit: usize,
    mut keep: impl FnMut(&T) -> bool,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for item in table.iter()?.rev().take(MAX_LISTING_SCAN) {
        if out.len() == limit {
            break;
        }
        let (_, v) = item?;
        let value: T = decode(what, v.value())?;
        if keep(&value) {
            out.push(value);
        }
    }
    Ok(out)
}

fn last_key<T: ReadableTable<u64, &'static [u8]>>(table: &T) -> Result<u64, StoreError> {
    Ok(table.last()?.map(|(k, _)| k.value()).unwrap_or(0))
}

impl Tx {
    /// Makes everything written durable (a transaction that wrote nothing just ends).
    pub fn commit(self) -> Result<(), StoreError> {
        if self.written.get() {
            self.tx.commit()?;
        } else {
            self.tx.abort()?;
        }
        Ok(())
    }

    /// Opens a table to write to it.
    fn writable<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        table: TableDefinition<K, V>,
    ) -> Result<redb::Table<'_, K, V>, StoreError> {
        self.written.set(true);
        Ok(self.tx.open_table(table)?)
    }

    /// The event with this id, as the write transaction sees it.
    pub fn event(&self, id: &Uuid) -> Result<Option<Event>, StoreError> {
        event_by_id(&self.tx.open_table(EVENT_IDS)?, &self.tx.open_table(EVENTS)?, id)
    }

    /// Stores an event made by the server (a run's state change, whose id is fresh), received
    /// `now`; returns its sequence number.
    pub fn put_event(&self, prepared: &mut PreparedEvent, now: Timestamp) -> Result<u64, StoreError> {
        let mut events = self.writable(EVENTS)?;
        let mut ids = self.writable(EVENT_IDS)?;
        let seq = self.next_event_seq(&events)?;
        events.insert(seq, prepared.receive(now))?;
        ids.insert(prepared.event.id.as_u128(), seq)?;
        Ok(seq)
    }

    /// Stores an event received `now`, unless its id was stored before, with one opening of
    /// the event tables: what the writer does for each event sent in.
    pub fn ingest_event(&self, prepared: &mut PreparedEvent, now: Timestamp) -> Result<Ingested, StoreError> {
        let mut ids = self.writable(EVENT_IDS)?;
        let id = prepared.event.id;
        if ids.get(id.as_u128())?.is_some() {
            return Ok(Ingested::Duplicate);
        }
        let leader_processed = match prepared.event.follows {
            Some(leader) if leader != id => ids.get(leader.as_u128())?.is_some(),
            _ => false,
        };
        let mut events = self.writable(EVENTS)?;
        let seq = self.next_event_seq(&events)?;
        events.insert(seq, prepared.receive(now))?;
        ids.insert(id.as_u128(), seq)?;
        Ok(Ingested::Stored { leader_processed })
    }

    /// The next event sequence number (the table's last key is read once per transaction).
    fn next_event_seq(&self, events: &redb::Table<'_, u64, &'static [u8]>) -> Result<u64, StoreError> {
        let seq = match self.next_seq.get() {
            Some(seq) => seq,
            None => last_key(events)? + 1,
        };
        self.next_seq.set(Some(seq + 1));
        Ok(seq)
    }

    /// Stores a new firing, insert-only: when a firing with this id was stored before,
    /// nothing is written, the refusal is logged (an internal error) and counted in
    /// [`Store::duplicate_ids`], and the answer is false.
    pub fn insert_firing(&self, firing: &Firing) -> Result<bool, StoreError> {
        let mut ids = self.writable(FIRING_IDS)?;
        if ids.get(firing.id.as_u128())?.is_some() {
            self.refuse_duplicate("firing", &firing.id);
            return Ok(false);
        }
        let mut t = self.writable(FIRINGS)?;
        let seq = last_key(&t)? + 1;
        t.insert(seq, encode(firing).as_slice())?;
        ids.insert(firing.id.as_u128(), seq)?;
        Ok(true)
    }

    /// Logs and counts an insert refused because its id exists.
    fn refuse_duplicate(&self, what: &'static str, id: &Uuid) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            %id,
            what,
            "internal error: a {what} with this id was stored before; the first one is kept and this one dropped"
        );
    }

    /// Stores a trigger definition record.
    pub fn put_trigger(&self, record: &TriggerRecord) -> Result<(), StoreError> {
        self.writable(TRIGGERS)?.insert(record.definition.id.as_str(), encode(record).as_slice())?;
        Ok(())
    }

    /// One stored definition.
    pub fn trigger(&self, id: &str) -> Result<Option<TriggerRecord>, StoreError> {
        by_name(&self.tx.open_table(TRIGGERS)?, id, "trigger")
    }

    /// Removes a definition record; false when there was none.
    pub fn delete_trigger(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.writable(TRIGGERS)?.remove(id)?.is_some())
    }

    /// Stores a deployment.
    pub fn put_deployment(&self, d: &Deployment) -> Result<(), StoreError> {
        self.writable(DEPLOYMENTS)?.insert(d.name.as_str(), encode(d).as_slice())?;
        Ok(())
    }

    /// One deployment.
    pub fn deployment(&self, name: &str) -> Result<Option<Deployment>, StoreError> {
        by_name(&self.tx.open_table(DEPLOYMENTS)?, name, "deployment")
    }

    /// Removes a deployment; false when there was none.
    pub fn delete_deployment(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.writable(DEPLOYMENTS)?.remove(name)?.is_some())
    }

    /// Stores a new run, insert-only: when a run with this id was stored before (even a
    /// final one), nothing is written, the refusal is logged (an internal error) and counted
    /// in [`Store::duplicate_ids`], and the answer is false.
    pub fn insert_run(&self, run: &Run) -> Result<bool, StoreError> {
        if self.has_run(&run.id)? {
            self.refuse_duplicate("run", &run.id);
            return Ok(false);
        }
        self.put_run(run)?;
        Ok(true)
    }

    /// True when a run with this id is stored.
    pub fn has_run(&self, id: &Uuid) -> Result<bool, StoreError> {
        Ok(self.tx.open_table(RUN_IDS)?.get(id.as_u128())?.is_some())
    }

    /// Stores a changed run (a new one goes through [`Tx::insert_run`]).
    pub fn put_run(&self, run: &Run) -> Result<(), StoreError> {
        let mut runs = self.writable(RUNS)?;
        let mut ids = self.writable(RUN_IDS)?;
        let seq = match ids.get(run.id.as_u128())?.map(|v| v.value()) {
            Some(seq) => seq,
            None => last_key(&runs)? + 1,
        };
        runs.insert(seq, encode(run).as_slice())?;
        ids.insert(run.id.as_u128(), seq)?;
        let mut active = self.writable(ACTIVE_RUNS)?;
        if run.is_final() {
            active.remove(run.id.as_u128())?;
        } else {
            active.insert(run.id.as_u128(), seq)?;
        }
        Ok(())
    }

    /// One run, as the write transaction sees it.
    pub fn run(&self, id: &Uuid) -> Result<Option<Run>, StoreError> {
        through_index(&self.tx.open_table(RUN_IDS)?, &self.tx.open_table(RUNS)?, id, "run")
    }

    /// Appends lines to a run's log.
    pub fn append_run_logs(&self, run: &Uuid, lines: &[LogLine]) -> Result<(), StoreError> {
        let mut logs = self.writable(RUN_LOGS)?;
        let id = run.as_u128();
        let next = match logs.range((id, 0)..=(id, u64::MAX))?.next_back() {
            Some(item) => item?.0.value().1 + 1,
            None => 0,
        };
        for (pos, line) in (next..).zip(lines) {
            logs.insert((id, pos), encode(line).as_slice())?;
        }
        Ok(())
    }

    /// Every stored definition, by id.
    pub fn triggers(&self) -> Result<Vec<TriggerRecord>, StoreError> {
        all_values(&self.tx.open_table(TRIGGERS)?, "trigger")
    }

    /// Stores a scope filter.
    pub fn put_filter(&self, filter: &ScopeFilter) -> Result<(), StoreError> {
        self.writable(FILTERS)?.insert(filter.id.as_u128(), encode(filter).as_slice())?;
        Ok(())
    }

    /// Removes a scope filter; false when there was none.
    pub fn delete_filter(&self, id: &Uuid) -> Result<bool, StoreError> {
        Ok(self.writable(FILTERS)?.remove(id.as_u128())?.is_some())
    }

    /// Deletes events received before `cutoff` (retention); returns how many.
    pub fn prune_events(&self, cutoff: Timestamp, max: usize) -> Result<usize, StoreError> {
        let mut events = self.writable(EVENTS)?;
        let mut ids = self.writable(EVENT_IDS)?;
        let mut doomed = Vec::new();
        for item in events.iter()? {
            let (k, v) = item?;
            let (received, id) = received_and_id(v.value())?;
            if received >= cutoff || doomed.len() == max {
                break;
            }
            doomed.push((k.value(), id));
        }
        // A follower still parked when its event is pruned cannot be read back on a restart:
        // its row goes too (the running engine still holds the event itself).
        let mut parked = self.writable(state::PARKED)?;
        for (seq, id) in &doomed {
            events.remove(*seq)?;
            ids.remove(id.as_u128())?;
            parked.remove(id.as_u128())?;
        }
        Ok(doomed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resource;

    fn temp(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tripwire-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn events_survive_reopening() {
        let dir = temp("reopen");
        let t = Timestamp::from_micros(1_000_000);
        {
            let store = Store::open(&dir).unwrap();
            let tx = store.begin().unwrap();
            let mut e = PreparedEvent::new(Event::new(Uuid::from_u128(7), t, "a", Resource::new("x")));
            assert_eq!(tx.put_event(&mut e, t).unwrap(), 1);
            tx.commit().unwrap();
        }
        let store = Store::open(&dir).unwrap();
        assert!(store.event(&Uuid::from_u128(7)).unwrap().is_some());
        let tx = store.begin().unwrap();
        let mut again = PreparedEvent::new(Event::new(Uuid::from_u128(7), t, "a", Resource::new("x")));
        assert_eq!(tx.ingest_event(&mut again, t).unwrap(), Ingested::Duplicate);
        let mut e = Event::new(Uuid::from_u128(8), t, "b", Resource::new("x"));
        e.follows = Some(Uuid::from_u128(7));
        let mut follower = PreparedEvent::new(e);
        assert_eq!(tx.ingest_event(&mut follower, t).unwrap(), Ingested::Stored { leader_processed: true });
        let mut run_event = PreparedEvent::new(Event::new(Uuid::from_u128(9), t, "c", Resource::new("x")));
        assert_eq!(tx.put_event(&mut run_event, t).unwrap(), 3, "sequence numbers keep increasing");
        tx.commit().unwrap();
        assert_eq!(store.event_by_seq(2).unwrap(), Some(follower.event));
        assert_eq!(store.event_by_seq(3).unwrap(), Some(run_event.event));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_active_runs_are_read_back_for_the_queue() {
        let dir = temp("active");
        let store = Store::open(&dir).unwrap();
        let d = Deployment::new("d");
        let t = Timestamp::from_micros(0);
        let tx = store.begin().unwrap();
        let mut done = Run::scheduled(Uuid::from_u128(1), &d, Default::default(), None, t);
        let waiting = Run::scheduled(Uuid::from_u128(2), &d, Default::default(), None, t);
        tx.put_run(&done).unwrap();
        tx.put_run(&waiting).unwrap();
        done.state = crate::model::RunState::Completed;
        tx.put_run(&done).unwrap();
        tx.commit().unwrap();
        assert_eq!(store.active_runs().unwrap(), std::slice::from_ref(&waiting));
        drop(store);
        assert_eq!(Store::open(&dir).unwrap().active_runs().unwrap(), [waiting]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn runs_and_firings_are_insert_only_and_old_firings_get_indexed() {
        let dir = temp("insert-only");
        let t = Timestamp::from_micros(0);
        let firing = |n: u128, trigger: &str| Firing {
            id: Uuid::from_u128(n),
            trigger: trigger.into(),
            bucket: Default::default(),
            at: t,
            triggered: t,
            triggering_event: None,
            triggering_events: vec![],
            deployment: None,
            parameters: None,
            filter: None,
            error: None,
        };
        {
            let store = Store::open(&dir).unwrap();
            let tx = store.begin().unwrap();
            // A firing stored as before its id index existed.
            tx.writable(FIRINGS).unwrap().insert(1, encode(&firing(9, "old")).as_slice()).unwrap();
            tx.writable(META).unwrap().remove(FIRINGS_INDEXED_KEY).unwrap();
            tx.commit().unwrap();
        }
        let store = Store::open(&dir).unwrap();
        let tx = store.begin().unwrap();
        assert!(!tx.insert_firing(&firing(9, "repeat")).unwrap(), "indexed when the store opened");
        assert!(tx.insert_firing(&firing(10, "new")).unwrap());
        assert!(!tx.insert_firing(&firing(10, "repeat")).unwrap());
        let d = Deployment::new("d");
        let mut run = Run::scheduled(Uuid::from_u128(10), &d, Default::default(), None, t);
        assert!(tx.insert_run(&run).unwrap());
        run.priority = 7;
        assert!(!tx.insert_run(&run).unwrap());
        tx.commit().unwrap();
        assert_eq!(store.duplicate_ids(), 3);
        let triggers: Vec<String> = store.firings(10, |_| true).unwrap().into_iter().map(|f| f.trigger).collect();
        assert_eq!(triggers, ["new", "old"]);
        assert_eq!(store.run(&Uuid::from_u128(10)).unwrap().unwrap().priority, 0, "the first run stays");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_values_are_errors_not_panics() {
        let dir = temp("corrupt");
        let store = Store::open(&dir).unwrap();
        let tx = store.begin().unwrap();
        tx.writable(EVENTS).unwrap().insert(1, b"not json".as_slice()).unwrap();
        tx.commit().unwrap();
        assert!(matches!(store.event_by_seq(1), Err(StoreError::Corrupt { what: "event", .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
