use std::collections::HashSet;

use graph::{GraphClient, GraphConfig, GraphUser, ListUsersOptions, USER_SELECT};
use graph_emulator::EmulatorConfig;
use serde_json::Value;

use crate::helpers::{client_for, emulator_config, graph_requests, start_emulator};

async fn list_all(client: &GraphClient) -> (Vec<GraphUser>, usize) {
    let mut pages = client.list_users();
    let mut users = Vec::new();
    let mut count = 0;
    while let Some(page) = pages.next_page().await.unwrap() {
        assert!(page.rejected.is_empty(), "{:?}", page.rejected);
        users.extend(page.users);
        count += 1;
    }
    (users, count)
}

#[tokio::test]
async fn listing_2500_users_returns_each_exactly_once_following_next_links_verbatim() {
    let emulator = start_emulator(EmulatorConfig::synthetic(2_500)).await;
    let client = client_for(&emulator);

    let (users, pages) = list_all(&client).await;

    assert_eq!(pages, 3);
    let ids: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), 2_500);
    let expected: Vec<String> = emulator.users().into_iter().map(|u| u.id).collect();
    assert_eq!(ids, expected);

    let graph_requests: Vec<String> = emulator
        .requests()
        .into_iter()
        .filter(|r| r.path_and_query.starts_with("/v1.0/"))
        .map(|r| r.path_and_query)
        .collect();
    assert_eq!(graph_requests.len(), 3);
    assert_eq!(
        graph_requests[0],
        format!("/v1.0/users?$select={USER_SELECT}&$top=999")
    );
    // Replay each request and check the next one was exactly its @odata.nextLink.
    let origin = emulator
        .base_url()
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!(
            "{origin}/{}/oauth2/v2.0/token",
            emulator.tenant_id()
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", emulator.client_id()),
            ("client_secret", emulator.client_secret()),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap();
    for pair in graph_requests.windows(2) {
        let page: Value = http
            .get(format!("{origin}{}", pair[0]))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let next_link = page["@odata.nextLink"].as_str().unwrap();
        assert_eq!(next_link, format!("{origin}{}", pair[1]));
    }
}

#[tokio::test]
async fn guests_disabled_users_and_non_ascii_names_come_through_intact() {
    let emulator = start_emulator(EmulatorConfig::synthetic(100)).await;
    let (users, _) = list_all(&client_for(&emulator)).await;
    let jane = users
        .iter()
        .find(|u| u.user_principal_name == "jane_fabrikam.com#EXT#@contoso.com")
        .unwrap();
    assert_eq!(jane.user_type.as_deref(), Some("Guest"));
    assert_eq!(jane.mail.as_deref(), Some("jane@fabrikam.com"));
    assert_eq!(jane.account_enabled, Some(true));
    assert!(users.iter().any(|u| u.account_enabled == Some(false)));
    assert!(
        users
            .iter()
            .any(|u| u.user_type.as_deref() == Some("Guest") && u.mail.is_none())
    );
    let zoe = users
        .iter()
        .find(|u| u.display_name.as_deref() == Some("Zoë Ångström"))
        .unwrap();
    assert_eq!(zoe.given_name.as_deref(), Some("Zoë"));
    assert_eq!(zoe.surname.as_deref(), Some("Ångström"));
}

#[tokio::test]
async fn a_small_page_size_is_sent_as_top_and_pages_through_the_tenant() {
    let emulator = start_emulator(EmulatorConfig::synthetic(20)).await;
    let client = GraphClient::new(GraphConfig {
        page_size: 7,
        ..emulator_config(&emulator)
    })
    .unwrap();
    let (users, pages) = list_all(&client).await;
    assert_eq!(users.len(), 20);
    assert_eq!(pages, 3);
    let first = &emulator.requests()[1];
    assert!(first.path_and_query.ends_with("&$top=7"), "{first:?}");
}

#[tokio::test]
async fn an_empty_tenant_gives_one_empty_page() {
    let emulator = start_emulator(EmulatorConfig::synthetic(0)).await;
    let mut pages = client_for(&emulator).list_users();
    let page = pages.next_page().await.unwrap().unwrap();
    assert!(page.users.is_empty() && page.rejected.is_empty());
    assert!(pages.next_page().await.unwrap().is_none());
    assert!(pages.next_page().await.unwrap().is_none());
}

#[tokio::test]
async fn consistency_level_is_sent_again_on_every_page_including_next_links() {
    let emulator = start_emulator(EmulatorConfig::synthetic(400)).await;
    let client = GraphClient::new(GraphConfig {
        page_size: 10,
        ..emulator_config(&emulator)
    })
    .unwrap();
    let expected: Vec<String> = emulator
        .users()
        .into_iter()
        .filter(|u| {
            u.display_name
                .to_lowercase()
                .split(|c: char| !c.is_alphanumeric())
                .any(|w| w.starts_with('j'))
        })
        .map(|u| u.id)
        .collect();
    assert!(expected.len() > 20, "the search spans several pages");

    let mut pages = client
        .list_users_with(&ListUsersOptions {
            search: Some("displayName:j".to_owned()),
            count: true,
            ..ListUsersOptions::default()
        })
        .unwrap();
    let mut ids = Vec::new();
    while let Some(page) = pages.next_page().await.unwrap() {
        ids.extend(page.users.into_iter().map(|u| u.id));
    }

    assert_eq!(ids, expected);
    assert_eq!(pages.count(), Some(expected.len() as u64));
    let requests = graph_requests(&emulator);
    assert!(requests.len() >= 3, "{requests:#?}");
    assert!(
        requests[0]
            .path_and_query
            .contains("$search=%22displayName:j%22")
    );
    assert!(requests[0].path_and_query.ends_with("&$count=true"));
    for request in &requests {
        assert_eq!(request.consistency_level(), Some("eventual"), "{request:?}");
        assert_eq!(request.status, 200);
    }
}

#[tokio::test]
async fn a_plain_listing_sends_no_consistency_level() {
    let emulator = start_emulator(EmulatorConfig::synthetic(5)).await;
    let (users, _) = list_all(&client_for(&emulator)).await;
    assert_eq!(users.len(), 5);
    assert!(
        graph_requests(&emulator)
            .iter()
            .all(|r| r.consistency_level().is_none())
    );
}
