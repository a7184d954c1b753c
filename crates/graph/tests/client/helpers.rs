use std::time::Duration;

use graph::{Cloud, GraphClient, GraphConfig, RetryPolicy};
use graph_emulator::{Emulator, EmulatorConfig};
use secrecy::SecretString;
use tokio::net::TcpListener;
use url::Url;

pub(crate) async fn start_emulator(config: EmulatorConfig) -> Emulator {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Emulator::start(config, listener).await.unwrap()
}

/// Retries quickly, so tests of retried failures take milliseconds.
pub(crate) fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    }
}

/// A config pointing both hosts at `base_url`, with [`fast_retry`].
pub(crate) fn config_for(base_url: Url, tenant: &str, client: &str, secret: &str) -> GraphConfig {
    GraphConfig {
        authority_host: base_url.clone(),
        graph_host: base_url,
        request_timeout: Duration::from_secs(30),
        retry: fast_retry(),
        ..GraphConfig::for_cloud(
            Cloud::Global,
            tenant,
            client,
            SecretString::from(secret.to_owned()),
        )
    }
}

pub(crate) fn emulator_config(emulator: &Emulator) -> GraphConfig {
    config_for(
        emulator.base_url(),
        emulator.tenant_id(),
        emulator.client_id(),
        emulator.client_secret(),
    )
}

pub(crate) fn client_for(emulator: &Emulator) -> GraphClient {
    GraphClient::new(emulator_config(emulator)).unwrap()
}

pub(crate) fn token_requests(emulator: &Emulator) -> usize {
    emulator
        .requests()
        .iter()
        .filter(|r| r.path_and_query.ends_with("/oauth2/v2.0/token"))
        .count()
}

pub(crate) fn graph_statuses(emulator: &Emulator) -> Vec<u16> {
    emulator
        .requests()
        .iter()
        .filter(|r| r.path_and_query.starts_with("/v1.0/"))
        .map(|r| r.status)
        .collect()
}

/// Graph requests (not token requests) in the log.
pub(crate) fn graph_requests(emulator: &Emulator) -> Vec<graph_emulator::RecordedRequest> {
    emulator
        .requests()
        .into_iter()
        .filter(|r| r.path_and_query.starts_with("/v1.0/"))
        .collect()
}

/// A client for `emulator` with a config changed by `change`.
pub(crate) fn client_with(
    emulator: &Emulator,
    change: impl FnOnce(&mut GraphConfig),
) -> GraphClient {
    let mut config = emulator_config(emulator);
    change(&mut config);
    GraphClient::new(config).unwrap()
}

/// Waits (polling, bounded) until `condition` holds.
pub(crate) async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub(crate) const APP_CERT: &str = include_str!("../fixtures/app-cert.pem");
pub(crate) const APP_KEY: &str = include_str!("../fixtures/app-key.pem");
pub(crate) const OTHER_CERT: &str = include_str!("../fixtures/other-cert.pem");
pub(crate) const OTHER_KEY: &str = include_str!("../fixtures/other-key.pem");
