//! Retry-After, backoff, bounded retries, the concurrency limit and the resource budget.

use std::time::Duration;

use futures::future::join_all;
use graph::{Error, ResourceBudget, RetryPolicy};
use graph_emulator::{EmulatorConfig, Fault};

use crate::helpers::{client_for, client_with, graph_requests, start_emulator, wait_until};

async fn list_count(client: &graph::GraphClient) -> usize {
    let mut pages = client.list_users();
    let mut count = 0;
    while let Some(page) = pages.next_page().await.unwrap() {
        count += page.users.len();
    }
    count
}

#[tokio::test]
async fn no_request_is_sent_inside_a_retry_after_window_not_even_by_concurrent_callers() {
    let emulator = start_emulator(EmulatorConfig::synthetic(30)).await;
    let client = client_for(&emulator);
    let ids: Vec<String> = emulator.users().into_iter().map(|u| u.id).take(5).collect();
    // Take the token first, so only Graph requests follow.
    client.get_user(&ids[0]).await.unwrap().unwrap();
    emulator.clear_requests();
    emulator.inject(Fault::throttle("/v1.0/users", Some(1.25), 1));

    let listing = tokio::spawn({
        let client = client.clone();
        async move { list_count(&client).await }
    });
    wait_until("the client to take the Retry-After", || {
        client.throttled_until().is_some()
    })
    .await;
    // Other callers arrive while the hold lasts.
    let others = join_all(ids.iter().cloned().map(|id| {
        let client = client.clone();
        tokio::spawn(async move { client.get_user(&id).await })
    }))
    .await;

    assert_eq!(listing.await.unwrap(), 30);
    for other in others {
        assert!(other.unwrap().unwrap().is_some());
    }
    let log = graph_requests(&emulator);
    assert_eq!(log.len(), 7, "{log:#?}");
    assert_eq!(log[0].status, 429);
    let window_end = log[0].answered_at + Duration::from_secs_f64(1.25);
    for request in &log[1..] {
        assert_eq!(request.status, 200);
        assert!(
            request.at >= window_end,
            "{} arrived {:?} before the Retry-After window ended",
            request.path_and_query,
            window_end - request.at
        );
    }
}

#[tokio::test]
async fn a_429_without_retry_after_backs_off_and_succeeds() {
    let emulator = start_emulator(EmulatorConfig::synthetic(3)).await;
    let client = client_for(&emulator);
    emulator.inject(Fault::throttle("/v1.0/users", None, 2));
    let id = emulator.users()[1].id.clone();

    let user = client.get_user(&id).await.unwrap().unwrap();

    assert_eq!(user.id, id);
    let statuses: Vec<u16> = graph_requests(&emulator).iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 429, 200]);
    assert_eq!(client.throttled_until(), None);
}

#[tokio::test]
async fn a_503_with_retry_after_is_sent_again_after_the_window() {
    let emulator = start_emulator(EmulatorConfig::synthetic(3)).await;
    let client = client_for(&emulator);
    emulator.inject(Fault {
        path_prefix: "/v1.0/users".to_owned(),
        status: 503,
        retry_after: Some(0.4),
        times: 1,
    });

    assert_eq!(list_count(&client).await, 3);

    let log = graph_requests(&emulator);
    assert_eq!(log.len(), 2);
    assert_eq!((log[0].status, log[1].status), (503, 200));
    assert!(log[1].at >= log[0].answered_at + Duration::from_millis(400));
}

#[tokio::test]
async fn a_500_is_retried_a_bounded_number_of_times_then_fails_clearly() {
    let emulator = start_emulator(EmulatorConfig::synthetic(3)).await;
    let client = client_with(&emulator, |config| {
        config.retry = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        };
    });
    emulator.inject(Fault::status("/v1.0/users", 500, 100));

    let error = client.list_users().next_page().await.unwrap_err();

    assert!(error.is_retryable());
    assert!(
        matches!(&error, Error::Graph { status: 500, code, .. } if code == "generalException"),
        "{error:?}"
    );
    assert_eq!(graph_requests(&emulator).len(), 4);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let emulator = start_emulator(EmulatorConfig::synthetic(3)).await;
    let client = client_for(&emulator);
    for status in [400, 403, 404] {
        emulator.clear_requests();
        emulator.inject(Fault::status("/v1.0/users", status, 5));
        let error = client.list_users().next_page().await.unwrap_err();
        assert!(
            matches!(error, Error::Graph { status: s, .. } if s == status),
            "{error:?}"
        );
        assert!(!error.is_retryable());
        assert_eq!(graph_requests(&emulator).len(), 1, "status {status}");
        emulator.clear_faults();
    }
}

#[tokio::test]
async fn a_timed_out_request_is_sent_again() {
    let emulator = start_emulator(EmulatorConfig::synthetic(3)).await;
    let client = client_with(&emulator, |config| {
        config.request_timeout = Duration::from_millis(300);
    });
    let id = emulator.users()[0].id.clone();
    // Take the token first: the token request must not be the slow one.
    client.get_user(&id).await.unwrap();
    emulator.set_latency(Duration::from_secs(2));
    let read = tokio::spawn({
        let client = client.clone();
        let id = id.clone();
        async move { client.get_user(&id).await }
    });
    wait_until("the slow request to arrive", || {
        emulator.max_in_flight() >= 1
    })
    .await;
    emulator.set_latency(Duration::ZERO);

    assert!(read.await.unwrap().unwrap().is_some());
}

#[tokio::test]
async fn the_concurrency_limit_is_never_exceeded() {
    let emulator = start_emulator(EmulatorConfig::synthetic(20)).await;
    let client = client_with(&emulator, |config| config.max_concurrency = 3);
    emulator.set_latency(Duration::from_millis(100));

    let reads = join_all(emulator.users().into_iter().map(|user| {
        let client = client.clone();
        tokio::spawn(async move { client.get_user(&user.id).await })
    }))
    .await;

    for read in reads {
        assert!(read.unwrap().unwrap().is_some());
    }
    assert_eq!(emulator.max_in_flight(), 3);
}

#[tokio::test]
async fn the_resource_budget_keeps_spend_within_every_window() {
    let emulator = start_emulator(EmulatorConfig::synthetic(30)).await;
    let window = Duration::from_secs(1);
    let client = client_with(&emulator, |config| {
        config.resource_budget = ResourceBudget { units: 10, window };
    });
    // GET /users/{id}?$select=... costs 2 - 1 = 1 resource unit.
    let reads = join_all(emulator.users().into_iter().map(|user| {
        let client = client.clone();
        tokio::spawn(async move { client.get_user(&user.id).await })
    }))
    .await;
    for read in reads {
        assert!(read.unwrap().unwrap().is_some());
    }

    let log = graph_requests(&emulator);
    assert_eq!(log.len(), 30);
    // Arrival times trail send times by a little (more on a loaded machine); allow that much.
    let slack = Duration::from_millis(150);
    for request in &log {
        let in_window = log
            .iter()
            .filter(|other| other.at >= request.at && other.at < request.at + window - slack)
            .count();
        assert!(in_window <= 10, "{in_window} requests within one window");
    }
    let first = log.iter().map(|r| r.at).min().unwrap();
    let last = log.iter().map(|r| r.at).max().unwrap();
    assert!(last - first >= 2 * window - slack, "{:?}", last - first);
}

#[tokio::test]
async fn a_504_with_retry_after_is_retried_only_after_the_wait_by_every_caller() {
    let emulator = start_emulator(EmulatorConfig::synthetic(10)).await;
    let client = client_for(&emulator);
    let ids: Vec<String> = emulator.users().into_iter().map(|u| u.id).take(3).collect();
    // Take the token first, so only Graph requests follow.
    client.get_user(&ids[0]).await.unwrap().unwrap();
    emulator.clear_requests();
    // A gateway timeout that asks for a pause; the backoff alone would be 10 ms at most.
    emulator.inject(Fault {
        path_prefix: "/v1.0/users".to_owned(),
        status: 504,
        retry_after: Some(1.5),
        times: 1,
    });

    let listing = tokio::spawn({
        let client = client.clone();
        async move { list_count(&client).await }
    });
    wait_until("the client to take the Retry-After of the 504", || {
        client.throttled_until().is_some()
    })
    .await;
    let others = join_all(ids.iter().cloned().map(|id| {
        let client = client.clone();
        tokio::spawn(async move { client.get_user(&id).await })
    }))
    .await;

    assert_eq!(listing.await.unwrap(), 10);
    for other in others {
        assert!(other.unwrap().unwrap().is_some());
    }
    // The 504, the listing again, and the three lookups that came during the wait.
    let log = graph_requests(&emulator);
    assert_eq!(log.len(), 5, "{log:#?}");
    assert_eq!(log[0].status, 504);
    let window_end = log[0].answered_at + Duration::from_secs_f64(1.5);
    for request in &log[1..] {
        assert_eq!(request.status, 200);
        assert!(
            request.at >= window_end,
            "{} arrived {:?} before the 504's Retry-After ended",
            request.path_and_query,
            window_end - request.at
        );
    }
}

#[tokio::test]
async fn a_client_error_with_retry_after_is_not_retried_but_holds_the_next_request() {
    let emulator = start_emulator(EmulatorConfig::synthetic(3)).await;
    let client = client_for(&emulator);
    let id = emulator.users()[0].id.clone();
    emulator.inject(Fault {
        path_prefix: "/v1.0/users".to_owned(),
        status: 400,
        retry_after: Some(0.6),
        times: 1,
    });

    let error = client.get_user(&id).await.unwrap_err();
    assert!(
        matches!(error, Error::Graph { status: 400, .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert!(client.get_user(&id).await.unwrap().is_some());

    let log = graph_requests(&emulator);
    assert_eq!(log.len(), 2, "{log:#?}");
    assert!(log[1].at >= log[0].answered_at + Duration::from_millis(600));
}
