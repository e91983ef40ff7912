//! Every failure answers with a status code and `{"error": {"code", "message"}}` naming what
//! to fix (plus `problems`, one per field, for invalid input).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::model::Problems;
use crate::service::ServiceError;

/// An HTTP error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    problems: Option<Problems>,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, a stable machine-readable code and a message for people.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), problems: None, retry_after: None }
    }

    /// 400 for input that does not have its documented shape, 422 for input that has it and
    /// breaks a rule its schema cannot state (see [`crate::model::Problem::rule`]); both list
    /// every problem.
    pub fn invalid(problems: Problems) -> ApiError {
        let message = format!("invalid input: {problems}");
        let status = if problems.only_rules() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::BAD_REQUEST };
        ApiError { status, code: "invalid", message, problems: Some(problems), retry_after: None }
    }

    /// 400 for a body that is not JSON.
    pub fn malformed(e: &serde_json::Error) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("the body is not valid JSON: {e}"))
    }

    /// Its machine-readable code, e.g. `invalid`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// 404 for an unknown route.
    pub fn no_route(method: &str, path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!("no route for {method} {path}; all routes live under /api"),
        )
    }
}

/// 405 for a route that exists without this method (axum adds the `Allow` header).
pub(super) async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} {} is not a route; the `Allow` header lists the methods it takes", method, uri.path()),
    )
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match e {
            ServiceError::Invalid(p) => ApiError::invalid(p),
            ServiceError::Overloaded { retry_after_secs } => {
                let mut err = ApiError::new(status, e.code(), e.public_message());
                err.retry_after = Some(retry_after_secs);
                err
            }
            other => ApiError::new(status, other.code(), other.public_message()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, code = self.code, message = %self.message, "request failed");
        }
        let mut body = json!({"error": {"code": self.code, "message": self.message}});
        if let Some(problems) = self.problems {
            body["error"]["problems"] = serde_json::to_value(problems).unwrap_or_default();
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}
