use proto::directory::v1 as pb;
use tonic::Code;

use crate::helpers::Stack;

fn names(response: &pb::ListUsersResponse) -> Vec<String> {
    response
        .users
        .iter()
        .map(|u| u.display_name.clone())
        .collect()
}

/// Every user a search lists, paging with `page_size`: object ids in listing order.
async fn search_all(
    stack: &Stack,
    search: &str,
    not_imported_only: bool,
    page_size: u32,
) -> Vec<String> {
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let request = pb::ListUsersRequest {
            search: search.into(),
            page_size,
            page_token: token,
            not_imported_only: Some(not_imported_only),
            ..Default::default()
        };
        let page = stack.list(request).await;
        listed.extend(
            page.users
                .into_iter()
                .filter(|u| !(not_imported_only && u.imported))
                .map(|u| u.object_id),
        );
        if page.next_page_token.is_empty() {
            return listed;
        }
        token = page.next_page_token;
    }
}

test_support::on_both_backends! {
    async fn a_search_of_the_not_imported_answers_alike_whether_few_or_many_users_are_unmarked(db) {
        // More unmarked users than a search reads all at once (2,000), then fewer.
        let stack = Stack::spawn(&db, 2_100).await;
        stack.full_sync().await;
        let searches = ["a", "jo", "ch", "adele"];
        for search in searches {
            let everyone = search_all(&stack, search, false, 1000).await;
            assert!(!everyone.is_empty(), "{search}");
            assert_eq!(search_all(&stack, search, true, 333).await, everyone, "nobody imported: {search}");
        }
        let users = stack.emulator.users();
        let imported: Vec<_> = users.iter().skip(40).collect();
        stack.import_into_registry(&imported).await;
        let imported_ids: std::collections::HashSet<&str> = imported.iter().map(|u| u.id.as_str()).collect();
        // Until the marks have followed, so that the few unmarked are read all at once.
        for _ in 0..200 {
            let marked: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM directory_users u WHERE NOT EXISTS \
                 (SELECT 1 FROM directory_not_imported k WHERE k.tenant_id = u.tenant_id AND k.object_id = u.object_id)",
            )
                .fetch_one(stack.db.pool())
                .await
                .unwrap();
            if marked == imported.len() as i64 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        for search in searches {
            let expected: Vec<String> = search_all(&stack, search, false, 1000).await.into_iter().filter(|id| !imported_ids.contains(id.as_str())).collect();
            assert_eq!(search_all(&stack, search, true, 7).await, expected, "40 not imported: {search}");
        }
    }

    async fn listing_pages_through_not_imported_users_in_name_order(db) {
        let stack = Stack::spawn(&db, 120).await;
        stack.full_sync().await;
        let users = stack.emulator.users();
        let imported: Vec<_> = users.iter().take(20).collect();
        stack.import_into_registry(&imported).await;

        let mut listed = Vec::new();
        let mut token = String::new();
        loop {
            let page = stack.list(pb::ListUsersRequest { page_size: 25, page_token: token, ..Default::default() }).await;
            assert!(page.users.len() <= 25);
            assert!(page.users.iter().all(|u| !u.imported));
            listed.extend(page.users);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(listed.len(), 100, "imported users are hidden by default");
        let keys: Vec<(String, String)> = listed.iter().map(|u| (u.display_name.to_lowercase(), u.object_id.clone())).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "display name order, each user once");

        let everyone = stack.list(pb::ListUsersRequest { page_size: 1000, not_imported_only: Some(false), ..Default::default() }).await;
        assert_eq!(everyone.users.len(), 120);
        assert_eq!(everyone.users.iter().filter(|u| u.imported).count(), 20);
    }

    async fn search_matches_a_prefix_of_display_name_upn_or_mail(db) {
        let stack = Stack::spawn(&db, 200).await;
        stack.full_sync().await;
        let users = stack.emulator.users();
        let guest = users.iter().find(|u| u.user_principal_name.contains("#EXT#") && u.mail.is_some()).unwrap();
        let mail = guest.mail.clone().unwrap();
        let by_mail = stack.list(pb::ListUsersRequest { search: mail[..mail.find('@').unwrap() + 1].to_uppercase(), ..Default::default() }).await;
        assert!(by_mail.users.iter().any(|u| u.object_id == guest.id), "found by mail prefix");
        assert_eq!(by_mail.users.iter().find(|u| u.object_id == guest.id).unwrap().account_type(), pb::AccountType::Guest);

        let by_upn = stack.list(pb::ListUsersRequest { search: guest.user_principal_name.clone(), ..Default::default() }).await;
        assert_eq!(by_upn.users.len(), 1);

        let first = &users[0];
        let prefix: String = first.display_name.chars().take(4).collect();
        let by_name = stack.list(pb::ListUsersRequest { search: prefix.clone(), page_size: 1000, ..Default::default() }).await;
        assert!(!by_name.users.is_empty());
        assert!(by_name.users.iter().all(|u| {
            let p = prefix.to_lowercase();
            u.display_name.to_lowercase().starts_with(&p) || u.user_principal_name.to_lowercase().starts_with(&p) || u.mail.to_lowercase().starts_with(&p)
        }), "{:?}", names(&by_name));

        let nobody = stack.list(pb::ListUsersRequest { search: "%".into(), ..Default::default() }).await;
        assert!(nobody.users.is_empty(), "LIKE wildcards are matched literally");
    }

    async fn a_search_pages_through_the_same_users_a_single_page_holds(db) {
        let stack = Stack::spawn(&db, 400).await;
        stack.full_sync().await;
        for search in ["a", "j", "ch", "adele"] {
            let single = stack
                .list(pb::ListUsersRequest { search: search.into(), page_size: 1000, ..Default::default() })
                .await;
            assert!(!single.users.is_empty(), "{search}");
            let mut paged = Vec::new();
            let mut token = String::new();
            loop {
                let page = stack
                    .list(pb::ListUsersRequest { search: search.into(), page_size: 7, page_token: token, ..Default::default() })
                    .await;
                paged.extend(page.users);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            assert_eq!(names(&single), names(&pb::ListUsersResponse { users: paged, next_page_token: String::new() }), "{search}");
        }
    }

    async fn filters_keep_enabled_members_or_guests_only(db) {
        let stack = Stack::spawn(&db, 100).await;
        stack.full_sync().await;
        let enabled = stack.list(pb::ListUsersRequest { page_size: 1000, enabled_only: true, ..Default::default() }).await;
        assert_eq!(enabled.users.len(), 96);
        let guests = stack.list(pb::ListUsersRequest { page_size: 1000, account_type: pb::AccountType::Guest.into(), ..Default::default() }).await;
        assert_eq!(guests.users.len(), 6);
        assert!(guests.users.iter().all(|u| u.user_principal_name.contains("#EXT#")));
    }

    async fn bad_listing_requests_are_rejected_with_the_field_named(db) {
        let stack = Stack::spawn(&db, 5).await;
        let err = stack.directory.clone().list_users(pb::ListUsersRequest { page_size: 5000, ..Default::default() }).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("page_size"));
        let err = stack.directory.clone().list_users(pb::ListUsersRequest { page_token: "garbage!".into(), ..Default::default() }).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("page_token"));
    }
}
