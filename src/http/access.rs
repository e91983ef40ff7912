//! The one layer every request passes before its route: no cross-site requests, credentials
//! and the role each route needs, and JSON bodies only.
//!
//! In order:
//! 1. **Origin.** A request with an `Origin` header (every browser sends one on writes and
//!    WebSocket upgrades) is refused with 403 `cross_origin` unless that origin is this server
//!    itself or is allowed with `--cors-origin`. "This server itself" means the origin's host
//!    and port are the request's `Host`, and, while auth is off, that host is an IP address or
//!    `localhost` (a page on another name that resolves here, DNS rebinding, is refused).
//!    Allowed origins get CORS answers, preflights included.
//! 2. **Credentials.** While auth is on (see `service::access::Access`), every route but `GET /api/health`,
//!    `GET /api/admin/version` and the dashboard's files (`GET /`, `GET /ui/...`) needs `Authorization: Bearer <API key>` or `Basic <auth
//!    string>`: 401 `unauthorized` without valid ones, 403 `forbidden` for a role that may
//!    not ([`permission`] is the route table). A WebSocket upgrade that asks for Prefect's
//!    `prefect` subprotocol may instead authenticate with its first message.
//! 3. **Media type.** A request with a body must say `Content-Type: application/json`: 415
//!    `unsupported_media_type` otherwise (a browser's form or `text/plain` post cannot).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use super::listener::LONG_POLL_PATH;
use crate::model::{Permission, Role};
use crate::service::access::{Access, AccessError, Credential, Principal};
use crate::service::clock::Stopwatch;
use crate::service::Service;

use super::ApiError;

/// Who a request is from, for the routes that look (the WebSockets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Caller {
    /// Admitted: auth is off, or the request's credentials were valid.
    Known(Principal),
    /// A WebSocket upgrade without credentials that asked for the `prefect` subprotocol: its
    /// first message must authenticate it.
    Pending,
}

/// What a route needs: nothing, or a permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Open to anyone, with auth on too.
    Open,
    /// Needs credentials whose role permits this.
    Permission(Permission),
}

/// The route table of access: what `method path` needs (the path as requested, `/api/...`).
/// Anything not named here needs [`Permission::Read`] for `GET`/`HEAD` and
/// [`Permission::Manage`] otherwise, so that a new route is closed until it is placed.
pub fn permission(method: &Method, path: &str) -> Need {
    use Permission::*;
    let get = *method == Method::GET || *method == Method::HEAD;
    // The dashboard's page and files: it asks for a key when the API answers 401.
    if get && (path == "/" || path.starts_with("/ui/")) {
        return Need::Open;
    }
    let segments: Vec<&str> = path.strip_prefix("/api").unwrap_or(path).trim_matches('/').split('/').collect();
    let post = *method == Method::POST;
    let put = *method == Method::PUT;
    Need::Permission(match segments.as_slice() {
        ["health"] | ["admin", "version"] if get => return Need::Open,
        ["events"] if post => Emit,
        ["events", "in"] if get => Emit,
        ["events", "filter"] if post => Read,
        // A backtest only reads the stored events (its definitions are not installed).
        ["backtest"] if post => Read,
        ["backtest", _] if *method == Method::DELETE => Read,
        ["deployments"] if post => Serve,
        ["deployments", _] if put => Serve,
        ["deployments", _, "triggers"] if put => Serve,
        ["runs", "claim"] if post => Serve,
        ["runs", _, "heartbeat" | "complete" | "fail" | "logs" | "stream" | "children"] if post => Serve,
        ["admin", "keys", ..] => Manage,
        _ if get => Read,
        _ => Manage,
    })
}

/// The routes that are WebSockets, which may authenticate after the upgrade.
const SOCKET_PATHS: [&str; 2] = ["/api/events/in", "/api/events/out"];

/// The layer's settings.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    /// Origins (`scheme://host[:port]`) that may call the API from a browser besides the
    /// server's own, e.g. a dashboard served elsewhere.
    pub allowed_origins: Vec<String>,
}

impl Guard {
    /// Allows these origins (each `scheme://host[:port]`; a trailing `/` is ignored).
    pub fn new(allowed_origins: impl IntoIterator<Item = String>) -> Guard {
        Guard { allowed_origins: allowed_origins.into_iter().map(|o| normalize_origin(&o)).collect() }
    }
}

/// Checks an origin given to `--cors-origin`: `scheme://host[:port]`, nothing more.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let origin = normalize_origin(text);
    let Some((scheme, authority)) = origin.split_once("://") else {
        return Err(format!("`{text}` is not an origin such as https://dashboard.example.com"));
    };
    if !matches!(scheme, "http" | "https") || authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "`{text}` is not an origin such as https://dashboard.example.com (scheme, host, port only)"
        ));
    }
    Ok(origin)
}

fn normalize_origin(text: &str) -> String {
    text.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// The layer (see the module documentation).
pub(super) async fn guard(
    State((service, guard)): State<(Service, Arc<Guard>)>,
    request: Request,
    next: Next,
) -> Response {
    // The request line is logged at debug: nothing is copied or timed when that is off.
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return check(&service, &guard, request, next).await;
    }
    let watch = Stopwatch::start();
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let response = check(&service, &guard, request, next).await;
    tracing::debug!(%method, %path, status = response.status().as_u16(), ms = watch.elapsed().as_secs_f64() * 1e3, "request");
    response
}

async fn check(service: &Service, guard: &Guard, mut request: Request, next: Next) -> Response {
    let access = service.access();
    // A request of events refused here is counted as the events handler counts its own.
    let ingest = request.method() == Method::POST && request.uri().path() == "/api/events";
    let counted = |code: &str| {
        if ingest {
            service.metrics().reject(code);
        }
    };
    let cross_origin = match check_origin(guard, access, request.headers()) {
        Ok(cross) => cross,
        Err(e) => {
            counted(e.code());
            return e.into_response();
        }
    };
    if let Some(origin) = &cross_origin {
        if request.method() == Method::OPTIONS && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return preflight(origin);
        }
    }
    let mut response = match admit(access, &request) {
        Ok(caller) => match check_media_type(&request) {
            Ok(()) => {
                // A long poll ends when its key is revoked, as an open WebSocket does.
                let long_poll = match &caller {
                    Caller::Known(principal @ Principal::Key { .. }) if request.uri().path() == LONG_POLL_PATH => {
                        Some(principal.clone())
                    }
                    _ => None,
                };
                request.extensions_mut().insert(caller);
                match long_poll {
                    Some(principal) => tokio::select! {
                        response = next.run(request) => response,
                        () = access.until_revoked(&principal) => {
                            refusal(AccessError::Revoked { name: principal.name().to_owned() })
                        }
                    },
                    None => next.run(request).await,
                }
            }
            Err(e) => {
                counted(e.code());
                e.into_response()
            }
        },
        Err(e) => {
            counted(e.code());
            refusal(e)
        }
    };
    if let Some(origin) = cross_origin {
        allow_origin(response.headers_mut(), &origin);
    }
    response
}

/// `Ok(Some(origin))` for an allowed cross-origin request, `Ok(None)` for one with no
/// `Origin` or from the server itself.
fn check_origin(guard: &Guard, access: &Access, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(None) };
    let origin = normalize_origin(origin.to_str().unwrap_or_default());
    if guard.allowed_origins.contains(&origin) {
        return Ok(Some(origin));
    }
    let authority = origin.split_once("://").map(|(_, a)| a);
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(|h| h.trim().to_ascii_lowercase());
    if let (Some(authority), Some(host)) = (authority, host) {
        if authority == host && (access.is_on() || is_address_or_localhost(&host)) {
            return Ok(None);
        }
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "cross_origin",
        format!(
            "requests from web pages at `{origin}` are refused: only this server's own pages and the origins \
             given with `--cors-origin` may call the API from a browser"
        ),
    ))
}

/// Whether a `Host` value names the machine by address or as `localhost` (not by a name
/// someone else's DNS controls).
fn is_address_or_localhost(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => return v6.split(']').next().is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok()),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name == "localhost" || name.parse::<std::net::Ipv4Addr>().is_ok()
}

fn preflight(origin: &str) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    allow_origin(headers, origin);
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type"));
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    response
}

fn allow_origin(headers: &mut HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// Who the request is from, if the route admits them.
fn admit(access: &Access, request: &Request) -> Result<Caller, AccessError> {
    let need = permission(request.method(), request.uri().path());
    let Need::Permission(permission) = need else {
        return Ok(Caller::Known(Principal::Anyone));
    };
    // While auth is off the header is not read at all (as Prefect's server ignores one it
    // does not need): `Authorization: Bearer ` from a script whose key variable is empty works.
    let header = request.headers().get(header::AUTHORIZATION).filter(|_| access.is_on());
    if header.is_none() && access.is_on() && asks_for_prefect_socket(request) {
        return Ok(Caller::Pending);
    }
    let decoded;
    let credential = match header {
        None => None,
        Some(value) => {
            let text = value.to_str().map_err(|_| AccessError::Malformed)?.trim();
            let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
            let rest = rest.trim();
            if rest.is_empty() && ["bearer", "basic"].iter().any(|s| scheme.eq_ignore_ascii_case(s)) {
                // A scheme with nothing after it: no credentials (401 says a key is needed).
                None
            } else if scheme.eq_ignore_ascii_case("bearer") {
                Some(Credential::Bearer(rest))
            } else if scheme.eq_ignore_ascii_case("basic") {
                let bytes =
                    base64::engine::general_purpose::STANDARD.decode(rest).map_err(|_| AccessError::Malformed)?;
                decoded = String::from_utf8(bytes).map_err(|_| AccessError::Malformed)?;
                Some(Credential::Basic(&decoded))
            } else {
                return Err(AccessError::Malformed);
            }
        }
    };
    let principal = access.authenticate(credential)?;
    if !principal.permits(permission) {
        return Err(AccessError::Forbidden {
            who: principal.describe(),
            action: format!("{} {}", request.method(), request.uri().path()),
            needs: Role::least_for(permission),
        });
    }
    Ok(Caller::Known(principal))
}

/// An upgrade to one of the event WebSockets offering Prefect's `prefect` subprotocol (which
/// authenticates with its first message; any other route must be authenticated here).
fn asks_for_prefect_socket(request: &Request) -> bool {
    SOCKET_PATHS.contains(&request.uri().path())
        && request.method() == Method::GET
        && request.headers().contains_key(header::UPGRADE)
        && request
            .headers()
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == "prefect")
}

fn refusal(e: AccessError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let mut response = ApiError::new(status, e.code(), e.to_string()).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"tripwire\""));
    }
    response
}

/// A body must be declared JSON.
fn check_media_type(request: &Request) -> Result<(), ApiError> {
    let headers = request.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().parse::<u64>().map_or(true, |n| n > 0));
    if !has_body {
        return Ok(());
    }
    let declared = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("(not text)"));
    let essence = declared.map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    if essence.as_deref() == Some("application/json") {
        return Ok(());
    }
    let got = match declared {
        Some(v) => format!("`Content-Type: {}`", v.chars().take(100).collect::<String>()),
        None => "no `Content-Type`".to_owned(),
    };
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("request bodies are JSON: send them with `Content-Type: application/json` (this one had {got})"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_the_least_role_that_does_its_job() {
        use Permission::*;
        let table: &[(&str, &str, Need)] = &[
            ("GET", "/api/health", Need::Open),
            ("GET", "/api/admin/version", Need::Open),
            ("POST", "/api/health", Need::Permission(Manage)),
            ("POST", "/api/events", Need::Permission(Emit)),
            ("GET", "/api/events/in", Need::Permission(Emit)),
            ("GET", "/api/events/out", Need::Permission(Read)),
            ("GET", "/api/events", Need::Permission(Read)),
            ("POST", "/api/events/filter", Need::Permission(Read)),
            ("GET", "/api/events/filter/next", Need::Permission(Read)),
            ("PUT", "/api/deployments/greet", Need::Permission(Serve)),
            ("POST", "/api/deployments", Need::Permission(Serve)),
            ("DELETE", "/api/deployments/greet", Need::Permission(Manage)),
            ("PUT", "/api/deployments/greet/triggers", Need::Permission(Serve)),
            ("POST", "/api/deployments/greet/runs", Need::Permission(Manage)),
            ("POST", "/api/runs/claim", Need::Permission(Serve)),
            ("POST", "/api/runs/1/heartbeat", Need::Permission(Serve)),
            ("POST", "/api/runs/1/complete", Need::Permission(Serve)),
            ("POST", "/api/runs/1/fail", Need::Permission(Serve)),
            ("POST", "/api/runs/1/logs", Need::Permission(Serve)),
            ("GET", "/api/runs/1/logs", Need::Permission(Read)),
            ("POST", "/api/runs/1/stream", Need::Permission(Serve)),
            ("POST", "/api/runs/1/children", Need::Permission(Serve)),
            ("GET", "/api/runs/1/children", Need::Permission(Read)),
            ("GET", "/api/runs/1/stream", Need::Permission(Read)),
            ("POST", "/api/runs/1/cancel", Need::Permission(Manage)),
            ("PUT", "/api/triggers/x", Need::Permission(Manage)),
            ("PATCH", "/api/triggers/x", Need::Permission(Manage)),
            ("GET", "/api/triggers/x/buckets", Need::Permission(Read)),
            ("POST", "/api/filters", Need::Permission(Manage)),
            ("GET", "/api/admin/keys", Need::Permission(Manage)),
            ("POST", "/api/admin/keys/k/revoke", Need::Permission(Manage)),
            ("GET", "/api/openapi.json", Need::Permission(Read)),
            ("POST", "/api/backtest", Need::Permission(Read)),
            ("DELETE", "/api/backtest/1", Need::Permission(Read)),
            ("GET", "/api/backtest/1/firings", Need::Permission(Read)),
            ("GET", "/api/rate-limits", Need::Permission(Read)),
            ("PUT", "/api/rate-limits/github-api", Need::Permission(Manage)),
            ("DELETE", "/api/rate-limits/github-api", Need::Permission(Manage)),
            ("OPTIONS", "/api/events", Need::Permission(Manage)),
            ("GET", "/elsewhere", Need::Permission(Read)),
            ("GET", "/metrics", Need::Permission(Read)),
            ("GET", "/", Need::Open),
            ("GET", "/ui/app.js", Need::Open),
            ("POST", "/", Need::Permission(Manage)),
            ("GET", "/api", Need::Permission(Read)),
        ];
        for (method, path, need) in table {
            assert_eq!(permission(&method.parse().unwrap(), path), *need, "{method} {path}");
        }
    }

    #[test]
    fn only_addresses_and_localhost_count_as_this_machine() {
        for host in ["127.0.0.1:4200", "localhost:4200", "localhost", "[::1]:4200", "10.0.0.5:80", "192.168.1.2"] {
            assert!(is_address_or_localhost(host), "{host}");
        }
        for host in ["evil.example:4200", "localhost.evil.example:4200", "[nope]:1", "127.0.0.1.nip.io:4200"] {
            assert!(!is_address_or_localhost(host), "{host}");
        }
    }

    #[test]
    fn cors_origins_are_checked() {
        assert_eq!(parse_origin("https://Dash.example.com/"), Ok("https://dash.example.com".into()));
        assert_eq!(parse_origin("http://127.0.0.1:3000"), Ok("http://127.0.0.1:3000".into()));
        for bad in ["dash.example.com", "ftp://x", "https://", "https://x/path", "https://u@x"] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
