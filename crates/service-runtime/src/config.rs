//! Typed configuration: embedded defaults, then an optional TOML file, then environment
//! variables with a per-service prefix and `__` for nesting (`USER_REGISTRY_DATABASE__URL`).

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Loads a service's configuration. Later sources override earlier ones: `defaults` (the
/// service's embedded `config.default.toml`), then `file` if given, then the environment.
pub fn load<T: DeserializeOwned>(
    defaults: &str,
    file: Option<&Path>,
    env_prefix: &str,
) -> Result<T, Box<figment::Error>> {
    let mut figment = Figment::new().merge(Toml::string(defaults));
    if let Some(file) = file {
        figment = figment.merge(Toml::file_exact(file));
    }
    figment
        .merge(Env::prefixed(env_prefix).split("__"))
        .extract()
        .map_err(Box::new)
}

/// How logs are written.
#[derive(Debug, Clone, Deserialize)]
pub struct LogConfig {
    /// `json` when deployed, `pretty` for a terminal.
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info,sqlx=warn`; `RUST_LOG` overrides it.
    pub filter: String,
    /// OTLP/gRPC collector for traces, e.g. `http://otel-collector:4317`; unset: no export.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            filter: "info".to_owned(),
            otlp_endpoint: None,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Where a service's database lives.
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseConfig {
    /// `postgres://…` or `sqlite://path/to/file.db`; the scheme picks the backend.
    pub url: String,
    pub max_connections: u32,
}

#[cfg(test)]
// figment::Jail's closures must return figment's (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Sample {
        database: DatabaseConfig,
        log: LogConfig,
    }

    const DEFAULTS: &str = r#"
        [database]
        url = "sqlite://default.db"
        max_connections = 4
        [log]
        format = "pretty"
        filter = "info"
    "#;

    #[test]
    fn environment_overrides_defaults_with_double_underscore_nesting() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SAMPLE_TEST_DATABASE__URL", "postgres://db/x");
            jail.set_env("SAMPLE_TEST_LOG__FORMAT", "json");
            let config: Sample = load(DEFAULTS, None, "SAMPLE_TEST_").map_err(|e| e.to_string())?;
            assert_eq!(config.database.url, "postgres://db/x");
            assert_eq!(config.database.max_connections, 4);
            assert_eq!(config.log.format, LogFormat::Json);
            Ok(())
        });
    }

    #[test]
    fn a_config_file_overrides_defaults_and_env_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "svc.toml",
                "[database]\nurl = \"sqlite://file.db\"\nmax_connections = 9\n",
            )?;
            jail.set_env("SAMPLE_TEST_DATABASE__MAX_CONNECTIONS", "2");
            let config: Sample = load(DEFAULTS, Some(Path::new("svc.toml")), "SAMPLE_TEST_")
                .map_err(|e| e.to_string())?;
            assert_eq!(config.database.url, "sqlite://file.db");
            assert_eq!(config.database.max_connections, 2);
            Ok(())
        });
    }

    #[test]
    fn the_prod_overlay_configures_both_entra_token_shapes() {
        #[derive(Debug, Deserialize)]
        struct WithAuth {
            #[serde(default)]
            auth: crate::auth::AuthConfig,
        }
        figment::Jail::expect_with(|jail| {
            // The prod overlay's settings, as its ConfigMap hands them to every service.
            let overlay = include_str!("../../../deploy/k8s/overlays/prod/config/oidc.env");
            for line in overlay
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
            {
                let (key, value) = line.split_once('=').ok_or("not key=value")?;
                jail.set_env(
                    format!("SAMPLE_TEST_AUTH__OIDC__{}", key.to_uppercase()),
                    value,
                );
            }
            let config: WithAuth = load("", None, "SAMPLE_TEST_").map_err(|e| e.to_string())?;
            let oidc = config.auth.oidc.clone().ok_or("no oidc")?;
            assert_eq!(oidc.accepted_issuers().len(), 2);
            assert_eq!(
                oidc.accepted_issuers(),
                [
                    "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0",
                    "https://sts.windows.net/00000000-0000-0000-0000-000000000000/"
                ],
                "Entra's v2.0 and v1.0 issuers"
            );
            assert_eq!(
                oidc.accepted_audiences(),
                ["11111111-1111-1111-1111-111111111111", "api://userimport"],
                "the API's client id (v2.0) and application id URI (v1.0)"
            );
            crate::auth::Authenticator::from_config(&config.auth, "test")
                .map_err(|e| e.to_string())?;
            Ok(())
        });
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let err = load::<Sample>(
            DEFAULTS,
            Some(Path::new("/nonexistent/svc.toml")),
            "SAMPLE_TEST_",
        )
        .unwrap_err();
        assert!(err.to_string().contains("svc.toml"), "{err}");
    }
}
