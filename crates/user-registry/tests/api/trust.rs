//! Issue 14: trust boundaries against a leaked service token and a hostile client. The
//! registry runs with static tokens for two administrators, a reader and the two service
//! identities, as in production (not insecure mode, where everyone holds every role).

use proto::registry::v1 as pb;
use service_runtime::auth::{
    ADMIN, AuthConfig, DIRECTORY_SYNC, IMPORT_WORKER, READER, StaticToken,
};
use service_runtime::error::reason;
use test_support::TestDatabase;
use tonic::Code;
use user_registry::Config;

use crate::helpers::{TENANT, TestApp, member, object_id};

const ALICE: &str = "alice@contoso.com";
const BOB: &str = "bob@contoso.com";
const RITA: &str = "rita@contoso.com";
const WORKER: &str = "import-worker";

fn token_of(principal: &str) -> String {
    format!("{principal}-token-0123456789")
}

async fn secured(db: &TestDatabase) -> TestApp {
    let mut config = Config::local(&db.url);
    let token = |principal: &str, role: &str| StaticToken {
        principal: principal.to_owned(),
        roles: vec![role.to_owned()],
        token: Some(token_of(principal).into()),
        token_file: None,
    };
    config.auth = AuthConfig {
        static_tokens: vec![
            token(ALICE, ADMIN),
            token(BOB, ADMIN),
            token(RITA, READER),
            token(WORKER, IMPORT_WORKER),
            token("directory-sync", DIRECTORY_SYNC),
        ],
        ..AuthConfig::default()
    };
    let app = TestApp::spawn_with(config).await;
    let usmf = pb::CreateCompanyRequest {
        company: Some(pb::Company {
            code: "USMF".into(),
            name: "Contoso USA".into(),
        }),
    };
    app.client
        .clone()
        .create_company(as_(ALICE, None, usmf))
        .await
        .unwrap();
    app
}

/// `message` as `principal` sends it, naming `on_behalf_of` when given.
fn as_<T>(principal: &str, on_behalf_of: Option<&str>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token_of(principal)).parse().unwrap(),
    );
    if let Some(person) = on_behalf_of {
        request
            .metadata_mut()
            .insert("x-userimport-on-behalf-of", person.parse().unwrap());
    }
    request
}

fn import(
    import_id: &str,
    company: &str,
    private: bool,
    users: Vec<pb::NewUser>,
) -> pb::ImportUsersRequest {
    pb::ImportUsersRequest {
        import_id: import_id.into(),
        company: company.into(),
        users,
        dry_run: false,
        private,
    }
}

fn apply(
    rule_id: &str,
    role_id: &str,
    company: &str,
    grant: &[u32],
    revoke: &[u32],
) -> pb::ApplyRuleGrantsRequest {
    pb::ApplyRuleGrantsRequest {
        rule_id: rule_id.into(),
        role_id: role_id.into(),
        company: company.into(),
        tenant_id: TENANT.into(),
        grant_object_ids: grant.iter().map(|n| object_id(*n)).collect(),
        revoke_object_ids: revoke.iter().map(|n| object_id(*n)).collect(),
        via: "sync-1".into(),
        dry_run: false,
    }
}

fn register(rule_id: &str, role_id: &str, company: &str) -> pb::RegisterRoleRuleRequest {
    pb::RegisterRoleRuleRequest {
        rule_id: rule_id.into(),
        role_id: role_id.into(),
        company: company.into(),
    }
}

impl TestApp {
    /// Imports users 1 and 2 through import-worker for alice, under `job-1`.
    async fn two_users(&self, private: bool) -> Vec<String> {
        let users = vec![
            member(1, "ann@contoso.com"),
            member(2, "bob.user@contoso.com"),
        ];
        let outcomes = self
            .client
            .clone()
            .import_users(as_(
                WORKER,
                Some(ALICE),
                import("job-1", "DAT", private, users),
            ))
            .await
            .unwrap()
            .into_inner()
            .outcomes;
        outcomes.into_iter().map(|o| o.user_id).collect()
    }

    async fn grants_of(&self, user_id: &str) -> Vec<pb::RoleAssignment> {
        let request = pb::GetUserRequest {
            key: Some(pb::get_user_request::Key::UserId(user_id.into())),
        };
        self.client
            .clone()
            .get_user(as_(ALICE, None, request))
            .await
            .unwrap()
            .into_inner()
            .roles
    }

    async fn events_seen_by(&self, principal: &str, via: &str) -> Vec<pb::AuditEvent> {
        let request = pb::ListAuditEventsRequest {
            via: via.into(),
            ..Default::default()
        };
        self.client
            .clone()
            .list_audit_events(as_(principal, None, request))
            .await
            .unwrap()
            .into_inner()
            .events
    }
}

fn refused(status: &tonic::Status, code: Code, why: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(reason(status).as_deref(), Some(why), "{status:?}");
}

test_support::on_both_backends! {
    async fn a_service_token_cannot_grant_under_a_rule_import_worker_never_registered(db) {
        let app = secured(&db).await;
        let users = app.two_users(false).await;
        let mut client = app.client.clone();

        // The reviewer's attack: a made-up rule granting SYSADMIN, "for" some administrator.
        let forged = client
            .apply_rule_grants(as_(WORKER, Some("any.admin@contoso.com"), apply("worker-forged", "SYSADMIN", "", &[1], &[])))
            .await
            .unwrap_err();
        refused(&forged, Code::FailedPrecondition, "RULE_NOT_REGISTERED");
        assert!(app.grants_of(&users[0]).await.is_empty(), "nothing was granted");

        // A registered rule grants its own role in its own company, and nothing else.
        client.register_role_rule(as_(WORKER, None, register("r1", "accountant", "dat"))).await.unwrap();
        for (role, company) in [("SYSADMIN", ""), ("ACCOUNTANT", ""), ("ACCOUNTANT", "USMF")] {
            let status = client.apply_rule_grants(as_(WORKER, None, apply("r1", role, company, &[1], &[]))).await.unwrap_err();
            assert_eq!(status.code(), Code::FailedPrecondition, "{role} in {company:?}: {status:?}");
        }
        let made = client.apply_rule_grants(as_(WORKER, None, apply("r1", "ACCOUNTANT", "DAT", &[1], &[]))).await.unwrap().into_inner();
        assert_eq!(made.changes.len(), 1);
        // A rule id keeps its role for good.
        let rebound = client.register_role_rule(as_(WORKER, None, register("r1", "SYSADMIN", ""))).await.unwrap_err();
        refused(&rebound, Code::FailedPrecondition, "RULE_NOT_REGISTERED");

        // Retired, a rule may revoke what it made but grant nothing more.
        client.retire_role_rule(as_(WORKER, None, pb::RetireRoleRuleRequest { rule_id: "r1".into() })).await.unwrap();
        let status = client.apply_rule_grants(as_(WORKER, None, apply("r1", "ACCOUNTANT", "DAT", &[2], &[]))).await.unwrap_err();
        refused(&status, Code::FailedPrecondition, "RULE_NOT_REGISTERED");
        let revoked = client.apply_rule_grants(as_(WORKER, None, apply("r1", "ACCOUNTANT", "DAT", &[], &[1]))).await.unwrap().into_inner();
        assert_eq!(revoked.changes.len(), 1);

        // Rules are import-worker's: neither an administrator nor directory-sync writes them.
        for principal in [ALICE, "directory-sync"] {
            let status = client.register_role_rule(as_(principal, None, register("r2", "SYSADMIN", ""))).await.unwrap_err();
            assert_eq!(status.code(), Code::PermissionDenied, "{principal}");
            let status = client.apply_rule_grants(as_(principal, None, apply("r1", "ACCOUNTANT", "DAT", &[1], &[]))).await.unwrap_err();
            assert_eq!(status.code(), Code::PermissionDenied, "{principal}");
        }
    }

    async fn an_admin_revokes_a_grant_of_every_source(db) {
        let app = secured(&db).await;
        let users = app.two_users(false).await;
        let mut client = app.client.clone();
        client.register_role_rule(as_(WORKER, None, register("r1", "ACCOUNTANT", ""))).await.unwrap();
        client.apply_rule_grants(as_(WORKER, None, apply("r1", "ACCOUNTANT", "", &[1, 2], &[]))).await.unwrap();
        let assign = pb::AssignRolesRequest { user_ids: vec![users[0].clone()], role_ids: vec!["ACCOUNTANT".into()], company: String::new() };
        client.assign_roles(as_(ALICE, None, assign)).await.unwrap();
        let sources = |roles: Vec<pb::RoleAssignment>| -> Vec<String> { roles.into_iter().flat_map(|r| r.sources).collect() };
        assert_eq!(sources(app.grants_of(&users[0]).await), ["manual", "rule:r1"], "GetUser shows every source");

        let revoke = |all_sources| pb::RevokeRolesRequest {
            user_ids: users.clone(),
            role_ids: vec!["ACCOUNTANT".into()],
            company: String::new(),
            all_sources,
        };
        let own = client.revoke_roles(as_(ALICE, None, revoke(false))).await.unwrap().into_inner();
        assert_eq!(own.revoked, 1, "without all_sources, the administrator's grant only");
        assert_eq!(sources(app.grants_of(&users[0]).await), ["rule:r1"]);
        let all = client.revoke_roles(as_(BOB, None, revoke(true))).await.unwrap().into_inner();
        assert_eq!(all.revoked, 2, "both users' rule grants");
        for user in &users {
            assert!(app.grants_of(user).await.is_empty(), "{user} holds nothing");
        }
        let revokes = app.events_seen_by(ALICE, "").await.into_iter().filter(|e| e.action == "role.revoke" && e.actor == BOB).count();
        assert_eq!(revokes, 2, "each revoke is audited as the administrator's");
    }

    async fn on_behalf_of_from_an_admin_is_ignored_and_from_a_service_is_audited_with_both_names(db) {
        let app = secured(&db).await;
        let users = app.two_users(false).await;
        let imported = app.events_seen_by(RITA, "job-1").await;
        assert_eq!(imported.len(), 2);
        for event in &imported {
            assert_eq!((event.actor.as_str(), event.service.as_str()), (ALICE, WORKER));
        }

        let assign = pb::AssignRolesRequest { user_ids: vec![users[0].clone()], role_ids: vec!["ACCOUNTANT".into()], company: String::new() };
        let mut request = as_(BOB, Some("mallory@contoso.com"), assign);
        request.metadata_mut().insert("x-request-id", "bob-1".parse().unwrap());
        app.client.clone().assign_roles(request).await.unwrap();
        let granted = app.events_seen_by(RITA, "request:bob-1").await;
        assert_eq!(granted.len(), 1);
        assert_eq!((granted[0].actor.as_str(), granted[0].service.as_str()), (BOB, ""), "an administrator is always itself");
    }

    async fn an_import_id_is_bound_to_its_caller_person_company_and_privacy(db) {
        let app = secured(&db).await;
        app.two_users(false).await;
        let mut client = app.client.clone();
        let third = || vec![member(3, "cy@contoso.com")];
        let attempts = [
            ("another person", as_(WORKER, Some(BOB), import("job-1", "DAT", false, third()))),
            ("another principal", as_(BOB, None, import("job-1", "DAT", false, third()))),
            ("another company", as_(WORKER, Some(ALICE), import("job-1", "USMF", false, third()))),
            ("another privacy", as_(WORKER, Some(ALICE), import("job-1", "DAT", true, third()))),
        ];
        for (what, request) in attempts {
            let status = client.import_users(request).await.unwrap_err();
            refused(&status, Code::FailedPrecondition, "IDEMPOTENCY_KEY_REUSED");
            assert!(!status.message().is_empty(), "{what}");
        }
        assert_eq!(app.user_count().await, 2, "nothing was recorded against alice's job");
        // The same caller's replay, and more users of the same job, are the job's own.
        let more = client
            .import_users(as_(WORKER, Some(ALICE), import("job-1", "DAT", false, vec![member(1, "ann@contoso.com"), member(3, "cy@contoso.com")])))
            .await
            .unwrap()
            .into_inner();
        assert!(more.outcomes.iter().all(|o| o.kind() == pb::OutcomeKind::Created));
    }

    async fn a_private_jobs_users_and_events_are_invisible_to_a_reader_and_a_second_admin(db) {
        let app = secured(&db).await;
        let users = app.two_users(true).await;
        let mut client = app.client.clone();
        let by_job = || pb::ListUsersRequest { created_by_import: "job-1".into(), ..Default::default() };
        let get = |user_id: &str| pb::GetUserRequest { key: Some(pb::get_user_request::Key::UserId(user_id.into())) };
        for outsider in [RITA, BOB] {
            let listed = client.list_users(as_(outsider, None, by_job())).await.unwrap().into_inner().users;
            assert!(listed.is_empty(), "{outsider} lists the job's users");
            assert!(app.events_seen_by(outsider, "job-1").await.is_empty(), "{outsider} reads the job's events");
            assert!(app.events_seen_by(outsider, "").await.iter().all(|e| e.via != "job-1"), "{outsider} reads them unfiltered");
            let user = client.get_user(as_(outsider, None, get(&users[0]))).await.unwrap().into_inner().user.unwrap();
            assert_eq!(user.created_by_import, "", "{outsider} sees the job id");
            let all = client.list_users(as_(outsider, None, pb::ListUsersRequest::default())).await.unwrap().into_inner().users;
            assert_eq!(all.len(), 2, "the users themselves are not secret");
            assert!(all.iter().all(|u| u.created_by_import.is_empty()));
        }
        // Its creator sees all of it.
        let listed = client.list_users(as_(ALICE, None, by_job())).await.unwrap().into_inner().users;
        assert_eq!(listed.len(), 2);
        assert_eq!(app.events_seen_by(ALICE, "job-1").await.len(), 2);
        let user = client.get_user(as_(ALICE, None, get(&users[0]))).await.unwrap().into_inner().user.unwrap();
        assert_eq!(user.created_by_import, "job-1");
    }
}
