use std::time::Duration;

use graph_emulator::{Emulator, EmulatorConfig};
use serde_json::Value;
use tokio::net::TcpListener;

pub(crate) struct TestEmulator {
    pub(crate) emulator: Emulator,
    pub(crate) http: reqwest::Client,
}

impl TestEmulator {
    pub(crate) async fn spawn(users: usize) -> Self {
        Self::spawn_with(EmulatorConfig::synthetic(users)).await
    }

    pub(crate) async fn spawn_with(config: EmulatorConfig) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let emulator = Emulator::start(config, listener).await.unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self { emulator, http }
    }

    pub(crate) fn url(&self, path_and_query: &str) -> String {
        format!(
            "{}{}",
            self.emulator.base_url().as_str().trim_end_matches('/'),
            path_and_query
        )
    }

    pub(crate) async fn request_token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let url = self.url(&format!("/{}/oauth2/v2.0/token", self.emulator.tenant_id()));
        let response = self.http.post(url).form(form).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    pub(crate) async fn token(&self) -> String {
        let (status, body) = self
            .request_token(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.emulator.client_id()),
                ("client_secret", self.emulator.client_secret()),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// GETs a path (or an absolute URL) with the given bearer token.
    pub(crate) async fn get(&self, path_or_url: &str, token: Option<&str>) -> (u16, Value) {
        let (status, _, body) = self.get_with(path_or_url, token, &[]).await;
        (status, body)
    }

    /// GETs with extra request headers; answers status, response headers and JSON body.
    pub(crate) async fn get_with(
        &self,
        path_or_url: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            self.url(path_or_url)
        };
        let mut request = self.http.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.json().await.unwrap())
    }

    /// POSTs a JSON body with the given bearer token.
    pub(crate) async fn post_json(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

/// Asserts that `body` is a Graph error with `code` and the innerError ids.
pub(crate) fn assert_graph_error(body: &Value, code: &str) {
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body}");
    assert!(error["message"].is_string(), "{body}");
    let inner = &error["innerError"];
    assert!(inner["date"].is_string(), "{body}");
    assert!(uuid_shaped(inner["request-id"].as_str().unwrap()), "{body}");
    assert!(
        uuid_shaped(inner["client-request-id"].as_str().unwrap()),
        "{body}"
    );
}

fn uuid_shaped(s: &str) -> bool {
    s.len() == 36 && s.split('-').map(str::len).eq([8, 4, 4, 4, 12])
}
