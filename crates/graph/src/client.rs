//! The Graph client: token acquisition, the single request path, user reads.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, HeaderMap};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::error::{auth_error, graph_error};
use crate::token::{AcquiredToken, TokenCache};
use crate::users::{GraphUser, USER_SELECT, UserPages};
use crate::{Error, GraphConfig};

/// A Microsoft Graph client for one tenant; cheap to clone (shares connections and the token).
///
/// `Debug` never shows the client secret or tokens.
#[derive(Clone)]
pub struct GraphClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: GraphConfig,
    http: reqwest::Client,
    token_url: Url,
    scope: String,
    /// `graph_host` without a trailing slash.
    graph_root: String,
    /// The first page of the user listing.
    list_users_url: Url,
    tokens: TokenCache,
}

impl fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphClient")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    token_type: String,
    expires_in: ExpiresIn,
}

/// `expires_in` is a number on the v2 endpoint and a string on v1 and some proxies.
#[derive(Deserialize)]
#[serde(untagged)]
enum ExpiresIn {
    Seconds(u64),
    Text(String),
}

impl GraphClient {
    /// Validates `config` and builds the HTTP client.
    ///
    /// TLS uses rustls with the ring provider. This installs ring as the process default if no
    /// provider is installed yet; processes should still install it at start-up themselves.
    pub fn new(config: GraphConfig) -> Result<Self, Error> {
        config.validate()?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("userimport-graph/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::InvalidConfig(format!("cannot build the HTTP client: {e}")))?;
        let authority = config.authority_host.as_str().trim_end_matches('/');
        let token_url = Url::parse(&format!(
            "{authority}/{}/oauth2/v2.0/token",
            encode_path_segment(config.tenant_id.trim())
        ))
        .map_err(|e| Error::InvalidConfig(format!("bad token endpoint URL: {e}")))?;
        let graph_root = config.graph_host.as_str().trim_end_matches('/').to_owned();
        let list_users_url = Url::parse(&format!(
            "{graph_root}/v1.0/users?$select={USER_SELECT}&$top={}",
            config.page_size
        ))
        .map_err(|e| Error::InvalidConfig(format!("bad users URL: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                list_users_url,
                scope: format!("{graph_root}/.default"),
                graph_root,
                token_url,
                http,
                tokens: TokenCache::default(),
                config,
            }),
        })
    }

    /// Returns the tenant this client reads.
    pub fn tenant_id(&self) -> &str {
        &self.inner.config.tenant_id
    }

    /// Lists all users: `GET /v1.0/users?$select=USER_SELECT&$top=page_size`, then each
    /// `@odata.nextLink` verbatim until there is none.
    pub fn list_users(&self) -> UserPages {
        UserPages::new(self.clone(), self.inner.list_users_url.clone())
    }

    /// Reads one user by object id or userPrincipalName; `Ok(None)` if Graph answers 404.
    ///
    /// The key is percent-encoded as one path segment (`#EXT#` becomes `%23EXT%23`). An empty
    /// key, `.` or `..` names no user and returns `Ok(None)` without a request.
    pub async fn get_user(&self, id_or_upn: &str) -> Result<Option<GraphUser>, Error> {
        if matches!(id_or_upn.trim(), "" | "." | "..") {
            return Ok(None);
        }
        let url = format!(
            "{}/v1.0/users/{}?$select={USER_SELECT}",
            self.inner.graph_root,
            encode_path_segment(id_or_upn)
        );
        let url =
            Url::parse(&url).map_err(|e| Error::InvalidConfig(format!("bad user URL: {e}")))?;
        match self.send_json::<serde_json::Value>(&url).await {
            Ok(entry) => GraphUser::try_from(entry).map(Some).map_err(|rejected| {
                Error::Decode(format!("user {id_or_upn}: {}", rejected.reason))
            }),
            Err(Error::Graph { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The one request path to Graph: token, GET, status check, JSON decoding.
    ///
    /// Retries and throttling (429 `Retry-After`) belong here.
    pub(crate) async fn send_json<T: DeserializeOwned>(&self, url: &Url) -> Result<T, Error> {
        let token = self.access_token().await?;
        let started = Instant::now();
        let response = self
            .inner
            .http
            .get(url.clone())
            .bearer_auth(token.expose_secret())
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(Error::Transport)?;
        let status = response.status();
        let request_id = header_text(response.headers(), "request-id");
        let body = response.bytes().await.map_err(Error::Transport)?;
        tracing::debug!(
            path = url.path(),
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "graph request done"
        );
        if !status.is_success() {
            return Err(graph_error(status.as_u16(), request_id, &body));
        }
        serde_json::from_slice(&body)
            .map_err(|e| Error::Decode(format!("{} {}: {e}", status.as_u16(), url.path())))
    }

    /// Accepts a nextLink only on the Graph host (it will carry our token) and only if it moves on.
    pub(crate) fn check_next_link(&self, link: &str, current: &Url) -> Result<Url, Error> {
        let next = Url::parse(link)
            .map_err(|e| Error::Decode(format!("@odata.nextLink {link:?} is not a URL: {e}")))?;
        if next.origin() != self.inner.config.graph_host.origin() {
            return Err(Error::Decode(format!(
                "@odata.nextLink {link:?} leaves the Graph host {}",
                self.inner.config.graph_host
            )));
        }
        if next == *current {
            return Err(Error::Decode(format!(
                "@odata.nextLink {link:?} repeats the current page"
            )));
        }
        if next.as_str() != link {
            tracing::debug!(
                link,
                normalized = next.as_str(),
                "nextLink was normalized by URL parsing"
            );
        }
        Ok(next)
    }

    async fn access_token(&self) -> Result<SecretString, Error> {
        self.inner.tokens.get(|| self.request_token()).await
    }

    async fn request_token(&self) -> Result<AcquiredToken, Error> {
        let config = &self.inner.config;
        let requested_at = Instant::now();
        let response = self
            .inner
            .http
            .post(self.inner.token_url.clone())
            .header(ACCEPT, "application/json")
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", config.client_id.as_str()),
                ("client_secret", config.client_secret.expose_secret()),
                ("scope", self.inner.scope.as_str()),
            ])
            .send()
            .await
            .map_err(Error::Transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(Error::Transport)?;
        if !status.is_success() {
            return Err(auth_error(
                status.as_u16(),
                &body,
                config.client_secret.expose_secret(),
            ));
        }
        let token: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| Error::Decode(format!("token response: {e}")))?;
        if !token.token_type.eq_ignore_ascii_case("bearer") {
            return Err(Error::Decode(format!(
                "token response: unexpected token_type {:?}",
                token.token_type
            )));
        }
        let seconds = match token.expires_in {
            ExpiresIn::Seconds(seconds) => seconds,
            ExpiresIn::Text(text) => text
                .trim()
                .parse()
                .map_err(|_| Error::Decode(format!("token response: expires_in {text:?}")))?,
        };
        tracing::debug!(expires_in = seconds, "access token acquired");
        Ok(AcquiredToken {
            access_token: SecretString::from(token.access_token),
            lifetime: Duration::from_secs(seconds),
            requested_at,
        })
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Percent-encodes one path segment, keeping RFC 3986 `pchar`s (so `#` becomes `%23`).
fn encode_path_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_user_principal_names_are_percent_encoded_in_paths() {
        assert_eq!(
            encode_path_segment("jane_fabrikam.com#EXT#@contoso.com"),
            "jane_fabrikam.com%23EXT%23@contoso.com"
        );
        assert_eq!(encode_path_segment("a/b?c%d e"), "a%2Fb%3Fc%25d%20e");
        assert_eq!(encode_path_segment("zoë"), "zo%C3%AB");
    }
}
