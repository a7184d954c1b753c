//! `POST /v1.0/$batch` on the wire.

use graph_emulator::Fault;
use serde_json::{Value, json};

use crate::helpers::{TestEmulator, assert_graph_error};

fn requests(urls: &[String]) -> Value {
    json!({
        "requests": urls.iter().enumerate().map(|(i, url)| json!({
            "id": i.to_string(), "method": "GET", "url": url,
        })).collect::<Vec<_>>()
    })
}

#[tokio::test]
async fn answers_come_in_shuffled_order_and_each_is_correlated_by_id() {
    let app = TestEmulator::spawn(25).await;
    let token = app.token().await;
    let users = app.emulator.users();
    let mut urls: Vec<String> = users[..19]
        .iter()
        .map(|u| format!("/users/{}?$select=id,displayName", u.id))
        .collect();
    urls.push("/users/nobody@contoso.com".to_owned());

    let (status, body) = app
        .post_json("/v1.0/$batch", &token, &requests(&urls))
        .await;

    assert_eq!(status, 200, "{body}");
    let answers = body["responses"].as_array().unwrap();
    assert_eq!(answers.len(), 20);
    let order: Vec<usize> = answers
        .iter()
        .map(|a| a["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_ne!(order, (0..20).collect::<Vec<_>>(), "answers are shuffled");
    for answer in answers {
        let i: usize = answer["id"].as_str().unwrap().parse().unwrap();
        if i == 19 {
            assert_eq!(answer["status"], 404);
            assert_graph_error(&answer["body"], "Request_ResourceNotFound");
        } else {
            assert_eq!(answer["status"], 200);
            assert_eq!(answer["body"]["id"], users[i].id.as_str());
            assert_eq!(
                answer["body"]["displayName"],
                users[i].display_name.as_str()
            );
        }
    }
    // One logged request: inner requests are not logged separately.
    assert_eq!(
        app.emulator
            .requests()
            .iter()
            .filter(|r| r.path_and_query.starts_with("/v1.0/"))
            .count(),
        1
    );
}

#[tokio::test]
async fn more_than_20_requests_answer_400() {
    let app = TestEmulator::spawn(1).await;
    let token = app.token().await;
    let urls: Vec<String> = (0..21).map(|i| format!("/users/u{i}")).collect();
    let (status, body) = app
        .post_json("/v1.0/$batch", &token, &requests(&urls))
        .await;
    assert_eq!(status, 400);
    assert_graph_error(&body, "BadRequest");
}

#[tokio::test]
async fn inner_requests_can_be_throttled_with_their_own_retry_after() {
    let app = TestEmulator::spawn(3).await;
    let token = app.token().await;
    app.emulator
        .inject(Fault::throttle("/v1.0/users/", Some(1.5), 1));
    let urls: Vec<String> = app
        .emulator
        .users()
        .iter()
        .map(|u| format!("/users/{}", u.id))
        .collect();
    let (status, body) = app
        .post_json("/v1.0/$batch", &token, &requests(&urls))
        .await;
    assert_eq!(status, 200);
    let throttled: Vec<&Value> = body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["status"] == 429)
        .collect();
    assert_eq!(throttled.len(), 1);
    assert_eq!(throttled[0]["headers"]["Retry-After"], "1.5");
    assert_graph_error(&throttled[0]["body"], "TooManyRequests");
}

#[tokio::test]
async fn a_batch_needs_a_token() {
    let app = TestEmulator::spawn(1).await;
    let response = app
        .http
        .post(app.url("/v1.0/$batch"))
        .json(&requests(&["/users/x".to_owned()]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}
