//! import-worker configuration.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use service_runtime::config::{DatabaseConfig, LogConfig};

use crate::domain::MappingConfig;

/// Environment variables override the defaults with this prefix.
pub const ENV_PREFIX: &str = "IMPORT_WORKER_";

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub directory_url: String,
    pub registry_url: String,
    pub mapping: MappingConfig,
    pub queue: QueueSettings,
    pub worker: WorkerConfig,
    pub database: DatabaseConfig,
    pub log: LogConfig,
    /// Who may call, and the token this service presents to directory-sync and user-registry.
    #[serde(default)]
    pub auth: service_runtime::auth::AuthConfig,
    /// TLS of the gRPC listener; off unless `tls.cert_file` is set.
    #[serde(default)]
    pub tls: service_runtime::tls::ServerTls,
    /// TLS towards directory-sync and user-registry (`https://` URLs); off unless `ca_file` is set.
    #[serde(default)]
    pub client_tls: service_runtime::tls::ClientTls,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: service_runtime::metrics::MetricsConfig,
}

/// Which queue carries chunks.
#[derive(Debug, Clone, Deserialize)]
pub struct QueueSettings {
    /// `memory` or `amqp`.
    pub kind: String,
    pub url: String,
    pub prefix: String,
    pub delivery_limit: u32,
    pub prefetch: u16,
    /// AMQP heartbeat: a worker that stops answering (hung, SIGSTOPped, cut off) loses its
    /// connection after about two of these, and the broker gives its chunks to others.
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat_secs: u16,
}

fn default_heartbeat_secs() -> u16 {
    crate::queue::QueueConfig::default().heartbeat_secs
}

fn default_chunk_retry_hold_secs() -> u64 {
    120
}

/// What this worker does.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerConfig {
    pub batch_groups: Vec<String>,
    pub chunk_size: u32,
    pub planning_lease_secs: u64,
    pub concurrent_plans: usize,
    /// How long a chunk failing for a passing cause is retried in hand before it goes back
    /// to its queue's tail (it is never dead-lettered for such a cause).
    #[serde(default = "default_chunk_retry_hold_secs")]
    pub chunk_retry_hold_secs: u64,
}

impl Config {
    /// Defaults, then `file`, then `IMPORT_WORKER_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, Box<figment::Error>> {
        service_runtime::config::load(include_str!("../config.default.toml"), file, ENV_PREFIX)
    }

    /// A configuration for one machine (`userimport dev`, tests, benchmarks): the given
    /// database and services, port 0.
    pub fn local(database_url: &str, directory_url: &str, registry_url: &str) -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            directory_url: directory_url.to_owned(),
            registry_url: registry_url.to_owned(),
            mapping: MappingConfig::default(),
            queue: QueueSettings {
                kind: "memory".to_owned(),
                url: String::new(),
                prefix: "userimport".to_owned(),
                delivery_limit: 5,
                prefetch: 4,
                heartbeat_secs: default_heartbeat_secs(),
            },
            worker: WorkerConfig {
                batch_groups: vec![crate::domain::DEFAULT_BATCH_GROUP.to_owned()],
                chunk_size: 1000,
                planning_lease_secs: 30,
                concurrent_plans: 4,
                chunk_retry_hold_secs: default_chunk_retry_hold_secs(),
            },
            database: DatabaseConfig {
                url: database_url.to_owned(),
                max_connections: 5,
            },
            log: LogConfig::default(),
            auth: service_runtime::auth::AuthConfig {
                insecure_development: true,
                ..Default::default()
            },
            tls: service_runtime::tls::ServerTls::default(),
            client_tls: service_runtime::tls::ClientTls::default(),
            metrics: service_runtime::metrics::MetricsConfig { listen_addr: None },
        }
    }
}
