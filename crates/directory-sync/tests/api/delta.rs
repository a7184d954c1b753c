//! Delta rounds: only the changes are read, removals and restores are applied, a stale cursor
//! falls back to a full resync, and the mirror ends equal to the directory.

use graph_emulator::{EmulatedUser, EmulatorConfig, Fault, UserUpdate};
use proto::directory::v1 as pb;

use crate::helpers::{Stack, assert_mirror_equals_directory, start_emulator_with};

fn new_user(n: usize) -> EmulatedUser {
    EmulatedUser {
        id: format!("0d17a000-0000-4000-8000-{n:012x}"),
        user_principal_name: format!("new.person{n}@contoso.com"),
        mail: Some(format!("new.person{n}@contoso.com")),
        display_name: format!("New Person {n}"),
        given_name: Some("New".into()),
        surname: Some(format!("Person {n}")),
        account_enabled: true,
        user_type: "Member".into(),
    }
}

async fn deletion_state(stack: &Stack, object_id: &str) -> pb::DeletionState {
    let request = pb::GetUsersRequest {
        object_ids: vec![object_id.to_owned()],
        ..Default::default()
    };
    let found = stack
        .directory
        .clone()
        .get_users(request)
        .await
        .unwrap()
        .into_inner();
    found.users[0].deletion_state()
}

/// Reads of `/v1.0/users/delta` and of the plain listing since the log was cleared.
fn reads(stack: &Stack) -> (usize, usize) {
    let requests = stack.emulator.requests();
    let delta = requests
        .iter()
        .filter(|r| r.path_and_query.starts_with("/v1.0/users/delta"))
        .count();
    let listing = requests
        .iter()
        .filter(|r| r.path_and_query.starts_with("/v1.0/users?"))
        .count();
    (delta, listing)
}

test_support::on_both_backends! {
    async fn a_delta_round_after_one_percent_of_changes_reads_only_them_and_the_mirror_equals_the_directory(db) {
        const USERS: usize = 100_000;
        let emulator = start_emulator_with(EmulatorConfig::synthetic(USERS)).await;
        let stack = Stack::spawn_with(&db, emulator).await;
        let full = stack.full_sync().await;
        assert_eq!(full.status(), pb::SyncRunStatus::Succeeded, "{}", full.error);
        assert_eq!(full.users_seen, USERS as u64);

        // Round one: 200 users leave (soft-deleted), so round two can restore some.
        let users = stack.emulator.users();
        for user in &users[..200] {
            stack.emulator.soft_delete_user(&user.id).unwrap();
        }
        let first = stack.sync(pb::SyncMode::Delta).await;
        assert_eq!(first.mode(), pb::SyncMode::Delta);
        assert_eq!((first.users_seen, first.users_removed), (200, 200));
        assert_eq!(deletion_state(&stack, &users[0].id).await, pb::DeletionState::SoftDeleted);

        // Round two: 1 % of the tenant changes in six ways.
        for (i, user) in users[200..].iter().take(1_000).enumerate() {
            match i % 6 {
                0 => {
                    stack.emulator.create_user(new_user(i)).unwrap();
                }
                1 => {
                    let update = UserUpdate { display_name: Some(format!("Renamed {i}")), ..UserUpdate::default() };
                    stack.emulator.update_user(&user.id, update).unwrap();
                }
                2 => {
                    let update = UserUpdate { account_enabled: Some(!user.account_enabled), ..UserUpdate::default() };
                    stack.emulator.update_user(&user.id, update).unwrap();
                }
                3 => {
                    stack.emulator.soft_delete_user(&user.id).unwrap();
                }
                4 => {
                    stack.emulator.hard_delete_user(&user.id).unwrap();
                }
                _ => {
                    stack.emulator.restore_user(&users[i / 6].id).unwrap();
                }
            }
        }
        stack.emulator.clear_requests();
        let second = stack.sync(pb::SyncMode::Delta).await;
        assert_eq!(second.status(), pb::SyncRunStatus::Succeeded, "{}", second.error);
        assert_eq!(second.mode(), pb::SyncMode::Delta);
        assert_eq!(second.users_created, 167, "new users");
        assert_eq!(second.users_updated, 167 + 167 + 166, "renamed, enabled or disabled, restored");
        assert_eq!(second.users_removed, 167 + 166, "soft- and hard-deleted");
        let (delta_reads, listing_reads) = reads(&stack);
        assert_eq!(listing_reads, 0, "a delta round never lists the tenant");
        assert!(delta_reads <= 6, "only the changes were read ({delta_reads} delta pages)");

        assert_mirror_equals_directory(&stack.stream(None, 1000).await, &stack.emulator.users());
        assert_eq!(deletion_state(&stack, &users[200 + 3].id).await, pb::DeletionState::SoftDeleted);
        assert_eq!(deletion_state(&stack, &users[200 + 4].id).await, pb::DeletionState::HardDeleted);
        assert_eq!(deletion_state(&stack, &users[199].id).await, pb::DeletionState::SoftDeleted, "not restored");
        assert_eq!(deletion_state(&stack, &users[0].id).await, pb::DeletionState::Present, "restored");
    }

    async fn an_expired_delta_link_falls_back_to_a_full_resync(db) {
        let stack = Stack::spawn(&db, 500).await;
        stack.full_sync().await;
        let users = stack.emulator.users();
        stack.emulator.hard_delete_user(&users[7].id).unwrap();
        stack.emulator.expire_delta_tokens();
        let run = stack.sync(pb::SyncMode::Delta).await;
        assert_eq!(run.status(), pb::SyncRunStatus::Succeeded, "{}", run.error);
        assert_eq!(run.mode(), pb::SyncMode::Full, "recorded as the full round it became");
        assert_eq!(run.users_removed, 1);
        assert_mirror_equals_directory(&stack.stream(None, 500).await, &stack.emulator.users());
        // The resync stored a fresh link: the next round is a delta round again.
        let next = stack.sync(pb::SyncMode::Delta).await;
        assert_eq!(next.mode(), pb::SyncMode::Delta);
        assert_eq!(next.users_seen, 0);
    }

    async fn a_delta_round_before_any_full_sync_runs_as_a_full_sync(db) {
        let stack = Stack::spawn(&db, 120).await;
        let run = stack.sync(pb::SyncMode::Delta).await;
        assert_eq!(run.status(), pb::SyncRunStatus::Succeeded, "{}", run.error);
        assert_eq!(run.mode(), pb::SyncMode::Full);
        assert_eq!(run.users_created, 120);
    }

    async fn replayed_and_duplicated_delta_entries_change_nothing_twice(db) {
        let config = EmulatorConfig { duplicate_delta_entries: true, delta_page_size: 10, ..EmulatorConfig::synthetic(300) };
        let stack = Stack::spawn_with(&db, start_emulator_with(config).await).await;
        stack.full_sync().await;
        let users = stack.emulator.users();
        for user in &users[..25] {
            let update = UserUpdate { display_name: Some(format!("{} II", user.display_name)), ..UserUpdate::default() };
            stack.emulator.update_user(&user.id, update).unwrap();
        }
        for user in &users[25..30] {
            stack.emulator.hard_delete_user(&user.id).unwrap();
        }
        let run = stack.sync(pb::SyncMode::Delta).await;
        assert_eq!(run.status(), pb::SyncRunStatus::Succeeded, "{}", run.error);
        assert_eq!((run.users_updated, run.users_removed), (25, 5), "each change counted once");
        assert_mirror_equals_directory(&stack.stream(None, 500).await, &stack.emulator.users());
    }

    async fn a_failed_delta_round_keeps_its_link_and_the_next_round_catches_up(db) {
        let config = EmulatorConfig { delta_page_size: 20, ..EmulatorConfig::synthetic(200) };
        let stack = Stack::spawn_with(&db, start_emulator_with(config).await).await;
        stack.full_sync().await;
        let users = stack.emulator.users();
        for user in &users[..100] {
            stack.emulator.update_user(&user.id, UserUpdate { account_enabled: Some(false), ..UserUpdate::default() }).unwrap();
        }
        // Graph keeps failing beyond the client's retries.
        stack.emulator.inject(Fault::status("/v1.0/users/delta", 500, 50));
        let failed = stack.sync(pb::SyncMode::Delta).await;
        assert_eq!(failed.status(), pb::SyncRunStatus::Failed);
        assert!(!failed.error.is_empty());
        stack.emulator.clear_faults();
        let next = stack.sync(pb::SyncMode::Delta).await;
        assert_eq!(next.status(), pb::SyncRunStatus::Succeeded, "{}", next.error);
        assert_eq!(next.mode(), pb::SyncMode::Delta, "the stored link was kept");
        assert_mirror_equals_directory(&stack.stream(None, 500).await, &stack.emulator.users());
    }

    async fn a_user_with_unusable_data_is_rejected_alone_and_a_huge_name_is_cut_to_its_limit(db) {
        let stack = Stack::spawn(&db, 50).await;
        stack.full_sync().await;
        let mut bad = new_user(1);
        bad.user_principal_name = "tab\tin@contoso.com".into();
        stack.emulator.create_user(bad).unwrap();
        let mut huge = new_user(2);
        huge.display_name = "N".repeat(100 * 1024);
        stack.emulator.create_user(huge.clone()).unwrap();
        stack.emulator.create_user(new_user(3)).unwrap();
        let run = stack.sync(pb::SyncMode::Delta).await;
        assert_eq!(run.status(), pb::SyncRunStatus::Succeeded, "{}", run.error);
        assert_eq!((run.users_created, run.users_rejected), (2, 1));
        let found = stack
            .directory
            .clone()
            .get_users(pb::GetUsersRequest { object_ids: vec![huge.id.clone()], ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        // Cut to what the requests that carry it accept (1024 bytes), so it can be imported.
        assert_eq!(found.users[0].display_name.len(), 1024);
    }

    async fn a_scheduled_delta_round_picks_up_changes_and_reports_the_next_run(db) {
        let mut sync = crate::helpers::no_schedule();
        sync.delta_interval_secs = 1;
        let emulator = start_emulator_with(EmulatorConfig::synthetic(40)).await;
        let stack = Stack::spawn_configured(&db, emulator, sync).await;
        stack.full_sync().await;
        let users = stack.emulator.users();
        stack.emulator.update_user(&users[3].id, UserUpdate { display_name: Some("Scheduled Rename".into()), ..UserUpdate::default() }).unwrap();
        let status = stack.directory.clone().get_sync_status(pb::GetSyncStatusRequest {}).await.unwrap().into_inner();
        assert!(status.next_run_at_ms > 0, "a next run is scheduled");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let listed = stack.list(pb::ListUsersRequest { search: "scheduled".into(), ..Default::default() }).await;
            if listed.users.len() == 1 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no scheduled round applied the rename");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let status = stack.directory.clone().get_sync_status(pb::GetSyncStatusRequest {}).await.unwrap().into_inner();
        assert_eq!(status.last_run.unwrap().mode(), pb::SyncMode::Delta);
    }
}
