use std::collections::HashSet;

use proto::registry::v1 as pb;
use proto::registry::v1::OutcomeKind::{AlreadyPresent, Created, Failed};
use tonic::Code;

use crate::helpers::{TestApp, kinds, member, object_id};

test_support::on_both_backends! {
    async fn new_users_are_created_with_ids_from_their_alias_in_the_given_company(db) {
        let app = TestApp::spawn(&db).await;
        let outcomes = app
            .import("imp-1", "dat", vec![member(1, "Adele.Vance@contoso.com"), member(2, "zoë.ångström@contoso.com")])
            .await
            .unwrap();
        assert_eq!(kinds(&outcomes), [Created, Created]);
        assert_eq!(outcomes[0].user_id, "adele.vance");
        assert_eq!(outcomes[1].user_id, "zoe.angstrom");
        let user = app
            .client
            .clone()
            .get_user(pb::GetUserRequest { key: Some(pb::get_user_request::Key::UserId("ADELE.VANCE".into())) })
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        assert_eq!(user.company, "DAT");
        assert_eq!(user.network_alias, "Adele.Vance@contoso.com");
        assert_eq!(user.created_by_import, "imp-1");
        assert!(user.enabled);
    }

    async fn importing_again_reports_already_present_and_changes_nothing(db) {
        let app = TestApp::spawn(&db).await;
        let users = vec![member(1, "a@contoso.com"), member(2, "b@contoso.com")];
        app.import("first", "DAT", users.clone()).await.unwrap();
        let before = app.client.clone().list_users(pb::ListUsersRequest::default()).await.unwrap().into_inner();
        let mut renamed = users.clone();
        renamed[0].name = "Someone Else".into();
        renamed[0].network_alias = "other@contoso.com".into();
        let outcomes = app.import("second", "DAT", renamed).await.unwrap();
        assert_eq!(kinds(&outcomes), [AlreadyPresent, AlreadyPresent]);
        assert_eq!(outcomes[0].user_id, "a");
        let after = app.client.clone().list_users(pb::ListUsersRequest::default()).await.unwrap().into_inner();
        assert_eq!(before, after);
    }

    async fn a_replayed_import_reports_the_outcomes_of_its_first_run(db) {
        let app = TestApp::spawn(&db).await;
        app.import("job-7", "DAT", vec![member(1, "a@contoso.com")]).await.unwrap();
        let replay = app.import("job-7", "DAT", vec![member(1, "a@contoso.com"), member(2, "b@contoso.com")]).await.unwrap();
        assert_eq!(kinds(&replay), [Created, Created]);
        assert_eq!(app.user_count().await, 2);
    }

    async fn aliases_colliding_after_twenty_characters_get_numbered_ids(db) {
        let app = TestApp::spawn(&db).await;
        let outcomes = app
            .import(
                "imp",
                "DAT",
                vec![
                    member(1, "christopher.alexander.smith@contoso.com"),
                    member(2, "christopher.alexander.smyth@contoso.com"),
                    member(3, "Christopher.Alexander.Smart@fabrikam.com"),
                ],
            )
            .await
            .unwrap();
        let ids: Vec<&str> = outcomes.iter().map(|o| o.user_id.as_str()).collect();
        // Claimants are numbered in object id order, whatever order the request had.
        assert_eq!(ids, ["christopher.alexande", "christopher.alexand2", "christopher.alexand3"]);
        let later = app.import("imp2", "DAT", vec![member(4, "christopher.alexander.x@contoso.com")]).await.unwrap();
        assert_eq!(later[0].user_id, "christopher.alexand4");
    }

    async fn a_suffixed_id_that_is_already_taken_moves_on_to_the_next_number(db) {
        let app = TestApp::spawn(&db).await;
        app.import("imp", "DAT", vec![member(1, "john@contoso.com"), member(2, "john2@contoso.com")]).await.unwrap();
        let outcomes = app.import("imp", "DAT", vec![member(3, "john@fabrikam.com")]).await.unwrap();
        assert_eq!(outcomes[0].user_id, "john3");
    }

    async fn numbers_taken_by_natural_ids_are_skipped_over(db) {
        let app = TestApp::spawn(&db).await;
        // john, john2 … john30 all exist as natural ids, as in many real directories.
        let naturals: Vec<pb::NewUser> = (1..=30)
            .map(|n| member(n, &if n == 1 { "john@contoso.com".to_owned() } else { format!("john{n}@contoso.com") }))
            .collect();
        app.import("imp", "DAT", naturals).await.unwrap();
        let outcomes = app
            .import("imp2", "DAT", vec![member(100, "john@fabrikam.com"), member(101, "John@northwind.com")])
            .await
            .unwrap();
        let ids: Vec<&str> = outcomes.iter().map(|o| o.user_id.as_str()).collect();
        assert_eq!(ids, ["john31", "john32"]);
    }

    async fn one_malformed_user_fails_alone_with_a_reason(db) {
        let app = TestApp::spawn(&db).await;
        let mut bad = member(2, "bad@contoso.com");
        bad.object_id = "not-a-guid".into();
        let mut no_alias = member(3, "");
        no_alias.network_alias = String::new();
        let outcomes = app.import("imp", "DAT", vec![member(1, "ok@contoso.com"), bad, no_alias]).await.unwrap();
        assert_eq!(kinds(&outcomes), [Created, Failed, Failed]);
        assert!(outcomes[1].reason.contains("object_id"), "{}", outcomes[1].reason);
        assert!(outcomes[2].reason.contains("network_alias"), "{}", outcomes[2].reason);
        assert_eq!(app.user_count().await, 1);
    }

    async fn a_long_display_name_is_truncated_and_noted(db) {
        let app = TestApp::spawn(&db).await;
        let mut user = member(1, "long@contoso.com");
        user.name = "N".repeat(1000);
        let outcomes = app.import("imp", "DAT", vec![user]).await.unwrap();
        assert_eq!(outcomes[0].kind(), Created);
        assert!(outcomes[0].note.contains("truncated"), "{}", outcomes[0].note);
    }

    async fn the_same_user_twice_in_one_request_is_created_once(db) {
        let app = TestApp::spawn(&db).await;
        let outcomes = app.import("imp", "DAT", vec![member(1, "a@contoso.com"), member(1, "a@contoso.com")]).await.unwrap();
        assert_eq!(kinds(&outcomes), [Created, Created]);
        assert_eq!(outcomes[0].user_id, outcomes[1].user_id);
        assert_eq!(app.user_count().await, 1);
    }

    async fn an_unknown_company_is_rejected_by_name_and_nothing_is_written(db) {
        let app = TestApp::spawn(&db).await;
        let err = app.import("imp", "ZZZ", vec![member(1, "a@contoso.com")]).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(err.message().contains("ZZZ"), "{}", err.message());
        assert_eq!(app.user_count().await, 0);
    }

    async fn an_empty_or_oversized_request_is_rejected(db) {
        let app = TestApp::spawn(&db).await;
        let err = app.import("imp", "DAT", vec![]).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let many: Vec<pb::NewUser> = (0..1001).map(|n| member(n, &format!("u{n}@contoso.com"))).collect();
        let err = app.import("imp", "DAT", many).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("1000"), "{}", err.message());
        let err = app.import("", "DAT", vec![member(1, "a@contoso.com")]).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(app.user_count().await, 0);
    }

    async fn concurrent_imports_with_colliding_aliases_get_distinct_ids_and_no_error(db) {
        let app = TestApp::spawn(&db).await;
        // Two importers, each with 200 users whose aliases collide with the other's.
        let batch = |offset: u32| -> Vec<pb::NewUser> {
            (0..200).map(|i| member(offset + i, &format!("john.doe{}@contoso.com", i % 7))).collect()
        };
        let (a, b) = tokio::join!(app.import("a", "DAT", batch(0)), app.import("b", "DAT", batch(1000)));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a.iter().chain(&b).all(|o| o.kind() == Created));
        let ids: HashSet<String> = a.iter().chain(&b).map(|o| o.user_id.to_lowercase()).collect();
        assert_eq!(ids.len(), 400);
        assert!(ids.iter().all(|id| id.len() <= 20));
        assert_eq!(app.user_count().await, 400);
    }

    async fn two_replicas_importing_the_same_users_and_colliding_aliases_at_once_create_each_user_once(db) {
        // Two registry replicas on one database: their claims of user ids are per process, so
        // only the database's unique keys stop them racing for the same person or id.
        let first = TestApp::spawn(&db).await;
        let second = TestApp::spawn(&db).await;
        let shared: Vec<pb::NewUser> =
            (0..150).map(|i| member(i, &format!("pat.lee{}@contoso.com", i % 5))).collect();
        let own = |offset: u32| -> Vec<pb::NewUser> {
            (0..50).map(|i| member(offset + i, &format!("pat.lee{}@contoso.com", i % 5))).collect()
        };
        let mut rounds = Vec::new();
        for round in 0..4_u32 {
            let a = [shared.clone(), own(1000 + round * 100)].concat();
            let b = [own(5000 + round * 100), shared.clone()].concat();
            let (id_a, id_b) = (format!("a-{round}"), format!("b-{round}"));
            let (a, b) = tokio::join!(first.import(&id_a, "DAT", a), second.import(&id_b, "DAT", b));
            rounds.push((a.expect("the first replica's import succeeds"), b.expect("the second's succeeds")));
        }
        let (a, b) = &rounds[0];
        // Each shared user was created by exactly one of the two imports, under one id.
        for (i, user) in shared.iter().enumerate() {
            let from_a = a.iter().find(|o| o.object_id == user.object_id).unwrap();
            let from_b = b.iter().find(|o| o.object_id == user.object_id).unwrap();
            let mut kinds = [from_a.kind(), from_b.kind()];
            kinds.sort_by_key(|k| *k as i32);
            assert!(kinds.contains(&Created) && kinds.contains(&AlreadyPresent), "user {i}: {kinds:?}");
            assert_eq!(from_a.user_id, from_b.user_id, "user {i}");
        }
        let outcomes: Vec<&pb::ImportOutcome> =
            rounds.iter().flat_map(|(a, b)| a.iter().chain(b)).collect();
        assert!(outcomes.iter().all(|o| o.kind() != Failed), "no import failed a user");
        let created: Vec<&&pb::ImportOutcome> = outcomes.iter().filter(|o| o.kind() == Created).collect();
        // 150 shared users (once) and 4 rounds of 50 + 50 users of their own.
        assert_eq!(created.len(), 150 + 4 * 100);
        let ids: HashSet<String> = created.iter().map(|o| o.user_id.to_lowercase()).collect();
        assert_eq!(ids.len(), created.len(), "every created user has an id of its own");
        assert_eq!(first.user_count().await, 550);
    }

    async fn the_first_chunks_of_a_new_import_arriving_together_all_commit_under_its_one_binding(db) {
        // A batch job's first chunks reach the registry at once, each finding the import id
        // unbound: one makes the binding and the others, held back until it has committed,
        // must find it and go on, with colliding aliases numbered across all of them.
        let app = TestApp::spawn(&db).await;
        let chunks = (0..8_u32).map(|n| {
            let app = &app;
            async move {
                let users = (0..50)
                    .map(|i| member(n * 100 + i, &format!("kim.park{}@contoso.com", i % 4)))
                    .collect();
                app.import("job-9", "DAT", users).await
            }
        });
        let outcomes = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            futures::future::join_all(chunks),
        )
        .await
        .expect("no chunk waits forever on another");
        for outcome in &outcomes {
            let outcome = outcome.as_ref().expect("every chunk succeeds");
            assert!(outcome.iter().all(|o| o.kind() == Created));
        }
        let under_job: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE created_by_import = 'job-9'")
                .fetch_one(app.db.pool())
                .await
                .unwrap();
        assert_eq!(under_job, 400);
        let bindings: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM imports WHERE import_id = 'job-9'")
            .fetch_one(app.db.pool())
            .await
            .unwrap();
        assert_eq!(bindings, 1);
        // The binding made by the first chunk still refuses a call that differs.
        let private = app
            .client
            .clone()
            .import_users(pb::ImportUsersRequest {
                import_id: "job-9".into(),
                company: "DAT".into(),
                users: vec![member(9999, "lee.chan@contoso.com")],
                dry_run: false,
                private: true,
            })
            .await
            .unwrap_err();
        assert!(private.message().contains("another privacy setting"), "{}", private.message());
    }

    async fn a_first_call_whose_binding_is_rolled_back_lets_the_next_call_of_its_import_id_through(db) {
        // A dry run makes the import id's binding in its transaction and rolls it back: the
        // call after it must neither wait for it nor find its binding.
        let app = TestApp::spawn(&db).await;
        let request = |dry_run: bool, private: bool| pb::ImportUsersRequest {
            import_id: "job-11".into(),
            company: "DAT".into(),
            users: vec![member(1, "ana.ruiz@contoso.com")],
            dry_run,
            private,
        };
        let within = std::time::Duration::from_secs(10);
        let dry = tokio::time::timeout(within, app.client.clone().import_users(request(true, true)))
            .await
            .expect("the dry run ends")
            .unwrap();
        assert_eq!(kinds(&dry.into_inner().outcomes), [Created]);
        let real = tokio::time::timeout(within, app.client.clone().import_users(request(false, false)))
            .await
            .expect("the call after it does not wait for it")
            .expect("the dry run's binding did not stay");
        assert_eq!(kinds(&real.into_inner().outcomes), [Created]);
        assert_eq!(app.user_count().await, 1);
    }

    async fn more_concurrent_imports_needing_numbered_ids_than_pooled_connections_all_succeed(db) {
        // Every import holds a pooled connection for its transaction while it reserves numbers;
        // 12 at once on a pool of 5 must not wait on each other for a connection.
        let app = TestApp::spawn(&db).await;
        let batch = |offset: u32| -> Vec<pb::NewUser> {
            (0..20).map(|i| member(offset + i, &format!("jane.roe{}@contoso.com", i % 3))).collect()
        };
        let imports = (0..12_u32).map(|n| {
            let app = &app;
            async move { app.import(&format!("import-{n}"), "DAT", batch(n * 100)).await }
        });
        let outcomes = futures::future::join_all(imports).await;
        for outcome in &outcomes {
            let outcome = outcome.as_ref().expect("every import succeeds");
            assert!(outcome.iter().all(|o| o.kind() == Created));
        }
        assert_eq!(app.user_count().await, 240);
    }
}

#[test]
fn object_ids_in_helpers_are_guids() {
    assert_eq!(object_id(255).len(), 36);
}
