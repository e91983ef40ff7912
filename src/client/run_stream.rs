//! Following a run's stream (`GET /api/runs/{id}/stream`, server-sent events): what
//! [`Client::stream`](super::Client::stream) returns.

use std::collections::VecDeque;

use crate::model::{RunState, StreamChunk};

use super::ClientError;

/// The chunks of one run's stream, oldest first, live until the run ends: call
/// [`RunStream::next`] until it answers `None`; [`RunStream::ended`] then says how the run
/// ended. Resume a broken one with `Client::stream_from(run, stream.position())`.
pub struct RunStream {
    response: reqwest::Response,
    /// Bytes received and not yet parsed into whole lines.
    pending: Vec<u8>,
    /// The fields of the event being read.
    event: String,
    data: String,
    ready: VecDeque<StreamChunk>,
    next: u64,
    ended: Option<Option<RunState>>,
}

impl RunStream {
    pub(super) fn new(response: reqwest::Response, from: u64) -> RunStream {
        RunStream {
            response,
            pending: Vec::new(),
            event: String::new(),
            data: String::new(),
            ready: VecDeque::new(),
            next: from,
            ended: None,
        }
    }

    /// The next chunk, waiting for the flow to push it; `None` once the run has ended (or the
    /// server closed the stream: see [`RunStream::ended`]).
    pub async fn next(&mut self) -> Option<Result<StreamChunk, ClientError>> {
        loop {
            if let Some(chunk) = self.ready.pop_front() {
                self.next = chunk.seq + 1;
                return Some(Ok(chunk));
            }
            if self.ended.is_some() {
                return None;
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => {
                    self.pending.extend_from_slice(&bytes);
                    if let Err(e) = self.parse() {
                        self.ended = Some(None);
                        return Some(Err(e));
                    }
                }
                Ok(None) => {
                    self.ended = Some(None);
                    return None;
                }
                Err(e) => {
                    self.ended = Some(None);
                    return Some(Err(ClientError::Transport {
                        url: self.response.url().to_string(),
                        message: e.to_string(),
                    }));
                }
            }
        }
    }

    /// How the run ended (`Some(state)`), once [`RunStream::next`] answered `None`; `None`
    /// when the stream stopped before the run ended (the server shut down or the connection
    /// broke: resume from [`RunStream::position`]).
    pub fn ended(&self) -> Option<RunState> {
        self.ended.flatten()
    }

    /// The position of the next chunk (what to resume from).
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Reads the whole lines received: `event:` and `data:` fields, an empty line ends an
    /// event.
    fn parse(&mut self) -> Result<(), ClientError> {
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                self.dispatch()?;
            } else if let Some(value) = line.strip_prefix("event:") {
                self.event = value.trim_start().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
            // `id:` and comments (keep-alives) need nothing here.
        }
        Ok(())
    }

    fn dispatch(&mut self) -> Result<(), ClientError> {
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        match event.as_str() {
            "chunk" => {
                let chunk: StreamChunk = serde_json::from_str(&data)
                    .map_err(|e| ClientError::Decode(format!("a stream chunk: {e}: {data}")))?;
                self.ready.push_back(chunk);
            }
            "end" => {
                let state = serde_json::from_str::<serde_json::Value>(&data)
                    .ok()
                    .and_then(|v| serde_json::from_value::<RunState>(v["state"].clone()).ok());
                self.ended = Some(state);
            }
            "closing" | "error" => self.ended = Some(None),
            _ => {}
        }
        Ok(())
    }
}
