//! `tripwire replay --triggers FILE --events FILE [--until RFC3339]`.
//!
//! The events file is read line by line and each event goes through the engine as it is read,
//! under a bar of the bytes read (on a terminal); firings are printed once every line has been
//! read and found valid.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;
use uuid::Uuid;

use crate::engine::compile::CompiledDefinition;
use crate::engine::replay::Replay;
use crate::engine::{compile_document, EngineConfig};
use crate::model::{Event, EventDefaults, Firing, JsonPath, Timestamp};

use super::progress::{Progress, Unit};

/// Arguments of `tripwire replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A JSON array of trigger definitions.
    #[arg(long, value_name = "FILE")]
    triggers: PathBuf,
    /// A JSON-lines file of events, one per line, in arrival order.
    #[arg(long, value_name = "FILE")]
    events: PathBuf,
    /// Run the virtual clock on to this instant after the last event (RFC 3339), so that
    /// proactive windows closing before it fire.
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    until: Option<Timestamp>,
}

fn parse_time(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse(text)
}

/// One output line, as `conformance/FORMAT.md` defines it.
#[derive(Serialize)]
struct Line<'a> {
    trigger: &'a str,
    bucket: &'a std::collections::BTreeMap<String, String>,
    at: Timestamp,
    triggering_event: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// Runs `tripwire replay`.
pub fn run(args: ReplayArgs) -> ExitCode {
    let mut errors = Vec::new();
    let definitions = read_triggers(&args.triggers, &mut errors);
    let mut replay = Replay::new(definitions, EngineConfig::default());
    let mut firings = replay_events(&args.events, &mut replay, &mut errors);
    if !errors.is_empty() {
        for e in errors {
            eprintln!("error: {e}");
        }
        return ExitCode::from(2);
    }
    if let Some(until) = args.until {
        firings.extend(replay.finish(until));
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for f in &firings {
        if write_line(&mut out, f).is_err() {
            return ExitCode::FAILURE;
        }
    }
    if out.flush().is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn write_line(out: &mut impl Write, f: &Firing) -> std::io::Result<()> {
    let line = Line {
        trigger: &f.trigger,
        bucket: &f.bucket,
        at: f.at,
        triggering_event: f.triggering_event,
        parameters: f.parameters.as_ref(),
        error: f.error.as_deref(),
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}

fn read_triggers(path: &Path, errors: &mut Vec<String>) -> Vec<CompiledDefinition> {
    let shown = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            errors.push(format!("{shown}: cannot read the triggers file: {e}"));
            return Vec::new();
        }
    };
    let value: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            errors.push(format!("{shown}:{}:{}: not valid JSON: {e}", e.line(), e.column()));
            return Vec::new();
        }
    };
    match compile_document(&value) {
        Ok(c) => c,
        Err(problems) => {
            errors.extend(problems.0.iter().map(|p| format!("{shown}: {p}")));
            Vec::new()
        }
    }
}

/// Reads the events file line by line, pushing each event into `replay` while there are no
/// `errors` (of either file), and returns the firings; every problem of every line is added to
/// `errors`.
fn replay_events(path: &Path, replay: &mut Replay, errors: &mut Vec<String>) -> Vec<Firing> {
    let shown = path.display();
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            errors.push(format!("{shown}: cannot read the events file: {e}"));
            return Vec::new();
        }
    };
    // A file of known size gets a bar; a pipe or a device, a spinner.
    let progress = match file.metadata() {
        Ok(m) if m.is_file() => Progress::bar("replaying", m.len(), Unit::Bytes),
        _ => Progress::spinner("replaying", Unit::Bytes),
    };
    let mut firings = Vec::new();
    let mut last_occurred: Option<Timestamp> = None;
    for (n, line) in BufReader::new(progress.wrap_read(file)).lines().enumerate() {
        let line_no = n + 1;
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                errors.push(format!("{shown}:{line_no}: cannot read the events file: {e}"));
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("{shown}:{line_no}:{}: not valid JSON: {e}", e.column()));
                continue;
            }
        };
        // A missing id is derived from the line, so replays are reproducible; a missing
        // `occurred` is the virtual clock (the previous event's time).
        let mut new_id = || Uuid::from_u128(0x7472_6970_7769_7265_0000_0000_0000_0000 | line_no as u128);
        let occurred = match (last_occurred, value.get("occurred")) {
            (Some(t), _) => t,
            (None, Some(_)) => Timestamp::default(),
            (None, None) => {
                errors.push(format!(
                    "{shown}:{line_no}: $.occurred: the first event needs an `occurred` time to start the clock"
                ));
                Timestamp::default()
            }
        };
        let defaults = EventDefaults { occurred, new_id: &mut new_id };
        match Event::from_json(&value, &JsonPath::root(), Some(defaults)) {
            Ok(e) => {
                last_occurred = Some(last_occurred.map_or(e.occurred, |t| t.max(e.occurred)));
                // Once anything is wrong nothing is printed: the rest is only checked.
                if errors.is_empty() {
                    firings.extend(replay.push(e));
                }
            }
            Err(problems) => errors.extend(problems.0.iter().map(|p| format!("{shown}:{line_no}: {p}"))),
        }
    }
    firings
}
