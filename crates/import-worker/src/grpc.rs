//! The gRPC edge: validates requests, converts messages, maps errors once.

use std::pin::Pin;

use futures::Stream;
use proto::directory::v1 as directory_pb;
use proto::importer::v1 as pb;
use proto::registry::v1 as registry_pb;
use service_runtime::auth::{ADMIN, AccessRules, DIRECTORY_SYNC, READ, WRITE};
use service_runtime::grpc::{decode_page_token, encode_page_token, page_size};
use tonic::{Request, Response, Status};

use crate::clients::outcome_to_pb;
use crate::domain::{BatchOptions, Counts, Job, JobKind, JobStatus, RoleRule, RuleChanges};
use crate::error::Error;
use crate::service::{Importer, MAX_SELECTED, Selection};

/// Who may call each RPC. Private jobs are further limited to their creator by the handlers.
pub const ACCESS: AccessRules = &[
    // directory-sync imports new users when provisioning.auto_import is on.
    (
        "/userimport.importer.v1.ImporterService/ImportSelected",
        &[ADMIN, DIRECTORY_SYNC],
    ),
    (
        "/userimport.importer.v1.ImporterService/StartBatchImport",
        WRITE,
    ),
    (
        "/userimport.importer.v1.ImporterService/RunImportNow",
        WRITE,
    ),
    ("/userimport.importer.v1.ImporterService/GetJob", READ),
    ("/userimport.importer.v1.ImporterService/ListJobs", READ),
    ("/userimport.importer.v1.ImporterService/WatchJob", READ),
    ("/userimport.importer.v1.ImporterService/CancelJob", WRITE),
    ("/userimport.importer.v1.ImporterService/RetryJob", WRITE),
    (
        "/userimport.importer.v1.ImporterService/ListJobOutcomes",
        READ,
    ),
    (
        "/userimport.importer.v1.ImporterService/ListRoleRules",
        READ,
    ),
    ("/userimport.importer.v1.ImporterService/AddRoleRule", WRITE),
    (
        "/userimport.importer.v1.ImporterService/RemoveRoleRule",
        WRITE,
    ),
    // directory-sync reconciles the rules after each sync round.
    (
        "/userimport.importer.v1.ImporterService/ReconcileRoleRules",
        &[ADMIN, DIRECTORY_SYNC],
    ),
];

const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page of a listing.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Implements `userimport.importer.v1.ImporterService`.
#[derive(Clone)]
pub struct GrpcApi {
    importer: Importer,
}

impl GrpcApi {
    pub fn new(importer: Importer) -> Self {
        Self { importer }
    }
}

fn principal<T>(request: &Request<T>) -> String {
    service_runtime::grpc::principal(request)
}

fn parse_object_id(index: usize, raw: &str) -> Result<String, Error> {
    service_runtime::normalize_guid(raw).ok_or_else(|| {
        Error::invalid(
            "object_ids",
            format!(
                "object_ids[{index}] {:?} is not an object id (a GUID)",
                raw.trim()
            ),
        )
    })
}

fn parse_company(raw: &str) -> Result<String, Error> {
    let code = raw.trim();
    if code.is_empty() || code.len() > 4 || !code.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Error::invalid(
            "company",
            format!(
                "{} is not a company code (1 to 4 letters or digits)",
                service_runtime::error::quote(code)
            ),
        ));
    }
    Ok(code.to_ascii_uppercase())
}

fn counts_to_pb(counts: Counts) -> pb::OutcomeCounts {
    pb::OutcomeCounts {
        created: counts.created,
        already_present: counts.already_present,
        skipped: counts.skipped,
        failed: counts.failed,
    }
}

fn status_to_pb(status: JobStatus) -> pb::JobStatus {
    match status {
        JobStatus::Queued => pb::JobStatus::Queued,
        JobStatus::Planning => pb::JobStatus::Planning,
        JobStatus::Running => pb::JobStatus::Running,
        JobStatus::Completed => pb::JobStatus::Completed,
        JobStatus::Failed => pb::JobStatus::Failed,
        JobStatus::Cancelled => pb::JobStatus::Cancelled,
    }
}

fn job_to_pb(job: Job) -> pb::Job {
    let scope = match (job.kind, job.scope_group) {
        (JobKind::Select, _) => None,
        (_, Some(group)) => Some(directory_pb::Scope {
            scope: Some(directory_pb::scope::Scope::GroupId(group)),
        }),
        (_, None) => Some(directory_pb::Scope {
            scope: Some(directory_pb::scope::Scope::All(directory_pb::AllUsers {})),
        }),
    };
    let options = (job.kind == JobKind::Batch).then(|| pb::BatchOptions {
        batch_group: job.options.batch_group.clone(),
        private: job.options.private,
        critical: job.options.critical,
        monitoring_category: job.options.monitoring_category.clone(),
    });
    pb::Job {
        job_id: job.job_id,
        status: status_to_pb(job.status).into(),
        company: job.company,
        scope,
        options,
        created_by: job.created_by,
        planned: job.planned,
        counts: Some(counts_to_pb(job.counts)),
        chunks_planned: job.chunks_planned,
        chunks_done: job.chunks_done,
        chunks_dead_lettered: job.chunks_dead_lettered,
        created_at_ms: job.created_at_ms,
        started_at_ms: job.started_at_ms,
        finished_at_ms: job.finished_at_ms,
        error: job.error,
        notice: String::new(),
    }
}

/// The group of a scope, validated; `None` for every user. The scope is required: the whole
/// tenant is only ever imported when `all` says so.
fn scope_group(scope: Option<directory_pb::Scope>) -> Result<Option<String>, Error> {
    match scope.and_then(|s| s.scope) {
        None => Err(Error::invalid(
            "scope",
            "required: `all` for every user, or `group_id`",
        )),
        Some(directory_pb::scope::Scope::All(_)) => Ok(None),
        Some(directory_pb::scope::Scope::GroupId(id)) => service_runtime::normalize_guid(&id)
            .map(Some)
            .ok_or_else(|| {
                Error::invalid(
                    "scope.group_id",
                    format!(
                        "{} is not a group object id",
                        service_runtime::error::quote(id.trim())
                    ),
                )
            }),
    }
}

/// The batch options, validated: labels are short and printable.
fn batch_options(options: Option<pb::BatchOptions>) -> Result<BatchOptions, Error> {
    let options = options.unwrap_or_default();
    let label = |field: &'static str, value: String| -> Result<String, Error> {
        let value = value.trim().to_owned();
        if value.len() > 64 || value.chars().any(|c| c.is_control()) {
            return Err(Error::invalid(field, "at most 64 printable characters"));
        }
        Ok(value)
    };
    let batch_group = label("options.batch_group", options.batch_group)?;
    if !batch_group.is_empty() {
        crate::queue::validate_batch_group(&batch_group).map_err(|_| {
            Error::invalid(
                "options.batch_group",
                "1 to 64 of the letters A-Z and a-z, digits, '.', '_' and '-'",
            )
        })?;
    }
    Ok(BatchOptions {
        batch_group,
        private: options.private,
        critical: options.critical,
        monitoring_category: label("options.monitoring_category", options.monitoring_category)?,
    })
}

/// How often WatchJob looks at the job.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

type JobStream = Pin<Box<dyn Stream<Item = Result<pb::WatchJobResponse, Status>> + Send>>;

impl GrpcApi {
    /// The job as the API shows it, with why it waits when it does.
    async fn with_notice(&self, job: Job) -> pb::Job {
        let notice = self.importer.notice(&job).await;
        pb::Job {
            notice,
            ..job_to_pb(job)
        }
    }
}

#[tonic::async_trait]
impl pb::importer_service_server::ImporterService for GrpcApi {
    #[tracing::instrument(skip_all, fields(users = request.get_ref().object_ids.len(), company = %request.get_ref().company))]
    async fn import_selected(
        &self,
        request: Request<pb::ImportSelectedRequest>,
    ) -> Result<Response<pb::ImportSelectedResponse>, Status> {
        let created_by = principal(&request);
        let request = request.into_inner();
        if request.object_ids.is_empty() {
            return Err(Error::invalid("object_ids", "select at least one user").into());
        }
        if request.object_ids.len() > MAX_SELECTED {
            return Err(Error::invalid(
                "object_ids",
                format!(
                    "{} users selected; the limit is {MAX_SELECTED} per call",
                    request.object_ids.len()
                ),
            )
            .into());
        }
        let object_ids = request
            .object_ids
            .iter()
            .enumerate()
            .map(|(i, id)| parse_object_id(i, id))
            .collect::<Result<Vec<_>, _>>()?;
        let company = parse_company(&request.company)?;
        let (request_id, key_given) = match request.request_id.trim() {
            "" => (uuid::Uuid::new_v4().to_string(), false),
            id if id.len() > 128 => {
                return Err(Error::invalid("request_id", "must be at most 128 characters").into());
            }
            id => (id.to_owned(), true),
        };
        let selection = Selection {
            object_ids,
            company,
            request_id,
            key_given,
            created_by,
            dry_run: request.dry_run,
            all_or_nothing: request.all_or_nothing,
        };
        let (request_id, outcomes, counts) = self
            .importer
            .import_selected(selection, service_runtime::now_ms())
            .await?;
        tracing::info!(
            request_id = %request_id,
            created = counts.created,
            already_present = counts.already_present,
            skipped = counts.skipped,
            failed = counts.failed,
            "select import finished"
        );
        Ok(Response::new(pb::ImportSelectedResponse {
            outcomes: outcomes.into_iter().map(outcome_to_pb).collect(),
            counts: Some(counts_to_pb(counts)),
            request_id,
        }))
    }

    async fn start_batch_import(
        &self,
        request: Request<pb::StartBatchImportRequest>,
    ) -> Result<Response<pb::StartBatchImportResponse>, Status> {
        let created_by = principal(&request);
        let request = request.into_inner();
        let company = parse_company(&request.company)?;
        let scope = scope_group(request.scope)?;
        let options = batch_options(request.options)?;
        if request.dry_run {
            let preview = self
                .importer
                .preview_batch(&created_by, &company, scope.as_deref())
                .await?;
            return Ok(Response::new(pb::StartBatchImportResponse {
                job: None,
                preview: Some(pb::BatchPreview {
                    counts: Some(counts_to_pb(preview.counts)),
                    outcomes: preview.outcomes.into_iter().map(outcome_to_pb).collect(),
                    truncated: preview.truncated,
                }),
            }));
        }
        let job = self
            .importer
            .start_batch(
                created_by,
                company,
                scope,
                options,
                service_runtime::now_ms(),
            )
            .await?;
        let job = self.with_notice(job).await;
        if !job.notice.is_empty() {
            tracing::warn!(job_id = %job.job_id, notice = %job.notice, "batch job started for a batch group no worker serves");
            metrics::counter!("import_jobs_started_without_worker_total").increment(1);
        }
        Ok(Response::new(pb::StartBatchImportResponse {
            job: Some(job),
            preview: None,
        }))
    }

    async fn run_import_now(
        &self,
        request: Request<pb::RunImportNowRequest>,
    ) -> Result<Response<pb::RunImportNowResponse>, Status> {
        let created_by = principal(&request);
        let request = request.into_inner();
        let company = parse_company(&request.company)?;
        let scope = scope_group(request.scope)?;
        let (job, not_created) = self
            .importer
            .run_now(created_by, company, scope, service_runtime::now_ms)
            .await?;
        Ok(Response::new(pb::RunImportNowResponse {
            job: Some(job_to_pb(job)),
            not_created: not_created.into_iter().map(outcome_to_pb).collect(),
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let principal = principal(&request);
        let job = self
            .importer
            .job_for(&principal, request.get_ref().job_id.trim())
            .await?;
        Ok(Response::new(pb::GetJobResponse {
            job: Some(self.with_notice(job).await),
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let principal = principal(&request);
        let request = request.into_inner();
        // What the page token is bound to: every filter of the request.
        let query = pb::ListJobsRequest {
            page_token: String::new(),
            page_size: 0,
            ..request.clone()
        };
        let limit = page_size(
            "page_size",
            request.page_size,
            DEFAULT_PAGE_SIZE,
            MAX_PAGE_SIZE,
        )?;
        let before: Option<(i64, String)> = decode_page_token(&query, &request.page_token)?;
        let status = match request.status() {
            pb::JobStatus::Unspecified => None,
            pb::JobStatus::Queued => Some(JobStatus::Queued),
            pb::JobStatus::Planning => Some(JobStatus::Planning),
            pb::JobStatus::Running => Some(JobStatus::Running),
            pb::JobStatus::Completed => Some(JobStatus::Completed),
            pb::JobStatus::Failed => Some(JobStatus::Failed),
            pb::JobStatus::Cancelled => Some(JobStatus::Cancelled),
        };
        let jobs = self
            .importer
            .jobs(&principal, status, before, limit)
            .await?;
        let next_page_token = match jobs.last() {
            Some(last) if jobs.len() == limit as usize => {
                encode_page_token(&query, &Some((last.created_at_ms, last.job_id.clone())))
            }
            _ => String::new(),
        };
        let mut listed = Vec::with_capacity(jobs.len());
        for job in jobs {
            listed.push(self.with_notice(job).await);
        }
        Ok(Response::new(pb::ListJobsResponse {
            jobs: listed,
            next_page_token,
        }))
    }

    type WatchJobStream = JobStream;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<JobStream>, Status> {
        let principal = principal(&request);
        let job_id = request.into_inner().job_id.trim().to_owned();
        // Fails at once for an unknown or invisible job.
        let first = self.importer.job_for(&principal, &job_id).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let importer = self.importer.clone();
        let api = self.clone();
        tokio::spawn(async move {
            let mut last = api.with_notice(first).await;
            loop {
                let ended = matches!(
                    last.status(),
                    pb::JobStatus::Completed | pb::JobStatus::Failed | pb::JobStatus::Cancelled
                );
                if tx
                    .send(Ok(pb::WatchJobResponse {
                        job: Some(last.clone()),
                    }))
                    .await
                    .is_err()
                    || ended
                {
                    return;
                }
                loop {
                    tokio::time::sleep(WATCH_INTERVAL).await;
                    match importer.job_for(&principal, &job_id).await {
                        Ok(job) => {
                            let job = api.with_notice(job).await;
                            if job != last {
                                last = job;
                                break;
                            }
                        }
                        Err(error) => {
                            let _ = tx.send(Err(Status::from(error))).await;
                            return;
                        }
                    }
                    if tx.is_closed() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let principal = principal(&request);
        let job = self
            .importer
            .cancel(
                &principal,
                request.get_ref().job_id.trim(),
                service_runtime::now_ms(),
            )
            .await?;
        Ok(Response::new(pb::CancelJobResponse {
            job: Some(job_to_pb(job)),
        }))
    }

    async fn retry_job(
        &self,
        request: Request<pb::RetryJobRequest>,
    ) -> Result<Response<pb::RetryJobResponse>, Status> {
        let principal = principal(&request);
        let (job, reopened) = self
            .importer
            .retry(&principal, request.get_ref().job_id.trim())
            .await?;
        Ok(Response::new(pb::RetryJobResponse {
            job: Some(job_to_pb(job)),
            chunks: reopened.chunks,
            users: reopened.users,
        }))
    }

    async fn list_job_outcomes(
        &self,
        request: Request<pb::ListJobOutcomesRequest>,
    ) -> Result<Response<pb::ListJobOutcomesResponse>, Status> {
        let principal = principal(&request);
        let request = request.into_inner();
        // What the page token is bound to: every filter of the request.
        let query = pb::ListJobOutcomesRequest {
            page_token: String::new(),
            page_size: 0,
            ..request.clone()
        };
        let limit = page_size(
            "page_size",
            request.page_size,
            DEFAULT_PAGE_SIZE,
            MAX_PAGE_SIZE,
        )?;
        let after: String = decode_page_token(&query, &request.page_token)?;
        let outcomes = self
            .importer
            .outcomes(&principal, request.job_id.trim(), &after, limit)
            .await?;
        let next_page_token = match outcomes.last() {
            Some(last) if outcomes.len() == limit as usize => {
                encode_page_token(&query, &last.object_id)
            }
            _ => String::new(),
        };
        Ok(Response::new(pb::ListJobOutcomesResponse {
            outcomes: outcomes.into_iter().map(outcome_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn list_role_rules(
        &self,
        _: Request<pb::ListRoleRulesRequest>,
    ) -> Result<Response<pb::ListRoleRulesResponse>, Status> {
        let rules = self.importer.role_rules().await?;
        Ok(Response::new(pb::ListRoleRulesResponse {
            rules: rules.into_iter().map(rule_to_pb).collect(),
        }))
    }

    async fn add_role_rule(
        &self,
        request: Request<pb::AddRoleRuleRequest>,
    ) -> Result<Response<pb::AddRoleRuleResponse>, Status> {
        let actor = principal(&request);
        let request = request.into_inner();
        let wanted = request
            .rule
            .ok_or_else(|| Error::invalid("rule", "is required"))?;
        let group_id = service_runtime::normalize_guid(&wanted.group_id).ok_or_else(|| {
            Error::invalid(
                "rule.group_id",
                format!(
                    "{:?} is not a group object id (a GUID)",
                    truncate(&wanted.group_id)
                ),
            )
        })?;
        let role_id = wanted.role_id.trim().to_ascii_uppercase();
        if role_id.is_empty() || role_id.len() > 64 {
            return Err(Error::invalid("rule.role_id", "must be 1 to 64 characters").into());
        }
        let company = match wanted.company.trim() {
            "" => String::new(),
            code => parse_company(code)?,
        };
        let rule = RoleRule {
            rule_id: new_rule_id(),
            group_id,
            role_id,
            company,
            created_by: actor.clone(),
            created_at_ms: service_runtime::now_ms(),
            removing: false,
        };
        let (rule, changes) = self
            .importer
            .add_role_rule(&actor, rule, request.dry_run)
            .await?;
        Ok(Response::new(pb::AddRoleRuleResponse {
            rule: Some(rule_to_pb(rule)),
            changes: Some(rule_changes_to_pb(changes)),
        }))
    }

    async fn remove_role_rule(
        &self,
        request: Request<pb::RemoveRoleRuleRequest>,
    ) -> Result<Response<pb::RemoveRoleRuleResponse>, Status> {
        let actor = principal(&request);
        let request = request.into_inner();
        let rule_id = request.rule_id.trim();
        if rule_id.is_empty() || rule_id.len() > 64 {
            return Err(Error::invalid("rule_id", "must be 1 to 64 characters").into());
        }
        let changes = self
            .importer
            .remove_role_rule(&actor, rule_id, request.dry_run)
            .await?;
        Ok(Response::new(pb::RemoveRoleRuleResponse {
            changes: Some(rule_changes_to_pb(changes)),
        }))
    }

    async fn reconcile_role_rules(
        &self,
        request: Request<pb::ReconcileRoleRulesRequest>,
    ) -> Result<Response<pb::ReconcileRoleRulesResponse>, Status> {
        let actor = principal(&request);
        let request = request.into_inner();
        let via = request.via.trim();
        if via.len() > 128 {
            return Err(Error::invalid("via", "must be at most 128 characters").into());
        }
        let via = if via.is_empty() {
            format!("request:{}", uuid::Uuid::new_v4())
        } else {
            via.to_owned()
        };
        let changes = self
            .importer
            .reconcile_rules(&actor, &via, request.dry_run)
            .await?;
        Ok(Response::new(pb::ReconcileRoleRulesResponse {
            changes: Some(rule_changes_to_pb(changes)),
        }))
    }
}

/// A new rule id: short enough to read and type, random enough never to repeat.
fn new_rule_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("r-{}", &id[..12])
}

fn truncate(raw: &str) -> String {
    raw.chars().take(64).collect()
}

fn rule_to_pb(rule: RoleRule) -> pb::RoleRule {
    pb::RoleRule {
        rule_id: rule.rule_id,
        group_id: rule.group_id,
        role_id: rule.role_id,
        company: rule.company,
    }
}

fn rule_changes_to_pb(changes: RuleChanges) -> registry_pb::RuleChanges {
    registry_pb::RuleChanges {
        granted: changes.granted,
        revoked: changes.revoked,
        changes: changes
            .listed
            .into_iter()
            .map(|c| registry_pb::RuleChange {
                rule_id: c.rule_id,
                role_id: c.role_id,
                company: c.company,
                object_id: c.object_id,
                user_id: c.user_id,
                granted: c.granted,
            })
            .collect(),
        truncated: changes.truncated,
    }
}
