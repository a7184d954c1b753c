use proto::importer::v1 as importer_pb;
use tonic::Code;

use crate::helpers::EndToEnd;

async fn nothing_was_written(e2e: &EndToEnd) {
    assert!(e2e.registry_users().await.is_empty(), "no registry user");
    let jobs = e2e
        .importer
        .clone()
        .list_jobs(importer_pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(jobs.jobs.is_empty(), "no job record");
}

test_support::on_both_backends! {
    async fn an_unknown_company_is_refused_by_name(db) {
        let e2e = EndToEnd::start(&db, 30).await;
        let ids = vec![e2e.tenant()[0].id.clone()];
        let err = e2e.import(ids, "ZZZ").await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(err.message().contains("ZZZ"), "{}", err.message());
        nothing_was_written(&e2e).await;
    }

    async fn an_object_id_the_directory_does_not_know_refuses_an_all_or_nothing_import_by_id(db) {
        let e2e = EndToEnd::start(&db, 30).await;
        let unknown = "0badc0de-0000-4000-8000-000000000000".to_owned();
        let request = importer_pb::ImportSelectedRequest {
            object_ids: vec![e2e.tenant()[0].id.clone(), unknown.clone()],
            company: "DAT".into(),
            all_or_nothing: true,
            ..Default::default()
        };
        let err = e2e.importer.clone().import_selected(request).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(err.message().contains(&unknown), "{}", err.message());
        nothing_was_written(&e2e).await;

        // Without it, the unknown id is that user's outcome and the other is imported.
        let answer = e2e.import(vec![e2e.tenant()[0].id.clone(), unknown.clone()], "DAT").await.unwrap();
        let kinds: Vec<_> = answer.outcomes.iter().map(|o| (o.object_id.clone(), o.kind())).collect();
        assert_eq!(kinds[1], (unknown, proto::registry::v1::OutcomeKind::Skipped));
        assert_eq!(answer.counts.unwrap().created + answer.counts.unwrap().skipped, 2);
    }

    async fn an_empty_selection_is_refused(db) {
        let e2e = EndToEnd::start(&db, 5).await;
        let err = e2e.import(Vec::new(), "DAT").await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("object_ids"), "{}", err.message());
        nothing_was_written(&e2e).await;
    }

    async fn more_ids_than_the_per_call_limit_are_refused(db) {
        let e2e = EndToEnd::start(&db, 5).await;
        let ids: Vec<String> = (0..1001).map(|n| format!("00000000-0000-4000-8000-{n:012x}")).collect();
        let err = e2e.import(ids, "DAT").await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("1000"), "{}", err.message());
        nothing_was_written(&e2e).await;
    }

    async fn a_malformed_object_id_is_refused_by_position(db) {
        let e2e = EndToEnd::start(&db, 5).await;
        let err = e2e.import(vec![e2e.tenant()[0].id.clone(), "adele@contoso".into()], "DAT").await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("object_ids[1]"), "{}", err.message());
        nothing_was_written(&e2e).await;
    }
}
