//! service-runtime: what every userimport service shares — configuration loading, telemetry,
//! the shutdown signal, the database connection (Postgres or SQLite by URL), gRPC serving with
//! health and reflection, and the `healthcheck` probe used by container health checks.
//!
//! Nothing here knows about users, jobs or the directory; it is plumbing only.

pub mod auth;
pub mod config;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod retry;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod validate;

/// Installs ring as the process-wide rustls crypto provider. Every process that builds a TLS
/// client must call this first (reqwest is built with `rustls-no-provider`); calling it twice is
/// harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Gives a fieldless enum `as_str` and `parse` for the text it is stored as:
/// `text_enum!(Mode { Full => "full", Delta => "delta" });`
#[macro_export]
macro_rules! text_enum {
    ($ty:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $ty {
            /// The text this value is stored and shown as.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }

            /// The value stored as `raw`, if any.
            pub fn parse(raw: &str) -> Option<Self> {
                match raw { $($text => Some(Self::$variant),)* _ => None }
            }
        }
    };
}

/// Returns the lower-case form of a GUID such as an Entra object or tenant id
/// (`8-4-4-4-12` hex digits), or `None` when `raw` is not one.
pub fn normalize_guid(raw: &str) -> Option<String> {
    let value = raw.trim();
    let well_formed = value.len() == 36
        && value.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    well_formed.then(|| value.to_ascii_lowercase())
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

/// Carries out a service binary's command: probe a running server, run the migrations, or
/// connect, migrate, bind `listen` and hand the database and listener to `serve` with the
/// shutdown signal. Keeps each `main.rs` down to loading its configuration.
pub async fn run_command<F, Fut>(
    command: Option<ServiceCommand>,
    listen: std::net::SocketAddr,
    database: &config::DatabaseConfig,
    migrations: &storage::Migrations,
    serve: F,
) -> anyhow::Result<()>
where
    F: FnOnce(
        storage::Database,
        tokio::net::TcpListener,
        tokio_util::sync::CancellationToken,
    ) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use anyhow::Context as _;
    install_crypto_provider();
    match command.unwrap_or(ServiceCommand::Serve) {
        ServiceCommand::Healthcheck { addr } => {
            grpc::probe(ServiceCommand::probe_addr(addr, listen)).await
        }
        ServiceCommand::Migrate => {
            storage::Database::connect(&database.url, 1)
                .await?
                .migrate(migrations)
                .await
        }
        ServiceCommand::Serve => {
            let db = storage::Database::connect(&database.url, database.max_connections).await?;
            db.migrate(migrations).await?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            serve(db, listener, shutdown::on_signal()).await
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_lower_cased_and_anything_else_is_refused() {
        assert_eq!(
            normalize_guid(" 6EA91A8D-E32E-41A1-B7BD-D2D185EED0E0 ").as_deref(),
            Some("6ea91a8d-e32e-41a1-b7bd-d2d185eed0e0")
        );
        assert_eq!(normalize_guid("6ea91a8d-e32e-41a1-b7bd-d2d185eed0e"), None);
        assert_eq!(normalize_guid("6ea91a8d-e32e-41a1-b7bd+d2d185eed0e0"), None);
        assert_eq!(normalize_guid("zzzzzzzz-e32e-41a1-b7bd-d2d185eed0e0"), None);
        assert_eq!(normalize_guid("adele@contoso.com"), None);
    }
}
