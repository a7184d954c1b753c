use std::time::Duration;

use futures::future::join_all;
use graph::{Cloud, Error, GraphClient, GraphConfig, RetryPolicy};
use graph_emulator::{EmulatorConfig, Fault};
use secrecy::SecretString;

use crate::helpers::{
    client_for, client_with, config_for, emulator_config, graph_requests, graph_statuses,
    start_emulator, token_requests,
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
async fn a_fresh_token_refused_again_is_retried_with_backoff() {
    let emulator = start_emulator(EmulatorConfig::synthetic(5)).await;
    // Refused-token waits are 2, 6 and 12 times the base delay: 200, 600 and 1,200 ms.
    let client = client_with(&emulator, |config| {
        config.retry = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        };
    });
    let id = emulator.users()[0].id.clone();
    // The first 401 is answered with a refresh; the fresh token is refused twice more, as
    // Entra's new tokens can be for a moment, then accepted.
    emulator.inject(Fault::status("/v1.0/users", 401, 3));

    let user = client.get_user(&id).await.unwrap();

    assert_eq!(user.unwrap().id, id);
    assert_eq!(graph_statuses(&emulator), [401, 401, 401, 200]);
    assert_eq!(
        token_requests(&emulator),
        2,
        "one refresh, then the fresh token waited for"
    );
    let log = graph_requests(&emulator);
    let gap = |i: usize| log[i].at - log[i - 1].answered_at;
    assert!(gap(2) >= Duration::from_millis(200), "{:?}", gap(2));
    assert!(gap(3) >= Duration::from_millis(600), "{:?}", gap(3));
}

#[tokio::test]
async fn a_token_refused_after_every_wait_fails_saying_it_was_refused() {
    let emulator = start_emulator(EmulatorConfig::synthetic(5)).await;
    let client = client_for(&emulator);
    emulator.inject(Fault::status("/v1.0/users", 401, 100));

    let error = client.list_users().next_page().await.unwrap_err();

    assert!(
        matches!(&error, Error::Graph { status: 401, code, message, .. }
            if code == "InvalidAuthenticationToken" && message.contains("refused the access token")),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    // Bounded: the first answer, the refreshed token, and three waits for it.
    assert_eq!(graph_statuses(&emulator), [401; 5]);
    assert_eq!(token_requests(&emulator), 2);
}

#[tokio::test]
async fn the_token_scope_is_the_clouds_graph_resource_whatever_the_graph_host() {
    let emulator = start_emulator(EmulatorConfig::synthetic(5)).await;
    let id = emulator.users()[0].id.clone();
    let expected = [
        (Cloud::Global, "https://graph.microsoft.com/.default"),
        (Cloud::UsGov, "https://graph.microsoft.us/.default"),
        (Cloud::UsGovDod, "https://dod-graph.microsoft.us/.default"),
        (
            Cloud::China,
            "https://microsoftgraph.chinacloudapi.cn/.default",
        ),
    ];
    for (cloud, scope) in expected {
        // Both hosts are the emulator's, as a proxy in front of Graph would be.
        let config = GraphConfig {
            authority_host: emulator.base_url(),
            graph_host: emulator.base_url(),
            ..GraphConfig::for_cloud(
                cloud,
                emulator.tenant_id(),
                emulator.client_id(),
                SecretString::from(emulator.client_secret().to_owned()),
            )
        };
        let client = GraphClient::new(config).unwrap();

        assert!(client.get_user(&id).await.unwrap().is_some(), "{cloud}");
        assert_eq!(
            emulator.token_scopes().last().map(String::as_str),
            Some(scope)
        );
    }
    assert_eq!(token_requests(&emulator), 4);
}

#[tokio::test]
async fn a_scope_setting_overrides_the_clouds_resource() {
    let emulator = start_emulator(EmulatorConfig::synthetic(5)).await;
    let graph_by_app_id = "00000003-0000-0000-c000-000000000000/.default";
    let client = client_with(&emulator, |config| {
        config.scope = graph_by_app_id.to_owned();
    });

    assert!(client.list_users().next_page().await.unwrap().is_some());

    assert_eq!(emulator.token_scopes(), [graph_by_app_id]);
}

#[tokio::test]
async fn a_scope_naming_the_graph_host_instead_of_the_resource_is_refused_with_aadsts500011() {
    let emulator = start_emulator(EmulatorConfig::synthetic(5)).await;
    // What a scope derived from the configured host asks for: a resource Entra does not know.
    let host_scope = format!("{}.default", emulator.base_url());
    let client = client_with(&emulator, |config| config.scope = host_scope.clone());

    let error = client.get_user("anyone").await.unwrap_err();

    assert!(
        matches!(&error, Error::Auth { status: 400, error, error_codes, .. }
            if error == "invalid_resource" && error_codes == &[500_011]),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert!(graph_statuses(&emulator).is_empty());
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
