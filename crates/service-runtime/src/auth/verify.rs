//! Verifying tokens: static tokens by digest, OIDC access tokens (`oidc.rs`), or none in
//! insecure development mode.

use super::*;

/// A static token, kept only as its SHA-256 digest (so a comparison leaks nothing useful and
/// no token sits in memory longer than loading takes).
pub(super) struct KnownToken {
    digest: [u8; 32],
    principal: Principal,
}

pub(super) fn digest(token: &str) -> [u8; 32] {
    let mut out = [0_u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    out
}

pub(super) enum Verifier {
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

pub(super) fn bearer(headers: &http::HeaderMap) -> Result<&str, Status> {
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
