//! The not-imported listing reads the mirror's imported marks, kept from the registry's import
//! feed and confirmed with the registry on every page (issue 15).

use proto::directory::v1 as pb;
use proto::registry::v1 as registry_pb;
use sqlx::Row as _;

use crate::helpers::Stack;

/// Every not-imported user, paging with `page_size`: (display name, object id) in order.
async fn not_imported(stack: &Stack, page_size: u32) -> Vec<(String, String)> {
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = stack
            .list(pb::ListUsersRequest {
                page_size,
                page_token: token,
                ..Default::default()
            })
            .await;
        assert!(page.users.iter().all(|u| !u.imported));
        listed.extend(
            page.users
                .into_iter()
                .map(|u| (u.display_name, u.object_id)),
        );
        if page.next_page_token.is_empty() {
            return listed;
        }
        token = page.next_page_token;
    }
}

async fn marked_imported(stack: &Stack) -> i64 {
    let mut conn = stack.db.pool().acquire().await.unwrap();
    sqlx::query(
        "SELECT COUNT(*) AS n FROM directory_users u WHERE NOT EXISTS \
         (SELECT 1 FROM directory_not_imported k WHERE k.tenant_id = u.tenant_id AND k.object_id = u.object_id)",
    )
        .fetch_one(&mut *conn)
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

async fn delete_from_registry(stack: &Stack, object_ids: &[String]) {
    let changes = object_ids
        .iter()
        .map(|id| registry_pb::UserChange {
            tenant_id: stack.emulator.tenant_id().into(),
            object_id: id.clone(),
            delete: true,
            ..Default::default()
        })
        .collect();
    stack
        .registry
        .clone()
        .update_users(registry_pb::UpdateUsersRequest {
            change_id: "test-delete".into(),
            changes,
            dry_run: false,
            count_users: false,
        })
        .await
        .unwrap();
}

test_support::on_both_backends! {
    async fn a_user_imported_after_the_mirror_was_read_disappears_from_the_not_imported_list_at_the_next_listing(db) {
        let stack = Stack::spawn(&db, 40).await;
        stack.full_sync().await;
        assert_eq!(not_imported(&stack, 1000).await.len(), 40);

        let users = stack.emulator.users();
        let imported: Vec<_> = users.iter().take(5).collect();
        stack.import_into_registry(&imported).await;
        let listed = not_imported(&stack, 1000).await;
        assert_eq!(listed.len(), 35);
        assert!(imported.iter().all(|u| listed.iter().all(|(_, id)| *id != u.id)));
        assert_eq!(marked_imported(&stack).await, 5, "the feed marked them");
    }

    async fn a_renamed_or_newly_mirrored_user_takes_its_place_in_the_not_imported_list_by_name(db) {
        let stack = Stack::spawn(&db, 20).await;
        stack.full_sync().await;
        let users = stack.emulator.users();
        let renamed = users[3].id.clone();
        let update = graph_emulator::UserUpdate { display_name: Some("Zz Last By Name".into()), ..Default::default() };
        stack.emulator.update_user(&renamed, update).unwrap();
        stack.sync(pb::SyncMode::Delta).await;
        let listed = not_imported(&stack, 7).await;
        assert_eq!(listed.len(), 20);
        assert_eq!(listed.last().unwrap(), &("Zz Last By Name".to_owned(), renamed), "moved in name order");
        let mut sorted = listed.clone();
        sorted.sort_by_key(|(name, id)| (name.to_lowercase(), id.clone()));
        assert_eq!(listed, sorted);
    }

    async fn a_user_deleted_from_the_registry_comes_back_to_the_not_imported_list(db) {
        let stack = Stack::spawn(&db, 30).await;
        stack.full_sync().await;
        let users = stack.emulator.users();
        let imported: Vec<_> = users.iter().take(6).collect();
        stack.import_into_registry(&imported).await;
        assert_eq!(not_imported(&stack, 1000).await.len(), 24);

        let deleted = vec![imported[0].id.clone(), imported[3].id.clone()];
        delete_from_registry(&stack, &deleted).await;
        let listed = not_imported(&stack, 1000).await;
        assert_eq!(listed.len(), 26);
        assert!(deleted.iter().all(|id| listed.iter().any(|(_, listed)| listed == id)));
        assert_eq!(marked_imported(&stack).await, 4);
    }

    async fn paging_through_a_mostly_imported_mirror_returns_exactly_the_not_imported_users_each_once(db) {
        let stack = Stack::spawn(&db, 300).await;
        stack.full_sync().await;
        let users = stack.emulator.users();
        let (kept, imported): (Vec<_>, Vec<_>) = users.iter().enumerate().partition(|(i, _)| i % 43 == 7);
        let imported: Vec<_> = imported.into_iter().map(|(_, u)| u).collect();
        stack.import_into_registry(&imported).await;

        let listed = not_imported(&stack, 3).await;
        let mut expected: Vec<(String, String)> = kept.iter().map(|(_, u)| (u.display_name.clone(), u.id.clone())).collect();
        expected.sort_by_key(|(name, id)| (name.to_lowercase(), id.clone()));
        assert_eq!(listed, expected);
    }

    async fn marks_that_lag_the_registry_never_show_an_imported_user_and_are_corrected(db) {
        let stack = Stack::spawn(&db, 50).await;
        stack.full_sync().await;
        let users = stack.emulator.users();
        let imported: Vec<_> = users.iter().take(10).collect();
        stack.import_into_registry(&imported).await;
        assert_eq!(not_imported(&stack, 1000).await.len(), 40);
        // Marks as if the feed had never told us (a user mirrored after its import).
        let mut conn = stack.db.pool().acquire().await.unwrap();
        sqlx::query(
            "INSERT INTO directory_not_imported (tenant_id, object_id, search_name) \
             SELECT tenant_id, object_id, search_name FROM directory_users WHERE true ON CONFLICT DO NOTHING",
        )
            .execute(&mut *conn)
            .await
            .unwrap();
        drop(conn);

        assert_eq!(not_imported(&stack, 7).await.len(), 40, "confirmed with the registry");
        assert_eq!(marked_imported(&stack).await, 10, "marked on the spot");
        let everyone = stack.list(pb::ListUsersRequest { page_size: 1000, not_imported_only: Some(false), ..Default::default() }).await;
        assert_eq!(everyone.users.iter().filter(|u| u.imported).count(), 10);
    }
}

/// Applies one page of feed changes as a reader of the feed does, in its own transaction.
async fn apply_page(stack: &Stack, changes: &[directory_sync::store::imported::ImportChange]) {
    let mut tx = stack.db.begin_write().await.unwrap();
    directory_sync::store::imported::apply_import_changes(
        &mut tx,
        stack.db.backend(),
        stack.emulator.tenant_id(),
        changes,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

test_support::on_both_backends! {
    async fn a_page_of_the_feed_applied_after_a_reader_went_past_it_brings_back_no_imported_user(db) {
        let stack = Stack::spawn(&db, 10).await;
        stack.full_sync().await;
        let user = stack.emulator.users()[0].id.clone();
        let change = |seq: i64, imported: bool| directory_sync::store::imported::ImportChange { seq, object_id: user.clone(), imported };
        // The user was imported (feed number 1), deleted (2) and imported again (3). One reader
        // applies the first page and the next; a second reader, which read the first page
        // before, applies it last.
        apply_page(&stack, &[change(1, true), change(2, false)]).await;
        assert_eq!(marked_imported(&stack).await, 0, "deleted again: the page's last change wins");
        apply_page(&stack, &[change(3, true)]).await;
        assert_eq!(marked_imported(&stack).await, 1);
        apply_page(&stack, &[change(1, true), change(2, false)]).await;
        assert_eq!(marked_imported(&stack).await, 1, "the stale page changed nothing");
        // A listing's confirmation does not remove a row newer than what it had followed.
        apply_page(&stack, &[change(4, false)]).await;
        let mut conn = stack.db.pool().acquire().await.unwrap();
        directory_sync::store::imported::mark_imported(&mut conn, stack.db.backend(), stack.emulator.tenant_id(), std::slice::from_ref(&user), 3)
            .await
            .unwrap();
        drop(conn);
        assert_eq!(marked_imported(&stack).await, 0, "deleted at 4, after the listing's position 3");
    }
}
