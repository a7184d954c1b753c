//! The deleted items: soft-deleted users are listed until restored or purged.

use std::collections::HashSet;

use graph::{GraphClient, GraphConfig};
use graph_emulator::EmulatorConfig;

use crate::helpers::{emulator_config, graph_requests, start_emulator};

async fn deleted_ids(client: &GraphClient) -> (HashSet<String>, usize) {
    let mut pages = client.deleted_users();
    let (mut ids, mut count) = (HashSet::new(), 0);
    while let Some(page) = pages.next_page().await.unwrap() {
        assert!(page.rejected.is_empty(), "{:?}", page.rejected);
        for id in page.ids {
            assert!(ids.insert(id), "each deleted user is listed once");
        }
        count += 1;
    }
    (ids, count)
}

#[tokio::test]
async fn soft_deleted_users_are_listed_across_pages_until_restored_or_purged() {
    let emulator = start_emulator(EmulatorConfig::synthetic(40)).await;
    let client = GraphClient::new(GraphConfig {
        page_size: 5,
        ..emulator_config(&emulator)
    })
    .unwrap();
    let users = emulator.users();
    assert_eq!(deleted_ids(&client).await.0, HashSet::new());

    for user in users.iter().step_by(3) {
        emulator.soft_delete_user(&user.id).unwrap();
    }
    let expected: HashSet<String> = users.iter().step_by(3).map(|u| u.id.clone()).collect();
    let (listed, pages) = deleted_ids(&client).await;
    assert_eq!(listed, expected);
    assert!(pages > 1, "followed the nextLinks");
    let first = graph_requests(&emulator)
        .into_iter()
        .find(|r| r.path_and_query.contains("deletedItems"))
        .unwrap();
    assert_eq!(
        first.path_and_query,
        "/v1.0/directory/deletedItems/microsoft.graph.user?$select=id&$top=5"
    );

    emulator.restore_user(&users[0].id).unwrap();
    emulator.hard_delete_user(&users[3].id).unwrap();
    let (listed, _) = deleted_ids(&client).await;
    assert!(
        !listed.contains(&users[0].id),
        "a restored user leaves the deleted items"
    );
    assert!(
        !listed.contains(&users[3].id),
        "a purged user leaves the deleted items"
    );
    assert_eq!(listed.len(), expected.len() - 2);
}
