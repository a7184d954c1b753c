//! Structured logging with `tracing`, set up once by each binary's `main`.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber: JSON lines or human-readable output, filtered by `RUST_LOG`
/// when set, else by the configured filter. A second call is ignored.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let result = match config.format {
        LogFormat::Json => fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init(),
        LogFormat::Pretty => fmt()
            .compact()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init(),
    };
    // Already initialised (tests, or `userimport dev` running three services): keep the first.
    drop(result);
}
