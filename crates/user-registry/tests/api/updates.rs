//! Directory changes applied to registry users (UpdateUsers, the registry side of issue 8).

use proto::registry::v1 as pb;
use tonic::Code;

use crate::helpers::{TENANT, TestApp, member, object_id};

fn change(n: u32) -> pb::UserChange {
    pb::UserChange {
        tenant_id: TENANT.into(),
        object_id: object_id(n),
        ..Default::default()
    }
}

fn request(
    change_id: &str,
    changes: Vec<pb::UserChange>,
    dry_run: bool,
) -> tonic::Request<pb::UpdateUsersRequest> {
    let mut request = tonic::Request::new(pb::UpdateUsersRequest {
        change_id: change_id.into(),
        changes,
        dry_run,
        count_users: true,
    });
    request
        .metadata_mut()
        .insert("x-userimport-principal", "sync-bot".parse().unwrap());
    request
}

fn summary(outcomes: &[pb::UserUpdateOutcome]) -> Vec<(pb::UpdateKind, String, Vec<String>)> {
    outcomes
        .iter()
        .map(|o| (o.kind(), o.user_id.clone(), o.changed.clone()))
        .collect()
}

async fn imported(db: &test_support::TestDatabase) -> TestApp {
    let app = TestApp::spawn(db).await;
    app.import(
        "imp",
        "DAT",
        vec![
            member(1, "ann@contoso.com"),
            member(2, "bob@contoso.com"),
            member(3, "cy@contoso.com"),
        ],
    )
    .await
    .unwrap();
    app
}

async fn user(app: &TestApp, n: u32) -> pb::RegistryUser {
    let request = pb::GetUserRequest {
        key: Some(pb::get_user_request::Key::Object(pb::ObjectKey {
            tenant_id: TENANT.into(),
            object_id: object_id(n),
        })),
    };
    app.client
        .clone()
        .get_user(request)
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
}

fn changes() -> Vec<pb::UserChange> {
    vec![
        pb::UserChange {
            name: Some("Ann Smith".into()),
            ..change(1)
        },
        pb::UserChange {
            network_alias: Some("bob.jones@contoso.com".into()),
            ..change(2)
        },
        pb::UserChange {
            enabled: Some(false),
            ..change(3)
        },
        pb::UserChange {
            name: Some("User 2".into()),
            enabled: Some(true),
            ..change(2)
        },
        change(9),
    ]
}

test_support::on_both_backends! {
    async fn directory_changes_update_names_and_aliases_keep_the_user_id_and_are_audited_with_their_run(db) {
        let app = imported(&db).await;
        let outcomes = app.client.clone().update_users(request("run-7", changes(), false)).await.unwrap().into_inner().outcomes;
        assert_eq!(summary(&outcomes), [
            (pb::UpdateKind::Updated, "ann".into(), vec!["name".into()]),
            (pb::UpdateKind::Updated, "bob".into(), vec!["network_alias".into()]),
            (pb::UpdateKind::Updated, "cy".into(), vec!["enabled".into()]),
            (pb::UpdateKind::Unchanged, "bob".into(), vec![]),
            (pb::UpdateKind::NotFound, String::new(), vec![]),
        ]);
        assert_eq!(user(&app, 1).await.name, "Ann Smith");
        let bob = user(&app, 2).await;
        assert_eq!((bob.user_id.as_str(), bob.network_alias.as_str(), bob.email.as_str()), ("bob", "bob.jones@contoso.com", "bob.jones@contoso.com"));
        assert!(!user(&app, 3).await.enabled);

        let events = app.client.clone().list_audit_events(pb::ListAuditEventsRequest { via: "run-7".into(), ..Default::default() }).await.unwrap().into_inner().events;
        let mut seen: Vec<(String, String, String)> = events.iter().map(|e| (e.action.clone(), e.user_id.clone(), e.actor.clone())).collect();
        seen.sort();
        assert_eq!(seen, [
            ("disable".into(), "cy".into(), "sync-bot".into()),
            ("update".into(), "ann".into(), "sync-bot".into()),
            ("update".into(), "bob".into(), "sync-bot".into()),
        ]);
        let bob_event = events.iter().find(|e| e.user_id == "bob").unwrap();
        let detail: serde_json::Value = serde_json::from_str(&bob_event.detail).unwrap();
        assert_eq!(detail, serde_json::json!({"network_alias": {"from": "bob@contoso.com", "to": "bob.jones@contoso.com"}}));

        // The same changes again change nothing and record nothing.
        let again = app.client.clone().update_users(request("run-8", changes(), false)).await.unwrap().into_inner().outcomes;
        assert!(again.iter().all(|o| matches!(o.kind(), pb::UpdateKind::Unchanged | pb::UpdateKind::NotFound)), "{again:?}");
        let none = app.client.clone().list_audit_events(pb::ListAuditEventsRequest { via: "run-8".into(), ..Default::default() }).await.unwrap().into_inner().events;
        assert!(none.is_empty());
    }

    async fn a_dry_run_reports_exactly_what_the_real_run_then_does_and_writes_nothing(db) {
        let app = imported(&db).await;
        let before: Vec<pb::RegistryUser> = vec![user(&app, 1).await, user(&app, 2).await, user(&app, 3).await];
        let preview = app.client.clone().update_users(request("run-1", changes(), true)).await.unwrap().into_inner();
        assert_eq!(preview.total_users, 3, "the registry's size, for safety thresholds");
        let preview = preview.outcomes;
        let after_preview = vec![user(&app, 1).await, user(&app, 2).await, user(&app, 3).await];
        assert_eq!(before, after_preview, "a dry run writes nothing");
        let audit = app.client.clone().list_audit_events(pb::ListAuditEventsRequest { via: "run-1".into(), ..Default::default() }).await.unwrap().into_inner().events;
        assert!(audit.is_empty(), "nor audits anything");
        let real = app.client.clone().update_users(request("run-1", changes(), false)).await.unwrap().into_inner().outcomes;
        assert_eq!(preview, real);
    }

    async fn an_invalid_change_fails_alone_and_bad_requests_are_refused(db) {
        let app = imported(&db).await;
        let changes = vec![
            pb::UserChange { network_alias: Some("not an alias".into()), ..change(1) },
            pb::UserChange { name: Some("   ".into()), ..change(2) },
            pb::UserChange { object_id: "nope".into(), ..change(3) },
            pb::UserChange { name: Some("Cy Young".into()), ..change(3) },
        ];
        let outcomes = app.client.clone().update_users(request("run-2", changes, false)).await.unwrap().into_inner().outcomes;
        let kinds: Vec<pb::UpdateKind> = outcomes.iter().map(|o| o.kind()).collect();
        assert_eq!(kinds, [pb::UpdateKind::Failed, pb::UpdateKind::Failed, pb::UpdateKind::Failed, pb::UpdateKind::Updated]);
        assert!(outcomes[0].reason.contains("network_alias"), "{}", outcomes[0].reason);
        assert!(outcomes[1].reason.contains("name"), "{}", outcomes[1].reason);
        assert!(outcomes[2].reason.contains("object_id"), "{}", outcomes[2].reason);
        assert_eq!(user(&app, 3).await.name, "Cy Young");

        let err = app.client.clone().update_users(request("", vec![change(1)], false)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let many: Vec<pb::UserChange> = (0..1001).map(change).collect();
        let err = app.client.clone().update_users(request("run-3", many, false)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("1000"), "{}", err.message());
    }
    async fn a_user_restored_in_the_directory_loses_its_deleted_mark_audited_as_an_update(db) {
        let app = imported(&db).await;
        let mark = |n, marked| pb::UserChange { deleted_in_directory: Some(marked), enabled: Some(!marked), ..change(n) };
        app.client.clone().update_users(request("run-a", vec![mark(1, true)], false)).await.unwrap();
        let marked_at = user(&app, 1).await.deleted_in_directory_at_ms;
        assert!(marked_at > 0);
        // A change that says nothing about the mark leaves it.
        app.client.clone().update_users(request("run-b", vec![pb::UserChange { name: Some("Ann Smith".into()), ..change(1) }], false)).await.unwrap();
        assert_eq!(user(&app, 1).await.deleted_in_directory_at_ms, marked_at);

        let preview = app.client.clone().update_users(request("run-c", vec![mark(1, false), mark(2, false)], true)).await.unwrap().into_inner().outcomes;
        let real = app.client.clone().update_users(request("run-c", vec![mark(1, false), mark(2, false)], false)).await.unwrap().into_inner().outcomes;
        assert_eq!(preview, real, "the dry run says what clearing does");
        assert_eq!(summary(&real), [
            (pb::UpdateKind::Updated, "ann".into(), vec!["deleted_in_directory".into(), "enabled".into()]),
            (pb::UpdateKind::Unchanged, "bob".into(), vec![]),
        ], "clearing a mark that is not there changes nothing");
        let ann = user(&app, 1).await;
        assert_eq!((ann.deleted_in_directory_at_ms, ann.enabled), (0, true));
        let events = app.client.clone().list_audit_events(pb::ListAuditEventsRequest { via: "run-c".into(), ..Default::default() }).await.unwrap().into_inner().events;
        let mut actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
        actions.sort_unstable();
        assert_eq!(actions, ["enable", "update"]);
        let update = events.iter().find(|e| e.action == "update").unwrap();
        let detail: serde_json::Value = serde_json::from_str(&update.detail).unwrap();
        assert_eq!(detail, serde_json::json!({"deleted_in_directory": {"from": true, "to": false, "marked_at_ms": marked_at}}));
    }
}

async fn import_changes(
    app: &TestApp,
    after_seq: u64,
    after_object_id: &str,
) -> Vec<pb::ImportChange> {
    app.settle().await;
    app.client
        .clone()
        .list_import_changes(pb::ListImportChangesRequest {
            tenant_id: TENANT.into(),
            after_seq,
            after_object_id: after_object_id.into(),
            page_size: 2,
        })
        .await
        .unwrap()
        .into_inner()
        .changes
}

test_support::on_both_backends! {
    async fn the_import_feed_lists_imports_and_deletions_in_commit_order_the_latest_last(db) {
        let app = imported(&db).await;
        // Pages of two, from the start: the three imports, one transaction's number each.
        let first = import_changes(&app, 0, "").await;
        assert_eq!(first.len(), 2);
        let last = first.last().unwrap().clone();
        let second = import_changes(&app, last.seq, &last.object_id).await;
        assert_eq!(second.len(), 1);
        let all: Vec<_> = first.iter().chain(&second).cloned().collect();
        assert!(all.iter().all(|c| c.imported && c.seq == all[0].seq));
        let mut ids: Vec<_> = all.iter().map(|c| c.object_id.clone()).collect();
        ids.sort();
        assert_eq!(ids, vec![object_id(1), object_id(2), object_id(3)]);

        // A dry-run deletion leaves the feed alone; the real one comes after every import.
        let end = all.last().unwrap().clone();
        let delete = pb::UserChange { delete: true, ..change(2) };
        app.client.clone().update_users(request("run-d", vec![delete.clone()], true)).await.unwrap();
        assert!(import_changes(&app, end.seq, &end.object_id).await.is_empty());
        app.client.clone().update_users(request("run-d", vec![delete], false)).await.unwrap();
        let after = import_changes(&app, end.seq, &end.object_id).await;
        assert_eq!(after.len(), 1);
        assert_eq!((after[0].object_id.clone(), after[0].imported), (object_id(2), false));
        assert!(after[0].seq > end.seq);
        // Each user once, with its latest state.
        let everything = import_changes(&app, 0, "").await;
        assert_eq!(everything.iter().filter(|c| c.object_id == object_id(2)).count(), 0, "user 2 moved past the first page");

        // Imported again: the user's import comes after its deletion, so a reader from any
        // position ends with the latest state.
        app.import("imp-2", "DAT", vec![member(2, "bob@contoso.com")]).await.unwrap();
        let again = import_changes(&app, after[0].seq, &after[0].object_id).await;
        assert_eq!(again.len(), 1);
        assert!(again[0].imported && again[0].seq > after[0].seq);
        let mut from_start = Vec::new();
        let mut position = (0, String::new());
        loop {
            let page = import_changes(&app, position.0, &position.1).await;
            let Some(last) = page.last() else { break };
            position = (last.seq, last.object_id.clone());
            from_start.extend(page);
        }
        let bob: Vec<bool> = from_start.iter().filter(|c| c.object_id == object_id(2)).map(|c| c.imported).collect();
        assert_eq!(bob, [false, true], "the deletion, then the import");
        assert_eq!(from_start.len(), 4);
    }
}

mod the_import_feed_on_postgres {
    use super::*;
    use sqlx::Connection as _;

    /// The feed's promise: once a reader has read past a number, nothing commits below it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_lets_a_reader_pass_a_change_still_being_committed() {
        let Some(db) = test_support::TestDatabase::postgres().await else {
            return;
        };
        let app = imported(&db).await;
        let start = import_changes(&app, 0, "").await;
        let start = import_changes(&app, start[1].seq, &start[1].object_id).await[0].clone();

        // A deletion that has written its feed row (under an older number) but not committed...
        let mut slow = sqlx::postgres::PgConnection::connect(&db.url)
            .await
            .unwrap();
        let mut slow_tx = slow.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO import_feed (tenant_id, object_id, seq, imported) \
             VALUES ($1, $2, pg_current_xact_id()::text::bigint, false)",
        )
        .bind(TENANT)
        .bind(object_id(1))
        .execute(&mut *slow_tx)
        .await
        .unwrap();
        // ... while a later import commits.
        app.import("imp-late", "DAT", vec![member(4, "dee@contoso.com")])
            .await
            .unwrap();
        let read = app
            .client
            .clone()
            .list_import_changes(pb::ListImportChangesRequest {
                tenant_id: TENANT.into(),
                after_seq: start.seq,
                after_object_id: start.object_id.clone(),
                page_size: 10,
            })
            .await
            .unwrap()
            .into_inner()
            .changes;
        assert!(
            read.is_empty(),
            "the later import is held back while the older change is open: {read:?}"
        );

        slow_tx.commit().await.unwrap();
        let read = import_changes(&app, start.seq, &start.object_id).await;
        let states: Vec<(String, bool)> = read
            .iter()
            .map(|c| (c.object_id.clone(), c.imported))
            .collect();
        assert_eq!(
            states,
            [(object_id(1), false), (object_id(4), true)],
            "the older change first, then the later one"
        );
    }
}
