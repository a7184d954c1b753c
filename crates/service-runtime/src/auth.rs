//! Who is calling, and may they. Every RPC of every service carries `authorization: Bearer …`;
//! the service's [`Guard`] (a tower layer in front of all its routes) verifies the token, turns
//! it into a [`Principal`] with roles, checks the RPC's access rule, and hands the principal to
//! the handler in the request's extensions. Health and reflection stay open (probes and
//! tooling carry no token; neither reveals data).
//!
//! Two verifiers: OIDC access tokens (JWT, RS256 or ES256, verified as a careful relying party
//! does — keys fetched in the background, several issuers and audiences, bounded leeway,
//! lifetime and token type checked, ID tokens refused; see `auth/oidc.rs`) and static tokens
//! from configuration (each with its principal and roles), for development and service
//! identities where no identity provider is at hand. A service configured with neither refuses to start, unless it is put
//! in insecure development mode explicitly — then every caller is an all-powerful principal
//! named by its `x-userimport-principal` header, and the service says so loudly.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use anyhow::Context as _;
use futures::future::BoxFuture;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use tonic::Status;
use tonic::codegen::http;
use tonic::metadata::MetadataValue;

mod oidc;

use oidc::Jwks;
pub use oidc::{KEY_WAIT, MAX_LEEWAY_SECONDS, MAX_TOKEN_LIFETIME_BOUND_SECONDS, OidcConfig};

/// May do everything: imports, batch jobs, run-now, roles, companies, renames.
pub const ADMIN: &str = "userimport.admin";
/// May list and view.
pub const READER: &str = "userimport.reader";
/// import-worker calling directory-sync and user-registry.
pub const IMPORT_WORKER: &str = "userimport.service.import-worker";
/// directory-sync calling user-registry.
pub const DIRECTORY_SYNC: &str = "userimport.service.directory-sync";

/// Every role a token or a static token may carry; configuring another is refused.
pub const ROLES: &[&str] = &[ADMIN, READER, IMPORT_WORKER, DIRECTORY_SYNC];

/// The longest bearer token accepted (8 KiB): Entra access tokens with many group and role
/// claims stay under 4 KiB. Longer ones are refused as UNAUTHENTICATED on their own stream; the
/// server's header limit ([`crate::grpc::MAX_HEADER_LIST_BYTES`]) is higher, so a long token
/// reaches this check instead of failing the connection.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Roles that may list and view.
pub const READ: &[&str] = &[ADMIN, READER];
/// Roles that may change things.
pub const WRITE: &[&str] = &[ADMIN];

/// Metadata key naming the principal in insecure development mode (ignored otherwise).
pub const PRINCIPAL_HEADER: &str = "x-userimport-principal";
/// Metadata key by which a service identity names the principal it acts for (the creator of
/// a job, recorded by the registry's audit trail). Honoured from service identities only.
pub const ON_BEHALF_OF_HEADER: &str = "x-userimport-on-behalf-of";

/// The access rules of one service: for each RPC path (`/package.Service/Method`), the roles
/// that may call it. An RPC without a rule is refused (fail closed).
pub type AccessRules = &'static [(&'static str, &'static [&'static str])];

/// How a service authenticates its callers and itself.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Accept every call, unauthenticated, as an all-powerful principal. Development and
    /// tests only; the service logs an ERROR at start while it is on.
    pub insecure_development: bool,
    /// Verify OIDC access tokens (JWT) against an identity provider's keys.
    pub oidc: Option<OidcConfig>,
    /// Accept these tokens, each as its principal with its roles.
    pub static_tokens: Vec<StaticToken>,
    /// The token this service presents when it calls another service.
    pub outbound: TokenSource,
}

/// A token accepted as `principal` with `roles`; the token itself inline (from an
/// environment variable) or, better, in a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticToken {
    pub principal: String,
    pub roles: Vec<String>,
    #[serde(default)]
    pub token: Option<SecretString>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// Where a token comes from: inline, or a file read again whenever it changes (rotated
/// Kubernetes secrets and projected tokens).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenSource {
    pub token: Option<SecretString>,
    pub token_file: Option<PathBuf>,
}

impl TokenSource {
    pub fn inline(token: SecretString) -> Self {
        Self {
            token: Some(token),
            token_file: None,
        }
    }

    pub fn is_set(&self) -> bool {
        self.token.is_some() || self.token_file.is_some()
    }
}

/// Reads a token file: its content without surrounding whitespace, never empty.
fn read_token_file(path: &Path) -> anyhow::Result<SecretString> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty",
        path.display()
    );
    Ok(SecretString::from(token.to_owned()))
}

/// The authenticated caller of an RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub roles: BTreeSet<String>,
}

impl Principal {
    pub fn has_any(&self, roles: &[&str]) -> bool {
        roles.iter().any(|r| self.roles.contains(*r))
    }

    /// A service identity (`userimport.service.*`), trusted to name whom it acts for.
    pub fn is_service(&self) -> bool {
        self.roles
            .iter()
            .any(|r| r.starts_with("userimport.service."))
    }
}

/// The caller of a request as the [`Guard`] authenticated it ("anonymous" when no guard ran,
/// which only in-process calls of tests do).
pub fn principal_of<T>(request: &tonic::Request<T>) -> Principal {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(|| Principal {
            name: "anonymous".to_owned(),
            roles: BTreeSet::new(),
        })
}

/// Who a change should be recorded as made by: the principal a service identity acts for
/// (its `x-userimport-on-behalf-of`), else the caller itself.
pub fn actor_of<T>(request: &tonic::Request<T>) -> String {
    acting_for(request).0
}

/// The person a request is for and, when a service identity names that person in
/// `x-userimport-on-behalf-of`, the service (`None` when the caller acts for itself: anyone
/// but a service identity is always taken as itself, whatever it sends).
pub fn acting_for<T>(request: &tonic::Request<T>) -> (String, Option<String>) {
    let principal = principal_of(request);
    if principal.is_service()
        && let Some(acting_for) = request
            .metadata()
            .get(ON_BEHALF_OF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 256)
    {
        return (acting_for.to_owned(), Some(principal.name));
    }
    (principal.name, None)
}

// ---------------------------------------------------------------------------------------------
// Verifying tokens

/// A static token, kept only as its SHA-256 digest (so a comparison leaks nothing useful and
/// no token sits in memory longer than loading takes).
struct KnownToken {
    digest: [u8; 32],
    principal: Principal,
}

fn digest(token: &str) -> [u8; 32] {
    let mut out = [0_u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    out
}

enum Verifier {
    Insecure,
    Tokens {
        known: Vec<KnownToken>,
        oidc: Option<Box<Jwks>>,
    },
}

/// Turns bearer tokens into principals.
pub struct Authenticator {
    verifier: Verifier,
}

impl Authenticator {
    /// Builds the verifiers of `config`. A configuration that accepts nobody is refused unless
    /// it asks for insecure development mode; that mode is logged as an ERROR.
    pub fn from_config(config: &AuthConfig, service: &str) -> anyhow::Result<Self> {
        if config.insecure_development {
            // Insecure mode would silently override them: a wrong token would be let in.
            anyhow::ensure!(
                config.static_tokens.is_empty() && config.oidc.is_none(),
                "{service}: auth.insecure_development = true together with {}: insecure mode \
                 lets every caller in and would override them; remove one or the other",
                if config.oidc.is_some() {
                    "auth.oidc"
                } else {
                    "auth.static_tokens"
                }
            );
            tracing::error!(
                service,
                "AUTHENTICATION IS OFF (auth.insecure_development = true): every caller may do \
                 everything. Never run like this outside a developer's machine."
            );
            return Ok(Self {
                verifier: Verifier::Insecure,
            });
        }
        let mut known = Vec::with_capacity(config.static_tokens.len());
        for (i, t) in config.static_tokens.iter().enumerate() {
            let token = match (&t.token, &t.token_file) {
                (Some(token), None) => token.clone(),
                (None, Some(file)) => read_token_file(file)?,
                _ => anyhow::bail!(
                    "auth.static_tokens[{i}] ({}) needs exactly one of token or token_file",
                    t.principal
                ),
            };
            anyhow::ensure!(
                token.expose_secret().len() >= 16,
                "auth.static_tokens[{i}] ({}) is shorter than 16 characters",
                t.principal
            );
            anyhow::ensure!(
                !t.principal.trim().is_empty(),
                "auth.static_tokens[{i}] has no principal"
            );
            if let Some(unknown) = t.roles.iter().find(|r| !ROLES.contains(&r.as_str())) {
                anyhow::bail!(
                    "auth.static_tokens[{i}] ({}).roles: unknown role {unknown:?} (known: {})",
                    t.principal,
                    ROLES.join(", ")
                );
            }
            known.push(KnownToken {
                digest: digest(token.expose_secret()),
                principal: Principal {
                    name: t.principal.trim().to_owned(),
                    roles: t.roles.iter().cloned().collect(),
                },
            });
        }
        let oidc = config
            .oidc
            .as_ref()
            .map(|c| Jwks::new(c).map(Box::new))
            .transpose()?;
        anyhow::ensure!(
            oidc.is_some() || !known.is_empty(),
            "{service} has no authentication configured: set auth.oidc or auth.static_tokens, \
             or auth.insecure_development = true on a developer's machine"
        );
        Ok(Self {
            verifier: Verifier::Tokens { known, oidc },
        })
    }

    /// An authenticator that lets everyone in (tests of code behind the guard).
    pub fn insecure() -> Self {
        Self {
            verifier: Verifier::Insecure,
        }
    }

    /// The principal of a request's headers, or `UNAUTHENTICATED` saying why (never echoing
    /// the token).
    pub async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Principal, Status> {
        let (known, oidc) = match &self.verifier {
            Verifier::Insecure => {
                let name = headers
                    .get(PRINCIPAL_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
                    .filter(|v| !v.is_empty() && v.len() <= 256)
                    .unwrap_or("anonymous");
                return Ok(Principal {
                    name: name.to_owned(),
                    roles: [ADMIN, READER, IMPORT_WORKER, DIRECTORY_SYNC]
                        .map(str::to_owned)
                        .into(),
                });
            }
            Verifier::Tokens { known, oidc } => (known, oidc),
        };
        let token = bearer(headers)?;
        let wanted = digest(token);
        if let Some(k) = known.iter().find(|k| k.digest == wanted) {
            return Ok(k.principal.clone());
        }
        match oidc {
            // Three dot-separated parts: a JWT for the identity provider to vouch for.
            Some(jwks) if token.split('.').count() == 3 => jwks.verify(token).await,
            _ => Err(Status::unauthenticated("unknown token")),
        }
    }
}

fn bearer(headers: &http::HeaderMap) -> Result<&str, Status> {
    let value = headers.get(http::header::AUTHORIZATION).ok_or_else(|| {
        Status::unauthenticated("no authorization: send `authorization: Bearer <token>`")
    })?;
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            let token = token.trim();
            if token.len() > MAX_TOKEN_BYTES {
                return Err(Status::unauthenticated(format!(
                    "the token is longer than {MAX_TOKEN_BYTES} bytes"
                )));
            }
            Ok(token)
        }
        _ => Err(Status::unauthenticated(
            "the authorization header is not `Bearer <token>`",
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// The guard in front of a service's routes

/// Paths open to everyone: health probes and reflection.
fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// Authenticates and authorizes every call of a server: a tower layer.
#[derive(Clone)]
pub struct Guard {
    authenticator: Arc<Authenticator>,
    rules: Arc<HashMap<&'static str, &'static [&'static str]>>,
    /// The services (`/package.Service/`) the rules are for: this server's own.
    served: Arc<BTreeSet<&'static str>>,
}

/// The service part of an RPC path, with its slashes: `/package.Service/`.
fn service_of(path: &str) -> Option<&str> {
    let end = path.get(1..)?.find('/')? + 2;
    path.get(..end)
}

impl Guard {
    pub fn new(authenticator: Authenticator, rules: AccessRules) -> Self {
        Self {
            authenticator: Arc::new(authenticator),
            rules: Arc::new(rules.iter().copied().collect()),
            served: Arc::new(
                rules
                    .iter()
                    .filter_map(|(path, _)| service_of(path))
                    .collect(),
            ),
        }
    }

    /// True when `path` belongs to a service this server does not serve: the router answers
    /// `UNIMPLEMENTED` for it, touching no data, so the guard lets it through (refusing it
    /// would suggest the service exists here and the caller merely lacks a role). A method
    /// of this server's own services without a rule is still refused.
    fn is_foreign(&self, path: &str) -> bool {
        service_of(path).is_none_or(|service| !self.served.contains(service))
    }

    async fn admit(&self, path: &str, headers: &http::HeaderMap) -> Result<Principal, Status> {
        let principal = self.authenticator.authenticate(headers).await?;
        let Some(roles) = self.rules.get(path) else {
            tracing::warn!(path, "an RPC without an access rule was refused");
            return Err(Status::permission_denied(format!(
                "{path} has no access rule"
            )));
        };
        if principal.has_any(roles) {
            Ok(principal)
        } else {
            Err(Status::permission_denied(format!(
                "{} may not call {path} (needs one of: {})",
                principal.name,
                roles.join(", ")
            )))
        }
    }
}

impl<S> tower::Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            guard: self.clone(),
        }
    }
}

/// A service behind a [`Guard`].
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    guard: Guard,
}

impl<S, B, R> tower::Service<http::Request<B>> for Guarded<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was driven to readiness serves this call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            if is_open(&path) || guard.is_foreign(&path) {
                return inner.call(request).await;
            }
            match guard.admit(&path, request.headers()).await {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Calling other services

/// Adds this side's credentials to every outgoing call — the bearer token, and in insecure
/// development mode the principal header — and the current trace context. A tonic
/// interceptor.
#[derive(Clone, Default)]
pub struct Outbound {
    token: Option<Arc<CachedToken>>,
    principal: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

/// A token, from configuration or a file read again when it changes.
struct CachedToken {
    inline: Option<SecretString>,
    file: Option<PathBuf>,
    cached: Mutex<Option<(SystemTime, MetadataValue<tonic::metadata::Ascii>)>>,
}

impl Outbound {
    /// Credentials from `source`; none when it is not set.
    pub fn new(source: &TokenSource) -> anyhow::Result<Self> {
        if source.token.is_some() && source.token_file.is_some() {
            anyhow::bail!("give the outbound token inline or as a file, not both");
        }
        let token = source.is_set().then(|| {
            Arc::new(CachedToken {
                inline: source.token.clone(),
                file: source.token_file.clone(),
                cached: Mutex::new(None),
            })
        });
        if let Some(token) = &token {
            // A missing or unreadable file is a start-up error, not a surprise later.
            token.header()?;
        }
        Ok(Self {
            token,
            principal: None,
        })
    }

    /// Also claims `name` in the principal header (honoured in insecure development mode).
    pub fn with_principal(mut self, name: &str) -> Self {
        self.principal = name.parse().ok();
        self
    }
}

impl CachedToken {
    fn header(&self) -> anyhow::Result<MetadataValue<tonic::metadata::Ascii>> {
        if let Some(token) = &self.inline {
            let mut value: MetadataValue<_> = format!("Bearer {}", token.expose_secret())
                .parse()
                .context("the token is not valid header text")?;
            value.set_sensitive(true);
            return Ok(value);
        }
        let file = self.file.as_ref().context("no token configured")?;
        let modified = std::fs::metadata(file)
            .and_then(|m| m.modified())
            .with_context(|| format!("cannot read the token file {}", file.display()))?;
        let mut cached = self
            .cached
            .lock()
            .map_err(|_| anyhow::anyhow!("token cache poisoned"))?;
        if let Some((at, value)) = cached.as_ref()
            && *at == modified
        {
            return Ok(value.clone());
        }
        let token = read_token_file(file)?;
        let mut value: MetadataValue<_> = format!("Bearer {}", token.expose_secret())
            .parse()
            .context("the token file does not hold valid header text")?;
        value.set_sensitive(true);
        *cached = Some((modified, value.clone()));
        Ok(value)
    }
}

impl tonic::service::Interceptor for Outbound {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        crate::trace::inject_into(request.metadata_mut());
        if let Some(token) = &self.token {
            let value = token.header().map_err(|error| {
                tracing::error!(
                    error = format!("{error:#}"),
                    "cannot read the outbound token"
                );
                Status::unauthenticated("this service's own token cannot be read")
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        if let Some(principal) = &self.principal {
            request
                .metadata_mut()
                .insert(PRINCIPAL_HEADER, principal.clone());
        }
        Ok(request)
    }
}

/// A channel to another service with this side's credentials on every call.
pub type AuthedChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Outbound>;

/// A random token of 32 bytes, URL-safe base64 (for `userimport dev`'s local tokens).
pub fn random_token() -> anyhow::Result<SecretString> {
    use base64::Engine as _;
    use ring::rand::SecureRandom as _;
    let mut bytes = [0_u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no system randomness"))?;
    Ok(SecretString::from(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
    ))
}

/// Every RPC declared for `service` (full name, `userimport.registry.v1.RegistryService`) in
/// the descriptor set, as paths `/service/Method`.
pub fn declared_rpcs(service: &str) -> anyhow::Result<Vec<String>> {
    use prost::Message as _;
    let set = prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET)
        .context("the descriptor set does not decode")?;
    let mut paths = Vec::new();
    for file in &set.file {
        for s in &file.service {
            let full = format!("{}.{}", file.package(), s.name());
            if full == service {
                paths.extend(s.method.iter().map(|m| format!("/{full}/{}", m.name())));
            }
        }
    }
    anyhow::ensure!(!paths.is_empty(), "no service {service} is declared");
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(token: &str) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        map.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        map
    }

    fn config_with(token: &str) -> AuthConfig {
        AuthConfig {
            static_tokens: vec![StaticToken {
                principal: "ops".to_owned(),
                roles: vec![READER.to_owned()],
                token: Some(SecretString::from(token.to_owned())),
                token_file: None,
            }],
            ..AuthConfig::default()
        }
    }

    #[test]
    fn a_service_without_authentication_configured_refuses_to_start() {
        let Err(error) = Authenticator::from_config(&AuthConfig::default(), "svc") else {
            panic!("an empty configuration was accepted");
        };
        assert!(
            error.to_string().contains("insecure_development"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_static_token_is_its_principal_and_anything_else_is_refused() {
        let auth = Authenticator::from_config(&config_with("0123456789abcdef-x"), "svc").unwrap();
        let principal = auth
            .authenticate(&headers("0123456789abcdef-x"))
            .await
            .unwrap();
        assert_eq!(principal.name, "ops");
        assert!(principal.has_any(READ) && !principal.has_any(WRITE));
        for bad in ["0123456789abcdef-y", "", "a.b.c"] {
            let status = auth.authenticate(&headers(bad)).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        let status = auth
            .authenticate(&http::HeaderMap::new())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn insecure_mode_with_tokens_refuses_to_start() {
        let with_tokens = AuthConfig {
            insecure_development: true,
            ..config_with("0123456789abcdef-x")
        };
        let with_oidc = AuthConfig {
            insecure_development: true,
            oidc: Some(OidcConfig {
                issuers: vec!["https://issuer.example".into()],
                audiences: vec!["api://userimport".into()],
                ..OidcConfig::default()
            }),
            ..AuthConfig::default()
        };
        for (config, setting) in [
            (with_tokens, "auth.static_tokens"),
            (with_oidc, "auth.oidc"),
        ] {
            let Err(error) = Authenticator::from_config(&config, "svc") else {
                panic!("insecure mode overrode {setting}");
            };
            let error = error.to_string();
            assert!(
                error.contains("auth.insecure_development") && error.contains(setting),
                "{error}"
            );
        }
    }

    #[test]
    fn an_unknown_role_name_refuses_to_start() {
        let mut config = config_with("0123456789abcdef-x");
        config.static_tokens[0].roles = vec![ADMIN.to_owned(), "userimport.admn".to_owned()];
        let Err(error) = Authenticator::from_config(&config, "svc") else {
            panic!("a misspelt role was accepted");
        };
        let error = error.to_string();
        assert!(
            error.contains("auth.static_tokens[0]") && error.contains("userimport.admn"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_oversized_token_is_refused_before_any_lookup() {
        let auth = Authenticator::from_config(&config_with("0123456789abcdef-x"), "svc").unwrap();
        let status = auth
            .authenticate(&headers(&"a".repeat(MAX_TOKEN_BYTES + 1)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(status.message().contains("longer than"), "{status:?}");
    }

    #[test]
    fn short_static_tokens_are_a_configuration_error() {
        assert!(Authenticator::from_config(&config_with("short"), "svc").is_err());
    }

    #[test]
    fn the_debug_form_of_credentials_never_shows_a_token() {
        let config = config_with("0123456789abcdef-secret");
        assert!(!format!("{config:?}").contains("0123456789abcdef-secret"));
        let outbound = Outbound::new(&TokenSource::inline(SecretString::from(
            "0123456789abcdef-secret".to_owned(),
        )))
        .unwrap();
        assert!(!format!("{outbound:?}").contains("0123456789abcdef-secret"));
    }

    #[test]
    fn only_methods_of_other_services_pass_the_guard_unchecked() {
        let rules: AccessRules = &[("/pkg.Mine/Call", READ)];
        let guard = Guard::new(Authenticator::insecure(), rules);
        assert!(guard.is_foreign("/pkg.Other/Call"));
        assert!(guard.is_foreign("/nonsense"));
        assert!(!guard.is_foreign("/pkg.Mine/Call"));
        assert!(!guard.is_foreign("/pkg.Mine/Unlisted"));
    }

    #[test]
    fn every_service_declares_its_rpcs() {
        let rpcs = declared_rpcs("userimport.registry.v1.RegistryService").unwrap();
        assert!(rpcs.contains(&"/userimport.registry.v1.RegistryService/ImportUsers".to_owned()));
        assert!(declared_rpcs("userimport.nothing.v1.Nothing").is_err());
    }
}
