//! `tripwire rate-limits put|list|delete`: a server's rate limits.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::model::{RateLimitQuota, RateLimitStatus};

use super::remote::{self, ApiArgs};

/// Arguments of `tripwire rate-limits`.
#[derive(Debug, Args)]
pub struct RateLimitsArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: RateLimitsCommand,
}

#[derive(Debug, Subcommand)]
enum RateLimitsCommand {
    /// Create or change a static limit: `put github-api 5000/hour` (second, minute, hour or
    /// day). Deployments then take units from it with `{"static_key": "github-api"}`.
    Put {
        /// The key (letters, digits, `-`, `_`, `.`, `:`).
        key: String,
        /// LIMIT/DURATION, e.g. 5000/hour.
        #[arg(value_name = "LIMIT/DURATION", value_parser = RateLimitQuota::parse)]
        quota: RateLimitQuota,
    },
    /// Show every static key, and every dynamic key with an open window: used, remaining,
    /// and when the window resets (a table, or JSON lines with --json).
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Remove a static limit (refused while a deployment takes units from it).
    Delete {
        /// The key.
        key: String,
    },
}

/// Runs `tripwire rate-limits ...`.
pub fn run(args: RateLimitsArgs) -> ExitCode {
    remote::run(&args.api, |client| async move {
        match args.command {
            RateLimitsCommand::Put { key, quota } => {
                let stored = client.put_rate_limit(&key, quota.limit, quota.duration).await?;
                let verb = if stored.created { "created" } else { "changed" };
                let l = stored.value;
                remote::line(&format!("{verb} {}: {} per {}", l.key, l.limit, l.duration.name()))
            }
            RateLimitsCommand::List { json } => {
                let all = client.rate_limits().await?;
                if json {
                    for status in &all {
                        remote::line(&serde_json::to_string(status).unwrap_or_default())?;
                    }
                    return Ok(());
                }
                remote::line(&format!(
                    "{:<32} {:<8} {:>16} {:>12} {:>12}  RESETS",
                    "KEY", "KIND", "QUOTA", "USED", "REMAINING"
                ))?;
                for status in &all {
                    remote::line(&row(status))?;
                }
                Ok(())
            }
            RateLimitsCommand::Delete { key } => {
                client.delete_rate_limit(&key).await?;
                remote::line(&format!("deleted {key}"))
            }
        }
    })
}

fn row(s: &RateLimitStatus) -> String {
    let kind = match s.kind {
        crate::model::RateLimitKind::Static => "static",
        crate::model::RateLimitKind::Dynamic => "dynamic",
    };
    format!(
        "{:<32} {:<8} {:>16} {:>12} {:>12}  {}",
        s.key,
        kind,
        format!("{}/{}", s.limit, s.duration.name()),
        s.used,
        s.remaining,
        s.resets.map_or("-".to_owned(), |t| t.to_rfc3339())
    )
}
