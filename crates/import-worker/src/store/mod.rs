//! The worker's tables: jobs and their reports (sqlx, Postgres or SQLite). Functions take a
//! connection so they compose in one transaction. Jobs and their requests here; planning
//! (leases, chunk plans), chunk results and group-to-role rules in their own files.

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

mod chunks;
mod planning;
mod rules;

pub use chunks::*;
pub use planning::*;
pub use rules::*;

static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");

/// import-worker's migrations for both backends.
pub static MIGRATIONS: Migrations = Migrations {
    postgres: &POSTGRES,
    sqlite: &SQLITE,
};

/// The columns of a job's row, as written.
macro_rules! job_fields {
    () => {
        "job_id, kind, status, company, created_by, planned, created, already_present, \
         skipped, failed, created_at_ms, started_at_ms, finished_at_ms, error, scope_group, \
         batch_group, private, critical, monitoring_category, chunks_planned, chunks_done, \
         chunks_dead_lettered, planning_done, cancel_requested, trace_parent"
    };
}
const JOB_FIELDS: &str = job_fields!();

/// A job as read: its row and the counts its processed chunks keep (migration 0006), summed
/// in one subquery (`done,created,already_present,skipped,failed`) that works in `SELECT` and
/// `RETURNING` alike on both backends.
const JOB_COLUMNS: &str = concat!(
    job_fields!(),
    ", (SELECT CAST(COUNT(*) AS TEXT) || ',' || CAST(COALESCE(SUM(c.created), 0) AS TEXT) || ',' \
     || CAST(COALESCE(SUM(c.already_present), 0) AS TEXT) || ',' \
     || CAST(COALESCE(SUM(c.skipped), 0) AS TEXT) || ',' || CAST(COALESCE(SUM(c.failed), 0) AS TEXT) \
     FROM job_chunks c WHERE c.job_id = jobs.job_id AND c.tallied = 1) AS tallies"
);

/// A job's row alone, its chunks' counts left out (see [`job_settings`]).
const JOB_ROW_COLUMNS: &str = concat!(job_fields!(), ", '0,0,0,0,0' AS tallies");

/// The counts of a job's tallied chunks: chunks done, then the four outcome counts.
fn tallies(row: &AnyRow) -> Result<[u64; 5], sqlx::Error> {
    let text: String = row.try_get("tallies")?;
    let mut numbers = text.split(',').map(|n| n.parse::<u64>());
    let mut out = [0; 5];
    for slot in &mut out {
        *slot = numbers
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| sqlx::Error::Decode(format!("job tallies {text:?}").into()))?;
    }
    Ok(out)
}

fn count(row: &AnyRow, column: &str) -> Result<u64, sqlx::Error> {
    Ok(u64::try_from(row.try_get::<i64, _>(column)?).unwrap_or(0))
}

fn job_from_row(row: &AnyRow) -> Result<Job, sqlx::Error> {
    let scope_group: String = row.try_get("scope_group")?;
    let chunks = tallies(row)?;
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
            created: count(row, "created")? + chunks[1],
            already_present: count(row, "already_present")? + chunks[2],
            skipped: count(row, "skipped")? + chunks[3],
            failed: count(row, "failed")? + chunks[4],
        },
        chunks_planned: count(row, "chunks_planned")?,
        chunks_done: count(row, "chunks_done")? + chunks[0],
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
        "INSERT INTO jobs ({JOB_FIELDS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
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
    job_with(conn, JOB_COLUMNS, job_id).await
}

/// The job with this id as its row holds it, without the counts its processed chunks keep:
/// for the chunk path, which reads only the job's settings (company, caller, options, cancel)
/// once per chunk, where summing the job's chunks would cost a walk over them per chunk.
pub async fn job_settings(conn: &mut AnyConnection, job_id: &str) -> Result<Option<Job>, Error> {
    job_with(conn, JOB_ROW_COLUMNS, job_id).await
}

async fn job_with(
    conn: &mut AnyConnection,
    columns: &'static str,
    job_id: &str,
) -> Result<Option<Job>, Error> {
    let sql = format!("SELECT {columns} FROM jobs WHERE job_id = $1");
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
