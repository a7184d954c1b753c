//! `/v1.0/users/delta` on the wire.

use graph_emulator::{EmulatorConfig, UserUpdate};
use serde_json::Value;

use crate::helpers::{TestEmulator, assert_graph_error};

/// Follows a round from `start`; answers the entries and the deltaLink.
async fn round(app: &TestEmulator, token: &str, start: &str) -> (Vec<Value>, String) {
    let mut entries = Vec::new();
    let mut next = start.to_owned();
    loop {
        let (status, body) = app.get(&next, Some(token)).await;
        assert_eq!(status, 200, "{body}");
        entries.extend(body["value"].as_array().unwrap().iter().cloned());
        if let Some(link) = body["@odata.nextLink"].as_str() {
            assert!(body.get("@odata.deltaLink").is_none());
            next = link.to_owned();
        } else {
            return (
                entries,
                body["@odata.deltaLink"].as_str().unwrap().to_owned(),
            );
        }
    }
}

#[tokio::test]
async fn a_round_pages_by_skiptoken_and_ends_with_a_deltatoken() {
    let app = TestEmulator::spawn_with(EmulatorConfig {
        delta_page_size: 7,
        ..EmulatorConfig::synthetic(20)
    })
    .await;
    let token = app.token().await;
    let (status, first) = app
        .get("/v1.0/users/delta?$select=displayName", Some(&token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(first["value"].as_array().unwrap().len(), 7);
    assert!(
        first["@odata.nextLink"]
            .as_str()
            .unwrap()
            .contains("/v1.0/users/delta?$skiptoken=")
    );
    let user = &first["value"][0];
    let mut keys: Vec<&str> = user
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["displayName", "id"]);

    let (entries, link) = round(&app, &token, "/v1.0/users/delta?$select=displayName").await;
    assert_eq!(entries.len(), 20);
    assert!(link.contains("/v1.0/users/delta?$deltatoken="));
}

#[tokio::test]
async fn changes_come_back_once_each_with_removed_annotations() {
    let app = TestEmulator::spawn(10).await;
    let token = app.token().await;
    let (_, link) = round(&app, &token, "/v1.0/users/delta").await;
    let users = app.emulator.users();
    app.emulator
        .update_user(
            &users[0].id,
            UserUpdate {
                display_name: Some("First".to_owned()),
                ..UserUpdate::default()
            },
        )
        .unwrap();
    app.emulator
        .update_user(
            &users[0].id,
            UserUpdate {
                display_name: Some("Second".to_owned()),
                ..UserUpdate::default()
            },
        )
        .unwrap();
    app.emulator.soft_delete_user(&users[1].id).unwrap();
    app.emulator.hard_delete_user(&users[2].id).unwrap();

    let (entries, _) = round(&app, &token, &link).await;

    assert_eq!(entries.len(), 3, "{entries:#?}");
    assert_eq!(entries[0]["displayName"], "Second");
    assert_eq!(entries[1]["id"], users[1].id.as_str());
    assert_eq!(entries[1]["@removed"]["reason"], "changed");
    assert_eq!(entries[2]["@removed"]["reason"], "deleted");
}

#[tokio::test]
async fn expired_tokens_answer_410_with_a_location_to_start_over() {
    let app = TestEmulator::spawn(3).await;
    let token = app.token().await;
    let (_, link) = round(&app, &token, "/v1.0/users/delta?$select=id,displayName").await;
    app.emulator.expire_delta_tokens();

    let (status, headers, body) = app.get_with(&link, Some(&token), &[]).await;

    assert_eq!(status, 410);
    assert_graph_error(&body, "syncStateNotFound");
    let location = headers["location"].to_str().unwrap();
    assert!(
        location.ends_with("/v1.0/users/delta?$select=displayName&$deltatoken="),
        "{location}"
    );
}

#[tokio::test]
async fn deltatoken_latest_answers_only_a_delta_link() {
    let app = TestEmulator::spawn(50).await;
    let token = app.token().await;
    let (status, body) = app
        .get("/v1.0/users/delta?$deltaToken=latest", Some(&token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["value"].as_array().unwrap().len(), 0);
    assert!(body.get("@odata.nextLink").is_none());
    assert!(body["@odata.deltaLink"].as_str().is_some());
}

#[tokio::test]
async fn forged_tokens_and_top_answer_400() {
    let app = TestEmulator::spawn(3).await;
    let token = app.token().await;
    for path in [
        "/v1.0/users/delta?$deltatoken=forged",
        "/v1.0/users/delta?$skiptoken=forged",
        "/v1.0/users/delta?$top=5",
    ] {
        assert_eq!(app.get(path, Some(&token)).await.0, 400, "{path}");
    }
}

#[tokio::test]
async fn duplicate_entries_can_be_switched_on() {
    let app = TestEmulator::spawn_with(EmulatorConfig {
        duplicate_delta_entries: true,
        ..EmulatorConfig::synthetic(3)
    })
    .await;
    let token = app.token().await;
    let (entries, _) = round(&app, &token, "/v1.0/users/delta").await;
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[0], entries[3]);
}
