//! Delta rounds against the emulator's change log.

use std::collections::HashSet;

use graph::{DeltaPage, DeltaStart, Error, GraphClient, RemovedReason, RemovedUser, USER_SELECT};
use graph_emulator::{EmulatedUser, EmulatorConfig, UserUpdate};

use crate::helpers::{client_for, graph_requests, start_emulator};

/// Runs a round to its end: all pages, and the deltaLink.
async fn round(client: &GraphClient, start: DeltaStart) -> (Vec<DeltaPage>, String) {
    let mut pages = client.users_delta(start);
    let mut all = Vec::new();
    while let Some(page) = pages.next_page().await.unwrap() {
        all.push(page);
    }
    let link = all
        .last()
        .and_then(|page| page.delta_link.clone())
        .expect("the last page carries the deltaLink");
    assert!(
        all[..all.len() - 1].iter().all(|p| p.delta_link.is_none()),
        "only the last page has a deltaLink"
    );
    (all, link)
}

fn new_user(n: u32) -> EmulatedUser {
    EmulatedUser {
        id: format!("00000000-0000-4000-8000-{n:012}"),
        user_principal_name: format!("new.user{n}@contoso.com"),
        mail: None,
        display_name: format!("New User {n}"),
        given_name: Some("New".to_owned()),
        surname: Some(format!("User {n}")),
        account_enabled: true,
        user_type: "Member".to_owned(),
    }
}

#[tokio::test]
async fn an_initial_round_returns_every_user_once_and_ends_with_a_delta_link() {
    let emulator = start_emulator(EmulatorConfig {
        delta_page_size: 40,
        ..EmulatorConfig::synthetic(250)
    })
    .await;
    let client = client_for(&emulator);

    let (pages, link) = round(&client, DeltaStart::Initial).await;

    assert_eq!(pages.len(), 7);
    let ids: Vec<String> = pages
        .iter()
        .flat_map(|p| p.users.iter().map(|u| u.id.clone()))
        .collect();
    let expected: Vec<String> = emulator.users().into_iter().map(|u| u.id).collect();
    assert_eq!(ids, expected);
    assert!(
        pages
            .iter()
            .all(|p| p.removed.is_empty() && p.rejected.is_empty())
    );
    assert!(link.contains("$deltatoken="), "{link}");
    let first = &graph_requests(&emulator)[0];
    assert_eq!(
        first.path_and_query,
        format!("/v1.0/users/delta?$select={USER_SELECT}")
    );
    // accountEnabled and userType were selected and are carried by the tokens.
    let disabled = pages
        .iter()
        .flat_map(|p| &p.users)
        .find(|u| u.account_enabled == Some(false))
        .unwrap();
    assert_eq!(disabled.user_type.as_deref(), Some("Member"));
}

#[tokio::test]
async fn a_later_round_returns_exactly_the_changes_with_their_removed_reasons() {
    let emulator = start_emulator(EmulatorConfig::synthetic(30)).await;
    let client = client_for(&emulator);
    let (_, link) = round(&client, DeltaStart::Initial).await;
    let users = emulator.users();
    let (renamed, disabled, soft, hard, restored, untouched) = (
        &users[1].id,
        &users[2].id,
        &users[3].id,
        &users[4].id,
        &users[5].id,
        &users[6].id,
    );
    emulator.create_user(new_user(1)).unwrap();
    emulator
        .update_user(
            renamed,
            UserUpdate {
                display_name: Some("Renamed Person".to_owned()),
                user_principal_name: Some("renamed.person@contoso.com".to_owned()),
                ..UserUpdate::default()
            },
        )
        .unwrap();
    emulator
        .update_user(
            disabled,
            UserUpdate {
                account_enabled: Some(false),
                ..UserUpdate::default()
            },
        )
        .unwrap();
    emulator.soft_delete_user(soft).unwrap();
    emulator.hard_delete_user(hard).unwrap();
    emulator.soft_delete_user(restored).unwrap();
    emulator.restore_user(restored).unwrap();

    let (pages, next_link) = round(&client, DeltaStart::Link(link.clone())).await;

    let users: Vec<_> = pages.iter().flat_map(|p| p.users.clone()).collect();
    let removed: Vec<RemovedUser> = pages.iter().flat_map(|p| p.removed.clone()).collect();
    let changed: HashSet<&str> = users.iter().map(|u| u.id.as_str()).collect();
    let new_id = new_user(1).id;
    assert_eq!(
        changed,
        HashSet::from([new_id.as_str(), renamed, disabled, restored])
    );
    assert!(!changed.contains(untouched.as_str()));
    let renamed_user = users.iter().find(|u| &u.id == renamed).unwrap();
    assert_eq!(renamed_user.display_name.as_deref(), Some("Renamed Person"));
    assert_eq!(
        renamed_user.user_principal_name,
        "renamed.person@contoso.com"
    );
    let disabled_user = users.iter().find(|u| &u.id == disabled).unwrap();
    assert_eq!(disabled_user.account_enabled, Some(false));
    assert_eq!(
        removed,
        [
            RemovedUser {
                id: soft.clone(),
                reason: RemovedReason::Changed
            },
            RemovedUser {
                id: hard.clone(),
                reason: RemovedReason::Deleted
            },
        ]
    );
    assert_ne!(next_link, link);

    // Nothing changed since: the next round is empty.
    let (pages, _) = round(&client, DeltaStart::Link(next_link)).await;
    assert!(
        pages
            .iter()
            .all(|p| p.users.is_empty() && p.removed.is_empty())
    );
}

#[tokio::test]
async fn an_expired_delta_token_is_a_sync_reset() {
    let emulator = start_emulator(EmulatorConfig::synthetic(10)).await;
    let client = client_for(&emulator);
    let (_, link) = round(&client, DeltaStart::Initial).await;
    emulator.expire_delta_tokens();

    let error = client
        .users_delta(DeltaStart::Link(link))
        .next_page()
        .await
        .unwrap_err();

    assert!(!error.is_retryable());
    assert!(
        matches!(&error, Error::SyncReset { status: 410, code, .. } if code == "syncStateNotFound"),
        "{error:?}"
    );
    // Not retried: the caller has to start over.
    assert_eq!(graph_requests(&emulator).last().unwrap().status, 410);
    assert_eq!(
        graph_requests(&emulator)
            .iter()
            .filter(|r| r.status == 410)
            .count(),
        1
    );
    // A full resync works.
    let (pages, _) = round(&client, DeltaStart::Initial).await;
    assert_eq!(pages.iter().map(|p| p.users.len()).sum::<usize>(), 10);
}

#[tokio::test]
async fn delta_token_latest_yields_only_a_delta_link_for_later_changes() {
    let emulator = start_emulator(EmulatorConfig::synthetic(50)).await;
    let client = client_for(&emulator);

    let (pages, link) = round(&client, DeltaStart::Latest).await;

    assert_eq!(pages.len(), 1);
    assert!(pages[0].users.is_empty() && pages[0].removed.is_empty());
    assert!(
        graph_requests(&emulator)[0]
            .path_and_query
            .ends_with("&$deltatoken=latest")
    );
    emulator.create_user(new_user(7)).unwrap();
    let (pages, _) = round(&client, DeltaStart::Link(link)).await;
    let ids: Vec<&str> = pages
        .iter()
        .flat_map(|p| p.users.iter().map(|u| u.id.as_str()))
        .collect();
    assert_eq!(ids, [new_user(7).id]);
}

#[tokio::test]
async fn replayed_entries_within_a_round_are_passed_to_the_caller() {
    let emulator = start_emulator(EmulatorConfig {
        delta_page_size: 4,
        duplicate_delta_entries: true,
        ..EmulatorConfig::synthetic(8)
    })
    .await;
    let client = client_for(&emulator);
    let (pages, _) = round(&client, DeltaStart::Initial).await;
    let ids: Vec<&str> = pages
        .iter()
        .flat_map(|p| p.users.iter().map(|u| u.id.as_str()))
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), 8);
    assert!(ids.len() > 8, "duplicates are not hidden");
}

#[tokio::test]
async fn a_stored_delta_link_to_another_host_is_refused_without_a_request() {
    let emulator = start_emulator(EmulatorConfig::synthetic(1)).await;
    let client = client_for(&emulator);
    let error = client
        .users_delta(DeltaStart::Link(
            "https://evil.example/v1.0/users/delta?$deltatoken=x".to_owned(),
        ))
        .next_page()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidConfig(_)), "{error:?}");
    assert!(emulator.requests().is_empty());
}
