//! Group scope: the transitive user members of configured groups are mirrored, listed and
//! streamed, and follow the group's changes.

use std::collections::{BTreeSet, HashMap};

use graph_emulator::{EmulatedGroup, EmulatorConfig, GroupMember, SYNTHETIC_GROUP_IDS};
use proto::directory::v1 as pb;
use tonic::Code;

use crate::helpers::{Stack, no_schedule, start_emulator_with};

/// The user ids a group holds directly or through nested groups.
fn transitive_users(groups: &[EmulatedGroup], group_id: &str) -> BTreeSet<String> {
    let by_id: HashMap<&str, &EmulatedGroup> = groups.iter().map(|g| (g.id.as_str(), g)).collect();
    let mut users = BTreeSet::new();
    let mut pending = vec![group_id.to_owned()];
    let mut visited = BTreeSet::new();
    while let Some(id) = pending.pop() {
        if !visited.insert(id.clone()) {
            continue;
        }
        for member in &by_id[id.as_str()].members {
            match member {
                GroupMember::User(user) => {
                    users.insert(user.clone());
                }
                GroupMember::Group(nested) => pending.push(nested.clone()),
                _ => {}
            }
        }
    }
    users
}

async fn stack_with_group(db: &test_support::TestDatabase, group: &str) -> Stack {
    let emulator = start_emulator_with(EmulatorConfig::synthetic_with_groups(300)).await;
    let mut sync = no_schedule();
    sync.groups = vec![group.to_owned()];
    Stack::spawn_configured(db, emulator, sync).await
}

async fn listed_ids(stack: &Stack, group: &str) -> BTreeSet<String> {
    let request = pb::ListUsersRequest {
        group_id: group.into(),
        page_size: 1000,
        ..Default::default()
    };
    stack
        .list(request)
        .await
        .users
        .into_iter()
        .map(|u| u.object_id)
        .collect()
}

test_support::on_both_backends! {
    async fn a_user_who_leaves_every_synced_group_is_disabled_in_the_registry_and_enabled_when_back(db) {
        let group = SYNTHETIC_GROUP_IDS[1];
        let stack = stack_with_group(&db, group).await;
        stack.full_sync().await;
        let members = transitive_users(&stack.emulator.groups(), group);
        let tenant = stack.emulator.users();
        let imported: Vec<&graph_emulator::EmulatedUser> = tenant.iter().filter(|u| members.contains(&u.id) && u.account_enabled).collect();
        assert!(imported.len() >= 10, "{} members", imported.len());
        stack.import_into_registry(&imported).await;
        let direct_user = stack.emulator.groups().into_iter().find(|g| g.id == group).unwrap().members.into_iter()
            .find_map(|m| match m { GroupMember::User(id) if imported.iter().any(|u| u.id == id) => Some(id), _ => None })
            .unwrap();
        let enabled = |stack: &Stack, id: String| {
            let mut registry = stack.registry.clone();
            let tenant_id = stack.emulator.tenant_id().to_owned();
            async move {
                let key = proto::registry::v1::ObjectKey { tenant_id, object_id: id };
                let request = proto::registry::v1::GetUserRequest { key: Some(proto::registry::v1::get_user_request::Key::Object(key)) };
                registry.get_user(request).await.unwrap().into_inner().user.unwrap().enabled
            }
        };
        assert!(enabled(&stack, direct_user.clone()).await);

        assert!(stack.emulator.remove_group_member(group, &direct_user).unwrap());
        let run = stack.sync(pb::SyncMode::Delta).await;
        assert_eq!(run.status(), pb::SyncRunStatus::Succeeded, "{}", run.error);
        assert!(!enabled(&stack, direct_user.clone()).await, "out of scope: disabled");

        stack.emulator.add_group_member(group, GroupMember::User(direct_user.clone())).unwrap();
        let run = stack.sync(pb::SyncMode::Delta).await;
        assert_eq!(run.status(), pb::SyncRunStatus::Succeeded, "{}", run.error);
        assert!(enabled(&stack, direct_user).await, "back in scope: enabled again");
    }

    async fn a_synced_group_lists_and_streams_exactly_its_transitive_user_members(db) {
        let group = SYNTHETIC_GROUP_IDS[1];
        let stack = stack_with_group(&db, group).await;
        let run = stack.full_sync().await;
        assert_eq!(run.status(), pb::SyncRunStatus::Succeeded, "{}", run.error);
        let expected = transitive_users(&stack.emulator.groups(), group);
        assert!(!expected.is_empty());
        assert_eq!(listed_ids(&stack, group).await, expected);
        let streamed: BTreeSet<String> = stack.stream(Some(group), 7).await.into_iter().map(|u| u.object_id).collect();
        assert_eq!(streamed, expected);
        let groups = stack.directory.clone().list_groups(pb::ListGroupsRequest::default()).await.unwrap().into_inner();
        assert_eq!(groups.groups.len(), 1);
        assert_eq!(groups.groups[0].object_id, group);
        assert_eq!(groups.groups[0].member_count, expected.len() as u64);
    }

    async fn a_user_who_leaves_the_group_is_no_longer_in_its_scope_after_the_next_round(db) {
        let group = SYNTHETIC_GROUP_IDS[1];
        let stack = stack_with_group(&db, group).await;
        stack.full_sync().await;
        let direct_user = stack
            .emulator
            .groups()
            .into_iter()
            .find(|g| g.id == group)
            .unwrap()
            .members
            .into_iter()
            .find_map(|m| match m {
                GroupMember::User(id) => Some(id),
                _ => None,
            })
            .unwrap();
        assert!(stack.emulator.remove_group_member(group, &direct_user).unwrap());
        let run = stack.sync(pb::SyncMode::Delta).await;
        assert_eq!(run.status(), pb::SyncRunStatus::Succeeded, "{}", run.error);
        let listed = listed_ids(&stack, group).await;
        assert!(!listed.contains(&direct_user));
        assert_eq!(listed, transitive_users(&stack.emulator.groups(), group));
        // The user is still in the directory, only not in the group, and so out of the
        // tenant's scope: the listing of everyone leaves it out.
        let everyone = stack.list(pb::ListUsersRequest { page_size: 1000, ..Default::default() }).await;
        assert!(!everyone.users.iter().any(|u| u.object_id == direct_user));
        let looked_up = stack.directory.clone().get_users(pb::GetUsersRequest { object_ids: vec![direct_user.clone()], ..Default::default() }).await.unwrap().into_inner();
        assert_eq!(looked_up.users.len(), 1, "still mirrored");
    }

    async fn a_group_that_is_not_synced_cannot_scope_a_listing_or_a_stream(db) {
        let stack = stack_with_group(&db, SYNTHETIC_GROUP_IDS[1]).await;
        stack.full_sync().await;
        let request = pb::ListUsersRequest { group_id: SYNTHETIC_GROUP_IDS[2].into(), ..Default::default() };
        let err = stack.directory.clone().list_users(request).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(err.message().contains(SYNTHETIC_GROUP_IDS[2]), "{}", err.message());
        let scope = Some(pb::Scope { scope: Some(pb::scope::Scope::GroupId("not-a-guid".into())) });
        let err = stack
            .directory
            .clone()
            .stream_users(pb::StreamUsersRequest { scope, ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }

    async fn a_configured_group_the_directory_does_not_know_fails_the_round_by_name(db) {
        let missing = "00000000-0000-4000-8000-00000000dead";
        let stack = stack_with_group(&db, missing).await;
        let run = stack.full_sync().await;
        assert_eq!(run.status(), pb::SyncRunStatus::Failed);
        assert!(run.error.contains(missing), "{}", run.error);
    }
}

test_support::on_both_backends! {
    async fn with_synced_groups_the_tenant_is_their_members_in_listings_streams_and_the_out_of_scope_policy(db) {
        let group = SYNTHETIC_GROUP_IDS[1];
        let stack = stack_with_group(&db, group).await;
        stack.full_sync().await;
        let members = transitive_users(&stack.emulator.groups(), group);

        // Listing and streaming "everyone" take only the synced groups' members.
        let listed: BTreeSet<String> = stack
            .list(pb::ListUsersRequest { page_size: 1000, not_imported_only: Some(false), ..Default::default() })
            .await
            .users
            .into_iter()
            .map(|u| u.object_id)
            .collect();
        assert_eq!(listed, members, "the listing is the groups' members");
        let streamed: BTreeSet<String> = stack.stream(None, 50).await.into_iter().map(|u| u.object_id).collect();
        assert_eq!(streamed, members, "a batch import's stream is the groups' members");

        // A user imported while out of scope is disabled by the next full round.
        let tenant = stack.emulator.users();
        let outsider = tenant.iter().find(|u| !members.contains(&u.id) && u.account_enabled && u.user_type == "Member").unwrap();
        stack.import_into_registry(&[outsider]).await;
        let run = stack.full_sync().await;
        // Disabling the registry's only user is over the safety share: the round waits.
        assert_eq!(run.status(), pb::SyncRunStatus::AwaitingApproval, "{run:?}");
        stack.directory.clone().approve_sync_run(pb::ApproveSyncRunRequest { run_id: run.run_id.clone() }).await.unwrap();
        let key = proto::registry::v1::ObjectKey { tenant_id: stack.emulator.tenant_id().to_owned(), object_id: outsider.id.clone() };
        let request = proto::registry::v1::GetUserRequest { key: Some(proto::registry::v1::get_user_request::Key::Object(key)) };
        let user = stack.registry.clone().get_user(request).await.unwrap().into_inner().user.unwrap();
        assert!(!user.enabled, "out of scope: disabled by the out-of-scope policy");
    }
}
