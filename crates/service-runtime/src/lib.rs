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

/// The command line every service binary shares: `serve` (the default), `migrate` and
/// `healthcheck`, and where the configuration file is.
#[derive(Debug, clap::Parser)]
pub struct ServiceArgs {
    /// A TOML file overriding the embedded defaults; environment variables override both.
    #[arg(long, global = true, env = "USERIMPORT_CONFIG_FILE")]
    pub config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Option<ServiceCommand>,
}

/// What a service binary does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ServiceCommand {
    /// Runs migrations, then serves until SIGTERM or SIGINT (the default).
    Serve,
    /// Runs the database migrations and exits.
    Migrate,
    /// Exits 0 when the service on this address reports serving (for container health checks).
    Healthcheck {
        /// Defaults to the configured listen port on 127.0.0.1.
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
    },
}

impl ServiceCommand {
    /// The address `healthcheck` probes: the given one, else loopback on the listen port.
    pub fn probe_addr(
        given: Option<std::net::SocketAddr>,
        listen: std::net::SocketAddr,
    ) -> std::net::SocketAddr {
        given.unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], listen.port())))
    }
}
