//! Group-to-role rules (issue 8): members of a directory group get a role, in one company or
//! in every company.
//!
//! import-worker stores the rules; the registry keeps each rule's grants apart from everyone
//! else's (source `rule:<rule id>`). Reconciling a rule reads its group's members from
//! directory-sync and the users holding the rule's grant from the registry, then grants the
//! difference one way and revokes it the other — so a rule only ever revokes what it granted,
//! never an administrator's grant of the same role. The members are read completely before
//! anything is revoked: a directory-sync that fails mid-stream revokes nothing.
//!
//! Rules are reconciled when one is added or removed, after every sync round (directory-sync
//! calls ReconcileRoleRules) and after every import that created users. Reconciling twice is
//! harmless: each grant and revoke is idempotent in the registry.

use std::collections::{BTreeMap, BTreeSet};

use proto::directory::v1 as directory_pb;

use crate::clients::RuleGrantCall;
use crate::domain::{Job, RoleRule, RuleChanges};
use crate::error::Error;
use crate::service::{Importer, MAX_SELECTED};
use crate::store;

/// A user, as the registry keys it.
type Holder = (String, String);

impl Importer {
    /// Every rule, those being removed included (marked).
    pub async fn role_rules(&self) -> Result<Vec<RoleRule>, Error> {
        let mut conn = self.conn().await?;
        store::rules(&mut conn).await
    }

    /// Adds a rule and grants its role to the group's members the registry holds, as
    /// `actor`. A rule with the same group, role and company is answered (and reconciled)
    /// instead of a second one, so a retried call does not add two. With `dry_run`, the rule
    /// is validated and its grants reported; nothing is stored or granted.
    pub async fn add_role_rule(
        &self,
        actor: &str,
        rule: RoleRule,
        dry_run: bool,
    ) -> Result<(RoleRule, RuleChanges), Error> {
        self.directory()
            .check_group(&rule.group_id)
            .await
            .map_err(|error| match error {
                Error::Upstream { message, .. } => Error::FailedPrecondition(format!(
                    "group {} cannot be read from directory-sync ({message}); a rule's group \
                     must be one of directory-sync's sync.groups",
                    rule.group_id
                )),
                other => other,
            })?;
        // The registry validates the role and company (and that the role may be granted in
        // that company) before anything is stored.
        self.registry()
            .apply_rule_grants(
                actor,
                RuleGrantCall {
                    rule: &rule,
                    tenant_id: "",
                    grant: Vec::new(),
                    revoke: Vec::new(),
                    via: "",
                    dry_run: true,
                },
            )
            .await?;
        if dry_run {
            // The same rule again changes what the stored one has not done yet.
            let existing = self.role_rules().await?.into_iter().find(|r| {
                (&r.group_id, &r.role_id, &r.company)
                    == (&rule.group_id, &rule.role_id, &rule.company)
            });
            let rule = existing.unwrap_or(rule);
            let via = format!("rule:{}", rule.rule_id);
            let changes = self
                .reconcile_rule(actor, &rule, &via, true, Reconcile::Both)
                .await?;
            return Ok((rule, changes));
        }
        let stored = {
            let mut conn = self.conn().await?;
            store::insert_rule(&mut conn, &rule).await?
        };
        if stored.removing {
            return Err(Error::FailedPrecondition(format!(
                "rule {} for this group, role and company is being removed; remove it again to \
                 finish, then add it",
                stored.rule_id
            )));
        }
        let _guard = self.reconciling().lock().await;
        let via = format!("rule:{}", stored.rule_id);
        let changes = self
            .reconcile_rule(actor, &stored, &via, false, Reconcile::Both)
            .await?;
        tracing::info!(
            rule_id = %stored.rule_id,
            group_id = %stored.group_id,
            role_id = %stored.role_id,
            company = %stored.company,
            granted = changes.granted,
            "role rule added"
        );
        Ok((stored, changes))
    }

    /// Removes a rule and revokes every grant it made (and nothing else). The rule is marked
    /// first, so a removal that fails part-way is finished by a retry or the next reconcile.
    pub async fn remove_role_rule(
        &self,
        actor: &str,
        rule_id: &str,
        dry_run: bool,
    ) -> Result<RuleChanges, Error> {
        let rule = {
            let mut conn = self.conn().await?;
            store::rule(&mut conn, rule_id)
                .await?
                .ok_or_else(|| Error::NotFound(format!("rule {rule_id} not found")))?
        };
        let removing = RoleRule {
            removing: true,
            ..rule
        };
        let via = format!("rule:{rule_id}");
        if dry_run {
            return self
                .reconcile_rule(actor, &removing, &via, true, Reconcile::Both)
                .await;
        }
        {
            let mut conn = self.conn().await?;
            store::mark_rule_removing(&mut conn, rule_id).await?;
        }
        let _guard = self.reconciling().lock().await;
        let changes = self
            .reconcile_rule(actor, &removing, &via, false, Reconcile::Both)
            .await?;
        let mut conn = self.conn().await?;
        store::delete_rule(&mut conn, rule_id).await?;
        tracing::info!(rule_id, revoked = changes.revoked, "role rule removed");
        Ok(changes)
    }

    /// Brings every rule's grants in line with its group now, as made through `via`. A rule
    /// that fails (its group unreadable, the registry unavailable) leaves its grants as they
    /// were and does not stop the others; the first failure is answered after all were tried.
    pub async fn reconcile_rules(
        &self,
        actor: &str,
        via: &str,
        dry_run: bool,
    ) -> Result<RuleChanges, Error> {
        self.reconcile_rules_as(actor, via, dry_run, Reconcile::Both)
            .await
    }

    async fn reconcile_rules_as(
        &self,
        actor: &str,
        via: &str,
        dry_run: bool,
        mode: Reconcile,
    ) -> Result<RuleChanges, Error> {
        let _guard = self.reconciling().lock().await;
        let rules = self.role_rules().await?;
        let mut all = RuleChanges::default();
        let mut first_error = None;
        for rule in &rules {
            if rule.removing && mode == Reconcile::GrantsOnly {
                continue;
            }
            match self.reconcile_rule(actor, rule, via, dry_run, mode).await {
                Ok(changes) => {
                    if rule.removing && !dry_run {
                        let mut conn = self.conn().await?;
                        store::delete_rule(&mut conn, &rule.rule_id).await?;
                    }
                    all.merge(changes);
                }
                Err(error) => {
                    tracing::warn!(rule_id = %rule.rule_id, %error, "role rule not reconciled");
                    first_error.get_or_insert(error);
                }
            }
        }
        if !dry_run && (all.granted > 0 || all.revoked > 0) {
            tracing::info!(
                via,
                granted = all.granted,
                revoked = all.revoked,
                "role rules reconciled"
            );
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(all),
        }
    }

    /// Grants `rule`'s role to its group's members that lack the rule's grant, and revokes it
    /// from holders no longer in the group (from every holder when the rule is being removed).
    async fn reconcile_rule(
        &self,
        actor: &str,
        rule: &RoleRule,
        via: &str,
        dry_run: bool,
        mode: Reconcile,
    ) -> Result<RuleChanges, Error> {
        // The registry grants only under rules registered with it (a leaked service token
        // cannot make one up unnoticed): register before granting — which also registers
        // rules stored before the registry knew rules — and retire before revoking the last.
        if !dry_run {
            if rule.removing {
                self.registry().retire_rule(&rule.rule_id).await?;
            } else {
                self.registry().register_rule(rule).await?;
            }
        }
        let started = std::time::Instant::now();
        let wanted = if rule.removing {
            BTreeSet::new()
        } else {
            self.group_members(&rule.group_id).await?
        };
        let members_read = started.elapsed();
        let held: BTreeSet<Holder> = self
            .registry()
            .rule_grant_holders(&rule.rule_id)
            .await?
            .into_iter()
            .collect();
        let holders_read = started.elapsed() - members_read;
        // Calls of at most MAX_SELECTED users, per tenant: grants first, then revokes.
        let granting = wanted.difference(&held).map(|holder| (holder, true));
        let revoking = held
            .difference(&wanted)
            .filter(|_| mode == Reconcile::Both)
            .map(|holder| (holder, false));
        let mut calls: BTreeMap<(&str, bool), Vec<Vec<String>>> = BTreeMap::new();
        for ((tenant, object), grant) in granting.chain(revoking) {
            let parts = calls.entry((tenant.as_str(), grant)).or_default();
            match parts.last_mut() {
                Some(part) if part.len() < MAX_SELECTED => part.push(object.clone()),
                _ => parts.push(vec![object.clone()]),
            }
        }
        let mut changes = RuleChanges::default();
        for ((tenant_id, grant), parts) in calls {
            for part in parts {
                let (grant, revoke) = if grant {
                    (part, Vec::new())
                } else {
                    (Vec::new(), part)
                };
                let call = RuleGrantCall {
                    rule,
                    tenant_id,
                    grant,
                    revoke,
                    via,
                    dry_run,
                };
                let made = self.registry().apply_rule_grants(actor, call).await?;
                made.into_iter().for_each(|c| changes.push(c));
            }
        }
        tracing::debug!(
            rule_id = %rule.rule_id,
            members = wanted.len(),
            holders = held.len(),
            granted = changes.granted,
            revoked = changes.revoked,
            members_ms = members_read.as_millis() as u64,
            holders_ms = holders_read.as_millis() as u64,
            apply_ms = (started.elapsed() - members_read - holders_read).as_millis() as u64,
            dry_run,
            "role rule reconciled"
        );
        Ok(changes)
    }

    /// The group's present members, read to the end (a failure part-way fails the whole).
    async fn group_members(&self, group_id: &str) -> Result<BTreeSet<Holder>, Error> {
        let mut members = BTreeSet::new();
        let mut stream = self
            .directory()
            .stream_users(Some(group_id), "", MAX_SELECTED as u32)
            .await?;
        while let Some(batch) = stream
            .message()
            .await
            .map_err(Error::upstream("directory-sync"))?
        {
            members.extend(
                batch
                    .users
                    .into_iter()
                    .filter(|u| {
                        !matches!(
                            u.deletion_state(),
                            directory_pb::DeletionState::SoftDeleted
                                | directory_pb::DeletionState::HardDeleted
                        )
                    })
                    .map(|u| (u.tenant_id, u.object_id)),
            );
        }
        Ok(members)
    }
}

/// What a reconcile may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reconcile {
    /// Grants to members lacking the rule's grant and revokes from holders who left.
    Both,
    /// Grants only (after an import).
    GrantsOnly,
}

/// After an import that created users: grants the rules' roles in the background (the new
/// users may be in a rule's group), as made through the import; it never revokes, so a
/// reconcile delayed past a sync round held for approval cannot apply that round's leavers.
/// A failure is logged; the next sync round's reconcile makes up for it.
pub fn after_import(importer: &Importer, actor: &str, via: &str) {
    let (importer, actor, via) = (importer.clone(), actor.to_owned(), via.to_owned());
    tokio::spawn(async move {
        match importer.has_rules().await {
            Ok(false) => {}
            Ok(true) => {
                // Grants only: the new users may be in a rule's group, and an import has no
                // word on who left one (a round does, and may be waiting for approval).
                let reconciled = importer
                    .reconcile_rules_as(&actor, &via, false, Reconcile::GrantsOnly)
                    .await;
                if let Err(error) = reconciled {
                    tracing::warn!(%via, %error, "role rules not reconciled after an import; the next sync round will");
                }
            }
            Err(error) => tracing::warn!(%via, %error, "cannot read the role rules"),
        }
    });
}

/// After a job ended having created users: reconciles the rules as made through the job.
pub fn after_job(importer: &Importer, job: &Job) {
    if job.status.is_terminal() && job.counts.created > 0 {
        after_import(importer, &job.created_by, &job.job_id);
    }
}

impl Importer {
    async fn has_rules(&self) -> Result<bool, Error> {
        Ok(!self.role_rules().await?.is_empty())
    }
}
