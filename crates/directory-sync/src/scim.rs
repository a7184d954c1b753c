//! The SCIM 2.0 endpoint Entra's provisioning service pushes to (issue 18): its own HTTP
//! listener, `/scim/v2/…`, a bearer secret per request.
//!
//! A SCIM write is a change to the mirror, recorded under the open SCIM run (a sync run of
//! mode `scim`); every `round_interval_secs` a run that holds changes is closed and its
//! changes go through the same provisioning as a delta round's (registry updates with the
//! safety rail, auto-import, group-to-role rules). Entra pushes a few changes at a time, so
//! the safety rail counts the users disabled over a sliding window (`safety_window_secs`):
//! a mass disable spread over many small runs halts as one round would. User ids are mirror object ids: Entra's
//! objectId when it sends one as `externalId` (its default mapping), else a new one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, middleware};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::{RwLock, Semaphore};

use crate::config::ScimConfig;
use crate::domain::scim::{
    self as model, Kind, Lookup, MemberOp, ScimError, apply_patch, lookup_of, normalize,
    parse_filter, project, user_fields,
};
use crate::domain::{DeletionState, SyncMode, SyncRun, SyncRunStatus};
use crate::error::Error;
use crate::provision::{Mode, after_round_within};
use crate::store::{self, scim::StoredResource};
use crate::sync::{SyncContext, halted_reason, mirror_user, record};

const CONTENT_TYPE: &str = "application/scim+json";
/// Most resources one list answers (`count` is capped to it; ServiceProviderConfig says so).
const MAX_RESULTS: u32 = 200;
/// A filter that no index serves is checked against at most this many resources.
const MAX_SCANNED: u64 = 10_000;

/// SHA-256 of a bearer secret, hex: what `scim_tokens` keeps.
pub fn token_digest(secret: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A new bearer secret: 32 random bytes, hex.
pub fn new_token_secret() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| Error::Internal(anyhow::anyhow!("no randomness for a SCIM token")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The open SCIM run and what it has changed so far.
struct OpenRun {
    run: SyncRun,
    changed: AtomicBool,
    /// When its first change landed (Unix ms; 0: none yet): the run starts there.
    first_change_ms: std::sync::atomic::AtomicI64,
    created: AtomicU64,
    updated: AtomicU64,
    removed: AtomicU64,
}

impl OpenRun {
    /// Notes a committed change.
    fn changed(&self) {
        self.changed.store(true, Ordering::SeqCst);
        let _ = self.first_change_ms.compare_exchange(
            0,
            service_runtime::now_ms(),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    fn start() -> Self {
        Self {
            run: SyncRun::start(
                format!("scim-{}", uuid::Uuid::new_v4()),
                SyncMode::Scim,
                service_runtime::now_ms(),
            ),
            changed: AtomicBool::new(false),
            first_change_ms: std::sync::atomic::AtomicI64::new(0),
            created: AtomicU64::new(0),
            updated: AtomicU64::new(0),
            removed: AtomicU64::new(0),
        }
    }
}

/// The SCIM endpoint's state.
#[derive(Clone)]
pub struct ScimApi {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: SyncContext,
    config: ScimConfig,
    /// Writers hold it shared for their transaction; closing the run takes it exclusively, so
    /// no write lands in a run after it closed.
    open: RwLock<OpenRun>,
    /// Requests in flight; more are refused with 429.
    in_flight: Semaphore,
    /// One provisioning pass at a time (with the directory's rounds and approvals).
    sync_lock: Arc<tokio::sync::Mutex<()>>,
    /// Each token's request allowance (a token bucket: tokens left, when last filled).
    allowance: std::sync::Mutex<std::collections::HashMap<String, (f64, std::time::Instant)>>,
    /// Users disabled by the SCIM runs of the safety window: (when, how many), oldest first.
    /// Kept by this process; a restart starts a new window.
    recent_disables: std::sync::Mutex<std::collections::VecDeque<(i64, u64)>>,
}

impl ScimApi {
    pub fn new(
        ctx: SyncContext,
        config: ScimConfig,
        sync_lock: Arc<tokio::sync::Mutex<()>>,
    ) -> Self {
        let in_flight = Semaphore::new(config.max_concurrent_requests.max(1));
        Self {
            inner: Arc::new(Inner {
                ctx,
                config,
                open: RwLock::new(OpenRun::start()),
                in_flight,
                sync_lock,
                recent_disables: std::sync::Mutex::new(std::collections::VecDeque::new()),
                allowance: std::sync::Mutex::new(std::collections::HashMap::new()),
            }),
        }
    }

    pub fn router(&self) -> Router {
        let api = Router::new()
            .route("/ServiceProviderConfig", get(service_provider_config))
            .route(
                "/Schemas",
                get(|| async { listed(model::schema_definitions()) }),
            )
            .route(
                "/Schemas/{id}",
                get(|Path(id): Path<String>| async move {
                    one_of(model::schema_definitions(), "schema", &id)
                }),
            )
            .route(
                "/ResourceTypes",
                get(|| async { listed(model::resource_type_definitions()) }),
            )
            .route(
                "/ResourceTypes/{id}",
                get(|Path(id): Path<String>| async move {
                    one_of(model::resource_type_definitions(), "resource type", &id)
                }),
            )
            .route(
                "/.search",
                axum::routing::post(|| async {
                    scim_error(&ScimError::status(
                        501,
                        "searching several resource types at once is not supported; \
                         POST /Users/.search or /Groups/.search",
                    ))
                }),
            )
            .nest("/Users", resource_routes(Kind::User))
            .nest("/Groups", resource_routes(Kind::Group))
            .fallback(|| async { scim_error(&ScimError::status(404, "no such endpoint")) })
            .layer(middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self.clone());
        Router::new().nest("/scim/v2", api)
    }

    /// Closes the open run when it holds changes and provisions them; a run with none stays
    /// open. Called every `round_interval_secs`, and at shutdown.
    pub async fn close_round(&self) {
        let closed = {
            let mut open = self.inner.open.write().await;
            if !open.changed.load(Ordering::SeqCst) {
                return;
            }
            std::mem::replace(&mut *open, OpenRun::start())
        };
        let ctx = &self.inner.ctx;
        let mut run = closed.run;
        let first_change = closed.first_change_ms.load(Ordering::SeqCst);
        if first_change > 0 {
            run.started_at_ms = first_change;
        }
        run.users_created = closed.created.load(Ordering::SeqCst);
        run.users_updated = closed.updated.load(Ordering::SeqCst);
        run.users_removed = closed.removed.load(Ordering::SeqCst);
        run.users_seen = run.users_created + run.users_updated + run.users_removed;
        let _lock = self.inner.sync_lock.lock().await;
        let window_ms = i64::try_from(self.inner.config.safety_window_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        let recent: u64 = {
            let mut recent = self
                .inner
                .recent_disables
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let since = service_runtime::now_ms().saturating_sub(window_ms);
            while recent.front().is_some_and(|(at, _)| *at < since) {
                recent.pop_front();
            }
            recent.iter().map(|(_, n)| n).sum()
        };
        let result = after_round_within(
            ctx,
            &run.run_id,
            Mode::Apply { approved: false },
            Some(recent),
        )
        .await;
        run.finished_at_ms = service_runtime::now_ms();
        if let Ok(effects) = &result
            && effects.halted.is_none()
            && effects.disabled > 0
        {
            self.inner
                .recent_disables
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push_back((run.finished_at_ms, effects.disabled));
        }
        match result {
            Ok(effects) if effects.halted.is_some() => {
                let (would_disable, total_users) = effects.halted.unwrap_or_default();
                run.status = SyncRunStatus::AwaitingApproval;
                run.error = halted_reason(would_disable, total_users, &ctx.provisioning);
            }
            Ok(_) => run.status = SyncRunStatus::Succeeded,
            Err(error) => {
                run.status = SyncRunStatus::Failed;
                run.error = format!("{error}; its changes are provisioned with the next SCIM run");
                tracing::warn!(run_id = %run.run_id, %error, "provisioning SCIM changes failed; they move to the next run");
                // What was pushed is only in the mirror: the next run provisions it.
                self.carry_over(Some(&run.run_id)).await;
            }
        }
        record(ctx, &run).await;
        tracing::info!(
            run_id = %run.run_id,
            status = run.status.as_str(),
            created = run.users_created,
            updated = run.users_updated,
            removed = run.users_removed,
            "SCIM round closed"
        );
    }

    /// Moves the mirror changes of a SCIM run that will not be provisioned into the open run:
    /// of `failed`, or (`None`) of every SCIM run never closed (its process stopped first).
    pub async fn carry_over(&self, failed: Option<&str>) {
        let open = self.inner.open.write().await;
        let ctx = &self.inner.ctx;
        let moved = async {
            let mut conn = ctx.conn().await?;
            store::scim::carry_over_changes(&mut conn, &ctx.tenant_id, failed, &open.run.run_id)
                .await
        }
        .await;
        match moved {
            Ok(0) => {}
            Ok(users) => {
                open.changed();
                open.updated.fetch_add(users, Ordering::SeqCst);
                tracing::info!(users, run_id = %open.run.run_id, "SCIM changes not yet provisioned moved to the open run");
            }
            Err(error) => {
                tracing::error!(%error, "SCIM changes could not be moved to the open run")
            }
        }
    }

    /// Closes rounds on the configured interval until `shutdown`, then closes the last one.
    pub async fn run_rounds(self, shutdown: tokio_util::sync::CancellationToken) {
        let interval = Duration::from_secs(self.inner.config.round_interval_secs.max(1));
        // Changes a stopped process pushed but never provisioned.
        self.carry_over(None).await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(interval) => self.close_round().await,
            }
        }
        self.close_round().await;
    }

    /// Serves the endpoint on `listener` (with TLS when configured) until `shutdown`, closing
    /// SCIM rounds on their interval meanwhile; the last round is closed on the way out.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        tls: service_runtime::tls::ServerTls,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = ?listener.local_addr().ok(), tls = tls.enabled(), "serving SCIM");
        let rounds = tokio::spawn(self.clone().run_rounds(shutdown.clone()));
        let router = self.router();
        let stop = shutdown.clone().cancelled_owned();
        let served = if tls.enabled() {
            let local = listener.local_addr()?;
            let incoming = service_runtime::tls::incoming(listener, &tls, shutdown.clone())?;
            axum::serve(TlsListener { incoming, local }, router)
                .with_graceful_shutdown(stop)
                .await
        } else {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
        };
        shutdown.cancel();
        // The last round's provisioning may wait for peers: bounded, so shutdown is.
        if tokio::time::timeout(Duration::from_secs(20), rounds)
            .await
            .is_err()
        {
            tracing::warn!("the last SCIM round was still provisioning at shutdown");
        }
        Ok(served?)
    }

    /// Takes one request from a token's allowance: `max_requests_per_second` refill every
    /// second, up to twice that held. False when none is left.
    fn allow(&self, token_id: &str) -> bool {
        let rate = f64::from(self.inner.config.max_requests_per_second.max(1));
        let now = std::time::Instant::now();
        let mut allowance = self
            .inner
            .allowance
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (left, filled) = allowance
            .entry(token_id.to_owned())
            .or_insert((2.0 * rate, now));
        *left = (*left + now.duration_since(*filled).as_secs_f64() * rate).min(2.0 * rate);
        *filled = now;
        if *left >= 1.0 {
            *left -= 1.0;
            true
        } else {
            false
        }
    }

    fn tenant(&self) -> &str {
        &self.inner.ctx.tenant_id
    }

    fn base_url(&self, headers: &HeaderMap) -> String {
        let configured = self.inner.config.public_url.trim_end_matches('/');
        if !configured.is_empty() {
            return format!("{configured}/scim/v2");
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let scheme = if self.inner.config.tls.enabled() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{host}/scim/v2")
    }
}

/// TLS connections as axum accepts them.
struct TlsListener<S> {
    incoming: S,
    local: std::net::SocketAddr,
}

impl<S> axum::serve::Listener for TlsListener<S>
where
    S: tokio_stream::Stream<
            Item = Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
        > + Send
        + Unpin
        + 'static,
{
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        use tokio_stream::StreamExt as _;
        loop {
            match self.incoming.next().await {
                Some(Ok(stream)) => {
                    let peer = stream.get_ref().0.peer_addr().unwrap_or(self.local);
                    return (stream, peer);
                }
                Some(Err(error)) => tracing::debug!(%error, "SCIM connection failed"),
                // The stream ends at shutdown; graceful shutdown stops accepting first.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Every request: within the rate bound, with a live bearer secret of this tenant.
async fn guard(State(api): State<ScimApi>, request: Request, next: Next) -> Response {
    let Ok(_permit) = api.inner.in_flight.try_acquire() else {
        let mut response = scim_error(&ScimError::status(429, "too many requests in flight"));
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    let secret = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let Some(secret) = secret else {
        return unauthorized();
    };
    let digest = token_digest(secret);
    let found = async {
        let mut conn = api.inner.ctx.conn().await?;
        store::scim::authenticate(&mut conn, api.tenant(), &digest, service_runtime::now_ms()).await
    }
    .await;
    match found {
        Ok(Some(token_id)) if !api.allow(&token_id) => {
            let mut response =
                scim_error(&ScimError::status(429, "too many requests for this token"));
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Ok(Some(token_id)) => {
            tracing::debug!(%token_id, method = %request.method(), path = %request.uri().path(), "SCIM request");
            next.run(request).await
        }
        Ok(None) => unauthorized(),
        Err(error) => internal(error),
    }
}

fn unauthorized() -> Response {
    let mut response = scim_error(&ScimError::status(401, "a valid bearer token is required"));
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn scim_json(status: StatusCode, body: Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

fn scim_error(error: &ScimError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    scim_json(status, error.body())
}

fn internal(error: Error) -> Response {
    tracing::error!(%error, "SCIM request failed");
    scim_error(&ScimError::status(
        500,
        "internal error; see the service's log",
    ))
}

/// A use case's failure: a SCIM error for the client, or an internal one logged.
enum Failure {
    Scim(ScimError),
    Internal(Error),
}

impl From<ScimError> for Failure {
    fn from(error: ScimError) -> Self {
        Self::Scim(error)
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self::Internal(error)
    }
}

fn respond(result: Result<Response, Failure>) -> Response {
    match result {
        Ok(response) => response,
        Err(Failure::Scim(error)) => scim_error(&error),
        Err(Failure::Internal(error)) => internal(error),
    }
}

/// Reads a JSON body within the configured size.
async fn read_json(api: &ScimApi, body: Body) -> Result<Value, ScimError> {
    let limit = api.inner.config.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ScimError::status(413, format!("the body is larger than {limit} bytes")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ScimError::invalid_syntax(format!("the body is not valid JSON: {e}")))
}

fn timestamp(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A resource as answered: its attributes, `id` and `meta`.
fn rendered(
    api: &ScimApi,
    headers: &HeaderMap,
    kind: Kind,
    resource: &StoredResource,
    members: Option<Vec<String>>,
) -> Map<String, Value> {
    let mut body = resource.body.clone();
    body.insert("id".into(), Value::from(resource.id.clone()));
    if let Some(members) = members {
        // Members are users (Entra does not provision nested groups).
        let members: Vec<Value> = members
            .into_iter()
            .map(|id| json!({"value": id, "type": "User"}))
            .collect();
        body.insert("members".into(), Value::Array(members));
    }
    body.insert(
        "meta".into(),
        json!({
            "resourceType": kind.as_str(),
            "created": timestamp(resource.created_ms),
            "lastModified": timestamp(resource.modified_ms),
            "location": format!("{}/{}s/{}", api.base_url(headers), kind.as_str(), resource.id),
            "version": format!("W/\"{}\"", resource.version),
        }),
    );
    body
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListParams {
    filter: Option<String>,
    start_index: Option<i64>,
    count: Option<i64>,
    attributes: Option<String>,
    excluded_attributes: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadParams {
    attributes: Option<String>,
    excluded_attributes: Option<String>,
}

fn split_list(list: &Option<String>) -> Vec<String> {
    list.as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn members_of(api: &ScimApi, group_id: &str) -> Result<Vec<String>, Error> {
    let mut conn = api.inner.ctx.conn().await?;
    let mut members = Vec::new();
    let mut after = String::new();
    loop {
        let page = store::scim::group_member_ids(&mut conn, api.tenant(), group_id, &after, 10_000)
            .await?;
        let full = page.len() == 10_000;
        if let Some(last) = page.last() {
            after = last.clone();
        }
        members.extend(page);
        if !full {
            return Ok(members);
        }
    }
}

async fn list(
    api: ScimApi,
    kind: Kind,
    headers: HeaderMap,
    params: ListParams,
) -> Result<Response, Failure> {
    let start = params.start_index.unwrap_or(1).max(1);
    let count = params
        .count
        .unwrap_or(i64::from(MAX_RESULTS))
        .clamp(0, i64::from(MAX_RESULTS));
    let filter = params.filter.as_deref().map(parse_filter).transpose()?;
    let mut conn = api.inner.ctx.conn().await?;
    // The matching resources, in id order.
    let matching: Vec<StoredResource> = match &filter {
        None => {
            let total = store::scim::count(&mut conn, api.tenant(), kind).await?;
            let page = store::scim::page_at(
                &mut conn,
                api.tenant(),
                kind,
                start - 1,
                u32::try_from(count).unwrap_or(MAX_RESULTS),
            )
            .await?;
            drop(conn);
            return list_response(&api, &headers, kind, total, start, page, &params).await;
        }
        Some(filter) => match lookup_of(kind, filter) {
            Some(lookup) => store::scim::find(&mut conn, api.tenant(), kind, &lookup)
                .await?
                .into_iter()
                .filter(|r| matches_resource(r, filter))
                .collect(),
            None => {
                let mut found = Vec::new();
                let mut after = String::new();
                let mut scanned = 0u64;
                loop {
                    let page =
                        store::scim::page(&mut conn, api.tenant(), kind, &after, 1_000).await?;
                    let Some(last) = page.last() else { break };
                    after = last.id.clone();
                    scanned += page.len() as u64;
                    found.extend(page.into_iter().filter(|r| matches_resource(r, filter)));
                    if scanned >= MAX_SCANNED {
                        return Err(ScimError::too_many(format!(
                            "filter on more than {MAX_SCANNED} resources without an equality on id, externalId or {}",
                            kind.unique_attribute()
                        ))
                        .into());
                    }
                }
                found
            }
        },
    };
    drop(conn);
    let total = matching.len() as u64;
    let page: Vec<StoredResource> = matching
        .into_iter()
        .skip(usize::try_from(start - 1).unwrap_or(usize::MAX))
        .take(usize::try_from(count).unwrap_or(0))
        .collect();
    list_response(&api, &headers, kind, total, start, page, &params).await
}

fn matches_resource(resource: &StoredResource, filter: &scim_v2::filter::Filter) -> bool {
    let mut body = resource.body.clone();
    body.insert("id".into(), Value::from(resource.id.clone()));
    model::matches(&body, filter)
}

async fn list_response(
    api: &ScimApi,
    headers: &HeaderMap,
    kind: Kind,
    total: u64,
    start: i64,
    page: Vec<StoredResource>,
    params: &ListParams,
) -> Result<Response, Failure> {
    let attributes = split_list(&params.attributes);
    let excluded = split_list(&params.excluded_attributes);
    let wants_members = kind == Kind::Group
        && !excluded.iter().any(|a| a.eq_ignore_ascii_case("members"))
        && (attributes.is_empty() || attributes.iter().any(|a| a.eq_ignore_ascii_case("members")));
    let mut resources = Vec::with_capacity(page.len());
    for resource in &page {
        let members = if wants_members {
            Some(members_of(api, &resource.id).await?)
        } else {
            None
        };
        let mut body = rendered(api, headers, kind, resource, members);
        project(&mut body, &attributes, &excluded);
        resources.push(Value::Object(body));
    }
    Ok(scim_json(
        StatusCode::OK,
        json!({
            "schemas": [model::LIST_SCHEMA],
            "totalResults": total,
            "startIndex": start,
            "itemsPerPage": resources.len(),
            "Resources": resources,
        }),
    ))
}

async fn read(
    api: ScimApi,
    kind: Kind,
    id: String,
    headers: HeaderMap,
    params: ReadParams,
) -> Result<Response, Failure> {
    let mut conn = api.inner.ctx.conn().await?;
    let resource = store::scim::get(&mut conn, api.tenant(), kind, &id)
        .await?
        .ok_or_else(|| ScimError::not_found(kind, &id))?;
    drop(conn);
    let attributes = split_list(&params.attributes);
    let excluded = split_list(&params.excluded_attributes);
    let members = if kind == Kind::Group {
        Some(members_of(&api, &id).await?)
    } else {
        None
    };
    let mut body = rendered(&api, &headers, kind, &resource, members);
    project(&mut body, &attributes, &excluded);
    Ok(scim_json(StatusCode::OK, Value::Object(body)))
}

/// The mirror user a User resource describes.
fn mirror_of(
    api: &ScimApi,
    id: &str,
    body: &Map<String, Value>,
) -> Result<crate::domain::MirrorUser, ScimError> {
    let fields = user_fields(body)?;
    let graph_user = graph::GraphUser {
        id: id.to_owned(),
        user_principal_name: fields.user_name,
        mail: fields.mail,
        display_name: fields.display_name,
        given_name: fields.given_name,
        surname: fields.surname,
        account_enabled: Some(fields.active),
        user_type: fields.user_type,
    };
    mirror_user(api.tenant(), &graph_user).map_err(ScimError::invalid_value)
}

/// The id a new resource gets: Entra's objectId (its `externalId` under the default mapping)
/// when it is one, so a tenant moved from Graph to SCIM keeps its users; else a new GUID.
fn new_id(external_id: Option<&str>) -> String {
    external_id
        .and_then(service_runtime::normalize_guid)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Writes a resource and its mirror change in one transaction, under the open run.
/// `existing` is the resource being replaced (`None`: a create).
async fn write(
    api: &ScimApi,
    kind: Kind,
    existing: Option<&StoredResource>,
    body: Map<String, Value>,
    member_ops: Vec<MemberOp>,
) -> Result<StoredResource, Failure> {
    let unique_name = model::string_of(&body, kind.unique_attribute())?.unwrap_or_default();
    let external_id = model::string_of(&body, "externalId")?;
    let now = service_runtime::now_ms();
    let resource = match existing {
        Some(existing) => StoredResource {
            id: existing.id.clone(),
            external_id,
            body,
            version: existing.version + 1,
            created_ms: existing.created_ms,
            modified_ms: now,
        },
        None => StoredResource {
            id: new_id(external_id.as_deref()),
            external_id,
            body,
            version: 1,
            created_ms: now,
            modified_ms: now,
        },
    };
    let mirror = match kind {
        Kind::User => Some(mirror_of(api, &resource.id, &resource.body)?),
        Kind::Group => None,
    };
    let open = api.inner.open.read().await;
    let ctx = &api.inner.ctx;
    let backend = ctx.db.backend();
    let mut tx = ctx
        .db
        .begin_write()
        .await
        .map_err(Error::internal("begin a SCIM write"))?;
    // Uniqueness, read in the writing transaction (the unique index settles a race).
    for lookup in [
        Some(Lookup::UniqueName(unique_name.clone())),
        resource.external_id.clone().map(Lookup::ExternalId),
        existing.is_none().then(|| Lookup::Id(resource.id.clone())),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(other) =
            store::scim::find(&mut tx, ctx.tenant_id.as_str(), kind, &lookup).await?
            && existing.is_none_or(|e| e.id != other.id)
        {
            let what = match lookup {
                Lookup::UniqueName(name) => format!("{} {name:?}", kind.unique_attribute()),
                Lookup::ExternalId(id) => format!("externalId {id:?}"),
                Lookup::Id(id) => format!("id {id:?}"),
            };
            return Err(
                ScimError::uniqueness(format!("{what} is already taken by {}", other.id)).into(),
            );
        }
    }
    let run_id = open.run.run_id.as_str();
    match (kind, mirror) {
        (Kind::User, Some(user)) => {
            let counts =
                store::upsert_users(&mut tx, backend, &ctx.tenant_id, &[user], run_id, now).await?;
            open.created.fetch_add(counts.created, Ordering::SeqCst);
            open.updated.fetch_add(counts.updated, Ordering::SeqCst);
        }
        _ => {
            store::upsert_group(
                &mut tx,
                &ctx.tenant_id,
                &store::GroupRow {
                    group_id: resource.id.clone(),
                    display_name: unique_name.clone(),
                    member_count: 0,
                },
                now,
            )
            .await?;
            for op in member_ops {
                apply_member_op(&mut tx, backend, &ctx.tenant_id, &resource.id, op, run_id).await?;
            }
            let count = store::group_member_count(&mut tx, &ctx.tenant_id, &resource.id).await?;
            store::upsert_group(
                &mut tx,
                &ctx.tenant_id,
                &store::GroupRow {
                    group_id: resource.id.clone(),
                    display_name: unique_name.clone(),
                    member_count: count,
                },
                now,
            )
            .await?;
        }
    }
    store::scim::put(&mut tx, &ctx.tenant_id, kind, &resource, &unique_name).await?;
    tx.commit().await.map_err(|e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => Failure::Scim(
            ScimError::uniqueness(format!("{} is already taken", kind.unique_attribute())),
        ),
        _ => Failure::Internal(Error::internal("commit a SCIM write")(e)),
    })?;
    open.changed();
    Ok(resource)
}

async fn apply_member_op(
    conn: &mut sqlx::AnyConnection,
    backend: service_runtime::storage::Backend,
    tenant_id: &str,
    group_id: &str,
    op: MemberOp,
    run_id: &str,
) -> Result<(), Error> {
    match op {
        MemberOp::Add(ids) => {
            store::add_group_members(conn, backend, tenant_id, group_id, &ids, run_id).await
        }
        MemberOp::Remove(ids) => {
            store::scim::remove_group_members(conn, backend, tenant_id, group_id, &ids, run_id)
                .await
        }
        MemberOp::Replace(ids) => {
            // The members not in the new list leave (they may have joined in this same run,
            // so "not seen by this run" would not tell them apart).
            let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
            let mut leaving = Vec::new();
            let mut after = String::new();
            loop {
                let page = store::scim::group_member_ids(conn, tenant_id, group_id, &after, 10_000)
                    .await?;
                let Some(last) = page.last() else { break };
                after = last.clone();
                leaving.extend(page.into_iter().filter(|id| !wanted.contains(id.as_str())));
            }
            store::scim::remove_group_members(conn, backend, tenant_id, group_id, &leaving, run_id)
                .await?;
            store::add_group_members(conn, backend, tenant_id, group_id, &ids, run_id).await
        }
    }
}

async fn create(
    api: ScimApi,
    kind: Kind,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let (body, members) = normalize(kind, read_json(&api, body).await?)?;
    let member_ops = members
        .map(|ids| vec![MemberOp::Replace(ids)])
        .unwrap_or_default();
    let resource = write(&api, kind, None, body, member_ops).await?;
    let members = if kind == Kind::Group {
        Some(members_of(&api, &resource.id).await?)
    } else {
        None
    };
    let rendered = rendered(&api, &headers, kind, &resource, members);
    let mut response = scim_json(StatusCode::CREATED, Value::Object(rendered.clone()));
    if let Some(Ok(location)) = rendered["meta"]["location"]
        .as_str()
        .map(HeaderValue::from_str)
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn current(api: &ScimApi, kind: Kind, id: &str) -> Result<StoredResource, Failure> {
    let mut conn = api.inner.ctx.conn().await?;
    Ok(store::scim::get(&mut conn, api.tenant(), kind, id)
        .await?
        .ok_or_else(|| ScimError::not_found(kind, id))?)
}

async fn replace(
    api: ScimApi,
    kind: Kind,
    id: String,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let existing = current(&api, kind, &id).await?;
    let (body, members) = normalize(kind, read_json(&api, body).await?)?;
    let member_ops = members
        .map(|ids| vec![MemberOp::Replace(ids)])
        .unwrap_or_default();
    let resource = write(&api, kind, Some(&existing), body, member_ops).await?;
    let members = if kind == Kind::Group {
        Some(members_of(&api, &id).await?)
    } else {
        None
    };
    Ok(scim_json(
        StatusCode::OK,
        Value::Object(rendered(&api, &headers, kind, &resource, members)),
    ))
}

async fn patch(
    api: ScimApi,
    kind: Kind,
    id: String,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let existing = current(&api, kind, &id).await?;
    let request = read_json(&api, body).await?;
    let mut body = existing.body.clone();
    let member_ops = apply_patch(kind, &mut body, &request)?;
    let resource = write(&api, kind, Some(&existing), body, member_ops).await?;
    if kind == Kind::Group {
        // Entra expects 204 for a group PATCH (its members may be many).
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(scim_json(
        StatusCode::OK,
        Value::Object(rendered(&api, &headers, kind, &resource, None)),
    ))
}

/// DELETE: the resource goes; a User is hard-deleted in the mirror (Entra deletes after the
/// soft-delete period), which the provisioning policy handles as a round's deletion would.
async fn remove(api: ScimApi, kind: Kind, id: String) -> Result<Response, Failure> {
    let open = api.inner.open.read().await;
    let ctx = &api.inner.ctx;
    let run_id = open.run.run_id.as_str();
    let mut tx = ctx
        .db
        .begin_write()
        .await
        .map_err(Error::internal("begin a SCIM delete"))?;
    if !store::scim::delete(&mut tx, &ctx.tenant_id, kind, &id).await? {
        return Err(ScimError::not_found(kind, &id).into());
    }
    match kind {
        Kind::User => {
            let removed = store::mark_removed(
                &mut tx,
                ctx.db.backend(),
                &ctx.tenant_id,
                &[(id.clone(), DeletionState::HardDeleted)],
                run_id,
                service_runtime::now_ms(),
            )
            .await?;
            open.removed.fetch_add(removed, Ordering::SeqCst);
        }
        Kind::Group => store::scim::delete_group(&mut tx, &ctx.tenant_id, &id, run_id).await?,
    }
    tx.commit()
        .await
        .map_err(Error::internal("commit a SCIM delete"))?;
    open.changed();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST …/.search` (RFC 7644 §3.4.3): a query in the body, answered as a list.
async fn search(
    api: ScimApi,
    kind: Kind,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let request = read_json(&api, body).await?;
    let Value::Object(request) = request else {
        return Err(ScimError::invalid_syntax("the body must be a JSON object").into());
    };
    let text =
        |name: &str| -> Result<Option<String>, ScimError> { model::string_of(&request, name) };
    let names = |name: &str| -> Result<Option<String>, ScimError> {
        match model::get_ci(&request, name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => Ok(Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
            )),
            Some(other) => Err(ScimError::invalid_value(format!(
                "{name} must be a list, not {other}"
            ))),
        }
    };
    let number = |name: &str| -> Result<Option<i64>, ScimError> {
        match model::get_ci(&request, name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_i64()
                .map(Some)
                .ok_or_else(|| ScimError::invalid_value(format!("{name} must be an integer"))),
        }
    };
    let params = ListParams {
        filter: text("filter")?,
        start_index: number("startIndex")?,
        count: number("count")?,
        attributes: names("attributes")?,
        excluded_attributes: names("excludedAttributes")?,
    };
    list(api, kind, headers, params).await
}

/// The endpoints of one resource type, each answering its use case's result.
fn resource_routes(kind: Kind) -> Router<ScimApi> {
    use axum::routing::post;
    Router::new()
        .route(
            "/",
            get(
                move |State(api): State<ScimApi>,
                      headers: HeaderMap,
                      Query(params): Query<ListParams>| async move {
                    respond(list(api, kind, headers, params).await)
                },
            )
            .post(
                move |State(api): State<ScimApi>, headers: HeaderMap, body: Body| async move {
                    respond(create(api, kind, headers, body).await)
                },
            ),
        )
        .route(
            "/.search",
            post(
                move |State(api): State<ScimApi>, headers: HeaderMap, body: Body| async move {
                    respond(search(api, kind, headers, body).await)
                },
            ),
        )
        .route(
            "/{id}",
            get(
                move |State(api): State<ScimApi>,
                      Path(id): Path<String>,
                      headers: HeaderMap,
                      Query(params): Query<ReadParams>| async move {
                    respond(read(api, kind, id, headers, params).await)
                },
            )
            .put(
                move |State(api): State<ScimApi>,
                      Path(id): Path<String>,
                      headers: HeaderMap,
                      body: Body| async move {
                    respond(replace(api, kind, id, headers, body).await)
                },
            )
            .patch(
                move |State(api): State<ScimApi>,
                      Path(id): Path<String>,
                      headers: HeaderMap,
                      body: Body| async move {
                    respond(patch(api, kind, id, headers, body).await)
                },
            )
            .delete(
                move |State(api): State<ScimApi>, Path(id): Path<String>| async move {
                    respond(remove(api, kind, id).await)
                },
            ),
        )
}

async fn service_provider_config() -> Response {
    scim_json(
        StatusCode::OK,
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "documentationUri": "https://github.com/userimport/userimport#scim",
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": MAX_RESULTS},
            "changePassword": {"supported": false},
            "sort": {"supported": false},
            "etag": {"supported": false},
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "Bearer token",
                "description": "A secret token made with `userimport scim tokens create`",
                "primary": true
            }],
            "meta": {"resourceType": "ServiceProviderConfig", "location": "/scim/v2/ServiceProviderConfig"}
        }),
    )
}

/// A discovery collection as a list response.
fn listed(all: Vec<Value>) -> Response {
    scim_json(
        StatusCode::OK,
        json!({
            "schemas": [model::LIST_SCHEMA],
            "totalResults": all.len(),
            "startIndex": 1,
            "itemsPerPage": all.len(),
            "Resources": all,
        }),
    )
}

/// One discovery resource by its id (without case), or 404.
fn one_of(all: Vec<Value>, what: &str, id: &str) -> Response {
    match all
        .into_iter()
        .find(|r| r["id"].as_str().is_some_and(|r| r.eq_ignore_ascii_case(id)))
    {
        Some(found) => scim_json(StatusCode::OK, found),
        None => scim_error(&ScimError::status(404, format!("{what} {id:?} not found"))),
    }
}
