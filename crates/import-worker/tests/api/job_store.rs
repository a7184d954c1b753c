//! The job store on both backends.

use import_worker::domain::{Counts, Job, JobKind, JobStatus, Outcome, OutcomeKind};
use import_worker::store;
use service_runtime::storage::Database;
use test_support::TestDatabase;

async fn database(db: &TestDatabase) -> Database {
    let database = Database::connect(&db.url, 2).await.unwrap();
    database.migrate(&store::MIGRATIONS).await.unwrap();
    database
}

fn job(job_id: &str, created_at_ms: i64, status: JobStatus) -> Job {
    let mut job = Job::new(
        job_id.into(),
        JobKind::Select,
        "DAT".into(),
        "admin@contoso.com".into(),
        created_at_ms,
    );
    job.status = status;
    job.planned = 3;
    job.counts = Counts {
        created: 1,
        already_present: 1,
        skipped: 1,
        failed: 0,
    };
    job.planning_done = true;
    job.started_at_ms = created_at_ms;
    job.finished_at_ms = created_at_ms + 5;
    job
}

fn outcome(object_id: &str, kind: OutcomeKind) -> Outcome {
    Outcome {
        object_id: object_id.into(),
        kind,
        user_id: String::new(),
        reason: format!("{kind:?}"),
        note: String::new(),
    }
}

test_support::on_both_backends! {
    async fn a_job_is_recorded_once_with_the_outcomes_of_users_not_created(db) {
        let database = database(&db).await;
        let mut conn = database.pool().acquire().await.unwrap();
        let recorded = job("j1", 1_000, JobStatus::Completed);
        assert!(store::insert_job(&mut conn, &recorded).await.unwrap());
        assert!(!store::insert_job(&mut conn, &job("j1", 2_000, JobStatus::Failed)).await.unwrap(), "a replay changes nothing");
        let outcomes = [outcome("a", OutcomeKind::Created), outcome("b", OutcomeKind::Skipped), outcome("c", OutcomeKind::AlreadyPresent)];
        store::insert_outcomes(&mut conn, database.backend(), "j1", &outcomes).await.unwrap();
        store::insert_outcomes(&mut conn, database.backend(), "j1", &outcomes).await.unwrap();

        assert_eq!(store::job(&mut conn, "j1").await.unwrap().unwrap(), recorded);
        let report = store::list_outcomes(&mut conn, "j1", "", 10).await.unwrap();
        let ids: Vec<&str> = report.iter().map(|o| o.object_id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(report[0].kind, OutcomeKind::Skipped);
        assert_eq!(report[0].reason, "Skipped");
        assert_eq!(store::list_outcomes(&mut conn, "j1", "b", 10).await.unwrap().len(), 1);
        assert!(store::job(&mut conn, "nope").await.unwrap().is_none());
    }

    async fn jobs_list_newest_first_with_a_cursor_and_a_status_filter(db) {
        let database = database(&db).await;
        let mut conn = database.pool().acquire().await.unwrap();
        for (i, status) in [JobStatus::Completed, JobStatus::Failed, JobStatus::Completed, JobStatus::Completed].into_iter().enumerate() {
            store::insert_job(&mut conn, &job(&format!("j{i}"), 100 * i as i64, status)).await.unwrap();
        }
        let first = store::list_jobs(&mut conn, "admin@contoso.com", None, None, 2).await.unwrap();
        let ids: Vec<&str> = first.iter().map(|j| j.job_id.as_str()).collect();
        assert_eq!(ids, ["j3", "j2"]);
        let last = first.last().unwrap();
        let rest = store::list_jobs(&mut conn, "admin@contoso.com", None, Some((last.created_at_ms, last.job_id.clone())), 10).await.unwrap();
        let ids: Vec<&str> = rest.iter().map(|j| j.job_id.as_str()).collect();
        assert_eq!(ids, ["j1", "j0"]);
        let failed = store::list_jobs(&mut conn, "admin@contoso.com", Some(JobStatus::Failed), None, 10).await.unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].job_id, "j1");
    }

    async fn a_private_job_is_listed_only_for_its_creator(db) {
        let database = database(&db).await;
        let mut conn = database.pool().acquire().await.unwrap();
        let mut private = job("mine", 100, JobStatus::Completed);
        private.options.private = true;
        store::insert_job(&mut conn, &private).await.unwrap();
        store::insert_job(&mut conn, &job("shared", 200, JobStatus::Completed)).await.unwrap();

        let ids = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.job_id).collect::<Vec<_>>();
        assert_eq!(ids(store::list_jobs(&mut conn, "admin@contoso.com", None, None, 10).await.unwrap()), ["shared", "mine"]);
        assert_eq!(ids(store::list_jobs(&mut conn, "bob@contoso.com", None, None, 10).await.unwrap()), ["shared"]);
        assert_eq!(store::job(&mut conn, "mine").await.unwrap().unwrap(), private, "options round-trip");
    }

    async fn the_last_two_chunks_committing_at_once_end_their_job_once_when_asked_after_their_commits(db) {
        let database = Database::connect(&db.url, 4).await.unwrap();
        database.migrate(&store::MIGRATIONS).await.unwrap();
        let mut conn = database.pool().acquire().await.unwrap();
        let mut batch = Job::new("b1".into(), JobKind::Batch, "DAT".into(), "admin@contoso.com".into(), 1_000);
        batch.status = JobStatus::Planning;
        store::insert_job(&mut conn, &batch).await.unwrap();
        store::take_lease(&mut conn, "b1", "planner", 1_000, 60_000).await.unwrap();
        for seq in 0..2 {
            let chunk = store::ChunkPlan { seq, after_object_id: format!("{seq}"), last_object_id: format!("{}", seq + 1), users: 2 };
            assert!(store::plan_chunk(&mut conn, "b1", "planner", &chunk, 1_000, 60_000).await.unwrap());
            store::mark_published(&mut conn, "b1", seq).await.unwrap();
        }
        assert!(store::finish_planning(&mut conn, "b1", "planner").await.unwrap());
        let backend = database.backend();
        let first = [outcome("a", OutcomeKind::Created), outcome("b", OutcomeKind::Skipped)];
        let second = [outcome("c", OutcomeKind::Created), outcome("d", OutcomeKind::AlreadyPresent)];

        let mut one = database.begin_write().await.unwrap();
        assert!(store::record_chunk(&mut one, backend, "b1", 0, &first, 2_000).await.unwrap());
        assert_eq!(store::end_if_settled(&mut one, "b1", 2_000).await.unwrap(), None, "chunk 1 is not settled yet");
        if backend == service_runtime::storage::Backend::Postgres {
            // Both chunks' transactions are open at once: neither sees the other settled.
            let mut two = database.begin_write().await.unwrap();
            assert!(store::record_chunk(&mut two, backend, "b1", 1, &second, 2_001).await.unwrap());
            assert_eq!(store::end_if_settled(&mut two, "b1", 2_001).await.unwrap(), None, "chunk 0 is not committed");
            one.commit().await.unwrap();
            two.commit().await.unwrap();
        } else {
            // SQLite has one writer at a time.
            one.commit().await.unwrap();
            let mut two = database.begin_write().await.unwrap();
            assert!(store::record_chunk(&mut two, backend, "b1", 1, &second, 2_001).await.unwrap());
            two.commit().await.unwrap();
        }
        assert!(!store::record_chunk(&mut conn, backend, "b1", 1, &second, 2_002).await.unwrap(), "a redelivery counts nothing");

        // Asked after both commits, the job ends once, with both chunks' counts.
        let ended = store::end_if_settled(&mut conn, "b1", 3_000).await.unwrap().expect("the job ends");
        assert_eq!(ended.status, JobStatus::Completed);
        assert_eq!(ended.chunks_done, 2);
        assert_eq!(ended.counts, Counts { created: 2, already_present: 1, skipped: 1, failed: 0 });
        assert_eq!(store::end_if_settled(&mut conn, "b1", 3_001).await.unwrap(), None, "ended once");
        assert_eq!(store::job(&mut conn, "b1").await.unwrap().unwrap(), ended);
        assert!(store::settled_unended_jobs(&mut conn).await.unwrap().is_empty());
        let listed = store::list_jobs(&mut conn, "admin@contoso.com", None, None, 10).await.unwrap();
        assert_eq!(listed[0].counts, ended.counts);
    }

    async fn a_settled_job_left_unended_is_found_by_the_sweep(db) {
        let database = database(&db).await;
        let mut conn = database.pool().acquire().await.unwrap();
        let mut batch = Job::new("b2".into(), JobKind::Batch, "DAT".into(), "admin@contoso.com".into(), 1_000);
        batch.status = JobStatus::Planning;
        store::insert_job(&mut conn, &batch).await.unwrap();
        store::take_lease(&mut conn, "b2", "planner", 1_000, 60_000).await.unwrap();
        let chunk = store::ChunkPlan { seq: 0, after_object_id: String::new(), last_object_id: "z".into(), users: 1 };
        assert!(store::plan_chunk(&mut conn, "b2", "planner", &chunk, 1_000, 60_000).await.unwrap());
        assert!(store::settled_unended_jobs(&mut conn).await.unwrap().is_empty(), "planning is not done");
        assert!(store::finish_planning(&mut conn, "b2", "planner").await.unwrap());
        assert!(store::settled_unended_jobs(&mut conn).await.unwrap().is_empty(), "its chunk is not settled");
        // The chunk commits and its process stops before asking whether the job ended.
        store::record_chunk(&mut conn, database.backend(), "b2", 0, &[outcome("a", OutcomeKind::Created)], 2_000).await.unwrap();
        assert_eq!(store::settled_unended_jobs(&mut conn).await.unwrap(), ["b2"]);
        let ended = store::end_if_settled(&mut conn, "b2", 3_000).await.unwrap().unwrap();
        assert_eq!((ended.status, ended.counts.created, ended.chunks_done), (JobStatus::Completed, 1, 1));
    }
}
