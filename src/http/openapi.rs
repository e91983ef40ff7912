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
        "worker-status.json" => "WorkerStatus",
        "backtest-request.json" => "BacktestRequest",
        "backtest.json" => "Backtest",
        "rate-limit-quota.json" => "RateLimitQuota",
        "rate-limit.json" => "RateLimit",
        "rate-limit-status.json" => "RateLimitStatus",
        "stream-batch.json" => "StreamBatch",
        "stream-chunk.json" => "StreamChunk",
        "child-request.json" => "ChildRequest",
        _ => "Unknown",
    }
}

/// Moves every schema and its `$defs` into `components.schemas`, pointing `$ref`s there. A
/// `$defs` name that two files define differently (the input `Event` of `event.json` and the
/// output `Event` inside `claimed-run.json`) gets the file's component name as a prefix.
fn components() -> Map<String, Value> {
    let mut out = Map::new();
    for (file, mut schema) in schema::all() {
        let owner = component(file);
        let defs = match schema.as_object_mut().and_then(|o| o.remove("$defs")) {
            Some(Value::Object(defs)) => defs,
            _ => Map::new(),
        };
        let names: Map<String, Value> = defs
            .iter()
            .map(|(name, def)| {
                let taken = out.get(name).is_some_and(|existing| existing != def) || name == owner && !defs.is_empty();
                let unique = if taken { format!("{owner}{name}") } else { name.clone() };
                (name.clone(), Value::String(unique))
            })
            .collect();
        for (name, mut def) in defs {
            retarget(&mut def, &names);
            if let Some(Value::String(unique)) = names.get(&name) {
                out.insert(unique.clone(), def);
            }
        }
        if let Some(o) = schema.as_object_mut() {
            o.remove("$schema");
        }
        retarget(&mut schema, &names);
        out.insert(owner.to_owned(), schema);
    }
    out
}

fn retarget(value: &mut Value, names: &Map<String, Value>) {
    match value {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get_mut("$ref") {
                if let Some(name) = r.strip_prefix("#/$defs/") {
                    let unique = names.get(name).and_then(Value::as_str).unwrap_or(name);
                    *r = format!("#/components/schemas/{unique}");
                }
            }
            o.values_mut().for_each(|v| retarget(v, names));
        }
        Value::Array(a) => a.iter_mut().for_each(|v| retarget(v, names)),
        _ => {}
    }
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn list(name: &str) -> Value {
    json!({"type": "array", "items": reference(name)})
}

/// What can go wrong, by status: each operation lists those it can answer.
fn error_description(status: u16) -> &'static str {
    match status {
        400 => "The request does not have its documented shape (body, query or path), or its body is not JSON",
        401 => "No valid credentials (when auth is on)",
        403 => "The credentials' role may not do this, or the request came from another site",
        404 => "No such thing",
        408 => "The request took longer than the server's request timeout",
        409 => "It conflicts with what is stored (a name or id taken, a run no longer the worker's)",
        413 => "The body is over the size limit",
        415 => "The body is not `Content-Type: application/json`",
        422 => "The body has its documented shape and breaks a rule a schema cannot state (a compound trigger requiring more children than it has, a template reading a name no firing has, a size in bytes)",
        500 => "The server could not read or write its data",
        503 => "The server is overloaded (see `Retry-After`) or shutting down",
        _ => "An error",
    }
}

/// An operation. `statuses` are the error statuses it can give beyond those every operation
/// can (401, 403, 408, 500, 503).
struct Op {
    summary: &'static str,
    parameters: Vec<Value>,
    body: Option<(Value, bool)>,
    success: (&'static str, Value),
    statuses: Vec<u16>,
    open: bool,
    more: Vec<(&'static str, Value)>,
    links: Vec<(&'static str, &'static str, Value)>,
}

/// A link's target: `(name, path, method, parameter, runtime expression)`.
type Link = (&'static str, &'static str, &'static str, &'static str, &'static str);

impl Op {
    fn new(summary: &'static str, status: &'static str, description: &str, schema: Option<Value>) -> Op {
        let response = match schema {
            Some(schema) => json!({"description": description, "content": {"application/json": {"schema": schema}}}),
            None => json!({"description": description}),
        };
        Op {
            summary,
            parameters: Vec::new(),
            body: None,
            success: (status, response),
            statuses: Vec::new(),
            open: false,
            more: Vec::new(),
            links: Vec::new(),
        }
    }

    /// A JSON body (required or not): 400, 413, 415 and 422 become possible.
    fn body(mut self, schema: Value, required: bool) -> Op {
        self.body = Some((schema, required));
        self.statuses.extend([400, 413, 415, 422]);
        self
    }

    /// Query parameters: 400 becomes possible.
    fn query(mut self, parameters: &[(&str, Value)]) -> Op {
        for (name, schema) in parameters {
            self.parameters.push(json!({"name": name, "in": "query", "required": false, "schema": schema}));
        }
        self.statuses.push(400);
        self
    }

    /// A query parameter that must be given.
    fn required(mut self, name: &str, schema: Value) -> Op {
        self.parameters.push(json!({"name": name, "in": "query", "required": true, "schema": schema}));
        self.statuses.push(400);
        self
    }

    /// Another success status (a PUT that creates answers 201).
    fn also(mut self, status: &'static str, description: &str, schema: Value) -> Op {
        self.more
            .push((status, json!({"description": description, "content": {"application/json": {"schema": schema}}})));
        self
    }

    /// A repeatable query parameter (`?key=a&key=b`).
    fn repeated(mut self, name: &str, description: &str) -> Op {
        self.parameters.push(json!({"name": name, "in": "query", "required": false, "description": description,
            "schema": {"type": "array", "items": {"type": "string"}}, "style": "form", "explode": true}));
        self
    }

    /// OpenAPI links from the answer with `status` to the operations that take what it returns,
    /// so that a stateful test (schemathesis) goes on with a real id.
    fn links(mut self, status: &'static str, links: &[Link]) -> Op {
        for &(name, path, method, parameter, expression) in links {
            let target = format!("#/paths/{}/{method}", path.replace('~', "~0").replace('/', "~1"));
            self.links.push((status, name, json!({"operationRef": target, "parameters": {parameter: expression}})));
        }
        self
    }

    fn errors(mut self, statuses: &[u16]) -> Op {
        self.statuses.extend(statuses);
        self
    }

    /// Needs no credentials, with auth on too (it still refuses other sites: 403).
    fn open(mut self) -> Op {
        self.open = true;
        self
    }

    fn build(self) -> Value {
        let mut responses = Map::new();
        responses.insert(self.success.0.to_owned(), self.success.1);
        for (status, response) in self.more {
            responses.insert(status.to_owned(), response);
        }
        for (status, name, link) in self.links {
            if let Some(response) = responses.get_mut(status) {
                response["links"][name] = link;
            }
        }
        let mut statuses = self.statuses;
        statuses.extend(if self.open { &[403, 408, 500, 503][..] } else { &[401, 403, 408, 500, 503][..] });
        statuses.sort_unstable();
        statuses.dedup();
        for status in statuses {
            responses.insert(
                status.to_string(),
                json!({"description": error_description(status), "content": {"application/json": {"schema": reference("Error")}}}),
            );
        }
        let mut op = json!({"summary": self.summary, "responses": responses});
        if !self.parameters.is_empty() {
            op["parameters"] = Value::Array(self.parameters);
        }
        if let Some((schema, required)) = self.body {
            op["requestBody"] = json!({"required": required, "content": {"application/json": {"schema": schema}}});
        }
        if self.open {
            op["security"] = json!([]);
        }
        op
    }
}

/// A path parameter: a UUID (400 when it is not one), or a name (any text).
fn path(name: &str, schema: Value) -> Value {
    json!([{"name": name, "in": "path", "required": true, "schema": schema}])
}

fn uuid() -> Value {
    json!({"type": "string", "format": "uuid"})
}

fn limit(max: u64) -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": max})
}

/// A page cursor: a number the previous answer gave.
fn cursor() -> Value {
    json!({"type": "integer", "minimum": 0, "maximum": u64::MAX})
}

fn time() -> Value {
    json!({"type": "string", "format": "date-time"})
}

/// Prefect's event filter, as far as tripwire reads it: an unknown member is refused unless it
/// is null (Prefect's clients send unset fields as null).
fn event_filter() -> Value {
    let strings = json!({"type": ["array", "null"], "items": {"type": "string"}});
    let labels = json!({"type": ["object", "null"], "additionalProperties": {"anyOf": [{"type": "string"}, strings]}});
    let only_null = json!({"type": "null"});
    let resource = json!({"type": ["object", "null"], "additionalProperties": only_null,
        "properties": {"id": strings, "id_prefix": strings, "labels": labels, "distinct": {"enum": [false, null]}}});
    let related = json!({"type": "object", "additionalProperties": only_null,
        "properties": {"id": strings, "role": strings, "labels": labels,
            "resources_in_roles": {"type": ["array", "null"], "items": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2}}}});
    let one_or_many =
        |one: &Value| json!({"anyOf": [one, {"type": "array", "items": {"anyOf": [one, only_null]}}, only_null]});
    let any_resource = {
        let mut r = resource.clone();
        r["type"] = json!("object");
        r
    };
    json!({"type": ["object", "null"], "additionalProperties": only_null, "properties": {
        "occurred": {"type": ["object", "null"], "additionalProperties": only_null,
                     "properties": {"since": {"type": ["string", "null"], "format": "date-time"}, "until": {"type": ["string", "null"], "format": "date-time"}}},
        "event": {"type": ["object", "null"], "additionalProperties": only_null,
                  "properties": {"prefix": strings, "name": strings, "exclude_prefix": strings, "exclude_name": strings}},
        "resource": resource,
        "related": one_or_many(&related),
        "any_resource": one_or_many(&any_resource),
        "id": {"type": ["object", "null"], "additionalProperties": only_null,
               "properties": {"id": {"type": ["array", "null"], "items": {"type": "string", "format": "uuid"}}}},
        "order": {"anyOf": [{"type": "string", "pattern": "^([aA][sS][cC]|[dD][eE][sS][cC])$"}, only_null]}
    }})
}

/// The document.
pub fn document() -> Value {
    let mut schemas = components();
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                           "problems": {"type": "array", "items": {"type": "object", "required": ["path", "message"], "properties": {"path": {"type": "string"}, "message": {"type": "string"}}}}}}}}),
    );
    schemas.insert(
        "IngestReport".into(),
        json!({"type": "object", "required": ["ids", "duplicates"], "properties": {"ids": {"type": "array", "items": uuid()},
                                                "duplicates": {"type": "array", "items": uuid()}}}),
    );
    // What the triggers API answers: a definition in its nested form, with the server's
    // bookkeeping.
    let definition = &schemas["TriggerDefinition"]["anyOf"][0]["properties"];
    let mut record_properties = definition.as_object().cloned().unwrap_or_default();
    for (name, schema) in [
        ("created", json!({"type": "string", "format": "date-time"})),
        ("updated", json!({"type": "string", "format": "date-time"})),
        ("error", json!({"type": "string", "description": "Why the server disabled it"})),
        ("warning", json!({"type": "string", "description": "Why it cannot create runs now"})),
        (
            "origin",
            json!({"type": "string", "enum": ["api", "worker"], "description": "Who installed it: the triggers API (and CLI), or a worker serving its deployment"}),
        ),
        (
            "stats",
            json!({"type": "object", "description": "With `?stats=true`: what it does now",
                   "required": ["live_buckets", "firings_last_hour"],
                   "properties": {
                       "live_buckets": {"type": "integer", "minimum": 0, "description": "Live for_each buckets, counted every second"},
                       "firings_last_hour": {"type": "integer", "minimum": 0, "description": "Firings in the hour before the answer"},
                       "firings_partial": {"type": "boolean", "description": "The hour held more firings than one answer reads (100,000): a lower bound"},
                       "last_firing": {"type": "string", "format": "date-time", "description": "Its latest firing's processing time, within the hour"}}}),
        ),
    ] {
        record_properties.insert(name.to_owned(), schema);
    }
    schemas.insert(
        "TriggerRecord".into(),
        json!({"type": "object", "required": ["id", "enabled", "trigger", "created", "updated"], "properties": record_properties}),
    );
    let events_or_one = json!({"oneOf": [reference("Event"), {"type": "array", "items": reference("Event"), "maxItems": super::MAX_BATCH_EVENTS}]});
    let event_page = json!({"type": "object", "required": ["events"], "properties": {"events": list("Event"), "next_page": {"type": ["integer", "string", "null"]}, "total": {"type": "integer"}}});
    let record = Some(reference("TriggerRecord"));
    let deployment_name = json!({"type": "string", "pattern": "^[A-Za-z0-9_.:-]+$"});
    // Server-sent events: `chunk` events (`id` the position, `data` a StreamChunk), then `end`.
    let mut follow_stream = Op::new(
        "Follow the run's stream as server-sent events: every chunk from `from` (or one past `Last-Event-ID`), then live ones, then `end` with the run's state",
        "200",
        "The stream",
        None,
    )
    .query(&[("from", cursor())])
    .errors(&[400, 404])
    .build();
    follow_stream["responses"]["200"]["content"] = json!({"text/event-stream": {"schema": {
        "type": "object",
        "description": "One event: `chunk` (`id`: the chunk's position, `data`: a StreamChunk as JSON), then `end` (`data`: {\"state\", \"next\"}); `closing` when the server stops first, `error` when the stream cannot be read",
        "required": ["data"],
        "properties": {
            "event": {"type": "string", "enum": ["chunk", "end", "closing", "error"]},
            "data": {"type": "string"},
            "id": {"type": "string"}
        }
    }}});
    let trigger_id = json!({"type": "string", "minLength": 1});
    let mut put_deployment = schemas["Deployment"].clone();
    if let Some(required) = put_deployment.get_mut("required").and_then(Value::as_array_mut) {
        required.retain(|r| r != "name");
    }
    put_deployment["description"] = json!(
        "A deployment; `name` may be left out (the URL names it), and must equal the URL's when given (409 otherwise)."
    );
    let new_run = json!({"type": "object", "additionalProperties": false, "properties": {
        "parameters": {"type": ["object", "null"]}, "priority": {"type": ["integer", "null"], "minimum": i32::MIN, "maximum": i32::MAX}}});
    let filter_request = json!({"type": "object", "additionalProperties": false, "properties": {
        "filter": event_filter(), "limit": {"type": ["integer", "null"], "minimum": 1, "maximum": 1000}}});
    let new_filter = json!({"type": "object", "additionalProperties": false, "required": ["deployment", "scope", "expression"],
        "properties": {"deployment": {"type": "string", "minLength": 1}, "scope": {"type": "string", "minLength": 1},
                       "expression": {"type": "string", "minLength": 1}, "payload": {"type": ["object", "null"]}}});
    let paths = json!({
        "/api/health": {"get": Op::new("Health: true while the server can take writes", "200", "Always true", Some(json!({"type": "boolean"}))).open().build()},
        "/api/admin/version": {"get": Op::new("The Prefect API version spoken", "200", "A version string", Some(json!({"type": "string"}))).open().build()},
        "/api/openapi.json": {"get": Op::new("This document", "200", "OpenAPI 3.1", Some(json!({"type": "object"}))).build()},
        "/api/events": {
            "post": Op::new("Accept events (one or an array; durable when answered)", "200", "Ids accepted", Some(reference("IngestReport")))
                .body(events_or_one, true).errors(&[429]).build(),
            "get": Op::new("Events, newest first (`page`: the previous answer's `next_page`)", "200", "A page", Some(event_page.clone()))
                .query(&[("name", json!({"type": "string"})), ("prefix", json!({"type": "string"})), ("resource", json!({"type": "string"})),
                         ("related", json!({"type": "string"})), ("since", time()), ("until", time()), ("limit", limit(1000)),
                         ("page", cursor())]).build()
        },
        "/api/events/filter": {"post": Op::new("Prefect's event filter (an empty body: every event)", "200", "A page", Some(event_page.clone())).body(filter_request, false)
            .links("200", &[("Next", "/api/events/filter/next", "get", "page-token", "$response.body#/next_page")]).build()},
        "/api/events/filter/next": {"get": Op::new("The next page of a filter (403 for a token this server did not issue, as Prefect answers)", "200", "A page", Some(event_page))
            .required("page-token", json!({"type": "string"})).build()},
        "/api/firings": {"get": Op::new("Firings, newest first: what fired, when, with which parameters, or why no run was created (`page`: the previous answer's `next_page`)", "200", "A page",
                Some(json!({"type": "object", "required": ["firings"], "properties": {"firings": list("Firing"), "next_page": {"type": ["integer", "null"]}}})))
            .query(&[("trigger", json!({"type": "string"})), ("since", time()), ("until", time()), ("limit", limit(1000)), ("page", cursor())]).build()},
        "/api/triggers": {
            "get": Op::new("Trigger definitions (`stats=true`: with each one's live buckets and firings in the last hour)", "200", "All", Some(list("TriggerRecord")))
                .query(&[("stats", json!({"type": "boolean"}))]).build(),
            "post": Op::new("Create a definition", "201", "The stored definition", record.clone()).body(reference("TriggerDefinition"), true).errors(&[409])
                .links("201", &[("Show", "/api/triggers/{id}", "get", "id", "$response.body#/id"),
                                ("Buckets", "/api/triggers/{id}/buckets", "get", "id", "$response.body#/id"),
                                ("Firings", "/api/triggers/{id}/firings", "get", "id", "$response.body#/id"),
                                ("Enable", "/api/triggers/{id}", "patch", "id", "$response.body#/id"),
                                ("Delete", "/api/triggers/{id}", "delete", "id", "$response.body#/id")]).build()
        },
        "/api/triggers/{id}": {
            "parameters": path("id", trigger_id.clone()),
            "get": Op::new("One definition", "200", "The stored definition", record.clone()).errors(&[404]).build(),
            "put": Op::new("Replace (200) or create (201) a definition; a body `id` other than the URL's is a conflict (409)", "200", "The stored definition", record.clone())
                .also("201", "Created", reference("TriggerRecord")).body(reference("TriggerDefinition"), true).errors(&[409]).build(),
            "patch": Op::new("Enable or disable", "200", "The stored definition", record.clone())
                .body(json!({"type": "object", "additionalProperties": false, "required": ["enabled"], "properties": {"enabled": {"type": "boolean"}}}), true).errors(&[404]).build(),
            "delete": Op::new("Remove a definition and its state", "204", "Removed", None).errors(&[404]).build()
        },
        "/api/triggers/{id}/buckets": {
            "parameters": path("id", trigger_id.clone()),
            "get": Op::new("A page of live buckets: why did or didn't it fire?", "200", "Buckets", Some(json!({"type": "object"})))
                .repeated("key", "A bucket's value, once per `for_each` label in label order")
                .query(&[("limit", limit(1000)), ("after", json!({"type": "string", "pattern": "^[0-9]{1,18}:", "description": "The previous page's `next`"}))])
                .errors(&[404]).build()
        },
        "/api/triggers/{id}/firings": {
            "parameters": path("id", trigger_id.clone()),
            "get": Op::new("Latest firings, newest first, each with the error that kept it from creating a run", "200", "Firings", Some(list("Firing")))
                .query(&[("limit", limit(1000))]).errors(&[404]).build()
        },
        "/api/deployments": {
            "get": Op::new("Deployments", "200", "All", Some(list("Deployment"))).build(),
            "post": Op::new("Create a deployment", "201", "Created", Some(reference("Deployment"))).body(reference("Deployment"), true).errors(&[409])
                .links("201", &[("Show", "/api/deployments/{name}", "get", "name", "$response.body#/name"),
                                ("CreateRun", "/api/deployments/{name}/runs", "post", "name", "$response.body#/name"),
                                ("Triggers", "/api/deployments/{name}/triggers", "put", "name", "$response.body#/name")]).build()
        },
        "/api/deployments/{name}": {
            "parameters": path("name", deployment_name.clone()),
            "get": Op::new("One deployment", "200", "It", Some(reference("Deployment"))).errors(&[400, 404]).build(),
            "put": Op::new("Replace (200) or create (201) a deployment; a body `name` other than the URL's is a conflict (409)", "200", "Stored", Some(reference("Deployment")))
                .also("201", "Created", reference("Deployment")).body(put_deployment, true).errors(&[409]).build(),
            "delete": Op::new("Remove a deployment", "204", "Removed", None).errors(&[400, 404]).build()
        },
        "/api/deployments/{name}/runs": {
            "parameters": path("name", deployment_name.clone()),
            "post": Op::new("Create a run by hand (an empty body: no parameters)", "201", "The run", Some(reference("Run"))).body(new_run, false).errors(&[404, 409])
                .links("201", &[("Show", "/api/runs/{id}", "get", "id", "$response.body#/id"),
                                ("Cancel", "/api/runs/{id}/cancel", "post", "id", "$response.body#/id"),
                                ("Heartbeat", "/api/runs/{id}/heartbeat", "post", "id", "$response.body#/id"),
                                ("Complete", "/api/runs/{id}/complete", "post", "id", "$response.body#/id"),
                                ("Fail", "/api/runs/{id}/fail", "post", "id", "$response.body#/id"),
                                ("Logs", "/api/runs/{id}/logs", "get", "id", "$response.body#/id")]).build()
        },
        "/api/deployments/{name}/triggers": {
            "parameters": path("name", deployment_name),
            "get": Op::new("The triggers that run this deployment", "200", "Triggers", Some(list("TriggerRecord"))).errors(&[400, 404]).build(),
            "put": Op::new("Make these exactly the deployment's triggers (unchanged ones keep their state; others are removed)", "200", "What changed", Some(reference("TriggerSync")))
                .body(list("TriggerDefinition"), true).errors(&[404, 409]).build()
        },
        "/api/rate-limits": {
            "get": Op::new("Rate limits: every static key and every dynamic key with an open window, with what is used and left", "200", "Keys", Some(list("RateLimitStatus"))).build()
        },
        "/api/rate-limits/{key}": {
            "parameters": path("key", json!({"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[A-Za-z0-9_.:-]+$"})),
            "put": Op::new("Create (201) or change (200) a static rate limit; a quota below the units a deployment takes per run is refused (422)", "200", "Stored", Some(reference("RateLimit")))
                .also("201", "Created", reference("RateLimit")).body(reference("RateLimitQuota"), true).build(),
            "delete": Op::new("Remove a static rate limit (409 while a deployment takes units from it)", "204", "Removed", None).errors(&[404, 409]).build()
        },
        "/api/runs": {"get": Op::new("Runs, newest first", "200", "Runs", Some(list("Run")))
            .query(&[("deployment", json!({"type": "string"})), ("state", json!({"type": "string", "enum": ["Scheduled", "Running", "Completed", "Failed", "Cancelled"]})), ("limit", limit(1000))]).build()},
        "/api/runs/claim": {"post": Op::new("Worker: claim ready runs of its deployments (long-poll), leased to it", "200", "Claimed runs with their triggering events", Some(list("ClaimedRun")))
            .body(reference("ClaimRequest"), true)
            .links("200", &[("Heartbeat", "/api/runs/{id}/heartbeat", "post", "id", "$response.body#/0/run/id"),
                            ("Complete", "/api/runs/{id}/complete", "post", "id", "$response.body#/0/run/id"),
                            ("Fail", "/api/runs/{id}/fail", "post", "id", "$response.body#/0/run/id"),
                            ("AppendLogs", "/api/runs/{id}/logs", "post", "id", "$response.body#/0/run/id")]).build()},
        "/api/runs/{id}": {"parameters": path("id", uuid()), "get": Op::new("One run", "200", "It", Some(reference("Run"))).errors(&[400, 404]).build()},
        "/api/runs/{id}/heartbeat": {"parameters": path("id", uuid()), "post": Op::new("Worker: extend the lease; `cancel` says to stop", "200", "The run and whether to cancel it", Some(reference("HeartbeatReply")))
            .body(reference("Heartbeat"), true).errors(&[404, 409]).build()},
        "/api/runs/{id}/complete": {"parameters": path("id", uuid()), "post": Op::new("Worker: the flow returned (409 when the run is no longer the worker's)", "200", "The run", Some(reference("Run")))
            .body(reference("Completion"), true).errors(&[404, 409]).build()},
        "/api/runs/{id}/fail": {"parameters": path("id", uuid()), "post": Op::new("Worker: the attempt failed (retried while retries last)", "200", "The run", Some(reference("Run")))
            .body(reference("FailureReport"), true).errors(&[404, 409]).build()},
        "/api/runs/{id}/cancel": {"parameters": path("id", uuid()), "post": Op::new("Cancel a waiting or running run", "200", "The run", Some(reference("Run"))).errors(&[400, 404, 409]).build()},
        "/api/runs/{id}/stream": {
            "parameters": path("id", uuid()),
            "get": follow_stream,
            "post": Op::new("Worker: append chunks to a running run's stream (409 once it has ended)", "200", "How many", Some(json!({"type": "object", "properties": {"appended": {"type": "integer"}}})))
                .body(reference("StreamBatch"), true).errors(&[404, 409]).build()
        },
        "/api/runs/{id}/children": {
            "parameters": path("id", uuid()),
            "get": Op::new("The child runs this run spawned, by key (every attempt's)", "200", "Runs", Some(list("Run"))).errors(&[400, 404]).build(),
            "post": Op::new("Worker: a child run of the run it holds (`ctx.spawn`); 201 when made now, 200 when its key named it before (a retried parent finds its children)", "201", "The child", Some(reference("Run")))
                .also("200", "Made before under this key", reference("Run"))
                .body(reference("ChildRequest"), true).errors(&[404, 409, 422]).build()
        },
        "/api/runs/{id}/logs": {
            "parameters": path("id", uuid()),
            "get": Op::new("The run's log lines (`from`: the previous page's `next`)", "200", "A page",
                    Some(json!({"type": "object", "required": ["lines"], "properties": {"lines": list("LogLine"), "next": {"type": ["integer", "null"]}}})))
                .query(&[("from", cursor()), ("limit", limit(1000))]).errors(&[404]).build(),
            "post": Op::new("Append log lines", "200", "How many", Some(json!({"type": "object", "properties": {"appended": {"type": "integer"}}})))
                .body(reference("LogBatch"), true).errors(&[404, 409]).build()
        },
        "/api/backtest": {
            "get": Op::new("Backtests kept (running, and ended in the last hour), newest first", "200", "All", Some(list("Backtest"))).build(),
            "post": Op::new("Try definitions (drafts, or an installed one with changes) over the stored events in the background; 503 while two run", "202", "Started: follow it at /api/backtest/{id}", Some(reference("Backtest")))
                .body(reference("BacktestRequest"), true).errors(&[404])
                .links("202", &[("Show", "/api/backtest/{id}", "get", "id", "$response.body#/id"),
                                ("Firings", "/api/backtest/{id}/firings", "get", "id", "$response.body#/id"),
                                ("Cancel", "/api/backtest/{id}", "delete", "id", "$response.body#/id")]).build()
        },
        "/api/backtest/{id}": {
            "parameters": path("id", uuid()),
            "get": Op::new("A backtest: progress, then what it found", "200", "It", Some(reference("Backtest"))).errors(&[400, 404]).build(),
            "delete": Op::new("Cancel a running backtest (what it found is kept)", "200", "It", Some(reference("Backtest"))).errors(&[400, 404]).build()
        },
        "/api/backtest/{id}/firings": {
            "parameters": path("id", uuid()),
            "get": Op::new("What would have fired, in order (`from`: the previous page's `next`)", "200", "A page",
                    Some(json!({"type": "object", "required": ["firings"], "properties": {"firings": list("Firing"), "next": {"type": "integer"}}})))
                .query(&[("from", cursor()), ("limit", limit(1000))]).errors(&[404]).build()
        },
        "/api/backtest/{id}/buckets": {
            "parameters": path("id", uuid()),
            "get": Op::new("A tried definition's buckets at the end: why the rest would not have fired (409 while it runs)", "200", "Buckets", Some(json!({"type": "object"})))
                .required("trigger", json!({"type": "string"}))
                .repeated("key", "A bucket's value, once per `for_each` label in label order")
                .query(&[("limit", limit(1000)), ("after", json!({"type": "string", "pattern": "^[0-9]{1,18}:", "description": "The previous page's `next`"}))])
                .errors(&[404, 409]).build()
        },
        "/api/workers": {"get": Op::new("Workers heard from in the last hour, online first: what each serves, its slots, the runs it holds", "200", "Workers", Some(list("WorkerStatus"))).build()},
        "/api/filters": {
            "get": Op::new("Scope filters", "200", "Filters", Some(list("ScopeFilter"))).query(&[("deployment", json!({"type": "string"})), ("scope", json!({"type": "string"}))]).build(),
            "post": Op::new("Create a scope filter", "201", "Created", Some(reference("ScopeFilter"))).body(new_filter, true).errors(&[404, 409])
                .links("201", &[("Show", "/api/filters/{id}", "get", "id", "$response.body#/id"),
                                ("Delete", "/api/filters/{id}", "delete", "id", "$response.body#/id")]).build()
        },
        "/api/filters/{id}": {
            "parameters": path("id", uuid()),
            "get": Op::new("One scope filter", "200", "It", Some(reference("ScopeFilter"))).errors(&[400, 404]).build(),
            "delete": Op::new("Remove a scope filter", "204", "Removed", None).errors(&[400, 404]).build()
        },
        "/api/admin/keys": {
            "get": Op::new("API keys, revoked ones last, without their secrets (admin)", "200", "All", Some(list("ApiKey"))).build(),
            "post": Op::new("Make an API key (admin); the answer's token is its only showing", "201", "The key and its token", Some(reference("CreatedApiKey")))
                .body(reference("NewApiKey"), true).errors(&[409]).build()
        },
        "/api/admin/keys/{name}/revoke": {"parameters": path("name", json!({"type": "string", "minLength": 1})),
            "post": Op::new("Revoke an API key by name or id (admin), at once", "200", "The revoked key", Some(reference("ApiKey"))).errors(&[404, 409]).build()}
    });
    let mut document = json!({
        "openapi": "3.1.0",
        "info": {"title": "tripwire", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Stateful sequence triggers with Prefect's semantics. Every error answers `{\"error\": {\"code\", \"message\", \"problems\"?}}`; a method a path does not take answers 405 with `Allow`, an unknown path 404. WebSockets: /api/events/in (Prefect's emit_event protocol) and /api/events/out (subscriptions). Metrics: GET /metrics (Prometheus)."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": schemas}
    });
    document["components"]["securitySchemes"] = json!({
        "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key (`tw_...`, from `tripwire keys create`); its role decides the routes it reaches"},
        "authString": {"type": "http", "scheme": "basic", "description": "Prefect's auth string (`--auth-string user:pass`): an administrator"}
    });
    document["security"] = json!([{"apiKey": []}, {"authString": []}]);
    document
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
