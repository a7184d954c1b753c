//! Jobs: the list (newest first) and a job's page, whose progress bar and counts follow the
//! job as import-worker's `WatchJob` stream reports it (server-sent events), with cancel,
//! retry, and the users not created with their reasons (also as CSV).

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse as _, Redirect};
use futures::{Stream, StreamExt as _};
use maud::{Markup, html};
use proto::directory::v1 as dpb;
use proto::importer::v1 as ipb;

use super::import::outcome_text;
use super::{Query, framed, param};
use crate::AppState;
use crate::session::{Form, Person};
use crate::web::{PageError, PageResult, csrf, enc, when};

pub(crate) fn status_text(status: ipb::JobStatus) -> &'static str {
    match status {
        ipb::JobStatus::Queued => "queued",
        ipb::JobStatus::Planning => "planning",
        ipb::JobStatus::Running => "running",
        ipb::JobStatus::Completed => "completed",
        ipb::JobStatus::Failed => "failed",
        ipb::JobStatus::Cancelled => "cancelled",
        ipb::JobStatus::Unspecified => "unknown",
    }
}

fn ended(status: ipb::JobStatus) -> bool {
    matches!(
        status,
        ipb::JobStatus::Completed | ipb::JobStatus::Failed | ipb::JobStatus::Cancelled
    )
}

/// Users settled out of those planned, in percent (100 once completed).
fn percent(job: &ipb::Job) -> u64 {
    if job.status() == ipb::JobStatus::Completed {
        return 100;
    }
    let counts = job.counts.unwrap_or_default();
    let settled = counts.created + counts.already_present + counts.skipped + counts.failed;
    (settled * 100)
        .checked_div(job.planned)
        .unwrap_or(0)
        .min(100)
}

fn scope_text(job: &ipb::Job) -> String {
    match job.scope.as_ref().and_then(|s| s.scope.as_ref()) {
        Some(dpb::scope::Scope::GroupId(group)) => format!("group {group}"),
        _ => "everyone".to_owned(),
    }
}

fn options_text(job: &ipb::Job) -> String {
    let options = job.options.clone().unwrap_or_default();
    let mut parts = Vec::new();
    if !options.batch_group.is_empty() {
        parts.push(format!("group {}", options.batch_group));
    }
    if options.private {
        parts.push("private".to_owned());
    }
    if options.critical {
        parts.push("critical".to_owned());
    }
    if !options.monitoring_category.is_empty() {
        parts.push(format!("category {}", options.monitoring_category));
    }
    parts.join(", ")
}

pub(crate) async fn list(
    State(state): State<AppState>,
    person: Person,
    axum::extract::Query(query): Query,
) -> PageResult {
    let status = match param(&query, "status") {
        "running" => ipb::JobStatus::Running,
        "completed" => ipb::JobStatus::Completed,
        "failed" => ipb::JobStatus::Failed,
        "cancelled" => ipb::JobStatus::Cancelled,
        "queued" => ipb::JobStatus::Queued,
        "planning" => ipb::JobStatus::Planning,
        _ => ipb::JobStatus::Unspecified,
    };
    let token = param(&query, "page_token");
    let page = state
        .services
        .importer(&person)?
        .list_jobs(ipb::ListJobsRequest {
            page_size: 50,
            page_token: token.to_owned(),
            status: status.into(),
        })
        .await?
        .into_inner();
    let status_param = param(&query, "status");
    let body = html! {
        h1 { "Jobs" }
        form method="get" action="/jobs" class="filters" {
            div class="field" {
                label for="status" { "Status" }
                select id="status" name="status" data-autosubmit {
                    @for (value, label) in [("", "Any"), ("queued", "Queued"), ("planning", "Planning"), ("running", "Running"), ("completed", "Completed"), ("failed", "Failed"), ("cancelled", "Cancelled")] {
                        option value=(value) selected[value == status_param] { (label) }
                    }
                }
            }
            button type="submit" class="secondary" { "Show" }
        }
        table class="list" {
            caption { "Newest first" }
            thead { tr {
                th scope="col" { "Created" } th scope="col" { "Status" } th scope="col" { "Company" }
                th scope="col" { "Users" } th scope="col" { "Planned" } th scope="col" { "Created users" }
                th scope="col" { "Already present" } th scope="col" { "Skipped" } th scope="col" { "Failed" }
                th scope="col" { "By" } th scope="col" { "Options" }
            } }
            tbody {
                @for job in &page.jobs {
                    @let counts = job.counts.unwrap_or_default();
                    tr {
                        td { a href=(format!("/jobs/{}", enc(&job.job_id))) { (when(job.created_at_ms)) } }
                        td { (status_text(job.status())) }
                        td { (job.company) }
                        td { (scope_text(job)) }
                        td class="num" { (job.planned) }
                        td class="num" { (counts.created) }
                        td class="num" { (counts.already_present) }
                        td class="num" { (counts.skipped) }
                        td class="num" { (counts.failed) }
                        td { (job.created_by) }
                        td { (options_text(job)) }
                    }
                }
                @if page.jobs.is_empty() { tr { td colspan="11" { "No jobs." } } }
            }
        }
        nav class="pager" aria-label="Pages" {
            @if !token.is_empty() { a href=(format!("/jobs?status={}", enc(status_param))) { "First page" } }
            @if !page.next_page_token.is_empty() {
                a href=(format!("/jobs?status={}&page_token={}", enc(status_param), enc(&page.next_page_token))) { "Next page" }
            }
        }
    };
    Ok(framed(&state, &person, "Jobs", body).await?.into_response())
}

async fn job(state: &AppState, person: &Person, job_id: &str) -> Result<ipb::Job, PageError> {
    state
        .services
        .importer(person)?
        .get_job(ipb::GetJobRequest {
            job_id: job_id.to_owned(),
        })
        .await?
        .into_inner()
        .job
        .ok_or_else(|| PageError::NotFound(format!("no job {job_id}")))
}

/// The progress section; the script keeps it current from `/jobs/{id}/events`.
fn progress(job: &ipb::Job) -> Markup {
    let counts = job.counts.unwrap_or_default();
    let pct = percent(job);
    html! {
        section class="progress" aria-labelledby="progress-title"
            data-events=[(!ended(job.status())).then(|| format!("/jobs/{}/events", enc(&job.job_id)))] {
            h2 id="progress-title" { "Progress" }
            p { "Status: " strong id="job-status" { (status_text(job.status())) } }
            label for="job-progress" { "Users settled" }
            progress id="job-progress" max="100" value=(pct) { (pct) "%" }
            span id="job-percent" aria-live="polite" { (pct) "%" }
            dl class="counts" {
                dt { "Planned" } dd id="job-planned" { (job.planned) }
                dt { "Created" } dd id="job-created" { (counts.created) }
                dt { "Already present" } dd id="job-already-present" { (counts.already_present) }
                dt { "Skipped" } dd id="job-skipped" { (counts.skipped) }
                dt { "Failed" } dd id="job-failed" { (counts.failed) }
                dt { "Chunks done" } dd { span id="job-chunks-done" { (job.chunks_done) } " of " span id="job-chunks-planned" { (job.chunks_planned) } }
            }
            p id="job-error" class="error" role="alert" hidden[job.error.is_empty()] { (job.error) }
        }
    }
}

pub(crate) async fn page(
    State(state): State<AppState>,
    person: Person,
    Path(job_id): Path<String>,
    axum::extract::Query(query): Query,
) -> PageResult {
    let job = job(&state, &person, &job_id).await?;
    let token = param(&query, "page_token");
    let outcomes = state
        .services
        .importer(&person)?
        .list_job_outcomes(ipb::ListJobOutcomesRequest {
            job_id: job_id.clone(),
            page_size: 100,
            page_token: token.to_owned(),
        })
        .await?
        .into_inner();
    let status = job.status();
    let body = html! {
        h1 { "Job " (job.job_id) }
        dl class="facts" {
            dt { "Company" } dd { (job.company) }
            dt { "Users" } dd { (scope_text(&job)) }
            dt { "Options" } dd { (options_text(&job)) }
            dt { "Started by" } dd { (job.created_by) }
            dt { "Created" } dd { (when(job.created_at_ms)) }
            dt { "Finished" } dd { (when(job.finished_at_ms)) }
            @if !job.notice.is_empty() { dt { "Notice" } dd { (job.notice) } }
        }
        (progress(&job))
        @if person.can_write() {
            div class="actions" {
                @if !ended(status) {
                    form method="post" action=(format!("/jobs/{}/cancel", enc(&job.job_id))) {
                        (csrf(&person))
                        button type="submit" class="danger" { "Cancel job" }
                    }
                }
                @if status == ipb::JobStatus::Failed {
                    form method="post" action=(format!("/jobs/{}/retry", enc(&job.job_id))) {
                        (csrf(&person))
                        button type="submit" { "Retry the failed users" }
                    }
                }
            }
        }
        section aria-labelledby="outcomes-title" {
            h2 id="outcomes-title" { "Users not created" }
            p { a href=(format!("/jobs/{}/outcomes.csv", enc(&job.job_id))) download { "Download as CSV" } }
            table class="list" {
                thead { tr { th scope="col" { "Object id" } th scope="col" { "Outcome" } th scope="col" { "User id" } th scope="col" { "Reason" } } }
                tbody {
                    @for outcome in &outcomes.outcomes {
                        tr {
                            td { (outcome.object_id) }
                            td { (outcome_text(outcome.kind())) }
                            td { (outcome.user_id) }
                            td { (outcome.reason) @if !outcome.note.is_empty() { " " (outcome.note) } }
                        }
                    }
                    @if outcomes.outcomes.is_empty() { tr { td colspan="4" { "None so far." } } }
                }
            }
            nav class="pager" aria-label="Pages" {
                @if !outcomes.next_page_token.is_empty() {
                    a href=(format!("/jobs/{}?page_token={}", enc(&job.job_id), enc(&outcomes.next_page_token))) { "Next page" }
                }
            }
        }
    };
    Ok(framed(&state, &person, "Jobs", body).await?.into_response())
}

/// The job as the page's script reads it.
fn update(job: &ipb::Job) -> serde_json::Value {
    let counts = job.counts.unwrap_or_default();
    serde_json::json!({
        "status": status_text(job.status()),
        "ended": ended(job.status()),
        "percent": percent(job),
        "planned": job.planned,
        "created": counts.created,
        "already_present": counts.already_present,
        "skipped": counts.skipped,
        "failed": counts.failed,
        "chunks_done": job.chunks_done,
        "chunks_planned": job.chunks_planned,
        "error": job.error,
    })
}

/// Server-sent events: one `job` event per change `WatchJob` reports, until the job ends.
pub(crate) async fn events(
    State(state): State<AppState>,
    person: Person,
    Path(job_id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, PageError> {
    let stream = state
        .services
        .importer(&person)?
        .watch_job(ipb::WatchJobRequest { job_id })
        .await?
        .into_inner();
    let events = stream
        .take_while(|item| std::future::ready(item.is_ok()))
        .filter_map(|item| async move {
            let job = item.ok()?.job?;
            Some(Ok(Event::default()
                .event("job")
                .data(update(&job).to_string())))
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// `POST /jobs/{id}/cancel` and `/jobs/{id}/retry`, then back to the job's page.
pub(crate) async fn act(
    State(state): State<AppState>,
    Path((job_id, action)): Path<(String, String)>,
    form: Form,
) -> PageResult {
    form.person.require_writer()?;
    let mut importer = state.services.importer(&form.person)?;
    match action.as_str() {
        "cancel" => {
            importer
                .cancel_job(ipb::CancelJobRequest {
                    job_id: job_id.clone(),
                })
                .await?;
        }
        "retry" => {
            importer
                .retry_job(ipb::RetryJobRequest {
                    job_id: job_id.clone(),
                })
                .await?;
        }
        _ => {
            return Err(PageError::NotFound(format!(
                "no action {action:?} on a job"
            )));
        }
    }
    Ok(Redirect::to(&format!("/jobs/{}", enc(&job_id))).into_response())
}

/// Every outcome of the job as CSV, read page by page as the download goes.
pub(crate) async fn csv(
    State(state): State<AppState>,
    person: Person,
    Path(job_id): Path<String>,
) -> PageResult {
    // Answers 404 before the download starts when the job is not there (or not visible).
    job(&state, &person, &job_id).await?;
    let client = state.services.importer(&person)?;
    let header_row = "object_id,outcome,user_id,reason,note\n".to_owned();
    let pages = futures::stream::unfold(
        (client, job_id.clone(), Some(String::new())),
        |(mut client, job_id, token)| async move {
            let token = token?;
            let page = client
                .list_job_outcomes(ipb::ListJobOutcomesRequest {
                    job_id: job_id.clone(),
                    page_size: 1000,
                    page_token: token,
                })
                .await;
            let (chunk, next) = match page {
                Ok(page) => {
                    let page = page.into_inner();
                    let mut out = csv::Writer::from_writer(Vec::new());
                    for o in &page.outcomes {
                        let _ = out.write_record([
                            o.object_id.as_str(),
                            outcome_text(o.kind()),
                            o.user_id.as_str(),
                            o.reason.as_str(),
                            o.note.as_str(),
                        ]);
                    }
                    let bytes = out.into_inner().unwrap_or_default();
                    let next = (!page.next_page_token.is_empty()).then_some(page.next_page_token);
                    (Ok::<_, std::io::Error>(bytes), next)
                }
                Err(status) => (
                    Err(std::io::Error::other(status.message().to_owned())),
                    None,
                ),
            };
            Some((chunk, (client, job_id, next)))
        },
    );
    let body = futures::stream::once(async move { Ok(header_row.into_bytes()) }).chain(pages);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"job-{}-outcomes.csv\"",
                    job_id.replace('"', "")
                ),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
