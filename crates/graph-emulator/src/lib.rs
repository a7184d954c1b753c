//! graph-emulator: a Microsoft Graph and Entra token endpoint emulator.
//!
//! It is a real HTTP server (axum) that speaks Graph's wire format, so the `graph` client,
//! the `userimport dev` demo and benchmarks run against it exactly as against Microsoft:
//! `POST /{tenant}/oauth2/v2.0/token` issues opaque bearer tokens for the client-credentials
//! grant, and `GET /v1.0/users[/{id | userPrincipalName}]` serves a tenant with `$select`,
//! `$top` and `@odata.nextLink` paging. Both are served at one origin ([`Emulator::base_url`]).
//! Every request is recorded ([`Emulator::requests`]) so tests can assert on the wire traffic.
//! [`synthetic_users`] builds a deterministic tenant with guests, disabled accounts,
//! non-ASCII names and near-colliding names.

mod graph_error;
mod state;
mod synthetic;
mod time;
mod token;
mod users;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use url::Url;
use uuid::Uuid;

use crate::graph_error::{GraphError, RequestIds};
use crate::state::{AppState, Directory, Shared, TokenRejection};

pub use crate::state::RecordedRequest;
pub use crate::synthetic::{
    EmulatedUser, KIND_PERIOD, SyntheticKind, synthetic_kind, synthetic_users,
};

/// Tenant id of [`EmulatorConfig::synthetic`].
pub const SYNTHETIC_TENANT_ID: &str = "8b5a3c1e-2f4d-4c6b-9a7e-0d1f2e3c4b5a";
/// Client (application) id of [`EmulatorConfig::synthetic`].
pub const SYNTHETIC_CLIENT_ID: &str = "3f2e1d0c-9b8a-4765-8432-10fedcba9876";
/// Client secret of [`EmulatorConfig::synthetic`].
pub const SYNTHETIC_CLIENT_SECRET: &str = "emulator-secret~not-a-real-one";
/// Tenant domain of [`EmulatorConfig::synthetic`].
pub const SYNTHETIC_DOMAIN: &str = "contoso.com";

/// What the emulated tenant contains and which credentials it accepts.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Tenant id accepted in the token endpoint path.
    pub tenant_id: String,
    /// The only client id the token endpoint accepts.
    pub client_id: String,
    /// The secret of that client.
    pub client_secret: String,
    /// The tenant's users, served in this order.
    pub users: Vec<EmulatedUser>,
    /// Lifetime of issued tokens; the default is 3599 s, as Entra's `expires_in`.
    pub token_lifetime: Duration,
}

impl EmulatorConfig {
    /// Returns a config with fixed credentials and `n` users from [`synthetic_users`] in `contoso.com`.
    pub fn synthetic(n: usize) -> Self {
        Self {
            tenant_id: SYNTHETIC_TENANT_ID.to_owned(),
            client_id: SYNTHETIC_CLIENT_ID.to_owned(),
            client_secret: SYNTHETIC_CLIENT_SECRET.to_owned(),
            users: synthetic_users(n, SYNTHETIC_DOMAIN),
            token_lifetime: Duration::from_secs(3599),
        }
    }
}

/// A running emulator; it shuts down when dropped or on [`Emulator::shutdown`].
pub struct Emulator {
    state: AppState,
    base_url: Url,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("base_url", &self.base_url.as_str())
            .field("tenant_id", &self.state.tenant_id)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Starts serving on `listener`, which the caller has bound (port 0 is fine).
    pub async fn start(config: EmulatorConfig, listener: TcpListener) -> anyhow::Result<Self> {
        let address = listener.local_addr()?;
        let host = match address.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
            ip if ip.is_unspecified() => "[::1]".to_owned(),
            ip if ip.is_ipv6() => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        let base_url = Url::parse(&format!("http://{host}:{}", address.port()))?;
        let directory = Directory::new(config.users)?;
        let state: AppState = Arc::new(Shared::new(
            config.tenant_id,
            config.client_id,
            config.client_secret,
            config.token_lifetime,
            base_url.clone(),
            directory,
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self {
            state,
            base_url,
            stop: Some(stop),
            server: Some(server),
        })
    }

    /// Returns the origin serving both the token endpoint and Graph, e.g. `http://127.0.0.1:PORT/`.
    pub fn base_url(&self) -> Url {
        self.base_url.clone()
    }

    /// Returns the tenant id the token endpoint accepts.
    pub fn tenant_id(&self) -> &str {
        &self.state.tenant_id
    }

    /// Returns the client id the token endpoint accepts.
    pub fn client_id(&self) -> &str {
        &self.state.client_id
    }

    /// Returns the client secret the token endpoint accepts.
    pub fn client_secret(&self) -> &str {
        &self.state.client_secret
    }

    /// Returns every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests()
    }

    /// Returns the tenant's current users in serving order.
    pub fn users(&self) -> Vec<EmulatedUser> {
        self.state.directory().users().to_vec()
    }

    /// Stops accepting connections and waits (up to 5 s) for open ones to finish.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut server) = self.server.take() {
            match tokio::time::timeout(Duration::from_secs(5), &mut server).await {
                Ok(result) => result??,
                Err(_) => server.abort(),
            }
        }
        Ok(())
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// All routes; later features (delta, groups, `$batch`, throttling) add routes or layers here.
fn router(state: AppState) -> Router {
    let graph = Router::new()
        .route("/users", get(users::list_users))
        .route("/users/{id_or_upn}", get(users::get_user))
        .fallback(unknown_segment)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_bearer,
        ));
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token::issue_token))
        .nest("/v1.0", graph)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ))
        .with_state(state)
}

/// Records every request with its response status.
async fn record_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let path_and_query = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |pq| pq.as_str().to_owned(),
    );
    let has_authorization = request.headers().contains_key(header::AUTHORIZATION);
    let response = next.run(request).await;
    let status = response.status().as_u16();
    tracing::debug!(%method, %path_and_query, status, "request served");
    state.record(RecordedRequest {
        method,
        path_and_query,
        has_authorization,
        status,
    });
    response
}

/// Assigns Graph's request ids and refuses requests without a valid bearer token.
async fn require_bearer(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let ids = RequestIds {
        request_id: Uuid::new_v4().to_string(),
        client_request_id: request
            .headers()
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| Uuid::new_v4().to_string(), str::to_owned),
    };
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    let rejection = match token {
        None => Some("Access token is empty."),
        Some(token) => match state.check_token(token, Instant::now()) {
            Ok(()) => None,
            Err(TokenRejection::Unknown) => Some("Access token validation failure. Invalid token."),
            Err(TokenRejection::Expired) => {
                Some("Lifetime validation failed, the token is expired.")
            }
        },
    };
    let mut response = match rejection {
        Some(message) => {
            let mut response = GraphError::new(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                message,
                &ids,
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"\", error=\"invalid_token\""),
            );
            response
        }
        None => {
            request.extensions_mut().insert(ids.clone());
            next.run(request).await
        }
    };
    for (name, value) in [
        ("request-id", &ids.request_id),
        ("client-request-id", &ids.client_request_id),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Graph's answer for a path it does not know.
async fn unknown_segment(request: Request) -> Response {
    let ids = request
        .extensions()
        .get::<RequestIds>()
        .cloned()
        .unwrap_or_else(|| RequestIds {
            request_id: Uuid::new_v4().to_string(),
            client_request_id: Uuid::new_v4().to_string(),
        });
    let segment = request
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    GraphError::bad_request(
        format!("Resource not found for the segment '{segment}'."),
        &ids,
    )
    .into_response()
}
