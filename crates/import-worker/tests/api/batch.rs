//! Batch imports through RabbitMQ with import-worker processes, against Postgres: nothing lost
//! or duplicated whatever fails.

use std::time::Duration;

use proto::directory::v1 as directory_pb;
use proto::importer::v1 as pb;
use tonic::Code;

use crate::cluster::{Cluster, ENGINEERING, WorkerSettings, assert_exact};

const USERS: usize = 20_000;

fn as_principal<T>(message: T, principal: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-userimport-principal", principal.parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_import_every_user_exactly_once() {
    let Some(mut cluster) = Cluster::start(USERS, WorkerSettings::default()).await else {
        return;
    };
    cluster.spawn_worker("a").await;
    cluster.spawn_worker("b").await;
    let mut events = cluster.listen_events().await;
    let options = pb::BatchOptions {
        monitoring_category: "quarterly".into(),
        ..Default::default()
    };
    let job = cluster.start_job(0, "admin", options).await;
    let ended = cluster.wait_ended(1, &job.job_id).await;
    assert_eq!(ended.status(), pb::JobStatus::Completed, "{ended:?}");
    assert_exact(&cluster, &ended).await;

    let started = events.wait_for("job.started", &job.job_id).await;
    assert_eq!(started["created_by"], "admin");
    assert_eq!(started["monitoring_category"], "quarterly");
    let completed = events.wait_for("job.completed", &job.job_id).await;
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["created"], ended.counts.unwrap().created);
    assert_eq!(completed["planned"], ended.planned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_left_unended_by_a_process_stopped_after_its_last_commit_is_ended_by_a_planner() {
    let Some(mut cluster) = Cluster::start(2_000, WorkerSettings::default()).await else {
        return;
    };
    cluster.spawn_worker("a").await;
    let job = cluster
        .start_job(0, "admin", pb::BatchOptions::default())
        .await;
    let ended = cluster.wait_ended(0, &job.job_id).await;
    assert_eq!(ended.status(), pb::JobStatus::Completed, "{ended:?}");
    // What a worker leaves when it stops between its last chunk's commit and asking whether
    // the job has ended: every chunk settled, the job still running.
    let database = service_runtime::storage::Database::connect(&cluster.importer_db_url, 1)
        .await
        .unwrap();
    sqlx::query("UPDATE jobs SET status = 'running', finished_at_ms = 0 WHERE job_id = $1")
        .bind(&job.job_id)
        .execute(database.pool())
        .await
        .unwrap();
    database.close().await;
    let again = cluster.wait_ended(0, &job.job_id).await;
    assert_eq!(again.status(), pb::JobStatus::Completed, "{again:?}");
    assert_eq!(again.counts, ended.counts, "the counts are the chunks' own");
    assert_exact(&cluster, &again).await;
    assert!(
        cluster
            .worker_log("a")
            .contains("a settled job left unended is ended"),
        "the planner's sweep ended it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_job_loses_and_duplicates_nothing() {
    let Some(mut cluster) = Cluster::start(USERS, WorkerSettings::default()).await else {
        return;
    };
    cluster.spawn_worker("a").await;
    cluster.spawn_worker("b").await;
    let job = cluster
        .start_job(0, "admin", pb::BatchOptions::default())
        .await;
    cluster
        .wait_for(0, &job.job_id, Duration::from_secs(60), |job| {
            job.chunks_done >= 10
        })
        .await;
    cluster.workers[1].kill();
    let ended = cluster.wait_ended(0, &job.job_id).await;
    assert_eq!(ended.status(), pb::JobStatus::Completed, "{ended:?}");
    assert_exact(&cluster, &ended).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn force_closed_broker_connections_mid_job_lose_and_duplicate_nothing() {
    let Some(mut cluster) = Cluster::start(USERS, WorkerSettings::default()).await else {
        return;
    };
    cluster.spawn_worker("a").await;
    cluster.spawn_worker("b").await;
    let job = cluster
        .start_job(0, "admin", pb::BatchOptions::default())
        .await;
    cluster
        .wait_for(0, &job.job_id, Duration::from_secs(60), |job| {
            job.chunks_done >= 1
        })
        .await;
    cluster.vhost.close_all_connections().await;
    let ended = cluster.wait_ended(0, &job.job_id).await;
    assert_eq!(ended.status(), pb::JobStatus::Completed, "{ended:?}");
    assert_exact(&cluster, &ended).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_planner_killed_mid_planning_is_replaced_and_the_result_is_as_if_nothing_happened() {
    let settings = WorkerSettings {
        chunk_size: 10,
        ..WorkerSettings::default()
    };
    let Some(mut cluster) = Cluster::start(USERS, settings).await else {
        return;
    };
    cluster.spawn_worker("a").await;
    cluster.spawn_worker("b").await;
    let job = cluster
        .start_job(0, "admin", pb::BatchOptions::default())
        .await;
    let planning = cluster
        .wait_for(0, &job.job_id, Duration::from_secs(60), |job| {
            job.chunks_planned >= 50
                || !matches!(
                    job.status(),
                    pb::JobStatus::Queued | pb::JobStatus::Planning
                )
        })
        .await;
    assert_eq!(
        planning.status(),
        pb::JobStatus::Planning,
        "planning ended before the planner could be killed"
    );
    let planner = cluster.planner_of(&job.job_id).await;
    cluster.workers[planner].kill();
    let survivor = 1 - planner;
    let ended = cluster.wait_ended(survivor, &job.job_id).await;
    assert_eq!(ended.status(), pb::JobStatus::Completed, "{ended:?}");
    assert_exact(&cluster, &ended).await;
    assert_eq!(
        cluster.planner_of(&job.job_id).await,
        survivor,
        "the survivor finished planning"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_planner_stopped_by_sigterm_hands_its_job_to_another_replica_at_once() {
    // A lease far longer than the test: only a lease handed back lets the survivor go on.
    let settings = WorkerSettings {
        chunk_size: 10,
        lease_secs: 600,
        ..WorkerSettings::default()
    };
    let Some(mut cluster) = Cluster::start(USERS, settings).await else {
        return;
    };
    cluster.spawn_worker("a").await;
    cluster.spawn_worker("b").await;
    let job = cluster
        .start_job(0, "admin", pb::BatchOptions::default())
        .await;
    let planning = cluster
        .wait_for(0, &job.job_id, Duration::from_secs(60), |job| {
            job.chunks_planned >= 50
                || !matches!(
                    job.status(),
                    pb::JobStatus::Queued | pb::JobStatus::Planning
                )
        })
        .await;
    assert_eq!(
        planning.status(),
        pb::JobStatus::Planning,
        "planning ended before the planner could be stopped"
    );
    let planner = cluster.planner_of(&job.job_id).await;
    cluster.workers[planner].terminate();
    let survivor = 1 - planner;
    let ended = cluster.wait_ended(survivor, &job.job_id).await;
    assert_eq!(ended.status(), pb::JobStatus::Completed, "{ended:?}");
    assert_exact(&cluster, &ended).await;
    assert_eq!(
        cluster.planner_of(&job.job_id).await,
        survivor,
        "the survivor finished planning"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_message_is_dead_lettered_after_the_delivery_limit_and_shown_on_its_job() {
    let Some(mut cluster) = Cluster::start(USERS, WorkerSettings::default()).await else {
        return;
    };
    cluster.spawn_worker("a").await;
    cluster.spawn_worker("b").await;
    let mut events = cluster.listen_events().await;
    let options = pb::BatchOptions {
        critical: true,
        monitoring_category: "payroll".into(),
        ..Default::default()
    };
    let job = cluster.start_job(0, "admin", options).await;
    cluster.publish_poison(&job.job_id, "default").await;
    let ended = cluster
        .wait_for(0, &job.job_id, Duration::from_secs(180), |job| {
            job.status() == pb::JobStatus::Failed && job.chunks_dead_lettered == 1
        })
        .await;
    assert_exact(&cluster, &ended).await;

    // A critical job's failure is an event, and an ERROR line carrying its category.
    let failed = events.wait_for("job.failed", &job.job_id).await;
    assert_eq!(failed["critical"], true);
    assert_eq!(failed["monitoring_category"], "payroll");
    assert_eq!(failed["chunks_dead_lettered"], 1);
    let logged = [cluster.worker_log("a"), cluster.worker_log("b")].concat();
    let alert = logged
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "critical batch job failed")
        .expect("an ERROR line for the critical job's failure");
    assert_eq!(alert["level"], "ERROR");
    assert_eq!(alert["monitoring_category"], "payroll");
    assert_eq!(alert["job_id"], job.job_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_critical_job_started_behind_a_big_one_finishes_while_the_big_one_still_runs() {
    // With synced groups the tenant's scope is their members: "All Staff" (every other user)
    // for the big job, and "Engineering" (15) for the critical one.
    let all_staff = graph_emulator::SYNTHETIC_GROUP_IDS[0];
    let settings = WorkerSettings {
        chunk_size: 10,
        sync_groups: vec![all_staff.to_owned(), ENGINEERING.to_owned()],
        ..WorkerSettings::default()
    };
    let Some(mut cluster) = Cluster::start(USERS, settings).await else {
        return;
    };
    cluster.spawn_worker("a").await;
    let big = cluster
        .start_job(0, "admin", pb::BatchOptions::default())
        .await;
    cluster
        .wait_for(0, &big.job_id, Duration::from_secs(60), |job| {
            job.chunks_done >= 5
        })
        .await;
    let options = pb::BatchOptions {
        critical: true,
        monitoring_category: "onboarding".into(),
        ..Default::default()
    };
    let critical = cluster
        .start_scoped_job(0, "admin", Some(ENGINEERING), options)
        .await;
    let critical = cluster.wait_ended(0, &critical.job_id).await;
    let big_then = cluster.job(0, &big.job_id).await;
    assert_eq!(critical.status(), pb::JobStatus::Completed, "{critical:?}");
    assert_eq!(critical.planned, 15);
    // In scope: All Staff (even indexes) and Engineering (users 0–14).
    let in_scope = (0..USERS).filter(|i| i % 2 == 0 || *i < 15).count() as u64;
    let big_chunks = in_scope.div_ceil(10);
    assert!(
        big_then.chunks_done < big_chunks / 2,
        "the critical job waited for half of the big one: {big_then:?}"
    );
    // Order of processing: while the critical job ran, only the big job's chunks already in
    // hand (prefetch 4) or processed while the critical one was being planned went through
    // (14 in a loaded run; 2,000 were waiting).
    let overtaken = cluster
        .chunks_processed_between(&big.job_id, critical.created_at_ms, critical.finished_at_ms)
        .await;
    eprintln!("big-job chunks processed during the critical job: {overtaken}");
    assert!(
        overtaken <= 50,
        "{overtaken} normal chunks went through while the critical job waited"
    );
    let big = cluster.wait_ended(0, &big.job_id).await;
    assert_eq!(big.status(), pb::JobStatus::Completed);
    assert_eq!(big.chunks_done, big_chunks);
    let (critical_counts, big_counts) = (critical.counts.unwrap(), big.counts.unwrap());
    assert_eq!(
        critical_counts.created + critical_counts.already_present,
        15
    );
    assert_eq!(
        big_counts.created + critical_counts.created,
        cluster.registry_users().await.0 as u64,
        "created once, by one of them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_job_stops_and_keeps_exact_counts_of_what_was_done() {
    let settings = WorkerSettings {
        chunk_size: 10,
        ..WorkerSettings::default()
    };
    let Some(mut cluster) = Cluster::start(5_000, settings).await else {
        return;
    };
    cluster.spawn_worker("a").await;
    let job = cluster
        .start_job(0, "admin", pb::BatchOptions::default())
        .await;
    cluster
        .wait_for(0, &job.job_id, Duration::from_secs(60), |job| {
            job.chunks_done >= 5
        })
        .await;
    let cancelled = cluster
        .client(0)
        .await
        .cancel_job(pb::CancelJobRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(cancelled.status(), pb::JobStatus::Cancelled);
    // Chunks in hand finish; then nothing moves any more.
    let mut settled = cluster.job(0, &job.job_id).await;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = cluster.job(0, &job.job_id).await;
        if now == settled {
            break;
        }
        settled = now;
    }
    assert_eq!(settled.status(), pb::JobStatus::Cancelled);
    let counts = settled.counts.unwrap();
    let done = counts.created + counts.already_present + counts.skipped + counts.failed;
    assert!(
        done < 5_000,
        "chunks after the cancel were discarded ({done} users done)"
    );
    let (total, distinct) = cluster.registry_users().await;
    assert_eq!(total, distinct);
    assert_eq!(counts.created as i64, total, "the counts are what was done");
    let err = cluster
        .client(0)
        .await
        .cancel_job(pb::CancelJobRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_private_job_is_invisible_and_uncancellable_to_everyone_but_its_creator() {
    let Some(mut cluster) = Cluster::start(500, WorkerSettings::default()).await else {
        return;
    };
    cluster.spawn_worker("a").await;
    let job = cluster
        .start_job(
            0,
            "alice",
            pb::BatchOptions {
                private: true,
                ..Default::default()
            },
        )
        .await;
    let mut client = cluster.client(0).await;
    let err = client
        .get_job(as_principal(
            pb::GetJobRequest {
                job_id: job.job_id.clone(),
            },
            "bob",
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "not PERMISSION_DENIED: its existence is not revealed"
    );
    let err = client
        .cancel_job(as_principal(
            pb::CancelJobRequest {
                job_id: job.job_id.clone(),
            },
            "bob",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let listed = client
        .list_jobs(as_principal(pb::ListJobsRequest::default(), "bob"))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.jobs.iter().all(|j| j.job_id != job.job_id));
    let err = client
        .list_job_outcomes(as_principal(
            pb::ListJobOutcomesRequest {
                job_id: job.job_id.clone(),
                ..Default::default()
            },
            "bob",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let seen = client
        .get_job(as_principal(
            pb::GetJobRequest {
                job_id: job.job_id.clone(),
            },
            "alice",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.job.unwrap().created_by, "alice");
    let listed = client
        .list_jobs(as_principal(pb::ListJobsRequest::default(), "alice"))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.jobs.iter().any(|j| j.job_id == job.job_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_now_imports_in_the_request_and_reports_every_user_not_created() {
    let Some(mut cluster) = Cluster::start(2_000, WorkerSettings::default()).await else {
        return;
    };
    cluster.spawn_worker("a").await;
    let response = cluster
        .client(0)
        .await
        .run_import_now(pb::RunImportNowRequest {
            company: "DAT".into(),
            scope: Some(proto::directory::v1::Scope {
                scope: Some(proto::directory::v1::scope::Scope::All(
                    proto::directory::v1::AllUsers {},
                )),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let job = response.job.unwrap();
    assert_eq!(job.status(), pb::JobStatus::Completed, "{job:?}");
    assert_exact(&cluster, &job).await;
    let counts = job.counts.unwrap();
    assert_eq!(
        response.not_created.len() as u64,
        counts.skipped + counts.failed + counts.already_present
    );
    assert!(response.not_created.iter().all(|o| !o.reason.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_for_a_batch_group_no_worker_serves_says_it_waits_for_one() {
    let Some(mut cluster) = Cluster::start(50, WorkerSettings::default()).await else {
        return;
    };
    cluster.spawn_worker("a").await;
    let options = pb::BatchOptions {
        batch_group: "nightly".into(),
        ..Default::default()
    };
    let job = cluster.start_job(0, "admin", options).await;
    assert!(
        job.notice
            .contains("no worker serves batch group \"nightly\""),
        "the start answer says so: {job:?}"
    );
    let waiting = cluster
        .wait_for(0, &job.job_id, Duration::from_secs(10), |job| {
            job.status() == pb::JobStatus::Running || job.chunks_planned > 0
        })
        .await;
    assert!(waiting.notice.contains("nightly"), "{waiting:?}");

    // A group outside the queue's alphabet is refused, naming the field.
    let bad = pb::StartBatchImportRequest {
        company: "DAT".into(),
        scope: Some(directory_pb::Scope {
            scope: Some(directory_pb::scope::Scope::All(directory_pb::AllUsers {})),
        }),
        options: Some(pb::BatchOptions {
            batch_group: "night shift".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let refused = cluster
        .client(0)
        .await
        .start_batch_import(bad)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("options.batch_group"),
        "{refused:?}"
    );

    // The default group is served: no notice.
    let served = cluster
        .start_job(0, "admin", pb::BatchOptions::default())
        .await;
    assert_eq!(served.notice, "", "{served:?}");
}
