//! Batch jobs: start, run now, list, show, watch, outcomes, cancel and retry.

use super::*;

/// Options of `batch start`: D365's batch dialog.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BatchStartArgs {
    /// Default company of the imported users; your current company (`userimport company`)
    /// unless given.
    #[arg(long, env = "USERIMPORT_COMPANY")]
    pub company: Option<String>,
    /// Import only the members of this synced group (object id); every user otherwise.
    #[arg(long)]
    pub group: Option<String>,
    /// Which worker pool takes the job.
    #[arg(long, default_value = "")]
    pub batch_group: String,
    /// Only you can see or cancel the job.
    #[arg(long)]
    pub private: bool,
    /// Taken before normal jobs; its failure raises an alert.
    #[arg(long)]
    pub critical: bool,
    /// A label carried into logs, metrics and events.
    #[arg(long, default_value = "")]
    pub monitoring_category: String,
    /// Follow the job with a progress bar until it ends.
    #[arg(long)]
    pub wait: bool,
    /// Show what the import would do, user by user, and write nothing (no job either).
    #[arg(long, conflicts_with = "wait")]
    pub dry_run: bool,
}

fn scope(group: Option<&str>) -> Option<directory_pb::Scope> {
    Some(directory_pb::Scope {
        scope: Some(match group {
            Some(id) => directory_pb::scope::Scope::GroupId(id.to_owned()),
            None => directory_pb::scope::Scope::All(directory_pb::AllUsers {}),
        }),
    })
}

/// The request `batch start` sends.
pub fn batch_request(args: &BatchStartArgs) -> importer_pb::StartBatchImportRequest {
    importer_pb::StartBatchImportRequest {
        company: args
            .company
            .clone()
            .unwrap_or_else(|| crate::profile::DEFAULT_COMPANY.to_owned()),
        scope: scope(args.group.as_deref()),
        options: Some(importer_pb::BatchOptions {
            batch_group: args.batch_group.clone(),
            private: args.private,
            critical: args.critical,
            monitoring_category: args.monitoring_category.clone(),
        }),
        dry_run: args.dry_run,
    }
}

/// Starts a batch import job.
pub async fn batch_start(
    endpoints: &Endpoints,
    args: &BatchStartArgs,
) -> anyhow::Result<importer_pb::Job> {
    let mut importer = endpoints.importer().await?;
    let request = batch_request(args);
    let response = importer
        .start_batch_import(endpoints.request(request))
        .await
        .map_err(failed("starting the batch import"))?;
    response
        .into_inner()
        .job
        .context("the import-worker answered without a job")
}

/// Runs a batch import in the request (D365's sandbox path) and returns the ended job and
/// the users not created.
pub async fn run_now(
    endpoints: &Endpoints,
    company: &str,
    group: Option<&str>,
) -> anyhow::Result<importer_pb::RunImportNowResponse> {
    let mut importer = endpoints.importer().await?;
    let request = importer_pb::RunImportNowRequest {
        company: company.to_owned(),
        scope: scope(group),
    };
    Ok(importer
        .run_import_now(endpoints.request(request))
        .await
        .map_err(failed("the import"))?
        .into_inner())
}

/// A job as listed.
#[derive(Debug, Serialize)]
pub struct JobRow {
    pub job_id: String,
    pub kind: String,
    pub status: String,
    pub company: String,
    pub created_by: String,
    pub planned: u64,
    pub created: u64,
    pub already_present: u64,
    pub skipped: u64,
    pub failed: u64,
    pub chunks: String,
    pub options: String,
}

impl Record for JobRow {
    const HEADERS: &'static [&'static str] = &[
        "JOB ID", "KIND", "STATUS", "COMPANY", "BY", "PLANNED", "CREATED", "PRESENT", "SKIPPED",
        "FAILED", "CHUNKS", "OPTIONS",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.job_id.clone(),
            self.kind.clone(),
            self.status.clone(),
            self.company.clone(),
            self.created_by.clone(),
            self.planned.to_string(),
            self.created.to_string(),
            self.already_present.to_string(),
            self.skipped.to_string(),
            self.failed.to_string(),
            self.chunks.clone(),
            self.options.clone(),
        ]
    }
}

pub fn status_name(status: importer_pb::JobStatus) -> &'static str {
    match status {
        importer_pb::JobStatus::Queued => "queued",
        importer_pb::JobStatus::Planning => "planning",
        importer_pb::JobStatus::Running => "running",
        importer_pb::JobStatus::Completed => "completed",
        importer_pb::JobStatus::Failed => "failed",
        importer_pb::JobStatus::Cancelled => "cancelled",
        importer_pb::JobStatus::Unspecified => "unknown",
    }
}

fn describe_options(options: &importer_pb::BatchOptions) -> String {
    let group = if options.batch_group.is_empty() {
        "default"
    } else {
        &options.batch_group
    };
    let mut parts = vec![format!("group={group}")];
    if options.private {
        parts.push("private".to_owned());
    }
    if options.critical {
        parts.push("critical".to_owned());
    }
    if !options.monitoring_category.is_empty() {
        parts.push(format!("category={}", options.monitoring_category));
    }
    parts.join(" ")
}

impl From<importer_pb::Job> for JobRow {
    fn from(job: importer_pb::Job) -> Self {
        let counts = job.counts.unwrap_or_default();
        let kind = match (&job.options, &job.scope) {
            (Some(_), _) => "batch",
            (None, Some(_)) => "run-now",
            (None, None) => "select",
        };
        let options = job
            .options
            .as_ref()
            .map(describe_options)
            .unwrap_or_default();
        let dead = if job.chunks_dead_lettered > 0 {
            format!(" ({} dead)", job.chunks_dead_lettered)
        } else {
            String::new()
        };
        let chunks = if job.chunks_planned > 0 || job.chunks_dead_lettered > 0 {
            format!("{}/{}{dead}", job.chunks_done, job.chunks_planned)
        } else {
            String::new()
        };
        Self {
            status: status_name(job.status()).to_owned(),
            kind: kind.to_owned(),
            job_id: job.job_id,
            company: job.company,
            created_by: job.created_by,
            planned: job.planned,
            created: counts.created,
            already_present: counts.already_present,
            skipped: counts.skipped,
            failed: counts.failed,
            chunks,
            options,
        }
    }
}

/// Jobs you may see, newest first.
pub async fn jobs_list(endpoints: &Endpoints, limit: usize) -> anyhow::Result<Vec<JobRow>> {
    let mut importer = endpoints.importer().await?;
    let mut rows = Vec::new();
    let mut token = String::new();
    while rows.len() < limit {
        let request = importer_pb::ListJobsRequest {
            page_size: u32::try_from((limit - rows.len()).min(1000)).unwrap_or(1000),
            page_token: token,
            status: 0,
        };
        let page = importer
            .list_jobs(endpoints.request(request))
            .await
            .map_err(failed("listing jobs"))?
            .into_inner();
        rows.extend(page.jobs.into_iter().map(JobRow::from));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    Ok(rows)
}

pub async fn job_show(endpoints: &Endpoints, job_id: &str) -> anyhow::Result<importer_pb::Job> {
    let mut importer = endpoints.importer().await?;
    let request = importer_pb::GetJobRequest {
        job_id: job_id.to_owned(),
    };
    let response = importer
        .get_job(endpoints.request(request))
        .await
        .map_err(failed("reading the job"))?;
    response
        .into_inner()
        .job
        .context("the import-worker answered without a job")
}

pub async fn job_cancel(endpoints: &Endpoints, job_id: &str) -> anyhow::Result<importer_pb::Job> {
    let mut importer = endpoints.importer().await?;
    let request = importer_pb::CancelJobRequest {
        job_id: job_id.to_owned(),
    };
    let response = importer
        .cancel_job(endpoints.request(request))
        .await
        .map_err(failed("cancelling the job"))?;
    response
        .into_inner()
        .job
        .context("the import-worker answered without a job")
}

/// Resumes a failed batch job; returns it with the chunks and users that run again.
pub async fn job_retry(
    endpoints: &Endpoints,
    job_id: &str,
) -> anyhow::Result<(importer_pb::Job, u64, u64)> {
    let mut importer = endpoints.importer().await?;
    let request = importer_pb::RetryJobRequest {
        job_id: job_id.to_owned(),
    };
    let response = importer
        .retry_job(endpoints.request(request))
        .await
        .map_err(failed("retrying the job"))?
        .into_inner();
    let job = response
        .job
        .context("the import-worker answered without a job")?;
    Ok((job, response.chunks, response.users))
}

/// A user of a job's report: who it is (as the directory names it now) and why it was not
/// created.
#[derive(Debug, Serialize)]
pub struct ReportRow {
    pub object_id: String,
    /// The user principal name, or a guest's mail, as the directory has it now.
    pub sign_in_name: String,
    pub display_name: String,
    pub outcome: String,
    pub user_id: String,
    pub reason: String,
}

impl Record for ReportRow {
    const HEADERS: &'static [&'static str] = &[
        "OBJECT ID",
        "SIGN-IN NAME",
        "NAME",
        "OUTCOME",
        "USER ID",
        "REASON",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.object_id.clone(),
            self.sign_in_name.clone(),
            self.display_name.clone(),
            self.outcome.clone(),
            self.user_id.clone(),
            self.reason.clone(),
        ]
    }
}

/// Every user of a job that was not created, with the reason, named as the directory names
/// them (a user the directory no longer has keeps its object id only).
pub async fn job_outcomes(endpoints: &Endpoints, job_id: &str) -> anyhow::Result<Vec<ReportRow>> {
    let mut importer = endpoints.importer().await?;
    let mut rows = Vec::new();
    let mut token = String::new();
    loop {
        let request = importer_pb::ListJobOutcomesRequest {
            job_id: job_id.to_owned(),
            page_size: 1000,
            page_token: token,
        };
        let page = importer
            .list_job_outcomes(endpoints.request(request))
            .await
            .map_err(failed("reading the report"))?
            .into_inner();
        rows.extend(page.outcomes.into_iter().map(OutcomeRow::from));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut names = std::collections::HashMap::new();
    if !rows.is_empty() {
        let mut directory = endpoints.directory().await?;
        for part in rows.chunks(1000) {
            let request = directory_pb::GetUsersRequest {
                object_ids: part.iter().map(|r| r.object_id.clone()).collect(),
                user_principal_names: Vec::new(),
            };
            // Names are a courtesy: a report without them is still the report.
            if let Ok(found) = directory.get_users(endpoints.request(request)).await {
                for user in found.into_inner().users {
                    let sign_in = if user.account_type() == directory_pb::AccountType::Guest
                        && !user.mail.is_empty()
                    {
                        user.mail.clone()
                    } else {
                        user.user_principal_name.clone()
                    };
                    names.insert(user.object_id.clone(), (sign_in, user.display_name));
                }
            }
        }
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let (sign_in_name, display_name) =
                names.get(&row.object_id).cloned().unwrap_or_default();
            ReportRow {
                object_id: row.object_id,
                sign_in_name,
                display_name,
                outcome: row.outcome,
                user_id: row.user_id,
                reason: row.reason,
            }
        })
        .collect())
}

/// When a job was created, started and finished, and how long it took.
pub fn describe_job_times(job: &importer_pb::Job) -> String {
    let at = |ms: i64| crate::admin::timestamp(ms);
    let mut line = format!("created {}", at(job.created_at_ms));
    if job.started_at_ms > 0 {
        line.push_str(&format!(", started {}", at(job.started_at_ms)));
    }
    if job.finished_at_ms > 0 {
        line.push_str(&format!(", finished {}", at(job.finished_at_ms)));
        if job.started_at_ms > 0 {
            let took = (job.finished_at_ms - job.started_at_ms).max(0) as f64 / 1000.0;
            line.push_str(&format!(" (took {took:.1} s)"));
        }
    }
    line
}

/// Follows a job until it ends, with a progress bar (rate and ETA) when `progress` is set;
/// returns the ended job.
pub async fn job_watch(
    endpoints: &Endpoints,
    job_id: &str,
    progress: bool,
) -> anyhow::Result<importer_pb::Job> {
    let mut importer = endpoints.importer().await?;
    let request = importer_pb::WatchJobRequest {
        job_id: job_id.to_owned(),
    };
    let mut stream = importer
        .watch_job(endpoints.request(request))
        .await
        .map_err(failed("watching the job"))?
        .into_inner();
    let bar = progress.then(|| {
        let bar = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} {msg:10} [{bar:40}] {pos}/{len} users · {per_sec} · ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    });
    let mut last = None;
    while let Some(update) = stream.message().await.map_err(failed("watching the job"))? {
        let job = update.job.context("a job update without the job")?;
        if let Some(bar) = &bar {
            let counts = job.counts.unwrap_or_default();
            bar.set_length(job.planned);
            bar.set_position(
                counts.created + counts.already_present + counts.skipped + counts.failed,
            );
            if job.notice.is_empty() {
                bar.set_message(status_name(job.status()));
            } else {
                bar.set_message(format!("{}: {}", status_name(job.status()), job.notice));
            }
        }
        last = Some(job);
    }
    if let Some(bar) = bar {
        bar.finish();
    }
    last.context("the job stream ended without news")
}

pub fn describe_job(job: &importer_pb::Job) -> String {
    let counts = job.counts.unwrap_or_default();
    let mut line = format!(
        "job {} {}: {} planned; {}",
        job.job_id,
        status_name(job.status()),
        job.planned,
        describe_counts(&counts)
    );
    if job.chunks_dead_lettered > 0 {
        line.push_str(&format!(
            "; {} chunk(s) dead-lettered",
            job.chunks_dead_lettered
        ));
    }
    if !job.error.is_empty() {
        line.push_str(&format!("; {}", job.error));
    }
    if !job.notice.is_empty() {
        line.push_str(&format!("; {}", job.notice));
    }
    line
}
