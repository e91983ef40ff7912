//! The machine's storage limit: redb (the crate the store uses, with the store's page cache)
//! on its own temporary file, batched sequential inserts, each transaction committed durably.
//! This file is the one place in the CLI allowed to name `redb` (tests/architecture.rs): it
//! never opens tripwire's data.
#![allow(clippy::disallowed_methods)] // a benchmark measures wall time

use std::path::Path;
use std::time::Instant;

use redb::{Database, TableDefinition};

/// The storage engine measured (the store's).
pub const ENGINE: &str = "redb";

/// The limit's name in the table.
pub const LABEL: &str = "redb, batched sequential inserts";

/// Bytes per record: about what one stored event is (issue 10: ~0.9 KB of data per event).
pub const RECORD_BYTES: usize = 900;

/// Records per transaction: a batched request's events.
pub const RECORDS_PER_TRANSACTION: usize = 100;

/// The page cache, as the store opens its database: 128 MiB.
const CACHE_BYTES: usize = 128 * 1024 * 1024;

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");

/// Inserts `total` records of [`RECORD_BYTES`] into a fresh database in `dir` (removed
/// afterwards), [`RECORDS_PER_TRANSACTION`] per durable commit; records per second.
pub fn inserts_per_sec(dir: &Path, total: u64) -> Result<f64, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let file = dir.join("limit.redb");
    let _ = std::fs::remove_file(&file);
    let result = run(&file, total);
    let _ = std::fs::remove_file(&file);
    result
}

fn run(file: &Path, total: u64) -> Result<f64, String> {
    let fail = |e: &dyn std::fmt::Display| format!("redb limit: {e}");
    let db = Database::builder().set_cache_size(CACHE_BYTES).create(file).map_err(|e| fail(&e))?;
    let mut record = vec![0u8; RECORD_BYTES];
    let started = Instant::now();
    let mut key = 0u64;
    while key < total {
        let txn = db.begin_write().map_err(|e| fail(&e))?;
        {
            let mut table = txn.open_table(RECORDS).map_err(|e| fail(&e))?;
            for _ in 0..RECORDS_PER_TRANSACTION {
                if key >= total {
                    break;
                }
                record[..8].copy_from_slice(&key.to_le_bytes());
                table.insert(key, record.as_slice()).map_err(|e| fail(&e))?;
                key += 1;
            }
        }
        txn.commit().map_err(|e| fail(&e))?;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64().max(1e-9))
}
