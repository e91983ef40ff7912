//! The HTTP transport: [`Client`], one method per endpoint of the API.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::model::{
    ApiKey, Backtest, BacktestRequest, ChildRequest, ClaimRequest, ClaimedRun, Completion, CreatedApiKey, Deployment,
    FailureReport, Firing, Heartbeat, HeartbeatReply, LogBatch, NewApiKey, RateDuration, RateLimit, RateLimitQuota,
    RateLimitStatus, Run, ScopeFilter, StreamBatch, TriggerDefinition, TriggerSync,
};

use super::run_stream::RunStream;
use super::subscription::Subscription;
use super::types::{BucketsView, EventPage, EventQuery, FilteredEvents, IngestReport, LogPage, RunQuery, Upserted};
use super::ClientError;
use crate::model::{NewEvent, TriggerRecord};

/// The API address used when none is given.
pub const DEFAULT_API: &str = "http://127.0.0.1:4200/api";
/// The environment variable naming the API address.
pub const API_ENV: &str = "TRIPWIRE_API";
/// The environment variable holding the API key [`Client::from_env`] sends.
pub const API_KEY_ENV: &str = "TRIPWIRE_API_KEY";
/// How long one request may take, connecting included, unless [`Client::with_timeout`] says
/// otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The server's error body, `{"error": {"code", "message"}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// A client of one server; cheap to clone (the connection pool is shared). It implements
/// [`Tripwire`](crate::flow::Tripwire), so flows are served against it as against an
/// [`Embedded`](crate::Embedded).
///
/// ```no_run
/// use std::time::Duration;
/// use tripwire::prelude::*;
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::new("http://127.0.0.1:4200/api")?; // or Client::from_env()
/// let id = client.emit(NewEvent::new("order.created", Resource::new("order.42"))).await?;
/// let failed = client.runs(RunQuery::new().state(RunState::Failed).limit(10)).await?;
/// for run in &failed {
///     println!("{} failed: {:?}", run.deployment, run.error);
/// }
/// if let Some(run) = client.runs(RunQuery::new().deployment("ship-order").limit(1)).await?.first() {
///     let run = client.wait_for_run(run.id, Duration::from_secs(30)).await?;
///     println!("{id}: {:?}", run.state);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    /// Sent as `Authorization: Bearer`; never printed.
    api_key: Option<Arc<str>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("api_key", &self.api_key.as_ref().map(|_| "(set)"))
            .finish()
    }
}

impl Client {
    /// A client of the API at `base_url`, e.g. `http://127.0.0.1:4200/api` (a trailing slash
    /// is fine; without a scheme, `http://` is assumed).
    pub fn new(base_url: &str) -> Result<Client, ClientError> {
        let text = base_url.trim();
        let text = if text.contains("://") { text.to_owned() } else { format!("http://{text}") };
        let base = Url::parse(&text).map_err(|e| {
            ClientError::Invalid(format!("`{base_url}` is not an API address ({e}); use e.g. {DEFAULT_API}"))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() || base.host().is_none() {
            return Err(ClientError::Invalid(format!(
                "`{base_url}` is not an http(s) API address; use e.g. {DEFAULT_API}"
            )));
        }
        Ok(Client { http: build_http(DEFAULT_TIMEOUT)?, base, api_key: None })
    }

    /// A client of the API named by `TRIPWIRE_API` (or [`DEFAULT_API`] when it is unset) that
    /// sends the API key in `TRIPWIRE_API_KEY`, if set.
    pub fn from_env() -> Result<Client, ClientError> {
        let client = match std::env::var(API_ENV) {
            Ok(url) if !url.trim().is_empty() => Client::new(&url)?,
            _ => Client::new(DEFAULT_API)?,
        };
        Ok(client.with_env_api_key())
    }

    /// The same client, sending the API key in `TRIPWIRE_API_KEY` if it is set (and no key
    /// otherwise): `Client::new(url)?.with_env_api_key()` for a server given by address.
    pub fn with_env_api_key(self) -> Client {
        match std::env::var(API_KEY_ENV) {
            Ok(key) if !key.trim().is_empty() => self.with_api_key(key.trim()),
            _ => self,
        }
    }

    /// The same client, sending `key` as `Authorization: Bearer` with every request (and with
    /// WebSocket upgrades).
    pub fn with_api_key(mut self, key: impl AsRef<str>) -> Client {
        self.api_key = Some(Arc::from(key.as_ref()));
        self
    }

    /// The same client with another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Result<Client, ClientError> {
        self.http = build_http(timeout)?;
        Ok(self)
    }

    /// The API address, without a trailing slash.
    pub fn base_url(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    /// `GET /health`: true when the server is up.
    pub async fn health(&self) -> Result<bool, ClientError> {
        self.get(&["health"]).await
    }

    /// `POST /events` with one event; returns its id (the one it was sent with, or the
    /// server's). An event whose payload is not a JSON object is refused before sending
    /// ([`ClientError::Invalid`], naming `payload`).
    pub async fn emit(&self, event: impl Into<NewEvent>) -> Result<Uuid, ClientError> {
        let report = self.ingest(vec![event.into()]).await?;
        report.ids.into_iter().next().ok_or_else(|| ClientError::Decode("the server acknowledged no event".into()))
    }

    /// `POST /events` with many events in one request: all are accepted, or none when one is
    /// invalid. Returns their ids, in order. The server takes at most 10,000 events and 1 MiB
    /// per request.
    pub async fn emit_many<E: Into<NewEvent>>(
        &self,
        events: impl IntoIterator<Item = E>,
    ) -> Result<Vec<Uuid>, ClientError> {
        Ok(self.ingest(events.into_iter().map(Into::into).collect()).await?.ids)
    }

    /// `POST /events` with the server's whole answer: the ids, and which of them it had
    /// accepted before. One event is sent as an object, several as an array.
    pub async fn ingest(&self, events: Vec<NewEvent>) -> Result<IngestReport, ClientError> {
        for (i, event) in events.iter().enumerate() {
            event.check().map_err(|why| ClientError::Invalid(format!("event {i}: {why}")))?;
        }
        let request = match events.as_slice() {
            [] => return Ok(IngestReport::default()),
            [one] => self.request(Method::POST, &["events"]).json(one),
            many => self.request(Method::POST, &["events"]).json(many),
        };
        decode(self.send(request).await?, "the ingest report").await
    }

    /// `GET /events`: one page of stored events matching `query`, newest first.
    pub async fn events(&self, query: &EventQuery) -> Result<EventPage, ClientError> {
        let response = self.send(self.request(Method::GET, &["events"]).query(query)).await?;
        decode(response, "the event page").await
    }

    /// `PUT /triggers/{id}`: installs or replaces a definition.
    pub async fn put_trigger(&self, definition: &TriggerDefinition) -> Result<Upserted<TriggerRecord>, ClientError> {
        let request = self.request(Method::PUT, &["triggers", &definition.id]).json(definition);
        self.upsert(request, "the trigger").await
    }

    /// `POST /triggers`: installs a definition, failing with 409 `conflict` if the id exists.
    pub async fn create_trigger(&self, definition: &TriggerDefinition) -> Result<TriggerRecord, ClientError> {
        let response = self.send(self.request(Method::POST, &["triggers"]).json(definition)).await?;
        decode(response, "the trigger").await
    }

    /// `GET /triggers`: every definition, by id.
    pub async fn triggers(&self) -> Result<Vec<TriggerRecord>, ClientError> {
        self.get(&["triggers"]).await
    }

    /// `GET /triggers?stats=true`: every definition with what it does now (its `stats`: live
    /// buckets and firings in the last hour).
    pub async fn triggers_with_stats(&self) -> Result<Vec<TriggerRecord>, ClientError> {
        let request = self.request(Method::GET, &["triggers"]).query(&[("stats", true)]);
        decode(self.send(request).await?, "the triggers").await
    }

    /// `GET /triggers/{id}`.
    pub async fn trigger(&self, id: &str) -> Result<TriggerRecord, ClientError> {
        self.get(&["triggers", id]).await
    }

    /// `DELETE /triggers/{id}`.
    pub async fn delete_trigger(&self, id: &str) -> Result<(), ClientError> {
        self.send(self.request(Method::DELETE, &["triggers", id])).await.map(drop)
    }

    /// `PATCH /triggers/{id}`: enables or disables a definition.
    pub async fn set_trigger_enabled(&self, id: &str, enabled: bool) -> Result<TriggerRecord, ClientError> {
        let request = self.request(Method::PATCH, &["triggers", id]).json(&json!({ "enabled": enabled }));
        decode(self.send(request).await?, "the trigger").await
    }

    /// `GET /triggers/{id}/buckets`: its live buckets, optionally only those with `key` among
    /// their label values.
    pub async fn buckets(&self, id: &str, key: Option<&str>) -> Result<BucketsView, ClientError> {
        let mut request = self.request(Method::GET, &["triggers", id, "buckets"]);
        if let Some(key) = key {
            request = request.query(&[("key", key)]);
        }
        decode(self.send(request).await?, "the buckets").await
    }

    /// `GET /backtest/{backtest}/buckets?trigger={id}`: a backtested definition's buckets as
    /// they were at the end of the backtest, in the live view's words.
    pub async fn backtest_buckets(
        &self,
        backtest: Uuid,
        id: &str,
        key: Option<&str>,
    ) -> Result<BucketsView, ClientError> {
        let mut request =
            self.request(Method::GET, &["backtest", &backtest.to_string(), "buckets"]).query(&[("trigger", id)]);
        if let Some(key) = key {
            request = request.query(&[("key", key)]);
        }
        decode(self.send(request).await?, "the backtest's buckets").await
    }

    /// `GET /triggers/{id}/firings`: the latest firings, newest first (each with the error
    /// that kept it from creating a run, if any).
    pub async fn firings(&self, id: &str, limit: usize) -> Result<Vec<Firing>, ClientError> {
        let request = self.request(Method::GET, &["triggers", id, "firings"]).query(&[("limit", limit)]);
        decode(self.send(request).await?, "the firings").await
    }

    /// `POST /backtest`: starts trying definitions over the stored events; answers at once
    /// with the backtest's record (`running`).
    pub async fn start_backtest(&self, request: &BacktestRequest) -> Result<Backtest, ClientError> {
        let response = self.send(self.request(Method::POST, &["backtest"]).json(request)).await?;
        decode(response, "the backtest").await
    }

    /// `GET /backtest/{id}`: how far a backtest got, and what it found.
    pub async fn backtest(&self, id: Uuid) -> Result<Backtest, ClientError> {
        self.get(&["backtest", &id.to_string()]).await
    }

    /// `DELETE /backtest/{id}`: cancels a running backtest (what it found is kept).
    pub async fn cancel_backtest(&self, id: Uuid) -> Result<Backtest, ClientError> {
        let response = self.send(self.request(Method::DELETE, &["backtest", &id.to_string()])).await?;
        decode(response, "the backtest").await
    }

    /// `GET /backtest/{id}/firings`: a page of what would have fired, in order, from position
    /// `from`; with the position of the next page.
    pub async fn backtest_firings(&self, id: Uuid, from: usize) -> Result<(Vec<Firing>, Option<usize>), ClientError> {
        #[derive(Deserialize)]
        struct Page {
            firings: Vec<Firing>,
            next: Option<usize>,
        }
        let request = self
            .request(Method::GET, &["backtest", &id.to_string(), "firings"])
            .query(&[("from", from), ("limit", 1000)]);
        let page: Page = decode(self.send(request).await?, "the backtest's firings").await?;
        Ok((page.firings, page.next))
    }

    /// `PUT /deployments/{name}`: creates or replaces a deployment.
    pub async fn put_deployment(&self, deployment: &Deployment) -> Result<Upserted<Deployment>, ClientError> {
        let request = self.request(Method::PUT, &["deployments", &deployment.name]).json(deployment);
        self.upsert(request, "the deployment").await
    }

    /// `GET /deployments`.
    pub async fn deployments(&self) -> Result<Vec<Deployment>, ClientError> {
        self.get(&["deployments"]).await
    }

    /// `GET /deployments/{name}`.
    pub async fn deployment(&self, name: &str) -> Result<Deployment, ClientError> {
        self.get(&["deployments", name]).await
    }

    /// `DELETE /deployments/{name}`.
    pub async fn delete_deployment(&self, name: &str) -> Result<(), ClientError> {
        self.send(self.request(Method::DELETE, &["deployments", name])).await.map(drop)
    }

    /// `PUT /rate-limits/{key}`: creates or changes a static rate limit, `limit` units per
    /// `duration`.
    pub async fn put_rate_limit(
        &self,
        key: &str,
        limit: u64,
        duration: RateDuration,
    ) -> Result<Upserted<RateLimit>, ClientError> {
        let request = self.request(Method::PUT, &["rate-limits", key]).json(&RateLimitQuota { limit, duration });
        self.upsert(request, "the rate limit").await
    }

    /// `GET /rate-limits`: every static key and every dynamic key with an open window.
    pub async fn rate_limits(&self) -> Result<Vec<RateLimitStatus>, ClientError> {
        self.get(&["rate-limits"]).await
    }

    /// `DELETE /rate-limits/{key}`.
    pub async fn delete_rate_limit(&self, key: &str) -> Result<(), ClientError> {
        self.send(self.request(Method::DELETE, &["rate-limits", key])).await.map(drop)
    }

    /// `POST /runs/{id}/stream`: appends chunks to a running run's stream (what a flow's
    /// `ctx.stream` calls).
    pub async fn append_stream(&self, id: Uuid, batch: &StreamBatch) -> Result<(), ClientError> {
        let request = self.request(Method::POST, &["runs", &id.to_string(), "stream"]).json(batch);
        self.send(request).await.map(drop)
    }

    /// `GET /runs/{id}/stream`: follows a run's stream, every chunk from the first, then live
    /// ones until the run ends (see [`RunStream`]).
    pub async fn stream(&self, id: Uuid) -> Result<RunStream, ClientError> {
        self.stream_from(id, 0).await
    }

    /// The same from position `from` (to resume: [`RunStream::position`]).
    pub async fn stream_from(&self, id: Uuid, from: u64) -> Result<RunStream, ClientError> {
        let request = self
            .request(Method::GET, &["runs", &id.to_string(), "stream"])
            .query(&[("from", from)])
            // Followed for as long as the run goes on, not the client's request timeout.
            .timeout(Duration::from_secs(7 * 24 * 3600));
        Ok(RunStream::new(self.send(request).await?, from))
    }

    /// `POST /deployments/{name}/runs`: a run by hand, with `parameters` merged over the
    /// deployment's defaults.
    pub async fn create_run(
        &self,
        deployment: &str,
        parameters: Option<Map<String, Value>>,
    ) -> Result<Run, ClientError> {
        let body = json!({ "parameters": parameters });
        let request = self.request(Method::POST, &["deployments", deployment, "runs"]).json(&body);
        decode(self.send(request).await?, "the run").await
    }

    /// `POST /runs/{parent}/children`: a child run of the run this worker holds (what
    /// `ctx.spawn` calls). The same key answers the same child, whatever the attempt.
    pub async fn spawn_child(&self, parent: Uuid, request: &ChildRequest) -> Result<Run, ClientError> {
        let request = self.request(Method::POST, &["runs", &parent.to_string(), "children"]).json(request);
        decode(self.send(request).await?, "the child run").await
    }

    /// `GET /runs/{id}/children`: the runs it spawned, by key.
    pub async fn children(&self, parent: Uuid) -> Result<Vec<Run>, ClientError> {
        self.get(&["runs", &parent.to_string(), "children"]).await
    }

    /// `GET /runs`: the newest runs that `query` asks for.
    pub async fn runs(&self, query: RunQuery) -> Result<Vec<Run>, ClientError> {
        let request = self.request(Method::GET, &["runs"]).query(&query);
        decode(self.send(request).await?, "the runs").await
    }

    /// `GET /runs/{id}`.
    pub async fn run(&self, id: Uuid) -> Result<Run, ClientError> {
        self.get(&["runs", &id.to_string()]).await
    }

    /// `PUT /deployments/{name}/triggers`: makes `definitions` exactly the deployment's
    /// triggers (unchanged ones keep their state, the others are removed).
    pub async fn sync_triggers(
        &self,
        deployment: &str,
        definitions: &[TriggerDefinition],
    ) -> Result<TriggerSync, ClientError> {
        let request = self.request(Method::PUT, &["deployments", deployment, "triggers"]).json(definitions);
        decode(self.send(request).await?, "the trigger sync").await
    }

    /// `GET /deployments/{name}/triggers`.
    pub async fn deployment_triggers(&self, deployment: &str) -> Result<Vec<TriggerRecord>, ClientError> {
        self.get(&["deployments", deployment, "triggers"]).await
    }

    /// `POST /runs/claim`: ready runs of the worker's deployments, leased to it; waits up to
    /// `wait_seconds` for one.
    pub async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedRun>, ClientError> {
        let patience = Duration::from_secs_f64(request.wait_seconds.max(0.0)) + DEFAULT_TIMEOUT;
        let request = self.request(Method::POST, &["runs", "claim"]).json(request).timeout(patience);
        decode(self.send(request).await?, "the claimed runs").await
    }

    /// `POST /runs/{id}/heartbeat`: extends the lease; `cancel` in the answer says to stop.
    pub async fn heartbeat(&self, id: Uuid, heartbeat: &Heartbeat) -> Result<HeartbeatReply, ClientError> {
        self.post(&["runs", &id.to_string(), "heartbeat"], heartbeat, "the heartbeat answer").await
    }

    /// `POST /runs/{id}/complete`.
    pub async fn complete(&self, id: Uuid, completion: &Completion) -> Result<Run, ClientError> {
        self.post(&["runs", &id.to_string(), "complete"], completion, "the run").await
    }

    /// `POST /runs/{id}/fail`.
    pub async fn fail(&self, id: Uuid, failure: &FailureReport) -> Result<Run, ClientError> {
        self.post(&["runs", &id.to_string(), "fail"], failure, "the run").await
    }

    /// `POST /runs/{id}/cancel`.
    pub async fn cancel_run(&self, id: Uuid) -> Result<Run, ClientError> {
        self.post(&["runs", &id.to_string(), "cancel"], &json!({}), "the run").await
    }

    /// `POST /runs/{id}/logs`: appends lines to the run's log.
    pub async fn append_logs(&self, id: Uuid, batch: &LogBatch) -> Result<(), ClientError> {
        self.send(self.request(Method::POST, &["runs", &id.to_string(), "logs"]).json(batch)).await.map(drop)
    }

    /// `GET /runs/{id}/logs`: the run's log lines from position `from`.
    pub async fn run_logs(&self, id: Uuid, from: u64) -> Result<LogPage, ClientError> {
        let request = self.request(Method::GET, &["runs", &id.to_string(), "logs"]).query(&[("from", from)]);
        decode(self.send(request).await?, "the run's log").await
    }

    /// `POST /events/filter`: Prefect's event filter (`occurred`, `event`, `resource`,
    /// `related`, `any_resource`, `id`, `order`), at most `limit` events per page (1 to 1000).
    pub async fn events_filter(&self, filter: &Value, limit: Option<usize>) -> Result<FilteredEvents, ClientError> {
        let body = json!({"filter": filter, "limit": limit});
        self.post(&["events", "filter"], &body, "the filtered events").await
    }

    /// The page after one of [`Client::events_filter`], from its `next_page`.
    pub async fn events_filter_next(&self, next_page: &str) -> Result<FilteredEvents, ClientError> {
        let token = next_page
            .split_once("page-token=")
            .map(|(_, t)| t.split('&').next().unwrap_or(t))
            .ok_or_else(|| ClientError::Invalid(format!("`{next_page}` is not a next_page address")))?;
        let request = self.request(Method::GET, &["events", "filter", "next"]).query(&[("page-token", token)]);
        decode(self.send(request).await?, "the filtered events").await
    }

    /// `GET /events/out` (a WebSocket): events matching a Prefect event `filter` (`{}` for
    /// all), with `backfill` first the matching events of the last 15 minutes.
    pub async fn subscribe(&self, filter: &Value, backfill: bool) -> Result<Subscription, ClientError> {
        let mut url = self.url(&["events", "out"]);
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme).map_err(|_| ClientError::Invalid(format!("cannot make a WebSocket URL of {url}")))?;
        Subscription::open(url.to_string(), self.api_key.as_deref(), filter, backfill).await
    }

    /// `GET /admin/keys`: every API key (revoked ones last), without secrets.
    pub async fn keys(&self) -> Result<Vec<ApiKey>, ClientError> {
        self.get(&["admin", "keys"]).await
    }

    /// `POST /admin/keys`: makes an API key; the answer's `token` is shown this once.
    pub async fn create_key(&self, new: &NewApiKey) -> Result<CreatedApiKey, ClientError> {
        self.post(&["admin", "keys"], new, "the new key").await
    }

    /// `POST /admin/keys/{which}/revoke`: revokes a key by name or id, at once.
    pub async fn revoke_key(&self, which: &str) -> Result<ApiKey, ClientError> {
        self.post(&["admin", "keys", which, "revoke"], &json!({}), "the revoked key").await
    }

    /// `GET /filters`: the scope filters, optionally of one deployment and scope.
    pub async fn filters(
        &self,
        deployment: Option<&str>,
        scope: Option<&str>,
    ) -> Result<Vec<ScopeFilter>, ClientError> {
        let mut query = Vec::new();
        query.extend(deployment.map(|d| ("deployment", d)));
        query.extend(scope.map(|s| ("scope", s)));
        let request = self.request(Method::GET, &["filters"]).query(&query);
        decode(self.send(request).await?, "the filters").await
    }

    /// `POST /filters`: a Hatchet-style scope filter for a deployment (`id` and `created` are
    /// the server's).
    pub async fn create_filter(&self, filter: &ScopeFilter) -> Result<ScopeFilter, ClientError> {
        let body = json!({"deployment": filter.deployment, "scope": filter.scope, "expression": filter.expression,
                          "payload": filter.payload});
        self.post(&["filters"], &body, "the filter").await
    }

    /// `GET /filters/{id}`.
    pub async fn filter(&self, id: Uuid) -> Result<ScopeFilter, ClientError> {
        self.get(&["filters", &id.to_string()]).await
    }

    /// `DELETE /filters/{id}`.
    pub async fn delete_filter(&self, id: Uuid) -> Result<(), ClientError> {
        self.send(self.request(Method::DELETE, &["filters", &id.to_string()])).await.map(drop)
    }

    async fn post<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &impl Serialize,
        what: &str,
    ) -> Result<T, ClientError> {
        decode(self.send(self.request(Method::POST, segments).json(body)).await?, what).await
    }

    /// The URL of `segments` under the API address, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let request = self.http.request(method, self.url(segments));
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    async fn get<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, ClientError> {
        let what = segments.join("/");
        decode(self.send(self.request(Method::GET, segments)).await?, &what).await
    }

    async fn upsert<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        what: &str,
    ) -> Result<Upserted<T>, ClientError> {
        let response = self.send(request).await?;
        let created = response.status() == StatusCode::CREATED;
        Ok(Upserted { value: decode(response, what).await?, created })
    }

    /// Sends a request; a success status passes, an error status becomes [`ClientError::Api`].
    async fn send(&self, request: RequestBuilder) -> Result<Response, ClientError> {
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let mut error = api_error(status, &text);
        if let (ClientError::Api { status: 401, message, .. }, None) = (&mut error, &self.api_key) {
            message.push_str(&format!(" (this client sent no API key: set {API_KEY_ENV} or pass --api-key)"));
        }
        Err(error)
    }

    fn transport_error(&self, e: &reqwest::Error) -> ClientError {
        let url = self.base_url();
        if e.is_connect() {
            let cause = connect_cause(e);
            let message = format!("no tripwire server at {url} ({cause}); start one with `tripwire serve`");
            ClientError::Unreachable { url, message }
        } else if e.is_timeout() {
            ClientError::Transport { url, message: "no answer within the timeout".into() }
        } else if e.is_builder() {
            ClientError::Invalid(format!("cannot build the request: {}", deepest_cause(e)))
        } else {
            ClientError::Transport { url, message: deepest_cause(e) }
        }
    }
}

fn build_http(timeout: Duration) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .user_agent(concat!("tripwire-client/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ClientError::Invalid(format!("cannot set up the HTTP client: {e}")))
}

/// Reads a success body as `T`.
async fn decode<T: DeserializeOwned>(response: Response, what: &str) -> Result<T, ClientError> {
    let bytes = response.bytes().await.map_err(|e| ClientError::Decode(format!("reading {what}: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(format!("{what}: {e}")))
}

/// An error answer: tripwire's `{"error": {"code", "message"}}`, or the raw text.
fn api_error(status: StatusCode, text: &str) -> ClientError {
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(body) => ClientError::Api { status: status.as_u16(), code: body.error.code, message: body.error.message },
        Err(_) => {
            let reason = status.canonical_reason().unwrap_or("error");
            let code = reason.to_ascii_lowercase().replace([' ', '-'], "_");
            let message = if text.trim().is_empty() { reason.to_owned() } else { text.trim().to_owned() };
            ClientError::Api { status: status.as_u16(), code, message }
        }
    }
}

/// Why a connection failed, in a few words ("connection refused").
fn connect_cause(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::TimedOut => "connection timed out".into(),
                _ => io.to_string(),
            };
        }
        source = s.source();
    }
    if e.is_timeout() {
        "connection timed out".into()
    } else {
        deepest_cause(e)
    }
}

/// The innermost error's message, which is usually the informative one.
fn deepest_cause(e: &reqwest::Error) -> String {
    let mut last: &dyn std::error::Error = e;
    while let Some(s) = last.source() {
        last = s;
    }
    last.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_with_and_without_a_trailing_slash_give_the_same_urls() {
        for base in ["http://127.0.0.1:4200/api", "http://127.0.0.1:4200/api/", "127.0.0.1:4200/api"] {
            let c = Client::new(base).unwrap();
            assert_eq!(c.url(&["triggers", "a b/c"]).as_str(), "http://127.0.0.1:4200/api/triggers/a%20b%2Fc");
            assert_eq!(c.base_url(), "http://127.0.0.1:4200/api");
        }
        assert!(matches!(Client::new("ftp://x/api"), Err(ClientError::Invalid(_))));
        assert!(matches!(Client::new("http://"), Err(ClientError::Invalid(_))));
    }

    #[test]
    fn error_bodies_map_to_api_errors() {
        let e = api_error(
            StatusCode::NOT_FOUND,
            r#"{"error": {"code": "not_found", "message": "trigger `x` does not exist"}}"#,
        );
        assert!(matches!(&e, ClientError::Api { status: 404, code, .. } if code == "not_found"));
        assert_eq!(e.to_string(), "trigger `x` does not exist (HTTP 404, not_found)");
        let e = api_error(StatusCode::BAD_GATEWAY, "upstream down");
        assert!(
            matches!(&e, ClientError::Api { status: 502, code, message } if code == "bad_gateway" && message == "upstream down")
        );
    }
}
