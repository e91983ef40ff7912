//! JSON Schemas of tripwire's public formats, generated from the model types.
//!
//! `tripwire schemas` writes them to `schemas/`, and a test fails when those files differ from
//! what [`all`] generates.

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{Map, Value};

use super::{
    ApiKey, Backtest, BacktestRequest, ChildRequest, ClaimRequest, ClaimedRun, Completion, CreatedApiKey, Deployment,
    Event, FailureReport, Firing, Heartbeat, HeartbeatReply, LogBatch, LogLine, NewApiKey, RateLimit, RateLimitQuota,
    RateLimitStatus, Run, ScopeFilter, StreamBatch, StreamChunk, TriggerDefinition, TriggerSync, WorkerStatus,
};

/// Every schema, as `(file name, schema)`: the inputs (events, trigger definitions,
/// deployments, the worker protocol's requests) as tripwire reads them, and the outputs
/// (runs, firings, log lines, the worker protocol's answers) as it writes them.
pub fn all() -> Vec<(&'static str, Value)> {
    vec![
        ("event.json", input::<Event>()),
        ("trigger-definition.json", super::trigger::with_flat_form(input::<TriggerDefinition>())),
        ("deployment.json", input::<Deployment>()),
        ("run.json", output::<Run>()),
        ("firing.json", output::<Firing>()),
        ("filter.json", output::<ScopeFilter>()),
        ("log-line.json", output::<LogLine>()),
        ("trigger-sync.json", output::<TriggerSync>()),
        // The worker protocol.
        ("claim-request.json", input::<ClaimRequest>()),
        ("claimed-run.json", output::<ClaimedRun>()),
        ("heartbeat.json", input::<Heartbeat>()),
        ("heartbeat-reply.json", output::<HeartbeatReply>()),
        ("completion.json", input::<Completion>()),
        ("failure-report.json", input::<FailureReport>()),
        ("log-batch.json", input::<LogBatch>()),
        ("worker-status.json", output::<WorkerStatus>()),
        ("stream-batch.json", input::<StreamBatch>()),
        ("stream-chunk.json", output::<StreamChunk>()),
        ("child-request.json", input::<ChildRequest>()),
        // Backtests.
        ("backtest-request.json", with_flat_definitions(input::<BacktestRequest>())),
        ("backtest.json", output::<Backtest>()),
        // Rate limits.
        ("rate-limit-quota.json", input::<RateLimitQuota>()),
        ("rate-limit.json", output::<RateLimit>()),
        ("rate-limit-status.json", output::<RateLimitStatus>()),
        // API keys (admin only).
        ("new-api-key.json", input::<NewApiKey>()),
        ("api-key.json", output::<ApiKey>()),
        ("created-api-key.json", output::<CreatedApiKey>()),
    ]
}

/// A schema whose `TriggerDefinition` takes Prefect's flat form too, as the parser does
/// wherever it reads a definition.
fn with_flat_definitions(mut root: Value) -> Value {
    let Some(mut definition) = root.pointer("/$defs/TriggerDefinition").cloned() else { return root };
    definition["$defs"] = root["$defs"].clone();
    let mut flat = super::trigger::with_flat_form(definition);
    if let Some(members) = flat.as_object_mut() {
        members.remove("$defs");
    }
    root["$defs"]["TriggerDefinition"] = flat;
    root
}

/// A schema as it is stored in a file: pretty-printed JSON and a trailing newline.
pub fn to_text(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).expect("a JSON value always serializes");
    text.push('\n');
    text
}

/// The schema of what tripwire accepts as a `T`.
fn input<T: JsonSchema>() -> Value {
    root(SchemaSettings::draft2020_12().for_deserialize().into_generator().into_root_schema_for::<T>().to_value())
}

/// The schema of a `T` as tripwire writes it.
fn output<T: JsonSchema>() -> Value {
    root(SchemaSettings::draft2020_12().for_serialize().into_generator().into_root_schema_for::<T>().to_value())
}

/// Puts a root schema's `$schema`, `title` and `description` first and its `$defs` last,
/// keeping the order of everything else.
fn root(schema: Value) -> Value {
    let Value::Object(mut members) = schema else { return schema };
    let mut ordered = Map::new();
    for key in ["$schema", "title", "description"] {
        if let Some(v) = members.shift_remove(key) {
            ordered.insert(key.to_owned(), v);
        }
    }
    let defs = members.shift_remove("$defs");
    ordered.extend(members);
    if let Some(defs) = defs {
        ordered.insert("$defs".to_owned(), defs);
    }
    Value::Object(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_is_an_object_with_a_title() {
        for (name, schema) in all() {
            assert!(name.ends_with(".json"));
            assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema", "{name}");
            assert!(schema["title"].is_string(), "{name}");
            assert!(to_text(&schema).ends_with("}\n"));
        }
    }
}
