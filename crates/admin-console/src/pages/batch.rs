//! Batch import: D365's dialog with its options. Starting it opens the job's page.

use axum::extract::State;
use axum::response::{IntoResponse as _, Redirect};
use maud::html;
use proto::directory::v1 as dpb;
use proto::importer::v1 as ipb;

use super::framed;
use crate::AppState;
use crate::session::{Form, Person};
use crate::web::{PageError, PageResult, csrf, enc};

pub(crate) async fn page(State(state): State<AppState>, person: Person) -> PageResult {
    let groups = state
        .services
        .directory(&person)?
        .list_groups(dpb::ListGroupsRequest {
            search: String::new(),
            page_size: 200,
            page_token: String::new(),
        })
        .await?
        .into_inner()
        .groups;
    let body = html! {
        h1 { "Batch import" }
        p { "Imports every user in scope who is not yet a user here, into company " strong { (person.company) } "." }
        @if !person.can_write() {
            p class="notice" { "You may read but not start imports." }
        } @else {
            form method="post" action="/batch" class="dialog" {
                (csrf(&person))
                input type="hidden" name="company" value=(person.company);
                fieldset {
                    legend { "Users" }
                    div class="field check" {
                        input type="radio" id="scope-all" name="scope" value="all" checked;
                        label for="scope-all" { "Everyone in the directory (its synced groups, when sync is limited to groups)" }
                    }
                    div class="field check" {
                        input type="radio" id="scope-group" name="scope" value="group";
                        label for="scope-group" { "Members of a group" }
                    }
                    div class="field" {
                        label for="group-id" { "Group" }
                        select id="group-id" name="group_id" {
                            @for group in &groups {
                                option value=(group.object_id) { (group.display_name) " (" (group.member_count) ")" }
                            }
                        }
                    }
                }
                fieldset {
                    legend { "Run in the background" }
                    div class="field check" {
                        input type="checkbox" id="batch-processing" name="batch_processing" value="1" checked;
                        label for="batch-processing" { "Batch processing (off: import now, within this request)" }
                    }
                    div class="field" {
                        label for="batch-group" { "Batch group" }
                        select id="batch-group" name="batch_group" {
                            @for group in &state.config.batch_groups {
                                option value=(group) { (group) }
                            }
                        }
                    }
                    div class="field check" {
                        input type="checkbox" id="private" name="private" value="1";
                        label for="private" { "Private (only you see this job)" }
                    }
                    div class="field check" {
                        input type="checkbox" id="critical" name="critical" value="1";
                        label for="critical" { "Critical job (overtakes waiting jobs of its group)" }
                    }
                    div class="field" {
                        label for="monitoring-category" { "Monitoring category" }
                        input type="text" id="monitoring-category" name="monitoring_category" maxlength="100";
                    }
                }
                button type="submit" id="start-batch" { "OK" }
                " "
                a href="/jobs" { "Cancel" }
            }
        }
    };
    Ok(framed(&state, &person, "Batch import", body)
        .await?
        .into_response())
}

pub(crate) async fn start(State(state): State<AppState>, form: Form) -> PageResult {
    form.person.require_writer()?;
    let person = &form.person;
    let company = match form.text("company") {
        c if c.is_empty() => person.company.clone(),
        c => c,
    };
    let scope = match form.text("scope").as_str() {
        "group" => {
            let group = form.text("group_id");
            if group.is_empty() {
                return Err(PageError::BadRequest(
                    "choose the group whose members to import".to_owned(),
                ));
            }
            dpb::scope::Scope::GroupId(group)
        }
        _ => dpb::scope::Scope::All(dpb::AllUsers {}),
    };
    let scope = Some(dpb::Scope { scope: Some(scope) });
    let job = if form.flag("batch_processing") {
        state
            .services
            .importer(person)?
            .start_batch_import(ipb::StartBatchImportRequest {
                company,
                scope,
                options: Some(ipb::BatchOptions {
                    batch_group: form.text("batch_group"),
                    private: form.flag("private"),
                    critical: form.flag("critical"),
                    monitoring_category: form.text("monitoring_category"),
                }),
                dry_run: false,
            })
            .await?
            .into_inner()
            .job
    } else {
        state
            .services
            .importer(person)?
            .run_import_now(ipb::RunImportNowRequest { company, scope })
            .await?
            .into_inner()
            .job
    };
    let job = job.ok_or_else(|| PageError::Internal(anyhow::anyhow!("no job in the answer")))?;
    Ok(Redirect::to(&format!("/jobs/{}", enc(&job.job_id))).into_response())
}
