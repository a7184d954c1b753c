//! user-registry configuration.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use service_runtime::auth::AuthConfig;
use service_runtime::config::{DatabaseConfig, LogConfig};
use service_runtime::tls::ServerTls;

/// Environment variables override the defaults with this prefix.
pub const ENV_PREFIX: &str = "USER_REGISTRY_";

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub database: DatabaseConfig,
    pub log: LogConfig,
    /// Companies created at start-up when missing.
    #[serde(default)]
    pub companies: Vec<CompanyConfig>,
    /// Who may call (see README "Authentication").
    #[serde(default)]
    pub auth: AuthConfig,
    /// TLS of the gRPC listener; off unless `tls.cert_file` is set.
    #[serde(default)]
    pub tls: ServerTls,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: service_runtime::metrics::MetricsConfig,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompanyConfig {
    pub code: String,
    #[serde(default)]
    pub name: String,
}

impl Config {
    /// Defaults, then `file`, then `USER_REGISTRY_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, Box<figment::Error>> {
        service_runtime::config::load(include_str!("../config.default.toml"), file, ENV_PREFIX)
    }

    /// A configuration for one machine (`userimport dev`, tests, benchmarks): the given
    /// database, port 0.
    pub fn local(database_url: &str) -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database: DatabaseConfig {
                url: database_url.to_owned(),
                max_connections: 5,
            },
            log: LogConfig::default(),
            companies: Vec::new(),
            auth: AuthConfig {
                insecure_development: true,
                ..AuthConfig::default()
            },
            tls: ServerTls::default(),
            metrics: service_runtime::metrics::MetricsConfig { listen_addr: None },
        }
    }
}

#[cfg(test)]
// figment::Jail's closures must return figment's (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn companies_can_be_configured_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "USER_REGISTRY_COMPANIES",
                r#"[{code="USMF",name="Contoso USA"},{code="GBSI"}]"#,
            );
            jail.set_env("USER_REGISTRY_DATABASE__URL", "postgres://db/registry");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.companies.len(), 2);
            assert_eq!(config.companies[0].code, "USMF");
            assert_eq!(config.companies[0].name, "Contoso USA");
            assert_eq!(config.companies[1].name, "");
            assert_eq!(config.database.url, "postgres://db/registry");
            Ok(())
        });
    }

    #[test]
    fn static_tokens_and_the_outbound_token_can_be_configured_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            // The form docker-compose.yml uses.
            jail.set_env(
                "USER_REGISTRY_AUTH__STATIC_TOKENS",
                r#"[{principal="admin",roles=["userimport.admin"],token="compose-admin-token-change-me"},{principal="import-worker",roles=["userimport.service.import-worker"],token="compose-worker-token-change-me"}]"#,
            );
            jail.set_env(
                "USER_REGISTRY_AUTH__OUTBOUND__TOKEN",
                "compose-sync-token-change-me",
            );
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.auth.static_tokens.len(), 2);
            assert_eq!(config.auth.static_tokens[1].principal, "import-worker");
            assert!(config.auth.outbound.is_set());
            assert!(!config.auth.insecure_development);
            let shown = format!("{config:?}");
            assert!(!shown.contains("compose-admin-token-change-me"), "{shown}");
            service_runtime::auth::Authenticator::from_config(&config.auth, "test")
                .map_err(|e| e.to_string())?;
            Ok(())
        });
    }
}
