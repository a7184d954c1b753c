//! Faults a production cluster meets every week, each injected into a batch import of 20,000
//! users with two worker processes: every one must end `completed` with exactly one registry
//! user per importable directory user and counts that add up, with no manual step. A job
//! that fails for a permanent cause is resumed with `RetryJob` once the cause is fixed.

use std::time::{Duration, Instant};

use proto::importer::v1 as pb;
use test_support::ExclusiveServers;

use crate::cluster::{Cluster, WorkerSettings, assert_exact};

const USERS: usize = 20_000;

fn settings() -> WorkerSettings {
    WorkerSettings {
        chunk_size: 200,
        lease_secs: 2,
        // A chunk failing for a passing cause is held this long, then requeued at the tail.
        chunk_retry_hold_secs: 8,
        heartbeat_secs: 2,
        ..WorkerSettings::default()
    }
}

fn ended(job: &pb::Job) -> bool {
    matches!(
        job.status(),
        pb::JobStatus::Completed | pb::JobStatus::Failed | pb::JobStatus::Cancelled
    )
}

/// Checks, every 500 ms for `duration`, that the job has not ended and dead-lettered nothing.
async fn assert_survives(cluster: &Cluster, job_id: &str, duration: Duration) {
    let started = Instant::now();
    while started.elapsed() < duration {
        let job = cluster.job(0, job_id).await;
        assert!(!ended(&job), "the job ended during the fault: {job:?}");
        assert_eq!(
            job.chunks_dead_lettered, 0,
            "nothing dead-lettered: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn completed_exactly(cluster: &Cluster, job_id: &str) {
    let job = cluster.wait_ended(0, job_id).await;
    assert_eq!(job.status(), pb::JobStatus::Completed, "{job:?}");
    assert_eq!(job.chunks_dead_lettered, 0, "{job:?}");
    assert_exact(cluster, &job).await;
}

/// Runs `command` and fails the test with its output when it fails.
async fn run(command: &str, args: &[&str]) {
    let (command, args) = (
        command.to_owned(),
        args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>(),
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&command)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("{command} runs: {e}"))
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A cluster of two workers with a 20,000-user job whose first chunks are done.
///
/// The registry's user inserts take half a second each (a slow disk), so the job lasts
/// several seconds whatever the machine: a fault injected now meets it mid-way. Unslowed,
/// the whole job can end in two seconds, before a `rabbitmqctl stop_app` has taken effect.
async fn job_under_way() -> Option<(Cluster, pb::Job)> {
    let mut cluster = Cluster::start(USERS, settings()).await?;
    sqlx::raw_sql(
        "CREATE FUNCTION slow_writes() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END $$; \
         CREATE TRIGGER slow_writes BEFORE INSERT ON users \
         FOR EACH STATEMENT EXECUTE FUNCTION slow_writes();",
    )
    .execute(cluster.registry_db.pool())
    .await
    .unwrap();
    cluster.spawn_worker("a").await;
    cluster.spawn_worker("b").await;
    let job = cluster
        .start_job(0, "admin", pb::BatchOptions::default())
        .await;
    cluster
        .wait_for(0, &job.job_id, Duration::from_secs(60), |job| {
            job.chunks_done >= 5
        })
        .await;
    Some((cluster, job))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn directory_sync_killed_mid_planning_and_restarted_fails_nothing() {
    let settings = WorkerSettings {
        // Small chunks, so planning takes long enough to be cut.
        chunk_size: 50,
        directory_process: true,
        ..settings()
    };
    let Some(mut cluster) = Cluster::start(USERS, settings).await else {
        return;
    };
    cluster.spawn_worker("a").await;
    cluster.spawn_worker("b").await;
    let job = cluster
        .start_job(0, "admin", pb::BatchOptions::default())
        .await;
    let cut = cluster
        .wait_for(0, &job.job_id, Duration::from_secs(60), |job| {
            job.planned >= 1_000
        })
        .await;
    cluster.kill_directory();
    assert!(
        cut.planned < USERS as u64,
        "planning was still going when directory-sync died: {cut:?}"
    );
    assert_survives(&cluster, &job.job_id, Duration::from_secs(3)).await;
    cluster.restart_directory().await;
    completed_exactly(&cluster, &job.job_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_registry_refusing_writes_for_20_seconds_fails_nothing() {
    let Some((cluster, job)) = job_under_way().await else {
        return;
    };
    // The registry's database refuses every user insert as a full disk does.
    let pool = cluster.registry_db.pool();
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_writes() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = '53100'; END $$; \
         CREATE TRIGGER refuse_writes BEFORE INSERT ON users \
         FOR EACH STATEMENT EXECUTE FUNCTION refuse_writes();",
    )
    .execute(pool)
    .await
    .unwrap();
    let during = cluster.job(0, &job.job_id).await;
    assert_survives(&cluster, &job.job_id, Duration::from_secs(20)).await;
    let after = cluster.job(0, &job.job_id).await;
    assert!(
        after.chunks_done <= during.chunks_done + 8,
        "the fault held: at most the chunks already past their insert finished ({during:?} → {after:?})"
    );
    sqlx::raw_sql("DROP TRIGGER refuse_writes ON users; DROP FUNCTION refuse_writes();")
        .execute(pool)
        .await
        .unwrap();
    completed_exactly(&cluster, &job.job_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_hung_longer_than_the_heartbeat_timeout_has_its_chunks_finished_by_another() {
    let Some((cluster, job)) = job_under_way().await else {
        return;
    };
    // Worker b freezes with chunks in hand (and maybe the planning lease): the broker shows
    // deliveries it has not acknowledged before it is stopped.
    let b = format!(
        "{} import-worker consumer on {}",
        cluster.prefix, cluster.workers[1].name
    );
    let waiting = Instant::now();
    while crate::rabbit::unacked_on(&b).await == 0 {
        assert!(
            waiting.elapsed() < Duration::from_secs(30),
            "worker b never held a chunk"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.workers[1].signal("STOP");
    let job_now = cluster.wait_ended(0, &job.job_id).await;
    assert_eq!(job_now.status(), pb::JobStatus::Completed, "{job_now:?}");
    assert_exact(&cluster, &job_now).await;
    // Woken, b finds its connection gone; whatever it was doing changes nothing.
    cluster.workers[1].signal("CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    completed_exactly(&cluster, &job.job_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_job_resumed_after_its_cause_is_fixed_ends_with_every_user_imported() {
    let Some(mut cluster) = Cluster::start(USERS, settings()).await else {
        return;
    };
    // Users whose object id starts with 0 cannot be written: their chunks fail for a cause
    // no retry cures (a defect the registry reports as INTERNAL).
    let pool = cluster.registry_db.pool().clone();
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_zero() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'a defect' USING ERRCODE = 'P0001'; END $$; \
         CREATE TRIGGER refuse_zero BEFORE INSERT ON users \
         FOR EACH ROW WHEN (NEW.object_id LIKE '0%') EXECUTE FUNCTION refuse_zero();",
    )
    .execute(&pool)
    .await
    .unwrap();
    cluster.spawn_worker("a").await;
    cluster.spawn_worker("b").await;
    let job = cluster
        .start_job(0, "admin", pb::BatchOptions::default())
        .await;
    let failed = cluster.wait_ended(0, &job.job_id).await;
    assert_eq!(failed.status(), pb::JobStatus::Failed, "{failed:?}");
    assert!(failed.chunks_dead_lettered > 0, "{failed:?}");
    let counts = failed.counts.unwrap();
    assert_eq!(
        counts.created + counts.already_present + counts.skipped + counts.failed,
        USERS as u64,
        "counts add up: {counts:?}"
    );
    let outcomes = cluster
        .client(0)
        .await
        .list_job_outcomes(pb::ListJobOutcomesRequest {
            job_id: job.job_id.clone(),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let reason = &outcomes
        .outcomes
        .iter()
        .find(|o| o.kind() == proto::registry::v1::OutcomeKind::Failed)
        .expect("a failed user in the report")
        .reason;
    assert!(
        reason.contains("dead-lettered after 1 deliveries") && reason.contains("user-registry"),
        "the reason names the cause and the true delivery count: {reason}"
    );

    sqlx::raw_sql("DROP TRIGGER refuse_zero ON users; DROP FUNCTION refuse_zero();")
        .execute(&pool)
        .await
        .unwrap();
    let retried = cluster
        .client(0)
        .await
        .retry_job(pb::RetryJobRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.chunks, failed.chunks_dead_lettered);
    assert!(
        retried.users >= 1_000 && retried.users <= counts.failed,
        "the users of the failed chunks run again: {retried:?}, {counts:?}"
    );
    completed_exactly(&cluster, &job.job_id).await;
    // A completed job cannot be retried.
    let again = cluster
        .client(0)
        .await
        .retry_job(pb::RetryJobRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
}

/// The Postgres cluster's version folder under /etc/postgresql, when this machine runs one
/// that `pg_ctlcluster` manages.
fn postgres_cluster_version() -> Option<String> {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .next();
    if version.is_none() && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI restarts Postgres with pg_ctlcluster; /etc/postgresql has no cluster");
    }
    version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_mid_job_fails_nothing() {
    let Some(version) = postgres_cluster_version() else {
        eprintln!("skipped: no pg_ctlcluster-managed Postgres to restart");
        return;
    };
    let _exclusive = ExclusiveServers::take().await;
    let Some((cluster, job)) = job_under_way().await else {
        return;
    };
    run(
        "pg_ctlcluster",
        &["--skip-systemctl-redirect", &version, "main", "restart"],
    )
    .await;
    completed_exactly(&cluster, &job.job_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_stopped_for_10_seconds_mid_job_fails_nothing() {
    if test_support::amqp_url_or_skip().is_none() {
        return;
    }
    let _exclusive = ExclusiveServers::take().await;
    let Some((cluster, job)) = job_under_way().await else {
        return;
    };
    let broker = BrokerStopped::stop().await;
    let stopped = Instant::now();
    let outage = async {
        tokio::time::sleep(Duration::from_secs(10)).await;
    };
    let watch = assert_survives(&cluster, &job.job_id, Duration::from_secs(9));
    tokio::join!(outage, watch);
    broker.start().await;
    assert!(stopped.elapsed() >= Duration::from_secs(10));
    completed_exactly(&cluster, &job.job_id).await;
}

/// RabbitMQ's application stopped until [`BrokerStopped::start`], or until dropped: a
/// failing assertion during the outage must not leave the broker down for the tests after it.
struct BrokerStopped(bool);

impl BrokerStopped {
    async fn stop() -> Self {
        run("rabbitmqctl", &["stop_app"]).await;
        Self(true)
    }

    async fn start(mut self) {
        run("rabbitmqctl", &["start_app"]).await;
        self.0 = false;
    }
}

impl Drop for BrokerStopped {
    fn drop(&mut self) {
        if self.0 {
            let _ = std::process::Command::new("rabbitmqctl")
                .arg("start_app")
                .status();
        }
    }
}
