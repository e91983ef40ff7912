//! What the commands that talk to a server share: the `--api` and `--api-key` flags, a small runtime per
//! command, output that survives a closed pipe, and exit codes (0 success, 1 a server or API
//! error, 2 bad usage or input).

use std::future::Future;
use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use crate::client::{Client, ClientError, API_ENV, API_KEY_ENV, DEFAULT_API};

/// The server to talk to.
#[derive(Clone, Debug, Args)]
pub struct ApiArgs {
    /// The server's API address.
    #[arg(long, global = true, env = API_ENV, default_value = DEFAULT_API, value_name = "URL")]
    pub api: String,
    /// The API key to send (`Authorization: Bearer`), when the server has auth on.
    #[arg(long, global = true, env = API_KEY_ENV, hide_env_values = true, value_name = "KEY")]
    pub api_key: Option<String>,
}

impl ApiArgs {
    /// A client of the server, with the key if one was given.
    pub fn client(&self) -> Result<Client, Failure> {
        let client = Client::new(&self.api).map_err(|e| Failure::usage(format!("--api: {e}")))?;
        Ok(match self.api_key.as_deref().map(str::trim) {
            Some(key) if !key.is_empty() => client.with_api_key(key),
            _ => client,
        })
    }
}

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// Bad usage or input; each line is printed as `error: LINE` (exit 2).
    Usage(Vec<String>),
    /// The server could not be reached or answered with an error (exit 1).
    Client(ClientError),
    /// Stdout was closed (e.g. piped into `head`): stop quietly (exit 0).
    Closed,
    /// The work did not finish: interrupted, or it failed on the server; the message says
    /// which (exit 1).
    Unfinished(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

impl Failure {
    /// Bad usage or input with one message.
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::Usage(vec![message.into()])
    }
}

/// Runs `command` with a client of `api` on a single-threaded runtime and turns its outcome
/// into the exit code, printing diagnostics to stderr.
pub fn run<F, Fut>(api: &ApiArgs, command: F) -> ExitCode
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    let client = match api.client() {
        Ok(c) => c,
        Err(failure) => return report(failure),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command(client)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => report(failure),
    }
}

/// Prints a failure's diagnostics to stderr; its exit code.
pub fn report(failure: Failure) -> ExitCode {
    match failure {
        Failure::Usage(lines) => {
            for line in lines {
                eprintln!("error: {line}");
            }
            ExitCode::from(2)
        }
        Failure::Client(ClientError::Invalid(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Failure::Client(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Failure::Closed => ExitCode::SUCCESS,
        Failure::Unfinished(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Writes one line to stdout and flushes it (so `--follow` output appears at once).
pub fn line(text: &str) -> Result<(), Failure> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    out.write_all(text.as_bytes()).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush()).map_err(|e| {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: cannot write to stdout: {e}");
        }
        Failure::Closed
    })
}

/// Writes a value as one compact JSON line.
pub fn json_line(value: &impl serde::Serialize) -> Result<(), Failure> {
    line(&serde_json::to_string(value).map_err(|e| Failure::usage(format!("cannot print the answer: {e}")))?)
}

/// Writes a value as pretty JSON.
pub fn json_pretty(value: &impl serde::Serialize) -> Result<(), Failure> {
    line(&serde_json::to_string_pretty(value).map_err(|e| Failure::usage(format!("cannot print the answer: {e}")))?)
}

/// Writes rows as a table with aligned columns (the last column is not padded).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> Result<(), Failure> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let render = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            if i + 1 < widths.len() {
                text.extend(std::iter::repeat_n(' ', widths[i].saturating_sub(cell.chars().count())));
            }
        }
        text.trim_end().to_owned()
    };
    line(&render(&mut header.iter().copied()))?;
    for row in rows {
        line(&render(&mut row.iter().map(String::as_str)))?;
    }
    Ok(())
}
