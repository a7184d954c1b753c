//! graph-emulator: a Microsoft Graph and Entra token endpoint emulator.
//!
//! It is a real HTTP server (axum) that speaks Graph's wire format, so the `graph` client,
//! the `userimport dev` demo and benchmarks run against it exactly as against Microsoft:
//!
//! - `POST /{tenant}/oauth2/v2.0/token` issues opaque bearer tokens for the client-credentials
//!   grant, with a client secret or a client assertion signed by a registered certificate
//!   (PS256 + `x5t#S256` or RS256 + `x5t`), for a Microsoft Graph resource of any cloud
//!   (whatever host the emulator is reached at, as Entra does), answering AADSTS errors
//!   otherwise;
//! - `GET /v1.0/users[/{id | userPrincipalName}]` with `$select`, `$top`, `$search` and
//!   `$count` (both need `ConsistencyLevel: eventual`) and `@odata.nextLink` paging;
//! - `GET /v1.0/users/delta` rounds (nextLinks, a final deltaLink, `@removed` entries,
//!   `$deltatoken=latest`, 410 Gone for expired tokens), served from a change log that the
//!   mutation API ([`Emulator::create_user`], [`Emulator::update_user`]...) appends to;
//! - `GET /v1.0/groups/{id}` and `/v1.0/groups/{id}/transitiveMembers` (users, nested groups,
//!   devices, contacts, service principals, each with `@odata.type`);
//! - `GET /v1.0/directory/deletedItems/microsoft.graph.user`: soft-deleted users (restorable;
//!   [`Emulator::restore_user`] brings one back, [`Emulator::hard_delete_user`] purges it);
//! - `POST /v1.0/$batch` (up to 20 GETs, answered in shuffled order).
//!
//! Everything is served at one origin ([`Emulator::base_url`]). Every request is recorded
//! with its headers and timing ([`Emulator::requests`]), failures can be injected
//! ([`Emulator::inject`], [`Emulator::set_latency`]) and the largest number of Graph requests
//! in flight is tracked ([`Emulator::max_in_flight`]). [`synthetic_users`] builds a
//! deterministic tenant with guests, disabled accounts, non-ASCII names and near-colliding
//! names; [`synthetic_groups`] adds groups over it.

mod admin;
mod batch;
mod certificates;
mod deleted;
mod delta;
mod directory;
mod faults;
mod graph_error;
mod groups;
mod idp;
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

use crate::directory::Directory;
use crate::graph_error::{GraphError, RequestIds};
use crate::state::{AppState, Settings, Shared, TokenRejection};

pub use crate::batch::MAX_BATCH_REQUESTS;
pub use crate::certificates::EmulatedCertificate;
pub use crate::directory::{Change, ChangeKind, UserUpdate};
pub use crate::faults::Fault;
pub use crate::groups::{EmulatedGroup, GroupMember, SYNTHETIC_GROUP_IDS, synthetic_groups};
pub use crate::idp::{AccessTokenSpec, SigningKey};
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
    /// Certificates registered on the client: assertions signed by their keys are accepted.
    pub certificates: Vec<EmulatedCertificate>,
    /// The tenant's groups.
    pub groups: Vec<EmulatedGroup>,
    /// Entries per page of `/users/delta` (Graph chooses its own; default 200).
    pub delta_page_size: usize,
    /// Repeat the first entry of every delta page at its end, as Graph may replay entries.
    pub duplicate_delta_entries: bool,
}

/// Default of [`EmulatorConfig::delta_page_size`].
pub const DEFAULT_DELTA_PAGE_SIZE: usize = 200;

impl EmulatorConfig {
    /// Returns a config with fixed credentials and `n` users from [`synthetic_users`] in
    /// `contoso.com`, no groups and no certificates.
    pub fn synthetic(n: usize) -> Self {
        Self {
            tenant_id: SYNTHETIC_TENANT_ID.to_owned(),
            client_id: SYNTHETIC_CLIENT_ID.to_owned(),
            client_secret: SYNTHETIC_CLIENT_SECRET.to_owned(),
            users: synthetic_users(n, SYNTHETIC_DOMAIN),
            token_lifetime: Duration::from_secs(3599),
            certificates: Vec::new(),
            groups: Vec::new(),
            delta_page_size: DEFAULT_DELTA_PAGE_SIZE,
            duplicate_delta_entries: false,
        }
    }

    /// Like [`EmulatorConfig::synthetic`], with the groups of [`synthetic_groups`].
    pub fn synthetic_with_groups(n: usize) -> Self {
        let config = Self::synthetic(n);
        Self {
            groups: synthetic_groups(&config.users),
            ..config
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
        let directory = Directory::new(config.users, config.groups)?;
        let state: AppState = Arc::new(Shared::new(
            Settings {
                tenant_id: config.tenant_id,
                client_id: config.client_id,
                client_secret: config.client_secret,
                certificates: config.certificates,
                token_lifetime: config.token_lifetime,
                delta_page_size: config.delta_page_size,
                duplicate_delta_entries: config.duplicate_delta_entries,
                base_url: base_url.clone(),
            },
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

    /// The issuer of the access tokens this emulator signs (`{base}/{tenant}/v2.0`).
    pub fn issuer(&self) -> String {
        format!(
            "{}/{}/v2.0",
            self.base_url.as_str().trim_end_matches('/'),
            self.state.tenant_id
        )
    }

    /// Where the signing keys are published (a tenant's JWKS URL).
    pub fn jwks_url(&self) -> String {
        format!(
            "{}/{}/discovery/v2.0/keys",
            self.base_url.as_str().trim_end_matches('/'),
            self.state.tenant_id
        )
    }

    /// Mints an access token for our own API, as the tenant's identity provider would.
    pub fn sign_access_token(&self, spec: &AccessTokenSpec) -> anyhow::Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        idp::sign(spec, &self.issuer(), i64::try_from(now)?)
    }

    /// The person the emulated sign-in page signs in (authorization code flow), with the
    /// access token they get; `None`: sign-in is refused (`access_denied`).
    pub fn sign_in_as(&self, person: Option<AccessTokenSpec>) {
        self.state.sign_in.set(person);
    }

    /// Rolls the published signing keys: rsa-2 appears, rsa-1 goes.
    pub fn rotate_signing_keys(&self) {
        self.state.idp.rotate();
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

    /// Returns the `scope` of every token request that carried one, oldest first (the
    /// request log has no bodies).
    pub fn token_scopes(&self) -> Vec<String> {
        self.state.token_scopes()
    }

    /// Returns the inner request URLs of every accepted `$batch`, oldest batch first, each in
    /// the order the batch listed them (the request log has the outer request only).
    pub fn batches(&self) -> Vec<Vec<String>> {
        self.state.batches()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.state.clear_requests();
    }

    /// Returns the tenant's current (active) users in serving order.
    pub fn users(&self) -> Vec<EmulatedUser> {
        self.state.directory().active_users().cloned().collect()
    }

    /// Returns the soft-deleted users (the deleted items), in serving order.
    pub fn deleted_users(&self) -> Vec<EmulatedUser> {
        self.state.directory().deleted_users().cloned().collect()
    }

    // ---- faults and timing ----

    /// Makes the next `fault.times` requests whose path starts with `fault.path_prefix` fail
    /// (faults are matched in the order they were injected).
    pub fn inject(&self, fault: Fault) {
        self.state.inject(fault);
    }

    /// Removes every injected fault that has not fired yet.
    pub fn clear_faults(&self) {
        self.state.clear_faults();
    }

    /// Delays every Graph request (`/v1.0/...`, not the token endpoint) by `latency` before
    /// it is checked and answered.
    pub fn set_latency(&self, latency: Duration) {
        self.state.set_latency(latency);
    }

    /// Returns the largest number of Graph requests that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight()
    }

    /// Restarts [`Emulator::max_in_flight`] from the requests in flight now.
    pub fn reset_max_in_flight(&self) {
        self.state.reset_max_in_flight();
    }

    /// Forgets every issued access token: Graph answers 401 to them from now on.
    pub fn revoke_tokens(&self) {
        self.state.revoke_tokens();
    }

    /// Makes the token endpoint judge assertion times as if it were `ahead` later (a client
    /// whose clock is behind): a fresh assertion then looks expired.
    pub fn set_clock_ahead(&self, ahead: Duration) {
        self.state.set_clock_ahead(ahead);
    }

    /// Invalidates every delta and skip token issued so far: using one answers 410 Gone
    /// (`syncStateNotFound`, with a `Location` to start over from).
    pub fn expire_delta_tokens(&self) {
        self.state.expire_delta_tokens();
    }

    // ---- mutations (each appends to the change log; returns its sequence number) ----

    /// Adds a user at the end of the serving order.
    pub fn create_user(&self, user: EmulatedUser) -> anyhow::Result<u64> {
        self.state.directory_mut().create(user)
    }

    /// Changes properties of an active user (rename, new UPN, enable/disable...).
    pub fn update_user(&self, id: &str, update: UserUpdate) -> anyhow::Result<u64> {
        self.state.directory_mut().update(id, update)
    }

    /// Moves an active user to the deleted items (restorable).
    pub fn soft_delete_user(&self, id: &str) -> anyhow::Result<u64> {
        self.state.directory_mut().soft_delete(id)
    }

    /// Brings a soft-deleted user back.
    pub fn restore_user(&self, id: &str) -> anyhow::Result<u64> {
        self.state.directory_mut().restore(id)
    }

    /// Deletes a user permanently (active or soft-deleted), also from every group.
    pub fn hard_delete_user(&self, id: &str) -> anyhow::Result<u64> {
        self.state.directory_mut().hard_delete(id)
    }

    /// Returns the change log, oldest first.
    pub fn changes(&self) -> Vec<Change> {
        self.state.directory().changes()
    }

    // ---- groups ----

    /// Returns the tenant's groups.
    pub fn groups(&self) -> Vec<EmulatedGroup> {
        self.state.directory().groups().to_vec()
    }

    /// Adds a group.
    pub fn add_group(&self, group: EmulatedGroup) -> anyhow::Result<()> {
        self.state.directory_mut().add_group(group)
    }

    /// Adds a direct member to a group.
    pub fn add_group_member(&self, group_id: &str, member: GroupMember) -> anyhow::Result<()> {
        self.state
            .directory_mut()
            .add_group_member(group_id, member)
    }

    /// Removes a direct member from a group; `Ok(false)` if it was not a member.
    pub fn remove_group_member(&self, group_id: &str, member_id: &str) -> anyhow::Result<bool> {
        self.state
            .directory_mut()
            .remove_group_member(group_id, member_id)
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

/// The Graph routes under `/v1.0`, without layers.
fn graph_routes() -> Router<AppState> {
    Router::new()
        .route("/users", get(users::list_users))
        .route("/users/delta", get(delta::users_delta))
        .route("/users/{id_or_upn}", get(users::get_user))
        .route("/groups/{id}", get(groups::get_group))
        .route(
            "/groups/{id}/transitiveMembers",
            get(groups::transitive_members),
        )
        // Graph's paths are case-insensitive; both spellings appear in its documentation.
        .route(
            "/directory/deletedItems/microsoft.graph.user",
            get(deleted::list_deleted_users),
        )
        .route(
            "/directory/deleteditems/microsoft.graph.user",
            get(deleted::list_deleted_users),
        )
        .route("/$batch", post(batch::batch))
        .fallback(unknown_segment)
}

/// All routes: the request log outermost, then latency and the in-flight count (Graph only),
/// injected faults, the bearer check (Graph only), the handlers.
fn router(state: AppState) -> Router {
    let graph = graph_routes().layer(middleware::from_fn_with_state(
        state.clone(),
        require_bearer,
    ));
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token::issue_token))
        .route("/{tenant}/oauth2/v2.0/authorize", get(idp::authorize))
        .route("/{tenant}/discovery/v2.0/keys", get(idp::keys))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(idp::discovery),
        )
        .nest("/v1.0", graph)
        // The tenant's administrator, for `userimport dev tenant` (not Graph; see admin.rs).
        .merge(admin_routes())
        .layer(middleware::from_fn_with_state(state.clone(), inject_faults))
        .layer(middleware::from_fn_with_state(state.clone(), slow_down))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ))
        .with_state(state)
}

/// The tenant administrator's routes (`/_emulator/…`), in the outer and the `$batch` router.
fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/_emulator/users", post(admin::create_user))
        .route(
            "/_emulator/users/{key}",
            axum::routing::patch(admin::update_user),
        )
        .route("/_emulator/users/{key}/{action}", post(admin::user_life))
        .route(
            "/_emulator/groups/{group}/members",
            axum::routing::patch(admin::update_group_members),
        )
        .route(
            "/_emulator/groups/{group}/members/{key}",
            axum::routing::put(admin::join_group).delete(admin::leave_group),
        )
}

/// The router inner `$batch` requests go through: faults and the bearer check, but no log,
/// latency or in-flight count (the outer request has those).
pub(crate) fn inner_router(state: AppState) -> Router {
    let graph = graph_routes().layer(middleware::from_fn_with_state(
        state.clone(),
        require_bearer,
    ));
    Router::new()
        .nest("/v1.0", graph)
        // The tenant's administrator, for `userimport dev tenant` (not Graph; see admin.rs).
        .merge(admin_routes())
        .layer(middleware::from_fn_with_state(state.clone(), inject_faults))
        .with_state(state)
}

/// Records every request with its headers, timing and response status.
async fn record_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let at = Instant::now();
    let method = request.method().to_string();
    let path_and_query = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |pq| pq.as_str().to_owned(),
    );
    let has_authorization = request.headers().contains_key(header::AUTHORIZATION);
    let headers = request
        .headers()
        .iter()
        .filter(|(name, _)| *name != header::AUTHORIZATION)
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    tracing::debug!(%method, %path_and_query, status, "request served");
    state.record(RecordedRequest {
        method,
        path_and_query,
        has_authorization,
        status,
        at,
        answered_at: Instant::now(),
        headers,
    });
    response
}

/// Counts Graph requests in flight and applies the injected latency.
async fn slow_down(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/v1.0/") {
        return next.run(request).await;
    }
    let _in_flight = state.enter();
    let latency = state.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    next.run(request).await
}

/// Answers with an injected fault when one matches the path.
async fn inject_faults(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.take_fault(request.uri().path()) {
        Some(fault) => {
            let ids = RequestIds {
                request_id: Uuid::new_v4().to_string(),
                client_request_id: Uuid::new_v4().to_string(),
            };
            tracing::debug!(
                path = request.uri().path(),
                status = fault.status,
                "injected fault"
            );
            fault.response(&ids)
        }
        None => next.run(request).await,
    }
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
