//! `tripwire triggers apply|list|show|buckets|firings|test|delete|enable|disable`: trigger
//! definitions on a server (`test`: a backtest over the events it holds).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::client::{Client, TriggerRecord};
use crate::engine::{compile, compile_document};
use crate::model::{
    Backtest, BacktestRequest, BacktestState, Firing, JsonPath, Span, Timestamp, Trigger, TriggerDefinition,
};

use super::progress::{Progress, Unit};
use super::remote::{self, ApiArgs, Failure};
use super::serve::parse_span;
use crate::service::clock::{Clock, SystemClock};

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
        /// The buckets a backtest left (its id, as `triggers test` prints it), not the live
        /// ones.
        #[arg(long, value_name = "ID")]
        backtest: Option<Uuid>,
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
    /// Try definitions over the events the server holds, without installing them (a
    /// backtest): print what would have fired, then a summary. A bar on stderr follows the
    /// events read (on a terminal); Ctrl-C cancels it on the server.
    Test {
        /// The definitions file (a JSON array, or one definition), checked here first.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Only events that arrived in this last span (`90s`, `30m`, `24h`, `7d`).
        #[arg(long, value_name = "SPAN", value_parser = parse_span, conflicts_with = "from")]
        since: Option<Span>,
        /// Only events that arrived from this instant (RFC 3339).
        #[arg(long, value_name = "RFC3339", value_parser = Timestamp::parse)]
        from: Option<Timestamp>,
        /// Only events that arrived until this instant (RFC 3339; default: now); the virtual
        /// clock runs on to it, so that proactive windows closing before it fire.
        #[arg(long, value_name = "RFC3339", value_parser = Timestamp::parse)]
        until: Option<Timestamp>,
        /// Print the firings as JSON lines (as `tripwire replay` does), and no summary.
        #[arg(long)]
        json: bool,
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
    if let TriggersCommand::Test { file, since, from, until, json } = &args.command {
        let definitions = match read_definitions(file) {
            Ok(definitions) => definitions,
            Err(problems) => return remote::report(Failure::Usage(problems)),
        };
        let from = since.map(|span| SystemClock.now().minus(span)).or(*from);
        let request = BacktestRequest {
            definitions: definitions.iter().map(|d| serde_json::to_value(d).unwrap_or_default()).collect(),
            from,
            until: *until,
            ..BacktestRequest::default()
        };
        let json = *json;
        return remote::run(&args.api, |client| backtest(client, request, json));
    }
    remote::run(&args.api, |client| async move {
        match args.command {
            TriggersCommand::Apply { .. } | TriggersCommand::Test { .. } => Ok(()),
            TriggersCommand::List { json } => list(&client, json).await,
            TriggersCommand::Show { id } => remote::json_pretty(&client.trigger(&id).await?),
            TriggersCommand::Buckets { id, key, backtest: None } => {
                remote::json_pretty(&client.buckets(&id, key.as_deref()).await?)
            }
            TriggersCommand::Buckets { id, key, backtest: Some(backtest) } => {
                remote::json_pretty(&client.backtest_buckets(backtest, &id, key.as_deref()).await?)
            }
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

/// How often a running backtest is looked at.
const BACKTEST_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Starts a backtest, follows it on a bar, then prints its firings and summary; Ctrl-C
/// cancels it on the server.
async fn backtest(client: Client, request: BacktestRequest, json: bool) -> Result<(), Failure> {
    let started = client.start_backtest(&request).await?;
    let id = started.id;
    let progress = Progress::bar("testing", started.events_stored.max(1), Unit::Items("events"));
    let mut shown = 0;
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    let record = loop {
        let record = client.backtest(id).await?;
        progress.inc(record.events_read.saturating_sub(shown));
        shown = record.events_read;
        if record.state != BacktestState::Running {
            break record;
        }
        tokio::select! {
            _ = tokio::time::sleep(BACKTEST_POLL) => {}
            _ = &mut interrupted => {
                progress.finish();
                client.cancel_backtest(id).await?;
                return Err(Failure::Unfinished(format!("interrupted: backtest {id} cancelled on the server")));
            }
        }
    };
    progress.finish();
    let mut from = 0;
    loop {
        let (firings, next) = client.backtest_firings(id, from).await?;
        for firing in &firings {
            if json {
                remote::json_line(&ReplayLine::of(firing))?;
            } else {
                remote::line(&readable(firing))?;
            }
        }
        match next {
            Some(next) => from = next,
            None => break,
        }
    }
    if !json {
        summary(&record)?;
    }
    match record.state {
        BacktestState::Failed => Err(Failure::Unfinished(format!(
            "backtest {id} failed: {}",
            record.error.as_deref().unwrap_or("no reason given")
        ))),
        _ => Ok(()),
    }
}

/// A firing as `tripwire replay` prints it.
#[derive(Serialize)]
struct ReplayLine<'a> {
    trigger: &'a str,
    bucket: &'a std::collections::BTreeMap<String, String>,
    at: Timestamp,
    triggering_event: Option<uuid::Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

impl ReplayLine<'_> {
    fn of(firing: &Firing) -> ReplayLine<'_> {
        ReplayLine {
            trigger: &firing.trigger,
            bucket: &firing.bucket,
            at: firing.at,
            triggering_event: firing.triggering_event,
            parameters: firing.parameters.as_ref(),
            error: firing.error.as_deref(),
        }
    }
}

/// `TIME  TRIGGER  [label=value ...]  PARAMETERS or error: ...`.
fn readable(firing: &Firing) -> String {
    let bucket: Vec<String> = firing.bucket.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut line = format!("{}  {}", firing.at.to_datetime().format("%Y-%m-%dT%H:%M:%S%.3fZ"), firing.trigger);
    if !bucket.is_empty() {
        line.push_str(&format!("  {}", bucket.join(" ")));
    }
    match (&firing.error, &firing.parameters) {
        (Some(error), _) => line.push_str(&format!("  error: {error}")),
        (None, Some(parameters)) => line.push_str(&format!("  {parameters}")),
        (None, None) => {}
    }
    line
}

/// The summary, after the firings: per definition, and what stayed open.
fn summary(record: &Backtest) -> Result<(), Failure> {
    let s = &record.summary;
    let total: u64 = s.firings.values().sum();
    let state = match record.state {
        BacktestState::Cancelled => " (cancelled: what it found until then)",
        _ => "",
    };
    remote::line(&format!(
        "\n{total} firings over {} events{state}, clock at {}; {} rendering errors",
        record.events_read,
        s.clock.map_or("-".to_owned(), |c| c.to_rfc3339()),
        s.errors
    ))?;
    for id in &record.triggers {
        let open = s.open_buckets.get(id).copied().unwrap_or(0);
        let fired = s.firings.get(id).copied().unwrap_or(0);
        let opened = s.buckets_opened.get(id).copied().unwrap_or(0);
        let why = match open {
            0 => String::new(),
            _ => format!(" (why: tripwire triggers buckets {id} --backtest {})", record.id),
        };
        remote::line(&format!("  {id}: {fired} firings, {opened} buckets opened, {open} still open at the end{why}"))?;
    }
    if s.firings_kept < total {
        remote::line(&format!("  (the first {} firings are listed above)", s.firings_kept))?;
    }
    if s.overflows > 0 {
        remote::line(&format!("  {} events not counted: a definition's buckets were full", s.overflows))?;
    }
    Ok(())
}
