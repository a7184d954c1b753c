//! The gRPC edge: validates requests, converts messages, maps errors once.

use std::pin::Pin;

use futures::Stream;
use proto::importer::v1 as pb;
use service_runtime::grpc::{decode_page_token, encode_page_token, page_size};
use tonic::{Request, Response, Status};

use crate::clients::outcome_to_pb;
use crate::domain::{Counts, Job, JobKind, JobStatus};
use crate::error::Error;
use crate::service::{Importer, MAX_SELECTED, Selection};

const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page of a listing.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Implements `userimport.importer.v1.ImporterService`.
pub struct GrpcApi {
    importer: Importer,
}

impl GrpcApi {
    pub fn new(importer: Importer) -> Self {
        Self { importer }
    }
}

/// The calling principal. Authentication arrives later; until then every caller is anonymous.
fn principal<T>(_request: &Request<T>) -> String {
    "anonymous".to_owned()
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
            format!("{code:?} is not a company code (1 to 4 letters or digits)"),
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
    let scope = match job.kind {
        JobKind::Select => None,
        JobKind::Batch | JobKind::RunNow => Some(proto::directory::v1::Scope {
            scope: Some(proto::directory::v1::scope::Scope::All(
                proto::directory::v1::AllUsers {},
            )),
        }),
    };
    pb::Job {
        job_id: job.job_id,
        status: status_to_pb(job.status).into(),
        company: job.company,
        scope,
        options: None,
        created_by: job.created_by,
        planned: job.planned,
        counts: Some(counts_to_pb(job.counts)),
        chunks_planned: 0,
        chunks_done: 0,
        chunks_dead_lettered: 0,
        created_at_ms: job.created_at_ms,
        started_at_ms: job.started_at_ms,
        finished_at_ms: job.finished_at_ms,
        error: job.error,
    }
}

fn unimplemented<T>(what: &'static str) -> Result<Response<T>, Status> {
    Err(Error::Unimplemented(what).into())
}

type JobStream = Pin<Box<dyn Stream<Item = Result<pb::WatchJobResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::importer_service_server::ImporterService for GrpcApi {
    #[tracing::instrument(skip_all, fields(users = request.get_ref().object_ids.len(), company = %request.get_ref().company))]
    async fn import_selected(
        &self,
        request: Request<pb::ImportSelectedRequest>,
    ) -> Result<Response<pb::ImportSelectedResponse>, Status> {
        let created_by = principal(&request);
        let request = request.into_inner();
        if request.dry_run {
            return unimplemented("dry-run of a select import");
        }
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
        let request_id = match request.request_id.trim() {
            "" => uuid::Uuid::new_v4().to_string(),
            id if id.len() > 128 => {
                return Err(Error::invalid("request_id", "must be at most 128 characters").into());
            }
            id => id.to_owned(),
        };
        let selection = Selection {
            object_ids,
            company,
            request_id: request_id.clone(),
            created_by,
        };
        let (outcomes, counts) = self
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
        _: Request<pb::StartBatchImportRequest>,
    ) -> Result<Response<pb::StartBatchImportResponse>, Status> {
        unimplemented("StartBatchImport")
    }

    async fn run_import_now(
        &self,
        _: Request<pb::RunImportNowRequest>,
    ) -> Result<Response<pb::RunImportNowResponse>, Status> {
        unimplemented("RunImportNow")
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let job = self.importer.job(request.get_ref().job_id.trim()).await?;
        Ok(Response::new(pb::GetJobResponse {
            job: Some(job_to_pb(job)),
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let request = request.into_inner();
        let limit = page_size(
            "page_size",
            request.page_size,
            DEFAULT_PAGE_SIZE,
            MAX_PAGE_SIZE,
        )?;
        let before: Option<(i64, String)> = decode_page_token(&request.page_token)?;
        let status = match request.status() {
            pb::JobStatus::Unspecified => None,
            pb::JobStatus::Queued => Some(JobStatus::Queued),
            pb::JobStatus::Planning => Some(JobStatus::Planning),
            pb::JobStatus::Running => Some(JobStatus::Running),
            pb::JobStatus::Completed => Some(JobStatus::Completed),
            pb::JobStatus::Failed => Some(JobStatus::Failed),
            pb::JobStatus::Cancelled => Some(JobStatus::Cancelled),
        };
        let jobs = self.importer.jobs(status, before, limit).await?;
        let next_page_token = match jobs.last() {
            Some(last) if jobs.len() == limit as usize => {
                encode_page_token(&Some((last.created_at_ms, last.job_id.clone())))
            }
            _ => String::new(),
        };
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.into_iter().map(job_to_pb).collect(),
            next_page_token,
        }))
    }

    type WatchJobStream = JobStream;

    async fn watch_job(
        &self,
        _: Request<pb::WatchJobRequest>,
    ) -> Result<Response<JobStream>, Status> {
        unimplemented("WatchJob")
    }

    async fn cancel_job(
        &self,
        _: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        unimplemented("CancelJob")
    }

    async fn list_job_outcomes(
        &self,
        request: Request<pb::ListJobOutcomesRequest>,
    ) -> Result<Response<pb::ListJobOutcomesResponse>, Status> {
        let request = request.into_inner();
        let limit = page_size(
            "page_size",
            request.page_size,
            DEFAULT_PAGE_SIZE,
            MAX_PAGE_SIZE,
        )?;
        let after: String = decode_page_token(&request.page_token)?;
        let outcomes = self
            .importer
            .outcomes(request.job_id.trim(), &after, limit)
            .await?;
        let next_page_token = match outcomes.last() {
            Some(last) if outcomes.len() == limit as usize => encode_page_token(&last.object_id),
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
        unimplemented("ListRoleRules")
    }

    async fn add_role_rule(
        &self,
        _: Request<pb::AddRoleRuleRequest>,
    ) -> Result<Response<pb::AddRoleRuleResponse>, Status> {
        unimplemented("AddRoleRule")
    }

    async fn remove_role_rule(
        &self,
        _: Request<pb::RemoveRoleRuleRequest>,
    ) -> Result<Response<pb::RemoveRoleRuleResponse>, Status> {
        unimplemented("RemoveRoleRule")
    }
}
