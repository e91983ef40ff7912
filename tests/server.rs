//! The real `tripwire serve` binary on an ephemeral port with a temporary data dir: every
//! route, the bad input each one gets, the seed's order example, and a restart.

mod common;

use common::{order_trigger, temp_dir, Http, Server};
use reqwest::Method;
use serde_json::{json, Value};

async fn runs(http: &Http) -> Vec<Value> {
    let (status, body) = http.get("/runs").await;
    assert_eq!(status, 200);
    body.as_array().unwrap().clone()
}

#[tokio::test]
async fn the_order_example_over_http_gives_one_run_for_user_123() {
    let data = temp_dir("order");
    let server = Server::start(&data);
    let http = Http::new(&server.api);
    assert_eq!(http.post("/deployments", json!({"name": "post-order-complete"})).await.0, 201);
    assert_eq!(http.post("/triggers", order_trigger()).await.0, 201);
    let emit = |name: &str, user: &str| json!({"event": name, "resource": {"prefect.resource.id": user}});
    assert_eq!(http.post("/events", json!([emit("order.created", "123"), emit("order.created", "456")])).await.0, 200);
    assert_eq!(http.post("/events", emit("order.complete", "123")).await.0, 200);
    let runs = runs(&http).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["parameters"], json!({"user_id": "123"}));
    assert_eq!(runs[0]["state"], "Scheduled");
    assert_eq!(runs[0]["cause"]["trigger"], "post-order");
    assert_eq!(runs[0]["cause"]["bucket"], json!({"prefect.resource.id": "123"}));
    let id = runs[0]["id"].as_str().unwrap();
    let (status, run) = http.get(&format!("/runs/{id}")).await;
    assert_eq!((status, &run["id"]), (200, &runs[0]["id"]));
    // User 456's window is still open: the buckets view says so.
    let (status, buckets) = http.get("/triggers/post-order/buckets").await;
    assert_eq!(status, 200);
    assert_eq!(buckets["buckets"].as_array().unwrap().len(), 1);
    assert_eq!(buckets["buckets"][0]["labels"], json!({"prefect.resource.id": "456"}));
    let b = &buckets["buckets"][0];
    assert_eq!(
        (b["count"].as_i64(), b["threshold"].as_i64(), b["posture"].as_str()),
        (Some(0), Some(1), Some("Reactive"))
    );
    assert_eq!(b["phase"], "open", "within 0: the window counts order.complete until the sweep");
    assert!(b["sweep_at"].is_string());
    let seen = b["events"].as_array().unwrap();
    assert_eq!(seen.len(), 1, "{b}");
    assert_eq!(
        (seen[0]["event"].as_str(), seen[0]["opens"].as_bool(), seen[0]["counts"].as_bool()),
        (Some("order.created"), Some(true), Some(false))
    );
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn the_buckets_view_shows_a_compound_triggers_progress() {
    let data = temp_dir("compound-progress");
    let server = Server::start(&data);
    let http = Http::new(&server.api);
    let both = json!({"id": "both", "trigger": {"type": "compound", "require": "all", "within": 60,
        "triggers": [{"expect": ["a"]}, {"expect": ["b"]}]}});
    assert_eq!(http.put("/triggers/both", both).await.0, 201);
    let (_, page) = http.get("/triggers/both/buckets").await;
    let c = &page["composites"][0];
    assert_eq!(
        (&c["node"], &c["kind"], &c["required"], &c["within"]),
        (&json!(0), &json!("compound"), &json!(2), &json!(60.0))
    );
    assert_eq!(
        (&c["counting"], &c["children"]),
        (&json!(0), &json!([{"node": 1, "fired": null}, {"node": 2, "fired": null}]))
    );

    let event = |name: &str| json!({"event": name, "resource": {"prefect.resource.id": "x"}});
    assert_eq!(http.post("/events", event("a")).await.0, 200);
    let (_, page) = http.get("/triggers/both/buckets").await;
    let c = &page["composites"][0];
    assert_eq!(c["counting"], 1, "{page}");
    let a = &c["children"][0];
    assert!(a["fired"].is_string() && a["counts_until"].is_string() && a["expired"] == false, "{page}");
    assert_eq!((a["events"].as_array().map(Vec::len), &c["children"][1]["fired"]), (Some(1), &Value::Null));

    // The second child completes it: the firing is recorded and the progress starts over.
    assert_eq!(http.post("/events", event("b")).await.0, 200);
    let (_, firings) = http.get("/triggers/both/firings").await;
    assert_eq!(firings.as_array().map(Vec::len), Some(1), "{firings}");
    let (_, page) = http.get("/triggers/both/buckets").await;
    assert_eq!(page["composites"][0]["counting"], 0, "{page}");
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn events_routes_accept_deduplicate_filter_and_page() {
    let data = temp_dir("events");
    let server = Server::start(&data);
    let http = Http::new(&server.api);
    assert_eq!(http.get("/health").await, (200, json!(true)));
    assert_eq!(http.get("/admin/version").await.1.as_str().unwrap().split('.').next(), Some("3"));

    let id = "00000000-0000-0000-0000-0000000000aa";
    let event = json!({"id": id, "occurred": "2026-01-01T00:00:00Z", "event": "order.created",
                       "resource": {"prefect.resource.id": "order.1"},
                       "related": [{"prefect.resource.id": "customer.9", "prefect.resource.role": "customer"}]});
    let (status, body) = http.post("/events", event.clone()).await;
    assert_eq!((status, body), (200, json!({"ids": [id], "duplicates": []})));
    let (status, body) = http.post("/events", json!([event])).await;
    assert_eq!(
        (status, body),
        (200, json!({"ids": [id], "duplicates": [id]})),
        "seen before: acknowledged, not processed again"
    );
    for i in 0..5 {
        http.post("/events", json!({"event": format!("job.{}", if i % 2 == 0 { "started" } else { "done" }), "resource": {"prefect.resource.id": format!("job.{i}")}})).await;
    }
    let (_, page) = http.get("/events?limit=2").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    assert_eq!(page["events"][0]["resource"]["prefect.resource.id"], "job.4", "newest first");
    let next = page["next_page"].as_u64().unwrap();
    let (_, page2) = http.get(&format!("/events?limit=2&page={next}")).await;
    assert_eq!(page2["events"][0]["resource"]["prefect.resource.id"], "job.2");
    let (_, started) = http.get("/events?name=job.started").await;
    assert_eq!(started["events"].as_array().unwrap().len(), 3);
    let (_, prefixed) = http.get("/events?prefix=job.").await;
    assert_eq!(prefixed["events"].as_array().unwrap().len(), 5);
    let (_, by_related) = http.get("/events?related=customer.9").await;
    assert_eq!(by_related["events"][0]["id"], id);
    let (_, by_resource) = http.get("/events?resource=job.1").await;
    assert_eq!(by_resource["events"].as_array().unwrap().len(), 1);
    let (_, ranged) = http.get("/events?until=2026-01-02T00:00:00Z").await;
    assert_eq!(ranged["events"].as_array().unwrap().len(), 1);
    assert!(ranged["events"][0]["received"].is_string(), "stored events carry `received`");

    // Prefect's filter endpoints: a page, a total, and a next-page URL to GET.
    let (status, page) =
        http.post("/events/filter", json!({"filter": {"event": {"prefix": ["job."]}}, "limit": 2})).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!((page["events"].as_array().unwrap().len(), page["total"].as_u64()), (2, Some(5)));
    let next = page["next_page"].as_str().unwrap();
    assert!(next.starts_with("http://") && next.contains("/api/events/filter/next?page-token="), "{next}");
    let resp = reqwest::get(next).await.unwrap();
    assert_eq!(resp.status(), 200);
    let page2: Value = resp.json().await.unwrap();
    assert_eq!(page2["events"][0]["resource"]["prefect.resource.id"], "job.2");
    let (_, asc) =
        http.post("/events/filter", json!({"filter": {"event": {"name": ["job.started"]}, "order": "ASC"}})).await;
    let ids: Vec<&str> = asc["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["prefect.resource.id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["job.0", "job.2", "job.4"]);
    let (_, related) = http.post("/events/filter", json!({"filter": {"related": {"role": ["customer"]}}})).await;
    assert_eq!(related["total"], 1);
    let (status, body) = http
        .post("/events/filter", json!({"filter": {"event": {"prefix": "job."}, "order": "sideways"}, "limit": 0}))
        .await;
    assert_eq!(status, 400);
    let paths: Vec<&str> =
        body["error"]["problems"].as_array().unwrap().iter().map(|p| p["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["$.filter.event.prefix", "$.filter.order", "$.limit"]);
    assert_eq!(http.get("/events/filter/next?page-token=zz").await.0, 403, "as Prefect answers");

    // Bad input, each with a JSON error naming what to fix.
    let (status, body) = http.send(Method::POST, "/events", Some("{\"event\": ".into())).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("malformed_json")));
    let (status, body) = http.post("/events", json!({"event": "x", "resource": {}})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["problems"][0]["path"], "$.resource");
    assert!(body["error"]["message"].as_str().unwrap().contains("prefect.resource.id"));
    // One bad event rejects the whole batch: the good one before it is not stored.
    let good =
        json!({"id": "00000000-0000-0000-0000-0000000000bb", "event": "x", "resource": {"prefect.resource.id": "r"}});
    let (status, body) =
        http.post("/events", json!([good, {"event": 5, "resource": {"prefect.resource.id": "r"}}])).await;
    assert_eq!((status, body["error"]["problems"][0]["path"].as_str()), (400, Some("$[1].event")));
    let (_, found) = http.get("/events?name=x").await;
    assert!(found["events"].as_array().unwrap().is_empty());
    let (status, body) = http.raw_post("/events", vec![b' '; 1024 * 1024 + 1024]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("body_too_large")));
    let too_many: Vec<Value> =
        (0..10_001).map(|_| json!({"event": "y", "resource": {"prefect.resource.id": "r"}})).collect();
    let (status, body) = http.post("/events", Value::Array(too_many)).await;
    assert!(status == 400 || status == 413, "{status} {body}");
    let (status, body) = http.get("/events?since=yesterday").await;
    assert_eq!((status, body["error"]["problems"][0]["path"].as_str()), (400, Some("$.since")));
    let (status, body) = http.get("/nowhere").await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("no_route")));
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn trigger_routes_create_upsert_list_patch_delete_and_reject_bad_definitions() {
    let data = temp_dir("triggers");
    let server = Server::start(&data);
    let http = Http::new(&server.api);
    let def = json!({"id": "signup", "trigger": {"expect": ["user:signup"]}});
    assert_eq!(http.post("/triggers", def.clone()).await.0, 201);
    let (status, body) = http.post("/triggers", def.clone()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")));
    let (status, body) = http
        .put("/triggers/signup", json!({"trigger": {"expect": ["user:signup"], "threshold": 2, "within": 60}}))
        .await;
    assert_eq!(
        (status, &body["trigger"]["threshold"]),
        (200, &json!(2)),
        "PUT replaces (upsert), taking the id from the URL"
    );
    assert_eq!(http.put("/triggers/other", json!({"trigger": {}})).await.0, 201);
    let (_, list) = http.get("/triggers").await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    let (status, one) = http.get("/triggers/signup").await;
    assert_eq!((status, one["enabled"].as_bool()), (200, Some(true)));
    let (status, patched) = http.patch("/triggers/signup", json!({"enabled": false})).await;
    assert_eq!((status, patched["enabled"].as_bool()), (200, Some(false)));
    let (status, body) = http.patch("/triggers/signup", json!({"enabled": "no", "name": "x"})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["problems"].as_array().unwrap().len(), 2);
    assert_eq!(http.delete("/triggers/signup").await.0, 204);
    assert_eq!(http.get("/triggers/signup").await.0, 404);
    assert_eq!(http.delete("/triggers/signup").await.0, 404);
    assert_eq!(http.get("/triggers/signup/buckets").await.0, 404);

    let (status, body) = http
        .post(
            "/triggers",
            json!({"id": "bad", "trigger": {"expect": ["x"], "colour": "red", "posture": "Proactive", "within": 3}}),
        )
        .await;
    assert_eq!(status, 400);
    let paths: Vec<&str> =
        body["error"]["problems"].as_array().unwrap().iter().map(|p| p["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["$.trigger.within", "$.trigger.colour"]);
    let (status, body) =
        http.post("/triggers", json!({"id": "tpl", "trigger": {}, "parameters": {"x": "{{ event.id "}})).await;
    assert_eq!((status, body["error"]["problems"][0]["path"].as_str()), (422, Some("$.parameters.x")));
    let (status, body) = http.put("/triggers/a", json!({"id": "b", "trigger": {}})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("id_mismatch")));
    let (status, body) = http.send(Method::POST, "/triggers", Some("[1,".into())).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("malformed_json")));
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn deployment_and_run_routes() {
    let data = temp_dir("deployments");
    let server = Server::start(&data);
    let http = Http::new(&server.api);
    let (status, d) = http
        .post("/deployments", json!({"name": "report", "parameters": {"format": "pdf", "pages": 1}, "retries": 2}))
        .await;
    assert_eq!((status, d["retries"].as_u64()), (201, Some(2)));
    assert_eq!(http.post("/deployments", json!({"name": "report"})).await.0, 409);
    assert_eq!(
        http.put("/deployments/report", json!({"parameters": {"format": "pdf", "pages": 1}, "timeout_seconds": 30}))
            .await
            .0,
        200
    );
    assert_eq!(http.put("/deployments/other", json!({})).await.0, 201);
    assert_eq!(http.get("/deployments").await.1.as_array().unwrap().len(), 2);
    assert_eq!(http.get("/deployments/report").await.1["timeout_seconds"], 30.0);
    let (status, run) = http.post("/deployments/report/runs", json!({"parameters": {"pages": 3}})).await;
    assert_eq!(status, 201);
    assert_eq!(run["parameters"], json!({"format": "pdf", "pages": 3}), "run parameters merge over the defaults");
    assert_eq!(run["state"], "Scheduled");
    assert_eq!(http.send(Method::POST, "/deployments/other/runs", None).await.0, 201, "a run without a body");
    assert_eq!(http.get("/runs?deployment=report").await.1.as_array().unwrap().len(), 1);
    assert_eq!(http.get("/runs?state=scheduled").await.1.as_array().unwrap().len(), 2);
    assert_eq!(http.get("/runs?state=Completed").await.1.as_array().unwrap().len(), 0);

    let (status, body) = http.get("/runs?state=Sleeping").await;
    assert_eq!((status, body["error"]["problems"][0]["path"].as_str()), (400, Some("$.state")));
    assert_eq!(http.get("/runs/not-a-uuid").await.0, 400);
    assert_eq!(http.get("/runs/00000000-0000-0000-0000-000000000000").await.0, 404);
    assert_eq!(http.post("/deployments/missing/runs", json!({})).await.0, 404);
    let (status, body) = http.post("/deployments/report/runs", json!({"parameters": [1], "extra": 1})).await;
    assert_eq!((status, body["error"]["problems"].as_array().unwrap().len()), (400, 2));
    let (status, body) = http.post("/deployments", json!({"name": "has space", "retries": "many"})).await;
    assert_eq!((status, body["error"]["problems"].as_array().unwrap().len()), (400, 2));
    assert_eq!(http.delete("/deployments/other").await.0, 204);
    assert_eq!(http.delete("/deployments/other").await.0, 404);
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn state_survives_a_restart_and_windows_stay_open() {
    let data = temp_dir("restart");
    let server = Server::start(&data);
    let http = Http::new(&server.api);
    http.post("/deployments", json!({"name": "post-order-complete"})).await;
    let mut trigger = order_trigger();
    trigger["trigger"]["within"] = json!(3600);
    http.post("/triggers", trigger).await;
    http.post("/events", json!({"event": "order.created", "resource": {"prefect.resource.id": "123"}})).await;
    assert!(server.terminate(), "SIGTERM shuts down cleanly");

    let server = Server::start(&data);
    let http = Http::new(&server.api);
    assert_eq!(http.get("/triggers").await.1.as_array().unwrap().len(), 1);
    http.post("/events", json!({"event": "order.complete", "resource": {"prefect.resource.id": "123"}})).await;
    let runs = runs(&http).await;
    assert_eq!(runs.len(), 1, "the window opened before the restart is still open");
    assert_eq!(runs[0]["parameters"]["user_id"], "123");
    server.kill();

    // After SIGKILL (no snapshot), the log replays to the same state: nothing fires twice.
    let server = Server::start(&data);
    let http = Http::new(&server.api);
    assert_eq!(self::runs(&http).await.len(), 1);
    http.post("/events", json!({"event": "order.complete", "resource": {"prefect.resource.id": "123"}})).await;
    assert_eq!(self::runs(&http).await.len(), 1, "the window was consumed by the first firing");
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn scope_filters_gate_single_key_triggers_once_per_matching_filter() {
    let data = temp_dir("filters");
    let server = Server::start(&data);
    let http = Http::new(&server.api);
    for name in ["send-welcome-email", "reward-referral"] {
        assert_eq!(http.post("/deployments", json!({"name": name})).await.0, 201);
        let trigger = json!({"id": name, "trigger": {"expect": ["user:signup"]}, "deployment": name,
                             "parameters": {"user": "{{ event.resource.id }}", "bonus": "{{ filter.bonus }}"}});
        assert_eq!(http.post("/triggers", trigger).await.0, 201);
    }
    let (status, f1) = http
        .post("/filters", json!({"deployment": "reward-referral", "scope": "referrals", "expression": "input.referred_by != none and payload.min <= input.amount", "payload": {"bonus": 10, "min": 0}}))
        .await;
    assert_eq!(status, 201, "{f1}");
    let (status, _) = http
        .post("/filters", json!({"deployment": "reward-referral", "scope": "referrals", "expression": "additional_metadata.source == 'partner'", "payload": {"bonus": 50}}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(http.get("/filters?deployment=reward-referral").await.1.as_array().unwrap().len(), 2);
    let (status, one) = http.get(&format!("/filters/{}", f1["id"].as_str().unwrap())).await;
    assert_eq!((status, &one["scope"]), (200, &json!("referrals")));

    // Without a scope, filters do not apply: both triggers run.
    http.post("/events", json!({"event": "user:signup", "resource": {"prefect.resource.id": "u1"}, "payload": {}}))
        .await;
    assert_eq!(runs(&http).await.len(), 2);
    // With the scope, only filters of that scope let it through, once per matching filter.
    http.post("/events", json!({"event": "user:signup", "resource": {"prefect.resource.id": "u2"}, "scope": "referrals",
                                "payload": {"referred_by": "u1", "amount": 5}, "additional_metadata": {"source": "partner"}})).await;
    let all = runs(&http).await;
    let u2: Vec<&Value> = all.iter().filter(|r| r["parameters"]["user"] == "u2").collect();
    assert_eq!(u2.len(), 2, "{u2:?}");
    let mut bonuses: Vec<i64> = u2.iter().map(|r| r["parameters"]["bonus"].as_i64().unwrap()).collect();
    bonuses.sort();
    assert_eq!(bonuses, [10, 50]);
    assert!(u2.iter().all(|r| r["deployment"] == "reward-referral"));
    // A scoped event no filter matches runs nothing.
    http.post(
        "/events",
        json!({"event": "user:signup", "resource": {"prefect.resource.id": "u3"}, "scope": "referrals", "payload": {}}),
    )
    .await;
    assert_eq!(runs(&http).await.len(), 4);

    let (status, body) = http.post("/filters", json!({"deployment": "nope", "scope": "s", "expression": "true"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    let (status, body) =
        http.post("/filters", json!({"deployment": "reward-referral", "scope": "s", "expression": "input.x >"})).await;
    assert_eq!((status, body["error"]["problems"][0]["path"].as_str()), (422, Some("$.expression")));
    let (status, body) = http.post("/filters", json!({"scope": 1, "extra": true})).await;
    assert_eq!((status, body["error"]["problems"].as_array().unwrap().len()), (400, 4));
    let (status, body) =
        http.post("/events", json!({"event": "x", "resource": {"prefect.resource.id": "r"}, "scope": 5})).await;
    assert_eq!((status, body["error"]["problems"][0]["path"].as_str()), (400, Some("$.scope")));
    assert_eq!(http.delete(&format!("/filters/{}", f1["id"].as_str().unwrap())).await.0, 204);
    assert_eq!(http.delete(&format!("/filters/{}", f1["id"].as_str().unwrap())).await.0, 404);
    assert_eq!(http.get("/filters/not-a-uuid").await.0, 400);
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let data = temp_dir("openapi");
    let server = Server::start(&data);
    let http = Http::new(&server.api);
    let (status, doc) = http.get("/openapi.json").await;
    assert_eq!((status, doc["openapi"].as_str()), (200, Some("3.1.0")));
    for path in [
        "/api/events",
        "/api/events/filter",
        "/api/events/filter/next",
        "/api/triggers",
        "/api/triggers/{id}",
        "/api/triggers/{id}/buckets",
        "/api/triggers/{id}/firings",
        "/api/deployments",
        "/api/deployments/{name}",
        "/api/deployments/{name}/runs",
        "/api/deployments/{name}/triggers",
        "/api/runs",
        "/api/runs/claim",
        "/api/runs/{id}",
        "/api/runs/{id}/heartbeat",
        "/api/runs/{id}/complete",
        "/api/runs/{id}/fail",
        "/api/runs/{id}/cancel",
        "/api/runs/{id}/logs",
        "/api/filters",
        "/api/filters/{id}",
        "/api/workers",
        "/api/backtest",
        "/api/backtest/{id}",
        "/api/backtest/{id}/firings",
        "/api/backtest/{id}/buckets",
        "/api/health",
        "/api/admin/version",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    for component in ["TriggerDefinition", "ClaimRequest", "HeartbeatReply", "TriggerSync", "LogBatch", "WorkerStatus"]
    {
        assert!(doc["components"]["schemas"][component].is_object(), "{component} missing");
    }
    // Every link leads to an operation of the document, naming one of its parameters.
    let mut links = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap().iter().filter(|(_, op)| op.get("responses").is_some()) {
            for (status, response) in op["responses"].as_object().unwrap() {
                for (name, link) in response.get("links").and_then(Value::as_object).into_iter().flatten() {
                    let at = format!("{method} {path} {status} link {name}");
                    let target = doc.pointer(link["operationRef"].as_str().unwrap().trim_start_matches('#'));
                    let target =
                        target.unwrap_or_else(|| panic!("{at}: {} is not in the document", link["operationRef"]));
                    // The operation's own parameters, and those of its path.
                    let target_path =
                        link["operationRef"].as_str().unwrap().split('/').nth(2).unwrap().replace("~1", "/");
                    let parameters: Vec<&Value> = [&target["parameters"], &doc["paths"][&target_path]["parameters"]]
                        .into_iter()
                        .filter_map(Value::as_array)
                        .flatten()
                        .collect();
                    for parameter in link["parameters"].as_object().unwrap().keys() {
                        assert!(parameters.iter().any(|p| p["name"] == *parameter), "{at}: no `{parameter}`");
                    }
                    links += 1;
                }
            }
        }
    }
    assert!(links >= 20, "the creating answers link to what takes their ids: {links}");
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn every_refusal_is_json_with_the_status_the_document_gives() {
    let data = temp_dir("refusals");
    let server = Server::start(&data);
    let http = Http::new(&server.api);
    let code = |body: &serde_json::Value| body["error"]["code"].as_str().unwrap_or_default().to_owned();

    // A method the path does not take: 405, JSON, and the methods it does take.
    let resp = reqwest::Client::new().delete(format!("{}/health", server.api)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let allow = resp.headers().get("allow").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(allow.contains("GET"), "Allow: {allow}");
    let body: serde_json::Value = resp.json().await.expect("a JSON body");
    assert_eq!(code(&body), "method_not_allowed", "{body}");

    // The shape is wrong: 400. The shape is right and a rule no schema states is broken: 422.
    let (status, body) = http.post("/triggers", json!({"id": "t", "trigger": {"threshold": "many"}})).await;
    assert_eq!((status, code(&body).as_str()), (400, "invalid"), "{body}");
    let two_of_one = json!({"id": "t", "trigger": {"type": "compound", "require": 2, "triggers": [{"expect": ["a"]}]}});
    let (status, body) = http.post("/triggers", two_of_one).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["problems"][0]["path"] == "$.trigger.require", "{body}");
    // Both at once: the shape decides.
    let both = json!({"id": "t", "trigger": {"type": "compound", "require": 2, "triggers": [{"threshold": "x"}]}});
    assert_eq!(http.post("/triggers", both).await.0, 400);

    // A whole number may be written with a fraction of zero, as JSON Schema's integer allows.
    let (status, body) =
        http.post("/triggers", json!({"id": "eight", "trigger": {"expect": ["a"], "threshold": 8.0}})).await;
    assert_eq!((status, body["trigger"]["threshold"].as_i64()), (201, Some(8)), "{body}");

    // A body naming another thing than its URL conflicts with it.
    let (status, body) = http.put("/triggers/eight", json!({"id": "nine", "trigger": {"expect": ["a"]}})).await;
    assert_eq!((status, code(&body).as_str()), (409, "id_mismatch"), "{body}");
    let (status, body) = http.put("/deployments/a", json!({"name": "b"})).await;
    assert_eq!((status, code(&body).as_str()), (409, "name_mismatch"), "{body}");
    assert_eq!(http.put("/deployments/a", json!({})).await.0, 201, "the URL names it");

    // A page token this server did not issue: 403, as Prefect answers.
    let (status, body) = http.get("/events/filter/next?page-token=bm90LWEtdG9rZW4").await;
    assert_eq!((status, code(&body).as_str()), (403, "bad_page_token"), "{body}");
    // A query value out of range: 400 naming it.
    let (status, body) = http.get("/events?limit=0").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("limit"), "{body}");

    // The document lists each of these statuses for its operation, with the error body.
    let (_, doc) = http.get("/openapi.json").await;
    for (path, method, status) in [
        ("/api/triggers", "post", "400"),
        ("/api/triggers", "post", "422"),
        ("/api/triggers/{id}", "put", "409"),
        ("/api/triggers/{id}", "put", "201"),
        ("/api/deployments/{name}", "put", "409"),
        ("/api/events/filter/next", "get", "403"),
        ("/api/events", "get", "400"),
    ] {
        let response = &doc["paths"][path][method]["responses"][status];
        assert!(response.is_object(), "{method} {path} does not document {status}");
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap().iter().filter(|(m, _)| *m != "parameters") {
            let responses = op["responses"].as_object().unwrap();
            assert!(!responses.contains_key("default"), "{method} {path}: every status is named");
            for (status, response) in responses.iter().filter(|(s, _)| s.starts_with('4') || s.starts_with('5')) {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Error",
                    "{method} {path} {status}"
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&data);
}
