//! `GET /api/openapi.json`: the API described as OpenAPI 3.1, its bodies the JSON Schemas of
//! `schemas/` (generated from the same Rust types).

use serde_json::{json, Map, Value};

use crate::model::schema;

/// Component name of each schema file.
fn component(file: &str) -> &'static str {
    match file {
        "event.json" => "Event",
        "trigger-definition.json" => "TriggerDefinition",
        "deployment.json" => "Deployment",
        "run.json" => "Run",
        "firing.json" => "Firing",
        "filter.json" => "ScopeFilter",
        "log-line.json" => "LogLine",
        "trigger-sync.json" => "TriggerSync",
        "claim-request.json" => "ClaimRequest",
        "claimed-run.json" => "ClaimedRun",
        "heartbeat.json" => "Heartbeat",
        "heartbeat-reply.json" => "HeartbeatReply",
        "completion.json" => "Completion",
        "failure-report.json" => "FailureReport",
        "log-batch.json" => "LogBatch",
        "new-api-key.json" => "NewApiKey",
        "api-key.json" => "ApiKey",
        "created-api-key.json" => "CreatedApiKey",
        _ => "Unknown",
    }
}

/// Moves every schema and its `$defs` into `components.schemas`, pointing `$ref`s there.
fn components() -> Map<String, Value> {
    let mut out = Map::new();
    for (file, mut schema) in schema::all() {
        if let Some(Value::Object(defs)) = schema.as_object_mut().and_then(|o| o.remove("$defs")) {
            for (name, def) in defs {
                out.insert(name, def);
            }
        }
        if let Some(o) = schema.as_object_mut() {
            o.remove("$schema");
        }
        out.insert(component(file).to_owned(), schema);
    }
    let mut all = Value::Object(out);
    retarget(&mut all);
    match all {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn retarget(value: &mut Value) {
    match value {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get_mut("$ref") {
                if let Some(name) = r.strip_prefix("#/$defs/") {
                    *r = format!("#/components/schemas/{name}");
                }
            }
            o.values_mut().for_each(retarget);
        }
        Value::Array(a) => a.iter_mut().for_each(retarget),
        _ => {}
    }
}

fn body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn errors() -> Value {
    json!({"description": "An error: `{\"error\": {\"code\", \"message\", \"problems\"?}}`",
           "content": {"application/json": {"schema": reference("Error")}}})
}

fn op(summary: &str, request: Option<Value>, status: &str, response: Value) -> Value {
    let mut o = json!({"summary": summary, "responses": {status: response, "default": errors()}});
    if let Some(r) = request {
        o["requestBody"] = r;
    }
    o
}

fn list(name: &str) -> Value {
    json!({"type": "array", "items": reference(name)})
}

fn query(names: &[&str]) -> Value {
    Value::Array(
        names
            .iter()
            .map(|n| json!({"name": n, "in": "query", "required": false, "schema": {"type": "string"}}))
            .collect(),
    )
}

fn path_param(name: &str) -> Value {
    json!([{"name": name, "in": "path", "required": true, "schema": {"type": "string"}}])
}

/// The document.
pub fn document() -> Value {
    let mut schemas = components();
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                           "problems": {"type": "array", "items": {"type": "object", "properties": {"path": {"type": "string"}, "message": {"type": "string"}}}}}}}}),
    );
    schemas.insert(
        "IngestReport".into(),
        json!({"type": "object", "properties": {"ids": {"type": "array", "items": {"type": "string", "format": "uuid"}},
                                                "duplicates": {"type": "array", "items": {"type": "string", "format": "uuid"}}}}),
    );
    schemas.insert(
        "TriggerRecord".into(),
        json!({"allOf": [reference("TriggerDefinition"), {"type": "object", "properties": {"created": {"type": "string", "format": "date-time"}, "updated": {"type": "string", "format": "date-time"},
            "error": {"type": "string", "description": "Why the server disabled it"},
            "warning": {"type": "string", "description": "Why it cannot create runs now"},
            "origin": {"type": "string", "enum": ["api", "worker"], "description": "Who installed it: the triggers API (and CLI), or a worker serving its deployment"}}}]}),
    );
    let events_or_one = json!({"oneOf": [reference("Event"), list("Event")]});
    let event_page = json!({"type": "object", "properties": {"events": list("Event"), "next_page": {}, "total": {"type": "integer"}}});
    let record = || ok("The stored definition", reference("TriggerRecord"));
    let mut document = json!({
        "openapi": "3.1.0",
        "info": {"title": "tripwire", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Stateful sequence triggers with Prefect's semantics. WebSockets: /api/events/in (Prefect's emit_event protocol) and /api/events/out (subscriptions)."},
        "servers": [{"url": "/"}],
        "paths": {
            "/api/health": {"get": open(op("Health", None, "200", ok("Always true", json!({"type": "boolean"}))))},
            "/api/admin/version": {"get": open(op("The Prefect API version spoken", None, "200", ok("A version string", json!({"type": "string"}))))},

            "/api/openapi.json": {"get": op("This document", None, "200", ok("OpenAPI 3.1", json!({"type": "object"})))},
            "/api/events": {
                "post": op("Accept events (one or an array; durable when answered)", Some(body(events_or_one)), "200", ok("Ids accepted", reference("IngestReport"))),
                "get": {"parameters": query(&["name", "prefix", "resource", "related", "since", "until", "limit", "page"]),
                        "summary": "Events, newest first", "responses": {"200": ok("A page", event_page.clone()), "default": errors()}}
            },
            "/api/events/filter": {"post": op("Prefect's event filter", Some(body(json!({"type": "object", "properties": {"filter": {"type": "object"}, "limit": {"type": "integer"}}}))), "200", ok("A page", event_page.clone()))},
            "/api/events/filter/next": {"get": {"summary": "The next page of a filter", "parameters": query(&["page-token"]), "responses": {"200": ok("A page", event_page), "default": errors()}}},
            "/api/triggers": {
                "get": op("Trigger definitions", None, "200", ok("All", list("TriggerRecord"))),
                "post": op("Create a definition", Some(body(reference("TriggerDefinition"))), "201", record())
            },
            "/api/triggers/{id}": {
                "parameters": path_param("id"),
                "get": op("One definition", None, "200", record()),
                "put": op("Create or replace a definition", Some(body(reference("TriggerDefinition"))), "200", record()),
                "patch": op("Enable or disable", Some(body(json!({"type": "object", "required": ["enabled"], "properties": {"enabled": {"type": "boolean"}}}))), "200", record()),
                "delete": op("Remove a definition and its state", None, "204", json!({"description": "Removed"}))
            },
            "/api/triggers/{id}/buckets": {
                "parameters": path_param("id"),
                "get": {"summary": "A page of live buckets: why did or didn't it fire? (`key` once per for_each label, `limit` up to 1000, `after`: the previous page's `next`)", "parameters": query(&["key", "limit", "after"]), "responses": {"200": ok("Buckets", json!({"type": "object"})), "default": errors()}}
            },
            "/api/triggers/{id}/firings": {
                "parameters": path_param("id"),
                "get": {"summary": "Latest firings, newest first, each with the error that kept it from creating a run", "parameters": query(&["limit"]), "responses": {"200": ok("Firings", list("Firing")), "default": errors()}}
            },
            "/api/deployments": {
                "get": op("Deployments", None, "200", ok("All", list("Deployment"))),
                "post": op("Create a deployment", Some(body(reference("Deployment"))), "201", ok("Created", reference("Deployment")))
            },
            "/api/deployments/{name}": {
                "parameters": path_param("name"),
                "get": op("One deployment", None, "200", ok("It", reference("Deployment"))),
                "put": op("Create or replace a deployment", Some(body(reference("Deployment"))), "200", ok("Stored", reference("Deployment"))),
                "delete": op("Remove a deployment", None, "204", json!({"description": "Removed"}))
            },
            "/api/deployments/{name}/runs": {
                "parameters": path_param("name"),
                "post": op("Create a run by hand", Some(body(json!({"type": "object", "properties": {"parameters": {"type": "object"}, "priority": {"type": "integer"}}}))), "201", ok("The run", reference("Run")))
            },
            "/api/deployments/{name}/triggers": {
                "parameters": path_param("name"),
                "get": op("The triggers that run this deployment", None, "200", ok("Triggers", list("TriggerRecord"))),
                "put": op("Make these exactly the deployment's triggers (unchanged ones keep their state; others are removed)", Some(body(list("TriggerDefinition"))), "200", ok("What changed", reference("TriggerSync")))
            },
            "/api/runs": {"get": {"summary": "Runs, newest first", "parameters": query(&["deployment", "state", "limit"]), "responses": {"200": ok("Runs", list("Run")), "default": errors()}}},
            "/api/runs/claim": {"post": op("Worker: claim ready runs of its deployments (long-poll), leased to it", Some(body(reference("ClaimRequest"))), "200", ok("Claimed runs with their triggering events", list("ClaimedRun")))},
            "/api/runs/{id}": {"parameters": path_param("id"), "get": op("One run", None, "200", ok("It", reference("Run")))},
            "/api/runs/{id}/heartbeat": {"parameters": path_param("id"), "post": op("Worker: extend the lease; `cancel` says to stop", Some(body(reference("Heartbeat"))), "200", ok("The run and whether to cancel it", reference("HeartbeatReply")))},
            "/api/runs/{id}/complete": {"parameters": path_param("id"), "post": op("Worker: the flow returned (409 when the run is no longer the worker's)", Some(body(reference("Completion"))), "200", ok("The run", reference("Run")))},
            "/api/runs/{id}/fail": {"parameters": path_param("id"), "post": op("Worker: the attempt failed (retried while retries last)", Some(body(reference("FailureReport"))), "200", ok("The run", reference("Run")))},
            "/api/runs/{id}/cancel": {"parameters": path_param("id"), "post": op("Cancel a waiting or running run", None, "200", ok("The run", reference("Run")))},
            "/api/runs/{id}/logs": {
                "parameters": path_param("id"),
                "get": {"summary": "The run's log lines", "parameters": query(&["from", "limit"]), "responses": {"200": ok("A page", json!({"type": "object", "properties": {"lines": list("LogLine"), "next": {"type": "integer"}}})), "default": errors()}},
                "post": op("Append log lines", Some(body(reference("LogBatch"))), "200", ok("How many", json!({"type": "object", "properties": {"appended": {"type": "integer"}}})))
            },
            "/api/filters": {
                "get": {"summary": "Scope filters", "parameters": query(&["deployment", "scope"]), "responses": {"200": ok("Filters", list("ScopeFilter")), "default": errors()}},
                "post": op("Create a scope filter", Some(body(json!({"type": "object", "required": ["deployment", "scope", "expression"],
                    "properties": {"deployment": {"type": "string"}, "scope": {"type": "string"}, "expression": {"type": "string"}, "payload": {"type": "object"}}}))), "201", ok("Created", reference("ScopeFilter")))
            },
            "/api/filters/{id}": {
                "parameters": path_param("id"),
                "get": op("One scope filter", None, "200", ok("It", reference("ScopeFilter"))),
                "delete": op("Remove a scope filter", None, "204", json!({"description": "Removed"}))
            }
        },
        "components": {"schemas": schemas}
    });
    let paths = &mut document["paths"];
    paths["/api/admin/keys"] = json!({
        "get": op("API keys, revoked ones last, without their secrets (admin)", None, "200", ok("All", list("ApiKey"))),
        "post": op("Make an API key (admin); the answer's token is its only showing", Some(body(reference("NewApiKey"))), "201", ok("The key and its token", reference("CreatedApiKey")))
    });
    paths["/api/admin/keys/{name}/revoke"] = json!({"parameters": path_param("name"),
        "post": op("Revoke an API key by name or id (admin), at once", None, "200", ok("The revoked key", reference("ApiKey")))});
    paths["/api/firings"] = json!({"get": {"summary": "Firings, newest first: what fired, when, with which parameters, or why no run was created (`page`: the previous answer's `next_page`)",
        "parameters": query(&["trigger", "since", "until", "limit", "page"]),
        "responses": {"200": ok("A page", json!({"type": "object", "properties": {"firings": list("Firing"), "next_page": {"type": ["integer", "null"]}}})), "default": errors()}}});
    document["components"]["securitySchemes"] = json!({
        "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key (`tw_...`, from `tripwire keys create`); its role decides the routes it reaches"},
        "authString": {"type": "http", "scheme": "basic", "description": "Prefect's auth string (`--auth-string user:pass`): an administrator"}
    });
    document["security"] = json!([{"apiKey": []}, {"authString": []}]);
    document
}

/// An operation that needs no credentials, with auth on too.
fn open(mut operation: Value) -> Value {
    operation["security"] = json!([]);
    operation
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    out.push(r);
                }
                o.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 10);
        for r in all {
            let name =
                r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r} points outside components"));
            assert!(doc["components"]["schemas"].get(name).is_some(), "{r} does not resolve");
        }
    }
}
