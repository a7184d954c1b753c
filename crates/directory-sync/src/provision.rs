//! After a sync round, the changes of users the registry holds flow to it (issue 8): the
//! display name, the alias after a UPN rename (members sign in with their UPN, guests with
//! their mail; the user id never changes), and the enabled state — disabled, soft-deleted and
//! hard-deleted users are disabled, restored users enabled again.
//!
//! Hard-deleted users are also marked in the registry (or, with the opt-in
//! `provisioning.delete_hard_deleted`, deleted from it).
//!
//! Safety rail: the round's changes are first applied as a dry run to count the users they
//! would disable (or delete). More than `max_disable_count`, or more than `max_disable_share`
//! of the registry's users, and nothing is written: the run waits for approval. A round whose
//! read of the directory failed never gets here, so an outage disables nobody.
//!
//! After the registry updates come auto-import (new users) and the group-to-role rules, both
//! through import-worker. A dry run ([`Mode::Preview`]) asks every one of these steps for a
//! dry run and answers what they would do; approving the run then does exactly that.

use std::collections::HashSet;

use crate::config::ProvisioningConfig;
use crate::domain::{
    AccountType, DeletionState, ImportKind, ImportOutcome, MirrorUser, RuleChanges, UpdateKind,
    UpdateOutcome, UserChange,
};
use crate::error::Error;
use crate::store;
use crate::sync::SyncContext;

/// Changes sent to the registry per call (its limit).
const PAGE: u32 = 1000;
/// Most entries a preview lists per kind; its counts are always complete.
const LISTED: usize = 10_000;

/// How the steps after a round run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Write, unless the safety rail halts the run (and it is not `approved`).
    Apply { approved: bool },
    /// Write nothing; report what `Apply { approved: true }` would do.
    Preview,
}

/// What the steps after a round did, or would do (preview).
#[derive(Debug, Clone, Default)]
pub struct Effects {
    /// The safety rail stopped the run before it wrote: (would disable, registry size).
    pub halted: Option<(u64, u64)>,
    /// Registry users updated (listed up to [`LISTED`]).
    pub updates: Vec<UpdateOutcome>,
    pub updated: u64,
    pub disabled: u64,
    /// Users auto-import created (CREATED outcomes, listed up to [`LISTED`]).
    pub imports: Vec<ImportOutcome>,
    pub imported: u64,
    pub rules: Option<RuleChanges>,
    pub truncated: bool,
}

impl Effects {
    /// Nothing written, or nothing that would be.
    pub fn is_empty(&self) -> bool {
        let rules = self
            .rules
            .as_ref()
            .is_none_or(|r| r.granted == 0 && r.revoked == 0);
        self.halted.is_none() && self.updated == 0 && self.imported == 0 && rules
    }
}

/// The registry change a mirror user's current state asks for; a user out of scope (in none
/// of the synced groups, when groups are configured) is disabled. A hard-deleted user is
/// marked, or deleted under the opt-in policy; only Graph's own word makes a user
/// hard-deleted in the mirror (see `sync.rs`), so the policy never deletes a user the
/// directory can restore. A user present again loses its mark.
fn change_of(user: &MirrorUser, in_scope: bool, config: &ProvisioningConfig) -> UserChange {
    let alias = match user.account_type {
        AccountType::Member => user.user_principal_name.clone(),
        AccountType::Guest => user.mail.clone(),
    };
    let hard_deleted = user.deletion_state == DeletionState::HardDeleted;
    UserChange {
        tenant_id: user.tenant_id.clone(),
        object_id: user.object_id.clone(),
        name: (!user.display_name.is_empty()).then(|| user.display_name.clone()),
        network_alias: (!alias.is_empty()).then_some(alias),
        enabled: Some(
            user.account_enabled && user.deletion_state == DeletionState::Present && in_scope,
        ),
        // The registry's mark follows the directory both ways: set for a hard-deleted user,
        // cleared for one the directory holds again (restored, or only soft-deleted).
        deleted_in_directory: Some(hard_deleted),
        delete: hard_deleted && config.delete_hard_deleted,
    }
}

/// What one pass over a run's changes found or did.
#[derive(Default)]
struct Pass {
    /// Object ids whose registry user changes.
    changing: HashSet<String>,
    /// Users disabled or deleted.
    disabled: u64,
    total_users: u64,
    /// The outcomes that change something, up to [`LISTED`].
    listed: Vec<UpdateOutcome>,
    truncated: bool,
}

/// One pass over the users `run_id` changed. A dry run sends every page and answers the
/// object ids whose registry user would change, with the users it would disable and the
/// registry's size; a real pass sends only the users in `only`.
async fn pass(
    ctx: &SyncContext,
    run_id: &str,
    only: Option<&HashSet<String>>,
) -> Result<Pass, Error> {
    let dry_run = only.is_none();
    let mut result = Pass::default();
    let mut after = String::new();
    let mut first = true;
    loop {
        let page = {
            let mut conn = ctx.conn().await?;
            store::changed_in_run(
                &mut conn,
                &ctx.tenant_id,
                run_id,
                !ctx.groups.is_empty() && ctx.provisioning.disable_out_of_scope,
                &after,
                PAGE,
            )
            .await?
        };
        let Some(last) = page.last() else {
            break;
        };
        after = last.0.object_id.clone();
        let full_page = page.len() == PAGE as usize;
        let changes: Vec<UserChange> = page
            .iter()
            .filter(|(u, _)| only.is_none_or(|ids| ids.contains(&u.object_id)))
            .map(|(u, in_scope)| change_of(u, *in_scope, &ctx.provisioning))
            .collect();
        if !changes.is_empty() {
            let count_users = dry_run && first;
            first = false;
            let (outcomes, total_users) = ctx
                .registry
                .update_users(run_id, &changes, dry_run, count_users, ctx.peer_retry())
                .await?;
            result.total_users = result.total_users.max(total_users);
            for (outcome, change) in outcomes.into_iter().zip(&changes) {
                let disables = match outcome.kind {
                    UpdateKind::Deleted => true,
                    UpdateKind::Updated => {
                        outcome.changed.iter().any(|c| c == "enabled")
                            && change.enabled == Some(false)
                    }
                    _ => continue,
                };
                result.changing.insert(change.object_id.clone());
                result.disabled += u64::from(disables);
                if result.listed.len() < LISTED {
                    result.listed.push(outcome);
                } else {
                    result.truncated = true;
                }
            }
        }
        if !full_page {
            break;
        }
    }
    Ok(result)
}

/// Imports the users `run_id` saw for the first time (members of the synced groups, when
/// groups are configured) through import-worker, into `company`. Each page is one select
/// import whose request id is derived from the run, so a retried round reports, rather than
/// repeats, what it did. Answers the users created (or, with `dry_run`, that would be).
async fn auto_import(
    ctx: &SyncContext,
    importer: &crate::clients::Importer,
    run_id: &str,
    dry_run: bool,
    effects: &mut Effects,
) -> Result<(), Error> {
    let company = &ctx.provisioning.auto_import_company;
    let mut after = String::new();
    for page_no in 0.. {
        let ids = {
            let mut conn = ctx.conn().await?;
            store::new_in_run(
                &mut conn,
                &ctx.tenant_id,
                run_id,
                !ctx.groups.is_empty(),
                &after,
                PAGE,
            )
            .await?
        };
        let Some(last) = ids.last() else {
            break;
        };
        after = last.clone();
        let full_page = ids.len() == PAGE as usize;
        let outcomes = importer
            .import_selected(
                ids,
                company,
                dry_run,
                format!("sync-{run_id}-{page_no}"),
                ctx.peer_retry(),
            )
            .await?;
        for outcome in outcomes {
            if outcome.kind != ImportKind::Created {
                continue;
            }
            effects.imported += 1;
            if effects.imports.len() < LISTED {
                effects.imports.push(outcome);
            } else {
                effects.truncated = true;
            }
        }
        if !full_page {
            break;
        }
    }
    if effects.imported > 0 && !dry_run {
        tracing::info!(run_id, created = effects.imported, %company, "new directory users imported");
    }
    Ok(())
}

/// Has import-worker reconcile the group-to-role rules, as made through `run_id`.
async fn reconcile_rules(
    ctx: &SyncContext,
    importer: &crate::clients::Importer,
    run_id: &str,
    dry_run: bool,
) -> Result<RuleChanges, Error> {
    importer
        .reconcile_role_rules(run_id, dry_run, ctx.peer_retry())
        .await
}

/// True while no full round of the tenant has succeeded yet (this one still runs).
async fn first_full_sync(ctx: &SyncContext) -> bool {
    let Ok(mut conn) = ctx.conn().await else {
        return true;
    };
    !store::has_completed_full_sync(&mut conn, &ctx.tenant_id)
        .await
        .unwrap_or(false)
}

/// The steps after a complete round `run_id`: registry updates (unless the safety rail halts
/// them and the run is not approved), auto-import, then the group-to-role rules.
pub async fn after_round(ctx: &SyncContext, run_id: &str, mode: Mode) -> Result<Effects, Error> {
    after_round_within(ctx, run_id, mode, None).await
}

/// [`after_round`] for a SCIM run (`pushed`: the users disabled by the SCIM runs of a sliding
/// window before this one). The safety rail counts them with the run's own: pushes come a few
/// at a time, and a mass disable pushed over an hour must halt as one round would. Auto-import
/// applies to every SCIM run: users Entra pushes are the ones assigned to the application,
/// and there is no first full read to leave to an administrator's batch import.
pub async fn after_round_within(
    ctx: &SyncContext,
    run_id: &str,
    mode: Mode,
    pushed: Option<u64>,
) -> Result<Effects, Error> {
    let recent_disables = pushed.unwrap_or(0);
    let config = &ctx.provisioning;
    let mut effects = Effects::default();
    if config.update_registry {
        // The dry run finds the users whose registry entry changes; only they are sent again.
        let found = pass(ctx, run_id, None).await?;
        if mode == (Mode::Apply { approved: false }) {
            let by_share = (found.total_users as f64 * config.max_disable_share).floor() as u64;
            let disabled = found.disabled + recent_disables;
            if found.disabled > 0 && (disabled > config.max_disable_count || disabled > by_share) {
                tracing::warn!(
                    run_id,
                    would_disable = found.disabled,
                    recent_disables,
                    total_users = found.total_users,
                    max_count = config.max_disable_count,
                    max_share = config.max_disable_share,
                    "sync round halted: it would disable too many users; approve or reject it"
                );
                effects.halted = Some((found.disabled, found.total_users));
                // What approving it would write, for the administrator who decides.
                effects.updated = found.changing.len() as u64;
                effects.disabled = found.disabled;
                effects.updates = found.listed;
                effects.truncated = found.truncated;
                return Ok(effects);
            }
        }
        let done = match mode {
            Mode::Preview => found,
            Mode::Apply { .. } if found.changing.is_empty() => found,
            Mode::Apply { .. } => {
                let done = pass(ctx, run_id, Some(&found.changing)).await?;
                tracing::info!(
                    run_id,
                    updated = done.changing.len(),
                    disabled = done.disabled,
                    "round's changes applied to the registry"
                );
                done
            }
        };
        effects.updated = done.changing.len() as u64;
        effects.disabled = done.disabled;
        effects.updates = done.listed;
        effects.truncated |= done.truncated;
    }
    let dry_run = mode == Mode::Preview;
    let Some(importer) = &ctx.importer else {
        if config.auto_import {
            tracing::warn!("provisioning.auto_import is on but importer_url is empty");
        }
        return Ok(effects);
    };
    // The tenant's first full read finds everyone "new": that is a batch import for an
    // administrator to start, not an automatic one.
    if config.auto_import && (pushed.is_some() || !first_full_sync(ctx).await) {
        auto_import(ctx, importer, run_id, dry_run, &mut effects).await?;
    }
    if config.apply_role_rules {
        let rules = reconcile_rules(ctx, importer, run_id, dry_run).await?;
        effects.truncated |= rules.truncated;
        effects.rules = Some(rules);
    }
    Ok(effects)
}
