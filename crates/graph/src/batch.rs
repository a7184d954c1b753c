//! `POST /$batch`: many user reads in one request (up to 20 each).

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use url::Url;

use crate::client::{Call, encode_path_segment, names_an_object};
use crate::error::graph_error;
use crate::page::user_entry;
use crate::throttle::{backoff, names, parse_retry_after, resource_units};
use crate::users::{GraphUser, USER_SELECT};
use crate::{Error, GraphClient};

/// Most requests Graph accepts in one `$batch`.
pub const MAX_BATCH_REQUESTS: usize = 20;

#[derive(Deserialize)]
struct BatchAnswer {
    responses: Vec<InnerAnswer>,
}

#[derive(Deserialize)]
struct InnerAnswer {
    id: String,
    status: u16,
    #[serde(default)]
    headers: HashMap<String, String>,
    #[serde(default)]
    body: Option<Box<RawValue>>,
}

impl InnerAnswer {
    fn retry_after(&self) -> Option<Duration> {
        self.headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
            .and_then(|(_, value)| parse_retry_after(value))
    }

    fn body_bytes(&self) -> &[u8] {
        self.body.as_ref().map_or(b"", |b| b.get().as_bytes())
    }
}

impl GraphClient {
    /// Reads users by object id or userPrincipalName with `POST /v1.0/$batch`, 20 per request
    /// (larger inputs are split), and answers `(key, user)` for every key in input order;
    /// `None` where Graph answers 404 (and for empty keys, `.` and `..`, without a request).
    ///
    /// Inner answers are matched by their id, in whatever order they come. The answers that
    /// came are kept; only the inner requests that failed with a retryable status (429, 5xx
    /// except 501) are sent again, in a smaller batch, after the longest `Retry-After` among
    /// them (which also holds the client's other requests) or a backoff, within the retry
    /// policy's attempts. Any other inner error fails the call with that error.
    pub async fn get_users_batch(
        &self,
        ids_or_upns: &[String],
    ) -> Result<Vec<(String, Option<GraphUser>)>, Error> {
        let url = self.graph_url("/v1.0/$batch")?;
        let wanted: Vec<(usize, &str)> = ids_or_upns
            .iter()
            .enumerate()
            .filter(|(_, key)| names_an_object(key))
            .map(|(position, key)| (position, key.as_str()))
            .collect();
        let chunks = futures::future::try_join_all(
            wanted
                .chunks(MAX_BATCH_REQUESTS)
                .map(|chunk| self.batch_chunk(&url, chunk)),
        )
        .await?;
        let mut found: Vec<Option<GraphUser>> = vec![None; ids_or_upns.len()];
        for (position, user) in chunks.into_iter().flatten() {
            found[position] = user;
        }
        Ok(ids_or_upns.iter().cloned().zip(found).collect())
    }

    async fn batch_chunk(
        &self,
        url: &Url,
        chunk: &[(usize, &str)],
    ) -> Result<Vec<(usize, Option<GraphUser>)>, Error> {
        let policy = self.config().retry;
        let mut done = Vec::with_capacity(chunk.len());
        let mut pending: Vec<(usize, &str)> = chunk.to_vec();
        let mut round: u32 = 0;
        while !pending.is_empty() {
            round += 1;
            let mut cost = 0;
            let mut requests = Vec::with_capacity(pending.len());
            for (position, key) in &pending {
                let relative = format!("/users/{}?$select={USER_SELECT}", encode_path_segment(key));
                cost += resource_units(&self.graph_url(&format!("/v1.0{relative}"))?);
                requests
                    .push(json!({"id": position.to_string(), "method": "GET", "url": relative}));
            }
            let body = json!({ "requests": requests });
            let answer: BatchAnswer = self
                .call(Call::post_json(url, &body, cost), |bytes| {
                    serde_json::from_slice(bytes)
                        .map_err(|e| Error::Decode(format!("$batch answer: {e}")))
                })
                .await?;
            let mut answers: HashMap<String, InnerAnswer> = answer
                .responses
                .into_iter()
                .map(|inner| (inner.id.clone(), inner))
                .collect();
            let mut failed = Vec::new();
            let mut longest: Option<Duration> = None;
            let mut last_failure = None;
            let mut permanent = None;
            for (position, key) in pending {
                let inner = answers.remove(&position.to_string()).ok_or_else(|| {
                    Error::Decode(format!(
                        "$batch answer has no response for request {position}"
                    ))
                })?;
                match inner.status {
                    200..=299 => {
                        let body = inner
                            .body
                            .as_deref()
                            .ok_or_else(|| Error::Decode(format!("$batch: user {key}: no body")))?;
                        let user = user_entry(body).map_err(|rejected| {
                            Error::Decode(format!("$batch: user {key}: {}", rejected.reason))
                        })?;
                        done.push((position, Some(user)));
                    }
                    // Not found is an answer, not a failure.
                    404 => done.push((position, None)),
                    status => {
                        if matches!(status, 429 | 503) {
                            metrics::counter!(names::THROTTLED, "status" => status.to_string())
                                .increment(1);
                        }
                        // Each inner answer carries its own headers; the longest pause
                        // asked for by any of them is the one to keep.
                        if let Some(wait) = inner.retry_after() {
                            longest = Some(longest.map_or(wait, |l: Duration| l.max(wait)));
                        }
                        let error = graph_error(status, None, inner.body_bytes());
                        if error.is_retryable() {
                            last_failure = Some(error);
                            failed.push((position, key));
                        } else if permanent.is_none() {
                            permanent = Some(error);
                        }
                    }
                }
            }
            if let Some(wait) = longest {
                // The next call waits for the hold, like every other request of the client.
                self.hold_for(wait);
            }
            if let Some(error) = permanent {
                return Err(error);
            }
            let Some(error) = last_failure else {
                break;
            };
            if round >= policy.max_attempts {
                tracing::warn!(
                    failed = failed.len(),
                    rounds = round,
                    error = %error,
                    "requests inside a $batch kept failing, giving up"
                );
                return Err(error);
            }
            metrics::counter!(names::RETRIES, "reason" => "batch_inner").increment(1);
            tracing::warn!(
                failed = failed.len(),
                answered = done.len(),
                round,
                retry_after_ms = longest.map(|d| d.as_millis() as u64),
                error = %error,
                "requests inside a $batch failed, retrying only them"
            );
            if longest.is_none() {
                tokio::time::sleep(backoff(&policy, round)).await;
            }
            pending = failed;
        }
        Ok(done)
    }
}
