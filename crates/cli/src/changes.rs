//! Commands that change users in bulk or preview such changes (issue 8): sync dry runs, batch
//! dry runs, and group-to-role rules. Every preview prints one row per change, in the same
//! form the real run's audit trail can be compared with.

use anyhow::Context as _;
use proto::directory::v1 as directory_pb;
use proto::importer::v1 as importer_pb;
use proto::registry::v1 as registry_pb;
use serde::Serialize;

use crate::commands::{Endpoints, OutcomeRow, describe_counts, failed};
use crate::output::{Format, Record, note, print};

/// One change a run makes or would make to a registry user.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ChangeRow {
    /// update, enable, disable, delete, import, grant, revoke.
    pub action: String,
    pub user_id: String,
    pub object_id: String,
    /// The changed fields, or the role (and company) and rule of a grant or revoke.
    pub detail: String,
}

impl Record for ChangeRow {
    const HEADERS: &'static [&'static str] = &["ACTION", "USER ID", "OBJECT ID", "DETAIL"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.action.clone(),
            self.user_id.clone(),
            self.object_id.clone(),
            self.detail.clone(),
        ]
    }
}

/// The rows of a registry update outcome: the enabled state as enable/disable, other fields
/// as one update, a deletion as delete.
pub fn update_rows(outcome: &registry_pb::UserUpdateOutcome) -> Vec<ChangeRow> {
    let row = |action: &str, detail: String| ChangeRow {
        action: action.to_owned(),
        user_id: outcome.user_id.clone(),
        object_id: outcome.object_id.clone(),
        detail,
    };
    if outcome.kind() == registry_pb::UpdateKind::Deleted {
        return vec![row("delete", "deleted in the directory".to_owned())];
    }
    let mut rows = Vec::new();
    let fields: Vec<&str> = outcome
        .changed
        .iter()
        .map(String::as_str)
        .filter(|f| *f != "enabled")
        .collect();
    if !fields.is_empty() {
        rows.push(row("update", fields.join(", ")));
    }
    if outcome.changed.iter().any(|f| f == "enabled") {
        let action = if outcome.enabled { "enable" } else { "disable" };
        rows.push(row(action, String::new()));
    }
    rows
}

/// A rule's grant or revoke as a row.
pub fn rule_row(change: &registry_pb::RuleChange) -> ChangeRow {
    let scope = if change.company.is_empty() {
        "all companies".to_owned()
    } else {
        change.company.clone()
    };
    ChangeRow {
        action: if change.granted { "grant" } else { "revoke" }.to_owned(),
        user_id: change.user_id.clone(),
        object_id: change.object_id.clone(),
        detail: format!("{} ({scope}) by rule {}", change.role_id, change.rule_id),
    }
}

// ---------------------------------------------------------------------------------------------
// Sync dry run

/// The rows of a sync preview.
pub fn sync_preview_rows(preview: &directory_pb::SyncPreview) -> Vec<ChangeRow> {
    let mut rows: Vec<ChangeRow> = preview.updates.iter().flat_map(update_rows).collect();
    rows.extend(preview.imports.iter().map(|o| ChangeRow {
        action: "import".to_owned(),
        user_id: o.user_id.clone(),
        object_id: o.object_id.clone(),
        detail: String::new(),
    }));
    if let Some(rules) = &preview.rules {
        rows.extend(rules.changes.iter().map(rule_row));
    }
    rows
}

/// Prints a sync preview: one row per change and the counts, then how to apply or drop it.
pub fn print_sync_preview(
    format: Format,
    run: &directory_pb::SyncRun,
    preview: Option<&directory_pb::SyncPreview>,
) -> anyhow::Result<()> {
    let Some(preview) = preview else {
        // The round failed or halted before it could be previewed; the run says why.
        return Ok(());
    };
    print(format, &sync_preview_rows(preview))?;
    let rules = preview.rules.clone().unwrap_or_default();
    note(
        format,
        format!(
            "dry run: {} users would be updated ({} of them disabled or deleted), {} imported; \
             rules would grant {} and revoke {}{}. Nothing was written to the registry.",
            preview.would_update,
            preview.would_disable,
            preview.would_import,
            rules.granted,
            rules.revoked,
            if preview.truncated {
                " (the list is cut at 10,000 per kind)"
            } else {
                ""
            },
        ),
    );
    if run.status() == directory_pb::SyncRunStatus::AwaitingApproval {
        note(
            format,
            format!(
                "apply exactly this with `userimport sync approve {id}`, drop it with \
                 `userimport sync reject {id}`",
                id = run.run_id
            ),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Batch dry run

/// Works out what a batch import would do, in the request; nothing is written.
pub async fn batch_preview(
    endpoints: &Endpoints,
    request: importer_pb::StartBatchImportRequest,
) -> anyhow::Result<importer_pb::BatchPreview> {
    let mut importer = endpoints.importer().await?;
    let request = importer_pb::StartBatchImportRequest {
        dry_run: true,
        ..request
    };
    importer
        .start_batch_import(endpoints.request(request))
        .await
        .map_err(failed("previewing the batch import"))?
        .into_inner()
        .preview
        .context("the import-worker answered a dry run without a preview")
}

pub fn print_batch_preview(
    format: Format,
    preview: importer_pb::BatchPreview,
) -> anyhow::Result<()> {
    let counts = preview.counts.unwrap_or_default();
    let rows: Vec<OutcomeRow> = preview.outcomes.into_iter().map(OutcomeRow::from).collect();
    print(format, &rows)?;
    note(
        format,
        format!(
            "dry run: {}{}; nothing was written",
            describe_counts(&counts),
            if preview.truncated {
                " (the first 10,000 users are listed)"
            } else {
                ""
            }
        ),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Group-to-role rules

/// A rule as listed.
#[derive(Debug, Serialize)]
pub struct RuleRow {
    pub rule_id: String,
    pub group_id: String,
    pub role_id: String,
    pub company: String,
}

impl Record for RuleRow {
    const HEADERS: &'static [&'static str] = &["RULE", "GROUP", "ROLE", "COMPANY"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.rule_id.clone(),
            self.group_id.clone(),
            self.role_id.clone(),
            if self.company.is_empty() {
                "(all)".to_owned()
            } else {
                self.company.clone()
            },
        ]
    }
}

impl From<importer_pb::RoleRule> for RuleRow {
    fn from(rule: importer_pb::RoleRule) -> Self {
        Self {
            rule_id: rule.rule_id,
            group_id: rule.group_id,
            role_id: rule.role_id,
            company: rule.company,
        }
    }
}

pub async fn rules_list(endpoints: &Endpoints) -> anyhow::Result<Vec<RuleRow>> {
    let mut importer = endpoints.importer().await?;
    let response = importer
        .list_role_rules(endpoints.request(importer_pb::ListRoleRulesRequest {}))
        .await
        .map_err(failed("listing the rules"))?
        .into_inner();
    Ok(response.rules.into_iter().map(RuleRow::from).collect())
}

/// Adds a rule (or, with `dry_run`, shows the grants it would make).
pub async fn rules_add(
    endpoints: &Endpoints,
    group: &str,
    role: &str,
    company: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<(RuleRow, registry_pb::RuleChanges)> {
    let mut importer = endpoints.importer().await?;
    let request = importer_pb::AddRoleRuleRequest {
        rule: Some(importer_pb::RoleRule {
            rule_id: String::new(),
            group_id: group.to_owned(),
            role_id: role.to_owned(),
            company: company.unwrap_or_default().to_owned(),
        }),
        dry_run,
    };
    let response = importer
        .add_role_rule(endpoints.request(request))
        .await
        .map_err(failed("adding the rule"))?
        .into_inner();
    let rule = response.rule.context("the answer has no rule")?;
    Ok((RuleRow::from(rule), response.changes.unwrap_or_default()))
}

/// Removes a rule and the grants it made (or, with `dry_run`, shows the revokes).
pub async fn rules_remove(
    endpoints: &Endpoints,
    rule_id: &str,
    dry_run: bool,
) -> anyhow::Result<registry_pb::RuleChanges> {
    let mut importer = endpoints.importer().await?;
    let request = importer_pb::RemoveRoleRuleRequest {
        rule_id: rule_id.to_owned(),
        dry_run,
    };
    Ok(importer
        .remove_role_rule(endpoints.request(request))
        .await
        .map_err(failed("removing the rule"))?
        .into_inner()
        .changes
        .unwrap_or_default())
}

/// Prints the grants and revokes of rules, then their counts.
pub fn print_rule_changes(
    format: Format,
    changes: &registry_pb::RuleChanges,
    dry_run: bool,
) -> anyhow::Result<()> {
    let rows: Vec<ChangeRow> = changes.changes.iter().map(rule_row).collect();
    print(format, &rows)?;
    note(
        format,
        format!(
            "{}{} granted, {} revoked{}",
            if dry_run {
                "dry run, nothing written: would be "
            } else {
                ""
            },
            changes.granted,
            changes.revoked,
            if changes.truncated {
                " (the first 10,000 are listed)"
            } else {
                ""
            }
        ),
    );
    Ok(())
}
