//! Data directories of schema version 1, read once to be rewritten: they kept the engine's
//! inputs in a `log` table and its state in snapshots (the state every 100,000 log entries,
//! as one JSON value in `meta`). The service rebuilds the engine from them as it used to
//! (`Core::recover`), writes the whole state in the current layout and calls
//! [`Tx::finish_migration`], in one transaction: a crash midway leaves version 1 as it was.

use redb::TableDefinition;
use serde::Deserialize;
use uuid::Uuid;

use crate::engine::EngineState;
use crate::model::time::Timestamp;
use crate::model::{ScopeFilter, TriggerDefinition};

use super::{decode, encode, Store, StoreError, Tx, META, SCHEMA_KEY, SCHEMA_VERSION};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const SNAPSHOT_KEY: &str = "snapshot";

/// One entry of the engine's input log, in processing order.
#[allow(clippy::large_enum_variant)] // entries are encoded one at a time
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogEntry {
    /// An accepted event (stored in `events` under `seq`), processed at `at`.
    Event {
        /// The event's sequence number.
        seq: u64,
        /// Processing time.
        at: Timestamp,
    },
    /// The clock advanced to `at` (periodic work).
    Tick {
        /// The new clock.
        at: Timestamp,
    },
    /// A definition was installed or replaced at `at`.
    PutTrigger {
        /// The definition.
        definition: TriggerDefinition,
        /// Processing time.
        at: Timestamp,
    },
    /// A definition was removed at `at`.
    DeleteTrigger {
        /// Its id.
        id: String,
        /// Processing time.
        at: Timestamp,
    },
    /// A scope filter was installed at `at`.
    PutFilter {
        /// The filter.
        filter: ScopeFilter,
        /// Processing time.
        at: Timestamp,
    },
    /// A scope filter was removed at `at`.
    DeleteFilter {
        /// Its id.
        id: Uuid,
        /// Processing time.
        at: Timestamp,
    },
}

/// The engine state at a log position, with the definitions it belongs to.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Snapshot {
    /// The last log position applied.
    pub log_pos: u64,
    /// The installed definitions, in installation order.
    pub definitions: Vec<TriggerDefinition>,
    /// The engine's state.
    pub state: EngineState,
    /// The installed scope filters, in installation order.
    #[serde(default)]
    pub filters: Vec<ScopeFilter>,
}

/// What a version 1 directory holds for the engine: the latest snapshot and the log
/// entries after it, in order.
pub struct LegacyState {
    /// The latest snapshot.
    pub snapshot: Option<Snapshot>,
    /// The log entries after it.
    pub entries: Vec<LogEntry>,
}

impl Store {
    /// The engine's inputs as a version 1 directory kept them; `None` when the data is of the
    /// current version.
    pub fn legacy_recovery(&self) -> Result<Option<LegacyState>, StoreError> {
        let rx = self.read()?;
        let meta = rx.open_table(META)?;
        let version: Option<u32> = meta.get(SCHEMA_KEY)?.map(|v| decode("schema version", v.value())).transpose()?;
        if version != Some(1) {
            return Ok(None);
        }
        let snapshot: Option<Snapshot> = meta.get(SNAPSHOT_KEY)?.map(|v| decode("snapshot", v.value())).transpose()?;
        let from = snapshot.as_ref().map_or(0, |s| s.log_pos);
        let mut entries = Vec::new();
        match rx.open_table(LOG) {
            Ok(log) => {
                for item in log.range(from.saturating_add(1)..)? {
                    let (_, v) = item?;
                    entries.push(decode("log entry", v.value())?);
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Some(LegacyState { snapshot, entries }))
    }
}

impl Tx {
    /// Drops the version 1 log and snapshot and marks the data as of the current version
    /// (after the state was written in the current layout, in this same transaction).
    pub fn finish_migration(&self) -> Result<(), StoreError> {
        let mut meta = self.writable(META)?;
        meta.remove(SNAPSHOT_KEY)?;
        meta.insert(SCHEMA_KEY, encode(&SCHEMA_VERSION).as_slice())?;
        drop(meta);
        self.tx.delete_table(LOG)?;
        Ok(())
    }
}
