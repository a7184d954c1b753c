//! service-runtime: what every userimport service shares — configuration loading, telemetry,
//! the shutdown signal, the database connection (Postgres or SQLite by URL), gRPC serving with
//! health and reflection, and the `healthcheck` probe used by container health checks.
//!
//! Nothing here knows about users, jobs or the directory; it is plumbing only.

pub mod config;
pub mod grpc;
pub mod shutdown;
pub mod storage;
pub mod telemetry;

/// Installs ring as the process-wide rustls crypto provider. Every process that builds a TLS
/// client must call this first (reqwest is built with `rustls-no-provider`); calling it twice is
/// harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Milliseconds since the Unix epoch. Read the clock at the edge and pass the value down.
pub fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}
