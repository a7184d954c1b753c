//! Connection settings for one tenant.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::{Cloud, Error};

/// Default and largest page size Graph accepts for `GET /users`.
pub const MAX_PAGE_SIZE: u16 = 999;

/// How to reach and authenticate to Graph for one tenant.
///
/// `Debug` shows `client_secret` as `[REDACTED]`.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// Directory (tenant) id, or a verified domain of the tenant.
    pub tenant_id: String,
    /// Application (client) id of the app registration.
    pub client_id: String,
    /// Client secret of the app registration.
    pub client_secret: SecretString,
    /// Entra authority host, e.g. `https://login.microsoftonline.com`.
    pub authority_host: Url,
    /// Graph host, e.g. `https://graph.microsoft.com`; the token scope is `{graph_host}/.default`.
    pub graph_host: Url,
    /// Users per page (`$top`), 1..=999.
    pub page_size: u16,
    /// Timeout of one HTTP request, body included.
    pub request_timeout: Duration,
}

impl GraphConfig {
    /// Returns a config for `cloud` with page size 999 and a 60 s request timeout.
    pub fn for_cloud(
        cloud: Cloud,
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: SecretString,
    ) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            client_secret,
            authority_host: cloud.authority_host(),
            graph_host: cloud.graph_host(),
            page_size: MAX_PAGE_SIZE,
            request_timeout: Duration::from_secs(60),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let invalid = |message: String| Err(Error::InvalidConfig(message));
        if !(1..=MAX_PAGE_SIZE).contains(&self.page_size) {
            return invalid(format!(
                "page_size must be between 1 and {MAX_PAGE_SIZE}, got {}",
                self.page_size
            ));
        }
        if self.tenant_id.trim().is_empty() {
            return invalid("tenant_id is empty".to_owned());
        }
        if self.client_id.trim().is_empty() {
            return invalid("client_id is empty".to_owned());
        }
        if self.client_secret.expose_secret().is_empty() {
            return invalid("client_secret is empty".to_owned());
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout is zero".to_owned());
        }
        for (name, url) in [
            ("authority_host", &self.authority_host),
            ("graph_host", &self.graph_host),
        ] {
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return invalid(format!(
                    "{name} must be an http(s) URL with a host, got {url}"
                ));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return invalid(format!(
                    "{name} must not have a query or fragment, got {url}"
                ));
            }
        }
        Ok(())
    }
}
