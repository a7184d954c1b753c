//! The crate's error type and the parsing of Graph and token-endpoint error bodies.

use serde_json::Value;

/// What went wrong, grouped by what the caller does about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The token endpoint refused the credentials or the request (AADSTS error).
    ///
    /// Fix the tenant id, client id, secret or consent; retrying only helps for 429 and 5xx.
    /// Never carries the client secret.
    #[error("token request refused ({status}): {error}: {description}")]
    Auth {
        /// HTTP status of the token endpoint's answer.
        status: u16,
        /// OAuth error, e.g. `invalid_client`.
        error: String,
        /// `error_description`, e.g. `AADSTS7000215: Invalid client secret provided...`.
        description: String,
        /// AADSTS numbers from `error_codes`, e.g. `[7000215]`.
        error_codes: Vec<u64>,
    },
    /// Graph answered with an error status.
    #[error("graph answered {status} {code}: {message}")]
    Graph {
        /// HTTP status.
        status: u16,
        /// The most specific error code in the (nested) `innerError` chain.
        code: String,
        /// The top-level error message.
        message: String,
        /// Graph's `request-id`, for Microsoft support.
        request_id: Option<String>,
    },
    /// A delta link or token is no longer valid (410 Gone, `syncStateNotFound`,
    /// `resyncRequired`): drop the stored deltaLink and run a full resync from
    /// [`DeltaStart::Initial`](crate::DeltaStart::Initial). Not retryable.
    #[error("delta sync state is gone ({status} {code}): {message}; a full resync is needed")]
    SyncReset {
        /// HTTP status, usually 410.
        status: u16,
        /// The error code that asked for the resync.
        code: String,
        /// Graph's message.
        message: String,
    },
    /// The named object does not exist (e.g. the group of a group-scoped read).
    #[error("{resource} not found")]
    NotFound {
        /// What was looked for, e.g. `group 0b1c...`.
        resource: String,
    },
    /// The request did not complete: connection failure, timeout, broken body.
    #[error("transport error: {0}")]
    Transport(#[source] reqwest::Error),
    /// A response could not be understood (not JSON, no `value` array, bad `nextLink`...).
    #[error("cannot decode graph response: {0}")]
    Decode(String),
    /// The configuration cannot work (page size out of range, bad URL, unknown cloud).
    #[error("invalid graph configuration: {0}")]
    InvalidConfig(String),
}

impl Error {
    /// Returns true for failures worth retrying later: 429, 5xx (except 501) and transport errors.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Auth { status, .. } | Self::Graph { status, .. } => {
                *status == 429 || (*status >= 500 && *status != 501)
            }
            Self::Transport(_) => true,
            Self::Decode(_)
            | Self::InvalidConfig(_)
            | Self::SyncReset { .. }
            | Self::NotFound { .. } => false,
        }
    }
}

/// Builds [`Error::Graph`] from a non-success response.
///
/// The code is the deepest `code` in the `innerError`/`innererror` chain, skipping codes that
/// merely repeat the HTTP status (the throttling body nests `"code": "429"`).
pub(crate) fn graph_error(status: u16, header_request_id: Option<String>, body: &[u8]) -> Error {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let Some(error) = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .filter(|e| e.is_object())
    else {
        if status == 410 {
            return Error::SyncReset {
                status,
                code: format!("http{status}"),
                message: snippet(body),
            };
        }
        return Error::Graph {
            status,
            code: format!("http{status}"),
            message: snippet(body),
            request_id: header_request_id,
        };
    };
    let mut code = None;
    let mut request_id = None;
    let mut reset_code = None;
    let mut level = Some(error);
    while let Some(current) = level {
        if let Some(c) = current.get("code").and_then(Value::as_str)
            && !c.is_empty()
            && c != status.to_string()
        {
            if SYNC_RESET_CODES.iter().any(|r| r.eq_ignore_ascii_case(c)) {
                reset_code = Some(c.to_owned());
            }
            code = Some(c.to_owned());
        }
        if let Some(id) = ["request-id", "requestId"]
            .iter()
            .find_map(|key| current.get(*key).and_then(Value::as_str))
        {
            request_id = Some(id.to_owned());
        }
        level = current
            .get("innerError")
            .or_else(|| current.get("innererror"))
            .filter(|inner| inner.is_object());
    }
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map_or_else(|| snippet(body), str::to_owned);
    if status == 410 || reset_code.is_some() {
        return Error::SyncReset {
            status,
            code: reset_code
                .or(code)
                .unwrap_or_else(|| format!("http{status}")),
            message,
        };
    }
    Error::Graph {
        status,
        code: code.unwrap_or_else(|| format!("http{status}")),
        message,
        request_id: request_id.or(header_request_id),
    }
}

/// Error codes meaning a delta token is no longer valid.
const SYNC_RESET_CODES: [&str; 2] = ["syncStateNotFound", "resyncRequired"];

/// Builds [`Error::Auth`] from a token-endpoint failure, removing the secret if it was echoed.
pub(crate) fn auth_error(status: u16, body: &[u8], secret: &str) -> Error {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |key: &str| parsed.get(key).and_then(Value::as_str).map(str::to_owned);
    let scrub = |s: String| {
        if secret.is_empty() {
            s
        } else {
            s.replace(secret, "[REDACTED]")
        }
    };
    Error::Auth {
        status,
        error: scrub(text("error").unwrap_or_else(|| format!("http{status}"))),
        description: scrub(text("error_description").unwrap_or_else(|| snippet(body))),
        error_codes: parsed
            .get("error_codes")
            .and_then(Value::as_array)
            .map(|codes| codes.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default(),
    }
}

/// The start of a body that is not the expected JSON, for error messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut snippet: String = text.chars().take(200).collect();
    if snippet.len() < text.len() {
        snippet.push('…');
    }
    snippet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_nested_code_and_the_request_id_are_reported() {
        let body = br#"{"error":{"code":"badRequest","message":"Cannot process the request.",
            "innerError":{"code":"invalidRange","request-id":"r-1","date":"2020-01-01T00:00:00",
            "innererror":{"code":"fragmentOverlap"}}}}"#;
        match graph_error(400, None, body) {
            Error::Graph {
                status,
                code,
                message,
                request_id,
            } => {
                assert_eq!(status, 400);
                assert_eq!(code, "fragmentOverlap");
                assert_eq!(message, "Cannot process the request.");
                assert_eq!(request_id.as_deref(), Some("r-1"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_nested_code_repeating_the_status_does_not_hide_the_real_code() {
        // The sample 429 body in Microsoft Graph's throttling guidance.
        let body = br#"{"error":{"code":"TooManyRequests","innerError":{"code":"429",
            "date":"2020-08-18T12:51:51","message":"Please retry after",
            "request-id":"94fb3b52-452a-4535-a601-69e0a90e3aa2","status":"429"},
            "message":"Please retry again later."}}"#;
        let error = graph_error(429, None, body);
        assert!(error.is_retryable());
        match error {
            Error::Graph {
                code, request_id, ..
            } => {
                assert_eq!(code, "TooManyRequests");
                assert_eq!(
                    request_id.as_deref(),
                    Some("94fb3b52-452a-4535-a601-69e0a90e3aa2")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn gone_and_nested_resync_codes_are_sync_resets() {
        let gone = br#"{"error":{"code":"syncStateNotFound","message":"The sync state is gone."}}"#;
        assert!(matches!(
            graph_error(410, None, gone),
            Error::SyncReset { status: 410, code, .. } if code == "syncStateNotFound"
        ));
        let nested = br#"{"error":{"code":"badRequest","message":"m","innerError":{"code":"resyncRequired"}}}"#;
        let error = graph_error(400, None, nested);
        assert!(!error.is_retryable());
        assert!(matches!(error, Error::SyncReset { code, .. } if code == "resyncRequired"));
        assert!(matches!(
            graph_error(410, None, b""),
            Error::SyncReset { .. }
        ));
    }

    #[test]
    fn the_request_id_camel_case_form_and_the_header_are_used() {
        let body =
            br#"{"error":{"code":"invalidRange","message":"m","innerError":{"requestId":"r-2"}}}"#;
        assert!(matches!(
            graph_error(416, Some("h".into()), body),
            Error::Graph { request_id: Some(id), .. } if id == "r-2"
        ));
        assert!(matches!(
            graph_error(502, Some("h".into()), b"<html>bad gateway</html>"),
            Error::Graph { request_id: Some(id), code, message, .. }
                if id == "h" && code == "http502" && message.contains("bad gateway")
        ));
    }

    #[test]
    fn an_aadsts_body_becomes_an_auth_error_without_the_secret() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret s3cr3t provided.","error_codes":[7000215],"timestamp":"t","trace_id":"x","correlation_id":"y"}"#;
        let error = auth_error(401, body, "s3cr3t");
        assert!(!error.is_retryable());
        assert!(!error.to_string().contains("s3cr3t"));
        assert!(!format!("{error:?}").contains("s3cr3t"));
        assert!(matches!(
            error,
            Error::Auth { status: 401, error, error_codes, .. }
                if error == "invalid_client" && error_codes == [7_000_215]
        ));
    }

    #[test]
    fn throttling_and_server_errors_are_retryable_but_client_errors_are_not() {
        let graph = |status| Error::Graph {
            status,
            code: String::new(),
            message: String::new(),
            request_id: None,
        };
        assert!(graph(429).is_retryable());
        assert!(graph(503).is_retryable());
        assert!(graph(504).is_retryable());
        assert!(!graph(501).is_retryable());
        assert!(!graph(400).is_retryable());
        assert!(!graph(404).is_retryable());
        assert!(!Error::Decode(String::new()).is_retryable());
    }
}
