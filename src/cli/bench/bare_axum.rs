//! The machine's HTTP limit: a bare axum endpoint on loopback that parses a JSON body and
//! answers `{"ok":true}`, on a runtime of its own (as the server has), driven by the same load
//! generator as the server.

use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;

/// A running bare endpoint; stopped when dropped.
pub struct Bare {
    /// `http://127.0.0.1:PORT/`
    pub url: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Bare {
    /// Starts it on a free loopback port.
    pub fn start() -> Result<Bare, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("bare-axum")
            .build()
            .map_err(|e| format!("cannot start the bare endpoint's runtime: {e}"))?;
        // Bound here (no `block_on`: the caller may be inside another runtime), served there.
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| format!("cannot listen on loopback: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let app = Router::new().route(
            "/",
            post(|Json(body): Json<Value>| async move {
                std::hint::black_box(&body);
                Json(serde_json::json!({"ok": true}))
            }),
        );
        runtime.spawn(async move {
            if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                let _ = axum::serve(listener, app).await;
            }
        });
        Ok(Bare { url: format!("http://{addr}/"), runtime: Some(runtime) })
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
