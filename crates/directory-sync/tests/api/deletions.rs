//! Issue 13 (part 5): absence from `/users` is not deletion. A user missing from a full read
//! is soft-deleted (disabled, restorable); only Graph's own word — a delta `@removed` with
//! reason `deleted`, or absence from the deleted items as well — makes it hard-deleted, and
//! only that lets the delete policy remove a registry user. A restored user comes back
//! enabled and unmarked.

use directory_sync::config::ProvisioningConfig;
use directory_sync::domain::DeletionState;
use directory_sync::store;
use graph_emulator::{EmulatedUser, Fault};
use proto::directory::v1 as pb;
use proto::registry::v1 as registry_pb;

use crate::helpers::{Stack, no_schedule, start_emulator};

/// The registry user of a directory user, `None` when the registry holds none.
async fn registry_user(stack: &Stack, object_id: &str) -> Option<registry_pb::RegistryUser> {
    let request = registry_pb::GetUserRequest {
        key: Some(registry_pb::get_user_request::Key::Object(
            registry_pb::ObjectKey {
                tenant_id: stack.emulator.tenant_id().into(),
                object_id: object_id.into(),
            },
        )),
    };
    match stack.registry.clone().get_user(request).await {
        Ok(response) => response.into_inner().user,
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => panic!("get_user: {status}"),
    }
}

/// (present, enabled, marked "deleted in directory") of a registry user.
async fn registry_state(stack: &Stack, object_id: &str) -> (bool, bool, bool) {
    match registry_user(stack, object_id).await {
        Some(user) => (true, user.enabled, user.deleted_in_directory_at_ms > 0),
        None => (false, false, false),
    }
}

async fn mirror_state(stack: &Stack, object_id: &str) -> DeletionState {
    let mut conn = stack.db.pool().acquire().await.unwrap();
    let users = store::users_by_object_ids(
        &mut conn,
        stack.db.backend(),
        stack.emulator.tenant_id(),
        &[object_id.to_owned()],
    )
    .await
    .unwrap();
    users[0].deletion_state
}

/// Deletions audited through a run.
async fn deletions_via(stack: &Stack, run_id: &str) -> usize {
    let request = registry_pb::ListAuditEventsRequest {
        via: run_id.into(),
        action: "delete".into(),
        page_size: 100,
        ..Default::default()
    };
    let events = stack
        .registry
        .clone()
        .list_audit_events(request)
        .await
        .unwrap();
    events.into_inner().events.len()
}

/// A stack with this delete policy whose first 40 enabled members are in the registry, after
/// a full round.
async fn synced(
    db: &test_support::TestDatabase,
    delete_hard_deleted: bool,
) -> (Stack, Vec<EmulatedUser>) {
    let emulator = start_emulator(graph_emulator::synthetic_users(60, "contoso.com")).await;
    let provisioning = ProvisioningConfig {
        delete_hard_deleted,
        ..Default::default()
    };
    let stack = Stack::spawn_provisioned(db, emulator, no_schedule(), provisioning).await;
    let members: Vec<EmulatedUser> = stack
        .emulator
        .users()
        .into_iter()
        .filter(|u| u.user_type == "Member" && u.account_enabled)
        .take(40)
        .collect();
    assert_eq!(members.len(), 40);
    stack
        .import_into_registry(&members.iter().collect::<Vec<_>>())
        .await;
    let run = stack.full_sync().await;
    assert_eq!(run.status(), pb::SyncRunStatus::Succeeded, "{run:?}");
    (stack, members)
}

async fn succeeded(stack: &Stack, mode: pb::SyncMode) -> pb::SyncRun {
    let run = stack.sync(mode).await;
    assert_eq!(run.status(), pb::SyncRunStatus::Succeeded, "{run:?}");
    run
}

/// A fresh database on the same backend as `db` (a test that runs a stack twice).
async fn another_like(db: &test_support::TestDatabase) -> test_support::TestDatabase {
    if db.backend == "sqlite" {
        test_support::TestDatabase::sqlite().await
    } else {
        test_support::TestDatabase::postgres().await.unwrap()
    }
}

/// Marks a registry user "deleted in directory" as a release before this one did for every
/// user missing from a full round.
async fn mark_as_an_earlier_release_did(stack: &Stack, object_id: &str) {
    let change = registry_pb::UserChange {
        tenant_id: stack.emulator.tenant_id().into(),
        object_id: object_id.into(),
        enabled: Some(false),
        deleted_in_directory: Some(true),
        ..Default::default()
    };
    let request = registry_pb::UpdateUsersRequest {
        change_id: "earlier-release".into(),
        changes: vec![change],
        ..Default::default()
    };
    stack.registry.clone().update_users(request).await.unwrap();
}

test_support::on_both_backends! {
    async fn a_user_soft_deleted_then_absent_from_a_full_round_is_disabled_not_deleted(db) {
        let (stack, users) = synced(&db, true).await;
        for user in &users[..3] {
            stack.emulator.soft_delete_user(&user.id).unwrap();
        }
        let run = succeeded(&stack, pb::SyncMode::Full).await;
        assert_eq!(run.users_removed, 3);
        for user in &users[..3] {
            assert_eq!(registry_state(&stack, &user.id).await, (true, false, false), "disabled, kept, unmarked");
            assert_eq!(mirror_state(&stack, &user.id).await, DeletionState::SoftDeleted);
        }
        assert_eq!(registry_state(&stack, &users[3].id).await, (true, true, false));
        assert_eq!(deletions_via(&stack, &run.run_id).await, 0, "the delete policy deleted nobody");
        // A second full round changes nothing: they are still restorable.
        let again = succeeded(&stack, pb::SyncMode::Full).await;
        assert_eq!((again.users_removed, again.users_updated), (0, 0));
        assert_eq!(registry_state(&stack, &users[0].id).await, (true, false, false));
        let listed = stack.emulator.requests().iter().filter(|r| r.path_and_query.starts_with("/v1.0/directory/deletedItems/microsoft.graph.user?")).count();
        assert_eq!(listed, 3, "each full round read the deleted items");
    }

    async fn soft_delete_full_round_restore_round_leaves_the_user_enabled_unmarked_and_never_deleted(db) {
        for delete_hard_deleted in [true, false] {
            let db = another_like(&db).await;
            let (stack, users) = synced(&db, delete_hard_deleted).await;
            // Restored by a full round, then by a delta round; the second of each pair carries
            // the mark an earlier release wrote for a user missing from a full round.
            let by_full = [&users[0], &users[1]];
            let by_delta = [&users[2], &users[3]];
            for user in [by_full[1], by_delta[1]] {
                mark_as_an_earlier_release_did(&stack, &user.id).await;
            }
            for user in by_full.iter().chain(&by_delta) {
                stack.emulator.soft_delete_user(&user.id).unwrap();
            }
            let deleted_round = succeeded(&stack, pb::SyncMode::Full).await;
            for user in by_full.iter().chain(&by_delta) {
                // Restorable: disabled and kept; the old mark goes (only a hard deletion marks).
                assert_eq!(registry_state(&stack, &user.id).await, (true, false, false), "policy {delete_hard_deleted}");
            }
            assert_eq!(deletions_via(&stack, &deleted_round.run_id).await, 0);
            let request = registry_pb::ListAuditEventsRequest { via: deleted_round.run_id.clone(), action: "update".into(), page_size: 100, ..Default::default() };
            let cleared = stack.registry.clone().list_audit_events(request).await.unwrap().into_inner().events;
            assert_eq!(cleared.len(), 2, "each cleared mark is audited as an update");
            for (restore_round, restored) in [(pb::SyncMode::Full, by_full), (pb::SyncMode::Delta, by_delta)] {
                for user in restored {
                    stack.emulator.restore_user(&user.id).unwrap();
                }
                let run = succeeded(&stack, restore_round).await;
                for user in restored {
                    assert_eq!(
                        registry_state(&stack, &user.id).await,
                        (true, true, false),
                        "policy {delete_hard_deleted}, restored by a {restore_round:?} round: enabled, unmarked, kept"
                    );
                    assert_eq!(mirror_state(&stack, &user.id).await, DeletionState::Present);
                }
                assert_eq!(deletions_via(&stack, &run.run_id).await, 0);
                let request = registry_pb::ListAuditEventsRequest { via: run.run_id.clone(), page_size: 100, ..Default::default() };
                let events = stack.registry.clone().list_audit_events(request).await.unwrap().into_inner().events;
                let mut actions: Vec<(String, String)> = events.iter().map(|e| (e.action.clone(), e.user_id.clone())).collect();
                actions.sort_unstable();
                let mut expected = Vec::new();
                for user in restored {
                    expected.push(("enable".to_owned(), registry_user(&stack, &user.id).await.unwrap().user_id));
                }
                expected.sort_unstable();
                assert_eq!(actions, expected, "{restore_round:?} round: only the restores");
            }
        }
    }

    async fn a_user_purged_from_deleted_items_is_concluded_hard_deleted(db) {
        for delete_hard_deleted in [true, false] {
            let db = another_like(&db).await;
            let (stack, users) = synced(&db, delete_hard_deleted).await;
            let (purged, straight, soft) = (&users[0], &users[1], &users[2]);
            stack.emulator.soft_delete_user(&purged.id).unwrap();
            stack.emulator.soft_delete_user(&soft.id).unwrap();
            succeeded(&stack, pb::SyncMode::Full).await;
            assert_eq!(registry_state(&stack, &purged.id).await, (true, false, false));
            // Purged from the deleted items, and one user deleted permanently at once.
            stack.emulator.hard_delete_user(&purged.id).unwrap();
            stack.emulator.hard_delete_user(&straight.id).unwrap();
            let run = succeeded(&stack, pb::SyncMode::Full).await;
            assert_eq!(run.users_removed, 2);
            for user in [purged, straight] {
                assert_eq!(mirror_state(&stack, &user.id).await, DeletionState::HardDeleted);
                let expected = if delete_hard_deleted { (false, false, false) } else { (true, false, true) };
                assert_eq!(registry_state(&stack, &user.id).await, expected, "policy {delete_hard_deleted}");
            }
            assert_eq!(deletions_via(&stack, &run.run_id).await, if delete_hard_deleted { 2 } else { 0 });
            assert_eq!(registry_state(&stack, &soft.id).await, (true, false, false), "the restorable one stays");
            assert_eq!(mirror_state(&stack, &soft.id).await, DeletionState::SoftDeleted);
        }
    }

    async fn a_failed_deleted_items_read_concludes_nobody_hard_deleted(db) {
        let (stack, users) = synced(&db, true).await;
        let (purged, soft) = (&users[0], &users[1]);
        stack.emulator.hard_delete_user(&purged.id).unwrap();
        stack.emulator.soft_delete_user(&soft.id).unwrap();
        // Refused, as when the permission was taken away.
        stack.emulator.inject(Fault::status("/v1.0/directory/deletedItems", 403, 1));
        let run = succeeded(&stack, pb::SyncMode::Full).await;
        assert_eq!(run.users_removed, 2);
        for user in [purged, soft] {
            assert_eq!(registry_state(&stack, &user.id).await, (true, false, false), "disabled, kept, unmarked");
            assert_eq!(mirror_state(&stack, &user.id).await, DeletionState::SoftDeleted);
        }
        assert_eq!(deletions_via(&stack, &run.run_id).await, 0);

        // With the deleted items readable again, the next full round concludes what it can.
        let run = succeeded(&stack, pb::SyncMode::Full).await;
        assert_eq!(registry_state(&stack, &purged.id).await, (false, false, false), "gone for good: deleted by the policy");
        assert_eq!(deletions_via(&stack, &run.run_id).await, 1);
        assert_eq!(registry_state(&stack, &soft.id).await, (true, false, false));
    }

    async fn delta_removals_follow_their_reason_and_a_delta_restore_clears_the_state(db) {
        let (stack, users) = synced(&db, true).await;
        let (soft, hard) = (&users[0], &users[1]);
        stack.emulator.soft_delete_user(&soft.id).unwrap();
        stack.emulator.hard_delete_user(&hard.id).unwrap();
        let run = succeeded(&stack, pb::SyncMode::Delta).await;
        assert_eq!(run.users_removed, 2);
        assert_eq!(mirror_state(&stack, &soft.id).await, DeletionState::SoftDeleted, "reason changed");
        assert_eq!(registry_state(&stack, &soft.id).await, (true, false, false), "restorable: only disabled, even under the delete policy");
        assert_eq!(mirror_state(&stack, &hard.id).await, DeletionState::HardDeleted, "reason deleted");
        assert_eq!(registry_state(&stack, &hard.id).await, (false, false, false));

        // A full round in between changes nothing: the soft-deleted user is in the deleted items.
        let full = succeeded(&stack, pb::SyncMode::Full).await;
        assert_eq!((full.users_removed, full.users_updated), (0, 0));

        stack.emulator.restore_user(&soft.id).unwrap();
        succeeded(&stack, pb::SyncMode::Delta).await;
        assert_eq!(mirror_state(&stack, &soft.id).await, DeletionState::Present);
        assert_eq!(registry_state(&stack, &soft.id).await, (true, true, false));
    }

    async fn a_user_an_earlier_release_swept_as_hard_deleted_is_corrected_by_the_next_full_round(db) {
        let (stack, users) = synced(&db, false).await;
        let (restorable, back) = (&users[0], &users[1]);
        stack.emulator.soft_delete_user(&restorable.id).unwrap();
        for user in [restorable, back] {
            mark_as_an_earlier_release_did(&stack, &user.id).await;
        }
        // What the earlier release left in the mirror: both swept as hard-deleted.
        let ids = format!("'{}', '{}'", restorable.id, back.id);
        sqlx::query(sqlx::AssertSqlSafe(format!("UPDATE directory_users SET deletion_state = 'hard_deleted' WHERE object_id IN ({ids})")))
            .execute(stack.db.pool())
            .await
            .unwrap();
        succeeded(&stack, pb::SyncMode::Full).await;
        assert_eq!(mirror_state(&stack, &restorable.id).await, DeletionState::SoftDeleted, "the deleted items hold it");
        assert_eq!(registry_state(&stack, &restorable.id).await, (true, false, false), "restorable: unmarked, disabled");
        assert_eq!(mirror_state(&stack, &back.id).await, DeletionState::Present);
        assert_eq!(registry_state(&stack, &back.id).await, (true, true, false), "listed again: enabled, unmarked");
    }
}
