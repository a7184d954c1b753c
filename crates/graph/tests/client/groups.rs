//! Group-scoped reads: transitive members reduced to users.

use std::collections::HashSet;

use graph::{Error, GraphClient, GraphConfig, USER_SELECT};
use graph_emulator::{EmulatorConfig, GroupMember, SYNTHETIC_GROUP_IDS};

use crate::helpers::{client_for, emulator_config, graph_requests, start_emulator};

const ENGINEERING: &str = SYNTHETIC_GROUP_IDS[1];

async fn group_user_ids(client: &GraphClient, group: &str) -> (Vec<String>, usize, usize) {
    let mut pages = client.group_users(group);
    let (mut ids, mut skipped, mut count) = (Vec::new(), 0, 0);
    while let Some(page) = pages.next_page().await.unwrap() {
        assert!(page.rejected.is_empty(), "{:?}", page.rejected);
        ids.extend(page.users.into_iter().map(|u| u.id));
        skipped += page.skipped_non_users;
        count += 1;
    }
    (ids, skipped, count)
}

#[tokio::test]
async fn group_users_include_nested_group_users_once_and_drop_other_objects() {
    let emulator = start_emulator(EmulatorConfig::synthetic_with_groups(30)).await;
    let client = client_for(&emulator);

    let (ids, skipped, _) = group_user_ids(&client, ENGINEERING).await;

    // Engineering: users 0-9 and Platform (users 5-14, and Engineering again).
    let expected: Vec<String> = emulator.users()[..15]
        .iter()
        .map(|u| u.id.clone())
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "a user reached twice is listed once"
    );
    assert_eq!(unique, expected.iter().collect::<HashSet<_>>());
    // The nested group, a device, a contact and a service principal.
    assert_eq!(skipped, 4);
    let first = &graph_requests(&emulator)[0];
    assert_eq!(
        first.path_and_query,
        format!("/v1.0/groups/{ENGINEERING}/transitiveMembers?$select={USER_SELECT}&$top=999")
    );
}

#[tokio::test]
async fn group_member_pages_follow_next_links_and_member_changes_show() {
    let emulator = start_emulator(EmulatorConfig::synthetic_with_groups(30)).await;
    let client = GraphClient::new(GraphConfig {
        page_size: 4,
        ..emulator_config(&emulator)
    })
    .unwrap();
    let extra = emulator.users()[20].id.clone();
    emulator
        .add_group_member(ENGINEERING, GroupMember::User(extra.clone()))
        .unwrap();
    assert!(
        emulator
            .remove_group_member(ENGINEERING, &emulator.users()[0].id)
            .unwrap()
    );

    let (ids, skipped, pages) = group_user_ids(&client, ENGINEERING).await;

    assert_eq!(pages, 5, "19 members in pages of 4");
    assert_eq!(ids.len(), 15);
    assert!(ids.contains(&extra));
    assert!(!ids.contains(&emulator.users()[0].id));
    assert_eq!(skipped, 4);
}

#[tokio::test]
async fn get_group_reads_a_group_and_a_missing_group_is_not_found() {
    let emulator = start_emulator(EmulatorConfig::synthetic_with_groups(5)).await;
    let client = client_for(&emulator);

    let group = client.get_group(ENGINEERING).await.unwrap().unwrap();
    assert_eq!(group.id, ENGINEERING);
    assert_eq!(group.display_name.as_deref(), Some("Engineering"));

    let missing = "00000000-0000-4000-8000-0000000000ff";
    assert_eq!(client.get_group(missing).await.unwrap(), None);
    let error = client.group_users(missing).next_page().await.unwrap_err();
    assert!(
        matches!(&error, Error::NotFound { resource } if resource.contains(missing)),
        "{error:?}"
    );
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn an_empty_group_gives_one_empty_page() {
    let emulator = start_emulator(EmulatorConfig::synthetic_with_groups(5)).await;
    let (ids, skipped, pages) =
        group_user_ids(&client_for(&emulator), SYNTHETIC_GROUP_IDS[3]).await;
    assert!(ids.is_empty());
    assert_eq!((skipped, pages), (0, 1));
}
