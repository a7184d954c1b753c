//! gRPC plumbing shared by the services: serving a pre-bound listener with health and
//! reflection, client channels, the status classification callers retry on, and the
//! `healthcheck` probe.

use std::net::SocketAddr;
use std::time::Duration;

use crate::retry::RetryPolicy;
use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::{Endpoint, Server};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as ProbeStatus;
use tonic_health::pb::health_client::HealthClient;

/// Largest message a service accepts or sends (4 MiB, tonic's default, stated explicitly).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The largest header block a service accepts (64 KiB; hyper's default is 16 KiB). It is
/// well above [`crate::auth::MAX_TOKEN_BYTES`], so an oversized token is answered
/// UNAUTHENTICATED on its own stream by the guard rather than with HTTP 431 or, larger still,
/// a GOAWAY that would fail every call on the connection.
pub const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// How a service serves: its name (for health), the guard every call passes, and TLS.
pub struct Serving {
    pub service_name: &'static str,
    pub guard: crate::auth::Guard,
    pub tls: crate::tls::ServerTls,
}

/// Serves `routes` plus `grpc.health.v1` and reflection (v1 and v1alpha) on `listener` until
/// `shutdown` is cancelled, every call passing the guard (health and reflection stay open), over
/// TLS when configured. Health reports `service_name` (and the server as a whole) as
/// serving while it runs and not serving once shutdown begins; in-flight calls then finish.
pub async fn serve(
    listener: TcpListener,
    serving: Serving,
    routes: Routes,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Serving {
        service_name,
        guard,
        tls,
    } = serving;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(service_name, ServingStatus::Serving)
        .await;
    health.set_service_status("", ServingStatus::Serving).await;

    let reflection_v1 = advertising(service_name)
        .build_v1()
        .context("reflection v1")?;
    let reflection_v1alpha = advertising(service_name)
        .build_v1alpha()
        .context("reflection v1alpha")?;

    let routes = routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    let stopping = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            health
                .set_service_status(service_name, ServingStatus::NotServing)
                .await;
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
        }
    };
    let addr = listener.local_addr().ok();
    tracing::info!(service = service_name, addr = ?addr, "serving gRPC");
    let mut server = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .layer(
            tower::ServiceBuilder::new()
                .layer(crate::trace::TraceLayer)
                .layer(crate::metrics::GrpcMetricsLayer)
                .layer(guard)
                // After the guard, so unauthenticated callers cost no parsing.
                .layer(crate::validate::ValidateLayer)
                .into_inner(),
        );
    let router = server.add_routes(routes);
    if tls.enabled() {
        let incoming = crate::tls::incoming(listener, &tls, shutdown.clone())?;
        router
            .serve_with_incoming_shutdown(incoming, stopping)
            .await
            .context("gRPC server failed")?;
    } else {
        router
            .serve_with_incoming_shutdown(
                // The builder's tcp_nodelay does not reach a listener we bring; without it every
                // response waits ~40 ms for the peer's delayed ACK (Nagle).
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                stopping,
            )
            .await
            .context("gRPC server failed")?;
    }
    tracing::info!(service = service_name, "gRPC server stopped");
    Ok(())
}

/// A reflection builder that lists only `service_name` (plus health and reflection), so a port
/// advertises the one service it serves; the descriptor set holds all three (shared message
/// types), and symbols still resolve, but `ListServices` names only what this port answers.
fn advertising(service_name: &str) -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(service_name)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
}

/// A request field that is out of bounds; each service turns it into its own
/// `INVALID_ARGUMENT` error naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidField {
    pub field: &'static str,
    pub reason: String,
}

impl From<InvalidField> for tonic::Status {
    fn from(invalid: InvalidField) -> Self {
        crate::error::invalid_field(invalid.field, invalid.reason)
    }
}

/// Longest search term, filter value or page token a listing accepts.
pub const MAX_FILTER_LEN: usize = 256;
/// Longest page token accepted (they are base64 of a short key).
pub const MAX_PAGE_TOKEN_LEN: usize = 1024;

/// `value`, when it is at most `max` bytes; else an error naming the field and the limit.
pub fn bounded<'a>(
    field: &'static str,
    value: &'a str,
    max: usize,
) -> Result<&'a str, InvalidField> {
    if value.len() > max {
        return Err(InvalidField {
            field,
            reason: format!("{} bytes; the limit is {max}", value.len()),
        });
    }
    Ok(value)
}

/// Bytes of a page token's tag: a truncated SHA-256 of the query and the cursor.
const PAGE_TOKEN_TAG_LEN: usize = 12;

fn page_token_tag(listing: &str, query: &[u8], cursor: &[u8]) -> [u8; PAGE_TOKEN_TAG_LEN] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(b"userimport page token v1\0");
    context.update(listing.as_bytes());
    context.update(b"\0");
    context.update(&(query.len() as u64).to_be_bytes());
    context.update(query);
    context.update(cursor);
    let mut tag = [0; PAGE_TOKEN_TAG_LEN];
    tag.copy_from_slice(&context.finish().as_ref()[..PAGE_TOKEN_TAG_LEN]);
    tag
}

/// Encodes a page token: the previous page's last key (JSON), bound to the query it pages
/// through by a tag, all in URL-safe base64 so clients treat it as opaque. `query` is the
/// request with its page token and page size cleared (so every filter, including ones added
/// later, is part of it); its type names the listing, so a token of another RPC fails too.
///
/// The tag is a hash, not a signature: it makes a token from another query (another search,
/// another job) fail instead of silently paging elsewhere, the same on every replica with no
/// shared key. A client that forges a tag only chooses where its own query starts; the server
/// applies the query's filters and the caller's permissions to every page anyway.
pub fn encode_page_token<Q: prost::Message, T: serde::Serialize>(query: &Q, cursor: &T) -> String {
    use base64::Engine as _;
    let query = query.encode_to_vec();
    // Serialising a plain cursor (strings, numbers, tuples) cannot fail.
    let cursor = serde_json::to_vec(cursor).unwrap_or_default();
    let mut token = page_token_tag(std::any::type_name::<Q>(), &query, &cursor).to_vec();
    token.extend_from_slice(&cursor);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)
}

/// Decodes a page token of `query`; an empty token is the first page (`T::default()`). A token
/// of another query, or no token of ours, is refused naming `page_token`.
pub fn decode_page_token<Q: prost::Message, T: serde::de::DeserializeOwned + Default>(
    query: &Q,
    token: &str,
) -> Result<T, InvalidField> {
    use base64::Engine as _;
    if token.is_empty() {
        return Ok(T::default());
    }
    bounded("page_token", token, MAX_PAGE_TOKEN_LEN)?;
    let query = query.encode_to_vec();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .filter(|bytes| bytes.len() > PAGE_TOKEN_TAG_LEN)
        .filter(|bytes| {
            let (tag, cursor) = bytes.split_at(PAGE_TOKEN_TAG_LEN);
            // Not secret: a plain comparison is fine.
            tag == page_token_tag(std::any::type_name::<Q>(), &query, cursor)
        })
        .and_then(|bytes| serde_json::from_slice(&bytes[PAGE_TOKEN_TAG_LEN..]).ok())
        .ok_or_else(|| InvalidField {
            field: "page_token",
            reason: "not a token from a previous page of this query".to_owned(),
        })
}

/// The page (or batch) size to use: `default` when 0 was asked for, an error above `max`.
pub fn page_size(
    field: &'static str,
    requested: u32,
    default: u32,
    max: u32,
) -> Result<u32, InvalidField> {
    match requested {
        0 => Ok(default),
        n if n > max => Err(InvalidField {
            field,
            reason: format!("must be at most {max}"),
        }),
        n => Ok(n),
    }
}

/// Metadata key naming the calling principal in insecure development mode.
pub const PRINCIPAL_HEADER: &str = crate::auth::PRINCIPAL_HEADER;

/// The name of the principal the guard authenticated for this request.
pub fn principal<T>(request: &tonic::Request<T>) -> String {
    crate::auth::principal_of(request).name
}

/// How long a call to another service may take before its response starts.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A lazily connected channel to another service (so services can start in any order), over
/// TLS when configured, presenting `outbound`'s credentials on every call.
pub fn channel(
    url: &str,
    tls: &crate::tls::ClientTls,
    outbound: crate::auth::Outbound,
) -> anyhow::Result<crate::auth::AuthedChannel> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid service URL {url}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30));
    let endpoint = crate::tls::configure_endpoint(endpoint, tls)?;
    Ok(tonic::service::interceptor::InterceptedService::new(
        endpoint.connect_lazy(),
        outbound,
    ))
}

/// True for statuses worth retrying: the callee was unavailable, slow, overloaded or lost a
/// conflict (see [`crate::error::retryable_code`]).
pub fn is_retryable(status: &tonic::Status) -> bool {
    crate::error::is_retryable(status)
}

/// Calls `call` until it succeeds, fails with a status that is not [`is_retryable`], or has
/// been tried `attempts` times (within [`RetryPolicy::CALL`]'s time), with exponential
/// backoff and full jitter, waiting at least the delay a status's `RetryInfo` asks for.
/// Only for idempotent calls.
pub async fn retry<T, F, Fut>(attempts: u32, call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let policy = RetryPolicy {
        max_attempts: attempts,
        ..RetryPolicy::CALL
    };
    policy
        .run(call, is_retryable, crate::error::retry_delay)
        .await
}

/// Asks a gRPC server on `addr` whether it is serving; used by the `healthcheck` subcommand.
pub async fn probe(addr: SocketAddr) -> anyhow::Result<()> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .context("health check failed")?;
    let status = response.into_inner().status();
    anyhow::ensure!(status == ProbeStatus::Serving, "service reports {status:?}");
    Ok(())
}
