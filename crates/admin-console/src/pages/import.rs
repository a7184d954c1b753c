//! Import users: D365's select-import dialog. The directory's users not yet in the registry,
//! searched as you type and filtered; tick some (or all on the page), Import users, and a
//! result panel says what became of each one. A dry run previews the same.

use axum::extract::State;
use axum::response::IntoResponse as _;
use maud::{Markup, html};
use proto::directory::v1 as dpb;
use proto::importer::v1 as ipb;
use proto::registry::v1 as rpb;

use super::{Query, framed, param};
use crate::AppState;
use crate::session::{Form, Person};
use crate::web::{PageError, PageResult, csrf, enc};

/// The filters of the list, carried through paging and the import form.
#[derive(Default)]
struct Filters {
    search: String,
    kind: String,
    enabled: bool,
    group: String,
}

impl Filters {
    fn from_pairs(get: impl Fn(&str) -> String) -> Self {
        Self {
            search: get("search"),
            kind: get("kind"),
            enabled: !get("enabled").is_empty(),
            group: get("group"),
        }
    }

    fn query(&self) -> String {
        format!(
            "search={}&kind={}&group={}{}",
            enc(&self.search),
            enc(&self.kind),
            enc(&self.group),
            if self.enabled { "&enabled=1" } else { "" }
        )
    }

    fn hidden(&self) -> Markup {
        html! {
            input type="hidden" name="search" value=(self.search);
            input type="hidden" name="kind" value=(self.kind);
            input type="hidden" name="group" value=(self.group);
            @if self.enabled { input type="hidden" name="enabled" value="1"; }
        }
    }
}

const PAGE_SIZE: u32 = 50;

pub(crate) async fn page(
    State(state): State<AppState>,
    person: Person,
    axum::extract::Query(query): Query,
) -> PageResult {
    let filters = Filters::from_pairs(|name| param(&query, name).trim().to_owned());
    let token = param(&query, "page_token").to_owned();
    let results = results(&state, &person, &filters, &token).await?;
    if param(&query, "fragment") == "results" {
        return Ok(results.into_response());
    }
    let body = dialog(&state, &person, &filters, results, None).await?;
    Ok(framed(&state, &person, "Import users", body)
        .await?
        .into_response())
}

/// The dialog: search and filters, then the list (or what an import did, above it).
async fn dialog(
    state: &AppState,
    person: &Person,
    filters: &Filters,
    results: Markup,
    outcome: Option<Markup>,
) -> Result<Markup, PageError> {
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
    Ok(html! {
        h1 { "Import users" }
        p { "Users of the directory who are not yet users here. Ticked users are imported into company "
            strong { (person.company) } " (change it at the top of the page)." }
        @if let Some(outcome) = outcome { (outcome) }
        form method="get" action="/import" role="search" class="filters" data-live="#results" {
            div class="field" {
                label for="search" { "Search by name, user principal name or email" }
                input type="search" id="search" name="search" value=(filters.search) autocomplete="off" data-live-input;
            }
            div class="field" {
                label for="kind" { "Type" }
                select id="kind" name="kind" data-live-input {
                    option value="" selected[filters.kind.is_empty()] { "Members and guests" }
                    option value="members" selected[filters.kind == "members"] { "Members" }
                    option value="guests" selected[filters.kind == "guests"] { "Guests" }
                }
            }
            div class="field" {
                label for="group" { "Group" }
                select id="group" name="group" data-live-input {
                    option value="" { "Any group" }
                    @for group in &groups {
                        option value=(group.object_id) selected[group.object_id == filters.group] {
                            (group.display_name) " (" (group.member_count) ")"
                        }
                    }
                }
            }
            div class="field check" {
                input type="checkbox" id="enabled" name="enabled" value="1" checked[filters.enabled] data-live-input;
                label for="enabled" { "Enabled accounts only" }
            }
            button type="submit" { "Search" }
        }
        div id="results" aria-live="polite" { (results) }
    })
}

/// One page of the not-imported users, with the import form around it.
async fn results(
    state: &AppState,
    person: &Person,
    filters: &Filters,
    token: &str,
) -> Result<Markup, PageError> {
    let account_type = match filters.kind.as_str() {
        "members" => dpb::AccountType::Member,
        "guests" => dpb::AccountType::Guest,
        _ => dpb::AccountType::Unspecified,
    };
    let page = state
        .services
        .directory(person)?
        .list_users(dpb::ListUsersRequest {
            search: filters.search.clone(),
            page_size: PAGE_SIZE,
            page_token: token.to_owned(),
            not_imported_only: Some(true),
            group_id: filters.group.clone(),
            enabled_only: filters.enabled,
            account_type: account_type.into(),
        })
        .await?
        .into_inner();
    Ok(html! {
        form method="post" action="/import" id="import-form" {
            (csrf(person))
            (filters.hidden())
            input type="hidden" name="company" value=(person.company);
            table class="list" {
                caption { (page.users.len()) " users not yet imported on this page" }
                thead { tr {
                    th scope="col" class="pick" {
                        input type="checkbox" id="select-all" data-select-all="object_id" aria-label="Select all users on this page";
                    }
                    th scope="col" { "Name" }
                    th scope="col" { "User principal name" }
                    th scope="col" { "Email" }
                    th scope="col" { "Type" }
                    th scope="col" { "Enabled" }
                    th scope="col" { "Source" }
                } }
                tbody {
                    @for (i, user) in page.users.iter().enumerate() {
                        tr {
                            td class="pick" {
                                input type="checkbox" name="object_id" value=(user.object_id) id=(format!("pick-{i}"))
                                    aria-label=(format!("Select {}", user.display_name));
                            }
                            td { label for=(format!("pick-{i}")) { (user.display_name) } }
                            td { (user.user_principal_name) }
                            td { (user.mail) }
                            td { (if user.account_type() == dpb::AccountType::Guest { "Guest" } else { "Member" }) }
                            td { (if user.account_enabled { "Yes" } else { "No" }) }
                            td { (if user.source() == dpb::UserSource::Scim { "SCIM push" } else { "Graph" }) }
                        }
                    }
                    @if page.users.is_empty() {
                        tr { td colspan="7" { "No user matches: everyone who matches is imported already, or nobody matches." } }
                    }
                }
            }
            nav class="pager" aria-label="Pages" {
                @if !token.is_empty() { a href=(format!("/import?{}", filters.query())) { "First page" } }
                @if !page.next_page_token.is_empty() {
                    a href=(format!("/import?{}&page_token={}", filters.query(), enc(&page.next_page_token))) { "Next page" }
                }
            }
            @if person.can_write() {
                div class="actions" {
                    div class="field check" {
                        input type="checkbox" id="dry-run" name="dry_run" value="1";
                        label for="dry-run" { "Dry run: show what would happen, write nothing" }
                    }
                    button type="submit" id="import-button" { "Import users" }
                }
            }
        }
    })
}

pub(crate) async fn run(State(state): State<AppState>, form: Form) -> PageResult {
    form.person.require_writer()?;
    let person = &form.person;
    let filters = Filters::from_pairs(|name| form.text(name));
    let object_ids = form.all("object_id");
    let company = match form.text("company") {
        c if c.is_empty() => person.company.clone(),
        c => c,
    };
    let dry_run = form.flag("dry_run");
    let outcome = if object_ids.is_empty() {
        html! { p role="alert" class="error" { "Tick at least one user to import." } }
    } else {
        let response = state
            .services
            .importer(person)?
            .import_selected(ipb::ImportSelectedRequest {
                object_ids: object_ids.clone(),
                company: company.clone(),
                dry_run,
                request_id: String::new(),
                all_or_nothing: false,
            })
            .await?
            .into_inner();
        let names = state
            .services
            .directory(person)?
            .get_users(dpb::GetUsersRequest {
                object_ids,
                user_principal_names: Vec::new(),
            })
            .await?
            .into_inner()
            .users;
        result_panel(&response, &names, &company, dry_run)
    };
    let results = results(&state, person, &filters, "").await?;
    let body = dialog(&state, person, &filters, results, Some(outcome)).await?;
    Ok(framed(&state, person, "Import users", body)
        .await?
        .into_response())
}

/// One row per ticked user: created with its user id, already present, skipped or failed
/// with the reason.
fn result_panel(
    response: &ipb::ImportSelectedResponse,
    names: &[dpb::DirectoryUser],
    company: &str,
    dry_run: bool,
) -> Markup {
    let counts = response.counts.unwrap_or_default();
    let name_of = |object_id: &str| {
        names
            .iter()
            .find(|u| u.object_id == object_id)
            .map_or(object_id.to_owned(), |u| {
                format!("{} ({})", u.display_name, u.user_principal_name)
            })
    };
    html! {
        section class="result" id="import-result" aria-labelledby="result-title" tabindex="-1" {
            h2 id="result-title" {
                @if dry_run { "Dry run: what importing would do in " (company) } @else { "Imported into " (company) }
            }
            p class="counts" {
                span id="count-created" { (counts.created) " " (if dry_run { "would be created" } else { "created" }) }
                ", " span id="count-present" { (counts.already_present) " already present" }
                ", " span id="count-skipped" { (counts.skipped) " skipped" }
                ", " span id="count-failed" { (counts.failed) " failed" }
            }
            table class="list" {
                thead { tr { th scope="col" { "User" } th scope="col" { "Outcome" } th scope="col" { "User id" } th scope="col" { "Reason" } } }
                tbody {
                    @for outcome in &response.outcomes {
                        tr data-outcome=(outcome_text(outcome.kind())) {
                            td { (name_of(&outcome.object_id)) }
                            td { (outcome_text(outcome.kind())) }
                            td { @if !outcome.user_id.is_empty() && !dry_run { a href=(format!("/users/{}", enc(&outcome.user_id))) { (outcome.user_id) } } @else { (outcome.user_id) } }
                            td { (outcome.reason) @if !outcome.note.is_empty() { " " (outcome.note) } }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) fn outcome_text(kind: rpb::OutcomeKind) -> &'static str {
    match kind {
        rpb::OutcomeKind::Created => "created",
        rpb::OutcomeKind::AlreadyPresent => "already present",
        rpb::OutcomeKind::Skipped => "skipped",
        rpb::OutcomeKind::Failed => "failed",
        rpb::OutcomeKind::Unspecified => "unknown",
    }
}
