use std::collections::HashSet;
use std::time::Duration;

use graph_emulator::EmulatorConfig;
use serde_json::Value;

use crate::helpers::{TestEmulator, assert_graph_error};

const DEFAULT_PROPERTIES: [&str; 11] = [
    "businessPhones",
    "displayName",
    "givenName",
    "id",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
];

fn keys(user: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = user
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn a_request_without_a_token_answers_401_invalid_authentication_token() {
    let app = TestEmulator::spawn(3).await;
    let (status, body) = app.get("/v1.0/users", None).await;
    assert_eq!(status, 401);
    assert_graph_error(&body, "InvalidAuthenticationToken");
    let log = app.emulator.requests();
    assert_eq!(log.len(), 1);
    assert!(!log[0].has_authorization);
    assert_eq!(log[0].status, 401);
}

#[tokio::test]
async fn a_token_the_emulator_never_issued_answers_401() {
    let app = TestEmulator::spawn(3).await;
    let (status, body) = app.get("/v1.0/users", Some("forged")).await;
    assert_eq!(status, 401);
    assert_graph_error(&body, "InvalidAuthenticationToken");
}

#[tokio::test]
async fn an_expired_token_answers_401() {
    let app = TestEmulator::spawn_with(EmulatorConfig {
        token_lifetime: Duration::from_secs(1),
        ..EmulatorConfig::synthetic(3)
    })
    .await;
    let token = app.token().await;
    assert_eq!(app.get("/v1.0/users", Some(&token)).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (status, body) = app.get("/v1.0/users", Some(&token)).await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
}

#[tokio::test]
async fn a_page_size_of_1000_answers_400_with_the_graph_error_shape() {
    let app = TestEmulator::spawn(3).await;
    let token = app.token().await;
    let (status, body) = app.get("/v1.0/users?$top=1000", Some(&token)).await;
    assert_eq!(status, 400);
    assert_graph_error(&body, "Request_UnsupportedQuery");
    assert_eq!(
        body["error"]["message"],
        "Invalid page size specified: '1000'. Must be between 1 and 999 inclusive."
    );
}

#[tokio::test]
async fn page_sizes_of_zero_or_text_answer_400() {
    let app = TestEmulator::spawn(3).await;
    let token = app.token().await;
    for top in ["0", "ten", "-1"] {
        let (status, body) = app
            .get(&format!("/v1.0/users?$top={top}"), Some(&token))
            .await;
        assert_eq!(status, 400, "$top={top}");
        assert_graph_error(&body, "Request_UnsupportedQuery");
    }
}

#[tokio::test]
async fn unknown_query_options_and_properties_answer_400() {
    let app = TestEmulator::spawn(3).await;
    let token = app.token().await;
    for path in [
        "/v1.0/users?$skip=10",
        "/v1.0/users?$select=id,favouriteColour",
        "/v1.0/users?$top=5&$top=6",
    ] {
        let (status, body) = app.get(path, Some(&token)).await;
        assert_eq!(status, 400, "{path}");
        assert_graph_error(&body, "BadRequest");
    }
}

#[tokio::test]
async fn listing_without_options_returns_100_users_with_the_default_properties() {
    let app = TestEmulator::spawn(150).await;
    let token = app.token().await;
    let (status, body) = app.get("/v1.0/users", Some(&token)).await;
    assert_eq!(status, 200);
    let users = body["value"].as_array().unwrap();
    assert_eq!(users.len(), 100);
    assert_eq!(keys(&users[0]), DEFAULT_PROPERTIES);
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/v1.0/$metadata#users")
    );
    assert!(body["@odata.nextLink"].is_string());
}

#[tokio::test]
async fn select_limits_the_properties_and_always_includes_the_id() {
    let app = TestEmulator::spawn(30).await;
    let token = app.token().await;
    let (status, body) = app
        .get(
            "/v1.0/users?$select=userPrincipalName,accountEnabled,userType",
            Some(&token),
        )
        .await;
    assert_eq!(status, 200);
    let users = body["value"].as_array().unwrap();
    for user in users {
        assert_eq!(
            keys(user),
            ["accountEnabled", "id", "userPrincipalName", "userType"]
        );
    }
    let guest = &users[7];
    assert_eq!(guest["userType"], "Guest");
    assert_eq!(users[11]["accountEnabled"], false);
    assert_eq!(users[19]["userType"], "Guest");
}

#[tokio::test]
async fn an_absent_mail_is_json_null() {
    let app = TestEmulator::spawn(30).await;
    let token = app.token().await;
    let (_, body) = app.get("/v1.0/users?$select=mail", Some(&token)).await;
    assert_eq!(body["value"][19]["mail"], Value::Null);
    assert!(body["value"][19].as_object().unwrap().contains_key("mail"));
}

#[tokio::test]
async fn following_next_links_returns_every_user_once_in_a_stable_order() {
    let app = TestEmulator::spawn(250).await;
    let token = app.token().await;
    let first = "/v1.0/users?$select=id,displayName&$top=100";
    let (status, mut body) = app.get(first, Some(&token)).await;
    assert_eq!(status, 200);
    let mut ids = Vec::new();
    let mut links = Vec::new();
    loop {
        assert!(
            body["@odata.context"]
                .as_str()
                .unwrap()
                .ends_with("/v1.0/$metadata#users(displayName)"),
            "{}",
            body["@odata.context"]
        );
        for user in body["value"].as_array().unwrap() {
            ids.push(user["id"].as_str().unwrap().to_owned());
        }
        let Some(link) = body["@odata.nextLink"].as_str().map(str::to_owned) else {
            break;
        };
        let (status, next) = app.get(&link, Some(&token)).await;
        assert_eq!(status, 200);
        links.push(link);
        body = next;
    }
    let expected: Vec<String> = app.emulator.users().into_iter().map(|u| u.id).collect();
    assert_eq!(ids, expected);
    assert_eq!(links.len(), 2);
    let origin = app
        .emulator
        .base_url()
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    for link in &links {
        assert!(
            link.starts_with(&format!(
                "{origin}/v1.0/users?$select=displayName&$top=100&$skiptoken=X%27"
            )),
            "{link}"
        );
        assert!(link.ends_with("%27"), "{link}");
        assert!(!link.contains("100&$skiptoken=100") && !link.contains("skiptoken=200"));
    }
    let log: Vec<String> = app
        .emulator
        .requests()
        .into_iter()
        .filter(|r| r.path_and_query.starts_with("/v1.0"))
        .map(|r| r.path_and_query)
        .collect();
    let mut expected_log = vec![first.to_owned()];
    expected_log.extend(links.iter().map(|l| l[origin.len()..].to_owned()));
    assert_eq!(log, expected_log);
}

#[tokio::test]
async fn a_forged_skiptoken_answers_400() {
    let app = TestEmulator::spawn(3).await;
    let token = app.token().await;
    let (status, body) = app.get("/v1.0/users?$skiptoken=100", Some(&token)).await;
    assert_eq!(status, 400);
    assert_graph_error(&body, "Directory_ExpiredPageToken");
}

#[tokio::test]
async fn a_user_is_found_by_id_and_a_guest_by_a_percent_encoded_ext_upn() {
    let app = TestEmulator::spawn(10).await;
    let token = app.token().await;
    let users = app.emulator.users();
    let (status, body) = app
        .get(&format!("/v1.0/users/{}", users[0].id), Some(&token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["userPrincipalName"],
        users[0].user_principal_name.as_str()
    );
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("#users/$entity")
    );

    let (status, body) = app
        .get(
            "/v1.0/users/jane_fabrikam.com%23EXT%23@contoso.com?$select=userType,mail",
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], users[7].id.as_str());
    assert_eq!(body["userType"], "Guest");
    assert_eq!(body["mail"], "jane@fabrikam.com");
}

#[tokio::test]
async fn an_unknown_user_answers_404_request_resource_not_found() {
    let app = TestEmulator::spawn(3).await;
    let token = app.token().await;
    let (status, body) = app
        .get("/v1.0/users/nobody@contoso.com", Some(&token))
        .await;
    assert_eq!(status, 404);
    assert_graph_error(&body, "Request_ResourceNotFound");
    assert_eq!(
        body["error"]["message"],
        "Resource 'nobody@contoso.com' does not exist or one of its queried reference-property objects are not present."
    );
}

#[tokio::test]
async fn an_unknown_segment_answers_400() {
    let app = TestEmulator::spawn(3).await;
    let token = app.token().await;
    let (status, body) = app.get("/v1.0/usrs", Some(&token)).await;
    assert_eq!(status, 400);
    assert_graph_error(&body, "BadRequest");
}

#[tokio::test]
async fn every_user_id_is_unique_across_a_full_listing() {
    let app = TestEmulator::spawn(1_200).await;
    let token = app.token().await;
    let mut next = Some("/v1.0/users?$top=999&$select=id".to_owned());
    let mut ids = HashSet::new();
    while let Some(link) = next {
        let (status, body) = app.get(&link, Some(&token)).await;
        assert_eq!(status, 200);
        for user in body["value"].as_array().unwrap() {
            assert!(ids.insert(user["id"].as_str().unwrap().to_owned()));
        }
        next = body["@odata.nextLink"].as_str().map(str::to_owned);
    }
    assert_eq!(ids.len(), 1_200);
}

#[tokio::test]
async fn search_needs_eventual_consistency_and_count_comes_on_the_first_page_only() {
    let app = TestEmulator::spawn(300).await;
    let token = app.token().await;
    let path = "/v1.0/users?$search=%22displayName:j%22&$count=true&$top=5";

    let (status, body) = app.get(path, Some(&token)).await;
    assert_eq!(status, 400);
    assert_graph_error(&body, "Request_UnsupportedQuery");

    let eventual = [("ConsistencyLevel", "eventual")];
    let (status, _, first) = app.get_with(path, Some(&token), &eventual).await;
    assert_eq!(status, 200, "{first}");
    let count = first["@odata.count"].as_u64().unwrap();
    assert!(count > 5);
    let next = first["@odata.nextLink"].as_str().unwrap();
    assert!(
        next.contains("$search=") && next.contains("$count=true"),
        "{next}"
    );
    // The header is not carried over: the next page needs it again.
    assert_eq!(app.get(next, Some(&token)).await.0, 400);
    let (status, _, second) = app.get_with(next, Some(&token), &eventual).await;
    assert_eq!(status, 200);
    assert!(second.get("@odata.count").is_none());
}
