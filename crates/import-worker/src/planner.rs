//! The planner: cuts a batch job into chunks of users in object id order and hands each to
//! the queue (or, for run-now, straight to the chunk handler).
//!
//! Every replica runs one. A job is planned by whoever claims its lease; the lease is renewed
//! with each chunk, so if the planning process dies another replica takes the job over once
//! the lease expires and resumes after the last chunk recorded. A chunk is recorded (its
//! object id range) before its message is published, and marked published after the broker's
//! confirm: chunks recorded but never confirmed are published again by the successor, and a
//! chunk published twice is counted once by its (job, seq) key.
//!
//! Publishing is pipelined: while the broker confirms a chunk, the planner reads and records
//! the next ones, with at most [`PUBLISHES_IN_FLIGHT`] chunks awaiting their confirm. Each
//! chunk keeps its order of steps (recorded, published, confirmed, marked published); only
//! the waits of neighbouring chunks overlap.

use std::collections::BTreeMap;

use prost::Message as _;
use proto::directory::v1 as directory_pb;
use proto::importer::v1 as pb;
use tokio_util::sync::CancellationToken;

use crate::chunks;
use crate::domain::Job;
use crate::error::{Error, Retry};
use crate::events;
use crate::queue::{Lane, Message};
use crate::service::Importer;
use crate::store::{self, ChunkPlan};
use service_runtime::retry::RetryPolicy;

/// How often an idle planner looks for jobs (a job started on this replica wakes it at once).
const POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Chunks of one planning whose publish awaits the broker's confirm at once. A planner that
/// stops leaves at most this many chunks recorded and not confirmed; its successor publishes
/// them again. Their users stay in memory until confirmed, so memory stays bounded.
const PUBLISHES_IN_FLIGHT: usize = 8;

/// Header of a chunk message: when it was published (Unix ms), for the queue-lag metric.
pub(crate) const PUBLISHED_AT_HEADER: &str = "published_at_ms";

/// Where planned chunks go.
#[derive(Clone, Copy)]
enum Dispatch {
    /// To the queue, for any worker of the job's batch group.
    Queue,
    /// To this process's chunk handler, now (run-now).
    InRequest,
}

/// How planning ended.
enum Planned {
    /// Every user in scope is in a chunk.
    Finished,
    /// The lease was lost or the job cancelled; nothing more to do here.
    Stopped,
}

fn lease_ms(importer: &Importer) -> i64 {
    i64::try_from(importer.settings().planning_lease.as_millis()).unwrap_or(i64::MAX)
}

/// Plans jobs until `shutdown`: claims any job whose lease is free (critical ones first) and
/// plans it, up to `concurrent_plans` at once, and waits for more (woken when a job is started
/// here, when a planning ends, or every second). Plannings in progress at shutdown are
/// stopped and their leases handed back, so another replica resumes them at once.
pub async fn run(importer: Importer, shutdown: CancellationToken) {
    let owner = importer.settings().instance_id.clone();
    let mut plannings = tokio::task::JoinSet::new();
    loop {
        while plannings.len() < importer.settings().concurrent_plans {
            let now = service_runtime::now_ms();
            let claimed = async {
                let mut conn = importer.conn().await?;
                store::claim_job_for_planning(&mut conn, &owner, now, lease_ms(&importer)).await
            }
            .await;
            let job = match claimed {
                Ok(Some(job)) => job,
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "cannot look for jobs to plan");
                    break;
                }
            };
            let (importer, owner) = (importer.clone(), owner.clone());
            // Planning continues the trace of the call that started the job.
            let span = tracing::info_span!("import.plan", job_id = %job.job_id);
            let parent = BTreeMap::from([("traceparent".to_owned(), job.trace_parent.clone())]);
            service_runtime::trace::continue_from(&span, &parent);
            plannings.spawn(tracing::Instrument::instrument(
                async move {
                    if job.started_at_ms == now {
                        events::announce(&importer, &job).await;
                    }
                    plan_and_settle(
                        &importer,
                        &job,
                        &owner,
                        Dispatch::Queue,
                        &service_runtime::now_ms,
                    )
                    .await;
                },
                span,
            ));
        }
        end_settled_jobs(&importer).await;
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = importer.wakeup().notified() => {}
            Some(_) = plannings.join_next() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
    // Stopped between two statements, a planning leaves at most `PUBLISHES_IN_FLIGHT` chunks
    // recorded but not confirmed, which the next planner publishes again. Handing the leases
    // back lets another replica go on at once instead of after the lease (a rolling deploy
    // stalls nothing).
    plannings.shutdown().await;
    let released = async {
        let mut conn = importer.conn().await?;
        store::release_leases(&mut conn, &owner).await
    }
    .await;
    match released {
        Ok(0) => {}
        Ok(jobs) => tracing::info!(jobs, "planning handed back for another replica"),
        Err(error) => tracing::warn!(%error, "planning leases not handed back; they expire"),
    }
}

/// Ends the jobs that are settled but were not ended: the chunk or planning that settled one
/// asks after its commit, and a process can stop in between (its chunk is redelivered, but a
/// finished planning is not run again).
async fn end_settled_jobs(importer: &Importer) {
    let ended = async {
        let mut conn = importer.conn().await?;
        let mut ended = Vec::new();
        for job_id in store::settled_unended_jobs(&mut conn).await? {
            if let Some(job) =
                store::end_if_settled(&mut conn, &job_id, service_runtime::now_ms()).await?
            {
                ended.push(job);
            }
        }
        Ok::<_, Error>(ended)
    }
    .await;
    match ended {
        Ok(jobs) => {
            for job in jobs {
                tracing::info!(job_id = %job.job_id, "a settled job left unended is ended");
                events::announce(importer, &job).await;
                crate::rules::after_job(importer, &job);
            }
        }
        Err(error) => tracing::warn!(%error, "cannot look for settled jobs"),
    }
}

/// Plans a run-now job within the request and returns it ended.
pub(crate) async fn run_in_request(
    importer: &Importer,
    job: &Job,
    clock: &impl Fn() -> i64,
) -> Result<Job, Error> {
    let owner = format!("run-now:{}", job.job_id);
    {
        let mut conn = importer.conn().await?;
        store::take_lease(&mut conn, &job.job_id, &owner, clock(), lease_ms(importer)).await?;
    }
    events::announce(importer, job).await;
    plan_and_settle(importer, job, &owner, Dispatch::InRequest, clock).await;
    let mut conn = importer.conn().await?;
    store::job(&mut conn, &job.job_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("job {} not found", job.job_id)))
}

/// Plans a claimed job and ends it when everything is settled. A failure that can never
/// succeed (the group is no longer synced) fails the job; a passing one leaves the lease to
/// expire, and a replica takes the job up again from its last chunk.
async fn plan_and_settle(
    importer: &Importer,
    job: &Job,
    owner: &str,
    dispatch: Dispatch,
    clock: &impl Fn() -> i64,
) {
    let outcome = plan(importer, job, owner, dispatch, clock).await;
    let ended = async {
        match outcome {
            Ok(Planned::Finished) => {
                let mut conn = importer.conn().await?;
                store::end_if_settled(&mut conn, &job.job_id, clock()).await
            }
            Ok(Planned::Stopped) => Ok(None),
            // Only a cause that can never pass ends planning; anything else (a dependency
            // down, a stream cut by a process that died, a defect that may be fixed) leaves
            // the lease to expire, and a replica resumes from the stored cursor.
            // Nobody resumes a run-now job but its request: it fails with the cause.
            Err(error) if error.retry() != Retry::Permanent && matches!(dispatch, Dispatch::Queue) => {
                tracing::warn!(job_id = %job.job_id, %error, "planning interrupted; the job is taken up again from its cursor");
                Ok(None)
            }
            Err(error) => {
                tracing::warn!(job_id = %job.job_id, %error, "planning failed");
                let db = importer.db();
                let mut tx = db
                    .begin_write()
                    .await
                    .map_err(Error::internal("begin fail planning"))?;
                store::fail_planning(&mut tx, &job.job_id, &error.to_string(), clock())
                    .await?;
                tx.commit()
                    .await
                    .map_err(Error::internal("commit fail planning"))?;
                let mut conn = importer.conn().await?;
                store::end_if_settled(&mut conn, &job.job_id, clock()).await
            }
        }
    }
    .await;
    match ended {
        Ok(Some(ended)) => {
            events::announce(importer, &ended).await;
            crate::rules::after_job(importer, &ended);
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(job_id = %job.job_id, %error, "cannot end the job"),
    }
}

async fn plan(
    importer: &Importer,
    job: &Job,
    owner: &str,
    dispatch: Dispatch,
    clock: &impl Fn() -> i64,
) -> Result<Planned, Error> {
    let scope = job.scope_group.as_deref();
    // Chunks recorded by a planner that died before the broker confirmed them go out again.
    let unpublished = {
        let mut conn = importer.conn().await?;
        store::unpublished_chunks(&mut conn, &job.job_id).await?
    };
    for chunk in unpublished {
        let users = read_range(importer, scope, &chunk).await?;
        send(importer, job, &chunk, users, dispatch, clock).await?;
    }

    let mut position = {
        let mut conn = importer.conn().await?;
        store::plan_position(&mut conn, &job.job_id).await?
    };
    let chunk_size = importer.settings().chunk_size;
    let mut stream = importer
        .directory()
        .stream_users(scope, &position.cursor, chunk_size)
        .await?;
    // Publishes awaiting their confirm (queue dispatch only). Dropped with this function,
    // they are aborted: their chunks stay unconfirmed and are published again.
    let mut publishing = tokio::task::JoinSet::new();
    loop {
        while let Some(published) = publishing.try_join_next() {
            settled(published)?;
        }
        let batch = stream
            .message()
            .await
            .map_err(Error::upstream("directory-sync"))?;
        let Some(batch) = batch else { break };
        let Some(last) = batch.users.last() else {
            continue;
        };
        let chunk = ChunkPlan {
            seq: position.next_seq,
            after_object_id: position.cursor.clone(),
            last_object_id: last.object_id.clone(),
            users: batch.users.len() as u64,
        };
        // The cursor and the chunk's row move together, or a planner dying between them
        // would leave users counted as planned in no chunk.
        let recorded = {
            let db = importer.db();
            let mut tx = db
                .begin_write()
                .await
                .map_err(Error::internal("begin plan"))?;
            let recorded = store::plan_chunk(
                &mut tx,
                &job.job_id,
                owner,
                &chunk,
                clock(),
                lease_ms(importer),
            )
            .await?;
            tx.commit().await.map_err(Error::internal("commit plan"))?;
            recorded
        };
        if !recorded {
            tracing::info!(job_id = %job.job_id, "planning stopped: the job was cancelled or taken over");
            drain(&mut publishing).await?;
            return Ok(Planned::Stopped);
        }
        let next = store::PlanPosition {
            cursor: chunk.last_object_id.clone(),
            next_seq: chunk.seq + 1,
        };
        match dispatch {
            Dispatch::InRequest => {
                send(importer, job, &chunk, batch.users, dispatch, clock).await?;
            }
            Dispatch::Queue => {
                if publishing.len() >= PUBLISHES_IN_FLIGHT
                    && let Some(published) = publishing.join_next().await
                {
                    settled(published)?;
                }
                let (importer, job) = (importer.clone(), job.clone());
                // In the planning's span, so the message carries its trace.
                publishing.spawn(tracing::Instrument::in_current_span(async move {
                    publish(&importer, &job, &chunk, batch.users).await
                }));
            }
        }
        position = next;
    }
    drain(&mut publishing).await?;
    let mut conn = importer.conn().await?;
    if store::finish_planning(&mut conn, &job.job_id, owner).await? {
        tracing::info!(job_id = %job.job_id, chunks = position.next_seq, "planning finished");
        Ok(Planned::Finished)
    } else {
        Ok(Planned::Stopped)
    }
}

/// The result of a publish task.
fn settled(published: Result<Result<(), Error>, tokio::task::JoinError>) -> Result<(), Error> {
    published.map_err(|e| Error::Internal(anyhow::Error::new(e).context("publish task")))?
}

/// Waits for every publish in flight; the first failure is returned (the rest are aborted).
async fn drain(publishing: &mut tokio::task::JoinSet<Result<(), Error>>) -> Result<(), Error> {
    while let Some(published) = publishing.join_next().await {
        settled(published)?;
    }
    Ok(())
}

/// The users of a recorded chunk's range `(after, last]`, read again from directory-sync.
async fn read_range(
    importer: &Importer,
    scope: Option<&str>,
    chunk: &ChunkPlan,
) -> Result<Vec<directory_pb::DirectoryUser>, Error> {
    let batch_size = importer.settings().chunk_size;
    let mut stream = importer
        .directory()
        .stream_users(scope, &chunk.after_object_id, batch_size)
        .await?;
    let mut users = Vec::new();
    while let Some(batch) = stream
        .message()
        .await
        .map_err(Error::upstream("directory-sync"))?
    {
        for user in batch.users {
            if user.object_id > chunk.last_object_id {
                return Ok(users);
            }
            users.push(user);
        }
    }
    Ok(users)
}

/// Hands a recorded chunk on: publishes it and notes the broker's confirm, or processes it.
async fn send(
    importer: &Importer,
    job: &Job,
    chunk: &ChunkPlan,
    users: Vec<directory_pb::DirectoryUser>,
    dispatch: Dispatch,
    clock: &impl Fn() -> i64,
) -> Result<(), Error> {
    match dispatch {
        // No queue to hand a chunk back to: a passing fault is waited out here, for as long
        // as a chunk in a worker's hand would be, before the run fails.
        Dispatch::InRequest => {
            let message = chunk_message(job, chunk, users);
            RetryPolicy::patient(importer.settings().chunk_retry_hold)
                .run(
                    || chunks::process_chunk(importer, message.clone(), clock()),
                    Error::is_transient,
                    Error::retry_delay,
                )
                .await
        }
        Dispatch::Queue => publish(importer, job, chunk, users).await,
    }
}

fn chunk_message(
    job: &Job,
    chunk: &ChunkPlan,
    users: Vec<directory_pb::DirectoryUser>,
) -> pb::ImportChunk {
    pb::ImportChunk {
        job_id: job.job_id.clone(),
        seq: chunk.seq,
        company: job.company.clone(),
        users,
        critical: job.options.critical,
        monitoring_category: job.options.monitoring_category.clone(),
    }
}

/// Publishes a recorded chunk to its lane and, once the broker confirms it, marks it
/// published.
async fn publish(
    importer: &Importer,
    job: &Job,
    chunk: &ChunkPlan,
    users: Vec<directory_pb::DirectoryUser>,
) -> Result<(), Error> {
    let lane = Lane {
        batch_group: job.batch_group().to_owned(),
        critical: job.options.critical,
    };
    // The message carries the trace on to whichever worker takes it.
    let mut headers = service_runtime::trace::current_headers();
    headers.extend([
        ("job_id".to_owned(), job.job_id.clone()),
        ("seq".to_owned(), chunk.seq.to_string()),
        (
            PUBLISHED_AT_HEADER.to_owned(),
            service_runtime::now_ms().to_string(),
        ),
    ]);
    let message = chunk_message(job, chunk, users);
    importer
        .queue()
        .publish(
            &lane,
            Message {
                payload: message.encode_to_vec(),
                headers,
            },
        )
        .await
        .map_err(|e| Error::queue(&e))?;
    let mut conn = importer.conn().await?;
    store::mark_published(&mut conn, &job.job_id, chunk.seq).await
}
