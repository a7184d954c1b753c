//! `import …`: a select import, by object id, UPN or mail.

use super::*;

/// One user's outcome of an import.
#[derive(Debug, Serialize)]
pub struct OutcomeRow {
    pub object_id: String,
    pub outcome: String,
    pub user_id: String,
    pub reason: String,
}

impl Record for OutcomeRow {
    const HEADERS: &'static [&'static str] = &["OBJECT ID", "OUTCOME", "USER ID", "REASON"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.object_id.clone(),
            self.outcome.clone(),
            self.user_id.clone(),
            self.reason.clone(),
        ]
    }
}

impl From<registry_pb::ImportOutcome> for OutcomeRow {
    fn from(outcome: registry_pb::ImportOutcome) -> Self {
        let kind = match outcome.kind() {
            registry_pb::OutcomeKind::Created => "created",
            registry_pb::OutcomeKind::AlreadyPresent => "already present",
            registry_pb::OutcomeKind::Skipped => "skipped",
            registry_pb::OutcomeKind::Failed | registry_pb::OutcomeKind::Unspecified => "failed",
        };
        let reason = match (outcome.reason.is_empty(), outcome.note.is_empty()) {
            (_, true) => outcome.reason,
            (true, false) => outcome.note,
            (false, false) => format!("{}; {}", outcome.reason, outcome.note),
        };
        Self {
            object_id: outcome.object_id,
            outcome: kind.to_owned(),
            user_id: outcome.user_id,
            reason,
        }
    }
}

/// Imports users chosen by object id or user principal name into `company` (or, with
/// `dry_run`, reports what the import would do and writes nothing).
/// What `import` did: the import-worker's answer, and the names the directory did not know
/// (each reported as that user's outcome unless `--all-or-nothing`).
pub struct Imported {
    pub response: importer_pb::ImportSelectedResponse,
    /// The users as named, in the order given, each with its object id when resolved.
    pub named: Vec<(String, Option<String>)>,
}

/// Imports the named users: object ids as they are, user principal names and guests' mail
/// addresses resolved through the directory first.
pub async fn import(
    endpoints: &Endpoints,
    users: &[String],
    company: &str,
    request_id: Option<String>,
    dry_run: bool,
    all_or_nothing: bool,
) -> anyhow::Result<Imported> {
    anyhow::ensure!(
        !users.is_empty(),
        "name at least one user (object id, user principal name or mail)"
    );
    let named = resolve(endpoints, users).await?;
    let unknown: Vec<&str> = named
        .iter()
        .filter(|(_, id)| id.is_none())
        .map(|(name, _)| name.as_str())
        .collect();
    if all_or_nothing && !unknown.is_empty() {
        anyhow::bail!(
            "the directory has no user {}; nothing was imported",
            unknown.join(", ")
        );
    }
    let object_ids: Vec<String> = named.iter().filter_map(|(_, id)| id.clone()).collect();
    let response = if object_ids.is_empty() {
        importer_pb::ImportSelectedResponse::default()
    } else {
        let mut importer = endpoints.importer().await?;
        let request = importer_pb::ImportSelectedRequest {
            object_ids,
            company: company.to_owned(),
            dry_run,
            request_id: request_id.unwrap_or_default(),
            all_or_nothing,
        };
        importer
            .import_selected(endpoints.request(request))
            .await
            .map_err(failed("the import"))?
            .into_inner()
    };
    Ok(Imported { response, named })
}

/// Each name with the object id it stands for: a GUID as it is; else a user principal name
/// or, for guests, a mail address the mirror knows (case-insensitively); `None` when neither.
async fn resolve(
    endpoints: &Endpoints,
    users: &[String],
) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let mut named: Vec<(String, Option<String>)> = users
        .iter()
        .map(|u| (u.trim().to_owned(), service_runtime::normalize_guid(u)))
        .collect();
    let names: Vec<String> = named
        .iter()
        .filter(|(_, id)| id.is_none())
        .map(|(name, _)| name.clone())
        .collect();
    if names.is_empty() {
        return Ok(named);
    }
    let mut directory = endpoints.directory().await?;
    let found = directory
        .get_users(endpoints.request(directory_pb::GetUsersRequest {
            object_ids: Vec::new(),
            user_principal_names: names,
        }))
        .await
        .map_err(failed("looking up users"))?
        .into_inner();
    for (name, id) in named.iter_mut().filter(|(_, id)| id.is_none()) {
        *id = found
            .users
            .iter()
            .find(|u| u.user_principal_name.eq_ignore_ascii_case(name))
            .map(|u| u.object_id.clone());
    }
    // A guest signs in with its mail, which is what an administrator knows it by.
    for (name, id) in named
        .iter_mut()
        .filter(|(name, id)| id.is_none() && name.contains('@'))
    {
        let page = directory
            .list_users(endpoints.request(directory_pb::ListUsersRequest {
                search: name.clone(),
                page_size: 20,
                not_imported_only: Some(false),
                ..Default::default()
            }))
            .await
            .map_err(failed("looking up users by mail"))?
            .into_inner();
        *id = page
            .users
            .iter()
            .find(|u| u.mail.eq_ignore_ascii_case(name))
            .map(|u| u.object_id.clone());
    }
    Ok(named)
}

pub fn describe_counts(counts: &importer_pb::OutcomeCounts) -> String {
    format!(
        "{} created, {} already present, {} skipped, {} failed",
        counts.created, counts.already_present, counts.skipped, counts.failed
    )
}

/// Prints an import's outcomes and its summary line.
pub fn print_import(format: Format, imported: Imported) -> anyhow::Result<()> {
    let Imported { response, named } = imported;
    let mut counts = response.counts.unwrap_or_default();
    let mut by_id: std::collections::HashMap<String, OutcomeRow> = response
        .outcomes
        .into_iter()
        .map(|o| (o.object_id.clone(), OutcomeRow::from(o)))
        .collect();
    // In the order named; a name the directory did not know is that user's outcome.
    let mut rows = Vec::with_capacity(named.len());
    for (name, id) in named {
        match id {
            Some(id) => rows.extend(by_id.remove(&id)),
            None => {
                counts.skipped += 1;
                rows.push(OutcomeRow {
                    object_id: String::new(),
                    outcome: "skipped".to_owned(),
                    user_id: String::new(),
                    reason: format!(
                        "not in the directory: no user signs in as, or has the mail, {name}"
                    ),
                });
            }
        }
    }
    print(format, &rows)?;
    let request = if response.request_id.is_empty() {
        String::new()
    } else {
        format!(" (request {})", response.request_id)
    };
    note(format, format!("{}{request}", describe_counts(&counts)));
    Ok(())
}
