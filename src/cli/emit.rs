//! `tripwire emit NAME --resource prefect.resource.id=123 ...`: sends one event to the server.

use std::process::ExitCode;

use clap::Args;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::model::event::{RESOURCE_ID, RESOURCE_ROLE};
use crate::model::{Event, EventDefaults, JsonPath, NewEvent, Timestamp};

use super::remote::{self, ApiArgs, Failure};

/// Arguments of `tripwire emit`.
#[derive(Debug, Args)]
pub struct EmitArgs {
    /// The event's name, e.g. `order.created`.
    #[arg(value_name = "NAME")]
    name: String,
    /// A label of the event's resource, `LABEL=VALUE` (repeat for more); a bare `VALUE` is the
    /// `prefect.resource.id`.
    #[arg(long, short = 'r', value_name = "LABEL=VALUE", required = true)]
    resource: Vec<String>,
    /// A related resource, `ROLE:LABEL=VALUE[,LABEL=VALUE...]` (repeat for more resources).
    #[arg(long, value_name = "ROLE:LABEL=VALUE,...")]
    related: Vec<String>,
    /// The payload, a JSON object.
    #[arg(long, value_name = "JSON")]
    payload: Option<String>,
    /// The event's id; the server picks one when absent (resending an id is deduplicated).
    #[arg(long, value_name = "UUID")]
    id: Option<String>,
    /// When it happened (RFC 3339); the server's time of receipt when absent.
    #[arg(long, value_name = "RFC3339")]
    occurred: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

/// Runs `tripwire emit`: prints the ingest report (`{"ids", "duplicates"}`) as one JSON line.
pub fn run(args: EmitArgs) -> ExitCode {
    let event = match build(&args) {
        Ok(e) => e,
        Err(problems) => return remote::report(Failure::Usage(problems)),
    };
    remote::run(&args.api, |client| async move {
        let report = client.ingest(vec![event]).await?;
        remote::json_line(&report)
    })
}

/// Builds the event from the flags and checks it as the server would, reporting every problem.
fn build(args: &EmitArgs) -> Result<NewEvent, Vec<String>> {
    let mut problems = Vec::new();
    let mut resource = Map::new();
    for (i, spec) in args.resource.iter().enumerate() {
        match spec.split_once('=') {
            Some((label, value)) => {
                resource.insert(label.trim().to_owned(), Value::from(value));
            }
            None if i == 0 && !resource.contains_key(RESOURCE_ID) => {
                resource.insert(RESOURCE_ID.to_owned(), Value::from(spec.as_str()));
            }
            None => problems.push(format!("--resource `{spec}`: expected LABEL=VALUE")),
        }
    }
    let mut related = Vec::new();
    for spec in &args.related {
        match parse_related(spec) {
            Ok(r) => related.push(Value::Object(r)),
            Err(message) => problems.push(format!("--related `{spec}`: {message}")),
        }
    }
    let payload = match args.payload.as_deref().map(serde_json::from_str::<Value>) {
        None => None,
        Some(Ok(v @ Value::Object(_))) => Some(v),
        Some(Ok(_)) => {
            problems.push("--payload: expected a JSON object such as {\"amount\": 12}".into());
            None
        }
        Some(Err(e)) => {
            problems.push(format!("--payload: not valid JSON: {e}"));
            None
        }
    };
    let id = args
        .id
        .as_deref()
        .and_then(|s| Uuid::parse_str(s).map_err(|_| problems.push(format!("--id: `{s}` is not a UUID"))).ok());
    let occurred = args
        .occurred
        .as_deref()
        .and_then(|s| Timestamp::parse(s).map_err(|e| problems.push(format!("--occurred: {e}"))).ok());
    let mut value = Map::new();
    value.insert("event".into(), Value::from(args.name.as_str()));
    value.insert("resource".into(), Value::Object(resource));
    value.insert("related".into(), Value::Array(related));
    if let Some(p) = payload {
        value.insert("payload".into(), p);
    }
    // The server fills in a missing id and time; placeholders stand in for them here so the
    // rest of the event is checked exactly as the server checks it.
    let mut placeholder_id = Uuid::nil;
    let defaults = EventDefaults { occurred: Timestamp::default(), new_id: &mut placeholder_id };
    let event = match Event::from_json(&Value::Object(value), &JsonPath::root(), Some(defaults)) {
        Ok(e) => Some(e),
        Err(found) => {
            problems.extend(found.0.iter().map(|p| format!("the event: {p}")));
            None
        }
    };
    match event {
        Some(e) if problems.is_empty() => Ok(NewEvent { id, occurred, ..NewEvent::from(e) }),
        _ => Err(problems),
    }
}

/// `ROLE:LABEL=VALUE,LABEL=VALUE` as a related resource's labels.
fn parse_related(spec: &str) -> Result<Map<String, Value>, String> {
    let (role, labels) = spec.split_once(':').ok_or("expected ROLE:LABEL=VALUE[,LABEL=VALUE...]")?;
    if role.is_empty() || role.contains('=') {
        return Err("expected ROLE:LABEL=VALUE[,LABEL=VALUE...], starting with the role".into());
    }
    let mut out = Map::new();
    out.insert(RESOURCE_ROLE.to_owned(), Value::from(role));
    for pair in labels.split(',').filter(|p| !p.is_empty()) {
        let (label, value) = pair.split_once('=').ok_or_else(|| format!("`{pair}`: expected LABEL=VALUE"))?;
        out.insert(label.trim().to_owned(), Value::from(value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: EmitArgs,
    }

    fn build_from(argv: &[&str]) -> Result<NewEvent, Vec<String>> {
        let w = Wrapper::try_parse_from(std::iter::once("emit").chain(argv.iter().copied())).unwrap();
        build(&w.args)
    }

    #[test]
    fn builds_an_event_without_id_and_time() {
        let e = build_from(&[
            "order.created",
            "--resource",
            "prefect.resource.id=123",
            "-r",
            "team=data",
            "--related",
            "customer:prefect.resource.id=c1,tier=gold",
            "--payload",
            r#"{"amount": 12}"#,
        ])
        .unwrap();
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "event": "order.created",
                "resource": {"prefect.resource.id": "123", "team": "data"},
                "related": [{"prefect.resource.role": "customer", "prefect.resource.id": "c1", "tier": "gold"}],
                "payload": {"amount": 12}
            })
        );
        let bare = build_from(&["a", "-r", "42"]).unwrap();
        assert_eq!(bare.resource.id(), "42");
    }

    #[test]
    fn reports_every_problem() {
        let problems =
            build_from(&["a", "-r", "team=x", "--payload", "[1]", "--id", "nope", "--related", "x"]).unwrap_err();
        let text = problems.join("\n");
        for needle in ["--payload", "--id", "--related `x`", "`prefect.resource.id` label is required"] {
            assert!(text.contains(needle), "{needle} not in {text}");
        }
    }
}
