//! Job events, the analogue of D365's batch business events: `job.started`, `job.completed`,
//! `job.failed` and `job.cancelled` on the queue's events exchange. A critical job that fails
//! is also an ERROR log line carrying its monitoring category, and a metric to alert on.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::domain::{Job, JobStatus};
use crate::queue::Message;
use crate::service::Importer;

#[derive(Serialize)]
struct JobEvent<'a> {
    job_id: &'a str,
    status: &'a str,
    company: &'a str,
    created_by: &'a str,
    batch_group: &'a str,
    critical: bool,
    monitoring_category: &'a str,
    planned: u64,
    created: u64,
    already_present: u64,
    skipped: u64,
    failed: u64,
    chunks_dead_lettered: u64,
    error: &'a str,
}

/// The routing key of the event a job's status calls for.
pub fn routing_key(status: JobStatus) -> Option<&'static str> {
    match status {
        JobStatus::Planning => Some("job.started"),
        JobStatus::Completed => Some("job.completed"),
        JobStatus::Failed => Some("job.failed"),
        JobStatus::Cancelled => Some("job.cancelled"),
        JobStatus::Queued | JobStatus::Running => None,
    }
}

/// Announces a job's new status. Events are at-least-once: a failure to publish is logged and
/// does not undo the change it reports.
pub async fn announce(importer: &Importer, job: &Job) {
    let Some(key) = routing_key(job.status) else {
        return;
    };
    let critical = if job.options.critical {
        "true"
    } else {
        "false"
    };
    metrics::counter!("import_jobs_total", "status" => job.status.as_str(), "critical" => critical)
        .increment(1);
    if job.status == JobStatus::Failed && job.options.critical {
        metrics::counter!(
            "import_critical_jobs_failed_total",
            "monitoring_category" => job.options.monitoring_category.clone()
        )
        .increment(1);
        tracing::error!(
            job_id = %job.job_id,
            monitoring_category = %job.options.monitoring_category,
            batch_group = job.batch_group(),
            failed = job.counts.failed,
            chunks_dead_lettered = job.chunks_dead_lettered,
            error = %job.error,
            "critical batch job failed"
        );
    } else {
        tracing::info!(
            job_id = %job.job_id,
            status = job.status.as_str(),
            monitoring_category = %job.options.monitoring_category,
            created = job.counts.created,
            already_present = job.counts.already_present,
            skipped = job.counts.skipped,
            failed = job.counts.failed,
            "batch job {}",
            key.trim_start_matches("job.")
        );
    }
    let event = JobEvent {
        job_id: &job.job_id,
        status: job.status.as_str(),
        company: &job.company,
        created_by: &job.created_by,
        batch_group: job.batch_group(),
        critical: job.options.critical,
        monitoring_category: &job.options.monitoring_category,
        planned: job.planned,
        created: job.counts.created,
        already_present: job.counts.already_present,
        skipped: job.counts.skipped,
        failed: job.counts.failed,
        chunks_dead_lettered: job.chunks_dead_lettered,
        error: &job.error,
    };
    let payload = match serde_json::to_vec(&event) {
        Ok(payload) => payload,
        Err(error) => {
            tracing::error!(%error, "cannot encode a job event");
            return;
        }
    };
    let headers = BTreeMap::from([("job_id".to_owned(), job.job_id.clone())]);
    if let Err(error) = importer
        .queue()
        .publish_event(key, Message { payload, headers })
        .await
    {
        tracing::warn!(%error, job_id = %job.job_id, event = key, "job event not published");
    }
}
