//! `tripwire serve`: the server, on its embedded redb store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::model::time::Span;
use crate::service::{Service, ServiceConfig};

/// Arguments of `tripwire serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "TRIPWIRE_ADDR", default_value = "127.0.0.1:4200")]
    addr: SocketAddr,
    /// Directory holding the database.
    #[arg(long, env = "TRIPWIRE_DATA", default_value = "./tripwire-data")]
    data: PathBuf,
    /// How long events are kept, e.g. `7d`, `12h`, `30m`.
    #[arg(long, env = "TRIPWIRE_RETENTION", default_value = "7d", value_parser = parse_span)]
    retention: Span,
}

/// `7d`, `12h`, `30m`, `45s` or a number of seconds.
fn parse_span(text: &str) -> Result<Span, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: i64 = number.parse().map_err(|_| format!("`{text}` is not a duration such as 7d, 12h, 30m or 45s"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("unknown unit `{unit}` in `{text}`; use s, m, h or d")),
    };
    if secs <= 0 {
        return Err("the retention must be positive".into());
    }
    Ok(Span::seconds(secs))
}

pub fn run(args: ServeArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
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
    let mut config = ServiceConfig::new(&args.data);
    config.retention = args.retention;
    let service =
        Service::start(config).await.map_err(|e| format!("cannot open the data in {}: {e}", args.data.display()))?;
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e} (is another server running there?)", args.addr))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!("tripwire listening on http://{addr}/api with data in {}", args.data.display());
    let app = crate::http::router(service.clone());
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal());
    let failed = service.core_failed();
    tokio::select! {
        served = served => {
            tracing::info!("shutting down: finishing queued work and writing a snapshot");
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

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
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
    }
}
