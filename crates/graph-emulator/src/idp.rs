//! The identity provider side of Entra ID that our services trust: a signing key set served
//! at `/{tenant}/discovery/v2.0/keys` (the JWKS URL of a real tenant), the discovery document
//! at `/{tenant}/v2.0/.well-known/openid-configuration` naming it, and access tokens for
//! our own API, signed as Entra signs them (RS256, or ES256 for the elliptic-curve key), with
//! app roles in `roles`. Tests mint tokens with [`crate::Emulator::sign_access_token`] —
//! expired, for another audience, from another issuer, or signed by a key the set does not
//! publish — and rotate the published keys to exercise a verifier's cache.
//!
//! The keys are fixed test keys in `fixtures/idp/` (never used for anything else).

use std::sync::{Mutex, PoisonError};

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::{Value, json};

use crate::state::AppState;

/// A signing key of the emulated provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKey {
    /// RSA, published from the start (`kid` "rsa-1").
    Rsa1,
    /// RSA, published after [`crate::Emulator::rotate_signing_keys`] (`kid` "rsa-2").
    Rsa2,
    /// P-256, published from the start (`kid` "ec-1"), for ES256.
    Ec1,
    /// Signed with rsa-2's key but naming `kid` "rsa-1": a forged or corrupted signature.
    Forged,
}

const RSA_1: &str = include_str!("../fixtures/idp/rsa-1.pem");
const RSA_2: &str = include_str!("../fixtures/idp/rsa-2.pem");
const EC_1: &str = include_str!("../fixtures/idp/ec-1.pem");
const PUBLIC: &str = include_str!("../fixtures/idp/public-jwks.json");

/// What the provider publishes now.
pub(crate) struct Published {
    kids: Mutex<Vec<&'static str>>,
}

impl Default for Published {
    fn default() -> Self {
        Self {
            kids: Mutex::new(vec!["rsa-1", "ec-1"]),
        }
    }
}

impl Published {
    /// Publishes rsa-2 and withdraws rsa-1, as a provider rolling its keys does.
    pub(crate) fn rotate(&self) {
        let mut kids = self.kids.lock().unwrap_or_else(PoisonError::into_inner);
        kids.retain(|k| *k != "rsa-1");
        if !kids.contains(&"rsa-2") {
            kids.push("rsa-2");
        }
    }

    fn set(&self) -> Value {
        let public: Value = serde_json::from_str(PUBLIC).unwrap_or(Value::Null);
        let kids = self.kids.lock().unwrap_or_else(PoisonError::into_inner);
        let keys: Vec<Value> = kids
            .iter()
            .filter_map(|kid| {
                let mut key = public.get(*kid)?.clone();
                let alg = if kid.starts_with("ec") {
                    "ES256"
                } else {
                    "RS256"
                };
                key["kid"] = json!(kid);
                key["use"] = json!("sig");
                key["alg"] = json!(alg);
                Some(key)
            })
            .collect();
        json!({ "keys": keys })
    }
}

/// `GET /{tenant}/discovery/v2.0/keys`.
pub(crate) async fn keys(State(state): State<AppState>) -> Json<Value> {
    Json(state.idp.set())
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`: the part of the discovery document
/// a relying party reads (the issuer it is for, and where the keys are).
pub(crate) async fn discovery(State(state): State<AppState>) -> Json<Value> {
    let base = state.base_url.as_str().trim_end_matches('/');
    let tenant = &state.tenant_id;
    Json(json!({
        "issuer": format!("{base}/{tenant}/v2.0"),
        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

/// An access token to mint.
#[derive(Debug, Clone)]
pub struct AccessTokenSpec {
    /// `sub`.
    pub subject: String,
    /// `preferred_username` (users) — leave empty for an app (client credentials) token.
    pub username: String,
    /// `roles`: app roles granted to the user or app.
    pub roles: Vec<String>,
    /// `aud`.
    pub audience: String,
    /// `iss`; `None` means this emulator's issuer.
    pub issuer: Option<String>,
    /// Seconds from now until `exp` (negative: already expired).
    pub expires_in: i64,
    pub key: SigningKey,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    preferred_username: &'a str,
    azp: &'a str,
    roles: &'a [String],
    iat: i64,
    nbf: i64,
    exp: i64,
}

/// Signs `spec` with its key.
pub(crate) fn sign(
    spec: &AccessTokenSpec,
    default_issuer: &str,
    now: i64,
) -> anyhow::Result<String> {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let (pem, kid, alg) = match spec.key {
        SigningKey::Rsa1 => (RSA_1, "rsa-1", Algorithm::RS256),
        SigningKey::Rsa2 => (RSA_2, "rsa-2", Algorithm::RS256),
        SigningKey::Ec1 => (EC_1, "ec-1", Algorithm::ES256),
        SigningKey::Forged => (RSA_2, "rsa-1", Algorithm::RS256),
    };
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes())?,
        _ => EncodingKey::from_rsa_pem(pem.as_bytes())?,
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    let claims = Claims {
        iss: spec.issuer.as_deref().unwrap_or(default_issuer),
        aud: &spec.audience,
        sub: &spec.subject,
        preferred_username: &spec.username,
        azp: &spec.subject,
        roles: &spec.roles,
        iat: now,
        nbf: now - 5,
        exp: now + spec.expires_in,
    };
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}
