use std::time::Duration;

use futures::future::join_all;
use graph::{Error, GraphClient, GraphConfig};
use graph_emulator::{EmulatorConfig, Fault};

use crate::helpers::{
    client_for, config_for, emulator_config, graph_statuses, start_emulator, token_requests,
};

const WRONG_SECRET: &str = "definitely-wrong-secret-4711";

#[tokio::test]
async fn one_token_serves_many_calls() {
    let emulator = start_emulator(EmulatorConfig::synthetic(50)).await;
    let client = client_for(&emulator);
    let ids: Vec<String> = emulator
        .users()
        .into_iter()
        .map(|u| u.id)
        .take(10)
        .collect();
    for id in &ids {
        assert!(client.get_user(id).await.unwrap().is_some());
    }
    let mut pages = client.clone().list_users();
    while pages.next_page().await.unwrap().is_some() {}
    assert_eq!(token_requests(&emulator), 1);
    assert_eq!(graph_statuses(&emulator).len(), 11);
}

#[tokio::test]
async fn a_short_token_lifetime_causes_refreshes_without_failing_calls() {
    let emulator = start_emulator(EmulatorConfig {
        token_lifetime: Duration::from_secs(2),
        ..EmulatorConfig::synthetic(5)
    })
    .await;
    let client = client_for(&emulator);
    let id = emulator.users()[0].id.clone();

    client.get_user(&id).await.unwrap().unwrap();
    assert_eq!(token_requests(&emulator), 1);
    // Half the 2 s lifetime has passed: refreshed ahead of expiry.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    client.get_user(&id).await.unwrap().unwrap();
    assert_eq!(token_requests(&emulator), 2);
    // Past the expiry of the second token.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    client.get_user(&id).await.unwrap().unwrap();
    assert_eq!(token_requests(&emulator), 3);

    assert!(graph_statuses(&emulator).iter().all(|s| *s == 200));
}

#[tokio::test]
async fn concurrent_callers_share_one_token_request_and_one_refresh() {
    let emulator = start_emulator(EmulatorConfig {
        token_lifetime: Duration::from_secs(4),
        ..EmulatorConfig::synthetic(20)
    })
    .await;
    let client = client_for(&emulator);
    let ids: Vec<String> = emulator.users().into_iter().map(|u| u.id).collect();
    let read_all = || {
        join_all(ids.iter().map(|id| {
            let client = client.clone();
            let id = id.clone();
            tokio::spawn(async move { client.get_user(&id).await })
        }))
    };

    for result in read_all().await {
        assert!(result.unwrap().unwrap().is_some());
    }
    assert_eq!(token_requests(&emulator), 1);

    // Past half the 4 s lifetime, with slack for a loaded machine.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    for result in read_all().await {
        assert!(result.unwrap().unwrap().is_some());
    }
    assert_eq!(token_requests(&emulator), 2);
    assert!(graph_statuses(&emulator).iter().all(|s| *s == 200));
}

#[tokio::test]
async fn a_wrong_secret_is_an_auth_error_that_never_shows_the_secret() {
    let emulator = start_emulator(EmulatorConfig::synthetic(5)).await;
    let client = GraphClient::new(config_for(
        emulator.base_url(),
        emulator.tenant_id(),
        emulator.client_id(),
        WRONG_SECRET,
    ))
    .unwrap();

    let error = client.get_user("anyone").await.unwrap_err();

    assert!(!error.to_string().contains(WRONG_SECRET));
    assert!(!format!("{error:?}").contains(WRONG_SECRET));
    assert!(!format!("{client:?}").contains(WRONG_SECRET));
    assert!(!error.is_retryable());
    match error {
        Error::Auth {
            status,
            error,
            description,
            error_codes,
        } => {
            assert_eq!(status, 401);
            assert_eq!(error, "invalid_client");
            assert_eq!(error_codes, [7_000_215]);
            assert!(description.starts_with("AADSTS7000215"), "{description}");
        }
        other => panic!("expected Error::Auth, got {other:?}"),
    }
    assert!(graph_statuses(&emulator).is_empty());
}

#[tokio::test]
async fn an_unknown_tenant_is_an_auth_error_with_aadsts90002() {
    let emulator = start_emulator(EmulatorConfig::synthetic(5)).await;
    let client = GraphClient::new(config_for(
        emulator.base_url(),
        "11111111-1111-4111-8111-111111111111",
        emulator.client_id(),
        emulator.client_secret(),
    ))
    .unwrap();
    let error = client.list_users().next_page().await.unwrap_err();
    assert!(
        matches!(&error, Error::Auth { status: 400, error_codes, .. } if error_codes == &[90_002]),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_401_triggers_one_token_refresh_and_one_retry() {
    let emulator = start_emulator(EmulatorConfig::synthetic(5)).await;
    let client = client_for(&emulator);
    let id = emulator.users()[0].id.clone();
    client.get_user(&id).await.unwrap().unwrap();
    assert_eq!(token_requests(&emulator), 1);

    emulator.revoke_tokens();
    let user = client.get_user(&id).await.unwrap();

    assert!(user.is_some());
    assert_eq!(token_requests(&emulator), 2);
    assert_eq!(graph_statuses(&emulator), [200, 401, 200]);
}

#[tokio::test]
async fn a_401_after_the_refresh_is_an_error_without_a_loop() {
    let emulator = start_emulator(EmulatorConfig::synthetic(5)).await;
    let client = client_for(&emulator);
    emulator.inject(Fault::status("/v1.0/users", 401, 10));

    let error = client.list_users().next_page().await.unwrap_err();

    assert!(
        matches!(error, Error::Graph { status: 401, .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(graph_statuses(&emulator), [401, 401]);
    assert_eq!(token_requests(&emulator), 2);
}

#[tokio::test]
async fn concurrent_callers_refused_with_401_share_one_refresh() {
    let emulator = start_emulator(EmulatorConfig::synthetic(10)).await;
    let client = client_for(&emulator);
    let ids: Vec<String> = emulator.users().into_iter().map(|u| u.id).collect();
    client.get_user(&ids[0]).await.unwrap();
    emulator.revoke_tokens();

    let reads = join_all(ids.iter().cloned().map(|id| {
        let client = client.clone();
        tokio::spawn(async move { client.get_user(&id).await })
    }))
    .await;

    for read in reads {
        assert!(read.unwrap().unwrap().is_some());
    }
    assert_eq!(token_requests(&emulator), 2);
}

#[tokio::test]
async fn a_token_expiring_in_the_middle_of_a_slow_listing_does_not_fail_it() {
    let emulator = start_emulator(EmulatorConfig {
        token_lifetime: Duration::from_secs(2),
        ..EmulatorConfig::synthetic(40)
    })
    .await;
    let client = GraphClient::new(GraphConfig {
        page_size: 5,
        ..emulator_config(&emulator)
    })
    .unwrap();
    emulator.set_latency(Duration::from_millis(450));

    let mut pages = client.list_users();
    let mut users = 0;
    while let Some(page) = pages.next_page().await.unwrap() {
        users += page.users.len();
    }

    assert_eq!(users, 40);
    // Eight pages of 450 ms outlive the 2 s token: it was replaced on the way.
    assert!(token_requests(&emulator) >= 2);
}
