//! The SCIM endpoint as Entra's provisioning service uses it (issue 18): a real
//! directory-sync with `scim.enabled`, a real user-registry, requests over HTTP.

use std::time::Duration;

use directory_sync::store;
use directory_sync::{App, Config};
use proto::directory::v1 as pb;
use proto::directory::v1::directory_service_client::DirectoryServiceClient;
use proto::registry::v1 as registry_pb;
use proto::registry::v1::registry_service_client::RegistryServiceClient;
use serde_json::{Value, json};
use service_runtime::storage::Database;
use test_support::TestDatabase;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::Channel;

use crate::helpers::{member_import, serve_registry};

const TENANT: &str = "8b5a3c1e-2f4d-4c6b-9a7e-0d1f2e3c4b5a";
const SECRET: &str = "test-secret-0123456789";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

struct Pushed {
    base: String,
    http: reqwest::Client,
    db: Database,
    directory: DirectoryServiceClient<Channel>,
    registry: RegistryServiceClient<Channel>,
    _registry_db: TestDatabase,
    registry_addr: std::net::SocketAddr,
    registry_stop: std::sync::Mutex<
        Option<(
            CancellationToken,
            tokio::task::JoinHandle<anyhow::Result<()>>,
        )>,
    >,
    _guards: Vec<DropGuard>,
}

impl Pushed {
    async fn spawn(db: &TestDatabase) -> Self {
        Self::spawn_with(db, |_| {}).await
    }

    async fn spawn_with(db: &TestDatabase, adjust: impl FnOnce(&mut Config)) -> Self {
        let registry_db = TestDatabase::sqlite().await;
        let registry = serve_registry(&registry_db, "127.0.0.1:0".parse().unwrap()).await;
        let registry_addr = registry.addr;
        let registry_url = format!("http://{registry_addr}");
        let (registry_shutdown, registry_task) = (registry.stop, registry.task);

        let database = Database::connect(&db.url, 5).await.unwrap();
        database.migrate(&store::MIGRATIONS).await.unwrap();
        // No Graph behind this tenant: its credentials are never used.
        let directory_config = directory_sync::config::DirectoryConfig::single_host(
            "http://127.0.0.1:9",
            TENANT,
            "unused",
            "unused",
        );
        let mut config = Config::local("unused", &registry_url, directory_config);
        config.scim.enabled = true;
        config.scim.listen_addr = "127.0.0.1:0".parse().unwrap();
        config.scim.round_interval_secs = 1;
        config.scim.max_body_bytes = 64 * 1024;
        // One registry user: any disable is more than the default share (a test of its own).
        config.provisioning.max_disable_share = 1.0;
        adjust(&mut config);
        let graph = graph::GraphClient::new(config.directory.graph_config().unwrap()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = App::build(&config, database.clone(), listener, graph)
            .await
            .unwrap();
        let addr = app.local_addr();
        let scim_addr = app.scim_addr().expect("the SCIM endpoint listens");
        let shutdown = CancellationToken::new();
        tokio::spawn(app.run(shutdown.clone()));

        let mut conn = database.pool().acquire().await.unwrap();
        let token = store::scim::TokenRow {
            token_id: "t1".into(),
            name: "entra".into(),
            created_ms: 1,
            created_by: "test".into(),
            last_used_ms: None,
            revoked_ms: None,
        };
        store::scim::create_token(
            &mut conn,
            TENANT,
            &token,
            &directory_sync::scim::token_digest(SECRET),
        )
        .await
        .unwrap();
        drop(conn);
        Self {
            base: format!("http://{scim_addr}/scim/v2"),
            http: reqwest::Client::new(),
            db: database,
            directory: DirectoryServiceClient::connect(format!("http://{addr}"))
                .await
                .unwrap(),
            registry: RegistryServiceClient::connect(registry_url).await.unwrap(),
            _registry_db: registry_db,
            registry_addr,
            registry_stop: std::sync::Mutex::new(Some((registry_shutdown, registry_task))),
            _guards: vec![shutdown.drop_guard()],
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(SECRET);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/scim+json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap()
            },
        )
    }

    /// Stops the registry (it answers nothing until [`Pushed::start_registry`]).
    async fn stop_registry(&self) {
        let (stop, task) = self.registry_stop.lock().unwrap().take().expect("running");
        stop.cancel();
        task.await.unwrap().unwrap();
    }

    /// Starts the registry again, on its address and database.
    async fn start_registry(&self) {
        let registry = serve_registry(&self._registry_db, self.registry_addr).await;
        let (stop, task) = (registry.stop, registry.task);
        *self.registry_stop.lock().unwrap() = Some((stop, task));
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(self.db.pool())
            .await
            .unwrap()
    }

    async fn registry_user(&self, object_id: &str) -> registry_pb::RegistryUser {
        let request = registry_pb::GetUserRequest {
            key: Some(registry_pb::get_user_request::Key::Object(
                registry_pb::ObjectKey {
                    tenant_id: TENANT.into(),
                    object_id: object_id.into(),
                },
            )),
        };
        self.registry
            .clone()
            .get_user(request)
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap()
    }

    /// Waits (the SCIM round closes every second) until the registry user satisfies `done`.
    async fn registry_user_becomes(
        &self,
        object_id: &str,
        done: impl Fn(&registry_pb::RegistryUser) -> bool,
    ) -> registry_pb::RegistryUser {
        for _ in 0..100 {
            let user = self.registry_user(object_id).await;
            if done(&user) {
                return user;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the registry user {object_id} did not change: {:?}",
            self.registry_user(object_id).await
        );
    }
}

/// Imports these (object id, user name) into the registry, as a select import would.
async fn import(pushed: &Pushed, users: &[(&str, &str)]) {
    let users: Vec<_> = users
        .iter()
        .map(|(object_id, name)| (*object_id, *name, *name))
        .collect();
    let request = member_import("scim-test", TENANT, &users);
    pushed.registry.clone().import_users(request).await.unwrap();
}

fn entra_user(object_id: &str, user_name: &str) -> Value {
    json!({
        "schemas": [USER, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "externalId": object_id,
        "userName": user_name,
        "active": true,
        "emails": [{"primary": true, "type": "work", "value": user_name}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Ann Lee", "familyName": "Lee", "givenName": "Ann"},
        "roles": []
    })
}

fn patch(ops: Value) -> Value {
    json!({"schemas": [PATCH], "Operations": ops})
}

test_support::on_both_backends! {
    async fn an_entra_provisioning_cycle_changes_the_mirror_and_the_registry_as_a_round_would(db) {
        let pushed = Pushed::spawn(&db).await;
        let ann = "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef";
        let bob = "1b32a1a3-9e3b-4f9f-8a09-8474d5bfe5f0";

        // Entra probes by the matching attribute before it creates.
        let (status, probe) = pushed.get("/Users?filter=userName+eq+%22ann%40contoso.com%22").await;
        assert_eq!((status, probe["totalResults"].clone()), (200, json!(0)));
        let (status, created) = pushed.send(reqwest::Method::POST, "/Users", Some(entra_user(ann, "ann@contoso.com"))).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["id"], json!(ann), "Entra's objectId is the id");
        assert_eq!(created["meta"]["resourceType"], json!("User"));
        let (_, created_bob) = pushed.send(reqwest::Method::POST, "/Users", Some(entra_user(bob, "bob@contoso.com"))).await;
        assert_eq!(created_bob["id"], json!(bob));
        let (status, second) = pushed.get("/Users?startIndex=2&count=1").await;
        assert_eq!((status, second["totalResults"].clone(), second["startIndex"].clone()), (200, json!(2), json!(2)));
        assert_eq!(second["Resources"].as_array().map(Vec::len), Some(1));
        assert_eq!(second["Resources"][0]["id"], json!(bob), "in id order, the second");
        let (status, found) = pushed.get(&format!("/Users?filter=externalId+eq+%22{ann}%22")).await;
        assert_eq!((status, found["totalResults"].clone(), found["Resources"][0]["userName"].clone()), (200, json!(1), json!("ann@contoso.com")));

        // Ann is imported (the administrator's select import).
        let request = registry_pb::ImportUsersRequest {
            import_id: "scim-test".into(),
            company: "DAT".into(),
            users: vec![registry_pb::NewUser {
                tenant_id: TENANT.into(),
                object_id: ann.into(),
                network_alias: "ann@contoso.com".into(),
                network_domain: "https://sts.windows.net/".into(),
                email: "ann@contoso.com".into(),
                name: "Ann Lee".into(),
                enabled: true,
                account_type: registry_pb::AccountType::Member.into(),
            }],
            dry_run: false,
            private: false,
        };
        pushed.registry.clone().import_users(request).await.unwrap();

        // A rename reaches the registry at the round's close, as a delta round's would.
        let rename = patch(json!([{"op": "Replace", "path": "displayName", "value": "Ann Lee-Smith"}, {"op": "Replace", "path": "name.familyName", "value": "Lee-Smith"}]));
        let (status, renamed) = pushed.send(reqwest::Method::PATCH, &format!("/Users/{ann}"), Some(rename)).await;
        assert_eq!((status, renamed["displayName"].clone()), (200, json!("Ann Lee-Smith")));
        pushed.registry_user_becomes(ann, |u| u.name == "Ann Lee-Smith").await;

        // Entra's soft delete: active as the string "False".
        let disable = patch(json!([{"op": "Replace", "path": "active", "value": "False"}]));
        let (status, disabled) = pushed.send(reqwest::Method::PATCH, &format!("/Users/{ann}"), Some(disable)).await;
        assert_eq!((status, disabled["active"].clone()), (200, json!(false)));
        pushed.registry_user_becomes(ann, |u| !u.enabled).await;

        // A group with both, then members removed in each shape Entra sends.
        let group = json!({"schemas": [GROUP], "externalId": "5d1e7c9a-0b1f-4c2d-8e3f-a4b5c6d7e8f9", "displayName": "Sales", "members": [{"value": ann}]});
        let (status, created_group) = pushed.send(reqwest::Method::POST, "/Groups", Some(group)).await;
        assert_eq!(status, 201, "{created_group}");
        let group_id = created_group["id"].as_str().unwrap().to_owned();
        let add = patch(json!([{"op": "Add", "path": "members", "value": [{"value": bob}]}]));
        assert_eq!(pushed.send(reqwest::Method::PATCH, &format!("/Groups/{group_id}"), Some(add)).await.0, 204);
        let (_, read_group) = pushed.get(&format!("/Groups/{group_id}")).await;
        let mut members: Vec<&str> = read_group["members"].as_array().unwrap().iter().map(|m| m["value"].as_str().unwrap()).collect();
        members.sort_unstable();
        assert_eq!(members, vec![ann, bob]);
        let remove = patch(json!([{"op": "Remove", "path": "members", "value": [{"value": ann}]}, {"op": "remove", "path": format!("members[value eq \"{bob}\"]")}]));
        assert_eq!(pushed.send(reqwest::Method::PATCH, &format!("/Groups/{group_id}"), Some(remove)).await.0, 204);
        assert_eq!(pushed.count("SELECT COUNT(*) FROM directory_group_members").await, 0);

        // Hard delete: the mirror's user is gone for good and the registry marks it.
        let (status, _) = pushed.send(reqwest::Method::DELETE, &format!("/Users/{ann}"), None).await;
        assert_eq!(status, 204);
        assert_eq!(pushed.get(&format!("/Users/{ann}")).await.0, 404);
        let deleted: String = sqlx::query_scalar("SELECT deletion_state FROM directory_users WHERE object_id = $1")
            .bind(ann)
            .fetch_one(pushed.db.pool())
            .await
            .unwrap();
        assert_eq!(deleted, "hard_deleted");
        pushed.registry_user_becomes(ann, |u| u.deleted_in_directory_at_ms > 0).await;

        // Bob, never imported, is listed for import like any mirrored user.
        let listed = pushed.directory.clone().list_users(pb::ListUsersRequest { page_size: 10, ..Default::default() }).await.unwrap().into_inner();
        let names: Vec<&str> = listed.users.iter().map(|u| u.user_principal_name.as_str()).collect();
        assert_eq!(names, vec!["bob@contoso.com"]);
        assert_eq!(listed.users[0].source(), pb::UserSource::Scim, "the mirror says where the user came from");
        // And the changes were provisioned as SCIM runs.
        assert!(pushed.count("SELECT COUNT(*) FROM sync_runs WHERE mode = 'scim' AND status = 'succeeded'").await >= 1);
    }

    async fn bad_requests_are_answered_with_scim_errors_and_write_nothing(db) {
        let pushed = Pushed::spawn(&db).await;
        let ann = "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef";
        assert_eq!(pushed.send(reqwest::Method::POST, "/Users", Some(entra_user(ann, "ann@contoso.com"))).await.0, 201);

        let raw = |body: &'static str| pushed.http.post(format!("{}/Users", pushed.base)).bearer_auth(SECRET).body(body).send();
        let malformed = raw("{\"schemas\": [").await.unwrap();
        assert_eq!(malformed.status().as_u16(), 400);
        let body: Value = malformed.json().await.unwrap();
        assert_eq!((body["scimType"].clone(), body["status"].clone()), (json!("invalidSyntax"), json!("400")));

        let mut unknown = entra_user("2c43b2b4-af4c-4a0a-9b1a-9585e6c0f6a1", "cy@contoso.com");
        unknown["schemas"] = json!([USER, "urn:example:evil"]);
        let (status, body) = pushed.send(reqwest::Method::POST, "/Users", Some(unknown)).await;
        assert_eq!((status, body["scimType"].clone()), (400, json!("invalidValue")));

        let (status, body) = pushed.get("/Users?filter=userName+eq+%22x%22+or+1+eq+1").await;
        assert_eq!((status, body["scimType"].clone()), (400, json!("invalidFilter")));

        let big = format!("{{\"schemas\": [\"{USER}\"], \"userName\": \"big@contoso.com\", \"title\": \"{}\"}}", "x".repeat(10 * 1024 * 1024));
        // The endpoint answers 413 after reading its limit and closes the connection: a client
        // still sending may see the reset instead of the answer.
        match pushed.http.post(format!("{}/Users", pushed.base)).bearer_auth(SECRET).body(big).send().await {
            Ok(response) => {
                assert_eq!(response.status().as_u16(), 413);
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["status"], json!("413"));
            }
            Err(error) => assert!(error.is_request() || error.is_body(), "{error:?}"),
        }

        let (status, body) = pushed.send(reqwest::Method::POST, "/Users", Some(entra_user("3d54c3c5-b05d-4b1b-8c2b-a696f7d1a7b2", "ANN@contoso.com"))).await;
        assert_eq!((status, body["scimType"].clone()), (409, json!("uniqueness")), "userName is unique without case");

        for token in ["wrong", ""] {
            let response = pushed.http.get(format!("{}/Users", pushed.base)).bearer_auth(token).send().await.unwrap();
            assert_eq!(response.status().as_u16(), 401, "token {token:?}");
        }
        let revoked = pushed.http.get(format!("{}/Users", pushed.base)).send().await.unwrap();
        assert_eq!(revoked.status().as_u16(), 401, "no token");

        assert_eq!(pushed.count("SELECT COUNT(*) FROM scim_resources").await, 1);
        assert_eq!(pushed.count("SELECT COUNT(*) FROM directory_users").await, 1);
    }

    async fn a_pushed_tenant_starts_no_graph_round(db) {
        let pushed = Pushed::spawn(&db).await;
        let request = pb::SyncNowRequest { mode: pb::SyncMode::Delta.into(), dry_run: false };
        let status = pushed.directory.clone().sync_now(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    }
}

/// The `scim2` command of scim2-cli (with scim2-tester), from `USERIMPORT_SCIM2_CLI` or the
/// PATH; `.ci/run` installs it. Outside CI a machine without it skips the check.
fn scim2_cli() -> Option<String> {
    if let Ok(path) = std::env::var("USERIMPORT_SCIM2_CLI") {
        return Some(path);
    }
    let on_path = std::process::Command::new("scim2")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return Some("scim2".into());
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI runs the SCIM compliance check: install scim2-cli and scim2-tester (.ci/run does)"
    );
    eprintln!("skipped: no scim2 (pip install scim2-cli scim2-tester)");
    None
}

test_support::on_both_backends! {
    async fn scim2_tester_finds_every_check_of_the_advertised_features_passing(db) {
        let Some(scim2) = scim2_cli() else { return };
        let pushed = Pushed::spawn(&db).await;
        let base = pushed.base.clone();
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new(scim2)
                .args(["--url", &base, "test", "--verbose"])
                .env("SCIM_CLI_HEADERS", format!("Authorization: Bearer {SECRET}"))
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let report = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        // One line per check: its status, then its title. The CLI's exit status also fails
        // on SKIPPED, which the one check of a feature this endpoint does not offer gets:
        // POST /.search over every resource type at once, answered 501 as RFC 7644 §3.12
        // allows (no ServiceProviderConfig field can announce it).
        let statuses: Vec<(&str, &str)> = report
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(status, _)| ["SUCCESS", "ERROR", "CRITICAL", "SKIPPED", "WARNING"].contains(status))
            .collect();
        let failed: Vec<&(&str, &str)> = statuses
            .iter()
            .filter(|(status, title)| *status != "SUCCESS" && !(*status == "SKIPPED" && *title == "search_with_attributes"))
            .collect();
        assert!(failed.is_empty(), "scim2-tester reported {failed:?}:\n{report}");
        assert!(statuses.len() > 50, "too few checks ran:\n{report}");
    }
}

test_support::on_both_backends! {
    async fn a_token_made_over_grpc_opens_the_endpoint_until_it_is_revoked(db) {
        let pushed = Pushed::spawn(&db).await;
        let mut directory = pushed.directory.clone();
        let created = directory.create_scim_token(pb::CreateScimTokenRequest { name: "entra-prod".into() }).await.unwrap().into_inner();
        let token = created.token.unwrap();
        assert_eq!(created.secret.len(), 64, "32 random bytes, hex");
        let users = |secret: String| pushed.http.get(format!("{}/Users", pushed.base)).bearer_auth(secret).send();
        assert_eq!(users(created.secret.clone()).await.unwrap().status().as_u16(), 200);

        let listed = directory.list_scim_tokens(pb::ListScimTokensRequest {}).await.unwrap().into_inner().tokens;
        let mine = listed.iter().find(|t| t.token_id == token.token_id).unwrap();
        assert_eq!((mine.name.as_str(), mine.revoked_at_ms), ("entra-prod", 0));
        assert!(mine.last_used_at_ms > 0, "its use is noted");
        let stored: String = sqlx::query_scalar("SELECT digest FROM scim_tokens WHERE token_id = $1")
            .bind(&token.token_id)
            .fetch_one(pushed.db.pool())
            .await
            .unwrap();
        assert_ne!(stored, created.secret, "only a digest is kept");

        let revoked = directory.revoke_scim_token(pb::RevokeScimTokenRequest { token_id: token.token_id.clone() }).await.unwrap().into_inner().token.unwrap();
        assert!(revoked.revoked_at_ms > 0);
        assert_eq!(users(created.secret).await.unwrap().status().as_u16(), 401);
        assert_eq!(users(SECRET.to_owned()).await.unwrap().status().as_u16(), 200, "the other token still works");
        let unknown = directory.revoke_scim_token(pb::RevokeScimTokenRequest { token_id: "no-such-token".into() }).await.unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
        let empty = directory.create_scim_token(pb::CreateScimTokenRequest { name: " ".into() }).await.unwrap_err();
        assert_eq!(empty.code(), tonic::Code::InvalidArgument);
    }
}

test_support::on_both_backends! {
    async fn disables_pushed_a_few_at_a_time_halt_once_the_window_holds_more_than_the_threshold(db) {
        let pushed = Pushed::spawn_with(&db, |config| config.provisioning.max_disable_count = 2).await;
        let users = [
            ("0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef", "ann@contoso.com"),
            ("1b32a1a3-9e3b-4f9f-8a09-8474d5bfe5f0", "bob@contoso.com"),
            ("2c43b2b4-af4c-4a0a-9b1a-9585e6c0f6a1", "cy@contoso.com"),
        ];
        for (id, name) in users {
            assert_eq!(pushed.send(reqwest::Method::POST, "/Users", Some(entra_user(id, name))).await.0, 201);
        }
        import(&pushed, &users).await;
        let disable = || patch(json!([{"op": "Replace", "path": "active", "value": "False"}]));
        // Two disables in two rounds: within the threshold of 2.
        for (id, _) in &users[..2] {
            assert_eq!(pushed.send(reqwest::Method::PATCH, &format!("/Users/{id}"), Some(disable())).await.0, 200);
            pushed.registry_user_becomes(id, |u| !u.enabled).await;
        }
        // The third in a round of its own makes three in the window: that round halts.
        let (cy, _) = users[2];
        assert_eq!(pushed.send(reqwest::Method::PATCH, &format!("/Users/{cy}"), Some(disable())).await.0, 200);
        let mut halted = 0;
        for _ in 0..100 {
            halted = pushed.count("SELECT COUNT(*) FROM sync_runs WHERE mode = 'scim' AND status = 'awaiting_approval'").await;
            if halted > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(halted, 1, "the third disable's round waits for approval");
        assert!(pushed.registry_user(cy).await.enabled, "nothing written before approval");
        let run_id: String = sqlx::query_scalar("SELECT run_id FROM sync_runs WHERE status = 'awaiting_approval'")
            .fetch_one(pushed.db.pool())
            .await
            .unwrap();
        pushed.directory.clone().approve_sync_run(pb::ApproveSyncRunRequest { run_id }).await.unwrap();
        pushed.registry_user_becomes(cy, |u| !u.enabled).await;
    }
}

test_support::on_both_backends! {
    async fn changes_whose_round_failed_are_provisioned_by_the_next_round(db) {
        let pushed = Pushed::spawn_with(&db, |config| config.provisioning.peer_retry_secs = 1).await;
        let ann = "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef";
        assert_eq!(pushed.send(reqwest::Method::POST, "/Users", Some(entra_user(ann, "ann@contoso.com"))).await.0, 201);
        import(&pushed, &[(ann, "ann@contoso.com")]).await;
        pushed.stop_registry().await;
        let rename = patch(json!([{"op": "Replace", "path": "displayName", "value": "Ann Renamed"}]));
        assert_eq!(pushed.send(reqwest::Method::PATCH, &format!("/Users/{ann}"), Some(rename)).await.0, 200);
        let mut failed = 0;
        for _ in 0..100 {
            failed = pushed.count("SELECT COUNT(*) FROM sync_runs WHERE mode = 'scim' AND status = 'failed'").await;
            if failed > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(failed > 0, "the round failed while the registry was down");
        pushed.start_registry().await;
        pushed.registry_user_becomes(ann, |u| u.name == "Ann Renamed").await;
    }
}

/// What a registry user's directory-driven fields are: (name, alias, enabled, marked deleted).
async fn registry_state(
    registry: &RegistryServiceClient<Channel>,
    tenant: &str,
    object_id: &str,
) -> (String, String, bool, bool) {
    let request = registry_pb::GetUserRequest {
        key: Some(registry_pb::get_user_request::Key::Object(
            registry_pb::ObjectKey {
                tenant_id: tenant.into(),
                object_id: object_id.into(),
            },
        )),
    };
    let user = registry
        .clone()
        .get_user(request)
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    (
        user.name,
        user.network_alias,
        user.enabled,
        user.deleted_in_directory_at_ms > 0,
    )
}

test_support::on_both_backends! {
    async fn the_same_changes_pushed_over_scim_and_read_by_a_delta_round_leave_the_registry_alike(db) {
        // The Graph side: a tenant of four, imported, then changed and read by a delta round.
        let emulator = crate::helpers::start_emulator(graph_emulator::synthetic_users(4, "contoso.com")).await;
        let users = emulator.users();
        let provisioning = directory_sync::config::ProvisioningConfig { max_disable_share: 1.0, ..Default::default() };
        let graph_db = TestDatabase::sqlite().await;
        let graph = crate::helpers::Stack::spawn_provisioned(&graph_db, emulator, crate::helpers::no_schedule(), provisioning).await;
        graph.full_sync().await;
        graph.import_into_registry(&users.iter().collect::<Vec<_>>()).await;
        let (renamed, disabled, soft_deleted, deleted) = (&users[0], &users[1], &users[2], &users[3]);
        let new_upn = format!("renamed.{}", renamed.user_principal_name);
        graph.emulator.update_user(&renamed.id, graph_emulator::UserUpdate { display_name: Some("Renamed Person".into()), user_principal_name: Some(new_upn.clone()), ..Default::default() }).unwrap();
        graph.emulator.update_user(&disabled.id, graph_emulator::UserUpdate { account_enabled: Some(false), ..Default::default() }).unwrap();
        graph.emulator.soft_delete_user(&soft_deleted.id).unwrap();
        graph.emulator.hard_delete_user(&deleted.id).unwrap();
        let run = graph.sync(pb::SyncMode::Delta).await;
        assert_eq!(run.status(), pb::SyncRunStatus::Succeeded, "{run:?}");

        // The SCIM side (the backend under test): the same users pushed, imported, then the
        // same changes as Entra sends them.
        let pushed = Pushed::spawn(&db).await;
        for user in &users {
            // Entra's default mapping of the same directory user.
            let mut body = json!({
                "schemas": [USER],
                "externalId": user.id,
                "userName": user.user_principal_name,
                "displayName": user.display_name,
                "active": user.account_enabled,
                "userType": user.user_type,
                "name": {"givenName": user.given_name, "familyName": user.surname},
            });
            if let Some(mail) = &user.mail {
                body["emails"] = json!([{"value": mail, "type": "work", "primary": true}]);
            }
            let (status, answer) = pushed.send(reqwest::Method::POST, "/Users", Some(body)).await;
            assert_eq!(status, 201, "{answer}");
        }
        // Imported exactly as the Graph side imported them.
        let members: Vec<_> = users
            .iter()
            .map(|u| (u.id.as_str(), u.user_principal_name.as_str(), u.display_name.as_str()))
            .collect();
        let request = member_import("test", TENANT, &members);
        pushed.registry.clone().import_users(request).await.unwrap();
        let rename = patch(json!([{"op": "Replace", "path": "displayName", "value": "Renamed Person"}, {"op": "Replace", "path": "userName", "value": new_upn}]));
        let disable = patch(json!([{"op": "Replace", "path": "active", "value": "False"}]));
        assert_eq!(pushed.send(reqwest::Method::PATCH, &format!("/Users/{}", renamed.id), Some(rename)).await.0, 200);
        assert_eq!(pushed.send(reqwest::Method::PATCH, &format!("/Users/{}", disabled.id), Some(disable.clone())).await.0, 200);
        // Entra's soft delete is a disable; its hard delete a DELETE.
        assert_eq!(pushed.send(reqwest::Method::PATCH, &format!("/Users/{}", soft_deleted.id), Some(disable)).await.0, 200);
        assert_eq!(pushed.send(reqwest::Method::DELETE, &format!("/Users/{}", deleted.id), None).await.0, 204);
        pushed.registry_user_becomes(&deleted.id, |u| u.deleted_in_directory_at_ms > 0).await;

        let read = graph.list(pb::ListUsersRequest { page_size: 10, not_imported_only: Some(false), ..Default::default() }).await;
        assert!(read.users.iter().all(|u| u.source() == pb::UserSource::Graph), "read by a round: {read:?}");
        for user in &users {
            let by_graph = registry_state(&graph.registry, graph.emulator.tenant_id(), &user.id).await;
            let by_scim = registry_state(&pushed.registry, TENANT, &user.id).await;
            assert_eq!(by_scim, by_graph, "{}", user.user_principal_name);
        }
        assert_eq!(registry_state(&pushed.registry, TENANT, &renamed.id).await, ("Renamed Person".to_owned(), new_upn.clone(), true, false));
        assert!(!registry_state(&pushed.registry, TENANT, &disabled.id).await.2, "disabled");
        assert!(!registry_state(&pushed.registry, TENANT, &soft_deleted.id).await.2, "soft-deleted: disabled");
        let gone = registry_state(&pushed.registry, TENANT, &deleted.id).await;
        assert!(!gone.2 && gone.3, "hard-deleted: disabled and marked");
    }
}

test_support::on_both_backends! {
    async fn a_token_sending_faster_than_its_rate_is_told_to_retry_and_others_are_not(db) {
        let pushed = Pushed::spawn_with(&db, |config| config.scim.max_requests_per_second = 5).await;
        // A burst of twice the rate passes; the rest of a quick run of requests is refused.
        let mut answers = Vec::new();
        for _ in 0..30 {
            let response = pushed.http.get(format!("{}/Users", pushed.base)).bearer_auth(SECRET).send().await.unwrap();
            let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            answers.push((status, retry_after, body["status"].clone()));
        }
        let refused: Vec<_> = answers.iter().filter(|(status, _, _)| *status == 429).collect();
        assert!(answers[..10].iter().all(|(status, _, _)| *status == 200), "{answers:?}");
        assert!(refused.len() >= 15, "{answers:?}");
        assert!(refused.iter().all(|(_, retry, body)| retry.as_deref() == Some("1") && *body == json!("429")));

        let mut directory = pushed.directory.clone();
        let other = directory.create_scim_token(pb::CreateScimTokenRequest { name: "other".into() }).await.unwrap().into_inner().secret;
        let response = pushed.http.get(format!("{}/Users", pushed.base)).bearer_auth(other).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "each token has its own allowance");
    }
}

test_support::on_both_backends! {
    async fn the_endpoint_serves_https_with_the_configured_certificate(db) {
        service_runtime::install_crypto_provider();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert_file, key_file) = (dir.path().join("scim.crt"), dir.path().join("scim.key"));
        std::fs::write(&cert_file, certified.cert.pem()).unwrap();
        std::fs::write(&key_file, certified.signing_key.serialize_pem()).unwrap();
        let pushed = Pushed::spawn_with(&db, |config| {
            config.scim.tls.cert_file = Some(cert_file.clone());
            config.scim.tls.key_file = Some(key_file.clone());
        })
        .await;
        let port = pushed.base.rsplit(':').next().unwrap().split('/').next().unwrap().to_owned();
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap())
            .build()
            .unwrap();
        let response = client.get(format!("https://localhost:{port}/scim/v2/Users")).bearer_auth(SECRET).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["schemas"], json!(["urn:ietf:params:scim:api:messages:2.0:ListResponse"]));
        let plain = pushed.http.get(format!("http://localhost:{port}/scim/v2/Users")).bearer_auth(SECRET).send().await;
        assert!(plain.is_err() || !plain.unwrap().status().is_success(), "no plain HTTP beside TLS");
    }
}
