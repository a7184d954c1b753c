//! Typed configuration: the embedded `config.default.toml`, then a file, then
//! `ADMIN_CONSOLE_*` variables.

use std::net::SocketAddr;
use std::path::Path;

use secrecy::SecretString;
use serde::Deserialize;
use service_runtime::auth::AuthConfig;
use service_runtime::config::LogConfig;
use service_runtime::metrics::MetricsConfig;
use service_runtime::tls::ClientTls;

pub const ENV_PREFIX: &str = "ADMIN_CONSOLE_";

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// `host:port` of the web listener.
    pub listen_addr: SocketAddr,
    pub directory_url: String,
    pub registry_url: String,
    pub importer_url: String,
    /// TLS towards the three services (`https://` URLs).
    #[serde(default)]
    pub client_tls: ClientTls,
    /// The company a new session starts in.
    pub default_company: String,
    /// The batch groups offered by the Batch import dialog.
    pub batch_groups: Vec<String>,
    pub session_minutes: u64,
    pub secure_cookies: bool,
    /// How a signed-in person's token is verified: the same settings the services use, so
    /// the console knows who signed in and whether they may write before it shows a button.
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub sign_in: SignInConfig,
    pub log: LogConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// How people sign in.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignInConfig {
    /// OpenID Connect sign-in (authorization code with PKCE) at the identity provider whose
    /// access tokens the services accept.
    pub oidc: Option<OidcSignIn>,
    /// Offer a field to paste an access token (for a service account or a token from the
    /// identity provider's own tools).
    pub token_form: bool,
    /// One button per person, each signing in with its token: `userimport dev` only.
    pub dev_people: Vec<DevPerson>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSignIn {
    /// The issuer; its `/.well-known/openid-configuration` names the endpoints (Entra:
    /// `https://login.microsoftonline.com/<tenant>/v2.0`).
    pub issuer: String,
    /// The console's application (client) id at the identity provider.
    pub client_id: String,
    /// A confidential client's secret; a public client relies on PKCE alone.
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    /// This console's `/sign-in/callback` as registered at the identity provider.
    pub redirect_url: String,
    /// Scopes asked for besides `openid`: the one whose access tokens the services accept
    /// (Entra: `api://userimport/.default` or the API's scope).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Allow `http://` on loopback hosts (tests and the emulator).
    #[serde(default)]
    pub allow_http_loopback: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevPerson {
    pub principal: String,
    /// None when the services run in insecure development mode (the principal is named in
    /// a header instead).
    #[serde(default)]
    pub token: Option<SecretString>,
}

impl Config {
    /// Defaults, then `file`, then `ADMIN_CONSOLE_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, Box<figment::Error>> {
        service_runtime::config::load(include_str!("../config.default.toml"), file, ENV_PREFIX)
    }

    /// The defaults (no file, no environment) with these service URLs: `userimport dev`.
    pub fn local(
        directory_url: &str,
        registry_url: &str,
        importer_url: &str,
    ) -> anyhow::Result<Self> {
        use figment::providers::Format as _;
        let mut config: Self = figment::Figment::new()
            .merge(figment::providers::Toml::string(include_str!(
                "../config.default.toml"
            )))
            .extract()
            .map_err(|e| anyhow::anyhow!("the embedded defaults: {e}"))?;
        config.listen_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.directory_url = directory_url.to_owned();
        config.registry_url = registry_url.to_owned();
        config.importer_url = importer_url.to_owned();
        config.secure_cookies = false;
        config.metrics.listen_addr = None;
        Ok(config)
    }

    /// Refuses settings that cannot work, before anything listens.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.client_tls.validate()?;
        anyhow::ensure!(
            self.sign_in.oidc.is_some()
                || self.sign_in.token_form
                || !self.sign_in.dev_people.is_empty(),
            "nobody can sign in: set sign_in.oidc (or sign_in.token_form = true)"
        );
        anyhow::ensure!(
            !self.batch_groups.is_empty(),
            "batch_groups: name at least one group your import-workers serve"
        );
        anyhow::ensure!(self.session_minutes > 0, "session_minutes must be positive");
        Ok(())
    }
}
