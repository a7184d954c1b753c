//! Prometheus metrics: one recorder per process (the `metrics` facade's global), rendered at
//! `GET /metrics` on each service's metrics listener, and a tower layer counting and timing
//! every gRPC call a server answers.
//!
//! Services record with the `metrics` macros wherever the event happens (Graph requests,
//! imported users, chunks, queue traffic, jobs); this module only exposes them. Processes
//! running several services (`userimport dev`, tests) share the one recorder, so each of
//! their endpoints shows everything.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use anyhow::Context as _;
use futures::future::BoxFuture;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http;

/// Where a service serves its metrics.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` of the `/metrics` listener; unset turns the endpoint off.
    pub listen_addr: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen_addr: Some(SocketAddr::from(([0, 0, 0, 0], 9464))),
        }
    }
}

/// Latency buckets (seconds) of every `*_seconds` histogram: from a fast RPC to a slow chunk.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The process's recorder, installed on first use.
pub fn handle() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    // Services built at once in one process (tests, `userimport dev`) must not see the
    // recorder installed before its handle is kept.
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let _installing = INSTALLING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), BUCKETS)
        .context("metric buckets")?
        .build_recorder();
    let handle = recorder.handle();
    // Another thread may have won the race; its recorder is the one in use then.
    if metrics::set_global_recorder(recorder).is_ok() {
        let _ = HANDLE.set(handle.clone());
        spawn_upkeep(handle.clone());
    }
    HANDLE
        .get()
        .cloned()
        .context("another metrics recorder is installed in this process")
}

/// Histograms are kept as summaries of a window; upkeep drains it (the exporter's own HTTP
/// listener would do this, ours does it here).
fn spawn_upkeep(handle: PrometheusHandle) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
}

/// Binds the metrics listener of `config`, if any (before serving, so a taken port fails
/// the start rather than later).
pub async fn bind(config: &MetricsConfig) -> anyhow::Result<Option<TcpListener>> {
    match config.listen_addr {
        None => Ok(None),
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .with_context(|| format!("cannot listen for metrics on {addr}")),
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let handle = handle()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    tracing::info!(addr = ?listener.local_addr().ok(), "serving metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("metrics server failed")
}

/// Counts and times every call a gRPC server answers: `grpc_server_requests_total{service,
/// method, code}` and `grpc_server_request_seconds{service, method}` (until the response
/// starts; a stream's length is not a latency). Labels come from a closed set ([`labels`]).
#[derive(Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

/// A service whose calls are counted and timed.
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (service, method) = labels(request.uri().path());
        let started = Instant::now();
        Box::pin(async move {
            let response = inner.call(request).await;
            let code = match &response {
                // Errors are answered "trailers-only": the status is in the headers. A
                // response that starts normally is counted OK.
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or("OK", |code| code_name(tonic::Code::from(code))),
                Err(_) => "TRANSPORT_ERROR",
            };
            metrics::counter!("grpc_server_requests_total", "service" => service.clone(), "method" => method.clone(), "code" => code)
                .increment(1);
            metrics::histogram!("grpc_server_request_seconds", "service" => service, "method" => method)
                .record(started.elapsed().as_secs_f64());
            response
        })
    }
}

/// RPCs served besides the product's own (health and reflection).
const INFRASTRUCTURE_RPCS: &[&str] = &[
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The `service` and `method` labels of a call to `path`: from a closed set, the RPCs of the
/// product's protos plus health and reflection. Any other path — which the caller chooses
/// freely, authenticated or not — counts as `unknown`, so made-up paths cannot grow the
/// metrics.
pub fn labels(path: &str) -> (String, String) {
    let known = crate::validate::rules().knows(path) || INFRASTRUCTURE_RPCS.contains(&path);
    match path.trim_start_matches('/').split_once('/') {
        Some((service, method)) if known => (service.to_owned(), method.to_owned()),
        _ => ("unknown".to_owned(), "unknown".to_owned()),
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
