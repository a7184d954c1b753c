//! directory-sync configuration.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::SecretString;
use serde::Deserialize;
use service_runtime::config::{DatabaseConfig, LogConfig};

/// Environment variables override the defaults with this prefix.
pub const ENV_PREFIX: &str = "DIRECTORY_SYNC_";

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub registry_url: String,
    /// import-worker, which imports new users when `provisioning.auto_import` is on; empty
    /// turns auto-import off. Reached with `registry_tls`.
    #[serde(default)]
    pub importer_url: String,
    pub directory: DirectoryConfig,
    pub sync: SyncConfig,
    pub database: DatabaseConfig,
    pub log: LogConfig,
    /// Who may call, and the token this service presents to user-registry.
    #[serde(default)]
    pub auth: service_runtime::auth::AuthConfig,
    /// TLS of the gRPC listener; off unless `tls.cert_file` is set.
    #[serde(default)]
    pub tls: service_runtime::tls::ServerTls,
    /// TLS towards user-registry (an `https://` registry_url); off unless `ca_file` is set.
    #[serde(default)]
    pub registry_tls: service_runtime::tls::ClientTls,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: service_runtime::metrics::MetricsConfig,
    /// What a round's changes do to the registry.
    #[serde(default)]
    pub provisioning: ProvisioningConfig,
    /// The SCIM endpoint Entra's provisioning service pushes to (issue 18).
    #[serde(default)]
    pub scim: ScimConfig,
}

/// A tenant is pulled from Graph or pushed over SCIM, never both: with `enabled`, this
/// service serves the SCIM endpoint and starts no Graph round (nor lets one be started), and
/// the Graph credentials in `directory` are not used (`directory.tenant_id` still names the
/// tenant).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScimConfig {
    pub enabled: bool,
    pub listen_addr: SocketAddr,
    /// The URL Entra reaches this endpoint at, for `meta.location` (empty: from the request's
    /// Host header).
    pub public_url: String,
    /// TLS of the SCIM listener (Entra requires HTTPS); off unless `tls.cert_file` is set.
    pub tls: service_runtime::tls::ServerTls,
    /// Largest request body; larger ones are refused with 413 before they are read.
    pub max_body_bytes: usize,
    /// Requests handled at once; more are refused with 429 and `Retry-After`.
    pub max_concurrent_requests: usize,
    /// Requests per second one token may send (a burst of as many more is allowed); more
    /// are refused with 429 and `Retry-After`.
    pub max_requests_per_second: u32,
    /// How often the changes pushed since the last round are provisioned as a round.
    pub round_interval_secs: u64,
    /// The safety rail (`provisioning.max_disable_count`/`_share`) counts the users disabled
    /// by the SCIM runs of this many seconds before a run, with the run's own.
    pub safety_window_secs: u64,
}

impl Default for ScimConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen_addr: SocketAddr::from(([0, 0, 0, 0], 8443)),
            public_url: String::new(),
            tls: service_runtime::tls::ServerTls::default(),
            max_body_bytes: 1024 * 1024,
            max_concurrent_requests: 64,
            max_requests_per_second: 1000,
            round_interval_secs: 10,
            safety_window_secs: 3600,
        }
    }
}

/// After each sync round, the changes of users the registry holds flow to it: names, aliases
/// (a UPN rename; the user id stays), and enabled state (disabled or deleted users are
/// disabled, restored ones enabled). A round that would disable more users than either limit
/// halts before writing and waits for `ApproveSyncRun` or `RejectSyncRun`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProvisioningConfig {
    /// Apply rounds' changes to the registry at all.
    pub update_registry: bool,
    /// Most users one round may disable without approval.
    pub max_disable_count: u64,
    /// Largest share (0–1) of the registry's users one round may disable without approval.
    pub max_disable_share: f64,
    /// With `sync.groups` set, a registry user whose directory user is in none of them (left
    /// its last group) is disabled when the round that saw the change provisions.
    pub disable_out_of_scope: bool,
    /// Import users that appear in the directory (in the synced groups, when any are
    /// configured), through import-worker, after each round.
    pub auto_import: bool,
    /// The company auto-imported users get.
    pub auto_import_company: String,
    /// Delete registry users whose directory user was hard-deleted (off: they are disabled
    /// and marked, and kept).
    pub delete_hard_deleted: bool,
    /// Reconcile the group-to-role rules (kept by import-worker) after each round.
    pub apply_role_rules: bool,
    /// How long a round retries user-registry and import-worker while they are unavailable
    /// (services start in any order), before it fails naming the one that did not answer.
    pub peer_retry_secs: u64,
}

impl Default for ProvisioningConfig {
    fn default() -> Self {
        Self {
            update_registry: true,
            max_disable_count: 50,
            max_disable_share: 0.1,
            disable_out_of_scope: true,
            auto_import: false,
            auto_import_company: "DAT".to_owned(),
            delete_hard_deleted: false,
            apply_role_rules: true,
            peer_retry_secs: 120,
        }
    }
}

/// The Entra tenant and the app registration used to read it.
#[derive(Debug, Clone, Deserialize)]
pub struct DirectoryConfig {
    pub cloud: String,
    #[serde(default)]
    pub authority_host: String,
    #[serde(default)]
    pub graph_host: String,
    /// Token scope; empty: the cloud's Graph resource (`https://graph.microsoft.com/.default`
    /// for the global cloud), whatever `graph_host` is.
    #[serde(default)]
    pub scope: String,
    pub tenant_id: String,
    pub client_id: String,
    #[serde(default = "empty_secret")]
    pub client_secret: SecretString,
    #[serde(default)]
    pub client_secret_file: String,
    /// PEM certificate of the app; with `private_key_file`, replaces the secret.
    #[serde(default)]
    pub client_certificate_file: String,
    /// PEM RSA private key of that certificate.
    #[serde(default)]
    pub private_key_file: String,
    /// `ps256` (x5t#S256) or `rs256` (x5t).
    #[serde(default = "default_algorithm")]
    pub assertion_algorithm: String,
    pub page_size: u16,
    pub request_timeout_secs: u64,
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    #[serde(default = "default_budget")]
    pub resource_units_per_10s: u32,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

fn default_algorithm() -> String {
    "ps256".to_owned()
}

fn default_concurrency() -> usize {
    graph::DEFAULT_MAX_CONCURRENCY
}

fn default_budget() -> u32 {
    graph::ResourceBudget::SMALL_TENANT.units
}

fn default_attempts() -> u32 {
    graph::RetryPolicy::default().max_attempts
}

fn empty_secret() -> SecretString {
    SecretString::from(String::new())
}

#[derive(Debug, Clone, Deserialize)]
pub struct SyncConfig {
    pub full_sync_on_start: bool,
    /// Seconds between delta rounds; 0 turns the schedule off.
    #[serde(default)]
    pub delta_interval_secs: u64,
    /// Groups whose transitive user members are mirrored.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Config {
    /// Defaults, then `file`, then `DIRECTORY_SYNC_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, Box<figment::Error>> {
        service_runtime::config::load(include_str!("../config.default.toml"), file, ENV_PREFIX)
    }

    /// A configuration for one machine (`userimport dev`, tests, benchmarks): the given
    /// database, registry and directory, port 0, no sync at start.
    pub fn local(database_url: &str, registry_url: &str, directory: DirectoryConfig) -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            registry_url: registry_url.to_owned(),
            importer_url: String::new(),
            directory,
            sync: SyncConfig {
                full_sync_on_start: false,
                delta_interval_secs: 0,
                groups: Vec::new(),
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
            registry_tls: service_runtime::tls::ClientTls::default(),
            metrics: service_runtime::metrics::MetricsConfig { listen_addr: None },
            provisioning: ProvisioningConfig::default(),
            scim: ScimConfig::default(),
        }
    }
}

impl DirectoryConfig {
    /// A directory served by one host for both the token endpoint and Graph (the emulator).
    pub fn single_host(
        base_url: &str,
        tenant_id: &str,
        client_id: &str,
        client_secret: &str,
    ) -> Self {
        Self {
            cloud: "global".to_owned(),
            authority_host: base_url.to_owned(),
            graph_host: base_url.to_owned(),
            scope: String::new(),
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: SecretString::from(client_secret.to_owned()),
            client_secret_file: String::new(),
            client_certificate_file: String::new(),
            private_key_file: String::new(),
            assertion_algorithm: default_algorithm(),
            page_size: graph::MAX_PAGE_SIZE,
            request_timeout_secs: 30,
            max_concurrency: default_concurrency(),
            // The emulator does not throttle unless told to.
            resource_units_per_10s: 0,
            max_attempts: default_attempts(),
        }
    }

    /// The Graph client settings: the cloud's hosts unless overridden, the secret (from its
    /// file when one is named) or the certificate, and the throttling discipline.
    pub fn graph_config(&self) -> anyhow::Result<graph::GraphConfig> {
        anyhow::ensure!(
            !self.tenant_id.trim().is_empty(),
            "directory.tenant_id is not set"
        );
        anyhow::ensure!(
            !self.client_id.trim().is_empty(),
            "directory.client_id is not set"
        );
        let cloud: graph::Cloud = self
            .cloud
            .parse()
            .map_err(|e| anyhow::anyhow!("directory.cloud: {e}"))?;
        let read = |what: &str, path: &str| {
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read directory.{what} {path}"))
        };
        let mut config = if self.client_certificate_file.is_empty() {
            let secret = if self.client_secret_file.is_empty() {
                self.client_secret.clone()
            } else {
                SecretString::from(
                    read("client_secret_file", &self.client_secret_file)?
                        .trim()
                        .to_owned(),
                )
            };
            graph::GraphConfig::for_cloud(
                cloud,
                self.tenant_id.trim(),
                self.client_id.trim(),
                secret,
            )
        } else {
            anyhow::ensure!(
                !self.private_key_file.is_empty(),
                "directory.private_key_file is not set"
            );
            let key = SecretString::from(read("private_key_file", &self.private_key_file)?);
            let algorithm = match self.assertion_algorithm.to_ascii_lowercase().as_str() {
                "ps256" => graph::AssertionAlgorithm::Ps256,
                "rs256" => graph::AssertionAlgorithm::Rs256,
                other => {
                    anyhow::bail!("directory.assertion_algorithm: {other:?} is not ps256 or rs256")
                }
            };
            let certificate = graph::ClientCertificate::from_pem(
                &read("client_certificate_file", &self.client_certificate_file)?,
                &key,
            )
            .map_err(|e| anyhow::anyhow!("directory certificate: {e}"))?
            .with_algorithm(algorithm);
            graph::GraphConfig::with_certificate(
                cloud,
                self.tenant_id.trim(),
                self.client_id.trim(),
                certificate,
            )
        };
        if !self.authority_host.is_empty() {
            config.authority_host = self
                .authority_host
                .parse()
                .context("directory.authority_host")?;
        }
        if !self.graph_host.is_empty() {
            config.graph_host = self.graph_host.parse().context("directory.graph_host")?;
        }
        if !self.scope.trim().is_empty() {
            config.scope = self.scope.trim().to_owned();
        }
        config.page_size = self.page_size;
        config.request_timeout = Duration::from_secs(self.request_timeout_secs.max(1));
        config.max_concurrency = self.max_concurrency.max(1);
        config.resource_budget = graph::ResourceBudget {
            units: self.resource_units_per_10s,
            window: Duration::from_secs(10),
        };
        config.retry.max_attempts = self.max_attempts.max(1);
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn directory(cloud: &str, scope: &str) -> DirectoryConfig {
        DirectoryConfig {
            cloud: cloud.to_owned(),
            scope: scope.to_owned(),
            ..DirectoryConfig::single_host("http://127.0.0.1:9", "tenant", "client", "secret")
        }
    }

    #[test]
    fn the_token_scope_is_the_clouds_graph_resource_unless_directory_scope_is_set() {
        let global = directory("global", "").graph_config().unwrap();
        assert_eq!(global.scope, "https://graph.microsoft.com/.default");
        let china = directory("china", " ").graph_config().unwrap();
        assert_eq!(
            china.scope,
            "https://microsoftgraph.chinacloudapi.cn/.default"
        );
        let set = directory("global", "api://graph-gateway/.default")
            .graph_config()
            .unwrap();
        assert_eq!(set.scope, "api://graph-gateway/.default");
    }

    #[test]
    fn the_default_config_file_leaves_directory_scope_empty() {
        let config = Config::load(None).unwrap();
        assert_eq!(config.directory.scope, "");
    }
}
