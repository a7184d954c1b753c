//! The Graph client: token acquisition, the single request path, user reads.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use url::Url;

use crate::certificate::JWT_BEARER;
use crate::config::Credential;
use crate::error::{auth_error, graph_error};
use crate::throttle::{Budget, Hold, backoff, names, parse_retry_after, resource_units};
use crate::token::{AcquiredToken, TokenCache};
use crate::users::{GraphUser, ListUsersOptions, USER_SELECT, UserPages};
use crate::{Error, GraphConfig};

/// A Microsoft Graph client for one tenant; cheap to clone (shares connections, the token,
/// the throttling state, the concurrency limit and the resource budget).
///
/// Every request goes through one path that waits for a `Retry-After` hold, the concurrency
/// limit and the resource budget, retries as [`RetryPolicy`](crate::RetryPolicy) says, and
/// refreshes the token when Graph answers 401 (and waits a little for a fresh token Graph
/// refuses too).
///
/// `Debug` never shows the client secret, the private key or tokens.
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
    hold: Hold,
    budget: Budget,
    permits: Semaphore,
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

/// One request to Graph, as the request path sends it (and re-sends it on retries).
pub(crate) struct Call<'a> {
    method: Method,
    url: &'a Url,
    body: Option<&'a serde_json::Value>,
    /// Send `ConsistencyLevel: eventual`.
    eventual: bool,
    /// Resource units the request costs.
    cost: u32,
}

impl<'a> Call<'a> {
    /// A GET of `url`, costed by Graph's table.
    pub(crate) fn get(url: &'a Url) -> Self {
        Self {
            method: Method::GET,
            cost: resource_units(url),
            url,
            body: None,
            eventual: false,
        }
    }

    /// A POST of a JSON body costing `cost` resource units.
    pub(crate) fn post_json(url: &'a Url, body: &'a serde_json::Value, cost: u32) -> Self {
        Self {
            method: Method::POST,
            url,
            body: Some(body),
            eventual: false,
            cost,
        }
    }

    pub(crate) fn eventual(mut self, eventual: bool) -> Self {
        self.eventual = eventual;
        self
    }
}

/// A response as received, before its status is judged.
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    request_id: Option<String>,
    body: Vec<u8>,
}

/// What one attempt leads to.
enum Step<T> {
    Done(T),
    Fail(Error),
    /// Retry after `delay` (none: the shared hold already says how long).
    Retry {
        error: Error,
        reason: &'static str,
        delay: Option<Duration>,
    },
    /// Graph refused the token (`error`): refresh it and send again.
    Unauthorized {
        token: SecretString,
        error: Error,
    },
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
                scope: config.scope.trim().to_owned(),
                graph_root,
                token_url,
                http,
                tokens: TokenCache::default(),
                hold: Hold::default(),
                budget: Budget::new(config.resource_budget),
                permits: Semaphore::new(config.max_concurrency),
                config,
            }),
        })
    }

    /// Returns the tenant this client reads.
    pub fn tenant_id(&self) -> &str {
        &self.inner.config.tenant_id
    }

    /// Returns when the current `Retry-After` hold ends, if one is active: until then this
    /// client sends no request to Graph.
    pub fn throttled_until(&self) -> Option<Instant> {
        self.inner.hold.until(Instant::now())
    }

    /// Lists all users: `GET /v1.0/users?$select=USER_SELECT&$top=page_size`, then each
    /// `@odata.nextLink` verbatim until there is none.
    pub fn list_users(&self) -> UserPages {
        UserPages::new(self.clone(), self.inner.list_users_url.clone(), false)
    }

    /// Lists users with query options (`$filter`, `$search`, `$count`); sends
    /// `ConsistencyLevel: eventual` on every page, nextLink pages included, when the options
    /// need it (Graph does not carry the header over to next pages).
    pub fn list_users_with(&self, options: &ListUsersOptions) -> Result<UserPages, Error> {
        let mut url = format!(
            "{}/v1.0/users?$select={USER_SELECT}&$top={}",
            self.inner.graph_root, self.inner.config.page_size
        );
        if let Some(filter) = &options.filter {
            url.push_str(&format!("&$filter={}", encode_query_value(filter)));
        }
        if let Some(search) = &options.search {
            let quoted = if search.starts_with('"') {
                search.clone()
            } else {
                format!("\"{search}\"")
            };
            url.push_str(&format!("&$search={}", encode_query_value(&quoted)));
        }
        if options.count {
            url.push_str("&$count=true");
        }
        let url =
            Url::parse(&url).map_err(|e| Error::InvalidConfig(format!("bad users URL: {e}")))?;
        Ok(UserPages::new(
            self.clone(),
            url,
            options.needs_eventual_consistency(),
        ))
    }

    /// Reads one user by object id or userPrincipalName; `Ok(None)` if Graph answers 404.
    ///
    /// The key is percent-encoded as one path segment (`#EXT#` becomes `%23EXT%23`). An empty
    /// key, `.` or `..` names no user and returns `Ok(None)` without a request.
    pub async fn get_user(&self, id_or_upn: &str) -> Result<Option<GraphUser>, Error> {
        if !names_an_object(id_or_upn) {
            return Ok(None);
        }
        let url = self.graph_url(&format!(
            "/v1.0/users/{}?$select={USER_SELECT}",
            encode_path_segment(id_or_upn)
        ))?;
        match self.send_json::<serde_json::Value>(&url).await {
            Ok(entry) => GraphUser::try_from(entry).map(Some).map_err(|rejected| {
                Error::Decode(format!("user {id_or_upn}: {}", rejected.reason))
            }),
            Err(Error::Graph { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// `{graph_root}{path_and_query}` as a URL.
    pub(crate) fn graph_url(&self, path_and_query: &str) -> Result<Url, Error> {
        Url::parse(&format!("{}{path_and_query}", self.inner.graph_root))
            .map_err(|e| Error::InvalidConfig(format!("bad Graph URL {path_and_query:?}: {e}")))
    }

    pub(crate) fn config(&self) -> &GraphConfig {
        &self.inner.config
    }

    /// A GET whose body is decoded as `T`.
    pub(crate) async fn send_json<T: DeserializeOwned>(&self, url: &Url) -> Result<T, Error> {
        self.call(Call::get(url), |body| {
            serde_json::from_slice(body).map_err(|e| Error::Decode(format!("{}: {e}", url.path())))
        })
        .await
    }

    /// The one request path to Graph: hold, concurrency limit, budget, token, send, status
    /// check, decoding with `parse`, retries.
    ///
    /// Retried: 429 and 5xx except 501, timeouts and connection errors, a token endpoint that
    /// is throttled or down, and bodies `parse` rejects with [`Error::Decode`] (a corrupt
    /// page), up to `retry.max_attempts` attempts, each after a backoff. A `Retry-After` on
    /// any error answer, whatever its status, replaces the backoff and holds every request of
    /// this client until it has passed. A 401 refreshes the token and sends once more; a
    /// fresh token refused again is sent again after [`REFUSED_TOKEN_WAITS`], as Entra's
    /// tokens can be refused for a moment after issue; all of that outside the attempt count.
    /// Other 4xx are returned at once.
    pub(crate) async fn call<T>(
        &self,
        call: Call<'_>,
        parse: impl Fn(&[u8]) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let policy = self.inner.config.retry;
        let mut attempt: u32 = 0;
        // 401 answers to this call, and when the first one came.
        let mut refusals: u32 = 0;
        let mut first_refusal = None;
        loop {
            attempt += 1;
            let (error, reason, delay) = match self.attempt(&call, &parse, attempt).await {
                Step::Done(value) => return Ok(value),
                Step::Fail(error) => return Err(error),
                Step::Unauthorized { token, error } => {
                    attempt -= 1;
                    refusals += 1;
                    let first_refusal = *first_refusal.get_or_insert_with(Instant::now);
                    if refusals == 1 {
                        // Most likely expired or revoked: a new token fixes it at once.
                        metrics::counter!(names::RETRIES, "reason" => "unauthorized").increment(1);
                        tracing::warn!(
                            path = call.url.path(),
                            error = %error,
                            "graph refused the access token, refreshing it and retrying"
                        );
                        self.inner.tokens.invalidate(&token).await;
                        continue;
                    }
                    let Some(wait) = refused_token_wait(&policy, refusals - 1) else {
                        tracing::warn!(
                            path = call.url.path(),
                            refusals,
                            error = %error,
                            "graph keeps refusing freshly issued access tokens, giving up"
                        );
                        return Err(token_refused(error, refusals, first_refusal.elapsed()));
                    };
                    metrics::counter!(names::RETRIES, "reason" => "token_refused").increment(1);
                    tracing::warn!(
                        path = call.url.path(),
                        refusals,
                        delay_ms = wait.as_millis() as u64,
                        error = %error,
                        "graph refused a freshly issued access token, retrying it after a wait"
                    );
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Step::Retry {
                    error,
                    reason,
                    delay,
                } => (error, reason, delay),
            };
            if attempt >= policy.max_attempts {
                tracing::warn!(
                    path = call.url.path(),
                    attempts = attempt,
                    reason,
                    error = %error,
                    "graph request failed, giving up"
                );
                return Err(match error {
                    Error::Decode(message) => {
                        Error::Decode(format!("{message} (after {attempt} attempts)"))
                    }
                    other => other,
                });
            }
            metrics::counter!(names::RETRIES, "reason" => reason).increment(1);
            tracing::warn!(
                path = call.url.path(),
                attempt,
                max_attempts = policy.max_attempts,
                reason,
                delay_ms = delay.map(|d| d.as_millis() as u64),
                throttled_until_ms = self
                    .throttled_until()
                    .map(|t| t.saturating_duration_since(Instant::now()).as_millis() as u64),
                error = %error,
                "graph request failed, retrying"
            );
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
        }
    }

    async fn attempt<T>(
        &self,
        call: &Call<'_>,
        parse: &impl Fn(&[u8]) -> Result<T, Error>,
        attempt: u32,
    ) -> Step<T> {
        let policy = &self.inner.config.retry;
        let token = match self.access_token().await {
            Ok(token) => token,
            Err(error) if error.is_retryable() => {
                return Step::Retry {
                    error,
                    reason: "token",
                    delay: Some(backoff(policy, attempt)),
                };
            }
            Err(error) => return Step::Fail(error),
        };
        let answer = match self.send(call, &token).await {
            Ok(answer) => answer,
            Err(error) => {
                let reason = if error.is_timeout() {
                    "timeout"
                } else {
                    "transport"
                };
                metrics::counter!(names::REQUESTS, "status" => reason).increment(1);
                return Step::Retry {
                    error: Error::Transport(error),
                    reason,
                    delay: Some(backoff(policy, attempt)),
                };
            }
        };
        let status = answer.status;
        if (200..300).contains(&status) {
            return match parse(&answer.body) {
                Ok(value) => Step::Done(value),
                Err(error @ Error::Decode(_)) => Step::Retry {
                    error,
                    reason: "decode",
                    delay: Some(backoff(policy, attempt)),
                },
                Err(error) => Step::Fail(error),
            };
        }
        // Graph (or a gateway in front of it) may ask for a pause with any error status, 504
        // included; the pause is for the service, so it holds every caller of the client. On
        // a success it would be an async operation's polling hint, which this client has none of.
        if let Some(retry_after) = answer.retry_after {
            self.inner.hold.extend(Instant::now() + retry_after);
            tracing::warn!(
                status,
                retry_after_ms = retry_after.as_millis() as u64,
                path = call.url.path(),
                "graph asked to retry later, holding all requests"
            );
        }
        if matches!(status, 429 | 503) {
            metrics::counter!(names::THROTTLED, "status" => status.to_string()).increment(1);
        }
        let error = graph_error(status, answer.request_id, &answer.body);
        if status == 401 {
            return Step::Unauthorized { token, error };
        }
        if !error.is_retryable() {
            return Step::Fail(error);
        }
        Step::Retry {
            error,
            reason: if status == 429 {
                "throttled"
            } else {
                "server_error"
            },
            // The hold set above is the wait.
            delay: match answer.retry_after {
                Some(_) => None,
                None => Some(backoff(policy, attempt)),
            },
        }
    }

    /// Sends once: concurrency permit, `Retry-After` hold, resource budget, then HTTP.
    async fn send(&self, call: &Call<'_>, token: &SecretString) -> Result<Answer, reqwest::Error> {
        // The semaphore is never closed, so acquiring only fails if it were.
        let _permit = self.inner.permits.acquire().await.ok();
        self.wait_for_hold_and_budget(call.cost).await;
        metrics::counter!(names::RESOURCE_UNITS).increment(u64::from(call.cost));
        let started = Instant::now();
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), call.url.clone())
            .bearer_auth(token.expose_secret())
            .header(ACCEPT, "application/json");
        if call.eventual {
            request = request.header("ConsistencyLevel", "eventual");
        }
        if let Some(body) = call.body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let request_id = header_text(response.headers(), "request-id");
        let retry_after = header_text(response.headers(), RETRY_AFTER.as_str())
            .and_then(|value| parse_retry_after(&value));
        let body = response.bytes().await?.to_vec();
        metrics::counter!(names::REQUESTS, "status" => status.to_string()).increment(1);
        tracing::debug!(
            method = %call.method,
            path = call.url.path(),
            status,
            cost = call.cost,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "graph request done"
        );
        Ok(Answer {
            status,
            retry_after,
            request_id,
            body,
        })
    }

    async fn wait_for_hold_and_budget(&self, cost: u32) {
        loop {
            self.inner.hold.wait().await;
            let now = Instant::now();
            match self.inner.budget.try_spend(cost, now) {
                Ok(()) if self.inner.hold.until(Instant::now()).is_none() => return,
                // A Retry-After arrived meanwhile: give the units back and wait for it.
                Ok(()) => self.inner.budget.refund(cost, now),
                Err(wait) => {
                    metrics::counter!(names::BUDGET_WAITS).increment(1);
                    tracing::debug!(
                        wait_ms = wait.as_millis() as u64,
                        cost,
                        "resource budget spent, waiting"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Extends the client-wide hold (an inner `$batch` answer asked to retry later).
    pub(crate) fn hold_for(&self, duration: Duration) {
        self.inner.hold.extend(Instant::now() + duration);
    }

    /// Accepts a link only on the Graph host (it will carry our token) and only if it moves on.
    pub(crate) fn check_next_link(&self, link: &str, current: &Url) -> Result<Url, Error> {
        let next = self.check_link(link, "@odata.nextLink")?;
        if next == *current {
            return Err(Error::Decode(format!(
                "@odata.nextLink {link:?} repeats the current page"
            )));
        }
        Ok(next)
    }

    /// Parses a link Graph gave us and checks it stays on the Graph host.
    pub(crate) fn check_link(&self, link: &str, what: &str) -> Result<Url, Error> {
        let next = Url::parse(link)
            .map_err(|e| Error::Decode(format!("{what} {link:?} is not a URL: {e}")))?;
        if next.origin() != self.inner.config.graph_host.origin() {
            return Err(Error::Decode(format!(
                "{what} {link:?} leaves the Graph host {}",
                self.inner.config.graph_host
            )));
        }
        if next.as_str() != link {
            tracing::debug!(
                link,
                normalized = next.as_str(),
                "link was normalized by URL parsing"
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
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", config.client_id.clone()),
            ("scope", self.inner.scope.clone()),
        ];
        let secret = match &config.credential {
            Credential::ClientSecret => {
                form.push((
                    "client_secret",
                    config.client_secret.expose_secret().to_owned(),
                ));
                config.client_secret.expose_secret()
            }
            Credential::Certificate(certificate) => {
                let assertion = certificate.assertion(
                    &config.client_id,
                    self.inner.token_url.as_str(),
                    SystemTime::now(),
                )?;
                form.push(("client_assertion_type", JWT_BEARER.to_owned()));
                form.push(("client_assertion", assertion.expose_secret().to_owned()));
                ""
            }
        };
        let response = self
            .inner
            .http
            .post(self.inner.token_url.clone())
            .header(ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(Error::Transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(Error::Transport)?;
        if !status.is_success() {
            metrics::counter!(names::TOKEN_REQUESTS, "outcome" => "refused").increment(1);
            return Err(auth_error(status.as_u16(), &body, secret));
        }
        metrics::counter!(names::TOKEN_REQUESTS, "outcome" => "issued").increment(1);
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

/// Waits before sending again with a freshly issued token that Graph refused, as multiples
/// of the retry policy's base delay: 1 s, 3 s and 6 s with the default 500 ms, about 10 s in
/// all, which covers the moment Entra may take before every Graph front end accepts a new
/// token. No jitter: these retries follow one token, not a crowd of callers.
pub(crate) const REFUSED_TOKEN_WAITS: [u32; 3] = [2, 6, 12];

/// The wait before retry `retry` (1 for the first) of a refused fresh token, capped at the
/// policy's largest delay; `None` once [`REFUSED_TOKEN_WAITS`] are spent.
fn refused_token_wait(policy: &crate::RetryPolicy, retry: u32) -> Option<Duration> {
    let index = usize::try_from(retry).ok()?.checked_sub(1)?;
    let factor = REFUSED_TOKEN_WAITS.get(index)?;
    Some(
        policy
            .base_delay
            .saturating_mul(*factor)
            .min(policy.max_delay),
    )
}

/// The error for a call whose fresh tokens Graph kept refusing: still a 401 (not retryable:
/// waiting did not help, so the tenant, the app or the token's audience is wrong).
fn token_refused(error: Error, refusals: u32, over: Duration) -> Error {
    let (code, detail, request_id) = match error {
        Error::Graph {
            code,
            message,
            request_id,
            ..
        } => (code, message, request_id),
        other => (
            "InvalidAuthenticationToken".to_owned(),
            other.to_string(),
            None,
        ),
    };
    Error::Graph {
        status: 401,
        code,
        message: format!(
            "graph refused the access token {refusals} times, fresh tokens included, over {:.1} s \
             (check the tenant, the app's permissions and the token scope): {detail}",
            over.as_secs_f64()
        ),
        request_id,
    }
}

/// Whether a key can name a directory object (empty, `.` and `..` cannot).
pub(crate) fn names_an_object(key: &str) -> bool {
    !matches!(key.trim(), "" | "." | "..")
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Percent-encodes a query option value, keeping the characters OData expressions use.
fn encode_query_value(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~!$'()*,;:@/".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Percent-encodes one path segment, keeping RFC 3986 `pchar`s (so `#` becomes `%23`).
pub(crate) fn encode_path_segment(segment: &str) -> String {
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

    #[test]
    fn query_values_keep_odata_syntax_and_encode_the_rest() {
        assert_eq!(
            encode_query_value("\"displayName:wa lu\""),
            "%22displayName:wa%20lu%22"
        );
        assert_eq!(
            encode_query_value("endsWith(mail,'#EXT#@x.com')&a=b+c"),
            "endsWith(mail,'%23EXT%23@x.com')%26a%3Db%2Bc"
        );
    }
}
