use proto::registry::v1 as pb;
use tonic::Code;

use crate::helpers::{TENANT, TestApp, member, object_id};

test_support::on_both_backends! {
    async fn check_imported_answers_only_the_ids_the_registry_holds(db) {
        let app = TestApp::spawn(&db).await;
        app.import("imp", "DAT", vec![member(1, "a@contoso.com"), member(3, "c@contoso.com")]).await.unwrap();
        let response = app
            .client
            .clone()
            .check_imported(pb::CheckImportedRequest {
                tenant_id: TENANT.into(),
                object_ids: vec![object_id(1), object_id(2), object_id(3).to_uppercase()],
            })
            .await
            .unwrap()
            .into_inner();
        let mut ids = response.imported_object_ids;
        ids.sort();
        assert_eq!(ids, [object_id(1), object_id(3)]);
    }

    async fn users_are_found_by_object_key_and_unknown_ones_are_not_found(db) {
        let app = TestApp::spawn(&db).await;
        app.import("imp", "DAT", vec![member(1, "a@contoso.com")]).await.unwrap();
        let key = |n| pb::GetUserRequest {
            key: Some(pb::get_user_request::Key::Object(pb::ObjectKey { tenant_id: TENANT.into(), object_id: object_id(n) })),
        };
        let user = app.client.clone().get_user(key(1)).await.unwrap().into_inner().user.unwrap();
        assert_eq!(user.user_id, "a");
        let err = app.client.clone().get_user(key(2)).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }

    async fn listing_pages_through_every_user_once_with_filters(db) {
        let app = TestApp::spawn(&db).await;
        let users: Vec<pb::NewUser> = (0..25).map(|n| member(n, &format!("user{n:02}@contoso.com"))).collect();
        app.import("imp", "DAT", users).await.unwrap();
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = app
                .client
                .clone()
                .list_users(pb::ListUsersRequest { page_size: 10, page_token: token, ..Default::default() })
                .await
                .unwrap()
                .into_inner();
            seen.extend(page.users.into_iter().map(|u| u.user_id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(seen.len(), 25);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        let found = app
            .client
            .clone()
            .list_users(pb::ListUsersRequest { search: "USER1".into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.users.len(), 10);
        let by_import = app
            .client
            .clone()
            .list_users(pb::ListUsersRequest { created_by_import: "other".into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert!(by_import.users.is_empty());
    }

    async fn a_search_with_like_wildcards_matches_them_literally(db) {
        let app = TestApp::spawn(&db).await;
        app.import("imp", "DAT", vec![member(1, "a_b@contoso.com"), member(2, "axb@contoso.com")]).await.unwrap();
        let found = app
            .client
            .clone()
            .list_users(pb::ListUsersRequest { search: "a_".into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<String> = found.users.into_iter().map(|u| u.user_id).collect();
        assert_eq!(ids, ["a_b"]);
    }

    async fn a_forged_page_token_or_oversized_page_is_rejected(db) {
        let app = TestApp::spawn(&db).await;
        let err = app
            .client
            .clone()
            .list_users(pb::ListUsersRequest { page_token: "***".into(), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = app
            .client
            .clone()
            .list_users(pb::ListUsersRequest { page_size: 5000, ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
}
