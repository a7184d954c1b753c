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

mod guard;
mod oidc;
mod outbound;
mod verify;

pub use guard::*;
pub use outbound::*;
pub use verify::*;

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
