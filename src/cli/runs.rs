//! `tripwire runs list|show|create|children|logs|stream|cancel`: the runs on a server.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use uuid::Uuid;

use crate::model::RunState;

use super::remote::{self, ApiArgs};

/// Arguments of `tripwire runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: RunsCommand,
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// List the newest runs (a table, or JSON lines with --json).
    List {
        /// Only runs of this deployment.
        #[arg(long, value_name = "D")]
        deployment: Option<String>,
        /// Only runs in this state: Scheduled, Running, Completed, Failed or Cancelled.
        #[arg(long, value_name = "S", value_parser = parse_state)]
        state: Option<RunState>,
        /// At most this many runs (1 to 1000).
        #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
        /// One JSON object per line, each a whole run.
        #[arg(long)]
        json: bool,
    },
    /// Print one run as JSON.
    Show {
        /// The run's id.
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: Uuid,
    },
    /// Create a run of a deployment by hand and print it; with --wait, wait for it to end and
    /// print its output (exit 1 when it failed or was cancelled), as `client.run_flow` does.
    Create {
        /// The deployment.
        #[arg(value_name = "DEPLOYMENT")]
        deployment: String,
        /// The run's parameters over the deployment's defaults, a JSON object.
        #[arg(long, value_name = "JSON", value_parser = parse_parameters)]
        params: Option<serde_json::Map<String, serde_json::Value>>,
        /// Wait until the run ends, then print its output as JSON.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds (the run goes on).
        #[arg(long, value_name = "SECONDS", requires = "wait", value_parser = parse_seconds)]
        timeout: Option<std::time::Duration>,
    },
    /// List the child runs a run spawned (`ctx.spawn`), by key, as JSON lines.
    Children {
        /// The parent run's id.
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: Uuid,
    },
    /// Print a run's log lines.
    Logs {
        /// The run's id.
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: Uuid,
    },
    /// Follow a run's stream: print each chunk its flow pushes (`ctx.stream`), from the first,
    /// as it comes, until the run ends (`--json`: one chunk object per line).
    Stream {
        /// The run's id.
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: Uuid,
        /// One JSON object per chunk (`seq`, `at`, `attempt`, `data`).
        #[arg(long)]
        json: bool,
    },
    /// Cancel a waiting or running run (its worker stops it at its next heartbeat).
    Cancel {
        /// The run's id.
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: Uuid,
    },
}

fn parse_state(text: &str) -> Result<RunState, String> {
    RunState::parse(text)
        .ok_or_else(|| format!("unknown state `{text}`; use Scheduled, Running, Completed, Failed or Cancelled"))
}

fn parse_parameters(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!("expected a JSON object such as '{{\"user\": \"42\"}}', got {other}")),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 365.0 * 86_400.0)
        .map(std::time::Duration::from_secs_f64)
        .ok_or_else(|| format!("`{text}` is not a number of seconds from 0 to a year"))
}

fn parse_id(text: &str) -> Result<Uuid, String> {
    Uuid::parse_str(text).map_err(|_| format!("`{text}` is not a run id (a UUID)"))
}

/// Runs `tripwire runs ...`.
pub fn run(args: RunsArgs) -> ExitCode {
    remote::run(&args.api, |client| async move {
        match args.command {
            RunsCommand::List { deployment, state, limit, json } => {
                let mut query = crate::client::RunQuery::new().limit(usize::from(limit));
                if let Some(deployment) = deployment {
                    query = query.deployment(deployment);
                }
                if let Some(state) = state {
                    query = query.state(state);
                }
                let runs = client.runs(query).await?;
                if json {
                    return runs.iter().try_for_each(remote::json_line);
                }
                let rows: Vec<Vec<String>> = runs
                    .iter()
                    .map(|r| {
                        vec![
                            r.id.to_string(),
                            format!("{:?}", r.state),
                            r.deployment.clone(),
                            r.created.to_string(),
                            r.cause.as_ref().map_or_else(|| "-".to_owned(), |c| c.trigger.clone()),
                            serde_json::Value::Object(r.parameters.clone()).to_string(),
                        ]
                    })
                    .collect();
                remote::table(&["ID", "STATE", "DEPLOYMENT", "CREATED", "TRIGGER", "PARAMETERS"], &rows)
            }
            RunsCommand::Show { id } => remote::json_pretty(&client.run(id).await?),
            RunsCommand::Create { deployment, params, wait, timeout } => {
                let run = client.create_run(&deployment, params).await?;
                if !wait {
                    return remote::json_pretty(&run);
                }
                eprintln!("run {} of `{deployment}` created; waiting for it to end", run.id);
                let timeout = timeout.unwrap_or(std::time::Duration::from_secs(365 * 86_400));
                let run = crate::flow::Tripwire::wait_for_run(&client, run.id, timeout).await?;
                remote::json_pretty(&crate::client::ClientError::output_of(run)?)
            }
            RunsCommand::Children { id } => client.children(id).await?.iter().try_for_each(remote::json_line),
            RunsCommand::Logs { id } => {
                let mut from = 0;
                loop {
                    let page = client.run_logs(id, from).await?;
                    for line in &page.lines {
                        println!(
                            "{} {:<7} [attempt {}] {}",
                            line.at,
                            format!("{:?}", line.level).to_uppercase(),
                            line.attempt,
                            line.message
                        );
                    }
                    match page.next {
                        Some(next) if !page.lines.is_empty() => from = next,
                        _ => return Ok(()),
                    }
                }
            }
            RunsCommand::Stream { id, json } => {
                use std::io::Write as _;
                let mut stream = client.stream(id).await?;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    if json {
                        remote::json_line(&chunk)?;
                    } else {
                        let mut out = std::io::stdout().lock();
                        // A closed pipe (`| head`) ends the command quietly.
                        if out.write_all(chunk.data.as_bytes()).and_then(|()| out.flush()).is_err() {
                            return Ok(());
                        }
                    }
                }
                match stream.ended() {
                    Some(state) => {
                        eprintln!("\nrun {id} ended: {state:?}");
                        Ok(())
                    }
                    None => Err(remote::Failure::Unfinished(format!(
                        "the stream of run {id} stopped before the run ended; resume with the API's `from={}`",
                        stream.position()
                    ))),
                }
            }
            RunsCommand::Cancel { id } => remote::json_pretty(&client.cancel_run(id).await?),
        }
    })
}
