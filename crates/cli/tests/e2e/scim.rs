//! A tenant that pushes over SCIM, with the whole stack (issue 18): auto-import applies to
//! what Entra pushes, as to a delta round's newcomers.

use cli::stack::{DirectorySource, Ports, Stack, StackAuth, StackOptions};
use proto::directory::v1 as directory_pb;
use proto::directory::v1::directory_service_client::DirectoryServiceClient;
use proto::registry::v1 as registry_pb;
use proto::registry::v1::registry_service_client::RegistryServiceClient;
use serde_json::json;

use crate::helpers::storage_for;

test_support::on_both_backends! {
    async fn with_auto_import_on_users_entra_pushes_are_imported_after_their_scim_round(db) {
        let stack = Stack::start(StackOptions {
            storage: storage_for(&db),
            directory: DirectorySource::Scim { tenant_id: "8b5a3c1e-2f4d-4c6b-9a7e-0d1f2e3c4b5a".into(), port: 0 },
            ports: Ports::ANY,
            companies: Vec::new(),
            chunk_size: 50,
            auth: StackAuth::Insecure,
            auto_import: true,
            sync_groups: Vec::new(),
            delta_interval_secs: 0,
            console: None,
        })
        .await
        .unwrap();
        let scim = stack.scim_url.clone().expect("a pushed tenant serves SCIM");
        let mut directory = DirectoryServiceClient::connect(stack.directory_url.clone()).await.unwrap();
        let secret = directory
            .create_scim_token(directory_pb::CreateScimTokenRequest { name: "entra".into() })
            .await
            .unwrap()
            .into_inner()
            .secret;
        let user = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "externalId": "0f0f0f0f-0000-4000-8000-00000000abcd",
            "userName": "new.hire@contoso.com",
            "active": true,
            "displayName": "New Hire",
            "emails": [{"primary": true, "type": "work", "value": "new.hire@contoso.com"}]
        });
        let created = reqwest::Client::new()
            .post(format!("{scim}/Users"))
            .bearer_auth(&secret)
            .header("content-type", "application/scim+json")
            .body(user.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(created.status().as_u16(), 201);

        let mut registry = RegistryServiceClient::connect(stack.registry_url.clone()).await.unwrap();
        let mut imported = Vec::new();
        for _ in 0..300 {
            imported = registry
                .list_users(registry_pb::ListUsersRequest { page_size: 10, ..Default::default() })
                .await
                .unwrap()
                .into_inner()
                .users;
            if !imported.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(imported.len(), 1, "the pushed user is imported by its SCIM round");
        assert_eq!((imported[0].object_id.as_str(), imported[0].user_id.as_str()), ("0f0f0f0f-0000-4000-8000-00000000abcd", "new.hire"));
        assert!(imported[0].created_by_import.starts_with("sync-scim-"), "{}", imported[0].created_by_import);
        stack.stop().await.unwrap();
    }
}
