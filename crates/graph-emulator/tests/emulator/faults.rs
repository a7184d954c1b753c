//! Fault injection, latency, token revocation and the request log.

use std::time::Duration;

use graph_emulator::Fault;

use crate::helpers::{TestEmulator, assert_graph_error};

#[tokio::test]
async fn an_injected_429_answers_graphs_throttling_body_with_a_fractional_retry_after() {
    let app = TestEmulator::spawn(3).await;
    let token = app.token().await;
    app.emulator
        .inject(Fault::throttle("/v1.0/users", Some(2.128), 1));

    let (status, headers, body) = app.get_with("/v1.0/users", Some(&token), &[]).await;

    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "2.128");
    assert_graph_error(&body, "TooManyRequests");
    assert_eq!(body["error"]["innerError"]["code"], "429");
    assert_eq!(body["error"]["innerError"]["status"], "429");
    assert_eq!(body["error"]["message"], "Please retry again later.");
    // Fired once: the next request is served.
    assert_eq!(app.get("/v1.0/users", Some(&token)).await.0, 200);
}

#[tokio::test]
async fn a_fault_fires_the_given_number_of_times_on_matching_paths_only() {
    let app = TestEmulator::spawn(3).await;
    let token = app.token().await;
    let id = app.emulator.users()[0].id.clone();
    app.emulator.inject(Fault::status("/v1.0/users/", 503, 2));

    assert_eq!(app.get("/v1.0/users", Some(&token)).await.0, 200);
    let (status, body) = app.get(&format!("/v1.0/users/{id}"), Some(&token)).await;
    assert_eq!(status, 503);
    assert_graph_error(&body, "serviceNotAvailable");
    assert_eq!(
        app.get(&format!("/v1.0/users/{id}"), Some(&token)).await.0,
        503
    );
    assert_eq!(
        app.get(&format!("/v1.0/users/{id}"), Some(&token)).await.0,
        200
    );
}

#[tokio::test]
async fn cleared_faults_do_not_fire() {
    let app = TestEmulator::spawn(1).await;
    let token = app.token().await;
    app.emulator.inject(Fault::status("/v1.0/", 500, 5));
    app.emulator.clear_faults();
    assert_eq!(app.get("/v1.0/users", Some(&token)).await.0, 200);
}

#[tokio::test]
async fn latency_delays_graph_answers_and_the_log_shows_it() {
    let app = TestEmulator::spawn(1).await;
    let token = app.token().await;
    app.emulator.set_latency(Duration::from_millis(150));
    app.get("/v1.0/users", Some(&token)).await;
    let request = app.emulator.requests().pop().unwrap();
    assert!(request.answered_at - request.at >= Duration::from_millis(150));
    assert_eq!(app.emulator.max_in_flight(), 1);
}

#[tokio::test]
async fn revoked_tokens_answer_401() {
    let app = TestEmulator::spawn(1).await;
    let token = app.token().await;
    app.emulator.revoke_tokens();
    let (status, body) = app.get("/v1.0/users", Some(&token)).await;
    assert_eq!(status, 401);
    assert_graph_error(&body, "InvalidAuthenticationToken");
}

#[tokio::test]
async fn the_log_records_headers_without_the_authorization_and_can_be_cleared() {
    let app = TestEmulator::spawn(1).await;
    let token = app.token().await;
    app.get_with(
        "/v1.0/users",
        Some(&token),
        &[("ConsistencyLevel", "eventual")],
    )
    .await;
    let request = app.emulator.requests().pop().unwrap();
    assert!(request.has_authorization);
    assert_eq!(request.consistency_level(), Some("eventual"));
    assert!(request.header("authorization").is_none());
    assert!(request.headers.iter().all(|(_, v)| !v.contains(&token)));
    app.emulator.clear_requests();
    assert!(app.emulator.requests().is_empty());
}
