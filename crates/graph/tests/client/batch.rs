//! `$batch` reads of many users.

use std::time::Duration;

use graph::Error;
use graph_emulator::{EmulatorConfig, Fault};

use crate::helpers::{client_for, graph_requests, start_emulator};

#[tokio::test]
async fn a_batch_of_45_keys_is_sent_as_3_requests_and_answers_each_key() {
    let emulator = start_emulator(EmulatorConfig::synthetic(60)).await;
    let client = client_for(&emulator);
    let users = emulator.users();
    let mut keys: Vec<String> = users[..40].iter().map(|u| u.id.clone()).collect();
    keys.push(users[40].user_principal_name.clone());
    keys.push("jane_fabrikam.com#EXT#@contoso.com".to_owned());
    keys.push("00000000-0000-4000-8000-000000000000".to_owned());
    keys.push("nobody@contoso.com".to_owned());
    keys.push(String::new());

    let answers = client.get_users_batch(&keys).await.unwrap();

    assert_eq!(answers.len(), 45);
    for (i, (key, user)) in answers.iter().enumerate() {
        assert_eq!(key, &keys[i]);
        match i {
            0..40 => assert_eq!(user.as_ref().unwrap().id, users[i].id),
            40 => assert_eq!(user.as_ref().unwrap().id, users[40].id),
            41 => assert_eq!(user.as_ref().unwrap().user_type.as_deref(), Some("Guest")),
            _ => assert!(user.is_none(), "{key}"),
        }
    }
    let posts: Vec<_> = graph_requests(&emulator)
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 3, "44 keys that name a user: 20 + 20 + 4");
    assert!(posts.iter().all(|r| r.path_and_query == "/v1.0/$batch"));
}

#[tokio::test]
async fn inner_throttling_is_retried_after_the_longest_inner_retry_after() {
    let emulator = start_emulator(EmulatorConfig::synthetic(10)).await;
    let client = client_for(&emulator);
    let keys: Vec<String> = emulator.users().into_iter().map(|u| u.id).collect();
    emulator.inject(Fault::throttle("/v1.0/users/", Some(0.2), 2));
    emulator.inject(Fault::throttle("/v1.0/users/", Some(0.5), 1));

    let answers = client.get_users_batch(&keys).await.unwrap();

    assert!(answers.iter().all(|(_, user)| user.is_some()));
    let log = graph_requests(&emulator);
    assert_eq!(log.len(), 2, "one batch, then one for the 3 throttled");
    assert!(log[1].at >= log[0].answered_at + Duration::from_millis(500));
}

#[tokio::test]
async fn an_inner_error_other_than_throttling_fails_the_batch() {
    let emulator = start_emulator(EmulatorConfig::synthetic(5)).await;
    let client = client_for(&emulator);
    let keys: Vec<String> = emulator.users().into_iter().map(|u| u.id).collect();
    emulator.inject(Fault::status("/v1.0/users/", 403, 1));

    let error = client.get_users_batch(&keys).await.unwrap_err();

    assert!(
        matches!(&error, Error::Graph { status: 403, code, .. } if code == "Authorization_RequestDenied"),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_empty_batch_sends_nothing() {
    let emulator = start_emulator(EmulatorConfig::synthetic(5)).await;
    let answers = client_for(&emulator).get_users_batch(&[]).await.unwrap();
    assert!(answers.is_empty());
    assert!(emulator.requests().is_empty());
}

#[tokio::test]
async fn a_batch_retries_only_its_failed_inner_requests_after_the_longest_retry_after() {
    let emulator = start_emulator(EmulatorConfig::synthetic(10)).await;
    let client = client_for(&emulator);
    let keys: Vec<String> = emulator.users().into_iter().map(|u| u.id).collect();
    // Inner requests are served in the order the batch lists them: its first four fail,
    // each with a retryable status, and only some of them say how long to wait.
    let fault = |status, retry_after, times| Fault {
        path_prefix: "/v1.0/users/".to_owned(),
        status,
        retry_after,
        times,
    };
    emulator.inject(fault(504, Some(0.3), 1));
    emulator.inject(fault(503, Some(0.9), 1));
    emulator.inject(fault(429, Some(0.2), 1));
    emulator.inject(fault(500, None, 1));

    let answers = client.get_users_batch(&keys).await.unwrap();

    assert_eq!(answers.len(), 10);
    for ((key, user), wanted) in answers.iter().zip(&keys) {
        assert_eq!(key, wanted);
        assert_eq!(&user.as_ref().unwrap().id, wanted);
    }
    let batches = emulator.batches();
    assert_eq!(batches.len(), 2, "{batches:#?}");
    assert_eq!(batches[0].len(), 10);
    assert_eq!(
        batches[1],
        batches[0][..4],
        "only the failed four are sent again"
    );
    let log = graph_requests(&emulator);
    assert_eq!(log.len(), 2);
    assert!(
        log[1].at >= log[0].answered_at + Duration::from_millis(900),
        "sent again {:?} after the first answer",
        log[1].at - log[0].answered_at
    );
}

#[tokio::test]
async fn inner_failures_that_never_clear_fail_the_batch_after_the_bounded_attempts() {
    let emulator = start_emulator(EmulatorConfig::synthetic(5)).await;
    let client = client_for(&emulator);
    let keys: Vec<String> = emulator.users().into_iter().map(|u| u.id).collect();
    emulator.inject(Fault::status(format!("/v1.0/users/{}", keys[2]), 500, 100));

    let error = client.get_users_batch(&keys).await.unwrap_err();

    assert!(
        matches!(&error, Error::Graph { status: 500, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
    // The retry policy's three attempts; after the first, the failed lookup alone.
    let batches = emulator.batches();
    assert_eq!(batches.len(), 3, "{batches:#?}");
    assert_eq!(batches[1].len(), 1);
    assert_eq!(batches[1], batches[2]);
}
