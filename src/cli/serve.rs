//! `tripwire serve`: the server, on its embedded redb store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::http::listener::{self, ListenerLimits, MAX_CONNECTIONS_SETTING, MAX_TIMEOUT};
use crate::http::SubscriberLimits;
use crate::model::time::Span;
use crate::service::{Service, ServiceConfig};

/// Arguments of `tripwire serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on, `HOST:PORT` (an IP address or a name such as `localhost`; port 0
    /// picks a free port).
    #[arg(long, env = "TRIPWIRE_ADDR", default_value = "127.0.0.1:4200")]
    addr: String,
    /// Directory holding the database.
    #[arg(long, env = "TRIPWIRE_DATA", default_value = "./tripwire-data")]
    data: PathBuf,
    /// How long events are kept, e.g. `7d`, `12h`, `30m`.
    #[arg(long, env = "TRIPWIRE_RETENTION", default_value = "7d", value_parser = parse_span)]
    retention: Span,
    /// Time a client has to send a request's head, from connecting or from the previous
    /// response (so also the keep-alive idle timeout); past it the connection is closed.
    #[arg(long, env = "TRIPWIRE_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    header_timeout: Duration,
    /// Time one request has to send its body and be answered; past it the client gets 408.
    /// `POST /api/runs/claim` gets its `wait_seconds` cap (60 s) on top; WebSockets are exempt.
    #[arg(long, env = "TRIPWIRE_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_timeout)]
    request_timeout: Duration,
    /// Connections open at once (WebSockets included); past it a new connection gets 503.
    #[arg(long, env = "TRIPWIRE_MAX_CONNECTIONS", default_value_t = listener::DEFAULT_MAX_CONNECTIONS,
          value_parser = parse_max_connections)]
    max_connections: usize,
    /// Time an `/api/events/out` subscriber's socket has to take each message; past it the
    /// subscriber is closed with 1008 and told to reconnect with backfill.
    #[arg(long, env = "TRIPWIRE_SUBSCRIBER_SEND_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    subscriber_send_timeout: Duration,
    /// Prefect's auth string (`user:pass`, as PREFECT_SERVER_API_AUTH_STRING): requests with
    /// `Authorization: Basic base64(user:pass)` are admitted as administrators, and auth is on.
    #[arg(long, env = "TRIPWIRE_AUTH_STRING", hide_env_values = true, value_parser = parse_auth_string)]
    auth_string: Option<String>,
    /// An origin (`https://host[:port]`) whose web pages may call the API besides the server's
    /// own, e.g. a dashboard served elsewhere; repeat for more. Comma-separated in the
    /// environment variable.
    #[arg(long = "cors-origin", env = "TRIPWIRE_CORS_ORIGINS", value_delimiter = ',',
          value_parser = crate::http::access::parse_origin)]
    cors_origins: Vec<String>,
    /// Log lines as `text` (for people) or `json` (one object per line, for log pipelines).
    /// The level comes from RUST_LOG (default `info`; `debug` adds one line per request).
    #[arg(long, env = "TRIPWIRE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Listen on an address other machines can reach with auth off (no API key and no auth
    /// string): anyone who reaches the port can then do anything. Refused without this.
    #[arg(long)]
    insecure: bool,
}

impl ServeArgs {
    fn listener_limits(&self) -> ListenerLimits {
        ListenerLimits {
            header_timeout: self.header_timeout,
            request_timeout: self.request_timeout,
            max_connections: self.max_connections,
        }
    }

    fn subscriber_limits(&self) -> SubscriberLimits {
        SubscriberLimits { send_timeout: self.subscriber_send_timeout, ..SubscriberLimits::default() }
    }
}

/// `7d`, `12h`, `30m`, `45s` or a number of seconds, as a positive number of seconds.
fn parse_seconds(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: i64 = number.parse().map_err(|_| format!("`{text}` is not a duration such as 7d, 12h, 30m or 45s"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit `{unit}` in `{text}`; use s, m, h or d")),
    };
    let secs = n.checked_mul(scale).ok_or_else(|| format!("`{text}` is too long a duration"))?;
    if secs <= 0 {
        return Err("the duration must be positive".into());
    }
    Ok(secs)
}

/// A span such as a retention: see [`parse_seconds`].
pub(super) fn parse_span(text: &str) -> Result<Span, String> {
    let secs = parse_seconds(text)?;
    // Spans count microseconds.
    if secs > i64::MAX / 1_000_000 {
        return Err(format!("`{}` is too long a duration", text.trim()));
    }
    Ok(Span::seconds(secs))
}

/// A timeout: see [`parse_seconds`]; at most [`MAX_TIMEOUT`].
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let secs = parse_seconds(text)?;
    if secs.unsigned_abs() > MAX_TIMEOUT.as_secs() {
        return Err(format!("a timeout is at most {} s (1d); got `{}`", MAX_TIMEOUT.as_secs(), text.trim()));
    }
    Ok(Duration::from_secs(secs.unsigned_abs()))
}

/// An auth string: not empty, no line breaks.
fn parse_auth_string(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("the auth string is empty; give `user:password`".into());
    }
    if text.contains(['\r', '\n']) {
        return Err("the auth string must not contain line breaks".into());
    }
    Ok(text.to_owned())
}

/// A connection cap: 1 to [`MAX_CONNECTIONS_SETTING`].
fn parse_max_connections(text: &str) -> Result<usize, String> {
    let n: u64 = text.trim().parse().map_err(|_| format!("`{text}` is not a number of connections"))?;
    if n == 0 || n > MAX_CONNECTIONS_SETTING as u64 {
        return Err(format!("the connection cap must be between 1 and {MAX_CONNECTIONS_SETTING}; got {n}"));
    }
    Ok(n as usize)
}

/// Logs to stderr at RUST_LOG's level (default `info`), as text (coloured only on a terminal,
/// and never with NO_COLOR set) or as JSON lines. Lines are written by a thread of their own
/// (the core logs every firing and run change and must not wait for stderr); past 128,000
/// lines waiting, new ones are dropped. Keep the guard until exit: it writes what is left.
fn init_logs(format: &str) -> tracing_appender::non_blocking::WorkerGuard {
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    if format == "json" {
        logs.json().with_current_span(false).init();
    } else {
        logs.with_ansi(colour).init();
    }
    guard
}

pub fn run(args: ServeArgs) -> ExitCode {
    let _logs = init_logs(&args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(args.addr.as_str())
        .await
        .map_err(|e| format!("--addr `{}` is not an address to listen on ({e}); use e.g. 127.0.0.1:4200", args.addr))?
        .collect();
    let Some(&addr) = addrs.first() else {
        return Err(format!("--addr `{}` names no address; use e.g. 127.0.0.1:4200", args.addr));
    };
    let mut config = ServiceConfig::new(&args.data);
    config.retention = args.retention;
    config.auth_string = args.auth_string.clone();
    let service =
        Service::start(config).await.map_err(|e| format!("cannot open the data in {}: {e}", args.data.display()))?;
    if !addrs.iter().all(|a| a.ip().is_loopback()) && !service.access().is_on() && !args.insecure {
        return Err(format!(
            "refusing to listen on {} with auth off: anyone who can reach it could create triggers, run flows and \
             read every event. Make an API key first (`tripwire keys create --role admin --name NAME --data {}`), \
             or give `--auth-string user:password`, or listen on 127.0.0.1, or pass `--insecure` to accept the risk",
            args.addr,
            args.data.display()
        ));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e} (is another server running there?)"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    if service.access().is_on() {
        tracing::info!("auth is on: requests need an API key or the auth string");
    } else {
        tracing::warn!(
            "auth is off: anyone who can reach {addr} may do anything (make an admin key with `tripwire keys create --role admin --name NAME`)"
        );
    }
    let shutdown = {
        let signal = shutdown_signal();
        let service = service.clone();
        async move {
            signal.await;
            service.begin_shutdown();
        }
    };
    tracing::info!("tripwire listening on http://{addr}/api with data in {}", args.data.display());
    let guard = crate::http::Guard::new(args.cors_origins.clone());
    let app = crate::http::router_with(service.clone(), args.subscriber_limits(), guard);
    let served = listener::serve(listener, app, args.listener_limits(), shutdown);
    let failed = service.core_failed();
    tokio::select! {
        served = served => {
            tracing::info!("shutting down: finishing queued work");
            service.shutdown().await;
            served.map_err(|e| format!("server error: {e}"))
        }
        why = failed => {
            // Every write would fail from now on: exit so that a supervisor restarts the
            // server, which recovers from what is durable.
            Err(format!("the core stopped: {why}; exiting so that a supervisor restarts tripwire"))
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled: a signal that comes right after the server says it listens must
/// shut it down cleanly, not kill it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            let term = async {
                match term.as_mut() {
                    Some(s) => drop(s.recv().await),
                    None => std::future::pending::<()>().await,
                }
            };
            let interrupt = async {
                match interrupt.as_mut() {
                    Some(s) => drop(s.recv().await),
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = term => {},
                _ = interrupt => {},
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_spans() {
        assert_eq!(parse_span("7d"), Ok(Span::seconds(7 * 86_400)));
        assert_eq!(parse_span("90"), Ok(Span::seconds(90)));
        assert!(parse_span("7w").is_err());
        assert!(parse_span("0s").is_err());
        assert!(parse_span("106751991167d").unwrap_err().contains("too long"));
        assert!(parse_span("9223372036854775807d").unwrap_err().contains("too long"));
        assert!(parse_span("99999999999999999999").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn timeouts_are_bounded() {
        assert_eq!(parse_timeout("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_timeout("1d"), Ok(MAX_TIMEOUT));
        assert!(parse_timeout("86401").unwrap_err().contains("at most 86400 s"));
        assert!(parse_timeout("1000000000000").unwrap_err().contains("at most"));
        assert!(parse_timeout("9223372036854775807d").unwrap_err().contains("too long"));
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("-5s").is_err());
    }

    #[test]
    fn connection_caps_are_bounded() {
        assert_eq!(parse_max_connections("1024"), Ok(1024));
        assert_eq!(parse_max_connections("1"), Ok(1));
        assert!(parse_max_connections("0").unwrap_err().contains("between 1 and"));
        assert!(parse_max_connections("1000001").unwrap_err().contains("between 1 and"));
        assert!(parse_max_connections("1000000000000").unwrap_err().contains("between 1 and"));
        assert!(parse_max_connections("18446744073709551616").unwrap_err().contains("not a number"));
    }
}
