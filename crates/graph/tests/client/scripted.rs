//! Wire shapes the emulator does not produce, served by a small scripted server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use graph::{Error, GraphClient};
use tokio::net::TcpListener;
use url::Url;

use crate::helpers::config_for;

const TOKEN: &str = r#"{"token_type":"Bearer","expires_in":3599,"access_token":"scripted-token"}"#;

/// Serves fixed answers by exact path and query; `{origin}` in a body becomes the server's origin.
struct ScriptedServer {
    base_url: Url,
    hits: Arc<Mutex<Vec<String>>>,
}

struct Script {
    answers: HashMap<String, (u16, String)>,
    hits: Arc<Mutex<Vec<String>>>,
}

impl ScriptedServer {
    async fn start(script: &[(&str, u16, &str)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let mut answers: HashMap<String, (u16, String)> = script
            .iter()
            .map(|(path, status, body)| {
                (
                    (*path).to_owned(),
                    (*status, body.replace("{origin}", &origin)),
                )
            })
            .collect();
        answers.insert(
            "/tenant/oauth2/v2.0/token".to_owned(),
            (200, TOKEN.to_owned()),
        );
        let hits = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().fallback(answer).with_state(Arc::new(Script {
            answers,
            hits: hits.clone(),
        }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base_url: Url::parse(&origin).unwrap(),
            hits,
        }
    }

    /// How many requests asked for `path_and_query`.
    fn hits(&self, path_and_query: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| *h == path_and_query)
            .count()
    }

    fn client(&self) -> GraphClient {
        GraphClient::new(config_for(
            self.base_url.clone(),
            "tenant",
            "client",
            "secret",
        ))
        .unwrap()
    }
}

async fn answer(State(script): State<Arc<Script>>, uri: Uri) -> impl IntoResponse {
    let key = uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default();
    script.hits.lock().unwrap().push(key.clone());
    match script.answers.get(&key) {
        Some((status, body)) => (
            StatusCode::from_u16(*status).unwrap(),
            [
                ("content-type", "application/json"),
                ("request-id", "header-request-id"),
            ],
            body.clone(),
        ),
        None => (
            StatusCode::IM_A_TEAPOT,
            [("content-type", "text/plain"), ("request-id", "none")],
            format!("no script for {key}"),
        ),
    }
}

fn first_page_path() -> String {
    format!("/v1.0/users?$select={}&$top=999", graph::USER_SELECT)
}

#[tokio::test]
async fn a_malformed_entry_is_rejected_alone_and_empty_pages_are_followed() {
    let first = first_page_path();
    let server = ScriptedServer::start(&[
        (
            &first,
            200,
            r#"{"@odata.nextLink":"{origin}/v1.0/users?$skiptoken=X%27AB%27","value":[
                {"id":"1","userPrincipalName":"a@contoso.com","mail":null},
                {"userPrincipalName":"missing-id@contoso.com"},
                {"id":"3","userPrincipalName":"c@contoso.com","accountEnabled":"yes"},
                {"id":"4","userPrincipalName":"d@contoso.com","userType":"Member"}]}"#,
        ),
        (
            "/v1.0/users?$skiptoken=X%27AB%27",
            200,
            r#"{"@odata.nextLink":"{origin}/v1.0/users?$skiptoken=X%27CD%27","value":[]}"#,
        ),
        (
            "/v1.0/users?$skiptoken=X%27CD%27",
            200,
            r#"{"value":[{"id":"5","userPrincipalName":"e@contoso.com"}]}"#,
        ),
    ])
    .await;
    let mut pages = server.client().list_users();

    let page = pages.next_page().await.unwrap().unwrap();
    let ids: Vec<&str> = page.users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["1", "4"]);
    assert_eq!(page.rejected.len(), 2);
    assert_eq!(page.rejected[0].id, None);
    assert_eq!(page.rejected[1].id.as_deref(), Some("3"));
    assert!(
        page.rejected[1].reason.contains("boolean"),
        "{:?}",
        page.rejected[1]
    );

    let empty = pages.next_page().await.unwrap().unwrap();
    assert!(empty.users.is_empty());
    let last = pages.next_page().await.unwrap().unwrap();
    assert_eq!(last.users[0].id, "5");
    assert!(pages.next_page().await.unwrap().is_none());
}

#[tokio::test]
async fn a_page_that_is_not_a_collection_is_a_decode_error() {
    let first = first_page_path();
    let server = ScriptedServer::start(&[(&first, 200, r#"{"values":[]}"#)]).await;
    let error = server.client().list_users().next_page().await.unwrap_err();
    assert!(matches!(error, Error::Decode(_)), "{error:?}");
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn a_next_link_to_another_host_is_refused() {
    let first = first_page_path();
    let server = ScriptedServer::start(&[(
        &first,
        200,
        r#"{"@odata.nextLink":"https://evil.example/v1.0/users?$skiptoken=x","value":[]}"#,
    )])
    .await;
    let error = server.client().list_users().next_page().await.unwrap_err();
    assert!(matches!(error, Error::Decode(_)), "{error:?}");
}

#[tokio::test]
async fn a_throttled_answer_is_a_retryable_graph_error_with_code_and_request_id() {
    let first = first_page_path();
    let server = ScriptedServer::start(&[(
        &first,
        429,
        r#"{"error":{"code":"TooManyRequests","innerError":{"code":"429","date":"2020-08-18T12:51:51",
            "message":"Please retry after","request-id":"94fb3b52-452a-4535-a601-69e0a90e3aa2",
            "status":"429"},"message":"Please retry again later."}}"#,
    )])
    .await;
    let mut pages = server.client().list_users();
    let error = pages.next_page().await.unwrap_err();
    assert!(error.is_retryable());
    match error {
        Error::Graph {
            status,
            code,
            message,
            request_id,
        } => {
            assert_eq!(status, 429);
            assert_eq!(code, "TooManyRequests");
            assert_eq!(message, "Please retry again later.");
            assert_eq!(
                request_id.as_deref(),
                Some("94fb3b52-452a-4535-a601-69e0a90e3aa2")
            );
        }
        other => panic!("expected Error::Graph, got {other:?}"),
    }
    // The position is unchanged: the same page is asked for again.
    assert!(pages.next_page().await.is_err());
}

#[tokio::test]
async fn an_unreachable_host_is_a_retryable_transport_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    drop(listener);
    let client = GraphClient::new(config_for(base_url, "tenant", "client", "secret")).unwrap();
    let error = client.get_user("someone").await.unwrap_err();
    assert!(matches!(error, Error::Transport(_)), "{error:?}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn a_malformed_page_is_fetched_again_a_bounded_number_of_times_then_fails_clearly() {
    let first = first_page_path();
    let server =
        ScriptedServer::start(&[(&first, 200, r#"{"value":[{"id":"1","userPrincipalName":"#)])
            .await;
    let error = server.client().list_users().next_page().await.unwrap_err();
    assert!(
        matches!(&error, Error::Decode(message) if message.contains("after 3 attempts")),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(server.hits(&first), 3);
}

#[tokio::test]
async fn bad_entries_are_rejected_alone_and_the_rest_of_the_page_survives() {
    let first = first_page_path();
    let huge_name = "H".repeat(100 * 1024);
    let body = format!(
        r##"{{"value":[
            {{"id":"ok-1","userPrincipalName":"a@contoso.com","displayName":"{huge_name}"}},
            {{"id":"surrogate","userPrincipalName":"b@contoso.com","displayName":"broken \ud800 name"}},
            {{"userPrincipalName":"no-id@contoso.com"}},
            {{"id":"types","userPrincipalName":"c@contoso.com","accountEnabled":"yes","mail":7}},
            {{"@odata.type":"#microsoft.graph.device","id":"device-1","displayName":"Laptop"}},
            {{"id":"ok-2","userPrincipalName":"d@contoso.com","@odata.type":"#microsoft.graph.user"}}
        ]}}"##
    );
    let server = ScriptedServer::start(&[(&first, 200, &body)]).await;
    let mut pages = server.client().list_users();

    let page = pages.next_page().await.unwrap().unwrap();

    let ids: Vec<&str> = page.users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["ok-1", "ok-2"]);
    assert_eq!(
        page.users[0].display_name.as_ref().map(String::len),
        Some(100 * 1024)
    );
    let rejected: Vec<Option<&str>> = page.rejected.iter().map(|r| r.id.as_deref()).collect();
    assert_eq!(
        rejected,
        [Some("surrogate"), None, Some("types"), Some("device-1")]
    );
    assert!(
        page.rejected[0].reason.contains("JSON"),
        "{:?}",
        page.rejected[0]
    );
    assert!(
        page.rejected[3].reason.contains("@odata.type"),
        "{:?}",
        page.rejected[3]
    );
    assert!(pages.next_page().await.unwrap().is_none());
    assert_eq!(server.hits(&first), 1);
}
