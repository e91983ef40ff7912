//! Access control against the real binary: each role's routes, 401 and 403, revocation (of
//! the next request and of open WebSockets), keys on disk, cross-origin requests, media types,
//! and the refusal to listen on a reachable address with auth off.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;
use common::{temp_dir, Server};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_tripwire");

fn tripwire(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env_remove("TRIPWIRE_API_KEY").env("NO_COLOR", "1").output().unwrap()
}

/// Makes a key on a data directory no server has open, as an operator bootstraps one.
fn make_key(data: &Path, role: &str, name: &str) -> String {
    let out = tripwire(&["keys", "create", "--role", role, "--name", name, "--data", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("tw_"), "{token}");
    token
}

/// Sends a request with optional `Authorization`; returns the status and JSON body.
async fn call(api: &str, auth: Option<&str>, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method, format!("{api}{path}"));
    if let Some(auth) = auth {
        request = request.header("Authorization", auth);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// Which role may: `E`mit, worker (`S`erve), `R`ead, admin only (`M`anage).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Need {
    E,
    S,
    R,
    M,
}

fn allowed(role: &str, need: Need) -> bool {
    match role {
        "admin" => true,
        "emit" => need == Need::E,
        "worker" => matches!(need, Need::E | Need::S),
        "read" => need == Need::R,
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_role_reaches_its_routes_and_gets_403_for_the_rest() {
    let data = temp_dir("access-roles");
    let admin = make_key(&data, "admin", "ops");
    let keys: Vec<(&str, String)> = ["emit", "worker", "read"]
        .into_iter()
        .map(|role| (role, make_key(&data, role, &format!("{role}-key"))))
        .chain([("admin", admin.clone())])
        .collect();
    let server = Server::start(&data);
    let api = &server.api;
    let (status, body) = call(api, Some(&bearer(&admin)), Method::PUT, "/deployments/greet", Some(json!({}))).await;
    assert_eq!(status, 201, "{body}");
    let run = Method::POST;
    let no_run = "/runs/00000000-0000-0000-0000-000000000001";
    let event = json!({"event": "user.signup", "resource": {"prefect.resource.id": "ada"}});
    let trigger = json!({"id": "t", "trigger": {"expect": ["user.signup"]}, "deployment": "greet"});
    let claim = json!({"worker": "w", "deployments": ["greet"], "wait_seconds": 0});
    let heartbeat = json!({"worker": "w"});
    let routes: Vec<(Method, String, Option<Value>, Need)> = vec![
        (Method::POST, "/events".into(), Some(event), Need::E),
        (Method::GET, "/events".into(), None, Need::R),
        (Method::POST, "/events/filter".into(), Some(json!({"filter": {}})), Need::R),
        (Method::GET, "/triggers".into(), None, Need::R),
        (Method::GET, "/deployments".into(), None, Need::R),
        (Method::GET, "/runs".into(), None, Need::R),
        (Method::GET, "/filters".into(), None, Need::R),
        (Method::GET, "/openapi.json".into(), None, Need::R),
        (Method::POST, "/backtest".into(), Some(json!({"definitions": [{"id": "b", "trigger": {}}]})), Need::R),
        (Method::PUT, "/deployments/greet".into(), Some(json!({})), Need::S),
        (Method::PUT, "/deployments/greet/triggers".into(), Some(json!([])), Need::S),
        (Method::POST, "/runs/claim".into(), Some(claim), Need::S),
        (run.clone(), format!("{no_run}/heartbeat"), Some(heartbeat), Need::S),
        (run.clone(), format!("{no_run}/cancel"), Some(json!({})), Need::M),
        (Method::PUT, "/triggers/t".into(), Some(trigger), Need::M),
        (Method::PATCH, "/triggers/t".into(), Some(json!({"enabled": true})), Need::M),
        (Method::POST, "/deployments/greet/runs".into(), Some(json!({})), Need::M),
        (Method::DELETE, "/deployments/nothing".into(), None, Need::M),
        (Method::GET, "/admin/keys".into(), None, Need::M),
    ];
    for (role, key) in &keys {
        for (method, path, body, need) in &routes {
            let (status, answer) = call(api, Some(&bearer(key)), method.clone(), path, body.clone()).await;
            let what = format!("{role} {method} {path}: {status} {answer}");
            if allowed(role, *need) {
                assert!(![401, 403].contains(&status) && status < 500, "allowed: {what}");
            } else {
                assert_eq!(status, 403, "refused: {what}");
                assert_eq!(answer["error"]["code"], "forbidden", "{what}");
                let message = answer["error"]["message"].as_str().unwrap();
                assert!(
                    message.contains(&format!("the `{role}` key `{role}-key`")) && message.contains("role"),
                    "{what}"
                );
            }
        }
    }
    // Health and the version Prefect's client reads are open; the rest needs credentials.
    for path in ["/health", "/admin/version"] {
        assert_eq!(call(api, None, Method::GET, path, None).await.0, 200, "{path}");
    }
    for (method, path, body, _) in &routes {
        let (status, answer) = call(api, None, method.clone(), path, body.clone()).await;
        assert_eq!(status, 401, "{method} {path} without credentials: {answer}");
        assert_eq!(answer["error"]["code"], "unauthorized");
        assert!(answer["error"]["message"].as_str().unwrap().contains("TRIPWIRE_API_KEY"), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_wrong_and_malformed_credentials_get_401_naming_the_credential_and_never_echoing_it() {
    let data = temp_dir("access-401");
    let admin = make_key(&data, "admin", "ops");
    let server = Server::start_with(&data, &["--auth-string", "alice:s3cret"]);
    let api = &server.api;
    let basic = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
    let mut wrong = admin.clone();
    wrong.replace_range(wrong.len() - 4.., "AAAA");
    let cases = [
        (bearer(&wrong), "not one of this server's keys"),
        (bearer("tw_0123456789ab_notarealsecretatall"), "not one of this server's keys"),
        (bearer("pnu_prefect_cloud_key"), "not one of this server's keys"),
        (basic("alice:wrong"), "auth string offered is not this server's"),
        ("Basic !!!".to_owned(), "is not `Bearer <API key>` or `Basic"),
        ("Token abc".to_owned(), "is not `Bearer <API key>` or `Basic"),
    ];
    for (header, says) in cases {
        let (status, answer) = call(api, Some(&header), Method::GET, "/triggers", None).await;
        assert_eq!(status, 401, "{header}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{header}: {message}");
        let secret = header.split(' ').nth(1).unwrap();
        assert!(!message.contains(secret), "the credential is echoed: {message}");
    }
    // A scheme with nothing after it (a script whose key variable is empty) is no credential.
    for header in ["Bearer ", "Bearer", "basic "] {
        let (status, answer) = call(api, Some(header), Method::GET, "/triggers", None).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (401, Some("unauthorized")), "{header:?}: {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains("requires credentials"), "{header:?}: {answer}");
    }
    // The auth string is an administrator; the admin key too.
    assert_eq!(call(api, Some(&basic("alice:s3cret")), Method::GET, "/admin/keys", None).await.0, 200);
    assert_eq!(call(api, Some(&bearer(&admin)), Method::GET, "/admin/keys", None).await.0, 200);
    // The CLI says which credential is missing, and is admitted with it.
    let out = tripwire(&["triggers", "list", "--api", api]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sent no API key") && stderr.contains("TRIPWIRE_API_KEY"), "{stderr}");
    let out =
        Command::new(BIN).args(["triggers", "list", "--api", api]).env("TRIPWIRE_API_KEY", &admin).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = tripwire(&["triggers", "list", "--api", api, "--api-key", &wrong]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(1) && stderr.contains("not one of this server's keys"), "{stderr}");
    assert!(!stderr.contains(&wrong), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_auth_off_credentials_are_not_read_and_the_first_key_must_be_an_admin_key() {
    let data = temp_dir("access-off");
    let server = Server::start(&data);
    let api = &server.api;
    // The README's curl alias with TRIPWIRE_API_KEY unset sends `Bearer ` and nothing else.
    for header in ["Bearer ", "Bearer tw_not_a_key", "Token abc", "Basic !!!"] {
        assert_eq!(call(api, Some(header), Method::GET, "/triggers", None).await.0, 200, "{header}");
    }
    // A first key of any other role would turn auth on and leave nobody able to manage keys.
    let (status, answer) =
        call(api, None, Method::POST, "/admin/keys", Some(json!({"name": "checkout", "role": "emit"}))).await;
    assert_eq!(status, 422, "{answer}");
    let problem = &answer["error"]["problems"][0];
    assert_eq!(problem["path"], "$.role", "{answer}");
    assert!(problem["message"].as_str().unwrap().contains("the first key must be an `admin` key"), "{answer}");
    assert_eq!(call(api, None, Method::GET, "/triggers", None).await.0, 200, "auth is still off");
    let (status, created) =
        call(api, None, Method::POST, "/admin/keys", Some(json!({"name": "ops", "role": "admin"}))).await;
    assert_eq!(status, 201, "{created}");
    let admin = created["token"].as_str().unwrap().to_owned();
    let said = |server: &Server| server.logs().iter().any(|l| l.contains("auth is on from now"));
    for _ in 0..100 {
        if said(&server) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(said(&server), "the server says so: {:?}", server.logs());
    // Now auth is on: no key, 401 (and a refused request of events is counted as refused);
    // the admin makes the emit key.
    let event = json!({"event": "x", "resource": {"prefect.resource.id": "1"}});
    assert_eq!(call(api, None, Method::POST, "/events", Some(event)).await.0, 401);
    let (_, metrics) = call(&api.replace("/api", ""), Some(&bearer(&admin)), Method::GET, "/metrics", None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(metrics.contains("tripwire_events_rejected_total{reason=\"unauthorized\"} 1"), "{metrics}");
    let (status, _) = call(
        api,
        Some(&bearer(&admin)),
        Method::POST,
        "/admin/keys",
        Some(json!({"name": "checkout", "role": "emit"})),
    )
    .await;
    assert_eq!(status, 201);
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket at `path`, with `Authorization` and the `prefect` subprotocol as asked.
async fn socket(server: &Server, path: &str, auth: Option<&str>, prefect: bool) -> Result<Socket, u16> {
    let mut request = format!("ws://{}/api{path}", server.addr()).into_client_request().unwrap();
    if let Some(auth) = auth {
        request.headers_mut().insert("Authorization", HeaderValue::from_str(auth).unwrap());
    }
    if prefect {
        request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("prefect"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

/// The next text message, or the close frame's code and reason.
async fn next(socket: &mut Socket) -> Result<Value, (CloseCode, String)> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.expect("an answer in time");
        match message {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(text.as_str()).unwrap()),
            Some(Ok(Message::Close(Some(frame)))) => return Err((frame.code, frame.reason.to_string())),
            Some(Ok(_)) => continue,
            other => panic!("the socket ended without a close frame: {other:?}"),
        }
    }
}

async fn auth_message(socket: &mut Socket, token: Option<&str>) -> Result<Value, (CloseCode, String)> {
    socket.send(Message::text(json!({"type": "auth", "token": token}).to_string())).await.unwrap();
    next(socket).await
}

#[tokio::test(flavor = "multi_thread")]
async fn websockets_check_the_token_and_a_revoked_key_is_cut_off_at_once() {
    let data = temp_dir("access-ws");
    let admin = make_key(&data, "admin", "ops");
    let emit = make_key(&data, "emit", "producer");
    let read = make_key(&data, "read", "watcher");
    let worker = make_key(&data, "worker", "w");
    let server = Server::start(&data);
    let api = &server.api;

    // Without credentials, a socket is refused at the upgrade unless it will authenticate with
    // Prefect's first message; then the token decides.
    assert_eq!(socket(&server, "/events/in", None, false).await.err(), Some(401));
    assert_eq!(socket(&server, "/events/in", Some(&bearer("tw_00_x")), true).await.err(), Some(401));
    let mut anonymous = socket(&server, "/events/in", None, true).await.unwrap();
    let (code, reason) = auth_message(&mut anonymous, None).await.unwrap_err();
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("requires credentials"), "{reason}");
    let mut wrong = socket(&server, "/events/in", None, true).await.unwrap();
    let (code, reason) = auth_message(&mut wrong, Some("tw_0123456789ab_nope")).await.unwrap_err();
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("not one of this server's keys"), "{reason}");
    let mut reader_emitting = socket(&server, "/events/in", None, true).await.unwrap();
    let (code, reason) = auth_message(&mut reader_emitting, Some(&read)).await.unwrap_err();
    assert!(code == CloseCode::Policy && reason.contains("the `read` key `watcher` may not"), "{reason}");
    assert_eq!(socket(&server, "/events/out", Some(&bearer(&emit)), false).await.err(), Some(403));
    // Only the event sockets may put authentication off until their first message: any other
    // route asked for with the same upgrade headers still needs credentials.
    for path in ["/triggers", "/admin/keys", "/events"] {
        assert_eq!(socket(&server, path, None, true).await.err(), Some(401), "{path}");
    }

    // The emitter authenticates with its key as the token (as Prefect's client sends its auth
    // string); the watcher with `Authorization`, as the Rust client does.
    let mut producer = socket(&server, "/events/in", None, true).await.unwrap();
    assert_eq!(auth_message(&mut producer, Some(&emit)).await.unwrap(), json!({"type": "auth_success"}));
    let event = json!({"id": "00000000-0000-0000-0000-0000000000e1", "event": "a",
                       "resource": {"prefect.resource.id": "x"}});
    producer.send(Message::text(event.to_string())).await.unwrap();
    let subscriber = tripwire::client::Client::new(api).unwrap().with_api_key(&read);
    let mut subscription = subscriber.subscribe(&json!({}), true).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), subscription.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.event, "a");

    // A worker waiting in a long poll for runs of a deployment that has none.
    let (status, _) = call(api, Some(&bearer(&worker)), Method::PUT, "/deployments/idle", Some(json!({}))).await;
    assert_eq!(status, 201);
    let claim = json!({"worker": "w", "deployments": ["idle"], "wait_seconds": 60});
    let waiting = tokio::spawn({
        let (api, worker) = (api.clone(), worker.clone());
        async move { call(&api, Some(&bearer(&worker)), Method::POST, "/runs/claim", Some(claim)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Revoked through the API: the next request fails, both sockets are closed with 1008, and
    // the long poll ends.
    let out = Command::new(BIN).args(["keys", "revoke", "w", "--api", api]).env("TRIPWIRE_API_KEY", &admin).output();
    assert!(out.unwrap().status.success());
    let (status, answer) = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap();
    assert_eq!(status, 401, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("`w` was revoked"), "{answer}");
    let out =
        Command::new(BIN).args(["keys", "revoke", "producer", "--api", api]).env("TRIPWIRE_API_KEY", &admin).output();
    assert!(out.unwrap().status.success());
    let out =
        Command::new(BIN).args(["keys", "revoke", "watcher", "--api", api]).env("TRIPWIRE_API_KEY", &admin).output();
    assert!(out.unwrap().status.success());
    let (code, reason) = next(&mut producer).await.unwrap_err();
    assert!(code == CloseCode::Policy && reason.contains("revoked"), "{reason}");
    let closed = tokio::time::timeout(Duration::from_secs(10), subscription.next()).await.unwrap();
    match closed {
        Some(Err(tripwire::client::ClientError::Api { status: 1008, message, .. })) => {
            assert!(message.contains("revoked"), "{message}")
        }
        other => panic!("the subscription goes on after its key was revoked: {other:?}"),
    }
    let event = json!({"event": "a", "resource": {"prefect.resource.id": "x"}});
    let (status, answer) = call(api, Some(&bearer(&emit)), Method::POST, "/events", Some(event)).await;
    assert_eq!(status, 401);
    assert!(answer["error"]["message"].as_str().unwrap().contains("the API key `producer` was revoked"), "{answer}");
    let listed = tripwire(&["keys", "list", "--json", "--api", api, "--api-key", &admin]);
    let listed: Vec<Value> =
        String::from_utf8(listed.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let producer_key = listed.iter().find(|k| k["name"] == "producer").unwrap();
    assert!(producer_key["revoked"].is_string() && producer_key["last_used"].is_string(), "{producer_key}");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_stored_only_as_digests() {
    let data = temp_dir("access-disk");
    let offline = make_key(&data, "admin", "ops");
    let server = Server::start(&data);
    let admin = bearer(&offline);
    let make = |role: &str| {
        let body = json!({"name": "w", "role": role});
        call(&server.api, Some(&admin), Method::POST, "/admin/keys", Some(body))
    };
    let (status, made) = make("worker").await;
    assert_eq!(status, 201, "{made}");
    let online = made["token"].as_str().unwrap().to_owned();
    let (status, again) = make("read").await;
    assert_eq!(status, 409, "a second live key with the name: {again}");
    let (_, listed) = call(&server.api, Some(&bearer(&online)), Method::GET, "/runs", None).await;
    assert!(listed.is_object(), "a worker may not read runs: {listed}");
    let (_, listed) = call(&server.api, Some(&bearer(&offline)), Method::GET, "/admin/keys", None).await;
    assert!(!listed.to_string().contains("tw_"), "listing shows no token: {listed}");
    assert!(server.terminate());
    let file = std::fs::read(data.join("tripwire.redb")).unwrap();
    for token in [&offline, &online] {
        // `tw_<id>_<secret>`: the secret is URL-safe base64, which may itself hold `_`.
        let secret = token.splitn(3, '_').nth(2).unwrap();
        for needle in [token.as_str(), secret] {
            assert!(!file.windows(needle.len()).any(|w| w == needle.as_bytes()), "`{needle}` is stored in clear");
        }
    }
    // The ids, which are no secret, are there: the records were written.
    let id = offline.split('_').nth(1).unwrap();
    assert!(file.windows(id.len()).any(|w| w == id.as_bytes()));
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_origin_and_non_json_requests_are_refused() {
    let data = temp_dir("access-origin");
    let server = Server::start_with(&data, &["--cors-origin", "https://dash.example.com"]);
    let client = reqwest::Client::new();
    let trigger = json!({"id": "t", "trigger": {"expect": ["a"]}, "deployment": "d"}).to_string();
    let post = |origin: Option<&str>, content_type: &str| {
        let mut request =
            client.put(format!("{}/triggers/t", server.api)).header("content-type", content_type).body(trigger.clone());
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        request.send()
    };
    // A page elsewhere posting text/plain (no preflight), with auth off: refused.
    let response = post(Some("https://evil.example"), "text/plain").await.unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "cross_origin", "{body}");
    // So is a page on a name that resolves here (DNS rebinding) while auth is off.
    let rebound = format!("http://rebound.example:{}", server.addr().rsplit(':').next().unwrap());
    let response = client
        .put(format!("{}/triggers/t", server.api))
        .header("Origin", &rebound)
        .header("Host", rebound.trim_start_matches("http://"))
        .header("content-type", "application/json")
        .body(trigger.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // Without an Origin (not a browser), text/plain and no Content-Type are 415.
    let response = post(None, "text/plain").await.unwrap();
    assert_eq!(response.status(), 415);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("Content-Type: application/json"), "{body}");
    let response = client.post(format!("{}/events", server.api)).body("{}").send().await.unwrap();
    assert_eq!(response.status(), 415);
    let (status, triggers) = call(&server.api, None, Method::GET, "/triggers", None).await;
    assert_eq!((status, triggers), (200, json!([])), "nothing was created");
    // The server's own pages, and the allowed origin with CORS answers.
    let own = format!("http://{}", server.addr());
    assert_eq!(post(Some(&own), "application/json").await.unwrap().status(), 201);
    let response = post(Some("https://dash.example.com"), "application/json; charset=utf-8").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "https://dash.example.com");
    let preflight = client
        .request(Method::OPTIONS, format!("{}/triggers/t", server.api))
        .header("Origin", "https://dash.example.com")
        .header("Access-Control-Request-Method", "PUT")
        .header("Access-Control-Request-Headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert!(preflight.headers()["access-control-allow-headers"].to_str().unwrap().contains("authorization"));
    // WebSocket upgrades check the origin too.
    let mut request = format!("ws://{}/api/events/in", server.addr()).into_client_request().unwrap();
    request.headers_mut().insert("Origin", HeaderValue::from_static("https://evil.example"));
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("a cross-origin upgrade was accepted: {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_reachable_address_is_refused_with_auth_off_unless_told_insecure() {
    let data = temp_dir("access-bind");
    let out = tripwire(&["serve", "--addr", "0.0.0.0:0", "--data", data.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 with auth off") && stderr.contains("--insecure"),
        "{stderr}"
    );
    for settings in [&["--insecure"][..], &["--auth-string", "a:b"][..]] {
        let server = Server::launch_on(&data, "0.0.0.0:0", settings);
        assert!(server.terminate(), "{settings:?}");
    }
    make_key(&data, "read", "dashboard");
    let server = Server::launch_on(&data, "0.0.0.0:0", &[]);
    assert!(server.terminate());
}
