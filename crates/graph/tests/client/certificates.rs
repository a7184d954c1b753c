//! Certificate credentials against the emulator's token endpoint.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use graph::{
    AssertionAlgorithm, ClientCertificate, Cloud, Credential, Error, GraphClient, GraphConfig,
};
use graph_emulator::{EmulatedCertificate, Emulator, EmulatorConfig};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::helpers::{
    APP_CERT, APP_KEY, OTHER_CERT, OTHER_KEY, fast_retry, graph_statuses, start_emulator,
};

async fn emulator_with_app_certificate() -> Emulator {
    start_emulator(EmulatorConfig {
        certificates: vec![EmulatedCertificate::from_pem(APP_CERT).unwrap()],
        ..EmulatorConfig::synthetic(5)
    })
    .await
}

fn certificate(cert: &str, key: &str, algorithm: AssertionAlgorithm) -> ClientCertificate {
    ClientCertificate::from_pem(cert, &SecretString::from(key.to_owned()))
        .unwrap()
        .with_algorithm(algorithm)
}

fn certificate_client(emulator: &Emulator, certificate: ClientCertificate) -> GraphClient {
    let config = GraphConfig {
        authority_host: emulator.base_url(),
        graph_host: emulator.base_url(),
        retry: fast_retry(),
        ..GraphConfig::with_certificate(
            Cloud::Global,
            emulator.tenant_id(),
            emulator.client_id(),
            certificate,
        )
    };
    assert!(matches!(config.credential, Credential::Certificate(_)));
    GraphClient::new(config).unwrap()
}

#[tokio::test]
async fn certificate_auth_with_ps256_and_a_sha256_thumbprint_succeeds() {
    let emulator = emulator_with_app_certificate().await;
    let client = certificate_client(
        &emulator,
        certificate(APP_CERT, APP_KEY, AssertionAlgorithm::Ps256),
    );
    let id = emulator.users()[0].id.clone();
    assert!(client.get_user(&id).await.unwrap().is_some());
    let token_request = &emulator.requests()[0];
    assert!(token_request.path_and_query.ends_with("/oauth2/v2.0/token"));
    assert_eq!(token_request.status, 200);
}

#[tokio::test]
async fn certificate_auth_with_rs256_and_a_sha1_thumbprint_succeeds() {
    let emulator = emulator_with_app_certificate().await;
    let client = certificate_client(
        &emulator,
        certificate(APP_CERT, APP_KEY, AssertionAlgorithm::Rs256),
    );
    let id = emulator.users()[0].id.clone();
    assert!(client.get_user(&id).await.unwrap().is_some());
}

#[tokio::test]
async fn a_certificate_the_app_does_not_have_fails_with_an_auth_error() {
    let emulator = emulator_with_app_certificate().await;
    for algorithm in [AssertionAlgorithm::Ps256, AssertionAlgorithm::Rs256] {
        let client = certificate_client(&emulator, certificate(OTHER_CERT, OTHER_KEY, algorithm));
        let error = client.get_user("anyone").await.unwrap_err();
        assert!(!error.is_retryable());
        assert!(
            matches!(&error, Error::Auth { status: 401, error, error_codes, description }
                if error == "invalid_client" && error_codes == &[700_027]
                    && description.contains("not registered")),
            "{error:?}"
        );
    }
    assert!(graph_statuses(&emulator).is_empty());
}

#[tokio::test]
async fn an_expired_assertion_fails_with_an_auth_error() {
    let emulator = emulator_with_app_certificate().await;
    // The token endpoint's clock is an hour ahead of ours: our assertion looks expired.
    emulator.set_clock_ahead(Duration::from_secs(3_600));
    let client = certificate_client(
        &emulator,
        certificate(APP_CERT, APP_KEY, AssertionAlgorithm::Ps256),
    );
    let error = client.get_user("anyone").await.unwrap_err();
    assert!(
        matches!(&error, Error::Auth { status: 401, error_codes, .. } if error_codes == &[700_024]),
        "{error:?}"
    );
}

/// Posts an assertion to the emulator's token endpoint and returns the AADSTS code (0 if
/// a token was issued).
async fn token_endpoint_code(emulator: &Emulator, assertion: &str) -> u64 {
    let url = format!(
        "{}{}/oauth2/v2.0/token",
        emulator.base_url(),
        emulator.tenant_id()
    );
    let body: Value = reqwest::Client::new()
        .post(url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", emulator.client_id()),
            ("scope", "https://graph.microsoft.com/.default"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["error_codes"][0].as_u64().unwrap_or(0)
}

fn audience(emulator: &Emulator) -> String {
    format!(
        "{}{}/oauth2/v2.0/token",
        emulator.base_url(),
        emulator.tenant_id()
    )
}

/// Signs `header.claims` with an RSA PKCS#8 PEM key, PSS padding.
fn sign_with(key_pem: &str, header: &Value, claims: &Value) -> String {
    let body: String = key_pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let key = ring::signature::RsaKeyPair::from_pkcs8(&STANDARD.decode(body).unwrap()).unwrap();
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PSS_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[tokio::test]
async fn an_assertion_signed_by_another_key_under_the_apps_thumbprint_is_refused() {
    let emulator = emulator_with_app_certificate().await;
    let app = certificate(APP_CERT, APP_KEY, AssertionAlgorithm::Ps256);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "aud": audience(&emulator), "iss": emulator.client_id(), "sub": emulator.client_id(),
        "jti": "5b1f3c1e-0000-4000-8000-000000000001", "nbf": now, "iat": now, "exp": now + 300,
    });
    let header = json!({"alg": "PS256", "typ": "JWT", "x5t#S256": app.sha256_thumbprint()});

    assert_eq!(
        token_endpoint_code(&emulator, &sign_with(APP_KEY, &header, &claims)).await,
        0
    );
    assert_eq!(
        token_endpoint_code(&emulator, &sign_with(OTHER_KEY, &header, &claims)).await,
        700_027
    );
}

#[tokio::test]
async fn assertions_with_a_wrong_audience_issuer_or_lifetime_are_refused() {
    let emulator = emulator_with_app_certificate().await;
    let app = certificate(APP_CERT, APP_KEY, AssertionAlgorithm::Ps256);
    let good = app
        .assertion(
            emulator.client_id(),
            &audience(&emulator),
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(
        token_endpoint_code(&emulator, good.expose_secret()).await,
        0
    );

    let wrong_audience = app
        .assertion(
            emulator.client_id(),
            "https://login.microsoftonline.com/x/oauth2/v2.0/token",
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(
        token_endpoint_code(&emulator, wrong_audience.expose_secret()).await,
        700_212
    );
    let wrong_issuer = app
        .assertion("someone-else", &audience(&emulator), SystemTime::now())
        .unwrap();
    assert_eq!(
        token_endpoint_code(&emulator, wrong_issuer.expose_secret()).await,
        700_021
    );
    let expired = app
        .assertion(
            emulator.client_id(),
            &audience(&emulator),
            SystemTime::now() - Duration::from_secs(3_600),
        )
        .unwrap();
    assert_eq!(
        token_endpoint_code(&emulator, expired.expose_secret()).await,
        700_024
    );
    let not_yet = app
        .assertion(
            emulator.client_id(),
            &audience(&emulator),
            SystemTime::now() + Duration::from_secs(3_600),
        )
        .unwrap();
    assert_eq!(
        token_endpoint_code(&emulator, not_yet.expose_secret()).await,
        700_024
    );
}
