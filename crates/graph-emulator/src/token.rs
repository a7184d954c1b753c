//! `POST /{tenant}/oauth2/v2.0/token`: the client-credentials grant with a client secret or
//! a certificate (a signed client assertion).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;
use uuid::Uuid;

use crate::certificates::verify_assertion;
use crate::state::AppState;
use crate::time::UtcTime;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An AADSTS failure as the token endpoint reports it.
struct TokenError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    description: String,
}

impl TokenError {
    fn new(status: StatusCode, error: &'static str, code: u32, description: String) -> Self {
        Self {
            status,
            error,
            code,
            description,
        }
    }

    fn missing(parameter: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900_144,
            format!("The request body must contain the following parameter: '{parameter}'."),
        )
    }

    fn into_response(self, correlation_id: String) -> Response {
        let timestamp = UtcTime::now().token_endpoint_format();
        let trace_id = Uuid::new_v4().to_string();
        let description = format!(
            "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
            self.code, self.description
        );
        let body = json!({
            "error": self.error,
            "error_description": description,
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        });
        (self.status, Json(body)).into_response()
    }
}

/// The parameters of a token request, from the form body and an optional HTTP Basic header.
#[derive(Default)]
struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
    scope: Option<String>,
}

impl TokenRequest {
    fn parse(headers: &HeaderMap, body: &[u8]) -> Self {
        let mut request = Self::default();
        for (key, value) in url::form_urlencoded::parse(body) {
            let slot = match key.as_ref() {
                "grant_type" => &mut request.grant_type,
                "client_id" => &mut request.client_id,
                "client_secret" => &mut request.client_secret,
                "scope" => &mut request.scope,
                "client_assertion_type" => &mut request.client_assertion_type,
                "client_assertion" => &mut request.client_assertion,
                _ => continue,
            };
            *slot = Some(value.into_owned());
        }
        // RFC 6749 §2.3.1: HTTP Basic with form-encoded id and secret.
        if let Some((id, secret)) = basic_credentials(headers) {
            request.client_id.get_or_insert(id);
            request.client_secret.get_or_insert(secret);
        }
        request
    }
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| -> String {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

pub(crate) async fn issue_token(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let correlation_id = headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
    let audience = format!(
        "{}/{tenant}/oauth2/v2.0/token",
        crate::users::origin(&state, &headers)
    );
    let request = TokenRequest::parse(&headers, &body);
    if request.grant_type.as_deref() == Some("authorization_code") {
        return crate::idp::exchange_code(&state, &body);
    }
    if let Some(scope) = &request.scope {
        state.record_token_scope(scope);
    }
    match check(&state, &tenant, &audience, &request) {
        Ok(()) => {
            let token = format!("emu.{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
            state.remember_token(token.clone(), Instant::now());
            let expires_in = state.token_lifetime.as_secs();
            Json(json!({
                "token_type": "Bearer",
                "expires_in": expires_in,
                "ext_expires_in": expires_in,
                "access_token": token,
            }))
            .into_response()
        }
        Err(error) => error.into_response(correlation_id),
    }
}

fn check(
    state: &AppState,
    tenant: &str,
    audience: &str,
    request: &TokenRequest,
) -> Result<(), TokenError> {
    if !tenant.eq_ignore_ascii_case(&state.tenant_id) {
        return Err(TokenError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90_002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        ));
    }
    let grant_type = request
        .grant_type
        .as_deref()
        .ok_or_else(|| TokenError::missing("grant_type"))?;
    if grant_type != "client_credentials" {
        return Err(TokenError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70_003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        ));
    }
    let client_id = request
        .client_id
        .as_deref()
        .ok_or_else(|| TokenError::missing("client_id"))?;
    let scope = request
        .scope
        .as_deref()
        .ok_or_else(|| TokenError::missing("scope"))?;
    if !client_id.eq_ignore_ascii_case(&state.client_id) {
        return Err(TokenError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700_016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        ));
    }
    if let Some(assertion) = request.client_assertion.as_deref() {
        if request.client_assertion_type.as_deref() != Some(JWT_BEARER) {
            return Err(TokenError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                50_027,
                "The client_assertion_type must be 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'.".to_owned(),
            ));
        }
        let now = SystemTime::now() + state.clock_ahead();
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        verify_assertion(
            assertion,
            &state.certificates,
            &state.client_id,
            audience,
            now,
        )
        .map_err(|refusal| {
            TokenError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                refusal.code,
                refusal.description,
            )
        })?;
        return check_scope(scope, tenant);
    }
    let Some(secret) = request.client_secret.as_deref() else {
        return Err(TokenError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7_000_216,
            "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.".to_owned(),
        ));
    };
    if secret != state.client_secret {
        return Err(TokenError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7_000_215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                state.client_id
            ),
        ));
    }
    check_scope(scope, tenant)
}

/// Resources the emulated tenant issues tokens for: Microsoft Graph, by its app id or by the
/// resource URI of any national cloud (the emulator stands in for each of them). Entra names
/// the resource, never the host the caller then sends requests to, so the emulator's own
/// origin is not one of them.
const GRAPH_RESOURCES: [&str; 5] = [
    "00000003-0000-0000-c000-000000000000",
    "https://graph.microsoft.com",
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "https://microsoftgraph.chinacloudapi.cn",
];

fn check_scope(scope: &str, tenant: &str) -> Result<(), TokenError> {
    let Some(resource) = scope
        .strip_suffix("/.default")
        .filter(|_| scope.split_whitespace().count() == 1)
    else {
        return Err(TokenError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1_002_012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        ));
    };
    // Entra matches resource URIs without a trailing slash and case-insensitively.
    let known = resource.trim_end_matches('/');
    if !GRAPH_RESOURCES
        .iter()
        .any(|r| r.eq_ignore_ascii_case(known))
    {
        return Err(TokenError::new(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500_011,
            format!(
                "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        ));
    }
    Ok(())
}
