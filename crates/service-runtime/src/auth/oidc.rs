//! Verifying OIDC access tokens as a careful relying party does.
//!
//! **Keys.** The provider's signing keys (its JWKS) are fetched by one background task per
//! verifier, never by a request while a usable key set is held:
//! - the first fetch starts with the verifier; afterwards the task refreshes every
//!   `jwks_refresh_seconds`, before the held set goes stale, and a request keeps using the held
//!   set while a refresh runs or fails;
//! - a failed fetch keeps the held keys (an outage of the provider must not lock everyone out)
//!   but does not count as fresh: it is retried with exponential backoff, starting at
//!   `jwks_min_refetch_seconds` and capped at five minutes (or the refresh interval), so a key
//!   the provider withdrew is dropped at the next successful fetch;
//! - a token naming a `kid` the set lacks asks the task for a fetch. There is one fetch at a
//!   time for all callers and at most one per `jwks_min_refetch_seconds` (counted from the end
//!   of the previous attempt), whatever the concurrency: callers arriving while a fetch runs
//!   wait for that one (at most [`KEY_WAIT`]); callers arriving within the interval after it
//!   are refused at once. Tokens whose key is held never wait;
//! - keys are taken from the set only when usable for signatures: `use` absent or `sig`,
//!   `key_ops` absent or containing `verify`, `alg` absent or the one algorithm its type
//!   allows (RSA: RS256 with a modulus of 2048 bits or more; EC P-256: ES256).
//!
//! **Where the keys are.** `jwks_url`, or, when it is not set, the `jwks_uri` of the first
//! issuer's discovery document (`<issuer>/.well-known/openid-configuration`, whose `issuer`
//! must be that issuer). Both must be `https://`; `allow_http_loopback` lets tests use
//! `http://` on 127.0.0.1, ::1 or localhost, and nothing else.
//!
//! **Tokens.** Accepted: signed RS256 or ES256 by a held key; header `typ` absent, `JWT` or
//! `at+jwt` (`application/at+jwt`); `iss` one of the accepted issuers and `aud` one of the
//! accepted audiences; `exp` and `iat` present, `nbf` respected, with `leeway_seconds` (at most
//! [`MAX_LEEWAY_SECONDS`]) of clock skew; `iat` not in the future and `exp - iat` at most
//! `max_token_lifetime_seconds`. ID tokens are refused: a token carrying an ID token's own
//! claims (`nonce`, `at_hash`, `c_hash`), or not naming the client it was issued to (`azp`,
//! `appid`, `client_id` or `cid`, which every access token of Entra v1/v2, RFC 9068 and the
//! common providers carries and an ID token, whose audience is that client, does not), is not
//! an access token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::{Code, Status};

use super::Principal;

/// The most clock skew a service may be configured to tolerate (five minutes, as the common
/// relying-party libraries default to); more refuses to start.
pub const MAX_LEEWAY_SECONDS: u64 = 300;
/// The longest lifetime (`exp - iat`) a service may be configured to accept: a week.
pub const MAX_TOKEN_LIFETIME_BOUND_SECONDS: u64 = 7 * 24 * 3600;
/// How long a request waits for the one shared key fetch its token asked for.
pub const KEY_WAIT: Duration = Duration::from_secs(5);
/// Time allowed for one fetch (discovery document or key set).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest pause between retries of a failing fetch.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The largest discovery document or key set read.
const MAX_DOCUMENT_BYTES: usize = 512 * 1024;

/// An OIDC identity provider whose access tokens are accepted.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// One accepted `iss` (kept for single-issuer configurations; joins `issuers`).
    pub issuer: Option<String>,
    /// Accepted `iss` values, e.g. Entra's v2.0 `https://login.microsoftonline.com/<tenant>/v2.0`
    /// and v1.0 `https://sts.windows.net/<tenant>/`. The first is the one discovered.
    pub issuers: Vec<String>,
    /// One accepted `aud` (joins `audiences`).
    pub audience: Option<String>,
    /// Accepted `aud` values, e.g. the API's client id (Entra v2.0 tokens) and its
    /// application id URI (v1.0 tokens requested for `api://…`).
    pub audiences: Vec<String>,
    /// Where the signing keys are; unset: discovered from the first issuer.
    pub jwks_url: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`; at most [`MAX_LEEWAY_SECONDS`].
    pub leeway_seconds: u64,
    /// How often the key set is fetched again in the background.
    pub jwks_refresh_seconds: u64,
    /// The claim holding the caller's roles (Entra app roles arrive in `roles`).
    pub roles_claim: String,
    /// The shortest time between two fetches (after the end of one, the next starts no sooner),
    /// so made-up key ids cannot make the service hammer the provider; also the first backoff
    /// after a failed fetch.
    pub jwks_min_refetch_seconds: u64,
    /// The longest lifetime (`exp - iat`) of an accepted token.
    pub max_token_lifetime_seconds: u64,
    /// Allows `http://` key and discovery URLs on loopback hosts only (tests).
    pub allow_http_loopback: bool,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            issuer: None,
            issuers: Vec::new(),
            audience: None,
            audiences: Vec::new(),
            jwks_url: None,
            leeway_seconds: 60,
            jwks_refresh_seconds: 3600,
            roles_claim: "roles".to_owned(),
            jwks_min_refetch_seconds: 10,
            max_token_lifetime_seconds: 24 * 3600,
            allow_http_loopback: false,
        }
    }
}

impl OidcConfig {
    /// Every accepted issuer: `issuer`, then `issuers`, without repeats.
    pub fn accepted_issuers(&self) -> Vec<String> {
        joined(self.issuer.as_deref(), &self.issuers)
    }

    /// Every accepted audience: `audience`, then `audiences`, without repeats.
    pub fn accepted_audiences(&self) -> Vec<String> {
        joined(self.audience.as_deref(), &self.audiences)
    }

    /// Checks the settings, naming the first unsafe or malformed one.
    pub fn validate(&self) -> anyhow::Result<()> {
        let issuers = self.accepted_issuers();
        anyhow::ensure!(
            !issuers.is_empty(),
            "auth.oidc.issuers is empty: name the issuer(s) whose tokens are accepted"
        );
        anyhow::ensure!(
            !self.accepted_audiences().is_empty(),
            "auth.oidc.audiences is empty: name this API's audience(s)"
        );
        anyhow::ensure!(
            self.leeway_seconds <= MAX_LEEWAY_SECONDS,
            "auth.oidc.leeway_seconds = {} is over the bound of {MAX_LEEWAY_SECONDS}",
            self.leeway_seconds
        );
        anyhow::ensure!(
            (1..=MAX_TOKEN_LIFETIME_BOUND_SECONDS).contains(&self.max_token_lifetime_seconds),
            "auth.oidc.max_token_lifetime_seconds = {} must be between 1 and \
             {MAX_TOKEN_LIFETIME_BOUND_SECONDS}",
            self.max_token_lifetime_seconds
        );
        anyhow::ensure!(
            self.jwks_refresh_seconds >= 1,
            "auth.oidc.jwks_refresh_seconds must be at least 1"
        );
        anyhow::ensure!(
            !self.roles_claim.trim().is_empty(),
            "auth.oidc.roles_claim is empty"
        );
        match &self.jwks_url {
            Some(url) => {
                self.checked_url("auth.oidc.jwks_url", url)?;
            }
            None => {
                self.checked_url(
                    "auth.oidc.issuers[0] (discovery)",
                    &discovery_url(&issuers[0]),
                )?;
            }
        }
        Ok(())
    }

    /// `raw` as a URL this verifier may fetch: `https://`, or `http://` to a loopback host when
    /// `allow_http_loopback` is set.
    fn checked_url(&self, setting: &str, raw: &str) -> anyhow::Result<url::Url> {
        let url =
            url::Url::parse(raw).with_context(|| format!("{setting} {raw:?} is not a URL"))?;
        match url.scheme() {
            "https" => Ok(url),
            "http" if self.allow_http_loopback && is_loopback(&url) => Ok(url),
            "http" if self.allow_http_loopback => anyhow::bail!(
                "{setting} {raw:?} is http:// to a host that is not loopback; \
                 auth.oidc.allow_http_loopback allows only 127.0.0.1, ::1 and localhost"
            ),
            "http" => anyhow::bail!(
                "{setting} {raw:?} is not https://: keys fetched in clear text can be replaced \
                 on the way (auth.oidc.allow_http_loopback allows http:// on loopback for tests)"
            ),
            other => anyhow::bail!("{setting} {raw:?}: the scheme {other} is not https"),
        }
    }
}

fn joined(one: Option<&str>, many: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for value in one.into_iter().chain(many.iter().map(String::as_str)) {
        let value = value.trim();
        if !value.is_empty() && !out.iter().any(|v| v == value) {
            out.push(value.to_owned());
        }
    }
    out
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The discovery document of `issuer` (OpenID Connect Discovery 1.0, §4).
fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// A usable signing key.
#[derive(Clone)]
struct Key {
    key: DecodingKey,
    alg: Algorithm,
}

/// What the background task and the requests share.
struct Shared {
    config: OidcConfig,
    issuers: Vec<String>,
    audiences: Vec<String>,
    http: reqwest::Client,
    state: Mutex<KeyState>,
    /// Asks the task for a fetch.
    wake: tokio::sync::Notify,
    /// Counts finished fetch attempts, so waiting callers see the one they waited for end.
    attempts: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct KeyState {
    keys: Arc<HashMap<String, Key>>,
    /// When the held keys were fetched (successful fetches only).
    fetched_at: Option<Instant>,
    /// When the last attempt, successful or not, ended.
    last_attempt_end: Option<Instant>,
    in_flight: bool,
    /// Failed attempts since the last success.
    failures: u32,
    /// A request asked for a fetch (an unknown `kid`, or no keys yet).
    wanted: bool,
    /// The key set's URL, configured or discovered.
    jwks_url: Option<url::Url>,
}

/// An OIDC provider's keys, and the verification of its tokens.
pub(crate) struct Jwks {
    shared: Arc<Shared>,
    started: std::sync::Once,
    stop: CancellationToken,
    _stop_on_drop: DropGuard,
}

impl Jwks {
    /// A verifier for `config`, refused when a setting is unsafe. Its key fetching starts in the
    /// background at once when a Tokio runtime is running, else with the first token.
    pub(crate) fn new(config: &OidcConfig) -> anyhow::Result<Self> {
        config.validate()?;
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            // A redirect could lead from https to anywhere; the provider's URLs do not redirect.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot build the JWKS client")?;
        let jwks_url = config
            .jwks_url
            .as_deref()
            .map(|u| config.checked_url("auth.oidc.jwks_url", u))
            .transpose()?;
        let stop = CancellationToken::new();
        let jwks = Self {
            shared: Arc::new(Shared {
                issuers: config.accepted_issuers(),
                audiences: config.accepted_audiences(),
                config: config.clone(),
                http,
                state: Mutex::new(KeyState {
                    jwks_url,
                    ..KeyState::default()
                }),
                wake: tokio::sync::Notify::new(),
                attempts: tokio::sync::watch::Sender::new(0),
            }),
            started: std::sync::Once::new(),
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            jwks.start();
        }
        Ok(jwks)
    }

    fn start(&self) {
        self.started.call_once(|| {
            tokio::spawn(refresh_loop(self.shared.clone(), self.stop.clone()));
        });
    }

    pub(crate) async fn verify(&self, token: &str) -> Result<Principal, Status> {
        self.start();
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Status::unauthenticated("the token is not a well-formed JWT"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(Status::unauthenticated(format!(
                "tokens signed with {:?} are not accepted (RS256 or ES256)",
                header.alg
            )));
        }
        if let Some(typ) = &header.typ
            && !is_access_token_type(typ)
        {
            return Err(Status::unauthenticated(
                "the token's type (typ) is not an access token's (JWT or at+jwt)",
            ));
        }
        let kid = header
            .kid
            .ok_or_else(|| Status::unauthenticated("the token names no signing key (kid)"))?;
        let Key { key, alg } = self.key(&kid).await?;
        if alg != header.alg {
            return Err(Status::unauthenticated(
                "the token's algorithm does not match its key",
            ));
        }
        let config = &self.shared.config;
        let mut validation = Validation::new(alg);
        validation.set_audience(&self.shared.audiences);
        validation.set_issuer(&self.shared.issuers);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = config.leeway_seconds;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            let why = match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired",
                ErrorKind::ImmatureSignature => "the token is not valid yet",
                ErrorKind::InvalidAudience => "the token is for another audience",
                ErrorKind::InvalidIssuer => "the token is from another issuer",
                ErrorKind::InvalidSignature => "the token's signature does not verify",
                ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
                _ => "the token is invalid",
            };
            tracing::debug!(reason = why, "token refused");
            Status::unauthenticated(why)
        })?;
        let claims = data.claims;
        check_lifetime(&claims, config, jsonwebtoken::get_current_timestamp())?;
        check_access_token(&claims)?;
        let roles = match claims.rest.get(&config.roles_claim) {
            Some(serde_json::Value::Array(values)) => values
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::String(one)) => one.split(' ').map(str::to_owned).collect(),
            _ => Default::default(),
        };
        let name = claims
            .preferred_username
            .or(claims.upn)
            .or(claims.azp)
            .or(claims.appid)
            .or(claims.sub)
            .ok_or_else(|| Status::unauthenticated("the token names nobody (no sub)"))?;
        Ok(Principal { name, roles })
    }

    /// The key `kid`: from the held set at once; else from the one shared fetch it may ask for.
    async fn key(&self, kid: &str) -> Result<Key, Status> {
        let shared = &self.shared;
        let min_refetch = Duration::from_secs(shared.config.jwks_min_refetch_seconds);
        let mut attempts = shared.attempts.subscribe();
        let seen = *attempts.borrow_and_update();
        {
            let mut state = shared.lock();
            if let Some(found) = state.keys.get(kid) {
                return Ok(found.clone());
            }
            let may_fetch = state.in_flight
                || state
                    .last_attempt_end
                    .is_none_or(|end| end.elapsed() >= min_refetch);
            if !may_fetch {
                return Err(unknown_key(&state));
            }
            // A fetch already running serves this caller too; asking for another would only
            // repeat it once the interval allows.
            if !state.in_flight {
                state.wanted = true;
                shared.wake.notify_one();
            }
        }
        // The attempt that was running or is about to start; waiting for it costs the callers
        // whose key is unknown, never those whose key is held.
        let _ = tokio::time::timeout(KEY_WAIT, attempts.wait_for(|n| *n > seen)).await;
        let state = shared.lock();
        state
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| unknown_key(&state))
    }
}

fn unknown_key(state: &KeyState) -> Status {
    if state.keys.is_empty() {
        crate::error::status(
            Code::Unavailable,
            crate::error::reason::SIGNING_KEYS_UNAVAILABLE,
            "the identity provider's signing keys could not be fetched yet",
        )
    } else {
        Status::unauthenticated("the token's signing key is unknown")
    }
}

fn is_access_token_type(typ: &str) -> bool {
    let typ = typ.trim();
    ["JWT", "at+jwt", "application/at+jwt"]
        .iter()
        .any(|t| typ.eq_ignore_ascii_case(t))
}

/// The claims read from an access token besides those the validation checks.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    preferred_username: Option<String>,
    upn: Option<String>,
    azp: Option<String>,
    appid: Option<String>,
    iat: Option<f64>,
    exp: Option<f64>,
    #[serde(flatten)]
    rest: HashMap<String, serde_json::Value>,
}

/// `iat` present and not in the future; `exp - iat` within the configured lifetime.
fn check_lifetime(claims: &Claims, config: &OidcConfig, now: u64) -> Result<(), Status> {
    let iat = claims
        .iat
        .ok_or_else(|| Status::unauthenticated("the token lacks a required claim (iat)"))?;
    let exp = claims
        .exp
        .ok_or_else(|| Status::unauthenticated("the token lacks a required claim (exp)"))?;
    // Timestamps are far below 2^53, so f64 holds them exactly; leeway is bounded at start.
    if iat > (now + config.leeway_seconds) as f64 {
        return Err(Status::unauthenticated(
            "the token was issued in the future",
        ));
    }
    if exp - iat > config.max_token_lifetime_seconds as f64 {
        return Err(Status::unauthenticated(format!(
            "the token lives longer than {} s (exp - iat)",
            config.max_token_lifetime_seconds
        )));
    }
    Ok(())
}

/// Refuses ID tokens: see the module's documentation for the rule.
fn check_access_token(claims: &Claims) -> Result<(), Status> {
    let id_token_claim = ["nonce", "at_hash", "c_hash"]
        .iter()
        .any(|c| claims.rest.contains_key(*c));
    let names_client = claims.azp.is_some()
        || claims.appid.is_some()
        || claims.rest.contains_key("client_id")
        || claims.rest.contains_key("cid");
    if id_token_claim || !names_client {
        return Err(Status::unauthenticated(
            "the token is not an access token (an ID token proves a sign-in to its client, \
             it grants nothing here)",
        ));
    }
    Ok(())
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, KeyState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long until the next attempt is due on its own, with `jitter` in [0.5, 1).
    fn next_due(&self, jitter: f64) -> Option<Duration> {
        let state = self.lock();
        let config = &self.config;
        let min_refetch = Duration::from_secs(config.jwks_min_refetch_seconds);
        let refresh = Duration::from_secs(config.jwks_refresh_seconds);
        let Some(end) = state.last_attempt_end else {
            return Some(Duration::ZERO);
        };
        let since = end.elapsed();
        if state.failures > 0 {
            let base = min_refetch.max(Duration::from_secs(1));
            let exp = base.saturating_mul(1 << state.failures.min(16).saturating_sub(1));
            let backoff = exp.min(MAX_BACKOFF.min(refresh).max(base)).mul_f64(jitter);
            return Some(backoff.saturating_sub(since));
        }
        if state.wanted {
            return Some(min_refetch.saturating_sub(since));
        }
        let fetched = state.fetched_at?;
        Some(refresh.saturating_sub(fetched.elapsed()))
    }
}

/// The one task fetching an issuer's keys: first at once, then on schedule, after failures
/// with backoff, and when a request asks (no sooner than the minimum interval).
async fn refresh_loop(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let due = shared.next_due(0.5 + fastrand::f64() / 2.0);
        let wait = due.unwrap_or(Duration::from_secs(shared.config.jwks_refresh_seconds));
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = shared.wake.notified() => {
                // Asked by a request: go only when the minimum interval allows, else sleep
                // until it does (the request's flag stays set).
                let min_refetch = Duration::from_secs(shared.config.jwks_min_refetch_seconds);
                let early = shared
                    .lock()
                    .last_attempt_end
                    .is_some_and(|end| end.elapsed() < min_refetch);
                if early {
                    continue;
                }
            }
        }
        let url = {
            let mut state = shared.lock();
            state.in_flight = true;
            state.wanted = false;
            state.jwks_url.clone()
        };
        let result = tokio::select! {
            () = stop.cancelled() => return,
            result = fetch(&shared, url) => result,
        };
        {
            let mut state = shared.lock();
            state.in_flight = false;
            state.last_attempt_end = Some(Instant::now());
            match result {
                Ok((url, keys)) => {
                    tracing::info!(url = %url, keys = keys.len(), "signing keys fetched");
                    state.keys = Arc::new(keys);
                    state.fetched_at = Some(Instant::now());
                    state.failures = 0;
                    state.jwks_url = Some(url);
                }
                Err(error) => {
                    state.failures = state.failures.saturating_add(1);
                    if shared.config.jwks_url.is_none() {
                        // Discover again next time: the document may have moved the keys.
                        state.jwks_url = None;
                    }
                    tracing::warn!(
                        failures = state.failures,
                        held_keys = state.keys.len(),
                        error = format!("{error:#}"),
                        "cannot fetch the identity provider's signing keys; the held keys stay \
                         in use and the fetch is retried"
                    );
                }
            }
        }
        shared.attempts.send_modify(|n| *n += 1);
    }
}

/// Fetches the key set (discovering its URL first when needed).
async fn fetch(
    shared: &Shared,
    url: Option<url::Url>,
) -> anyhow::Result<(url::Url, HashMap<String, Key>)> {
    let url = match url {
        Some(url) => url,
        None => discover(shared).await?,
    };
    let set: serde_json::Value = get_json(&shared.http, &url)
        .await
        .context("the key set cannot be read")?;
    let keys = set
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .context("the key set has no `keys` array")?;
    let mut by_kid = HashMap::new();
    for raw in keys {
        // One key this verifier cannot parse (a new key type) must not cost it the others.
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            continue;
        };
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        match usable(&jwk) {
            Ok(key) => {
                by_kid.insert(kid, key);
            }
            Err(why) => tracing::debug!(kid, why, "a published key is not used"),
        }
    }
    Ok((url, by_kid))
}

/// `jwk` as a signature-verification key of an accepted algorithm, or why not.
fn usable(jwk: &Jwk) -> Result<Key, &'static str> {
    use jsonwebtoken::jwk::KeyAlgorithm;
    if let Some(usage) = &jwk.common.public_key_use
        && *usage != PublicKeyUse::Signature
    {
        return Err("its use is not sig");
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err("its key_ops lack verify");
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            use base64::Engine as _;
            let modulus = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(rsa.n.trim_end_matches('='))
                .map_err(|_| "its modulus is not base64url")?;
            let bits = modulus.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 {
                return Err("its RSA modulus is shorter than 2048 bits");
            }
            Algorithm::RS256
        }
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        _ => return Err("its type is neither RSA nor EC P-256"),
    };
    match (jwk.common.key_algorithm, alg) {
        (None, _)
        | (Some(KeyAlgorithm::RS256), Algorithm::RS256)
        | (Some(KeyAlgorithm::ES256), Algorithm::ES256) => {}
        _ => return Err("its alg is not RS256 (RSA) or ES256 (EC P-256)"),
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "it does not parse")?;
    Ok(Key { key, alg })
}

/// The key set's URL from the first issuer's discovery document.
async fn discover(shared: &Shared) -> anyhow::Result<url::Url> {
    let issuer = shared.issuers.first().context("no issuer to discover")?;
    let url = shared
        .config
        .checked_url("the discovery URL", &discovery_url(issuer))?;
    let document: serde_json::Value = get_json(&shared.http, &url)
        .await
        .with_context(|| format!("the discovery document {url} cannot be read"))?;
    let named = document.get("issuer").and_then(serde_json::Value::as_str);
    anyhow::ensure!(
        named == Some(issuer.as_str()),
        "the discovery document at {url} is for issuer {named:?}, not {issuer:?}"
    );
    let jwks_uri = document
        .get("jwks_uri")
        .and_then(serde_json::Value::as_str)
        .with_context(|| format!("the discovery document at {url} names no jwks_uri"))?;
    let jwks = shared
        .config
        .checked_url("the discovered jwks_uri", jwks_uri)?;
    tracing::info!(issuer, jwks_uri = %jwks, "signing keys discovered");
    Ok(jwks)
}

async fn get_json(http: &reqwest::Client, url: &url::Url) -> anyhow::Result<serde_json::Value> {
    let response = http.get(url.clone()).send().await?.error_for_status()?;
    if response
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
    {
        anyhow::bail!("the document is larger than {MAX_DOCUMENT_BYTES} bytes");
    }
    let body = response.bytes().await?;
    anyhow::ensure!(
        body.len() <= MAX_DOCUMENT_BYTES,
        "the document is larger than {MAX_DOCUMENT_BYTES} bytes"
    );
    serde_json::from_slice(&body).context("not JSON")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use base64::Engine as _;
    use serde_json::{Value, json};

    use super::*;

    /// How the test issuer answers key set requests.
    #[derive(Clone, Copy)]
    enum Mode {
        Serve,
        Fail,
        Slow(Duration),
    }

    struct Control {
        issuer: String,
        published: Mutex<Vec<Value>>,
        mode: Mutex<Mode>,
        fetches: AtomicUsize,
    }

    /// An identity provider we control: ES256 keys made for the test, a key set at `/keys`
    /// that counts its fetches and can be slowed or failed, and a discovery document.
    struct Issuer {
        url: String,
        control: Arc<Control>,
        keys: HashMap<&'static str, rcgen::KeyPair>,
    }

    async fn jwks(State(control): State<Arc<Control>>) -> Response {
        control.fetches.fetch_add(1, Ordering::SeqCst);
        let mode = *control.mode.lock().unwrap();
        match mode {
            Mode::Fail => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            Mode::Slow(by) => tokio::time::sleep(by).await,
            Mode::Serve => {}
        }
        let keys = control.published.lock().unwrap().clone();
        axum::Json(json!({ "keys": keys })).into_response()
    }

    async fn discovery(State(control): State<Arc<Control>>) -> Response {
        axum::Json(json!({
            "issuer": control.issuer,
            "jwks_uri": format!("{}/keys", control.issuer),
        }))
        .into_response()
    }

    fn public_jwk(kid: &str, key: &rcgen::KeyPair) -> Value {
        let raw = key.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        })
    }

    impl Issuer {
        /// Serves keys `k1`, `k2` (published) and `unpublished`.
        async fn start() -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let keys: HashMap<_, _> = ["k1", "k2", "unpublished"]
                .into_iter()
                .map(|kid| (kid, rcgen::KeyPair::generate().unwrap()))
                .collect();
            let control = Arc::new(Control {
                issuer: url.clone(),
                published: Mutex::new(vec![
                    public_jwk("k1", &keys["k1"]),
                    public_jwk("k2", &keys["k2"]),
                ]),
                mode: Mutex::new(Mode::Serve),
                fetches: AtomicUsize::new(0),
            });
            let app = axum::Router::new()
                .route("/keys", axum::routing::get(jwks))
                .route(
                    "/.well-known/openid-configuration",
                    axum::routing::get(discovery),
                )
                .with_state(control.clone());
            tokio::spawn(async move { axum::serve(listener, app).await });
            Self { url, control, keys }
        }

        fn config(&self) -> OidcConfig {
            OidcConfig {
                issuers: vec![self.url.clone()],
                audiences: vec!["api://userimport".into()],
                jwks_url: Some(format!("{}/keys", self.url)),
                allow_http_loopback: true,
                jwks_min_refetch_seconds: 10,
                ..OidcConfig::default()
            }
        }

        fn fetches(&self) -> usize {
            self.control.fetches.load(Ordering::SeqCst)
        }

        fn set_mode(&self, mode: Mode) {
            *self.control.mode.lock().unwrap() = mode;
        }

        /// Publishes only these keys.
        fn publish(&self, kids: &[&'static str]) {
            *self.control.published.lock().unwrap() = kids
                .iter()
                .map(|kid| public_jwk(kid, &self.keys[kid]))
                .collect();
        }

        /// An access token for `claims` over sensible defaults, signed by `kid`.
        fn token(&self, kid: &str, claims: Value) -> String {
            self.token_with_key(kid, kid, claims)
        }

        fn token_with_key(&self, kid: &str, signer: &str, claims: Value) -> String {
            let now = jsonwebtoken::get_current_timestamp() as i64;
            let mut all = json!({
                "iss": self.url, "aud": "api://userimport", "sub": "s-1",
                "preferred_username": "alice@contoso.com", "azp": "client-1",
                "roles": ["userimport.admin"], "iat": now, "nbf": now, "exp": now + 3600,
            });
            for (k, v) in claims.as_object().unwrap() {
                if v.is_null() {
                    all.as_object_mut().unwrap().remove(k);
                } else {
                    all[k] = v.clone();
                }
            }
            let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
            header.kid = Some(kid.to_owned());
            let key = match self.keys.get(signer) {
                Some(pair) => pair,
                None => &rcgen::KeyPair::generate().unwrap(),
            };
            let key =
                jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
            jsonwebtoken::encode(&header, &all, &key).unwrap()
        }
    }

    /// Verifies `token`, and how long that took.
    async fn timed(jwks: &Jwks, token: &str) -> (Result<Principal, Status>, Duration) {
        let start = Instant::now();
        let result = jwks.verify(token).await;
        (result, start.elapsed())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_hundred_concurrent_unknown_kid_tokens_cause_at_most_one_jwks_fetch_and_do_not_delay_a_valid_token()
     {
        let issuer = Issuer::start().await;
        let jwks = Arc::new(
            Jwks::new(&OidcConfig {
                jwks_min_refetch_seconds: 1,
                ..issuer.config()
            })
            .unwrap(),
        );
        let valid = issuer.token("k1", json!({}));
        jwks.verify(&valid).await.unwrap();
        assert_eq!(issuer.fetches(), 1, "the first fetch");
        // Past the minimum interval, with a slow provider: the burst's one fetch is slow.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        issuer.set_mode(Mode::Slow(Duration::from_millis(1500)));
        let mut burst = Vec::new();
        for i in 0..200 {
            let jwks = jwks.clone();
            let token = issuer.token_with_key(&format!("random-{i}"), "unpublished", json!({}));
            burst.push(tokio::spawn(async move { jwks.verify(&token).await }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (result, took) = timed(&jwks, &valid).await;
        assert!(result.is_ok(), "{result:?}");
        assert!(
            took < Duration::from_millis(500),
            "the valid token waited {took:?}"
        );
        for call in burst {
            let status = call.await.unwrap().unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        }
        assert_eq!(issuer.fetches(), 2, "the burst caused one fetch");
        // Within the interval after that fetch, unknown keys are refused without one.
        let (result, took) = timed(&jwks, &issuer.token("unpublished", json!({}))).await;
        assert_eq!(result.unwrap_err().code(), Code::Unauthenticated);
        assert!(took < Duration::from_millis(500), "{took:?}");
        // Nor does the burst leave a fetch owed for later.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(issuer.fetches(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_or_failing_jwks_does_not_block_calls_while_keys_are_cached() {
        let issuer = Issuer::start().await;
        let jwks = Jwks::new(&OidcConfig {
            jwks_refresh_seconds: 1,
            jwks_min_refetch_seconds: 1,
            ..issuer.config()
        })
        .unwrap();
        let valid = issuer.token("k2", json!({}));
        jwks.verify(&valid).await.unwrap();
        for mode in [Mode::Slow(Duration::from_millis(2500)), Mode::Fail] {
            issuer.set_mode(mode);
            let before = issuer.fetches();
            let until = Instant::now() + Duration::from_secs(3);
            let mut slowest = Duration::ZERO;
            while Instant::now() < until {
                let (result, took) = timed(&jwks, &valid).await;
                assert!(result.is_ok(), "{result:?}");
                slowest = slowest.max(took);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(
                slowest < Duration::from_millis(500),
                "a call waited {slowest:?} for a refresh"
            );
            assert!(
                issuer.fetches() > before,
                "the refreshes ran in the background"
            );
        }
    }

    #[tokio::test]
    async fn three_callers_at_start_share_one_slow_fetch() {
        let issuer = Issuer::start().await;
        issuer.set_mode(Mode::Slow(Duration::from_millis(1500)));
        let jwks = Arc::new(Jwks::new(&issuer.config()).unwrap());
        let start = Instant::now();
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let jwks = jwks.clone();
                let token = issuer.token("k1", json!({}));
                tokio::spawn(async move { jwks.verify(&token).await })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(issuer.fetches(), 1);
    }

    #[tokio::test]
    async fn a_failed_fetch_is_not_counted_as_fresh() {
        let issuer = Issuer::start().await;
        let jwks = Jwks::new(&OidcConfig {
            jwks_min_refetch_seconds: 1,
            ..issuer.config()
        })
        .unwrap();
        let withdrawn = issuer.token("k1", json!({}));
        jwks.verify(&withdrawn).await.unwrap();
        // An unknown key asks for a fetch, which fails; the held keys stay in use.
        issuer.set_mode(Mode::Fail);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let status = jwks
            .verify(&issuer.token("unpublished", json!({})))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(issuer.fetches(), 2);
        jwks.verify(&withdrawn).await.unwrap();
        // The provider recovers without k1: the retry (backoff from 1 s, not the hour of
        // `jwks_refresh_seconds`) drops it.
        issuer.publish(&["k2"]);
        issuer.set_mode(Mode::Serve);
        let until = Instant::now() + Duration::from_secs(5);
        while jwks.verify(&withdrawn).await.is_ok() {
            assert!(Instant::now() < until, "the withdrawn key is still trusted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(issuer.fetches(), 3);
        jwks.verify(&issuer.token("k2", json!({}))).await.unwrap();
    }

    #[tokio::test]
    async fn entra_v1_and_v2_shaped_access_tokens_for_the_same_api_are_both_accepted() {
        let issuer = Issuer::start().await;
        let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        let client_id = "6e74172b-be56-4843-9ff4-e66a39bb12e3";
        let v2 = format!("https://login.microsoftonline.com/{tenant}/v2.0");
        let v1 = format!("https://sts.windows.net/{tenant}/");
        let jwks = Jwks::new(&OidcConfig {
            issuers: vec![v2.clone(), v1.clone()],
            audiences: vec![client_id.into(), "api://userimport".into()],
            ..issuer.config()
        })
        .unwrap();
        // v2.0: the API's client id as audience, the client in azp.
        let v2_token = issuer.token(
            "k1",
            json!({ "iss": v2, "aud": client_id, "ver": "2.0", "azp": "c", "scp": "access" }),
        );
        // v1.0: the application id URI as audience, the client in appid, the name in upn.
        let v1_token = issuer.token(
            "k1",
            json!({ "iss": v1, "aud": "api://userimport", "ver": "1.0", "azp": null,
                    "appid": "c", "preferred_username": null, "upn": "bob@contoso.com" }),
        );
        assert_eq!(
            jwks.verify(&v2_token).await.unwrap().name,
            "alice@contoso.com"
        );
        assert_eq!(
            jwks.verify(&v1_token).await.unwrap().name,
            "bob@contoso.com"
        );
        for (claims, why) in [
            (
                json!({ "iss": v2, "aud": "api://other" }),
                "another audience",
            ),
            (
                json!({ "iss": "https://sts.windows.net/other/", "aud": client_id }),
                "another issuer",
            ),
        ] {
            let status = jwks.verify(&issuer.token("k1", claims)).await.unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{why}");
        }
    }

    #[tokio::test]
    async fn an_id_token_is_refused() {
        let issuer = Issuer::start().await;
        let jwks = Jwks::new(&issuer.config()).unwrap();
        // Entra's ID token for a sign-in to the API's own app: right issuer and audience, but
        // no client claim (its audience is the client) and a nonce.
        let id_token = issuer.token(
            "k1",
            json!({ "azp": null, "nonce": "n-0S6_WzA2Mj", "oid": "o", "tid": "t", "name": "Alice" }),
        );
        let status = jwks.verify(&id_token).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(
            status.message().contains("not an access token"),
            "{status:?}"
        );
        let with_client = issuer.token("k1", json!({ "at_hash": "x" }));
        assert!(
            jwks.verify(&with_client).await.is_err(),
            "at_hash marks an ID token"
        );
        let without_client = issuer.token("k1", json!({ "azp": null }));
        assert!(jwks.verify(&without_client).await.is_err());
    }

    #[tokio::test]
    async fn token_type_lifetime_and_issued_at_rules_are_enforced() {
        let issuer = Issuer::start().await;
        let jwks = Jwks::new(&issuer.config()).unwrap();
        let now = jsonwebtoken::get_current_timestamp() as i64;
        jwks.verify(&issuer.token("k1", json!({}))).await.unwrap();
        for (claims, why) in [
            (json!({ "iat": null }), "no iat"),
            (json!({ "exp": null }), "no exp"),
            (json!({ "iat": now + 600 }), "issued in the future"),
            (json!({ "exp": now + 25 * 3600 }), "lives longer than a day"),
            (
                json!({ "exp": now - 120, "iat": now - 3600 }),
                "expired beyond the leeway",
            ),
        ] {
            let result = jwks.verify(&issuer.token("k1", claims)).await;
            assert_eq!(result.unwrap_err().code(), Code::Unauthenticated, "{why}");
        }
        let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        let key =
            jsonwebtoken::EncodingKey::from_ec_pem(issuer.keys["k1"].serialize_pem().as_bytes())
                .unwrap();
        let token = issuer.token("k1", json!({}));
        let claims: Value = jsonwebtoken::dangerous::insecure_decode::<Value>(&token)
            .unwrap()
            .claims;
        for (typ, accepted) in [("at+jwt", true), ("JWT", true), ("id_token+jwt", false)] {
            header.typ = Some(typ.into());
            let typed = jsonwebtoken::encode(&header, &claims, &key).unwrap();
            assert_eq!(jwks.verify(&typed).await.is_ok(), accepted, "typ {typ}");
        }
    }

    #[tokio::test]
    async fn keys_not_for_signatures_or_of_another_algorithm_are_not_used() {
        let issuer = Issuer::start().await;
        let mut enc = public_jwk("k1", &issuer.keys["k1"]);
        enc["use"] = json!("enc");
        let mut wrong_alg = public_jwk("k2", &issuer.keys["k2"]);
        wrong_alg["alg"] = json!("RS256");
        let mut fine = public_jwk("unpublished", &issuer.keys["unpublished"]);
        fine.as_object_mut().unwrap().remove("use");
        *issuer.control.published.lock().unwrap() =
            vec![enc, wrong_alg, json!({ "kty": "OKP", "kid": "x" }), fine];
        let jwks = Jwks::new(&issuer.config()).unwrap();
        jwks.verify(&issuer.token("unpublished", json!({})))
            .await
            .unwrap();
        for kid in ["k1", "k2"] {
            let status = jwks
                .verify(&issuer.token(kid, json!({})))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{kid}");
        }
    }

    #[tokio::test]
    async fn discovery_finds_the_jwks_uri() {
        let issuer = Issuer::start().await;
        let jwks = Jwks::new(&OidcConfig {
            jwks_url: None,
            ..issuer.config()
        })
        .unwrap();
        jwks.verify(&issuer.token("k1", json!({}))).await.unwrap();
        assert_eq!(issuer.fetches(), 1);
        assert_eq!(
            jwks.shared.lock().jwks_url.as_ref().map(url::Url::as_str),
            Some(format!("{}/keys", issuer.url).as_str())
        );
    }

    #[test]
    fn leeway_over_the_bound_refuses_to_start() {
        for leeway in [MAX_LEEWAY_SECONDS + 1, 365 * 24 * 3600, 4_000_000_000] {
            let config = OidcConfig {
                issuers: vec!["https://issuer.example".into()],
                audiences: vec!["api://userimport".into()],
                jwks_url: Some("https://issuer.example/keys".into()),
                leeway_seconds: leeway,
                ..OidcConfig::default()
            };
            let error = Jwks::new(&config).err().unwrap().to_string();
            assert!(error.contains("auth.oidc.leeway_seconds"), "{error}");
        }
    }

    #[test]
    fn plain_http_keys_are_refused_outside_loopback_tests() {
        let config = |jwks_url: &str, allow_http_loopback| OidcConfig {
            issuers: vec!["https://issuer.example".into()],
            audiences: vec!["api://userimport".into()],
            jwks_url: Some(jwks_url.into()),
            allow_http_loopback,
            ..OidcConfig::default()
        };
        for (url, allow) in [
            ("http://issuer.example/keys", false),
            ("http://issuer.example/keys", true),
            ("http://127.0.0.1:8080/keys", false),
            ("ftp://issuer.example/keys", true),
        ] {
            let error = config(url, allow).validate().unwrap_err().to_string();
            assert!(error.contains("auth.oidc.jwks_url"), "{url}: {error}");
        }
        for url in [
            "http://127.0.0.1:8080/keys",
            "http://localhost/keys",
            "http://[::1]/k",
        ] {
            config(url, true).validate().unwrap();
        }
        let discovered = OidcConfig {
            issuers: vec!["http://issuer.example".into()],
            jwks_url: None,
            ..config("https://x", false)
        };
        let error = discovered.validate().unwrap_err().to_string();
        assert!(error.contains("discovery"), "{error}");
    }
}
