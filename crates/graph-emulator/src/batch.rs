//! `POST /v1.0/$batch`: up to 20 inner requests, each served by the same handlers, answered
//! in shuffled order.

use std::collections::{HashMap, HashSet};

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tower::ServiceExt as _;

use crate::graph_error::{GraphError, RequestIds};
use crate::state::AppState;
use crate::synthetic::splitmix64;
use crate::users::{internal, json_response};

/// Most inner requests in one batch.
pub const MAX_BATCH_REQUESTS: usize = 20;

#[derive(Deserialize)]
struct BatchRequest {
    requests: Vec<InnerRequest>,
}

#[derive(Deserialize)]
struct InnerRequest {
    id: String,
    method: String,
    url: String,
    #[serde(default)]
    headers: HashMap<String, String>,
}

pub(crate) async fn batch(
    State(state): State<AppState>,
    Extension(ids): Extension<RequestIds>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, GraphError> {
    let request: BatchRequest = serde_json::from_slice(&body)
        .map_err(|e| GraphError::bad_request(format!("Invalid batch payload format: {e}"), &ids))?;
    if request.requests.is_empty() {
        return Err(GraphError::bad_request(
            "Invalid batch payload format: no requests.",
            &ids,
        ));
    }
    if request.requests.len() > MAX_BATCH_REQUESTS {
        return Err(GraphError::bad_request(
            format!(
                "Number of batch operations ({}) exceeds the limit of {MAX_BATCH_REQUESTS}.",
                request.requests.len()
            ),
            &ids,
        ));
    }
    let mut seen = HashSet::new();
    if let Some(duplicate) = request
        .requests
        .iter()
        .find(|r| !seen.insert(r.id.as_str()))
    {
        return Err(GraphError::bad_request(
            format!("Batch request contains duplicate id '{}'.", duplicate.id),
            &ids,
        ));
    }
    state.record_batch(request.requests.iter().map(|r| r.url.clone()).collect());
    let router = crate::inner_router(state.clone());
    let mut responses = Vec::with_capacity(request.requests.len());
    for inner in request.requests {
        let answer = if !inner.method.eq_ignore_ascii_case("GET") {
            (
                405,
                Map::new(),
                GraphError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "BadRequest",
                    format!(
                        "The emulator only batches GET requests, not {}.",
                        inner.method
                    ),
                    &ids,
                )
                .body(),
            )
        } else if inner.url.trim_start_matches('/').starts_with("$batch") {
            (
                400,
                Map::new(),
                GraphError::bad_request("Nested batch requests are not supported.", &ids).body(),
            )
        } else {
            let path = if inner.url.starts_with('/') {
                format!("/v1.0{}", inner.url)
            } else {
                format!("/v1.0/{}", inner.url)
            };
            let mut builder = Request::builder().method(Method::GET).uri(&path);
            for name in [header::AUTHORIZATION, header::HOST] {
                if let Some(value) = headers.get(&name) {
                    builder = builder.header(name, value);
                }
            }
            for (name, value) in &inner.headers {
                builder = builder.header(name.as_str(), value.as_str());
            }
            let inner_request = builder.body(Body::empty()).map_err(|e| {
                GraphError::bad_request(format!("Invalid inner request: {e}"), &ids)
            })?;
            let Ok(response) = router.clone().oneshot(inner_request).await;
            let status = response.status().as_u16();
            let mut answer_headers = Map::new();
            for (name, value) in response.headers() {
                if matches!(name.as_str(), "content-type" | "retry-after" | "location")
                    && let Ok(value) = value.to_str()
                {
                    let name = if name == header::RETRY_AFTER {
                        "Retry-After"
                    } else if name == header::CONTENT_TYPE {
                        "Content-Type"
                    } else {
                        "Location"
                    };
                    answer_headers.insert(name.to_owned(), value.into());
                }
            }
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .map_err(|e| internal(e, &ids))?;
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            (status, answer_headers, body)
        };
        let (status, answer_headers, body) = answer;
        responses.push(json!({
            "id": inner.id,
            "status": status,
            "headers": answer_headers,
            "body": body,
        }));
    }
    shuffle(&mut responses, state.next_batch_seed());
    let body =
        serde_json::to_vec(&json!({ "responses": responses })).map_err(|e| internal(e, &ids))?;
    Ok(json_response(body))
}

/// Fisher–Yates with splitmix64: a different, reproducible order for each batch.
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = splitmix64(seed ^ 0xBA7C_4000);
    for i in (1..items.len()).rev() {
        state = splitmix64(state);
        let j = (state % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}
