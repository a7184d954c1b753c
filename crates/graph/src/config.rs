//! Connection settings for one tenant.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::certificate::ClientCertificate;
use crate::{Cloud, Error};

/// Default and largest page size Graph accepts for `GET /users`.
pub const MAX_PAGE_SIZE: u16 = 999;

/// How to reach and authenticate to Graph for one tenant.
///
/// `Debug` shows `client_secret` as `[REDACTED]` and never shows a certificate's private key.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// Directory (tenant) id, or a verified domain of the tenant.
    pub tenant_id: String,
    /// Application (client) id of the app registration.
    pub client_id: String,
    /// Client secret of the app registration, used when `credential` is
    /// [`Credential::ClientSecret`]; may be empty with a certificate.
    pub client_secret: SecretString,
    /// Which credential proves the app's identity to the token endpoint.
    pub credential: Credential,
    /// Entra authority host, e.g. `https://login.microsoftonline.com`.
    pub authority_host: Url,
    /// Graph host, e.g. `https://graph.microsoft.com`, or a proxy in front of it; requests go
    /// here, but the token's audience does not follow it (see `scope`).
    pub graph_host: Url,
    /// Scope of the token request: the cloud's Graph resource
    /// ([`Cloud::graph_scope`], e.g. `https://graph.microsoft.com/.default`), whatever
    /// `graph_host` is. Set it only when the tenant must ask for another resource (Graph's
    /// app id form `00000003-0000-0000-c000-000000000000/.default`, a gateway's own API).
    pub scope: String,
    /// Users per page (`$top`), 1..=999.
    pub page_size: u16,
    /// Timeout of one HTTP request, body included.
    pub request_timeout: Duration,
    /// How often and how long to retry throttled and failed requests.
    pub retry: RetryPolicy,
    /// Most requests to Graph in flight at once, over all callers of one client.
    pub max_concurrency: usize,
    /// Resource units this client may spend per window (Graph's identity throttling).
    pub resource_budget: ResourceBudget,
}

/// The app's credential for the client-credentials grant.
#[derive(Debug, Clone, Default)]
pub enum Credential {
    /// A client secret: [`GraphConfig::client_secret`].
    #[default]
    ClientSecret,
    /// A certificate: a signed client assertion (JWT) replaces the secret.
    Certificate(ClientCertificate),
}

/// Bounded retries with exponential backoff and full jitter.
///
/// A `Retry-After` header on any error answer (429, 503, 504, others) is honoured instead of
/// the backoff, for every request of the client. 429, 5xx except 501, timeouts, connection
/// errors and corrupt pages are retried; other 4xx never are. A freshly issued token that Graph
/// refuses is sent again after 2, 6 and 12 times `base_delay` (1, 3 and 6 s by default),
/// outside `max_attempts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included; 1 disables retrying.
    pub max_attempts: u32,
    /// Backoff cap of the first retry; doubled for each further one.
    pub base_delay: Duration,
    /// Largest backoff cap.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, backoff from up to 500 ms to up to 30 s.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// Resource units (RU) one client may spend in any window of `window`.
///
/// Graph limits identity requests per app and tenant to 3,500 (tenants under 50 users),
/// 5,000 (50–500) or 8,000 (over 500) RU per 10 s. Costs: `GET /users` 2, `/members` 3,
/// `/transitiveMembers` 5, other GETs 1; `$select` −1, `$top` under 20 −1, at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceBudget {
    /// Resource units per window; 0 means no limit.
    pub units: u32,
    /// Length of the sliding window.
    pub window: Duration,
}

impl ResourceBudget {
    /// The small-tenant limit, 3,500 RU per 10 s: safe for every tenant size.
    pub const SMALL_TENANT: Self = Self {
        units: 3_500,
        window: Duration::from_secs(10),
    };
    /// The medium-tenant limit (50–500 users), 5,000 RU per 10 s.
    pub const MEDIUM_TENANT: Self = Self {
        units: 5_000,
        window: Duration::from_secs(10),
    };
    /// The large-tenant limit (over 500 users), 8,000 RU per 10 s.
    pub const LARGE_TENANT: Self = Self {
        units: 8_000,
        window: Duration::from_secs(10),
    };
    /// No client-side limit.
    pub const UNLIMITED: Self = Self {
        units: 0,
        window: Duration::from_secs(10),
    };
}

impl Default for ResourceBudget {
    /// [`ResourceBudget::SMALL_TENANT`].
    fn default() -> Self {
        Self::SMALL_TENANT
    }
}

/// Default of [`GraphConfig::max_concurrency`].
pub const DEFAULT_MAX_CONCURRENCY: usize = 8;

impl GraphConfig {
    /// Returns a config for `cloud` (its hosts and its Graph resource as the token scope) with
    /// a client secret, page size 999, a 60 s request
    /// timeout, the default retry policy, 8 requests in flight and the small-tenant budget.
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
            credential: Credential::ClientSecret,
            authority_host: cloud.authority_host(),
            graph_host: cloud.graph_host(),
            scope: cloud.graph_scope().to_owned(),
            page_size: MAX_PAGE_SIZE,
            request_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            resource_budget: ResourceBudget::default(),
        }
    }

    /// Like [`GraphConfig::for_cloud`], authenticating with a certificate instead of a secret.
    pub fn with_certificate(
        cloud: Cloud,
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        certificate: ClientCertificate,
    ) -> Self {
        Self {
            credential: Credential::Certificate(certificate),
            ..Self::for_cloud(
                cloud,
                tenant_id,
                client_id,
                SecretString::from(String::new()),
            )
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
        if matches!(self.credential, Credential::ClientSecret)
            && self.client_secret.expose_secret().is_empty()
        {
            return invalid("client_secret is empty".to_owned());
        }
        // Client credentials ask for one resource's application permissions: `{resource}/.default`.
        let scope = self.scope.trim();
        if !scope.ends_with("/.default")
            || scope.len() == "/.default".len()
            || scope.contains(char::is_whitespace)
        {
            return invalid(format!(
                "scope must be one resource followed by /.default, got {:?}",
                self.scope
            ));
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout is zero".to_owned());
        }
        if self.retry.max_attempts == 0 {
            return invalid("retry.max_attempts is zero".to_owned());
        }
        if self.retry.max_delay < self.retry.base_delay {
            return invalid("retry.max_delay is shorter than retry.base_delay".to_owned());
        }
        if self.max_concurrency == 0 {
            return invalid("max_concurrency is zero".to_owned());
        }
        if self.resource_budget.units > 0 && self.resource_budget.window.is_zero() {
            return invalid("resource_budget.window is zero".to_owned());
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
