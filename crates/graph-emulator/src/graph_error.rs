//! Graph's error body: `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::time::UtcTime;

/// The ids Graph reports for one request, also sent as `request-id` / `client-request-id` headers.
#[derive(Debug, Clone)]
pub(crate) struct RequestIds {
    pub(crate) request_id: String,
    /// Echoes the caller's `client-request-id` header, or a fresh id.
    pub(crate) client_request_id: String,
}

/// A Graph error ready to be sent.
#[derive(Debug, Clone)]
pub(crate) struct GraphError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) ids: RequestIds,
    /// `innerError.code` (with `message` and `status`), as in the 429 sample.
    pub(crate) inner_code: Option<&'static str>,
}

impl GraphError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        ids: &RequestIds,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            ids: ids.clone(),
            inner_code: None,
        }
    }

    /// Adds a nested code, as Graph's throttling answer has (`"code": "429"`).
    pub(crate) fn with_inner_code(mut self, code: &'static str) -> Self {
        self.inner_code = Some(code);
        self
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> serde_json::Value {
        let mut inner = json!({
            "date": UtcTime::now().graph_format(),
            "request-id": self.ids.request_id,
            "client-request-id": self.ids.client_request_id,
        });
        if let Some(code) = self.inner_code {
            inner["code"] = code.into();
            inner["message"] = "Please retry after".into();
            inner["status"] = self.status.as_u16().to_string().into();
        }
        json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": inner,
            }
        })
    }

    pub(crate) fn bad_request(message: impl Into<String>, ids: &RequestIds) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message, ids)
    }
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        let body = self.body();
        (self.status, Json(body)).into_response()
    }
}
