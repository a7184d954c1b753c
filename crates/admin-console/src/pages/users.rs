//! Users: the registry's users with the CLI's filters, and a user's page with every field,
//! roles per company with their source, role assignment, enable/disable, rename and the
//! user's audit history.

use axum::extract::{Path, State};
use axum::response::{IntoResponse as _, Redirect};
use maud::html;
use proto::registry::v1 as rpb;

use super::{Query, framed, param};
use crate::AppState;
use crate::session::{Form, Person};
use crate::web::{PageError, PageResult, csrf, enc, when};

pub(crate) async fn list(
    State(state): State<AppState>,
    person: Person,
    axum::extract::Query(query): Query,
) -> PageResult {
    let search = param(&query, "search").trim().to_owned();
    let without_roles = !param(&query, "without_roles").is_empty();
    let disabled = !param(&query, "disabled").is_empty();
    let guests = !param(&query, "guests").is_empty();
    let job = param(&query, "job").trim().to_owned();
    let token = param(&query, "page_token");
    let page = state
        .services
        .registry(&person)?
        .list_users(rpb::ListUsersRequest {
            page_size: 50,
            page_token: token.to_owned(),
            search: search.clone(),
            company: String::new(),
            enabled: disabled.then_some(false),
            account_type: if guests {
                rpb::AccountType::Guest.into()
            } else {
                rpb::AccountType::Unspecified.into()
            },
            without_roles,
            created_by_import: job.clone(),
        })
        .await?
        .into_inner();
    let filters = format!(
        "search={}&job={}{}{}{}",
        enc(&search),
        enc(&job),
        if without_roles {
            "&without_roles=1"
        } else {
            ""
        },
        if disabled { "&disabled=1" } else { "" },
        if guests { "&guests=1" } else { "" },
    );
    let body = html! {
        h1 { "Users" }
        form method="get" action="/users" role="search" class="filters" {
            div class="field" {
                label for="search" { "Search by user id, name, alias or email" }
                input type="search" id="search" name="search" value=(search);
            }
            div class="field check" {
                input type="checkbox" id="without-roles" name="without_roles" value="1" checked[without_roles];
                label for="without-roles" { "Without roles" }
            }
            div class="field check" {
                input type="checkbox" id="disabled" name="disabled" value="1" checked[disabled];
                label for="disabled" { "Disabled" }
            }
            div class="field check" {
                input type="checkbox" id="guests" name="guests" value="1" checked[guests];
                label for="guests" { "Guests" }
            }
            div class="field" {
                label for="job" { "Imported by job" }
                input type="text" id="job" name="job" value=(job) size="38";
            }
            button type="submit" { "Show" }
        }
        table class="list" id="users" {
            thead { tr {
                th scope="col" { "User id" } th scope="col" { "Name" } th scope="col" { "Email" }
                th scope="col" { "Company" } th scope="col" { "Type" } th scope="col" { "Enabled" }
                th scope="col" { "Created" }
            } }
            tbody {
                @for user in &page.users {
                    tr {
                        td { a href=(format!("/users/{}", enc(&user.user_id))) { (user.user_id) } }
                        td { (user.name) }
                        td { (user.email) }
                        td { (user.company) }
                        td { (if user.account_type() == rpb::AccountType::Guest { "Guest" } else { "Member" }) }
                        td { (if user.enabled { "Yes" } else { "No" }) }
                        td { (when(user.created_at_ms)) }
                    }
                }
                @if page.users.is_empty() { tr { td colspan="7" { "No user matches." } } }
            }
        }
        nav class="pager" aria-label="Pages" {
            @if !token.is_empty() { a href=(format!("/users?{filters}")) { "First page" } }
            @if !page.next_page_token.is_empty() {
                a href=(format!("/users?{filters}&page_token={}", enc(&page.next_page_token))) { "Next page" }
            }
        }
    };
    Ok(framed(&state, &person, "Users", body)
        .await?
        .into_response())
}

pub(crate) async fn page(
    State(state): State<AppState>,
    person: Person,
    Path(user_id): Path<String>,
) -> PageResult {
    let mut registry = state.services.registry(&person)?;
    let found = registry
        .get_user(rpb::GetUserRequest {
            key: Some(rpb::get_user_request::Key::UserId(user_id.clone())),
        })
        .await?
        .into_inner();
    let user = found
        .user
        .ok_or_else(|| PageError::NotFound(format!("no user {user_id}")))?;
    let roles = registry
        .list_roles(rpb::ListRolesRequest {})
        .await?
        .into_inner()
        .roles;
    let audit = registry
        .list_audit_events(rpb::ListAuditEventsRequest {
            page_size: 50,
            page_token: String::new(),
            user_id: user.user_id.clone(),
            action: String::new(),
            via: String::new(),
        })
        .await?
        .into_inner()
        .events;
    let base = format!("/users/{}", enc(&user.user_id));
    let body = html! {
        h1 { "User " (user.user_id) }
        dl class="facts" id="user-fields" {
            dt { "Name" } dd { (user.name) }
            dt { "User id" } dd { (user.user_id) }
            dt { "Email" } dd { (user.email) }
            dt { "Network alias" } dd { (user.network_alias) }
            dt { "Network domain" } dd { (user.network_domain) }
            dt { "Company" } dd { (user.company) }
            dt { "Type" } dd { (if user.account_type() == rpb::AccountType::Guest { "Guest" } else { "Member" }) }
            dt { "Enabled" } dd id="user-enabled" { (if user.enabled { "Yes" } else { "No" }) }
            dt { "Tenant" } dd { (user.tenant_id) }
            dt { "Object id" } dd { (user.object_id) }
            dt { "Created" } dd { (when(user.created_at_ms)) }
            dt { "Updated" } dd { (when(user.updated_at_ms)) }
            dt { "Imported by job" } dd {
                @if !user.created_by_import.is_empty() { a href=(format!("/jobs/{}", enc(&user.created_by_import))) { (user.created_by_import) } }
            }
            @if user.deleted_in_directory_at_ms > 0 {
                dt { "Deleted in the directory" } dd { (when(user.deleted_in_directory_at_ms)) }
            }
        }
        section aria-labelledby="roles-title" {
            h2 id="roles-title" { "Roles" }
            table class="list" id="roles" {
                thead { tr { th scope="col" { "Role" } th scope="col" { "Company" } th scope="col" { "Source" } @if person.can_write() { th scope="col" { span class="visually-hidden" { "Actions" } } } } }
                tbody {
                    @for role in &found.roles {
                        tr {
                            td { (role.role_id) }
                            td { (if role.company.is_empty() { "all companies" } else { role.company.as_str() }) }
                            td { (role.sources.join(", ")) }
                            @if person.can_write() {
                                td {
                                    form method="post" action=(format!("{base}/roles")) {
                                        (csrf(&person))
                                        input type="hidden" name="action" value="revoke";
                                        input type="hidden" name="role_id" value=(role.role_id);
                                        input type="hidden" name="company" value=(role.company);
                                        button type="submit" class="secondary" aria-label=(format!("Revoke {} in {}", role.role_id, role.company)) { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                    @if found.roles.is_empty() { tr { td colspan="4" { "No roles." } } }
                }
            }
            @if person.can_write() {
                form method="post" action=(format!("{base}/roles")) class="inline" {
                    (csrf(&person))
                    input type="hidden" name="action" value="assign";
                    input type="hidden" name="company" value=(person.company);
                    label for="assign-role" { "Assign a role in " (person.company) }
                    select id="assign-role" name="role_id" {
                        @for role in &roles { option value=(role.role_id) { (role.name) " (" (role.role_id) ")" } }
                    }
                    button type="submit" id="assign-button" { "Assign" }
                }
            }
        }
        @if person.can_write() {
            section aria-labelledby="manage-title" {
                h2 id="manage-title" { "Manage" }
                form method="post" action=(format!("{base}/enabled")) class="inline" {
                    (csrf(&person))
                    input type="hidden" name="enabled" value=(if user.enabled { "false" } else { "true" });
                    button type="submit" id="toggle-enabled" class=(if user.enabled { "danger" } else { "" }) {
                        (if user.enabled { "Disable" } else { "Enable" })
                    }
                }
                form method="post" action=(format!("{base}/rename")) class="inline" {
                    (csrf(&person))
                    label for="new-user-id" { "New user id" }
                    input type="text" id="new-user-id" name="new_user_id" maxlength="20" required;
                    button type="submit" { "Rename" }
                }
            }
        }
        section aria-labelledby="audit-title" {
            h2 id="audit-title" { "History" }
            table class="list" {
                thead { tr { th scope="col" { "When" } th scope="col" { "Action" } th scope="col" { "By" } th scope="col" { "Via" } th scope="col" { "Detail" } } }
                tbody {
                    @for event in &audit {
                        tr {
                            td { (when(event.at_ms)) }
                            td { (event.action) }
                            td { (event.actor) }
                            td { (event.via) }
                            td { (event.detail) }
                        }
                    }
                }
            }
        }
    };
    Ok(framed(&state, &person, "Users", body)
        .await?
        .into_response())
}

pub(crate) async fn roles(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    form: Form,
) -> PageResult {
    form.person.require_writer()?;
    let role_id = form.text("role_id");
    if role_id.is_empty() {
        return Err(PageError::BadRequest("choose a role".to_owned()));
    }
    let mut registry = state.services.registry(&form.person)?;
    match form.text("action").as_str() {
        "assign" => {
            registry
                .assign_roles(rpb::AssignRolesRequest {
                    user_ids: vec![user_id.clone()],
                    role_ids: vec![role_id],
                    company: form.text("company"),
                })
                .await?;
        }
        "revoke" => {
            registry
                .revoke_roles(rpb::RevokeRolesRequest {
                    user_ids: vec![user_id.clone()],
                    role_ids: vec![role_id],
                    company: form.text("company"),
                    all_sources: false,
                })
                .await?;
        }
        other => return Err(PageError::BadRequest(format!("no action {other:?}"))),
    }
    Ok(Redirect::to(&format!("/users/{}", enc(&user_id))).into_response())
}

pub(crate) async fn enabled(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    form: Form,
) -> PageResult {
    form.person.require_writer()?;
    state
        .services
        .registry(&form.person)?
        .set_users_enabled(rpb::SetUsersEnabledRequest {
            user_ids: vec![user_id.clone()],
            enabled: form.text("enabled") == "true",
        })
        .await?;
    Ok(Redirect::to(&format!("/users/{}", enc(&user_id))).into_response())
}

pub(crate) async fn rename(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    form: Form,
) -> PageResult {
    form.person.require_writer()?;
    let renamed = state
        .services
        .registry(&form.person)?
        .rename_user(rpb::RenameUserRequest {
            user_id,
            new_user_id: form.text("new_user_id"),
        })
        .await?
        .into_inner()
        .user
        .ok_or_else(|| PageError::Internal(anyhow::anyhow!("no user in the answer")))?;
    Ok(Redirect::to(&format!("/users/{}", enc(&renamed.user_id))).into_response())
}
