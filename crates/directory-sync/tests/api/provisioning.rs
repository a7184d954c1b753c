//! Issue 8 (first part): a round's changes reach the registry, behind a safety threshold that
//! halts a round disabling too many users until it is approved.

use graph_emulator::{EmulatedUser, Fault, UserUpdate};
use proto::directory::v1 as pb;
use proto::registry::v1 as registry_pb;
use std::collections::BTreeSet;
use tonic::Code;

use crate::helpers::Stack;

async fn registry_user(stack: &Stack, object_id: &str) -> registry_pb::RegistryUser {
    let request = registry_pb::GetUserRequest {
        key: Some(registry_pb::get_user_request::Key::Object(
            registry_pb::ObjectKey {
                tenant_id: stack.emulator.tenant_id().into(),
                object_id: object_id.into(),
            },
        )),
    };
    stack
        .registry
        .clone()
        .get_user(request)
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
}

async fn enabled_count(stack: &Stack) -> usize {
    let request = registry_pb::ListUsersRequest {
        page_size: 1000,
        enabled: Some(true),
        ..Default::default()
    };
    stack
        .registry
        .clone()
        .list_users(request)
        .await
        .unwrap()
        .into_inner()
        .users
        .len()
}

/// A stack whose first `imported` enabled members are in the registry, after a full sync.
async fn synced_with_imported(
    db: &test_support::TestDatabase,
    tenant: usize,
    imported: usize,
) -> (Stack, Vec<EmulatedUser>) {
    let stack = Stack::spawn(db, tenant).await;
    let members: Vec<EmulatedUser> = stack
        .emulator
        .users()
        .into_iter()
        .filter(|u| u.user_type == "Member" && u.account_enabled)
        .take(imported)
        .collect();
    assert_eq!(members.len(), imported);
    stack
        .import_into_registry(&members.iter().collect::<Vec<_>>())
        .await;
    let run = stack.full_sync().await;
    assert_eq!(run.status(), pb::SyncRunStatus::Succeeded, "{run:?}");
    (stack, members)
}

fn disable() -> UserUpdate {
    UserUpdate {
        account_enabled: Some(false),
        ..UserUpdate::default()
    }
}

test_support::on_both_backends! {
    async fn renames_disables_deletions_and_restores_in_the_directory_reach_the_registry(db) {
        let (stack, users) = synced_with_imported(&db, 60, 40).await;
        let e = &stack.emulator;
        e.update_user(&users[0].id, UserUpdate { display_name: Some("Renamed Person".into()), ..UserUpdate::default() }).unwrap();
        e.update_user(&users[1].id, UserUpdate { user_principal_name: Some("new.upn@contoso.com".into()), ..UserUpdate::default() }).unwrap();
        e.update_user(&users[2].id, disable()).unwrap();
        e.soft_delete_user(&users[3].id).unwrap();
        e.hard_delete_user(&users[4].id).unwrap();
        let before_id = registry_user(&stack, &users[1].id).await.user_id;

        let run = stack.sync(pb::SyncMode::Delta).await;
        assert_eq!(run.status(), pb::SyncRunStatus::Succeeded, "{run:?}");
        assert_eq!(registry_user(&stack, &users[0].id).await.name, "Renamed Person");
        let renamed = registry_user(&stack, &users[1].id).await;
        assert_eq!((renamed.network_alias.as_str(), renamed.user_id.as_str()), ("new.upn@contoso.com", before_id.as_str()), "the alias follows the UPN, the user id stays");
        for user in &users[2..5] {
            assert!(!registry_user(&stack, &user.id).await.enabled, "{} is disabled", user.display_name);
        }
        assert!(registry_user(&stack, &users[5].id).await.enabled, "untouched users stay enabled");
        // The hard-deleted user is marked and kept (deleting is a separate, opt-in policy); a
        // soft-deleted one is not marked (it can come back).
        let marked: Vec<bool> = futures::future::join_all(users[2..6].iter().map(|u| registry_user(&stack, &u.id))).await.iter().map(|u| u.deleted_in_directory_at_ms > 0).collect();
        assert_eq!(marked, [false, false, true, false]);

        // The run's changes are audited as made through it.
        let events = stack.registry.clone().list_audit_events(registry_pb::ListAuditEventsRequest { via: run.run_id.clone(), page_size: 100, ..Default::default() }).await.unwrap().into_inner().events;
        let mut actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
        actions.sort_unstable();
        assert_eq!(actions, ["disable", "disable", "disable", "update", "update", "update"], "two renames and the deletion mark");

        // A soft-deleted user restored in the directory is enabled again.
        e.restore_user(&users[3].id).unwrap();
        let run = stack.sync(pb::SyncMode::Delta).await;
        assert_eq!(run.status(), pb::SyncRunStatus::Succeeded);
        assert!(registry_user(&stack, &users[3].id).await.enabled);
    }

    async fn with_the_delete_policy_a_user_hard_deleted_in_the_directory_is_deleted_from_the_registry(db) {
        let emulator = crate::helpers::start_emulator(graph_emulator::synthetic_users(30, "contoso.com")).await;
        let provisioning = directory_sync::config::ProvisioningConfig { delete_hard_deleted: true, ..Default::default() };
        let stack = Stack::spawn_provisioned(&db, emulator, crate::helpers::no_schedule(), provisioning).await;
        let members: Vec<EmulatedUser> = stack.emulator.users().into_iter().filter(|u| u.user_type == "Member" && u.account_enabled).take(20).collect();
        stack.import_into_registry(&members.iter().collect::<Vec<_>>()).await;
        assert_eq!(stack.full_sync().await.status(), pb::SyncRunStatus::Succeeded);
        let gone_id = registry_user(&stack, &members[0].id).await.user_id;
        stack.emulator.hard_delete_user(&members[0].id).unwrap();
        stack.emulator.soft_delete_user(&members[1].id).unwrap();

        let run = stack.sync(pb::SyncMode::Delta).await;
        assert_eq!(run.status(), pb::SyncRunStatus::Succeeded, "{run:?}");
        let lookup = registry_pb::GetUserRequest { key: Some(registry_pb::get_user_request::Key::UserId(gone_id.clone())) };
        let status = stack.registry.clone().get_user(lookup).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "the hard-deleted user is gone");
        assert!(!registry_user(&stack, &members[1].id).await.enabled, "a soft-deleted user is only disabled");
        let events = stack.registry.clone().list_audit_events(registry_pb::ListAuditEventsRequest { via: run.run_id.clone(), action: "delete".into(), page_size: 10, ..Default::default() }).await.unwrap().into_inner().events;
        assert_eq!(events.iter().map(|e| e.user_id.as_str()).collect::<Vec<_>>(), [gone_id.as_str()], "the deletion is audited with its run");
        assert_eq!(stack.sync(pb::SyncMode::Delta).await.status(), pb::SyncRunStatus::Succeeded, "the next round finds nothing left to delete");
    }

    async fn a_round_that_would_disable_too_many_users_halts_and_writes_nothing_until_approved(db) {
        let (stack, users) = synced_with_imported(&db, 30, 20).await;
        for user in &users[..6] {
            stack.emulator.update_user(&user.id, disable()).unwrap();
        }
        stack.emulator.update_user(&users[10].id, UserUpdate { display_name: Some("Also Renamed".into()), ..UserUpdate::default() }).unwrap();
        let halted = crate::helpers::run_to_end(&mut stack.directory.clone(), pb::SyncNowRequest { mode: pb::SyncMode::Delta.into(), ..Default::default() }).await;
        let run = halted.run.unwrap();
        assert_eq!(run.status(), pb::SyncRunStatus::AwaitingApproval, "30% of the registry: {run:?}");
        assert!(run.error.contains("would disable 6 of the registry's 20 users"), "{}", run.error);
        // Its preview lists what approving it writes: the six disabled and the rename.
        let preview = halted.preview.expect("a halted round's preview");
        assert_eq!((preview.would_disable, preview.would_update), (6, 7), "{preview:?}");
        let disabled: BTreeSet<&str> = preview.updates.iter().filter(|u| !u.enabled).map(|u| u.object_id.as_str()).collect();
        assert_eq!(disabled, users[..6].iter().map(|u| u.id.as_str()).collect::<BTreeSet<_>>());
        assert_eq!(enabled_count(&stack).await, 20, "nothing disabled");
        assert_ne!(registry_user(&stack, &users[10].id).await.name, "Also Renamed", "nothing written at all");

        let approved = stack.directory.clone().approve_sync_run(pb::ApproveSyncRunRequest { run_id: run.run_id.clone() }).await.unwrap().into_inner().run.unwrap();
        assert_eq!(approved.status(), pb::SyncRunStatus::Succeeded);
        assert_eq!(enabled_count(&stack).await, 14);
        assert_eq!(registry_user(&stack, &users[10].id).await.name, "Also Renamed");

        let again = stack.directory.clone().approve_sync_run(pb::ApproveSyncRunRequest { run_id: run.run_id.clone() }).await.unwrap_err();
        assert_eq!(again.code(), Code::FailedPrecondition, "{}", again.message());
        let unknown = stack.directory.clone().approve_sync_run(pb::ApproveSyncRunRequest { run_id: "no-such-run".into() }).await.unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound);
    }

    async fn a_rejected_run_changes_nothing_and_says_why(db) {
        let (stack, users) = synced_with_imported(&db, 30, 20).await;
        for user in &users[..5] {
            stack.emulator.soft_delete_user(&user.id).unwrap();
        }
        let run = stack.sync(pb::SyncMode::Delta).await;
        assert_eq!(run.status(), pb::SyncRunStatus::AwaitingApproval);
        let request = pb::RejectSyncRunRequest { run_id: run.run_id.clone(), reason: "HR import glitch".into() };
        let rejected = stack.directory.clone().reject_sync_run(request).await.unwrap().into_inner().run.unwrap();
        assert_eq!(rejected.status(), pb::SyncRunStatus::Rejected);
        assert!(rejected.error.contains("HR import glitch"));
        assert_eq!(enabled_count(&stack).await, 20);
    }

    async fn a_directory_outage_disables_nobody(db) {
        let (stack, users) = synced_with_imported(&db, 30, 20).await;
        stack.emulator.update_user(&users[0].id, disable()).unwrap();
        stack.emulator.inject(Fault::status("/v1.0/users/delta", 503, 50));
        let run = stack.sync(pb::SyncMode::Delta).await;
        assert_eq!(run.status(), pb::SyncRunStatus::Failed, "{run:?}");
        assert_eq!(enabled_count(&stack).await, 20);
        stack.emulator.clear_faults();
        let run = stack.sync(pb::SyncMode::Delta).await;
        assert_eq!(run.status(), pb::SyncRunStatus::Succeeded);
        assert_eq!(enabled_count(&stack).await, 19, "the next good round catches up");
    }

    async fn a_directory_that_answers_an_empty_page_set_disables_nobody(db) {
        let (mut stack, _) = synced_with_imported(&db, 30, 20).await;
        let empty = crate::helpers::start_emulator(Vec::new()).await;
        let mut directory = stack.directory_reading(crate::helpers::directory_config(&empty)).await;
        let run = crate::helpers::run_to_end(&mut directory, pb::SyncNowRequest { mode: pb::SyncMode::Full.into(), ..Default::default() }).await.run.unwrap();
        assert_eq!(run.status(), pb::SyncRunStatus::Failed, "{run:?}");
        assert_eq!(enabled_count(&stack).await, 20, "nobody is read as having left");
        let dry = crate::helpers::run_to_end(&mut directory, pb::SyncNowRequest { mode: pb::SyncMode::Full.into(), dry_run: true }).await;
        assert_eq!(dry.run.unwrap().status(), pb::SyncRunStatus::Failed, "a dry run of it fails the same way");
        assert!(dry.preview.is_none());
    }
}
