//! [`ClientError`]: what the SDK's calls answer when they fail, in both modes.

/// What went wrong talking to tripwire. The HTTP [`Client`](super::Client) and
/// [`Embedded`](crate::Embedded) answer the same errors: a refusal is
/// [`ClientError::Api`] with the status and code the HTTP API would have answered (e.g. 409
/// `run_not_held`), so that code written for one mode handles the other alike.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The server's machine-readable code, e.g. `not_found` or `invalid`.
        code: String,
        /// The server's message (the raw body when it was not tripwire's error shape).
        message: String,
    },
    /// No server could be reached at the address.
    #[error("{message}")]
    Unreachable {
        /// The API address tried.
        url: String,
        /// Says that no server runs there, why the connection failed, and how to start one.
        message: String,
    },
    /// The connection was made but the exchange failed (a timeout, a dropped connection).
    #[error("the tripwire server at {url} did not answer: {message}")]
    Transport {
        /// The API address.
        url: String,
        /// What failed.
        message: String,
    },
    /// The server's answer was not what this client expects.
    #[error("the server's answer could not be read: {0}")]
    Decode(String),
    /// The request could not be made as asked (e.g. a malformed address, an event whose
    /// payload is not a JSON object).
    #[error("{0}")]
    Invalid(String),
    /// Waiting for something (e.g. a run to finish) took longer than the time given.
    #[error("{0}")]
    Timeout(String),
    /// A run waited for (`Tripwire::run_flow`, `ctx.spawn`) ended `Failed` or `Cancelled`.
    #[error("run {id} of `{deployment}` ended {state:?}: {error}")]
    RunFailed {
        /// The run.
        id: uuid::Uuid,
        /// Its deployment.
        deployment: String,
        /// `Failed` or `Cancelled`.
        state: crate::model::RunState,
        /// Why (the flow's error, or what cancelled it).
        error: String,
    },
}

impl ClientError {
    /// The output of a final run, or why it has none ([`ClientError::RunFailed`]).
    pub fn output_of(run: crate::model::Run) -> Result<serde_json::Value, ClientError> {
        match run.state {
            crate::model::RunState::Completed => Ok(run.output.unwrap_or(serde_json::Value::Null)),
            state => Err(ClientError::RunFailed {
                id: run.id,
                deployment: run.deployment,
                state,
                error: run.error.unwrap_or_else(|| format!("{state:?}")),
            }),
        }
    }
}
