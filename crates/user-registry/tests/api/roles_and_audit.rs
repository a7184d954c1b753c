//! Issue 5: roles, renames, enabling and the audit trail, on SQLite and Postgres.

use proto::registry::v1 as pb;
use tonic::Code;

use crate::helpers::{TestApp, member, object_id};

/// A request made by `actor`, through request `request_id` when given.
fn by<T>(actor: &str, request_id: Option<&str>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-userimport-principal", actor.parse().unwrap());
    if let Some(id) = request_id {
        request
            .metadata_mut()
            .insert("x-request-id", id.parse().unwrap());
    }
    request
}

fn grant(users: &[&str], roles: &[&str], company: &str) -> pb::AssignRolesRequest {
    pb::AssignRolesRequest {
        user_ids: users.iter().map(|s| (*s).to_owned()).collect(),
        role_ids: roles.iter().map(|s| (*s).to_owned()).collect(),
        company: company.to_owned(),
    }
}

fn revoke(users: &[&str], roles: &[&str], company: &str) -> pb::RevokeRolesRequest {
    pb::RevokeRolesRequest {
        user_ids: users.iter().map(|s| (*s).to_owned()).collect(),
        role_ids: roles.iter().map(|s| (*s).to_owned()).collect(),
        company: company.to_owned(),
        all_sources: false,
    }
}

impl TestApp {
    /// Imports ann (1), bob (2) and cy (3) into DAT under import `imp-1`, as alice.
    async fn import_three(&self) {
        let request = pb::ImportUsersRequest {
            import_id: "imp-1".into(),
            company: "DAT".into(),
            users: vec![
                member(1, "ann@contoso.com"),
                member(2, "bob@contoso.com"),
                member(3, "cy@contoso.com"),
            ],
            dry_run: false,
            private: false,
        };
        self.client
            .clone()
            .import_users(by("alice", None, request))
            .await
            .unwrap();
    }

    async fn assign(&self, request: pb::AssignRolesRequest) -> Result<u64, tonic::Status> {
        let response = self
            .client
            .clone()
            .assign_roles(by("admin", None, request))
            .await?;
        Ok(response.into_inner().granted)
    }

    async fn revoke(&self, request: pb::RevokeRolesRequest) -> Result<u64, tonic::Status> {
        let response = self
            .client
            .clone()
            .revoke_roles(by("admin", None, request))
            .await?;
        Ok(response.into_inner().revoked)
    }

    async fn roles_of(&self, user_id: &str) -> Vec<(String, String)> {
        let request = pb::GetUserRequest {
            key: Some(pb::get_user_request::Key::UserId(user_id.into())),
        };
        let response = self.client.clone().get_user(request).await.unwrap();
        response
            .into_inner()
            .roles
            .into_iter()
            .map(|r| (r.role_id, r.company))
            .collect()
    }

    async fn listed(&self, request: pb::ListUsersRequest) -> Vec<String> {
        let response = self.client.clone().list_users(request).await.unwrap();
        response
            .into_inner()
            .users
            .into_iter()
            .map(|u| u.user_id)
            .collect()
    }

    async fn events(&self, request: pb::ListAuditEventsRequest) -> Vec<pb::AuditEvent> {
        let response = self
            .client
            .clone()
            .list_audit_events(request)
            .await
            .unwrap();
        response.into_inner().events
    }

    async fn all_events(&self) -> Vec<pb::AuditEvent> {
        self.events(pb::ListAuditEventsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
    }

    async fn grant_count(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM role_assignments")
            .fetch_one(self.db.pool())
            .await
            .unwrap()
    }

    async fn rename(
        &self,
        user_id: &str,
        new_user_id: &str,
    ) -> Result<pb::RegistryUser, tonic::Status> {
        let request = pb::RenameUserRequest {
            user_id: user_id.into(),
            new_user_id: new_user_id.into(),
        };
        let response = self
            .client
            .clone()
            .rename_user(by("admin", None, request))
            .await?;
        Ok(response.into_inner().user.unwrap())
    }

    async fn set_enabled(
        &self,
        users: &[&str],
        enabled: bool,
    ) -> Result<Vec<pb::RegistryUser>, tonic::Status> {
        let request = pb::SetUsersEnabledRequest {
            user_ids: users.iter().map(|s| (*s).to_owned()).collect(),
            enabled,
        };
        let response = self
            .client
            .clone()
            .set_users_enabled(by("admin", None, request))
            .await?;
        Ok(response.into_inner().users)
    }

    async fn create_company(&self, code: &str) {
        let request = pb::CreateCompanyRequest {
            company: Some(pb::Company {
                code: code.into(),
                name: String::new(),
            }),
        };
        self.client.clone().create_company(request).await.unwrap();
    }
}

fn pair(role: &str, company: &str) -> (String, String) {
    (role.to_owned(), company.to_owned())
}

test_support::on_both_backends! {
    async fn the_role_catalog_lists_the_seeded_roles_with_their_company_scope(db) {
        let app = TestApp::spawn(&db).await;
        let roles = app.client.clone().list_roles(pb::ListRolesRequest {}).await.unwrap().into_inner().roles;
        let ids: Vec<&str> = roles.iter().map(|r| r.role_id.as_str()).collect();
        assert!(ids.contains(&"SYSADMIN") && ids.contains(&"SYSTEMUSER") && ids.contains(&"ACCOUNTANT"), "{ids:?}");
        let sysadmin = roles.iter().find(|r| r.role_id == "SYSADMIN").unwrap();
        assert_eq!(sysadmin.name, "System administrator");
        assert!(sysadmin.all_companies);
        assert!(!roles.iter().find(|r| r.role_id == "ACCOUNTANT").unwrap().all_companies);
    }

    async fn grants_are_idempotent_per_company_and_revokes_remove_only_what_they_name(db) {
        let app = TestApp::spawn(&db).await;
        app.import_three().await;
        app.create_company("USMF").await;

        assert_eq!(app.assign(grant(&["ann", "BOB"], &["accountant"], "dat")).await.unwrap(), 2);
        assert_eq!(app.assign(grant(&["ann", "bob"], &["ACCOUNTANT"], "DAT")).await.unwrap(), 0, "a repeated grant is no new grant");
        assert_eq!(app.assign(grant(&["ann"], &["ACCOUNTANT", "SYSTEMUSER"], "")).await.map_err(|e| e.code()), Ok(2));
        assert_eq!(app.assign(grant(&["ann"], &["ACCOUNTANT"], "USMF")).await.unwrap(), 1);
        assert_eq!(
            app.roles_of("ann").await,
            [pair("ACCOUNTANT", ""), pair("ACCOUNTANT", "DAT"), pair("ACCOUNTANT", "USMF"), pair("SYSTEMUSER", "")]
        );

        let err = app.assign(grant(&["ann"], &["SYSADMIN"], "DAT")).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("SYSADMIN") && err.message().contains("every company"), "{}", err.message());

        assert_eq!(app.revoke(revoke(&["ann"], &["ACCOUNTANT"], "USMF")).await.unwrap(), 1, "only USMF's grant");
        assert_eq!(
            app.roles_of("ann").await,
            [pair("ACCOUNTANT", ""), pair("ACCOUNTANT", "DAT"), pair("SYSTEMUSER", "")]
        );
        assert_eq!(app.revoke(revoke(&["ann"], &["ACCOUNTANT"], "USMF")).await.unwrap(), 0, "revoking what is gone changes nothing");
        assert_eq!(app.revoke(revoke(&["ann", "bob"], &["ACCOUNTANT"], "")).await.unwrap(), 3, "no company: every company");
        assert_eq!(app.roles_of("ann").await, [pair("SYSTEMUSER", "")]);
        assert_eq!(app.roles_of("bob").await, []);
    }

    async fn users_without_roles_are_listed_until_they_are_granted_one(db) {
        let app = TestApp::spawn(&db).await;
        app.import_three().await;
        let other = pb::ImportUsersRequest { import_id: "imp-2".into(), company: "DAT".into(), users: vec![member(4, "dee@contoso.com")], dry_run: false, private: false };
        app.client.clone().import_users(other).await.unwrap();
        let without = |import: &str| pb::ListUsersRequest { without_roles: true, created_by_import: import.into(), ..Default::default() };

        assert_eq!(app.listed(without("")).await, ["ann", "bob", "cy", "dee"]);
        assert_eq!(app.listed(without("imp-1")).await, ["ann", "bob", "cy"]);
        app.assign(grant(&["bob"], &["SALES_CLERK"], "DAT")).await.unwrap();
        assert_eq!(app.listed(without("imp-1")).await, ["ann", "cy"]);
        app.set_enabled(&["cy"], false).await.unwrap();
        let enabled_without = pb::ListUsersRequest { without_roles: true, enabled: Some(true), ..Default::default() };
        assert_eq!(app.listed(enabled_without).await, ["ann", "dee"]);
        let guests = pb::ListUsersRequest { account_type: pb::AccountType::Guest.into(), ..Default::default() };
        assert!(app.listed(guests).await.is_empty());
    }

    async fn a_rename_keeps_the_object_id_and_roles_and_refuses_taken_or_invalid_ids(db) {
        let app = TestApp::spawn(&db).await;
        app.import_three().await;
        app.assign(grant(&["ann"], &["ACCOUNTANT"], "DAT")).await.unwrap();

        let renamed = app.rename("ann", "ann.smith").await.unwrap();
        assert_eq!((renamed.user_id.as_str(), renamed.object_id.as_str()), ("ann.smith", object_id(1).as_str()));
        assert_eq!(app.roles_of("ann.smith").await, [pair("ACCOUNTANT", "DAT")]);
        let err = app.rename("ann", "x").await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "the old id is free now: {}", err.message());

        let err = app.rename("bob", "ANN.SMITH").await.unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists);
        assert!(err.message().contains("ANN.SMITH"), "{}", err.message());
        for bad in ["", "has space", "twenty-one-characters", "ünïcode"] {
            let err = app.rename("bob", bad).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {}", err.message());
            assert!(err.message().contains("new_user_id"), "{}", err.message());
        }
        assert_eq!(app.rename("Ann.Smith", "Ann.Smith").await.unwrap().user_id, "Ann.Smith", "a change of case is allowed");
        let before = app.all_events().await.len();
        assert_eq!(app.rename("ann.smith", "Ann.Smith").await.unwrap().user_id, "Ann.Smith");
        assert_eq!(app.all_events().await.len(), before, "renaming to the same id records nothing");
        assert_eq!(app.listed(pb::ListUsersRequest::default()).await, ["Ann.Smith", "bob", "cy"]);
    }

    async fn enable_and_disable_change_only_users_in_the_other_state(db) {
        let app = TestApp::spawn(&db).await;
        app.import_three().await;
        let users = app.set_enabled(&["bob", "CY", "bob"], false).await.unwrap();
        assert_eq!(users.iter().map(|u| (u.user_id.as_str(), u.enabled)).collect::<Vec<_>>(), [("bob", false), ("cy", false)]);
        app.set_enabled(&["bob", "ann"], false).await.unwrap();
        let disables = app.events(pb::ListAuditEventsRequest { action: "disable".into(), ..Default::default() }).await;
        let mut disabled: Vec<&str> = disables.iter().map(|e| e.user_id.as_str()).collect();
        disabled.sort_unstable();
        assert_eq!(disabled, ["ann", "bob", "cy"], "bob's second disable changed nothing and is not recorded");
        app.set_enabled(&["ann"], true).await.unwrap();
        let listed = app.listed(pb::ListUsersRequest { enabled: Some(false), ..Default::default() }).await;
        assert_eq!(listed, ["bob", "cy"]);
    }

    async fn every_change_is_in_the_audit_trail_with_its_actor_and_origin(db) {
        let app = TestApp::spawn(&db).await;
        app.import_three().await;
        let request = grant(&["ann"], &["ACCOUNTANT"], "DAT");
        app.client.clone().assign_roles(by("bob.admin", Some("r-42"), request)).await.unwrap();
        app.rename("ann", "ann.smith").await.unwrap();
        app.set_enabled(&["ann.smith"], false).await.unwrap();
        app.set_enabled(&["ann.smith"], true).await.unwrap();
        app.revoke(revoke(&["ann.smith"], &["ACCOUNTANT"], "")).await.unwrap();

        let imports = app.events(pb::ListAuditEventsRequest { via: "imp-1".into(), ..Default::default() }).await;
        assert_eq!(imports.len(), 3);
        assert!(imports.iter().all(|e| e.action == "import" && e.actor == "alice"), "{imports:?}");
        let ann_import = imports.iter().find(|e| e.user_id == "ann").unwrap();
        let detail: serde_json::Value = serde_json::from_str(&ann_import.detail).unwrap();
        assert_eq!(detail["company"], "DAT");
        assert_eq!(detail["network_alias"], "ann@contoso.com");

        // The user's whole history, under its old and its new id, newest first.
        let history = app.events(pb::ListAuditEventsRequest { user_id: "ann.smith".into(), ..Default::default() }).await;
        let actions: Vec<&str> = history.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["role.revoke", "enable", "disable", "rename", "role.grant", "import"]);
        let grant_event = &history[4];
        assert_eq!((grant_event.actor.as_str(), grant_event.via.as_str(), grant_event.user_id.as_str()), ("bob.admin", "request:r-42", "ann"));
        assert_eq!(serde_json::from_str::<serde_json::Value>(&grant_event.detail).unwrap(), serde_json::json!({"role_id": "ACCOUNTANT", "company": "DAT"}));
        let rename_event: serde_json::Value = serde_json::from_str(&history[3].detail).unwrap();
        assert_eq!(rename_event, serde_json::json!({"from": "ann", "to": "ann.smith"}));
        assert!(history[0].at_ms >= history[5].at_ms);

        // Pages of two, newest first, with nothing repeated or lost.
        let mut token = String::new();
        let mut paged = Vec::new();
        loop {
            let page = app.client.clone().list_audit_events(pb::ListAuditEventsRequest { page_size: 2, page_token: token, ..Default::default() }).await.unwrap().into_inner();
            paged.extend(page.events.into_iter().map(|e| e.event_id));
            if page.next_page_token.is_empty() { break; }
            token = page.next_page_token;
        }
        let all: Vec<String> = app.all_events().await.into_iter().map(|e| e.event_id).collect();
        assert_eq!(paged, all);
        assert_eq!(all.len(), 3 + 5);

        let err = app.client.clone().list_audit_events(pb::ListAuditEventsRequest { action: "purge".into(), ..Default::default() }).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("purge"), "{}", err.message());
    }

    async fn a_change_whose_audit_row_cannot_be_written_is_not_made(db) {
        let app = TestApp::spawn(&db).await;
        app.import_three().await;
        app.assign(grant(&["bob"], &["ACCOUNTANT"], "DAT")).await.unwrap();
        let events_before = app.all_events().await;
        // The audit table goes away under the running service (a real database failure).
        sqlx::query("ALTER TABLE audit_events RENAME TO audit_events_away").execute(app.db.pool()).await.unwrap();

        let failures = [
            app.assign(grant(&["ann"], &["ACCOUNTANT"], "DAT")).await.map(|_| ()),
            app.revoke(revoke(&["bob"], &["ACCOUNTANT"], "")).await.map(|_| ()),
            app.rename("cy", "cyrus").await.map(|_| ()),
            app.set_enabled(&["ann"], false).await.map(|_| ()),
            app.import("imp-2", "DAT", vec![member(9, "zed@contoso.com")]).await.map(|_| ()),
        ];
        for failure in failures {
            assert_eq!(failure.unwrap_err().code(), Code::Internal);
        }
        sqlx::query("ALTER TABLE audit_events_away RENAME TO audit_events").execute(app.db.pool()).await.unwrap();

        assert_eq!(app.roles_of("ann").await, []);
        assert_eq!(app.roles_of("bob").await, [pair("ACCOUNTANT", "DAT")]);
        assert_eq!(app.listed(pb::ListUsersRequest { enabled: Some(true), ..Default::default() }).await, ["ann", "bob", "cy"]);
        assert_eq!(app.user_count().await, 3);
        assert_eq!(app.all_events().await, events_before);
    }

    async fn a_refused_change_writes_neither_the_change_nor_an_audit_row(db) {
        let app = TestApp::spawn(&db).await;
        app.import_three().await;
        let events_before = app.all_events().await;

        let err = app.assign(grant(&["ann", "nobody", "ghost"], &["ACCOUNTANT"], "DAT")).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(err.message().contains("ghost") && err.message().contains("nobody"), "{}", err.message());

        let err = app.assign(grant(&["ann"], &["ACCOUNTANT", "WIZARD"], "")).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(err.message().contains("WIZARD"), "{}", err.message());

        let err = app.assign(grant(&["ann"], &["ACCOUNTANT"], "TOO-LONG")).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("company"), "{}", err.message());

        let err = app.assign(grant(&["ann"], &["ACCOUNTANT"], "ZZZ")).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(err.message().contains("ZZZ"), "{}", err.message());

        let many: Vec<String> = (0..10_000).map(|n| format!("user{n}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let err = app.assign(grant(&many, &["ACCOUNTANT"], "")).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("10000") && err.message().contains("1000"), "{}", err.message());
        let err = app.set_enabled(&many, false).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);

        let err = app.assign(grant(&["ann"], &[], "")).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("role_ids"), "{}", err.message());
        let err = app.revoke(revoke(&["ann"], &["bad role!"], "")).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = app.set_enabled(&["ann", "nobody"], false).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(err.message().contains("nobody"), "{}", err.message());

        assert_eq!(app.grant_count().await, 0);
        assert_eq!(app.listed(pb::ListUsersRequest { enabled: Some(true), ..Default::default() }).await, ["ann", "bob", "cy"]);
        assert_eq!(app.all_events().await, events_before);
    }

    async fn overlong_strings_are_refused_naming_the_field(db) {
        let app = TestApp::spawn(&db).await;
        app.import_three().await;
        let long = "x".repeat(300);
        let cases: Vec<(&str, Result<(), tonic::Status>)> = vec![
            ("search", app.client.clone().list_users(pb::ListUsersRequest { search: long.clone(), ..Default::default() }).await.map(|_| ())),
            ("page_token", app.client.clone().list_users(pb::ListUsersRequest { page_token: "x".repeat(2000), ..Default::default() }).await.map(|_| ())),
            ("via", app.client.clone().list_audit_events(pb::ListAuditEventsRequest { via: long.clone(), ..Default::default() }).await.map(|_| ())),
            ("user_ids", app.assign(grant(&[&long], &["ACCOUNTANT"], "")).await.map(|_| ())),
            ("user_id", app.rename(&long, "ok").await.map(|_| ())),
            ("import_id", app.import(&long, "DAT", vec![member(9, "z@contoso.com")]).await.map(|_| ())),
        ];
        for (field, result) in cases {
            let err = result.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{field}: {}", err.message());
            assert!(err.message().contains(field), "{field}: {}", err.message());
            assert!(!err.message().contains(&long), "the message does not echo 300 characters back");
        }
    }
}
