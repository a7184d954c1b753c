//! The chunk handler and the loops that feed it: every replica consumes the chunks of its
//! batch groups (any number of replicas compete), and the dead-letter queue.
//!
//! A chunk is acknowledged only after its users are committed in the registry and its result
//! is recorded; a chunk processed twice (redelivered after a crash, published twice by a
//! planner that died) changes neither the registry nor the counts. Passing failures are
//! retried here first, then the chunk goes back to the queue, where the broker's delivery
//! limit moves a chunk that always fails to the dead-letter queue; a message that cannot be
//! read at all goes there at once. Dead letters are recorded on their job.

use std::time::Duration;

use prost::Message as _;
use proto::importer::v1 as pb;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clients::directory_user;
use crate::error::{Error, Retry};
use crate::events;
use crate::queue::{Consumer, Delivery, Message};
use crate::service::Importer;
use crate::store;
use service_runtime::retry::RetryPolicy;

/// How a chunk that fails for a defect (`INTERNAL` here or in the registry) is retried
/// before it is dead-lettered: three attempts. Passing faults are waited out instead (see
/// `handle`).
const DEFECT_RETRIES: RetryPolicy = RetryPolicy {
    initial: Duration::from_secs(1),
    max_delay: Duration::from_secs(4),
    max_attempts: 3,
    max_elapsed: Duration::from_secs(60),
};

/// Header counting a chunk's deliveries before it was published again at its queue's tail.
pub(crate) const DELIVERIES_HEADER: &str = "deliveries";

/// Imports one chunk and records its result, once: the users' outcomes join the job's counts
/// and report, and the job ends when it was the last chunk. Chunks of a cancelled job are
/// settled unprocessed.
pub(crate) async fn process_chunk(
    importer: &Importer,
    chunk: pb::ImportChunk,
    now_ms: i64,
) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let job = {
        let mut conn = importer.conn().await?;
        store::job_settings(&mut conn, &chunk.job_id).await?
    };
    let Some(job) = job else {
        return Err(Error::NotFound(format!(
            "chunk {} of unknown job {}",
            chunk.seq, chunk.job_id
        )));
    };
    if job.cancel_requested {
        let mut conn = importer.conn().await?;
        store::discard_chunk(&mut conn, &job.job_id, chunk.seq, now_ms).await?;
        tracing::debug!(job_id = %job.job_id, seq = chunk.seq, "chunk of a cancelled job discarded");
        return Ok(());
    }
    let users: Vec<_> = chunk.users.into_iter().map(directory_user).collect();
    let outcomes = importer
        .import_users(
            &job.created_by,
            &job.job_id,
            &job.company,
            job.options.private,
            &users,
            false,
        )
        .await?;

    let db = importer.db();
    let mut tx = db
        .begin_write()
        .await
        .map_err(Error::internal("begin chunk"))?;
    let counted = store::record_chunk(
        &mut tx,
        db.backend(),
        &job.job_id,
        chunk.seq,
        &outcomes,
        now_ms,
    )
    .await?;
    tx.commit().await.map_err(Error::internal("commit chunk"))?;
    // After the commit, so that of two last chunks committing at once the later sees both; a
    // redelivery (this process stopped before asking) asks again.
    let ended = {
        let mut conn = importer.conn().await?;
        store::end_if_settled(&mut conn, &job.job_id, now_ms).await?
    };

    if counted {
        let category = job.options.monitoring_category.clone();
        for outcome in &outcomes {
            metrics::counter!("import_users_total", "outcome" => outcome.kind.as_str(), "monitoring_category" => category.clone())
                .increment(1);
        }
        metrics::histogram!("import_chunk_seconds", "monitoring_category" => category)
            .record(started.elapsed().as_secs_f64());
    } else {
        tracing::debug!(job_id = %job.job_id, seq = chunk.seq, "chunk replayed; its result was recorded before");
    }
    if let Some(ended) = ended {
        events::announce(importer, &ended).await;
        crate::rules::after_job(importer, &ended);
    }
    Ok(())
}

/// Consumes this replica's batch groups until `shutdown`, processing up to the queue's
/// prefetch of chunks at once; on shutdown, chunks in hand are finished (and acknowledged)
/// before returning, and nothing unfinished is acknowledged.
pub async fn run_consumer(importer: Importer, shutdown: CancellationToken) {
    let groups = importer.settings().batch_groups.clone();
    let Some(mut consumer) = open(&shutdown, || importer.queue().consume(&groups)).await else {
        return;
    };
    let tracker = TaskTracker::new();
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => break,
            next = consumer.next() => next,
        };
        match next {
            Some(Ok(delivery)) => {
                let (importer, shutdown) = (importer.clone(), shutdown.clone());
                // Each chunk continues the trace its message carries.
                let span = tracing::info_span!("import.chunk", otel.kind = "consumer");
                service_runtime::trace::continue_from(&span, &delivery.headers);
                tracker.spawn(tracing::Instrument::instrument(
                    async move { handle(&importer, delivery, &shutdown).await },
                    span,
                ));
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "chunk delivery failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None => break,
        }
    }
    tracker.close();
    tracker.wait().await;
}

/// Opens a consumer, retrying with backoff while the queue is unavailable; `None` on shutdown.
async fn open<F, Fut>(shutdown: &CancellationToken, mut connect: F) -> Option<Box<dyn Consumer>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Box<dyn Consumer>, crate::queue::QueueError>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match connect().await {
            Ok(consumer) => return Some(consumer),
            // A topology conflict (a queue declared elsewhere with other arguments) needs an
            // operator; it is retried, loudly, so fixing the broker heals the worker.
            Err(error) if !error.is_retryable() => {
                tracing::error!(%error, "cannot consume from the queue")
            }
            Err(error) => tracing::warn!(%error, "cannot consume from the queue yet"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn handle(importer: &Importer, delivery: Delivery, shutdown: &CancellationToken) {
    // Queue lag: from the planner's publish to this delivery (redeliveries included).
    if let Some(published) = delivery
        .headers
        .get(crate::planner::PUBLISHED_AT_HEADER)
        .and_then(|v| v.parse::<i64>().ok())
    {
        let lag_ms = (service_runtime::now_ms() - published).max(0);
        metrics::histogram!("import_queue_lag_seconds").record(lag_ms as f64 / 1000.0);
    }
    let chunk = match pb::ImportChunk::decode(delivery.payload.as_slice()) {
        Ok(chunk) => chunk,
        Err(error) => {
            tracing::warn!(%error, headers = ?delivery.headers, "unreadable chunk sent to the dead-letter queue");
            if let Err(error) = delivery.reject().await {
                tracing::warn!(%error, "could not dead-letter an unreadable chunk");
            }
            return;
        }
    };
    let (job_id, seq) = (chunk.job_id.clone(), chunk.seq);
    // Deliveries of this chunk before it was handed back to the queue's tail.
    let earlier: u32 = delivery
        .headers
        .get(DELIVERIES_HEADER)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let deliveries = earlier.saturating_add(delivery.delivery_count);
    let mut transient = RetryPolicy::patient(importer.settings().chunk_retry_hold).start();
    let mut defects = DEFECT_RETRIES.start();
    loop {
        let error = match process_chunk(importer, chunk.clone(), service_runtime::now_ms()).await {
            Ok(()) => {
                // If the channel died meanwhile the broker delivers the chunk again, and its
                // replay changes nothing.
                if let Err(error) = delivery.ack().await {
                    tracing::warn!(%error, %job_id, seq, "ack failed; the chunk will be redelivered");
                }
                return;
            }
            Err(error) => error,
        };
        let delay = match error.retry() {
            // A dependency is down or busy: wait it out, holding the delivery (so the broker
            // neither redelivers it at once nor counts it toward the delivery limit).
            Retry::Transient => transient.next_delay(error.retry_delay()),
            Retry::Defect => defects.next_delay(None),
            Retry::Permanent => None,
        };
        match (delay, error.retry()) {
            (Some(delay), _) => {
                tracing::warn!(%error, %job_id, seq, delay_ms = delay.as_millis() as u64, "chunk failed; retrying");
                metrics::counter!("import_chunk_retries_total", "class" => if error.is_transient() { "transient" } else { "defect" }).increment(1);
                tokio::select! {
                    // Unsettled, the delivery goes back to the queue for another replica.
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
            (None, Retry::Transient) => {
                // Held long enough: to the tail of its queue, with its deliveries counted,
                // so this worker's other chunks and other replicas get their turn.
                requeue_later(importer, delivery, deliveries, &job_id, seq).await;
                return;
            }
            (None, _) => {
                let reason = format!("{error} (dead-lettered after {deliveries} deliveries)");
                tracing::warn!(%error, %job_id, seq, deliveries, "chunk failed for good; to the dead-letter queue");
                let noted = async {
                    let mut conn = importer.conn().await?;
                    store::note_chunk_failure(&mut conn, &job_id, seq, &reason).await
                }
                .await;
                if let Err(error) = noted {
                    tracing::warn!(%error, %job_id, seq, "cannot note the chunk's failure; it goes back to the queue");
                    return;
                }
                if let Err(error) = delivery.reject().await {
                    tracing::warn!(%error, %job_id, seq, "dead-lettering failed; the broker redelivers the chunk");
                }
                return;
            }
        }
    }
}

/// Publishes the chunk again at its queue's tail, counting its deliveries so far, then
/// acknowledges this delivery. A crash in between leaves two copies, and the second one's
/// replay changes nothing; a failed publish leaves the delivery unsettled, so it returns.
async fn requeue_later(
    importer: &Importer,
    delivery: Delivery,
    deliveries: u32,
    job_id: &str,
    seq: u64,
) {
    let Some(lane) = delivery.lane.clone() else {
        return;
    };
    let mut headers = delivery.headers.clone();
    headers.insert(DELIVERIES_HEADER.to_owned(), deliveries.to_string());
    let message = Message {
        payload: delivery.payload.clone(),
        headers,
    };
    match importer.queue().publish(&lane, message).await {
        Ok(()) => {
            tracing::info!(%job_id, seq, deliveries, "chunk still failing for a passing cause; back to the tail of its queue");
            if let Err(error) = delivery.ack().await {
                tracing::warn!(%error, %job_id, seq, "ack after requeue failed; the chunk comes twice, which changes nothing");
            }
        }
        Err(error) => {
            tracing::warn!(%error, %job_id, seq, "cannot requeue the chunk; the broker redelivers it");
        }
    }
}

/// Records dead-lettered messages on their jobs until `shutdown`: a chunk's users count as
/// failed with the reason; a message that could not be read is listed on the job named in its
/// headers. The job then ends if nothing else is pending.
pub async fn run_dead_letters(importer: Importer, shutdown: CancellationToken) {
    let Some(mut consumer) = open(&shutdown, || importer.queue().consume_dead_letters()).await
    else {
        return;
    };
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return,
            next = consumer.next() => next,
        };
        match next {
            Some(Ok(delivery)) => match record_dead_letter(&importer, &delivery).await {
                Ok(()) => {
                    if let Err(error) = delivery.ack().await {
                        tracing::warn!(%error, "dead letter ack failed; it will be recorded again, once");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot record a dead letter yet");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    drop(delivery);
                }
            },
            Some(Err(error)) => {
                tracing::warn!(%error, "dead-letter delivery failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None => return,
        }
    }
}

async fn record_dead_letter(importer: &Importer, delivery: &Delivery) -> Result<(), Error> {
    let now = service_runtime::now_ms();
    let db = importer.db();
    let mut tx = db
        .begin_write()
        .await
        .map_err(Error::internal("begin dead letter"))?;
    let job_id = match pb::ImportChunk::decode(delivery.payload.as_slice()) {
        Ok(chunk) => {
            // The handler notes the failure and the true delivery count before rejecting;
            // a chunk the broker dead-lettered by its delivery limit has only the count.
            let reason = match store::chunk_failure(&mut tx, &chunk.job_id, chunk.seq).await? {
                Some(noted) => noted,
                None => format!(
                    "dead-lettered after {} deliveries",
                    delivery.delivery_count.max(1)
                ),
            };
            let ids: Vec<String> = chunk.users.iter().map(|u| u.object_id.clone()).collect();
            let settled = store::record_chunk_dead(
                &mut tx,
                db.backend(),
                &chunk.job_id,
                chunk.seq,
                &ids,
                &reason,
                now,
            )
            .await?;
            if !settled {
                // Not a pending planned chunk (already processed, or never planned): listed.
                let message_id = format!("seq-{}", chunk.seq);
                store::record_dead_letter(&mut tx, &chunk.job_id, &message_id, &reason, now)
                    .await?;
            }
            tracing::warn!(job_id = %chunk.job_id, seq = chunk.seq, users = ids.len(), "chunk dead-lettered");
            chunk.job_id
        }
        Err(_) => {
            let Some(job_id) = delivery.headers.get("job_id").cloned() else {
                tracing::error!(headers = ?delivery.headers, "unreadable dead letter names no job; dropped");
                return Ok(());
            };
            let message_id = delivery
                .headers
                .get("seq")
                .map(|seq| format!("seq-{seq}"))
                .unwrap_or_else(|| format!("bytes-{}", delivery.payload.len()));
            store::record_dead_letter(
                &mut tx,
                &job_id,
                &message_id,
                "unreadable message dead-lettered",
                now,
            )
            .await?;
            tracing::warn!(%job_id, %message_id, "unreadable message dead-lettered");
            job_id
        }
    };
    metrics::counter!("import_chunks_dead_lettered_total").increment(1);
    tx.commit()
        .await
        .map_err(Error::internal("commit dead letter"))?;
    let ended = {
        let mut conn = importer.conn().await?;
        store::end_if_settled(&mut conn, &job_id, now).await?
    };
    if let Some(ended) = ended {
        events::announce(importer, &ended).await;
        crate::rules::after_job(importer, &ended);
    }
    Ok(())
}
