//! `tripwire triggers apply|list|show|buckets|delete|enable|disable`: trigger definitions on
//! a server.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::Value;

use crate::client::{Client, TriggerRecord};
use crate::engine::{compile, compile_document};
use crate::model::{JsonPath, Trigger, TriggerDefinition};

use super::progress::{Progress, Unit};
use super::remote::{self, ApiArgs, Failure};

/// Arguments of `tripwire triggers`.
#[derive(Debug, Args)]
pub struct TriggersArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: TriggersCommand,
}

#[derive(Debug, Subcommand)]
enum TriggersCommand {
    /// Check a file of definitions (a JSON array, or one definition) and install each, creating
    /// or replacing it by id; nothing is sent when any definition has a problem. A bar on
    /// stderr counts them when there are several and stderr is a terminal.
    Apply {
        /// The definitions file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// List the installed definitions (a table, or JSON lines with --json).
    List {
        /// One JSON object per line: id, enabled, type, deployment, live buckets, firings in the
        /// last hour.
        #[arg(long)]
        json: bool,
    },
    /// Print one definition as JSON.
    Show {
        /// The definition's id.
        id: String,
    },
    /// Print a definition's live buckets as JSON ("why did or didn't it fire?").
    Buckets {
        /// The definition's id.
        id: String,
        /// Only buckets with this value among their `for_each` labels.
        #[arg(long, value_name = "K")]
        key: Option<String>,
    },
    /// Print a definition's latest firings as JSON, newest first, with the error that kept a
    /// firing from creating a run.
    Firings {
        /// The definition's id.
        id: String,
        /// How many (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Remove a definition.
    Delete {
        /// The definition's id.
        id: String,
    },
    /// Evaluate a disabled definition again.
    Enable {
        /// The definition's id.
        id: String,
    },
    /// Keep a definition but stop evaluating it.
    Disable {
        /// The definition's id.
        id: String,
    },
}

/// Runs `tripwire triggers ...`.
pub fn run(args: TriggersArgs) -> ExitCode {
    if let TriggersCommand::Apply { file } = &args.command {
        // Checked before anything is sent, so a bad file is a usage error even with no server.
        return match read_definitions(file) {
            Ok(definitions) => remote::run(&args.api, |client| apply(client, definitions)),
            Err(problems) => remote::report(Failure::Usage(problems)),
        };
    }
    remote::run(&args.api, |client| async move {
        match args.command {
            TriggersCommand::Apply { .. } => Ok(()),
            TriggersCommand::List { json } => list(&client, json).await,
            TriggersCommand::Show { id } => remote::json_pretty(&client.trigger(&id).await?),
            TriggersCommand::Buckets { id, key } => remote::json_pretty(&client.buckets(&id, key.as_deref()).await?),
            TriggersCommand::Firings { id, limit } => remote::json_pretty(&client.firings(&id, limit).await?),
            TriggersCommand::Delete { id } => {
                client.delete_trigger(&id).await?;
                remote::line(&format!("deleted {id}"))
            }
            TriggersCommand::Enable { id } => {
                client.set_trigger_enabled(&id, true).await?;
                remote::line(&format!("enabled {id}"))
            }
            TriggersCommand::Disable { id } => {
                client.set_trigger_enabled(&id, false).await?;
                remote::line(&format!("disabled {id}"))
            }
        }
    })
}

/// Reads and checks a definitions file as the server will, reporting every problem as
/// `FILE: $.path: message`.
fn read_definitions(path: &Path) -> Result<Vec<TriggerDefinition>, Vec<String>> {
    let shown = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![format!("{shown}: cannot read the triggers file: {e}")])?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| vec![format!("{shown}:{}:{}: not valid JSON: {e}", e.line(), e.column())])?;
    let compiled = if value.is_array() {
        compile_document(&value).map(|all| all.into_iter().map(|c| c.definition).collect())
    } else {
        let root = JsonPath::root();
        TriggerDefinition::from_json(&value, &root).and_then(|d| compile(&d, &root).map(|c| vec![c.definition]))
    };
    compiled.map_err(|problems| problems.0.iter().map(|p| format!("{shown}: {p}")).collect())
}

/// Installs the definitions one by one, printing `created ID` or `updated ID` for each; more
/// than one are counted on a bar (on a terminal).
async fn apply(client: Client, definitions: Vec<TriggerDefinition>) -> Result<(), Failure> {
    let progress = match definitions.len() {
        0 | 1 => Progress::hidden(),
        n => Progress::bar("applying", n as u64, Unit::Items("triggers")),
    };
    for (i, definition) in definitions.iter().enumerate() {
        progress.message(definition.id.clone());
        let saved = client.put_trigger(definition).await.inspect_err(|_| {
            progress.finish();
            let rest = definitions.len() - i - 1;
            let others = if rest > 0 { format!(" (nor the {rest} after it)") } else { String::new() };
            eprintln!("error: trigger `{}` was not applied{others}:", definition.id);
        })?;
        let verb = if saved.created { "created" } else { "updated" };
        progress.suspend(|| remote::line(&format!("{verb} {}", saved.value.definition.id)))?;
        progress.inc(1);
    }
    Ok(())
}

/// One row of `triggers list --json`.
#[derive(Serialize)]
struct Row<'a> {
    id: &'a str,
    enabled: bool,
    r#type: &'static str,
    deployment: Option<&'a str>,
    live_buckets: Option<u64>,
    firings_last_hour: Option<u64>,
}

fn row(record: &TriggerRecord) -> Row<'_> {
    let d = &record.definition;
    let kind = match d.trigger {
        Trigger::Event(_) => "event",
        Trigger::Compound(_) => "compound",
        Trigger::Sequence(_) => "sequence",
    };
    let stats = record.stats.as_ref();
    Row {
        id: &d.id,
        enabled: d.enabled,
        r#type: kind,
        deployment: d.deployment.as_deref(),
        live_buckets: stats.map(|s| s.live_buckets),
        firings_last_hour: stats.map(|s| s.firings_last_hour),
    }
}

async fn list(client: &Client, json: bool) -> Result<(), Failure> {
    let records = client.triggers_with_stats().await?;
    if json {
        return records.iter().try_for_each(|r| remote::json_line(&row(r)));
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|record| {
            let r = row(record);
            let partial = record.stats.as_ref().is_some_and(|s| s.firings_partial);
            let count =
                |n: Option<u64>, plus: bool| n.map_or("-".into(), |n| format!("{n}{}", if plus { "+" } else { "" }));
            vec![
                r.id.to_owned(),
                r.enabled.to_string(),
                r.r#type.to_owned(),
                r.deployment.unwrap_or("-").to_owned(),
                count(r.live_buckets, false),
                count(r.firings_last_hour, partial),
            ]
        })
        .collect();
    remote::table(&["ID", "ENABLED", "TYPE", "DEPLOYMENT", "BUCKETS", "FIRINGS/1H"], &rows)
}
