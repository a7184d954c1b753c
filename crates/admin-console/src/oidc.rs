//! OpenID Connect sign-in: the authorization code flow with PKCE (S256) at the issuer the
//! services trust. The console keeps the access token it gets (server-side, in the session)
//! and verifies it as the services do; it reads no ID token, so it needs no nonce: who signed
//! in is what the access token says.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::config::OidcSignIn;

/// How long a started sign-in may take at the identity provider.
const PENDING_FOR: Duration = Duration::from_secs(600);
/// At most this many sign-ins started and not finished (a flood of starts evicts the oldest).
const MAX_PENDING: usize = 10_000;

pub(crate) struct OidcClient {
    config: OidcSignIn,
    http: reqwest::Client,
    endpoints: OnceCell<Endpoints>,
    pending: Mutex<HashMap<String, Pending>>,
}

#[derive(Debug, Deserialize)]
struct Endpoints {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
}

struct Pending {
    verifier: String,
    next: String,
    /// The sign-in cookie of the browser that started it.
    browser: String,
    started: Instant,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
}

/// `url` is `https://`, or `http://` on a loopback host when allowed.
fn check_url(url: &str, allow_http_loopback: bool) -> anyhow::Result<()> {
    let parsed = url::Url::parse(url).with_context(|| format!("{url} is not a URL"))?;
    let loopback = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    ensure!(
        parsed.scheme() == "https"
            || (parsed.scheme() == "http" && allow_http_loopback && loopback),
        "{url}: the identity provider is reached over https:// only"
    );
    Ok(())
}

impl OidcClient {
    pub(crate) fn new(config: &OidcSignIn) -> anyhow::Result<Self> {
        check_url(&config.issuer, config.allow_http_loopback).context("sign_in.oidc.issuer")?;
        ensure!(
            !config.client_id.is_empty(),
            "sign_in.oidc.client_id is empty"
        );
        url::Url::parse(&config.redirect_url).context("sign_in.oidc.redirect_url")?;
        Ok(Self {
            config: config.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            endpoints: OnceCell::new(),
            pending: Mutex::new(HashMap::new()),
        })
    }

    async fn endpoints(&self) -> anyhow::Result<&Endpoints> {
        self.endpoints
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.config.issuer.trim_end_matches('/')
                );
                let found: Endpoints = self
                    .http
                    .get(&url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .with_context(|| format!("cannot read {url}"))?
                    .json()
                    .await
                    .with_context(|| format!("{url} is not a discovery document"))?;
                ensure!(
                    found.issuer.trim_end_matches('/') == self.config.issuer.trim_end_matches('/'),
                    "{url} names another issuer ({})",
                    found.issuer
                );
                let allow = self.config.allow_http_loopback;
                check_url(&found.authorization_endpoint, allow)?;
                check_url(&found.token_endpoint, allow)?;
                Ok(found)
            })
            .await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a sign-in for the browser holding `browser` (its sign-in cookie): the address
    /// of the identity provider's page to send it to.
    pub(crate) async fn start(&self, next: &str, browser: &str) -> anyhow::Result<String> {
        use base64::Engine as _;
        let endpoints = self.endpoints().await?;
        let state = crate::session::random()?;
        let verifier = crate::session::random()?;
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref());
        {
            let mut pending = self.lock();
            pending.retain(|_, p| p.started.elapsed() < PENDING_FOR);
            if pending.len() >= MAX_PENDING
                && let Some(oldest) = pending
                    .iter()
                    .min_by_key(|(_, p)| p.started)
                    .map(|(k, _)| k.clone())
            {
                pending.remove(&oldest);
            }
            pending.insert(
                state.clone(),
                Pending {
                    verifier,
                    next: next.to_owned(),
                    browser: browser.to_owned(),
                    started: Instant::now(),
                },
            );
        }
        let scope = std::iter::once("openid")
            .chain(self.config.scopes.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        let mut url = url::Url::parse(&endpoints.authorization_endpoint)?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &self.config.redirect_url)
            .append_pair("scope", &scope)
            .append_pair("state", &state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(url.to_string())
    }

    /// Finishes the sign-in `state` names, for the browser that started it: the access token
    /// and where the person was going.
    pub(crate) async fn finish(
        &self,
        state: &str,
        code: &str,
        browser: &str,
    ) -> anyhow::Result<(SecretString, String)> {
        let pending = self
            .lock()
            .remove(state)
            .filter(|p| p.started.elapsed() < PENDING_FOR)
            .context("this sign-in is unknown or took too long; start again")?;
        if !crate::session::same_secret(&pending.browser, browser) {
            bail!("this sign-in was started in another browser; start again");
        }
        let endpoints = self.endpoints().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.config.redirect_url.as_str()),
            ("client_id", self.config.client_id.as_str()),
            ("code_verifier", pending.verifier.as_str()),
        ];
        if let Some(secret) = &self.config.client_secret {
            form.push(("client_secret", secret.expose_secret()));
        }
        let response = self
            .http
            .post(&endpoints.token_endpoint)
            .form(&form)
            .send()
            .await
            .context("the identity provider's token endpoint did not answer")?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let description = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error_description"].as_str().map(str::to_owned))
                .unwrap_or_else(|| status.to_string());
            bail!("the identity provider refused the sign-in: {description:.300}");
        }
        let answer: TokenAnswer = response
            .json()
            .await
            .context("the identity provider's answer holds no access token")?;
        Ok((SecretString::from(answer.access_token), pending.next))
    }
}
