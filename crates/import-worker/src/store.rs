//! The worker's tables: jobs and their reports (sqlx, Postgres or SQLite). Functions take a
//! connection so they compose in one transaction.

use std::sync::LazyLock;

use anyhow::Context as _;
use service_runtime::storage::{Backend, Dialects, Migrations, flag, known, rows_from, rows_text};
use sqlx::any::AnyRow;
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, AssertSqlSafe, Row as _};

use crate::domain::{
    BatchOptions, Counts, Job, JobKind, JobStatus, Outcome, OutcomeKind, RoleRule,
};
use crate::error::Error;

static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");

/// import-worker's migrations for both backends.
pub static MIGRATIONS: Migrations = Migrations {
    postgres: &POSTGRES,
    sqlite: &SQLITE,
};

const JOB_COLUMNS: &str = "job_id, kind, status, company, created_by, planned, created, already_present, \
     skipped, failed, created_at_ms, started_at_ms, finished_at_ms, error, scope_group, batch_group, \
     private, critical, monitoring_category, chunks_planned, chunks_done, chunks_dead_lettered, \
     planning_done, cancel_requested, trace_parent";

fn count(row: &AnyRow, column: &str) -> Result<u64, sqlx::Error> {
    Ok(u64::try_from(row.try_get::<i64, _>(column)?).unwrap_or(0))
}

fn job_from_row(row: &AnyRow) -> Result<Job, sqlx::Error> {
    let scope_group: String = row.try_get("scope_group")?;
    Ok(Job {
        job_id: row.try_get("job_id")?,
        kind: known(row, "kind", JobKind::parse)?,
        status: known(row, "status", JobStatus::parse)?,
        company: row.try_get("company")?,
        created_by: row.try_get("created_by")?,
        scope_group: (!scope_group.is_empty()).then_some(scope_group),
        options: BatchOptions {
            batch_group: row.try_get("batch_group")?,
            private: flag(row, "private")?,
            critical: flag(row, "critical")?,
            monitoring_category: row.try_get("monitoring_category")?,
        },
        planned: count(row, "planned")?,
        counts: Counts {
            created: count(row, "created")?,
            already_present: count(row, "already_present")?,
            skipped: count(row, "skipped")?,
            failed: count(row, "failed")?,
        },
        chunks_planned: count(row, "chunks_planned")?,
        chunks_done: count(row, "chunks_done")?,
        chunks_dead_lettered: count(row, "chunks_dead_lettered")?,
        planning_done: flag(row, "planning_done")?,
        trace_parent: row.try_get("trace_parent")?,
        cancel_requested: flag(row, "cancel_requested")?,
        created_at_ms: row.try_get("created_at_ms")?,
        started_at_ms: row.try_get("started_at_ms")?,
        finished_at_ms: row.try_get("finished_at_ms")?,
        error: row.try_get("error")?,
    })
}

fn jobs_from_rows(rows: &[AnyRow]) -> Result<Vec<Job>, Error> {
    rows.iter()
        .map(job_from_row)
        .collect::<Result<_, _>>()
        .map_err(Error::internal("read jobs"))
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Records a job unless one with its id exists (a retried request); true when inserted.
pub async fn insert_job(conn: &mut AnyConnection, job: &Job) -> Result<bool, Error> {
    let sql = format!(
        "INSERT INTO jobs ({JOB_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
         $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25) ON CONFLICT (job_id) DO NOTHING"
    );
    let result = sqlx::query(AssertSqlSafe(sql))
        .bind(&job.job_id)
        .bind(job.kind.as_str())
        .bind(job.status.as_str())
        .bind(&job.company)
        .bind(&job.created_by)
        .bind(as_i64(job.planned))
        .bind(as_i64(job.counts.created))
        .bind(as_i64(job.counts.already_present))
        .bind(as_i64(job.counts.skipped))
        .bind(as_i64(job.counts.failed))
        .bind(job.created_at_ms)
        .bind(job.started_at_ms)
        .bind(job.finished_at_ms)
        .bind(&job.error)
        .bind(job.scope_group.clone().unwrap_or_default())
        .bind(&job.options.batch_group)
        .bind(job.options.private)
        .bind(job.options.critical)
        .bind(&job.options.monitoring_category)
        .bind(as_i64(job.chunks_planned))
        .bind(as_i64(job.chunks_done))
        .bind(as_i64(job.chunks_dead_lettered))
        .bind(job.planning_done)
        .bind(job.cancel_requested)
        .bind(&job.trace_parent)
        .execute(conn)
        .await
        .map_err(Error::internal("insert job"))?;
    Ok(result.rows_affected() == 1)
}

static INSERT_OUTCOMES: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(
            backend,
            &[
                ("object_id", "text"),
                ("kind", "text"),
                ("user_id", "text"),
                ("reason", "text"),
            ],
        );
        format!(
            "INSERT INTO job_outcomes (job_id, object_id, kind, user_id, reason) \
             SELECT $2, r.object_id, r.kind, r.user_id, r.reason FROM {rows} WHERE true \
             ON CONFLICT (job_id, object_id) DO NOTHING"
        )
    })
});

/// Records the outcomes of the users that were not created, in one statement; replays
/// change nothing.
pub async fn insert_outcomes(
    conn: &mut AnyConnection,
    backend: Backend,
    job_id: &str,
    outcomes: &[Outcome],
) -> Result<(), Error> {
    let not_created: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.kind != OutcomeKind::Created)
        .collect();
    if not_created.is_empty() {
        return Ok(());
    }
    // Reasons may quote directory data; control characters become spaces in the report.
    let reasons: Vec<String> = not_created
        .iter()
        .map(|o| {
            o.reason
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect()
        })
        .collect();
    let param = rows_text(
        backend,
        not_created
            .iter()
            .zip(&reasons)
            .map(|(o, reason)| [o.object_id.as_str(), o.kind.as_str(), &o.user_id, reason]),
    )
    .context("encode outcomes")?;
    sqlx::query(INSERT_OUTCOMES.get(backend))
        .bind(param)
        .bind(job_id)
        .execute(conn)
        .await
        .map_err(Error::internal("insert outcomes"))?;
    Ok(())
}

/// The job with this id.
pub async fn job(conn: &mut AnyConnection, job_id: &str) -> Result<Option<Job>, Error> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = $1");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(job_id)
        .fetch_optional(conn)
        .await
        .map_err(Error::internal("get job"))?;
    row.as_ref()
        .map(job_from_row)
        .transpose()
        .map_err(Error::internal("read job"))
}

/// Jobs `principal` may see (all but other people's private jobs), newest first, after the
/// `(created_at_ms, job_id)` cursor when given.
pub async fn list_jobs(
    conn: &mut AnyConnection,
    principal: &str,
    status: Option<JobStatus>,
    before: Option<(i64, String)>,
    limit: u32,
) -> Result<Vec<Job>, Error> {
    let (before_ms, before_id) = before.unwrap_or((i64::MAX, String::new()));
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs \
         WHERE (created_at_ms < $1 OR (created_at_ms = $1 AND job_id < $2)) AND ($3 = '' OR status = $3) \
         AND (private = $5 OR created_by = $4) \
         ORDER BY created_at_ms DESC, job_id DESC LIMIT $6"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(before_ms)
        .bind(before_id)
        .bind(status.map(JobStatus::as_str).unwrap_or_default())
        .bind(principal)
        .bind(false)
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await
        .map_err(Error::internal("list jobs"))?;
    jobs_from_rows(&rows)
}

/// A page of a job's report (users not created), in object id order after `after`.
pub async fn list_outcomes(
    conn: &mut AnyConnection,
    job_id: &str,
    after: &str,
    limit: u32,
) -> Result<Vec<Outcome>, Error> {
    let rows = sqlx::query(
        "SELECT object_id, kind, user_id, reason FROM job_outcomes \
         WHERE job_id = $1 AND object_id > $2 ORDER BY object_id LIMIT $3",
    )
    .bind(job_id)
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await
    .map_err(Error::internal("list outcomes"))?;
    rows.iter()
        .map(|row| {
            Ok(Outcome {
                object_id: row.try_get("object_id")?,
                kind: known(row, "kind", OutcomeKind::parse)?,
                user_id: row.try_get("user_id")?,
                reason: row.try_get("reason")?,
                note: String::new(),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Error::internal("read outcomes"))
}

// ---------------------------------------------------------------------------------------------
// Planning

/// Takes a batch job whose planning lease has expired (a new job, or one whose planner died),
/// the most urgent first (critical, then oldest), for `lease_ms`. The claim is one statement,
/// so two replicas never plan the same job at once.
pub async fn claim_job_for_planning(
    conn: &mut AnyConnection,
    owner: &str,
    now_ms: i64,
    lease_ms: i64,
) -> Result<Option<Job>, Error> {
    let sql = format!(
        "UPDATE jobs SET lease_owner = $1, lease_expires_at_ms = $2 + $3, \
         status = CASE WHEN status = 'queued' THEN 'planning' ELSE status END, \
         started_at_ms = CASE WHEN started_at_ms = 0 THEN $2 ELSE started_at_ms END \
         WHERE job_id = (SELECT job_id FROM jobs WHERE kind = 'batch' AND status IN ('queued', 'planning') \
             AND planning_done = $4 AND cancel_requested = $4 AND lease_expires_at_ms < $2 \
             ORDER BY critical DESC, created_at_ms, job_id LIMIT 1) \
         AND lease_expires_at_ms < $2 RETURNING {JOB_COLUMNS}"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(owner)
        .bind(now_ms)
        .bind(lease_ms)
        .bind(false)
        .fetch_optional(conn)
        .await
        .map_err(Error::internal("claim job"))?;
    row.as_ref()
        .map(job_from_row)
        .transpose()
        .map_err(Error::internal("read job"))
}

/// Where the planner of a job stands: the last object id planned, the next chunk number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanPosition {
    pub cursor: String,
    pub next_seq: u64,
}

/// The planning position of a job.
pub async fn plan_position(conn: &mut AnyConnection, job_id: &str) -> Result<PlanPosition, Error> {
    let row = sqlx::query("SELECT plan_cursor, chunks_planned FROM jobs WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(conn)
        .await
        .map_err(Error::internal("read plan position"))?;
    Ok(PlanPosition {
        cursor: row
            .try_get("plan_cursor")
            .map_err(Error::internal("read plan position"))?,
        next_seq: count(&row, "chunks_planned").map_err(Error::internal("read plan position"))?,
    })
}

/// A chunk as planned: the object id range `(after, last]` and its user count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkPlan {
    pub seq: u64,
    pub after_object_id: String,
    pub last_object_id: String,
    pub users: u64,
}

/// Records the next chunk and moves the job's cursor past it, while `owner` still holds the
/// lease and nobody cancelled the job; false (and nothing written) otherwise. Renews the lease.
/// Run it in a transaction: the two writes must not be separated.
pub async fn plan_chunk(
    conn: &mut AnyConnection,
    job_id: &str,
    owner: &str,
    chunk: &ChunkPlan,
    now_ms: i64,
    lease_ms: i64,
) -> Result<bool, Error> {
    let moved = sqlx::query(
        "UPDATE jobs SET plan_cursor = $3, chunks_planned = chunks_planned + 1, planned = planned + $4, \
         lease_expires_at_ms = $5 + $6 \
         WHERE job_id = $1 AND lease_owner = $2 AND cancel_requested = $7 AND chunks_planned = $8",
    )
    .bind(job_id)
    .bind(owner)
    .bind(&chunk.last_object_id)
    .bind(as_i64(chunk.users))
    .bind(now_ms)
    .bind(lease_ms)
    .bind(false)
    .bind(as_i64(chunk.seq))
    .execute(&mut *conn)
    .await
    .map_err(Error::internal("advance plan"))?;
    if moved.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO job_chunks (job_id, seq, after_object_id, last_object_id, users, state) \
         VALUES ($1, $2, $3, $4, $5, 'planned')",
    )
    .bind(job_id)
    .bind(as_i64(chunk.seq))
    .bind(&chunk.after_object_id)
    .bind(&chunk.last_object_id)
    .bind(as_i64(chunk.users))
    .execute(conn)
    .await
    .map_err(Error::internal("insert chunk"))?;
    Ok(true)
}

/// Notes that the broker confirmed a chunk's message.
pub async fn mark_published(conn: &mut AnyConnection, job_id: &str, seq: u64) -> Result<(), Error> {
    sqlx::query("UPDATE job_chunks SET state = 'published' WHERE job_id = $1 AND seq = $2 AND state = 'planned'")
        .bind(job_id)
        .bind(as_i64(seq))
        .execute(conn)
        .await
        .map_err(Error::internal("mark chunk published"))?;
    Ok(())
}

/// Chunks planned but never confirmed by the broker (their planner died in between).
pub async fn unpublished_chunks(
    conn: &mut AnyConnection,
    job_id: &str,
) -> Result<Vec<ChunkPlan>, Error> {
    let rows = sqlx::query(
        "SELECT seq, after_object_id, last_object_id, users FROM job_chunks \
         WHERE job_id = $1 AND state = 'planned' ORDER BY seq",
    )
    .bind(job_id)
    .fetch_all(conn)
    .await
    .map_err(Error::internal("read unpublished chunks"))?;
    rows.iter()
        .map(|row| {
            Ok(ChunkPlan {
                seq: count(row, "seq")?,
                after_object_id: row.try_get("after_object_id")?,
                last_object_id: row.try_get("last_object_id")?,
                users: count(row, "users")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Error::internal("read unpublished chunks"))
}

/// Renews the planning lease; false when it was lost or the job cancelled.
pub async fn renew_lease(
    conn: &mut AnyConnection,
    job_id: &str,
    owner: &str,
    now_ms: i64,
    lease_ms: i64,
) -> Result<bool, Error> {
    let result = sqlx::query(
        "UPDATE jobs SET lease_expires_at_ms = $3 + $4 WHERE job_id = $1 AND lease_owner = $2 AND cancel_requested = $5",
    )
    .bind(job_id)
    .bind(owner)
    .bind(now_ms)
    .bind(lease_ms)
    .bind(false)
    .execute(conn)
    .await
    .map_err(Error::internal("renew lease"))?;
    Ok(result.rows_affected() == 1)
}

/// Hands back the planning leases `owner` holds (it is shutting down); returns how many.
pub async fn release_leases(conn: &mut AnyConnection, owner: &str) -> Result<u64, Error> {
    let result = sqlx::query(
        "UPDATE jobs SET lease_expires_at_ms = 0 WHERE lease_owner = $1 AND planning_done = $2",
    )
    .bind(owner)
    .bind(false)
    .execute(conn)
    .await
    .map_err(Error::internal("release leases"))?;
    Ok(result.rows_affected())
}

/// Ends planning (every user in scope is in a chunk); false when the lease was lost.
pub async fn finish_planning(
    conn: &mut AnyConnection,
    job_id: &str,
    owner: &str,
) -> Result<bool, Error> {
    let result = sqlx::query(
        "UPDATE jobs SET planning_done = $3, lease_expires_at_ms = 0, \
         status = CASE WHEN status = 'planning' THEN 'running' ELSE status END \
         WHERE job_id = $1 AND lease_owner = $2 AND cancel_requested = $4",
    )
    .bind(job_id)
    .bind(owner)
    .bind(true)
    .bind(false)
    .execute(conn)
    .await
    .map_err(Error::internal("finish planning"))?;
    Ok(result.rows_affected() == 1)
}

// ---------------------------------------------------------------------------------------------
// Chunk results

/// Records a processed chunk once: its counts join the job's and the users not created join
/// the report. False (nothing written) when the chunk was recorded before — a redelivery.
pub async fn record_chunk(
    conn: &mut AnyConnection,
    backend: Backend,
    job_id: &str,
    seq: u64,
    outcomes: &[Outcome],
    now_ms: i64,
) -> Result<bool, Error> {
    let claimed = sqlx::query(
        "UPDATE job_chunks SET state = 'done', processed_at_ms = $3 \
         WHERE job_id = $1 AND seq = $2 AND state IN ('planned', 'published')",
    )
    .bind(job_id)
    .bind(as_i64(seq))
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .map_err(Error::internal("record chunk"))?;
    if claimed.rows_affected() != 1 {
        return Ok(false);
    }
    // The report first: the job row stays locked from its update to the commit, and every
    // chunk and the planner update it.
    insert_outcomes(conn, backend, job_id, outcomes).await?;
    add_to_job(conn, job_id, Counts::of(outcomes), 1, 0).await?;
    Ok(true)
}

/// Records a planned chunk that went to the dead-letter queue: its users count as failed with
/// `reason`. False when the chunk was settled before.
pub async fn record_chunk_dead(
    conn: &mut AnyConnection,
    backend: Backend,
    job_id: &str,
    seq: u64,
    object_ids: &[String],
    reason: &str,
    now_ms: i64,
) -> Result<bool, Error> {
    let claimed = sqlx::query(
        "UPDATE job_chunks SET state = 'dead_lettered', processed_at_ms = $3, error = $4 \
         WHERE job_id = $1 AND seq = $2 AND state IN ('planned', 'published')",
    )
    .bind(job_id)
    .bind(as_i64(seq))
    .bind(now_ms)
    .bind(reason)
    .execute(&mut *conn)
    .await
    .map_err(Error::internal("record dead chunk"))?;
    if claimed.rows_affected() != 1 {
        return Ok(false);
    }
    let outcomes: Vec<Outcome> = object_ids
        .iter()
        .map(|id| Outcome {
            object_id: id.clone(),
            kind: OutcomeKind::Failed,
            user_id: String::new(),
            reason: reason.to_owned(),
            note: String::new(),
        })
        .collect();
    add_to_job(conn, job_id, Counts::of(&outcomes), 0, 1).await?;
    insert_outcomes(conn, backend, job_id, &outcomes).await?;
    Ok(true)
}

/// Settles a chunk of a cancelled job without processing it.
pub async fn discard_chunk(
    conn: &mut AnyConnection,
    job_id: &str,
    seq: u64,
    now_ms: i64,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE job_chunks SET state = 'discarded', processed_at_ms = $3 \
         WHERE job_id = $1 AND seq = $2 AND state IN ('planned', 'published')",
    )
    .bind(job_id)
    .bind(as_i64(seq))
    .bind(now_ms)
    .execute(conn)
    .await
    .map_err(Error::internal("discard chunk"))?;
    Ok(())
}

/// Records a message of a job that could not even be read and went to the dead-letter queue;
/// false when recorded before.
pub async fn record_dead_letter(
    conn: &mut AnyConnection,
    job_id: &str,
    message_id: &str,
    error: &str,
    now_ms: i64,
) -> Result<bool, Error> {
    let inserted = sqlx::query(
        "INSERT INTO job_dead_letters (job_id, message_id, error, at_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (job_id, message_id) DO NOTHING",
    )
    .bind(job_id)
    .bind(message_id)
    .bind(error)
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .map_err(Error::internal("record dead letter"))?;
    if inserted.rows_affected() != 1 {
        return Ok(false);
    }
    add_to_job(conn, job_id, Counts::default(), 0, 1).await?;
    Ok(true)
}

/// Adds a settled chunk to its job's counts. A completed or failed job's counts never move
/// again; a cancelled job still counts the chunks that were inside the registry call when
/// the cancel came, so its counts stay what the registry holds.
async fn add_to_job(
    conn: &mut AnyConnection,
    job_id: &str,
    counts: Counts,
    done: u64,
    dead: u64,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE jobs SET created = created + $2, already_present = already_present + $3, \
         skipped = skipped + $4, failed = failed + $5, chunks_done = chunks_done + $6, \
         chunks_dead_lettered = chunks_dead_lettered + $7 \
         WHERE job_id = $1 AND status NOT IN ('completed', 'failed')",
    )
    .bind(job_id)
    .bind(as_i64(counts.created))
    .bind(as_i64(counts.already_present))
    .bind(as_i64(counts.skipped))
    .bind(as_i64(counts.failed))
    .bind(as_i64(done))
    .bind(as_i64(dead))
    .execute(conn)
    .await
    .map_err(Error::internal("count chunk"))?;
    Ok(())
}

/// Ends a job whose planning is done and whose every chunk is settled: failed when a message
/// of it was dead-lettered, completed otherwise. Returns the job when this call ended it (so
/// exactly one caller announces it); a completed job that gains a dead letter later turns
/// failed.
///
/// Every chunk of a job that is not cancelled is settled as done or dead-lettered, each
/// counted once, so the counters must cover the planned chunks before the chunks themselves
/// are looked at: that cheap test keeps each chunk's call from scanning the job's chunks,
/// which grew quadratically with the tenant.
pub async fn end_if_settled(
    conn: &mut AnyConnection,
    job_id: &str,
    now_ms: i64,
) -> Result<Option<Job>, Error> {
    let sql = format!(
        "UPDATE jobs SET status = CASE WHEN chunks_dead_lettered > 0 OR error <> '' THEN 'failed' ELSE 'completed' END, \
         finished_at_ms = $2 \
         WHERE job_id = $1 AND planning_done = $3 AND cancel_requested = $4 \
         AND (status IN ('planning', 'running') OR (status = 'completed' AND chunks_dead_lettered > 0)) \
         AND chunks_done + chunks_dead_lettered >= chunks_planned \
         AND NOT EXISTS (SELECT 1 FROM job_chunks c WHERE c.job_id = $1 AND c.state IN ('planned', 'published')) \
         RETURNING {JOB_COLUMNS}"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(job_id)
        .bind(now_ms)
        .bind(true)
        .bind(false)
        .fetch_optional(conn)
        .await
        .map_err(Error::internal("end job"))?;
    row.as_ref()
        .map(job_from_row)
        .transpose()
        .map_err(Error::internal("read job"))
}

/// Cancels a job that has not ended: planning stops at its next chunk and chunks not yet
/// processed are discarded. Returns the job when this call cancelled it.
pub async fn cancel_job(
    conn: &mut AnyConnection,
    job_id: &str,
    now_ms: i64,
) -> Result<Option<Job>, Error> {
    let sql = format!(
        "UPDATE jobs SET cancel_requested = $3, status = 'cancelled', finished_at_ms = $2, lease_expires_at_ms = 0 \
         WHERE job_id = $1 AND status IN ('queued', 'planning', 'running') RETURNING {JOB_COLUMNS}"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(job_id)
        .bind(now_ms)
        .bind(true)
        .fetch_optional(conn)
        .await
        .map_err(Error::internal("cancel job"))?;
    row.as_ref()
        .map(job_from_row)
        .transpose()
        .map_err(Error::internal("read job"))
}

/// Ends a job's planning for a cause that can never pass (the group is no longer synced):
/// chunks recorded but never published count their users as failed with that cause, so the
/// counts still add up, and the job ends `failed` once the chunks in the queue are settled
/// (end it with [`end_if_settled`] in the same transaction).
pub async fn fail_planning(
    conn: &mut AnyConnection,
    job_id: &str,
    error: &str,
    now_ms: i64,
) -> Result<(), Error> {
    let rows = sqlx::query(
        "UPDATE job_chunks SET state = 'dead_lettered', processed_at_ms = $3, error = $2 \
         WHERE job_id = $1 AND state = 'planned' RETURNING seq, users",
    )
    .bind(job_id)
    .bind(error)
    .bind(now_ms)
    .fetch_all(&mut *conn)
    .await
    .map_err(Error::internal("fail unpublished chunks"))?;
    let mut users = 0;
    for row in &rows {
        users += count(row, "users").map_err(Error::internal("read failed chunk"))?;
        let seq = count(row, "seq").map_err(Error::internal("read failed chunk"))?;
        sqlx::query(
            "INSERT INTO job_dead_letters (job_id, message_id, error, at_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (job_id, message_id) DO NOTHING",
        )
        .bind(job_id)
        .bind(format!("seq-{seq}"))
        .bind(error)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map_err(Error::internal("list failed chunk"))?;
    }
    let failed = Counts {
        failed: users,
        ..Counts::default()
    };
    add_to_job(conn, job_id, failed, 0, rows.len() as u64).await?;
    sqlx::query(
        "UPDATE jobs SET error = $2, planning_done = $3, lease_expires_at_ms = 0, \
         status = CASE WHEN status = 'queued' THEN 'planning' ELSE status END \
         WHERE job_id = $1 AND status IN ('queued', 'planning', 'running')",
    )
    .bind(job_id)
    .bind(error)
    .bind(true)
    .execute(conn)
    .await
    .map_err(Error::internal("fail planning"))?;
    Ok(())
}

/// What [`reopen_failed`] put back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reopened {
    /// Chunks to run again.
    pub chunks: u64,
    /// Users in them, no longer counted failed.
    pub users: u64,
}

/// Reopens a failed batch job so that exactly its failed chunks run again: each
/// dead-lettered chunk goes back to `planned` (a planner publishes it again, reading its range
/// from directory-sync), its users leave the failed count and the report, and the job
/// returns to planning, which also resumes after its cursor if planning itself had failed.
/// Users the job created are reported created again by the registry (same import id), so a
/// chunk run twice counts once. `None` when the job is not a failed batch job.
pub async fn reopen_failed(
    conn: &mut AnyConnection,
    job_id: &str,
) -> Result<Option<Reopened>, Error> {
    let status: Option<(String, String)> =
        sqlx::query_as("SELECT status, kind FROM jobs WHERE job_id = $1")
            .bind(job_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(Error::internal("read job to retry"))?;
    if !matches!(status, Some((ref status, ref kind)) if status == "failed" && kind == "batch") {
        return Ok(None);
    }
    let (chunks, users): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(users), 0) AS BIGINT) FROM job_chunks \
         WHERE job_id = $1 AND state = 'dead_lettered'",
    )
    .bind(job_id)
    .fetch_one(&mut *conn)
    .await
    .map_err(Error::internal("count failed chunks"))?;
    sqlx::query(
        "DELETE FROM job_outcomes WHERE job_id = $1 AND kind = 'failed' AND EXISTS ( \
           SELECT 1 FROM job_chunks c WHERE c.job_id = $1 AND c.state = 'dead_lettered' \
           AND job_outcomes.object_id > c.after_object_id AND job_outcomes.object_id <= c.last_object_id)",
    )
    .bind(job_id)
    .execute(&mut *conn)
    .await
    .map_err(Error::internal("forget failed outcomes"))?;
    sqlx::query("DELETE FROM job_dead_letters WHERE job_id = $1")
        .bind(job_id)
        .execute(&mut *conn)
        .await
        .map_err(Error::internal("forget dead letters"))?;
    sqlx::query(
        "UPDATE job_chunks SET state = 'planned', error = '', processed_at_ms = 0 \
         WHERE job_id = $1 AND state = 'dead_lettered'",
    )
    .bind(job_id)
    .execute(&mut *conn)
    .await
    .map_err(Error::internal("replan failed chunks"))?;
    sqlx::query(
        "UPDATE jobs SET status = 'planning', error = '', finished_at_ms = 0, planning_done = $2, \
         lease_owner = '', lease_expires_at_ms = 0, chunks_dead_lettered = 0, \
         failed = CASE WHEN failed > $3 THEN failed - $3 ELSE 0 END \
         WHERE job_id = $1 AND status = 'failed'",
    )
    .bind(job_id)
    .bind(false)
    .bind(users)
    .execute(conn)
    .await
    .map_err(Error::internal("reopen job"))?;
    Ok(Some(Reopened {
        chunks: u64::try_from(chunks).unwrap_or(0),
        users: u64::try_from(users).unwrap_or(0),
    }))
}

/// Records why a chunk is about to be dead-lettered (the failure and the true number of
/// deliveries), so the dead-letter recorder reports that rather than the broker's count.
pub async fn note_chunk_failure(
    conn: &mut AnyConnection,
    job_id: &str,
    seq: u64,
    reason: &str,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE job_chunks SET error = $3 WHERE job_id = $1 AND seq = $2 \
         AND state IN ('planned', 'published')",
    )
    .bind(job_id)
    .bind(as_i64(seq))
    .bind(reason)
    .execute(conn)
    .await
    .map_err(Error::internal("note chunk failure"))?;
    Ok(())
}

/// The failure noted on a chunk before it was dead-lettered, if any.
pub async fn chunk_failure(
    conn: &mut AnyConnection,
    job_id: &str,
    seq: u64,
) -> Result<Option<String>, Error> {
    let error: Option<String> =
        sqlx::query_scalar("SELECT error FROM job_chunks WHERE job_id = $1 AND seq = $2")
            .bind(job_id)
            .bind(as_i64(seq))
            .fetch_optional(conn)
            .await
            .map_err(Error::internal("read chunk failure"))?;
    Ok(error.filter(|e| !e.is_empty()))
}

/// Gives `owner` the planning lease of a job unconditionally (a run-now job, planned by the
/// request that created it).
pub async fn take_lease(
    conn: &mut AnyConnection,
    job_id: &str,
    owner: &str,
    now_ms: i64,
    lease_ms: i64,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE jobs SET lease_owner = $2, lease_expires_at_ms = $3 + $4 WHERE job_id = $1",
    )
    .bind(job_id)
    .bind(owner)
    .bind(now_ms)
    .bind(lease_ms)
    .execute(conn)
    .await
    .map_err(Error::internal("take lease"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Group-to-role rules

const RULE_COLUMNS: &str =
    "rule_id, group_id, role_id, company, created_by, created_at_ms, removing";

fn rule_from_row(row: &AnyRow) -> Result<RoleRule, sqlx::Error> {
    Ok(RoleRule {
        rule_id: row.try_get("rule_id")?,
        group_id: row.try_get("group_id")?,
        role_id: row.try_get("role_id")?,
        company: row.try_get("company")?,
        created_by: row.try_get("created_by")?,
        created_at_ms: row.try_get("created_at_ms")?,
        removing: flag(row, "removing")?,
    })
}

/// Every rule, removals in progress included, by rule id.
pub async fn rules(conn: &mut AnyConnection) -> Result<Vec<RoleRule>, Error> {
    let sql = format!("SELECT {RULE_COLUMNS} FROM role_rules ORDER BY rule_id");
    let rows = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(conn)
        .await
        .map_err(Error::internal("list rules"))?;
    rows.iter()
        .map(rule_from_row)
        .collect::<Result<_, _>>()
        .map_err(Error::internal("read rules"))
}

/// Stores a rule unless one with the same group, role and company exists; answers the rule
/// that is stored (the new one or the existing one).
pub async fn insert_rule(conn: &mut AnyConnection, rule: &RoleRule) -> Result<RoleRule, Error> {
    sqlx::query(
        "INSERT INTO role_rules (rule_id, group_id, role_id, company, created_by, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (group_id, role_id, company) DO NOTHING",
    )
    .bind(&rule.rule_id)
    .bind(&rule.group_id)
    .bind(&rule.role_id)
    .bind(&rule.company)
    .bind(&rule.created_by)
    .bind(rule.created_at_ms)
    .execute(&mut *conn)
    .await
    .map_err(Error::internal("insert rule"))?;
    let sql = format!(
        "SELECT {RULE_COLUMNS} FROM role_rules WHERE group_id = $1 AND role_id = $2 AND company = $3"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(&rule.group_id)
        .bind(&rule.role_id)
        .bind(&rule.company)
        .fetch_one(conn)
        .await
        .map_err(Error::internal("read rule"))?;
    rule_from_row(&row).map_err(Error::internal("read rule"))
}

/// The rule with this id.
pub async fn rule(conn: &mut AnyConnection, rule_id: &str) -> Result<Option<RoleRule>, Error> {
    let sql = format!("SELECT {RULE_COLUMNS} FROM role_rules WHERE rule_id = $1");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(rule_id)
        .fetch_optional(conn)
        .await
        .map_err(Error::internal("read rule"))?;
    row.as_ref()
        .map(rule_from_row)
        .transpose()
        .map_err(Error::internal("read rule"))
}

/// Marks a rule as being removed: it grants nothing from now on.
pub async fn mark_rule_removing(conn: &mut AnyConnection, rule_id: &str) -> Result<(), Error> {
    sqlx::query("UPDATE role_rules SET removing = $2 WHERE rule_id = $1")
        .bind(rule_id)
        .bind(true)
        .execute(conn)
        .await
        .map_err(Error::internal("mark rule removing"))?;
    Ok(())
}

/// Deletes a rule (once every grant it made is revoked).
pub async fn delete_rule(conn: &mut AnyConnection, rule_id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM role_rules WHERE rule_id = $1")
        .bind(rule_id)
        .execute(conn)
        .await
        .map_err(Error::internal("delete rule"))?;
    Ok(())
}

/// What a job was asked for, as its idempotency key's owner and content: the creator, kind,
/// company and request digest (`''` when none was recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    pub created_by: String,
    pub kind: String,
    pub company: String,
    pub digest: String,
}

/// The request behind job `job_id`, if the job exists.
pub async fn job_request(
    conn: &mut AnyConnection,
    job_id: &str,
) -> Result<Option<JobRequest>, Error> {
    let row =
        sqlx::query("SELECT created_by, kind, company, request_digest FROM jobs WHERE job_id = $1")
            .bind(job_id)
            .fetch_optional(conn)
            .await
            .map_err(Error::internal("get a job's request"))?;
    row.map(|row| {
        Ok::<_, sqlx::Error>(JobRequest {
            created_by: row.try_get("created_by")?,
            kind: row.try_get("kind")?,
            company: row.try_get("company")?,
            digest: row.try_get("request_digest")?,
        })
    })
    .transpose()
    .map_err(Error::internal("read a job's request"))
}

/// Records the digest of the request that made job `job_id`.
pub async fn set_request_digest(
    conn: &mut AnyConnection,
    job_id: &str,
    digest: &str,
) -> Result<(), Error> {
    sqlx::query("UPDATE jobs SET request_digest = $2 WHERE job_id = $1")
        .bind(job_id)
        .bind(digest)
        .execute(conn)
        .await
        .map_err(Error::internal("record a request digest"))?;
    Ok(())
}
