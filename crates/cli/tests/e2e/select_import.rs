use std::collections::HashSet;

use graph_emulator::{SyntheticKind, synthetic_kind};
use proto::importer::v1 as importer_pb;
use proto::registry::v1::OutcomeKind::{AlreadyPresent, Created, Skipped};
use proto::registry::v1::{AccountType, OutcomeKind};

use crate::helpers::EndToEnd;

fn kinds(response: &importer_pb::ImportSelectedResponse) -> Vec<OutcomeKind> {
    response.outcomes.iter().map(|o| o.kind()).collect()
}

/// `message` from `principal` (the stack runs in insecure mode, where the header names the
/// caller).
fn as_<T>(principal: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        service_runtime::auth::PRINCIPAL_HEADER,
        principal.parse().unwrap(),
    );
    request
}

fn keyed(ids: &[&str], company: &str, key: &str) -> importer_pb::ImportSelectedRequest {
    importer_pb::ImportSelectedRequest {
        object_ids: ids.iter().map(|id| (*id).to_owned()).collect(),
        company: company.into(),
        request_id: key.into(),
        ..Default::default()
    }
}

test_support::on_both_backends! {
    async fn with_auto_import_on_users_who_appear_in_the_directory_are_imported_after_the_next_round(db) {
        let e2e = EndToEnd::start_with(&db, 30, true).await;
        assert!(e2e.registry_users().await.is_empty(), "the first full read imports nobody");
        let emulator = e2e.stack.emulator.as_ref().unwrap();
        let newcomer = graph_emulator::EmulatedUser {
            id: "0f0f0f0f-0000-4000-8000-00000000abcd".into(),
            user_principal_name: "new.hire@contoso.com".into(),
            mail: Some("new.hire@contoso.com".into()),
            display_name: "New Hire".into(),
            given_name: None,
            surname: None,
            account_enabled: true,
            user_type: "Member".into(),
        };
        emulator.create_user(newcomer.clone()).unwrap();
        let guest_without_mail = graph_emulator::EmulatedUser {
            id: "0f0f0f0f-0000-4000-8000-00000000abce".into(),
            user_principal_name: "visitor_fabrikam.com#EXT#@contoso.com".into(),
            mail: None,
            display_name: "Visitor".into(),
            user_type: "Guest".into(),
            ..newcomer.clone()
        };
        emulator.create_user(guest_without_mail).unwrap();

        let run = crate::helpers::round_to_end(&mut e2e.directory.clone(), proto::directory::v1::SyncNowRequest { mode: proto::directory::v1::SyncMode::Delta.into(), ..Default::default() }).await.run.unwrap();
        assert_eq!(run.status(), proto::directory::v1::SyncRunStatus::Succeeded, "{run:?}");
        let users = e2e.registry_users().await;
        assert_eq!(users.len(), 1, "the member is imported; the guest without mail is skipped");
        assert_eq!(users[0].object_id, newcomer.id);
        assert_eq!(users[0].user_id, "new.hire");
        assert!(users[0].created_by_import.starts_with(&format!("sync-{}", run.run_id)), "{}", users[0].created_by_import);
    }

    async fn a_dry_run_import_reports_what_the_real_import_then_does_and_writes_nothing(db) {
        // The whole tenant: common names that collide, aliases equal after 20 characters,
        // guests without mail.
        let e2e = EndToEnd::start(&db, 120).await;
        let ids: Vec<String> = e2e.tenant().iter().map(|u| u.id.clone()).collect();
        let request = |dry_run: bool| importer_pb::ImportSelectedRequest { object_ids: ids.clone(), company: "DAT".into(), dry_run, ..Default::default() };
        let preview = e2e.importer.clone().import_selected(request(true)).await.unwrap().into_inner();
        assert!(e2e.registry_users().await.is_empty(), "a dry run writes no user");
        let jobs = e2e.importer.clone().list_jobs(importer_pb::ListJobsRequest::default()).await.unwrap().into_inner().jobs;
        assert!(jobs.is_empty(), "and records no job");
        let numbered = preview.outcomes.iter().filter(|o| o.user_id.chars().last().is_some_and(|c| c.is_ascii_digit())).count();
        assert!(numbered > 0, "the tenant has colliding names, numbered in the preview");

        let real = e2e.importer.clone().import_selected(request(false)).await.unwrap().into_inner();
        let key = |o: &proto::registry::v1::ImportOutcome| (o.object_id.clone(), o.kind(), o.user_id.clone(), o.reason.clone());
        assert_eq!(preview.outcomes.iter().map(key).collect::<Vec<_>>(), real.outcomes.iter().map(key).collect::<Vec<_>>());
        assert_eq!(preview.counts, real.counts);
        assert_eq!(e2e.registry_users().await.len() as u64, real.counts.unwrap().created);
    }

    async fn five_selected_users_are_imported_with_one_outcome_each_and_then_hidden(db) {
        let e2e = EndToEnd::start(&db, 200).await;
        let tenant = e2e.tenant();
        let listed = e2e.list_not_imported().await;
        assert_eq!(listed.len(), 200, "nothing is imported yet");

        let index_of = |kind: SyntheticKind, nth: usize| (0..tenant.len()).filter(|&i| synthetic_kind(i) == kind).nth(nth).unwrap();
        let member = index_of(SyntheticKind::Member, 0);
        let guest = index_of(SyntheticKind::GuestWithMail, 0);
        let guest_without_mail = index_of(SyntheticKind::GuestWithoutMail, 0);
        let colliding = [index_of(SyntheticKind::LongCollidingLocalPart, 0), index_of(SyntheticKind::LongCollidingLocalPart, 1)];
        let picked = [member, guest, guest_without_mail, colliding[0], colliding[1]];
        let ids: Vec<String> = picked.iter().map(|&i| tenant[i].id.clone()).collect();

        let response = e2e.import(ids.clone(), "usmf").await.unwrap();
        assert_eq!(kinds(&response), [Created, Created, Skipped, Created, Created]);
        let outcome_ids: Vec<&str> = response.outcomes.iter().map(|o| o.object_id.as_str()).collect();
        assert_eq!(outcome_ids, ids.iter().map(String::as_str).collect::<Vec<_>>(), "one outcome per id, in order");
        assert!(response.outcomes[2].reason.contains("without mail"), "{}", response.outcomes[2].reason);
        let counts = response.counts.unwrap();
        assert_eq!((counts.created, counts.already_present, counts.skipped, counts.failed), (4, 0, 1, 0));

        // The colliding aliases share their first 20 characters; one keeps them, the other is numbered.
        let colliding_ids: HashSet<&str> = [response.outcomes[3].user_id.as_str(), response.outcomes[4].user_id.as_str()].into();
        let base: String = tenant[colliding[0]].user_principal_name.split('@').next().unwrap().chars().take(20).collect();
        let numbered = format!("{}2", &base[..19]);
        assert_eq!(colliding_ids, HashSet::from([base.as_str(), numbered.as_str()]));

        let users = e2e.registry_users().await;
        assert_eq!(users.len(), 4);
        assert!(users.iter().all(|u| u.company == "USMF"));
        let guest_user = users.iter().find(|u| u.object_id == tenant[guest].id).unwrap();
        let guest_mail = tenant[guest].mail.clone().unwrap();
        assert_eq!(guest_user.network_alias, guest_mail);
        assert_eq!(guest_user.account_type(), AccountType::Guest);
        assert_eq!(guest_user.network_domain, format!("https://sts.windows.net/{}", guest_mail.split('@').nth(1).unwrap()));
        let member_user = users.iter().find(|u| u.object_id == tenant[member].id).unwrap();
        assert_eq!(member_user.network_alias, tenant[member].user_principal_name);
        assert_eq!(member_user.network_domain, "https://sts.windows.net/");
        assert_eq!(member_user.name, tenant[member].display_name);
        assert!(member_user.enabled);

        let listed = e2e.list_not_imported().await;
        let listed_ids: HashSet<String> = listed.iter().map(|u| u.object_id.clone()).collect();
        assert_eq!(listed.len(), 196);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(listed_ids.contains(id), i == 2, "only the skipped guest is still listed");
        }

        let again = e2e.import(ids, "USMF").await.unwrap();
        assert_eq!(kinds(&again), [AlreadyPresent, AlreadyPresent, Skipped, AlreadyPresent, AlreadyPresent]);
        assert_eq!(e2e.registry_users().await, users, "importing again changes nothing");
    }

    async fn a_disabled_directory_user_is_imported_disabled(db) {
        let e2e = EndToEnd::start(&db, 60).await;
        let tenant = e2e.tenant();
        let disabled = (0..tenant.len()).find(|&i| synthetic_kind(i) == SyntheticKind::DisabledMember).unwrap();
        let response = e2e.import(vec![tenant[disabled].id.clone()], "DAT").await.unwrap();
        assert_eq!(kinds(&response), [Created]);
        assert!(!e2e.registry_users().await[0].enabled);
    }

    async fn a_retried_request_reports_its_first_outcomes_and_is_recorded_once(db) {
        let e2e = EndToEnd::start(&db, 60).await;
        let tenant = e2e.tenant();
        let ids = vec![tenant[0].id.clone(), tenant[19].id.clone(), tenant[0].id.clone()];
        let request = importer_pb::ImportSelectedRequest {
            object_ids: ids,
            company: "DAT".into(),
            request_id: "retry-me".into(),
            ..Default::default()
        };
        let first = e2e.importer.clone().import_selected(request.clone()).await.unwrap().into_inner();
        let retry = e2e.importer.clone().import_selected(request).await.unwrap().into_inner();
        assert_eq!(first.outcomes, retry.outcomes);
        assert_eq!(kinds(&retry), [Created, Skipped], "the repeated id is one user");

        let job = e2e.importer.clone().get_job(importer_pb::GetJobRequest { job_id: "retry-me".into() }).await.unwrap().into_inner().job.unwrap();
        assert_eq!(job.status(), importer_pb::JobStatus::Completed);
        let counts = job.counts.unwrap();
        assert_eq!((counts.created, counts.skipped), (1, 1));
        let report = e2e
            .importer
            .clone()
            .list_job_outcomes(importer_pb::ListJobOutcomesRequest { job_id: "retry-me".into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(report.outcomes.len(), 1, "the report lists the users not created");
        assert_eq!(report.outcomes[0].object_id, tenant[19].id);
        let jobs = e2e.importer.clone().list_jobs(importer_pb::ListJobsRequest::default()).await.unwrap().into_inner();
        assert_eq!(jobs.jobs.len(), 1);
    }

    async fn the_same_key_from_two_principals_is_two_keys(db) {
        let e2e = EndToEnd::start(&db, 60).await;
        let tenant = e2e.tenant();
        let mut importer = e2e.importer.clone();
        let alice = importer.import_selected(as_("alice", keyed(&[&tenant[0].id], "DAT", "shared-key"))).await.unwrap().into_inner();
        let bob = importer.import_selected(as_("bob", keyed(&[&tenant[1].id], "DAT", "shared-key"))).await.unwrap().into_inner();
        assert_eq!((kinds(&alice), kinds(&bob)), (vec![Created], vec![Created]), "bob's call is not a replay of alice's");
        assert_eq!(alice.request_id, "shared-key");
        assert!(bob.request_id.starts_with("shared-key~"), "{}", bob.request_id);

        for (who, response, object_id) in [("alice", &alice, &tenant[0].id), ("bob", &bob, &tenant[1].id)] {
            let job = importer.get_job(as_(who, importer_pb::GetJobRequest { job_id: response.request_id.clone() })).await.unwrap().into_inner().job.unwrap();
            assert_eq!(job.created_by, who);
            assert_eq!(job.counts.unwrap().created, 1);
            let request = proto::registry::v1::ListUsersRequest { created_by_import: response.request_id.clone(), ..Default::default() };
            let made = e2e.registry.clone().list_users(request).await.unwrap().into_inner().users;
            assert_eq!(made.iter().map(|u| &u.object_id).collect::<Vec<_>>(), [object_id], "{who}'s job made {who}'s user only");
            // Each replays as its own.
            let again = importer.import_selected(as_(who, keyed(&[object_id], "DAT", "shared-key"))).await.unwrap().into_inner();
            assert_eq!((again.request_id.as_str(), kinds(&again)), (response.request_id.as_str(), vec![Created]));
        }
    }

    async fn the_same_key_with_another_body_is_refused(db) {
        let e2e = EndToEnd::start(&db, 60).await;
        let tenant = e2e.tenant();
        let mut importer = e2e.importer.clone();
        // The stack holds DAT and USMF.
        let first = importer.import_selected(as_("alice", keyed(&[&tenant[0].id], "DAT", "k-1"))).await.unwrap().into_inner();
        assert_eq!(kinds(&first), [Created]);

        for (what, request) in [
            ("other ids", keyed(&[&tenant[1].id], "DAT", "k-1")),
            ("more ids", keyed(&[&tenant[0].id, &tenant[1].id], "DAT", "k-1")),
            ("another company", keyed(&[&tenant[0].id], "USMF", "k-1")),
        ] {
            let status = importer.import_selected(as_("alice", request)).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{what}: {status:?}");
            assert_eq!(service_runtime::error::reason(&status).as_deref(), Some("IDEMPOTENCY_KEY_REUSED"), "{what}");
        }
        let users = e2e.registry_users().await;
        assert_eq!(users.len(), 1, "nobody else was imported under the key");
        assert_eq!((users[0].company.as_str(), users[0].created_by_import.as_str()), ("DAT", "k-1"));
        let job = importer.get_job(as_("alice", importer_pb::GetJobRequest { job_id: "k-1".into() })).await.unwrap().into_inner().job.unwrap();
        assert_eq!(job.counts.unwrap().created, 1, "the job's record still says what it did");

        // The same request again (order and repeats aside) is a replay: one outcome per
        // distinct id.
        let replay = importer.import_selected(as_("alice", keyed(&[&tenant[0].id, &tenant[0].id], "DAT", "k-1"))).await.unwrap().into_inner();
        assert_eq!(kinds(&replay), [Created]);
    }
}
