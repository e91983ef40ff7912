//! The edges of recovery, on the in-process service with a manual clock. A crash is a drop of
//! the service without a shutdown (as after `kill -9`). Each scenario runs
//! twice, uninterrupted and with crashes, and what a user sees (firings, runs, stored events)
//! must be the same, besides what each test asserts outright.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tripwire::model::{
    ClaimRequest, Deployment, Event, Firing, JsonPath, Resource, Run, Span, Timestamp, TriggerDefinition,
};
use tripwire::service::clock::ManualClock;
use tripwire::service::{Service, ServiceConfig};
use uuid::Uuid;

fn t0() -> Timestamp {
    Timestamp::parse("2026-01-01T00:00:00Z").unwrap()
}

fn at(secs: i64) -> Timestamp {
    t0().plus(Span::seconds(secs))
}

fn ev(n: u128, name: &str, resource: &str, occurred: Timestamp) -> Event {
    Event::new(Uuid::from_u128(n), occurred, name, Resource::new(resource))
}

fn definition(value: Value) -> TriggerDefinition {
    TriggerDefinition::from_json(&value, &JsonPath::root()).unwrap()
}

/// A service on a data dir and a manual clock, which a test can crash and start again.
struct Rig {
    config: ServiceConfig,
    clock: ManualClock,
    service: Option<Service>,
    /// Whether [`Rig::crash`] crashes (false: the uninterrupted run).
    crashes: bool,
    _data: common::TempDir,
}

impl Rig {
    async fn start(tag: &str, crashes: bool, configure: impl FnOnce(&mut ServiceConfig)) -> Rig {
        let data = common::temp_dir(&format!("recovery-{tag}-{crashes}"));
        let clock = ManualClock::new(t0());
        let mut config = ServiceConfig::new(&*data);
        config.clock = Arc::new(clock.clone());
        configure(&mut config);
        let service = Service::start(config.clone()).await.unwrap();
        Rig { config, clock, service: Some(service), crashes, _data: data }
    }

    fn service(&self) -> &Service {
        self.service.as_ref().expect("running")
    }

    /// Drops the service without a shutdown, lets `meanwhile` act while it is down (e.g. move
    /// the clock), and starts it again on the same data. Without crashes only `meanwhile` runs.
    async fn crash(&mut self, meanwhile: impl FnOnce(&ManualClock)) {
        if !self.crashes {
            meanwhile(&self.clock);
            return;
        }
        drop(self.service.take());
        meanwhile(&self.clock);
        // A dropped service lets go of its database when its core notices.
        for _ in 0..250 {
            match Service::start(self.config.clone()).await {
                Ok(s) => {
                    self.service = Some(s);
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        panic!("the data does not open again");
    }

    /// A clean stop and a start again, in both runs.
    async fn stop_and_start(&mut self) {
        let service = self.service.take().expect("running");
        service.shutdown().await;
        drop(service);
        self.service = Some(Service::start(self.config.clone()).await.unwrap());
    }

    async fn firings(&self) -> Vec<Firing> {
        let mut f = self.service().recent_firings(100_000).await.unwrap();
        f.sort_by_key(|f| (f.trigger.clone(), f.at, f.triggering_event, f.id));
        f
    }

    async fn runs(&self) -> Vec<Run> {
        let mut r = self.service().runs(100_000, |_| true).await.unwrap();
        r.sort_by_key(|r| r.id);
        r
    }

    async fn finish(self) {
        self.service().shutdown().await;
    }
}

/// What a user sees of a firing.
fn shown(f: &Firing) -> Value {
    json!([f.id, f.trigger, f.bucket, f.at, f.triggering_event, f.parameters, f.error])
}

/// What a user sees of a run.
fn shown_run(r: &Run) -> Value {
    json!([r.id, r.deployment, r.state, r.attempt, r.worker, r.lease_expires, r.finished, r.parameters])
}

/// No firing is stored twice: each (trigger, bucket, at, triggering event) once.
fn assert_no_repeats(firings: &[Firing]) {
    let mut seen = BTreeSet::new();
    for f in firings {
        let key = json!([f.trigger, f.bucket, f.at, f.triggering_event]).to_string();
        assert!(seen.insert(key.clone()), "fired twice: {key}");
    }
}

/// Runs `scenario` uninterrupted and with crashes; both must show the same firings and runs.
macro_rules! both_ways {
    ($scenario:ident) => {{
        let (plain_firings, plain_runs) = $scenario(false).await;
        let (crashed_firings, crashed_runs) = $scenario(true).await;
        assert_eq!(
            crashed_firings.iter().map(shown).collect::<Vec<_>>(),
            plain_firings.iter().map(shown).collect::<Vec<_>>(),
            "the firings with crashes differ from the uninterrupted run's"
        );
        assert_eq!(
            crashed_runs.iter().map(shown_run).collect::<Vec<_>>(),
            plain_runs.iter().map(shown_run).collect::<Vec<_>>(),
            "the runs with crashes differ from the uninterrupted run's"
        );
        plain_firings
    }};
}

/// Events a live bucket (a sequence's first step, a proactive window's `after`) still refers
/// to are pruned by retention while the service runs; it crashes and the buckets fire and
/// render as without the crash. `clean_stop`: the service is also stopped and started cleanly
/// before the pruning. (Recovery once replayed a log of events, whose pruned entries it skipped,
/// losing the buckets they had opened; the state is now stored as it changes.)
async fn retention_scenario(crashes: bool, clean_stop: bool) -> (Vec<Firing>, Vec<Run>) {
    let tag = if clean_stop { "retention-stop" } else { "retention" };
    let mut rig = Rig::start(tag, crashes, |c| c.retention = Span::seconds(3600)).await;
    let s = rig.service();
    s.put_trigger(
        definition(json!({"id": "seq", "trigger": {"type": "sequence", "within": 7200,
                                  "triggers": [{"expect": ["a"]}, {"expect": ["b"]}]},
                          "parameters": {"names": "{{ events | map(attribute='event') | join(',') }}",
                                         "ids": "{{ events | map(attribute='id') | join(',') }}"}})),
        false,
    )
    .await
    .unwrap();
    s.put_trigger(
        definition(
            json!({"id": "quiet", "trigger": {"posture": "Proactive", "after": ["start"], "expect": ["heartbeat"],
                                    "for_each": ["prefect.resource.id"], "within": 7200},
                          "parameters": {"started_by": "{{ event.id }}", "name": "{{ event.event }}"}}),
        ),
        false,
    )
    .await
    .unwrap();
    s.ingest(vec![ev(1, "a", "order-1", t0()), ev(2, "start", "job-1", t0())]).await.unwrap();
    if clean_stop {
        rig.stop_and_start().await;
    }
    rig.clock.set(at(3700));
    rig.service().tick().await.unwrap();
    assert!(rig.service().event(Uuid::from_u128(1)).await.unwrap().is_none(), "received 3700 s ago: pruned");
    rig.crash(|_| {}).await;
    rig.service().ingest(vec![ev(3, "b", "order-1", at(3700))]).await.unwrap();
    rig.clock.set(at(7300));
    rig.service().tick().await.unwrap();
    rig.crash(|_| {}).await;
    rig.service().tick().await.unwrap();
    let (firings, runs) = (rig.firings().await, rig.runs().await);
    rig.finish().await;
    (firings, runs)
}

/// What both retention tests assert of their firings.
fn assert_retention_firings(firings: &[Firing]) {
    assert_no_repeats(firings);
    let fired: Vec<&str> = firings.iter().map(|f| f.trigger.as_str()).collect();
    assert_eq!(fired, ["quiet", "seq"], "the sequence completes after the crash, the proactive window closes once");
    assert_eq!(firings[1].triggering_event, Some(Uuid::from_u128(3)));
    assert_eq!(firings[0].at, at(7200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_pruning_an_event_a_bucket_still_needs_changes_nothing_across_a_clean_stop_and_a_crash() {
    let stopped = |crashes| retention_scenario(crashes, true);
    let firings = both_ways!(stopped);
    assert_retention_firings(&firings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_pruning_an_event_a_bucket_still_needs_changes_nothing_across_a_crash() {
    let crashed = |crashes| retention_scenario(crashes, false);
    let firings = both_ways!(crashed);
    assert_retention_firings(&firings);
}

/// Triggers replaced (same tree: state kept; new tree: state reset), disabled, re-enabled and
/// deleted after a clean stop and before a crash: recovery reads them as changed.
async fn trigger_change_scenario(crashes: bool) -> (Vec<Firing>, Vec<Run>) {
    let mut rig = Rig::start("changes", crashes, |_| {}).await;
    let pair = |id: &str, within: u64, tag: &str| {
        definition(json!({"id": id, "trigger": {"after": [format!("{id}.a")], "expect": [format!("{id}.b")],
                                                "for_each": ["prefect.resource.id"], "within": within},
                          "parameters": {"tag": tag, "key": "{{ event.resource.id }}"}}))
    };
    let ids = ["same-tree", "new-tree", "disabled", "reenabled", "deleted", "recreated"];
    for id in ids {
        rig.service().put_trigger(pair(id, 3600, "v1"), false).await.unwrap();
    }
    let a: Vec<Event> =
        ids.iter().enumerate().map(|(i, id)| ev(i as u128 + 1, &format!("{id}.a"), "k", t0())).collect();
    rig.service().ingest(a).await.unwrap();
    rig.stop_and_start().await;
    rig.clock.set(at(10));
    let s = rig.service();
    s.put_trigger(pair("same-tree", 3600, "v2"), false).await.unwrap();
    s.put_trigger(pair("new-tree", 1800, "v2"), false).await.unwrap();
    s.set_trigger_enabled("disabled".into(), false).await.unwrap();
    s.set_trigger_enabled("reenabled".into(), false).await.unwrap();
    s.set_trigger_enabled("reenabled".into(), true).await.unwrap();
    s.delete_trigger("deleted".into()).await.unwrap();
    s.delete_trigger("recreated".into()).await.unwrap();
    s.put_trigger(pair("recreated", 3600, "v2"), false).await.unwrap();
    rig.crash(|c| c.set(at(20))).await;
    let b: Vec<Event> =
        ids.iter().enumerate().map(|(i, id)| ev(i as u128 + 11, &format!("{id}.b"), "k", at(20))).collect();
    rig.service().ingest(b).await.unwrap();
    rig.crash(|_| {}).await;
    let (firings, runs) = (rig.firings().await, rig.runs().await);
    rig.finish().await;
    (firings, runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_changed_between_a_clean_stop_and_a_crash_recover_as_changed() {
    let firings = both_ways!(trigger_change_scenario);
    assert_no_repeats(&firings);
    let fired: Vec<(&str, Value)> =
        firings.iter().map(|f| (f.trigger.as_str(), f.parameters.clone().unwrap())).collect();
    assert_eq!(
        fired,
        [("reenabled", json!({"tag": "v1", "key": "k"})), ("same-tree", json!({"tag": "v2", "key": "k"}))],
        "kept: the same tree (rendered with its new parameters) and the re-enabled; started over: the new tree, the \
         recreated; the disabled and the deleted see nothing"
    );
}

/// The wall clock steps back an hour while the service is down, then jumps three hours
/// forward: a leased run's lease, a queued run's schedule timeout and a proactive trigger's
/// windows each act once, at the times they are due.
async fn clock_scenario(crashes: bool) -> (Vec<Firing>, Vec<Run>) {
    let mut rig = Rig::start("clock", crashes, |_| {}).await;
    let s = rig.service();
    s.put_deployment(Deployment::new("work"), false).await.unwrap();
    let mut queued = Deployment::new("queued");
    queued.schedule_timeout_seconds = Some(600.0);
    s.put_deployment(queued, false).await.unwrap();
    s.put_trigger(definition(json!({"id": "go", "trigger": {"expect": ["go"]}, "deployment": "work"})), false)
        .await
        .unwrap();
    s.put_trigger(definition(json!({"id": "queue", "trigger": {"expect": ["q"]}, "deployment": "queued"})), false)
        .await
        .unwrap();
    s.put_trigger(
        definition(json!({"id": "beat", "trigger": {"posture": "Proactive", "expect": ["heartbeat"], "within": 600}})),
        false,
    )
    .await
    .unwrap();
    s.ingest(vec![ev(1, "go", "job", t0()), ev(2, "q", "job", t0())]).await.unwrap();
    let mut claim = ClaimRequest::new("w1", vec!["work".into()]);
    claim.lease_seconds = 300.0;
    assert_eq!(s.claim(claim.clone()).await.unwrap().len(), 1, "the go run is claimed");
    rig.clock.set(at(30));
    rig.service().tick().await.unwrap();
    // Back an hour across a crash: nothing is due, nothing fires.
    rig.crash(|c| c.set(at(-3600))).await;
    rig.service().tick().await.unwrap();
    let (firings, runs) = (rig.firings().await, rig.runs().await);
    assert_eq!(firings.len(), 2, "nothing but go and q fired, nothing fires when the clock steps back: {firings:?}");
    assert_eq!(
        runs.iter().map(|r| format!("{:?}", r.state)).collect::<Vec<_>>().iter().filter(|s| *s == "Scheduled").count(),
        1,
        "the queued run waits, the claimed one keeps its lease: {runs:?}"
    );
    // Three hours forward across a crash: the lease runs out once, the schedule times out once,
    // each closed window fires once.
    rig.crash(|c| c.set(at(3 * 3600))).await;
    rig.service().tick().await.unwrap();
    rig.crash(|_| {}).await;
    rig.service().tick().await.unwrap();
    let (firings, runs) = (rig.firings().await, rig.runs().await);
    rig.finish().await;
    (firings, runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_stepping_back_or_jumping_forward_across_a_crash_acts_once() {
    let firings = both_ways!(clock_scenario);
    assert_no_repeats(&firings);
    let windows: Vec<Timestamp> = firings.iter().filter(|f| f.trigger == "beat").map(|f| f.at).collect();
    assert_eq!(windows, (1..=18).map(|n| at(n * 600)).collect::<Vec<_>>(), "each 600 s window of 3 h closes once");
    assert_eq!(firings.iter().filter(|f| f.trigger != "beat").count(), 2, "go and q fired once each");
}

// ---- WebSockets -------------------------------------------------------------------------

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

/// The router served on a local port.
struct Served {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

async fn serve(service: &Service) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = tripwire::http::router(service.clone());
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Served { addr, task }
}

/// Connects as Prefect's clients do: subprotocol, ping/pong, then the auth exchange.
async fn connect(served: &Served, path: &str) -> Socket {
    let mut request = format!("ws://{}{path}", served.addr).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("prefect"));
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    checkpoint(&mut socket).await;
    socket.send(Message::text(json!({"type": "auth", "token": null}).to_string())).await.unwrap();
    assert_eq!(next_json(&mut socket).await, json!({"type": "auth_success"}));
    socket
}

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next()).await.expect("a message in time");
        match message.expect("the socket is open").unwrap() {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// A ping answered by its pong: everything sent before it is stored.
async fn checkpoint(socket: &mut Socket) {
    socket.send(Message::Ping(b"checkpoint".to_vec().into())).await.unwrap();
    loop {
        let message = tokio::time::timeout(WAIT, socket.next()).await.expect("the pong in time");
        match message.expect("the socket is open").unwrap() {
            Message::Pong(data) => return assert_eq!(&data[..], b"checkpoint"),
            Message::Ping(_) => {}
            other => panic!("expected the pong, got {other:?}"),
        }
    }
}

fn event_json(n: u128) -> Value {
    json!({"id": Uuid::from_u128(n).to_string(), "occurred": "2026-01-01T00:00:00Z", "event": "order.created",
           "resource": {"prefect.resource.id": format!("order.{n}")}, "payload": {"n": n as u64}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_resent_after_a_crash_and_reconnect_are_stored_once_and_fire_once() {
    let mut rig = Rig::start("ws-resend", true, |_| {}).await;
    rig.service()
        .put_trigger(definition(json!({"id": "created", "trigger": {"expect": ["order.created"]}})), false)
        .await
        .unwrap();
    let served = serve(rig.service()).await;
    let mut socket = connect(&served, "/api/events/in").await;
    for n in 1..=5 {
        socket.send(Message::text(event_json(n).to_string())).await.unwrap();
    }
    checkpoint(&mut socket).await;
    // Sent but not checkpointed: stored or not, the client resends them.
    for n in 6..=8 {
        socket.send(Message::text(event_json(n).to_string())).await.unwrap();
    }
    socket.close(None).await.unwrap();
    drop(socket);
    served.task.abort();
    let _ = served.task.await;
    rig.crash(|_| {}).await;

    // Prefect's client resends everything since its last checkpoint, and more.
    let served = serve(rig.service()).await;
    let mut socket = connect(&served, "/api/events/in").await;
    for n in 1..=9 {
        socket.send(Message::text(event_json(n).to_string())).await.unwrap();
    }
    checkpoint(&mut socket).await;
    socket.close(None).await.unwrap();
    served.task.abort();
    assert_eq!(rig.service().event_count().await.unwrap(), 9, "each event stored once");
    let fired: Vec<Option<Uuid>> = rig.firings().await.iter().map(|f| f.triggering_event).collect();
    let mut expected: Vec<Option<Uuid>> = (1..=9).map(|n| Some(Uuid::from_u128(n))).collect();
    expected.sort();
    let mut fired_sorted = fired.clone();
    fired_sorted.sort();
    assert_eq!(fired_sorted, expected, "each event fired once");
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_whose_backfill_overlaps_the_live_stream_gets_each_event_once() {
    let rig = Rig::start("ws-backfill", false, |_| {}).await;
    let batch = |from: u128, to: u128| -> Vec<Event> {
        (from..=to).map(|n| Event::from_json(&event_json(n), &JsonPath::root(), None).unwrap()).collect()
    };
    rig.service().ingest(batch(1, 300)).await.unwrap();
    let served = serve(rig.service()).await;
    // Events keep arriving, one small batch at a time, while the subscriber reads its backfill.
    let writer = {
        let service = rig.service().clone();
        tokio::spawn(async move {
            for from in (301..=600).step_by(5) {
                service.ingest(batch(from, from + 4)).await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let mut socket = connect(&served, "/api/events/out").await;
    let subscription = json!({"type": "filter", "filter": {}, "backfill": true});
    socket.send(Message::text(subscription.to_string())).await.unwrap();
    let mut got: Vec<u128> = Vec::new();
    while got.iter().collect::<BTreeSet<_>>().len() < 600 {
        let message = next_json(&mut socket).await;
        assert_eq!(message["type"], "event", "{message}");
        got.push(Uuid::parse_str(message["event"]["id"].as_str().unwrap()).unwrap().as_u128());
    }
    writer.await.unwrap();
    let distinct: BTreeSet<u128> = got.iter().copied().collect();
    assert_eq!(got.len(), distinct.len(), "an event was delivered twice");
    assert_eq!(distinct, (1..=600).collect::<BTreeSet<_>>());
    socket.close(None).await.unwrap();
    served.task.abort();
    rig.finish().await;
}
