//! Sync: the mirror's state and its rounds; run a round (full or delta, or a dry run); the
//! preview of a halted or dry-run round, approved or rejected here.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::{IntoResponse as _, Redirect};
use maud::{Markup, html};
use proto::directory::v1 as dpb;

use super::framed;
use crate::AppState;
use crate::session::{Form, Person};
use crate::web::{PageError, PageResult, csrf, enc, when};

fn status_text(status: dpb::SyncRunStatus) -> &'static str {
    match status {
        dpb::SyncRunStatus::Running => "running",
        dpb::SyncRunStatus::Succeeded => "succeeded",
        dpb::SyncRunStatus::Failed => "failed",
        dpb::SyncRunStatus::AwaitingApproval => "awaiting approval",
        dpb::SyncRunStatus::Rejected => "rejected",
        dpb::SyncRunStatus::Unspecified => "unknown",
    }
}

fn mode_text(mode: dpb::SyncMode) -> &'static str {
    match mode {
        dpb::SyncMode::Full => "full",
        dpb::SyncMode::Delta => "delta",
        dpb::SyncMode::Scim => "scim",
        dpb::SyncMode::Unspecified => "",
    }
}

fn runs_table(runs: &[dpb::SyncRun]) -> Markup {
    html! {
        table class="list" id="runs" {
            thead { tr {
                th scope="col" { "Started" } th scope="col" { "Mode" } th scope="col" { "Status" }
                th scope="col" { "Seen" } th scope="col" { "New" } th scope="col" { "Updated" }
                th scope="col" { "Removed" } th scope="col" { "Rejected" } th scope="col" { "Seconds" }
                th scope="col" { "Error" }
            } }
            tbody {
                @for run in runs {
                    tr data-status=(status_text(run.status())) {
                        td { a href=(format!("/sync/runs/{}", enc(&run.run_id))) { (when(run.started_at_ms)) } }
                        td { (mode_text(run.mode())) }
                        td { (status_text(run.status())) }
                        td class="num" { (run.users_seen) }
                        td class="num" { (run.users_created) }
                        td class="num" { (run.users_updated) }
                        td class="num" { (run.users_removed) }
                        td class="num" { (run.users_rejected) }
                        td class="num" { (format!("{:.1}", run.duration_ms as f64 / 1000.0)) }
                        td { (run.error) }
                    }
                }
                @if runs.is_empty() { tr { td colspan="10" { "No rounds yet." } } }
            }
        }
    }
}

pub(crate) async fn page(State(state): State<AppState>, person: Person) -> PageResult {
    let mut directory = state.services.directory(&person)?;
    let status = directory
        .get_sync_status(dpb::GetSyncStatusRequest {})
        .await?
        .into_inner();
    let runs = directory
        .list_sync_runs(dpb::ListSyncRunsRequest {
            page_size: 20,
            page_token: String::new(),
        })
        .await?
        .into_inner()
        .runs;
    let body = html! {
        h1 { "Sync" }
        dl class="facts" {
            dt { "Tenant" } dd { (status.tenant_id) }
            dt { "Users in the mirror" } dd id="mirrored-users" { (status.mirrored_users) }
            dt { "Last round" } dd {
                @if let Some(run) = &status.last_run {
                    (mode_text(run.mode())) ", " (status_text(run.status())) ", " (when(run.started_at_ms))
                } @else { "none" }
            }
            dt { "Next scheduled round" } dd { @if status.next_run_at_ms > 0 { (when(status.next_run_at_ms)) } @else { "none scheduled" } }
        }
        @if person.can_write() {
            form method="post" action="/sync/run" class="inline" {
                (csrf(&person))
                label for="mode" { "Round" }
                select id="mode" name="mode" {
                    option value="delta" { "Delta (changes since the last round)" }
                    option value="full" { "Full (read every user)" }
                }
                div class="field check" {
                    input type="checkbox" id="sync-dry-run" name="dry_run" value="1";
                    label for="sync-dry-run" { "Dry run: preview, change nothing" }
                }
                button type="submit" id="run-round" { "Run round" }
            }
        }
        h2 { "Rounds" }
        (runs_table(&runs))
    };
    Ok(framed(&state, &person, "Sync", body).await?.into_response())
}

pub(crate) async fn run(State(state): State<AppState>, form: Form) -> PageResult {
    form.person.require_writer()?;
    let mode = match form.text("mode").as_str() {
        "full" => dpb::SyncMode::Full,
        _ => dpb::SyncMode::Delta,
    };
    let started = state
        .services
        .directory(&form.person)?
        .sync_now(dpb::SyncNowRequest {
            mode: mode.into(),
            dry_run: form.flag("dry_run"),
        })
        .await?
        .into_inner();
    let run = started
        .run
        .ok_or_else(|| PageError::Internal(anyhow::anyhow!("no run in the answer")))?;
    Ok(Redirect::to(&format!("/sync/runs/{}", enc(&run.run_id))).into_response())
}

/// A round and its preview: the first report of its watch stream (a round still running
/// shows where it is; reload for more).
pub(crate) async fn run_page(
    State(state): State<AppState>,
    person: Person,
    Path(run_id): Path<String>,
) -> PageResult {
    let mut stream = state
        .services
        .directory(&person)?
        .watch_sync_run(dpb::WatchSyncRunRequest {
            run_id: run_id.clone(),
        })
        .await?
        .into_inner();
    let update = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .map_err(|_| {
            PageError::Status(tonic::Status::unavailable(
                "directory-sync did not report on the round in time",
            ))
        })??
        .ok_or_else(|| PageError::NotFound(format!("no round {run_id}")))?;
    let run = update.run.clone().unwrap_or_default();
    let awaiting = run.status() == dpb::SyncRunStatus::AwaitingApproval;
    let base = format!("/sync/runs/{}", enc(&run.run_id));
    let body = html! {
        h1 { "Round " (run.run_id) }
        dl class="facts" {
            dt { "Mode" } dd { (mode_text(run.mode())) }
            dt { "Status" } dd id="run-status" { (status_text(run.status())) }
            @if !update.phase.is_empty() { dt { "Phase" } dd { (update.phase) } }
            dt { "Started" } dd { (when(run.started_at_ms)) }
            dt { "Finished" } dd { (when(run.finished_at_ms)) }
            dt { "Users seen" } dd { (run.users_seen) }
            @if !run.error.is_empty() {
                @if awaiting {
                    dt { "Why it waits" } dd id="run-reason" { (run.error) }
                } @else if run.status() == dpb::SyncRunStatus::Failed {
                    dt { "Error" } dd class="error" id="run-reason" { (run.error) }
                } @else {
                    dt { "Note" } dd id="run-reason" { (run.error) }
                }
            }
            @if run.fell_back_from_delta { dt { "Fell back to a full read" } dd { (run.fallback_reason) } }
        }
        @if run.status() == dpb::SyncRunStatus::Running {
            p { a href=(base) { "Refresh" } }
        }
        @if let Some(preview) = &update.preview { (preview_section(preview)) }
        @if awaiting && person.can_write() {
            div class="actions" {
                form method="post" action=(format!("{base}/approve")) {
                    (csrf(&person))
                    button type="submit" id="approve-round" { "Approve and apply" }
                }
                form method="post" action=(format!("{base}/reject")) class="inline" {
                    (csrf(&person))
                    label for="reject-reason" { "Reason" }
                    input type="text" id="reject-reason" name="reason" maxlength="200";
                    button type="submit" class="danger" id="reject-round" { "Reject" }
                }
            }
        }
        p { a href="/sync" { "All rounds" } }
    };
    Ok(framed(&state, &person, "Sync", body).await?.into_response())
}

fn preview_section(preview: &dpb::SyncPreview) -> Markup {
    let rules = preview.rules.clone().unwrap_or_default();
    html! {
        section aria-labelledby="preview-title" id="preview" {
            h2 id="preview-title" { "What this round changes" }
            dl class="counts" {
                dt { "Users updated" } dd { (preview.would_update) }
                dt { "Users disabled" } dd id="would-disable" { (preview.would_disable) }
                dt { "Users imported" } dd { (preview.would_import) }
                dt { "Roles granted by rules" } dd { (rules.granted) }
                dt { "Roles revoked by rules" } dd { (rules.revoked) }
            }
            @if preview.truncated { p class="notice" { "Only the first changes are listed." } }
            @if !preview.updates.is_empty() {
                table class="list" {
                    caption { "Updates" }
                    thead { tr { th scope="col" { "Object id" } th scope="col" { "User id" } th scope="col" { "Changed" } th scope="col" { "Enabled after" } th scope="col" { "Reason" } } }
                    tbody {
                        @for u in preview.updates.iter().take(200) {
                            tr { td { (u.object_id) } td { (u.user_id) } td { (u.changed.join(", ")) } td { (if u.enabled { "Yes" } else { "No" }) } td { (u.reason) } }
                        }
                    }
                }
            }
            @if !preview.imports.is_empty() {
                table class="list" {
                    caption { "Imports" }
                    thead { tr { th scope="col" { "Object id" } th scope="col" { "Outcome" } th scope="col" { "User id" } th scope="col" { "Reason" } } }
                    tbody {
                        @for o in preview.imports.iter().take(200) {
                            tr { td { (o.object_id) } td { (super::import::outcome_text(o.kind())) } td { (o.user_id) } td { (o.reason) } }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) async fn approve(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
    form: Form,
) -> PageResult {
    form.person.require_writer()?;
    state
        .services
        .directory(&form.person)?
        .approve_sync_run(dpb::ApproveSyncRunRequest {
            run_id: run_id.clone(),
        })
        .await?;
    Ok(Redirect::to(&format!("/sync/runs/{}", enc(&run_id))).into_response())
}

pub(crate) async fn reject(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
    form: Form,
) -> PageResult {
    form.person.require_writer()?;
    state
        .services
        .directory(&form.person)?
        .reject_sync_run(dpb::RejectSyncRunRequest {
            run_id: run_id.clone(),
            reason: form.text("reason"),
        })
        .await?;
    Ok(Redirect::to(&format!("/sync/runs/{}", enc(&run_id))).into_response())
}
