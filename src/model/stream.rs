//! A run's stream: output a flow pushes while it runs (`ctx.stream(chunk)`, Hatchet's
//! `put_stream`), kept with the run, so that clients read it live and late readers read it
//! all.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::problems::{JsonPath, Problems};
use super::time::Timestamp;

/// Chunks in one `POST /api/runs/{id}/stream`.
pub const MAX_STREAM_CHUNKS_PER_REQUEST: usize = 1_000;
/// The longest chunk, in bytes.
pub const MAX_STREAM_CHUNK_BYTES: usize = 64 * 1024;
/// The most chunks kept with one run; past it, more are refused (422).
pub const MAX_STREAM_CHUNKS_PER_RUN: u64 = 100_000;

/// `POST /api/runs/{id}/stream`: chunks to append, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamBatch {
    /// The chunks, oldest first (1 to 1,000, each at most 64 KiB of text).
    #[schemars(length(min = 1, max = MAX_STREAM_CHUNKS_PER_REQUEST))]
    pub chunks: Vec<String>,
}

impl StreamBatch {
    /// Every problem with the request, naming the chunk.
    pub fn validate(&self) -> Result<(), Problems> {
        let mut problems = Problems::default();
        let path = JsonPath::root().key("chunks");
        if self.chunks.is_empty() || self.chunks.len() > MAX_STREAM_CHUNKS_PER_REQUEST {
            problems.add(
                &path,
                format!("1 to {MAX_STREAM_CHUNKS_PER_REQUEST} chunks per request, got {}", self.chunks.len()),
            );
        }
        for (i, chunk) in self.chunks.iter().enumerate() {
            if chunk.len() > MAX_STREAM_CHUNK_BYTES {
                problems
                    .add(&path.index(i), format!("{} bytes; a chunk is at most {MAX_STREAM_CHUNK_BYTES}", chunk.len()));
            }
        }
        problems.into_result(())
    }
}

/// One chunk as kept with the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StreamChunk {
    /// Its place in the run's stream, from 0.
    pub seq: u64,
    /// When it was received.
    pub at: Timestamp,
    /// The attempt that pushed it.
    pub attempt: u32,
    /// The text pushed.
    pub data: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_names_the_chunk_at_fault() {
        let ok = StreamBatch { chunks: vec!["a".into(), "b".into()] };
        assert!(ok.validate().is_ok());
        let big = StreamBatch { chunks: vec!["a".into(), "x".repeat(MAX_STREAM_CHUNK_BYTES + 1)] };
        assert!(big.validate().unwrap_err().to_string().contains("$.chunks[1]"));
        assert!(StreamBatch { chunks: vec![] }.validate().unwrap_err().to_string().contains("$.chunks"));
    }
}
