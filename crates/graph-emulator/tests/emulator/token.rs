use crate::helpers::TestEmulator;

#[tokio::test]
async fn client_credentials_with_the_right_secret_get_a_bearer_token() {
    let app = TestEmulator::spawn(1).await;
    let (status, body) = app
        .request_token(&[
            ("grant_type", "client_credentials"),
            ("client_id", app.emulator.client_id()),
            ("client_secret", app.emulator.client_secret()),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert!(!body["access_token"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn every_token_request_gets_a_different_token() {
    let app = TestEmulator::spawn(1).await;
    assert_ne!(app.token().await, app.token().await);
}

#[tokio::test]
async fn a_wrong_secret_is_refused_as_invalid_client_without_echoing_the_secret() {
    let app = TestEmulator::spawn(1).await;
    let (status, body) = app
        .request_token(&[
            ("grant_type", "client_credentials"),
            ("client_id", app.emulator.client_id()),
            ("client_secret", "wrong-secret-value"),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"], serde_json::json!([7_000_215]));
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215: ")
    );
    for field in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[field].is_string(), "{field} missing in {body}");
    }
    assert!(!body.to_string().contains("wrong-secret-value"));
}

#[tokio::test]
async fn an_unknown_tenant_is_refused_with_aadsts90002() {
    let app = TestEmulator::spawn(1).await;
    let url = app.url("/11111111-1111-4111-8111-111111111111/oauth2/v2.0/token");
    let response = app
        .http
        .post(url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", app.emulator.client_id()),
            ("client_secret", app.emulator.client_secret()),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(body["error_codes"], serde_json::json!([90_002]));
}

#[tokio::test]
async fn a_scope_without_the_default_suffix_is_refused() {
    let app = TestEmulator::spawn(1).await;
    let (status, body) = app
        .request_token(&[
            ("grant_type", "client_credentials"),
            ("client_id", app.emulator.client_id()),
            ("client_secret", app.emulator.client_secret()),
            ("scope", "https://graph.microsoft.com/User.Read.All"),
        ])
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_scope");
}

#[tokio::test]
async fn an_unknown_client_id_is_refused_as_unauthorized_client() {
    let app = TestEmulator::spawn(1).await;
    let (status, body) = app
        .request_token(&[
            ("grant_type", "client_credentials"),
            ("client_id", "00000000-0000-4000-8000-000000000000"),
            ("client_secret", app.emulator.client_secret()),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "unauthorized_client");
    assert_eq!(body["error_codes"], serde_json::json!([700_016]));
}

#[tokio::test]
async fn client_credentials_in_http_basic_are_accepted() {
    let app = TestEmulator::spawn(1).await;
    let url = app.url(&format!("/{}/oauth2/v2.0/token", app.emulator.tenant_id()));
    let response = app
        .http
        .post(url)
        .basic_auth(app.emulator.client_id(), Some(app.emulator.client_secret()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn a_scope_for_a_resource_other_than_graph_is_refused_with_aadsts500011() {
    let app = TestEmulator::spawn(1).await;
    // The emulator's own origin is where requests go, not a resource tokens are issued for.
    let own_origin = format!("{}.default", app.emulator.base_url());
    for scope in [own_origin.as_str(), "api://someone-else/.default"] {
        let (status, body) = app
            .request_token(&[
                ("grant_type", "client_credentials"),
                ("client_id", app.emulator.client_id()),
                ("client_secret", app.emulator.client_secret()),
                ("scope", scope),
            ])
            .await;
        assert_eq!(status, 400, "{scope}: {body}");
        assert_eq!(body["error"], "invalid_resource");
        assert_eq!(body["error_codes"], serde_json::json!([500_011]));
    }
}

#[tokio::test]
async fn every_clouds_graph_resource_is_accepted_and_recorded() {
    let app = TestEmulator::spawn(1).await;
    let scopes = [
        "https://graph.microsoft.com/.default",
        "https://graph.microsoft.us/.default",
        "https://dod-graph.microsoft.us/.default",
        "https://microsoftgraph.chinacloudapi.cn/.default",
        "00000003-0000-0000-c000-000000000000/.default",
    ];
    for scope in scopes {
        let (status, body) = app
            .request_token(&[
                ("grant_type", "client_credentials"),
                ("client_id", app.emulator.client_id()),
                ("client_secret", app.emulator.client_secret()),
                ("scope", scope),
            ])
            .await;
        assert_eq!(status, 200, "{scope}: {body}");
    }
    assert_eq!(app.emulator.token_scopes(), scopes);
}
