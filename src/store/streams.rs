//! Runs' streams: the chunks flows push while they run, kept with the run.
//!
//! Layout: `run_streams`: (run id, position) → [`StreamChunk`], JSON.

use redb::{ReadableTable, TableDefinition};
use uuid::Uuid;

use crate::model::StreamChunk;

use super::{decode, encode, Store, StoreError, Tx};

pub(super) const RUN_STREAMS: TableDefinition<(u128, u64), &[u8]> = TableDefinition::new("run_streams");

impl Store {
    /// Up to `limit` chunks of a run's stream from position `from`.
    pub fn run_stream(&self, run: &Uuid, from: u64, limit: usize) -> Result<Vec<StreamChunk>, StoreError> {
        let rx = self.read()?;
        let table = rx.open_table(RUN_STREAMS)?;
        let id = run.as_u128();
        let mut out = Vec::new();
        for item in table.range((id, from)..=(id, u64::MAX))?.take(limit) {
            out.push(decode("stream chunk", item?.1.value())?);
        }
        Ok(out)
    }
}

impl Tx {
    /// The position the run's next chunk takes (how many it has).
    pub fn run_stream_len(&self, run: &Uuid) -> Result<u64, StoreError> {
        let table = self.tx.open_table(RUN_STREAMS)?;
        let id = run.as_u128();
        let last = table.range((id, 0)..=(id, u64::MAX))?.next_back().transpose()?;
        Ok(last.map_or(0, |(k, _)| k.value().1 + 1))
    }

    /// Appends chunks at the end of the run's stream (their `seq` is set here).
    pub fn append_run_stream(&self, run: &Uuid, chunks: &mut [StreamChunk]) -> Result<(), StoreError> {
        let next = self.run_stream_len(run)?;
        let mut table = self.writable(RUN_STREAMS)?;
        let id = run.as_u128();
        for (seq, chunk) in (next..).zip(chunks.iter_mut()) {
            chunk.seq = seq;
            table.insert((id, seq), encode(chunk).as_slice())?;
        }
        Ok(())
    }
}
