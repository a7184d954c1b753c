//! Issue 8: group-to-role rules grant and revoke exactly their own grants; a sync round and a
//! batch import can be previewed, and the preview is what the real run then does.

use std::collections::BTreeSet;

use proto::directory::v1 as directory_pb;
use proto::importer::v1 as importer_pb;
use proto::registry::v1 as registry_pb;
use test_support::TestDatabase;

use crate::helpers::{EndToEnd, Setup};

const GROUP: &str = "6a1e0000-0000-4000-8000-0000000000a1";

/// Indexes of the first `n` enabled members of a synthetic tenant of `size` users (they can
/// all be imported).
fn importable(size: usize, n: usize) -> Vec<usize> {
    graph_emulator::EmulatorConfig::synthetic(size)
        .users
        .iter()
        .enumerate()
        .filter(|(_, u)| u.user_type == "Member" && u.account_enabled)
        .map(|(i, _)| i)
        .take(n)
        .collect()
}

/// A stack whose group GROUP holds tenant users `members`, synced once.
async fn with_group(db: &TestDatabase, size: usize, members: Vec<usize>) -> EndToEnd {
    let setup = Setup {
        groups: vec![(GROUP.to_owned(), members)],
        ..Setup::default()
    };
    EndToEnd::start_configured(db, size, setup).await
}

async fn get_user(e2e: &EndToEnd, object_id: &str) -> registry_pb::GetUserResponse {
    let request = registry_pb::GetUserRequest {
        key: Some(registry_pb::get_user_request::Key::Object(
            registry_pb::ObjectKey {
                tenant_id: graph_emulator::SYNTHETIC_TENANT_ID.into(),
                object_id: object_id.into(),
            },
        )),
    };
    e2e.registry
        .clone()
        .get_user(request)
        .await
        .unwrap()
        .into_inner()
}

/// The user's roles as (role, company, sources).
async fn roles(e2e: &EndToEnd, object_id: &str) -> Vec<(String, String, Vec<String>)> {
    let response = get_user(e2e, object_id).await;
    response
        .roles
        .into_iter()
        .map(|r| (r.role_id, r.company, r.sources))
        .collect()
}

async fn user_id(e2e: &EndToEnd, object_id: &str) -> String {
    get_user(e2e, object_id).await.user.unwrap().user_id
}

async fn sync(e2e: &EndToEnd, dry_run: bool) -> directory_pb::WatchSyncRunResponse {
    let request = directory_pb::SyncNowRequest {
        mode: directory_pb::SyncMode::Delta.into(),
        dry_run,
    };
    crate::helpers::round_to_end(&mut e2e.directory.clone(), request).await
}

/// The audit trail of one run, job or request, as (action, user id).
async fn audited(e2e: &EndToEnd, via: &str) -> BTreeSet<(String, String)> {
    let request = registry_pb::ListAuditEventsRequest {
        via: via.into(),
        page_size: 1000,
        ..Default::default()
    };
    let events = e2e
        .registry
        .clone()
        .list_audit_events(request)
        .await
        .unwrap()
        .into_inner()
        .events;
    events.into_iter().map(|e| (e.action, e.user_id)).collect()
}

async fn add_rule(
    e2e: &EndToEnd,
    role: &str,
    company: &str,
    dry_run: bool,
) -> importer_pb::AddRoleRuleResponse {
    let request = importer_pb::AddRoleRuleRequest {
        rule: Some(importer_pb::RoleRule {
            group_id: GROUP.into(),
            role_id: role.into(),
            company: company.into(),
            ..Default::default()
        }),
        dry_run,
    };
    e2e.importer
        .clone()
        .add_role_rule(request)
        .await
        .unwrap()
        .into_inner()
}

async fn grant_manually(e2e: &EndToEnd, user_ids: Vec<String>, role: &str, company: &str) {
    let request = registry_pb::AssignRolesRequest {
        user_ids,
        role_ids: vec![role.into()],
        company: company.into(),
    };
    e2e.registry.clone().assign_roles(request).await.unwrap();
}

fn manual(role: &str, company: &str) -> (String, String, Vec<String>) {
    (role.into(), company.into(), vec!["manual".into()])
}

test_support::on_both_backends! {
    async fn rules_grant_and_revoke_only_their_own_grants(db) {
        let picked = importable(60, 24);
        let (members, outsiders) = (picked[..12].to_vec(), picked[12..].to_vec());
        let e2e = with_group(&db, 60, members.clone()).await;
        let tenant = e2e.tenant();
        let id = |i: usize| tenant[i].id.clone();
        let imported = e2e.import(picked.iter().map(|&i| id(i)).collect(), "DAT").await.unwrap();
        assert_eq!(imported.counts.unwrap().created, 24);
        // An administrator's own grants of the same role: to a member and to an outsider.
        let (member_0, outsider_0) = (user_id(&e2e, &id(members[0])).await, user_id(&e2e, &id(outsiders[0])).await);
        grant_manually(&e2e, vec![member_0.clone(), outsider_0.clone()], "ACCOUNTANT", "USMF").await;

        // A dry run of the rule shows its grants and changes nothing.
        let preview = add_rule(&e2e, "ACCOUNTANT", "USMF", true).await;
        assert_eq!(preview.changes.as_ref().unwrap().granted, 12);
        let rules = e2e.importer.clone().list_role_rules(importer_pb::ListRoleRulesRequest {}).await.unwrap().into_inner().rules;
        assert!(rules.is_empty(), "a dry run stores no rule");
        assert!(roles(&e2e, &id(members[1])).await.is_empty(), "and grants nothing");

        let added = add_rule(&e2e, "ACCOUNTANT", "USMF", false).await;
        let rule = added.rule.unwrap();
        let source = format!("rule:{}", rule.rule_id);
        let changes = added.changes.unwrap();
        assert_eq!((changes.granted, changes.revoked), (12, 0), "every member the registry holds");
        let preview_ids: BTreeSet<String> = preview.changes.unwrap().changes.into_iter().map(|c| c.object_id).collect();
        let real_ids: BTreeSet<String> = changes.changes.iter().map(|c| c.object_id.clone()).collect();
        assert_eq!(preview_ids, real_ids, "the dry run named exactly the users then granted");
        assert_eq!(roles(&e2e, &id(members[0])).await, [("ACCOUNTANT".into(), "USMF".into(), vec!["manual".into(), source.clone()])]);
        assert_eq!(roles(&e2e, &id(members[5])).await, [("ACCOUNTANT".into(), "USMF".into(), vec![source.clone()])]);
        assert_eq!(roles(&e2e, &id(outsiders[0])).await, [manual("ACCOUNTANT", "USMF")]);
        assert!(roles(&e2e, &id(outsiders[1])).await.is_empty());
        let again = add_rule(&e2e, "ACCOUNTANT", "USMF", false).await;
        assert_eq!(again.rule.unwrap().rule_id, rule.rule_id, "the same rule again is the same rule");
        assert_eq!(again.changes.unwrap().granted, 0);

        // An administrator's revoke leaves the rule's grant alone.
        let member_5 = user_id(&e2e, &id(members[5])).await;
        let revoke = registry_pb::RevokeRolesRequest { user_ids: vec![member_5], role_ids: vec!["ACCOUNTANT".into()], company: String::new(), all_sources: false };
        assert_eq!(e2e.registry.clone().revoke_roles(revoke).await.unwrap().into_inner().revoked, 0);
        assert_eq!(roles(&e2e, &id(members[5])).await.len(), 1);

        // Two members leave the group, an outsider joins: the next round moves the rule's
        // grants, and only those.
        let emulator = e2e.stack.emulator.as_ref().unwrap();
        emulator.remove_group_member(GROUP, &id(members[0])).unwrap();
        emulator.remove_group_member(GROUP, &id(members[1])).unwrap();
        emulator.add_group_member(GROUP, graph_emulator::GroupMember::User(id(outsiders[0]))).unwrap();
        emulator.add_group_member(GROUP, graph_emulator::GroupMember::User(id(outsiders[1]))).unwrap();
        let round = sync(&e2e, false).await.run.unwrap();
        assert_eq!(round.status(), directory_pb::SyncRunStatus::Succeeded, "{round:?}");
        assert_eq!(roles(&e2e, &id(members[0])).await, [manual("ACCOUNTANT", "USMF")], "the manual grant stays");
        assert!(roles(&e2e, &id(members[1])).await.is_empty());
        assert_eq!(roles(&e2e, &id(outsiders[0])).await, [("ACCOUNTANT".into(), "USMF".into(), vec!["manual".into(), source.clone()])]);
        assert_eq!(roles(&e2e, &id(outsiders[1])).await, [("ACCOUNTANT".into(), "USMF".into(), vec![source.clone()])]);
        let member_1 = user_id(&e2e, &id(members[1])).await;
        let outsider_1 = user_id(&e2e, &id(outsiders[1])).await;
        let by_round: BTreeSet<(String, String)> = audited(&e2e, &round.run_id).await.into_iter().filter(|(a, _)| a.starts_with("role.")).collect();
        let expected: BTreeSet<(String, String)> = [
            ("role.revoke", member_0.as_str()), ("role.revoke", member_1.as_str()),
            ("role.grant", outsider_0.as_str()), ("role.grant", outsider_1.as_str()),
        ].into_iter().map(|(a, u)| (a.to_owned(), u.to_owned())).collect();
        assert_eq!(by_round, expected, "the round's rule changes are audited with the round");

        // Removing the rule revokes what it granted (11 members now) and nothing else.
        let remove = importer_pb::RemoveRoleRuleRequest { rule_id: rule.rule_id.clone(), dry_run: false };
        let removed = e2e.importer.clone().remove_role_rule(remove).await.unwrap().into_inner().changes.unwrap();
        assert_eq!((removed.granted, removed.revoked), (0, 12));
        assert_eq!(roles(&e2e, &id(members[0])).await, [manual("ACCOUNTANT", "USMF")]);
        assert_eq!(roles(&e2e, &id(outsiders[0])).await, [manual("ACCOUNTANT", "USMF")]);
        assert!(roles(&e2e, &id(members[5])).await.is_empty());
        assert_eq!(audited(&e2e, &source).await.iter().filter(|(a, _)| a == "role.revoke").count(), 12, "the removal is audited with the rule");
        let rules = e2e.importer.clone().list_role_rules(importer_pb::ListRoleRulesRequest {}).await.unwrap().into_inner().rules;
        assert!(rules.is_empty());
    }

    async fn a_rule_naming_an_unknown_role_company_or_unsynced_group_is_refused_and_not_stored(db) {
        let e2e = with_group(&db, 20, importable(20, 3)).await;
        let add = |group: &str, role: &str, company: &str| importer_pb::AddRoleRuleRequest {
            rule: Some(importer_pb::RoleRule { group_id: group.into(), role_id: role.into(), company: company.into(), ..Default::default() }),
            dry_run: false,
        };
        for (request, code, mentions) in [
            (add(GROUP, "NO_SUCH_ROLE", ""), tonic::Code::NotFound, "NO_SUCH_ROLE"),
            (add(GROUP, "ACCOUNTANT", "ZZZZ"), tonic::Code::NotFound, "ZZZZ"),
            (add(GROUP, "SYSADMIN", "USMF"), tonic::Code::InvalidArgument, "every company"),
            (add("6a1e0000-0000-4000-8000-0000000000ff", "ACCOUNTANT", ""), tonic::Code::FailedPrecondition, "sync.groups"),
            (add("not-a-guid", "ACCOUNTANT", ""), tonic::Code::InvalidArgument, "group_id"),
        ] {
            let status = e2e.importer.clone().add_role_rule(request).await.unwrap_err();
            assert_eq!(status.code(), code, "{}", status.message());
            assert!(status.message().contains(mentions), "{}", status.message());
        }
        let rules = e2e.importer.clone().list_role_rules(importer_pb::ListRoleRulesRequest {}).await.unwrap().into_inner().rules;
        assert!(rules.is_empty());
        let unknown = e2e.importer.clone().remove_role_rule(importer_pb::RemoveRoleRuleRequest { rule_id: "r-nosuchrule".into(), dry_run: false }).await.unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);
    }

    async fn a_sync_dry_run_reports_exactly_what_approving_it_then_does(db) {
        let members = importable(60, 12);
        let e2e = with_group(&db, 60, members.clone()).await;
        let tenant = e2e.tenant();
        let id = |i: usize| tenant[i].id.clone();
        e2e.import(members.iter().map(|&i| id(i)).collect(), "DAT").await.unwrap();
        // (The import's own reconcile may race the rule's first one: either grants.)
        add_rule(&e2e, "SALES_CLERK", "", false).await;
        for &i in &members {
            assert_eq!(roles(&e2e, &id(i)).await.len(), 1, "every member holds the rule's grant");
        }
        let before: Vec<registry_pb::RegistryUser> = e2e.registry_users().await;

        let emulator = e2e.stack.emulator.as_ref().unwrap();
        emulator.update_user(&id(members[2]), graph_emulator::UserUpdate { user_principal_name: Some("renamed.person@contoso.com".into()), ..Default::default() }).unwrap();
        emulator.update_user(&id(members[3]), graph_emulator::UserUpdate { account_enabled: Some(false), ..Default::default() }).unwrap();
        emulator.soft_delete_user(&id(members[4])).unwrap();
        emulator.hard_delete_user(&id(members[5])).unwrap();
        emulator.remove_group_member(GROUP, &id(members[6])).unwrap();

        let response = sync(&e2e, true).await;
        let run = response.run.unwrap();
        assert_eq!(run.status(), directory_pb::SyncRunStatus::AwaitingApproval, "{run:?}");
        let preview = response.preview.unwrap();
        assert_eq!(e2e.registry_users().await, before, "a dry run writes no user");
        assert_eq!(roles(&e2e, &id(members[6])).await.len(), 1, "and no grant");
        assert!(audited(&e2e, &run.run_id).await.is_empty(), "and no audit event");

        let uid = |i: usize| before.iter().find(|u| u.object_id == id(members[i])).unwrap().user_id.clone();
        // What the preview says, as (audit action, user id).
        let mut previewed = BTreeSet::new();
        for update in &preview.updates {
            let fields: Vec<&str> = update.changed.iter().map(String::as_str).filter(|f| *f != "enabled").collect();
            if !fields.is_empty() {
                previewed.insert(("update".to_owned(), update.user_id.clone()));
            }
            if update.changed.iter().any(|f| f == "enabled") {
                previewed.insert((if update.enabled { "enable" } else { "disable" }.to_owned(), update.user_id.clone()));
            }
        }
        for change in &preview.rules.as_ref().unwrap().changes {
            previewed.insert((if change.granted { "role.grant" } else { "role.revoke" }.to_owned(), change.user_id.clone()));
        }
        let expected: BTreeSet<(String, String)> = [
            ("update", uid(2)),
            ("disable", uid(3)), ("disable", uid(4)), ("disable", uid(5)), ("update", uid(5)), ("disable", uid(6)),
            ("role.revoke", uid(4)), ("role.revoke", uid(5)), ("role.revoke", uid(6)),
        ].into_iter().map(|(a, u)| (a.to_owned(), u)).collect();
        assert_eq!(previewed, expected, "rename, disable, soft and hard deletion (marked), group leave");
        assert_eq!((preview.would_update, preview.would_disable), (5, 4));

        let approved = e2e.directory.clone().approve_sync_run(directory_pb::ApproveSyncRunRequest { run_id: run.run_id.clone() }).await.unwrap().into_inner().run.unwrap();
        assert_eq!(approved.status(), directory_pb::SyncRunStatus::Succeeded, "{approved:?}");
        // Watching it afterwards reports the decision, not the run as it ended.
        let watched = e2e.directory.clone().watch_sync_run(directory_pb::WatchSyncRunRequest { run_id: run.run_id.clone() }).await.unwrap().into_inner().message().await.unwrap().unwrap();
        assert_eq!(watched.run.unwrap().status(), directory_pb::SyncRunStatus::Succeeded);
        assert_eq!(audited(&e2e, &run.run_id).await, previewed, "approving did exactly what the dry run said");
        let renamed = e2e.registry_users().await.into_iter().find(|u| u.object_id == id(members[2])).unwrap();
        assert_eq!(renamed.network_alias, "renamed.person@contoso.com");
    }

    async fn a_batch_dry_run_reports_what_the_job_then_does_and_writes_nothing(db) {
        // Common names that collide, aliases equal after 20 characters, guests without mail;
        // one chunk, so the real job numbers colliding ids in the same order as the preview.
        let setup = Setup { chunk_size: Some(1000), ..Setup::default() };
        let e2e = EndToEnd::start_configured(&db, 150, setup).await;
        let request = |dry_run: bool| importer_pb::StartBatchImportRequest { company: "USMF".into(), dry_run, scope: Some(directory_pb::Scope { scope: Some(directory_pb::scope::Scope::All(directory_pb::AllUsers {})) }), ..Default::default() };
        let preview = e2e.importer.clone().start_batch_import(request(true)).await.unwrap().into_inner();
        assert!(preview.job.is_none(), "a dry run starts no job");
        let preview = preview.preview.unwrap();
        assert!(e2e.registry_users().await.is_empty(), "and writes no user");
        let jobs = e2e.importer.clone().list_jobs(importer_pb::ListJobsRequest::default()).await.unwrap().into_inner().jobs;
        assert!(jobs.is_empty(), "and records no job");
        let counts = preview.counts.unwrap();
        assert_eq!(counts.created + counts.skipped, 150);
        assert!(counts.skipped > 0, "guests without mail would be skipped");

        let job = e2e.importer.clone().start_batch_import(request(false)).await.unwrap().into_inner().job.unwrap();
        let mut watch = e2e.importer.clone().watch_job(importer_pb::WatchJobRequest { job_id: job.job_id.clone() }).await.unwrap().into_inner();
        let mut ended = job;
        while let Some(update) = watch.message().await.unwrap() {
            ended = update.job.unwrap();
        }
        assert_eq!(ended.status(), importer_pb::JobStatus::Completed, "{ended:?}");
        assert_eq!(ended.counts.unwrap(), counts, "the job's counts are the preview's");
        let created: BTreeSet<(String, String)> = e2e.registry_users().await.into_iter().map(|u| (u.object_id, u.user_id)).collect();
        let previewed: BTreeSet<(String, String)> = preview.outcomes.iter().filter(|o| o.kind() == registry_pb::OutcomeKind::Created).map(|o| (o.object_id.clone(), o.user_id.clone())).collect();
        assert_eq!(created, previewed, "the same users with the same user ids");
        let outcomes = e2e.importer.clone().list_job_outcomes(importer_pb::ListJobOutcomesRequest { job_id: ended.job_id.clone(), page_size: 1000, ..Default::default() }).await.unwrap().into_inner().outcomes;
        let skipped = |o: &registry_pb::ImportOutcome| (o.object_id.clone(), o.kind(), o.reason.clone());
        let job_skips: BTreeSet<_> = outcomes.iter().filter(|o| o.kind() != registry_pb::OutcomeKind::Created).map(skipped).collect();
        let preview_skips: BTreeSet<_> = preview.outcomes.iter().filter(|o| o.kind() != registry_pb::OutcomeKind::Created).map(skipped).collect();
        assert_eq!(job_skips, preview_skips, "the same users not created, for the same reasons");
    }
}
