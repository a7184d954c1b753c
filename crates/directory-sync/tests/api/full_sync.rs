use std::collections::HashSet;

use futures::StreamExt as _;
use proto::directory::v1 as pb;

use crate::helpers::{Stack, directory_config, start_emulator};

async fn stream_all(stack: &Stack, batch_size: u32) -> Vec<pb::DirectoryUser> {
    let request = pb::StreamUsersRequest {
        batch_size,
        ..Default::default()
    };
    let mut stream = stack
        .directory
        .clone()
        .stream_users(request)
        .await
        .unwrap()
        .into_inner();
    let mut users = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.unwrap();
        assert!(batch.users.len() <= batch_size as usize);
        users.extend(batch.users);
    }
    users
}

test_support::on_both_backends! {
    async fn a_full_sync_mirrors_every_directory_user(db) {
        let stack = Stack::spawn(&db, 2_100).await;
        let run = stack.full_sync().await;
        assert_eq!(run.status(), pb::SyncRunStatus::Succeeded, "{}", run.error);
        assert_eq!((run.users_seen, run.users_created, run.users_updated, run.users_removed), (2_100, 2_100, 0, 0));
        // The tenant was read in pages of 999, following nextLink.
        let user_pages = stack.emulator.requests().iter().filter(|r| r.path_and_query.starts_with("/v1.0/users?")).count();
        assert_eq!(user_pages, 3);

        let mirrored = stream_all(&stack, 333).await;
        let expected: HashSet<String> = stack.emulator.users().into_iter().map(|u| u.id).collect();
        let ids: Vec<String> = mirrored.iter().map(|u| u.object_id.clone()).collect();
        assert_eq!(ids.len(), 2_100);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "streamed in object id order, each once");
        assert_eq!(ids.into_iter().collect::<HashSet<_>>(), expected);
        let guests = mirrored.iter().filter(|u| u.account_type() == pb::AccountType::Guest).count();
        let disabled = mirrored.iter().filter(|u| !u.account_enabled).count();
        assert_eq!(guests, 2_100 / 50 * 3);
        assert_eq!(disabled, 2_100 / 50 * 2);
    }

    async fn a_second_full_sync_of_an_unchanged_tenant_changes_nothing(db) {
        let stack = Stack::spawn(&db, 300).await;
        stack.full_sync().await;
        let again = stack.full_sync().await;
        assert_eq!(again.status(), pb::SyncRunStatus::Succeeded);
        assert_eq!((again.users_seen, again.users_created, again.users_updated, again.users_removed), (300, 0, 0, 0));
        let status = stack.directory.clone().get_sync_status(pb::GetSyncStatusRequest {}).await.unwrap().into_inner();
        assert_eq!(status.mirrored_users, 300);
        assert_eq!(status.last_run.unwrap().run_id, again.run_id);
        assert_eq!(status.tenant_id, stack.emulator.tenant_id());
    }

    async fn users_gone_from_the_directory_are_marked_deleted_and_changed_ones_updated(db) {
        let mut stack = Stack::spawn(&db, 100).await;
        stack.full_sync().await;
        let mut users = stack.emulator.users();
        users.truncate(95);
        users[0].display_name = "Renamed Person".into();
        users[1].account_enabled = !users[1].account_enabled;
        let later = start_emulator(users).await;
        let mut directory = stack.directory_reading(directory_config(&later)).await;
        let run = crate::helpers::run_to_end(&mut directory, pb::SyncNowRequest { mode: pb::SyncMode::Full.into(), ..Default::default() })
            .await
            .run
            .unwrap();
        assert_eq!(run.status(), pb::SyncRunStatus::Succeeded, "{}", run.error);
        assert_eq!((run.users_seen, run.users_created, run.users_updated, run.users_removed), (95, 0, 2, 5));
        assert_eq!(stream_all(&stack, 500).await.len(), 95);
    }

    async fn a_directory_that_suddenly_lists_nobody_deletes_nobody(db) {
        let mut stack = Stack::spawn(&db, 60).await;
        stack.full_sync().await;
        let empty = start_emulator(Vec::new()).await;
        let mut directory = stack.directory_reading(directory_config(&empty)).await;
        let run = crate::helpers::run_to_end(&mut directory, pb::SyncNowRequest { mode: pb::SyncMode::Full.into(), ..Default::default() })
            .await
            .run
            .unwrap();
        assert_eq!(run.status(), pb::SyncRunStatus::Failed);
        assert!(run.error.contains("no users"), "{}", run.error);
        assert_eq!(stream_all(&stack, 500).await.len(), 60);
    }

    async fn a_sync_that_cannot_authenticate_fails_with_a_reason_and_keeps_the_mirror(db) {
        let mut stack = Stack::spawn(&db, 10).await;
        stack.full_sync().await;
        let mut wrong_secret = directory_config(&stack.emulator);
        wrong_secret.client_secret = "not-the-secret".to_owned().into();
        let mut directory = stack.directory_reading(wrong_secret).await;
        let run = crate::helpers::run_to_end(&mut directory, pb::SyncNowRequest { mode: pb::SyncMode::Full.into(), ..Default::default() })
            .await
            .run
            .unwrap();
        assert_eq!(run.status(), pb::SyncRunStatus::Failed);
        assert!(run.error.contains("AADSTS7000215") || run.error.contains("invalid_client"), "{}", run.error);
        assert!(!run.error.contains("not-the-secret"));
        assert_eq!(stream_all(&stack, 500).await.len(), 10);
        let runs = stack.directory.clone().list_sync_runs(pb::ListSyncRunsRequest::default()).await.unwrap().into_inner();
        assert_eq!(runs.runs.len(), 2);
        assert_eq!(runs.runs[0].status(), pb::SyncRunStatus::Failed);
    }
}
