//! `tripwire runs list|show|logs|cancel`: the runs on a server.

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
