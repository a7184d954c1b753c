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
        "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
        "code_challenge_methods_supported": ["S256"],
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

/// Sign-in with the authorization code flow (PKCE, S256), as a web app signs people in with
/// Entra: `/authorize` answers at once for the person a test named with
/// [`crate::Emulator::sign_in_as`] (Entra would show its sign-in page), and the token
/// endpoint trades the code for that person's access token.
#[derive(Default)]
pub(crate) struct SignIn {
    person: Mutex<Option<AccessTokenSpec>>,
    codes: Mutex<std::collections::HashMap<String, Grant>>,
}

struct Grant {
    person: AccessTokenSpec,
    client_id: String,
    redirect_uri: String,
    challenge: String,
    issued: std::time::Instant,
}

/// How long a code may wait for its exchange (Entra: about ten minutes).
const CODE_LIFETIME: std::time::Duration = std::time::Duration::from_secs(600);

impl SignIn {
    pub(crate) fn set(&self, person: Option<AccessTokenSpec>) {
        *self.person.lock().unwrap_or_else(PoisonError::into_inner) = person;
    }
}

fn redirect_with(uri: &str, pairs: &[(&str, &str)]) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let mut url = match url::Url::parse(uri) {
        Ok(url) => url,
        Err(_) => {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                "redirect_uri is not a URL",
            )
                .into_response();
        }
    };
    url.query_pairs_mut().extend_pairs(pairs);
    (
        axum::http::StatusCode::FOUND,
        [(axum::http::header::LOCATION, url.to_string())],
    )
        .into_response()
}

/// `GET /{tenant}/oauth2/v2.0/authorize`.
pub(crate) async fn authorize(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let get = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
    let (client_id, redirect_uri, challenge) =
        (get("client_id"), get("redirect_uri"), get("code_challenge"));
    if client_id.is_empty() || redirect_uri.is_empty() {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            "AADSTS900144: The request body must contain the parameters client_id and redirect_uri.",
        )
            .into_response();
    }
    let state_param = get("state");
    if get("response_type") != "code" {
        return redirect_with(
            redirect_uri,
            &[
                ("error", "unsupported_response_type"),
                ("state", state_param),
            ],
        );
    }
    if challenge.is_empty() || get("code_challenge_method") != "S256" {
        return redirect_with(
            redirect_uri,
            &[
                ("error", "invalid_request"),
                (
                    "error_description",
                    "AADSTS501491: a code_challenge with method S256 is required",
                ),
                ("state", state_param),
            ],
        );
    }
    let person = state
        .sign_in
        .person
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let Some(person) = person else {
        return redirect_with(
            redirect_uri,
            &[
                ("error", "access_denied"),
                (
                    "error_description",
                    "nobody signs in to the emulator (sign_in_as)",
                ),
                ("state", state_param),
            ],
        );
    };
    let code = format!("code.{}", uuid::Uuid::new_v4().simple());
    state
        .sign_in
        .codes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(
            code.clone(),
            Grant {
                person,
                client_id: client_id.to_owned(),
                redirect_uri: redirect_uri.to_owned(),
                challenge: challenge.to_owned(),
                issued: std::time::Instant::now(),
            },
        );
    redirect_with(redirect_uri, &[("code", &code), ("state", state_param)])
}

/// The token endpoint's `grant_type=authorization_code`: one exchange per code, by the client
/// it was issued to, for the same redirect URI, with the verifier of its challenge.
pub(crate) fn exchange_code(state: &AppState, body: &[u8]) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let fields: std::collections::HashMap<String, String> = url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |name: &str| fields.get(name).map(String::as_str).unwrap_or_default();
    let refused = |description: &str| {
        (
            axum::http::StatusCode::BAD_REQUEST,
            Json(json!({ "error": "invalid_grant", "error_description": description })),
        )
            .into_response()
    };
    let grant = state
        .sign_in
        .codes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(get("code"));
    let Some(grant) = grant else {
        return refused("AADSTS70008: the code is unknown, expired or already redeemed");
    };
    if grant.issued.elapsed() > CODE_LIFETIME {
        return refused("AADSTS70008: the code has expired");
    }
    if grant.client_id != get("client_id") || grant.redirect_uri != get("redirect_uri") {
        return refused("AADSTS50148: the code was issued to another client or redirect URI");
    }
    use base64::Engine as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, get("code_verifier").as_bytes());
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
    if computed != grant.challenge {
        return refused("AADSTS501481: the code_verifier does not match the code_challenge");
    }
    let base = state.base_url.as_str().trim_end_matches('/');
    let issuer = format!("{base}/{}/v2.0", state.tenant_id);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    match sign(&grant.person, &issuer, now) {
        Ok(token) => Json(json!({
            "token_type": "Bearer",
            "expires_in": grant.person.expires_in,
            "access_token": token,
            "scope": get("scope"),
        }))
        .into_response(),
        Err(error) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot sign: {error}"),
        )
            .into_response(),
    }
}
