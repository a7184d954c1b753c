//! Injected failures: the next N matching requests fail with Graph's error body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::graph_error::{GraphError, RequestIds};

/// A failure to inject with [`Emulator::inject`](crate::Emulator::inject).
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Requests whose path starts with this fail, e.g. `/v1.0/users` (also inner `$batch`
    /// requests, whose paths are `/v1.0` + their relative URL, and the token endpoint
    /// `/{tenant}/oauth2/v2.0/token`).
    pub path_prefix: String,
    /// Status to answer: 429, 503 and 500 as Graph does; 401, 400, 403, 404 and others too.
    pub status: u16,
    /// `Retry-After` header in seconds (fractional allowed, sent as given).
    pub retry_after: Option<f64>,
    /// How many matching requests fail; the fault is gone after that.
    pub times: usize,
}

impl Fault {
    /// `times` 429 answers with Graph's throttling body and an optional `Retry-After`.
    pub fn throttle(
        path_prefix: impl Into<String>,
        retry_after: Option<f64>,
        times: usize,
    ) -> Self {
        Self {
            path_prefix: path_prefix.into(),
            status: 429,
            retry_after,
            times,
        }
    }

    /// `times` answers with `status` and no `Retry-After`.
    pub fn status(path_prefix: impl Into<String>, status: u16, times: usize) -> Self {
        Self {
            path_prefix: path_prefix.into(),
            status,
            retry_after: None,
            times,
        }
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        self.times > 0 && path.starts_with(&self.path_prefix)
    }

    /// The answer Graph would give.
    pub(crate) fn response(&self, ids: &RequestIds) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let (code, message) = match self.status {
            429 => ("TooManyRequests", "Please retry again later."),
            503 => (
                "serviceNotAvailable",
                "The service is temporarily unavailable. Please retry after a delay.",
            ),
            500 => ("generalException", "An internal server error occurred."),
            401 => (
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
            ),
            403 => (
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            ),
            404 => ("Request_ResourceNotFound", "Resource does not exist."),
            400 => ("BadRequest", "Bad request."),
            410 => ("syncStateNotFound", "The sync state is not found."),
            _ => ("UnknownError", "Injected failure."),
        };
        let mut error = GraphError::new(status, code, message, ids);
        if self.status == 429 {
            error = error.with_inner_code("429");
        }
        let mut response = error.into_response();
        if let Some(seconds) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&format_seconds(seconds))
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// `2.128` stays `2.128`, `3.0` becomes `3`.
pub(crate) fn format_seconds(seconds: f64) -> String {
    if seconds.fract() == 0.0 {
        format!("{}", seconds as u64)
    } else {
        format!("{seconds}")
    }
}
