//! Planning: leases on a job's planning, its position, and the chunks it plans and publishes.

use super::*;

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
