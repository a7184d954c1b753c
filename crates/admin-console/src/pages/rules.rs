//! Rules: group-to-role rules, listed, added (a dry run previews whom a rule would change)
//! and removed.

use axum::extract::{Path, State};
use axum::response::{IntoResponse as _, Redirect};
use maud::{Markup, html};
use proto::directory::v1 as dpb;
use proto::importer::v1 as ipb;
use proto::registry::v1 as rpb;

use super::framed;
use crate::AppState;
use crate::session::{Form, Person};
use crate::web::{PageResult, csrf, enc};

async fn render(state: &AppState, person: &Person, outcome: Option<Markup>) -> PageResult {
    let rules = state
        .services
        .importer(person)?
        .list_role_rules(ipb::ListRoleRulesRequest {})
        .await?
        .into_inner()
        .rules;
    let groups = state
        .services
        .directory(person)?
        .list_groups(dpb::ListGroupsRequest {
            search: String::new(),
            page_size: 200,
            page_token: String::new(),
        })
        .await?
        .into_inner()
        .groups;
    let roles = state
        .services
        .registry(person)?
        .list_roles(rpb::ListRolesRequest {})
        .await?
        .into_inner()
        .roles;
    let group_name = |id: &str| {
        groups
            .iter()
            .find(|g| g.object_id == id)
            .map_or(id.to_owned(), |g| g.display_name.clone())
    };
    let body = html! {
        h1 { "Rules" }
        p { "Members of a group get a role in a company, and lose it when they leave the group." }
        @if let Some(outcome) = outcome { (outcome) }
        table class="list" id="rules" {
            thead { tr { th scope="col" { "Group" } th scope="col" { "Role" } th scope="col" { "Company" } @if person.can_write() { th scope="col" { span class="visually-hidden" { "Actions" } } } } }
            tbody {
                @for rule in &rules {
                    tr {
                        td { (group_name(&rule.group_id)) }
                        td { (rule.role_id) }
                        td { (rule.company) }
                        @if person.can_write() {
                            td {
                                form method="post" action=(format!("/rules/{}/remove", enc(&rule.rule_id))) {
                                    (csrf(person))
                                    button type="submit" class="danger" aria-label=(format!("Remove the rule {} → {}", group_name(&rule.group_id), rule.role_id)) { "Remove" }
                                }
                            }
                        }
                    }
                }
                @if rules.is_empty() { tr { td colspan="4" { "No rules." } } }
            }
        }
        @if person.can_write() {
            h2 { "Add a rule" }
            form method="post" action="/rules" class="dialog" {
                (csrf(person))
                div class="field" {
                    label for="rule-group" { "Group" }
                    select id="rule-group" name="group_id" {
                        @for g in &groups { option value=(g.object_id) { (g.display_name) } }
                    }
                }
                div class="field" {
                    label for="rule-role" { "Role" }
                    select id="rule-role" name="role_id" {
                        @for r in &roles { option value=(r.role_id) { (r.name) " (" (r.role_id) ")" } }
                    }
                }
                div class="field" {
                    label for="rule-company" { "Company" }
                    input type="text" id="rule-company" name="company" value=(person.company);
                }
                div class="field check" {
                    input type="checkbox" id="rule-dry-run" name="dry_run" value="1";
                    label for="rule-dry-run" { "Dry run: show whom it would change" }
                }
                button type="submit" id="add-rule" { "Add rule" }
            }
        }
    };
    Ok(framed(state, person, "Rules", body).await?.into_response())
}

pub(crate) async fn page(State(state): State<AppState>, person: Person) -> PageResult {
    render(&state, &person, None).await
}

fn changes(title: &str, changes: &rpb::RuleChanges) -> Markup {
    html! {
        section class="result" aria-labelledby="rule-result" {
            h2 id="rule-result" { (title) }
            p { (changes.granted) " granted, " (changes.revoked) " revoked" @if changes.truncated { " (list cut short)" } }
            @if !changes.changes.is_empty() {
                table class="list" {
                    thead { tr { th scope="col" { "User" } th scope="col" { "Role" } th scope="col" { "Company" } th scope="col" { "Change" } } }
                    tbody {
                        @for c in changes.changes.iter().take(200) {
                            tr { td { (c.user_id) } td { (c.role_id) } td { (c.company) } td { (if c.granted { "granted" } else { "revoked" }) } }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) async fn add(State(state): State<AppState>, form: Form) -> PageResult {
    form.person.require_writer()?;
    let dry_run = form.flag("dry_run");
    let answer = state
        .services
        .importer(&form.person)?
        .add_role_rule(ipb::AddRoleRuleRequest {
            rule: Some(ipb::RoleRule {
                rule_id: String::new(),
                group_id: form.text("group_id"),
                role_id: form.text("role_id"),
                company: form.text("company"),
            }),
            dry_run,
        })
        .await?
        .into_inner();
    let title = if dry_run {
        "Dry run: what the rule would change"
    } else {
        "Rule added"
    };
    let outcome = changes(title, &answer.changes.unwrap_or_default());
    render(&state, &form.person, Some(outcome)).await
}

pub(crate) async fn remove(
    State(state): State<AppState>,
    Path(rule_id): Path<String>,
    form: Form,
) -> PageResult {
    form.person.require_writer()?;
    state
        .services
        .importer(&form.person)?
        .remove_role_rule(ipb::RemoveRoleRuleRequest {
            rule_id,
            dry_run: false,
        })
        .await?;
    Ok(Redirect::to("/rules").into_response())
}
