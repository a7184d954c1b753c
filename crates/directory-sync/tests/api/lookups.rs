use proto::directory::v1 as pb;
use tonic::Code;

use crate::helpers::Stack;

test_support::on_both_backends! {
    async fn users_missing_from_the_mirror_are_fetched_from_graph_and_kept(db) {
        let stack = Stack::spawn(&db, 60).await;
        let users = stack.emulator.users();
        let guest = users.iter().find(|u| u.user_principal_name.contains("#EXT#")).unwrap();
        let request = pb::GetUsersRequest {
            object_ids: vec![users[3].id.to_uppercase()],
            user_principal_names: vec![guest.user_principal_name.clone()],
        };
        let found = stack.directory.clone().get_users(request.clone()).await.unwrap().into_inner();
        assert!(found.not_found.is_empty(), "{:?}", found.not_found);
        assert_eq!(found.users.len(), 2);
        assert_eq!(found.users[0].object_id, users[3].id);
        assert_eq!(found.users[1].object_id, guest.id);
        assert_eq!(found.users[1].account_type(), pb::AccountType::Guest);

        // The misses were read from Graph in one $batch request; the second lookup is
        // answered from the mirror without any request.
        let graph_reads = |stack: &Stack| {
            stack.emulator.requests().iter().filter(|r| r.path_and_query.starts_with("/v1.0/")).count()
        };
        let batches = stack.emulator.requests().iter().filter(|r| r.path_and_query == "/v1.0/$batch").count();
        assert_eq!(batches, 1);
        let before = graph_reads(&stack);
        stack.directory.clone().get_users(request).await.unwrap();
        assert_eq!(graph_reads(&stack), before);
    }

    async fn unknown_ids_are_reported_not_found(db) {
        let stack = Stack::spawn(&db, 10).await;
        stack.full_sync().await;
        let unknown = "00000000-0000-0000-0000-000000000000".to_owned();
        let known = stack.emulator.users()[0].id.clone();
        let found = stack
            .directory
            .clone()
            .get_users(pb::GetUsersRequest { object_ids: vec![known, unknown.clone()], ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.users.len(), 1);
        assert_eq!(found.not_found, [unknown]);
    }

    async fn malformed_or_too_many_ids_are_rejected_before_asking_graph(db) {
        let stack = Stack::spawn(&db, 10).await;
        let err = stack
            .directory
            .clone()
            .get_users(pb::GetUsersRequest { object_ids: vec!["nope".into()], ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("object_ids[0]"), "{}", err.message());
        let many: Vec<String> = (0..1001).map(|n| format!("00000000-0000-4000-8000-{n:012x}")).collect();
        let err = stack
            .directory
            .clone()
            .get_users(pb::GetUsersRequest { object_ids: many, ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(stack.emulator.requests().iter().all(|r| !r.path_and_query.starts_with("/v1.0/users")));
    }
}
