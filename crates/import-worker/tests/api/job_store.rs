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
}
