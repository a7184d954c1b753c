//! Structured logging with `tracing`, set up once by each binary's `main`, and — when an OTLP
//! endpoint is configured — the export of its spans as OpenTelemetry traces.

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt};

use crate::config::{LogConfig, LogFormat};

/// Keeps the trace exporter running; dropping it flushes the spans not sent yet.
#[must_use = "dropping the guard stops the trace export"]
pub struct TelemetryGuard(Option<SdkTracerProvider>);

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("traces not flushed: {error}");
        }
    }
}

/// A tracer provider exporting over OTLP/gRPC to `endpoint`, as `service`.
fn otlp_provider(endpoint: &str, service: &'static str) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .with_context(|| format!("cannot build the OTLP exporter for {endpoint}"))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build())
}

/// The layer turning `tracing` spans into OpenTelemetry spans of `provider`.
pub fn otel_layer<S>(provider: &SdkTracerProvider, service: &'static str) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer(service))
}

/// Counts the database statements this process runs (`db_statements_total`), from the event
/// sqlx emits after each one, whatever the log filter: a bulk path's cost is best read as
/// statements per unit of work (the batch benchmark prints them per chunk), and a regression
/// that adds a statement per user shows there before it shows in seconds.
struct StatementCounter;

impl StatementCounter {
    fn filter() -> tracing_subscriber::filter::Targets {
        tracing_subscriber::filter::Targets::new().with_target("sqlx::query", tracing::Level::TRACE)
    }
}

impl<S: tracing::Subscriber> Layer<S> for StatementCounter {
    fn on_event(
        &self,
        _event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        metrics::counter!("db_statements_total").increment(1);
    }
}

/// Installs the global subscriber: JSON lines or human-readable output, filtered by `RUST_LOG`
/// when set, else by the configured filter; plus trace export when `log.otlp_endpoint` is
/// set. A second call is ignored (tests, or `userimport dev` running three services).
pub fn init(config: &LogConfig, service: &'static str) -> TelemetryGuard {
    crate::trace::install_propagator();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let output: Box<dyn Layer<Registry> + Send + Sync> = match config.format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Pretty => fmt::layer().compact().with_writer(std::io::stderr).boxed(),
    };
    let provider = match config.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        None => None,
        Some(endpoint) => match otlp_provider(endpoint, service) {
            Ok(provider) => Some(provider),
            Err(error) => {
                eprintln!("traces are off: {error:#}");
                None
            }
        },
    };
    let traces = provider.as_ref().map(|p| otel_layer(p, service));
    let result = tracing_subscriber::registry()
        .with(output.with_filter(filter))
        .with(StatementCounter.with_filter(StatementCounter::filter()))
        .with(traces)
        .try_init();
    drop(result);
    TelemetryGuard(provider)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_statement_sqlx_runs_is_counted_whatever_the_log_filter() {
        // The process's own subscriber and recorder: sqlx runs SQLite statements on a thread
        // of its own, which a thread-local subscriber would not reach. The output's filter
        // passes no statement, as a production `info` filter passes none.
        let config = LogConfig {
            filter: "off".to_owned(),
            ..LogConfig::default()
        };
        let _guard = init(&config, "test");
        let metrics = crate::metrics::handle().unwrap();
        let db = crate::storage::Database::connect("sqlite::memory:", 1)
            .await
            .unwrap();
        let before = statements(&metrics.render());
        for _ in 0..3 {
            sqlx::query("SELECT 1").execute(db.pool()).await.unwrap();
        }
        // At least: other tests of this binary may run statements meanwhile.
        assert!(statements(&metrics.render()) - before >= 3.0);
    }

    fn statements(rendered: &str) -> f64 {
        rendered
            .lines()
            .find_map(|line| line.strip_prefix("db_statements_total "))
            .map_or(0.0, |v| v.parse().unwrap())
    }
}
