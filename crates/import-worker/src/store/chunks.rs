//! Chunk results: recorded once, dead letters, a job's end, cancelling, failing and reopening.

use super::*;

/// Records a processed chunk once: its counts go on its own row (summed into the job's when
/// the job is read) and the users not created join the report. False (nothing written) when
/// the chunk was recorded before — a redelivery. The job's row is not written, so chunks of
/// one job commit without waiting on each other; whether the job has ended is asked after
/// the commit ([`end_if_settled`]).
pub async fn record_chunk(
    conn: &mut AnyConnection,
    backend: Backend,
    job_id: &str,
    seq: u64,
    outcomes: &[Outcome],
    now_ms: i64,
) -> Result<bool, Error> {
    let counts = Counts::of(outcomes);
    let claimed = sqlx::query(
        "UPDATE job_chunks SET state = 'done', processed_at_ms = $3, tallied = 1, created = $4, \
         already_present = $5, skipped = $6, failed = $7 \
         WHERE job_id = $1 AND seq = $2 AND state IN ('planned', 'published')",
    )
    .bind(job_id)
    .bind(as_i64(seq))
    .bind(now_ms)
    .bind(as_i64(counts.created))
    .bind(as_i64(counts.already_present))
    .bind(as_i64(counts.skipped))
    .bind(as_i64(counts.failed))
    .execute(&mut *conn)
    .await
    .map_err(Error::internal("record chunk"))?;
    if claimed.rows_affected() != 1 {
        return Ok(false);
    }
    insert_outcomes(conn, backend, job_id, outcomes).await?;
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

/// Adds to a job's own counts what no chunk row keeps: dead-lettered chunks and messages, and
/// chunks failed with their planning (processed chunks keep theirs, [`record_chunk`]). A
/// completed or failed job's counts never move again.
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
/// Ask it after the commit that settled a chunk or finished planning, never inside that
/// transaction: the last two chunks of a job commit concurrently, and each, inside its own
/// transaction, would still see the other unsettled. After both commits, the later question
/// sees both. Whether any chunk is unsettled is one probe of a partial index.
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

/// Jobs whose planning is done and whose chunks are all settled but that have not ended:
/// left so by a process that stopped between a commit and its [`end_if_settled`].
pub async fn settled_unended_jobs(conn: &mut AnyConnection) -> Result<Vec<String>, Error> {
    sqlx::query_scalar(
        "SELECT job_id FROM jobs j WHERE status IN ('planning', 'running') \
         AND planning_done = $1 AND cancel_requested = $2 \
         AND NOT EXISTS (SELECT 1 FROM job_chunks c WHERE c.job_id = j.job_id \
         AND c.state IN ('planned', 'published'))",
    )
    .bind(true)
    .bind(false)
    .fetch_all(conn)
    .await
    .map_err(Error::internal("find settled jobs"))
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
