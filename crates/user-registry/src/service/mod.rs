//! The registry's use cases, independent of gRPC: import a batch, look users up, list them,
//! manage companies.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use service_runtime::storage::{Backend, Database, is_transient_conflict, is_unique_violation};

use crate::domain::audit::Action;
use crate::domain::user_id::{base_user_id, candidate, user_key};
use crate::domain::{Company, CompanyCode, ImportOutcome, NewUser, OutcomeKind, RegistryUser};
use crate::error::Error;
use crate::store::audit::{NewEvent, Origin};
use crate::store::{self, InsertRow, ObjectKey, UserFilter};

mod changes;
mod claims;
mod gates;
mod lanes;
mod rules;
mod updates;

pub use changes::{Caller, MAX_ROLES_PER_CALL, MAX_USERS_PER_CHANGE, RoleChange, Viewer};
pub use rules::{HOLDERS_PER_BATCH, RuleGrantChange, RuleGrants};
pub use updates::{ChangeItem, MAX_CHANGES_PER_CALL};

/// Most users accepted by one `ImportUsers` call.
pub const MAX_USERS_PER_IMPORT: usize = 1000;
/// Most object ids accepted by one `CheckImported` call.
pub const MAX_IDS_PER_CHECK: usize = 1000;
/// Most import-state changes answered by one `ListImportChanges` call.
pub const MAX_IMPORT_CHANGES: u32 = 10_000;
/// Windows of candidate numbers tried before a user whose every candidate id is taken fails alone.
const MAX_ALLOCATION_ROUNDS: u32 = 24;
/// Attempts of a whole import transaction that hit a deadlock or a busy database.
const MAX_TRANSACTION_ATTEMPTS: u32 = 8;

/// The registry's use cases over its database.
#[derive(Debug, Clone)]
pub struct Registry {
    db: Database,
    /// User ids this process's imports are inserting (see `claims`).
    in_flight: std::sync::Arc<claims::InFlight>,
    /// Statements of this process's imports that run one at a time (see `lanes`).
    lanes: std::sync::Arc<lanes::Lanes>,
    /// Calls of one import id wait here while another makes its binding (see `gates`).
    gates: std::sync::Arc<gates::Gates>,
}

/// A user of an import: either valid, or already failed with a reason.
pub type ImportItem = Result<NewUser, (String, Error)>;

impl Registry {
    /// A pooled connection for one read or write outside a transaction.
    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, Error> {
        self.db
            .pool()
            .acquire()
            .await
            .map_err(Error::internal("acquire"))
    }

    pub fn new(db: Database) -> Self {
        Self {
            db,
            in_flight: Default::default(),
            lanes: Default::default(),
            gates: Default::default(),
        }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Imports a batch: one outcome per item, in order. Users are keyed by (tenant, object
    /// id); an existing user is reported as already present (or as created, when this same
    /// import created it, so a replay reports what the first run did) and is never changed.
    /// Either every user of the batch is committed or none is.
    pub async fn import_users(
        &self,
        caller: &ImportCaller,
        import_id: &str,
        company: CompanyCode,
        items: Vec<ImportItem>,
        dry_run: bool,
        now_ms: i64,
    ) -> Result<Vec<ImportOutcome>, Error> {
        if import_id.trim().is_empty() {
            return Err(Error::invalid("import_id", "must not be empty"));
        }
        if items.is_empty() {
            return Err(Error::invalid("users", "must not be empty"));
        }
        if items.len() > MAX_USERS_PER_IMPORT {
            return Err(Error::invalid(
                "users",
                format!(
                    "{} users in one call; the limit is {MAX_USERS_PER_IMPORT}",
                    items.len()
                ),
            ));
        }
        let mut outcomes: Vec<Option<ImportOutcome>> = vec![None; items.len()];
        // The first occurrence of each identity is imported; repeats copy its outcome.
        let mut first_index: HashMap<ObjectKey, usize> = HashMap::new();
        let mut repeats: Vec<(usize, usize)> = Vec::new();
        let mut users: Vec<(usize, NewUser)> = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            match item {
                Err((object_id, error)) => {
                    outcomes[index] = Some(ImportOutcome::failed(object_id, error.to_string()))
                }
                Ok(user) => {
                    let key = ObjectKey {
                        tenant_id: user.tenant_id.clone(),
                        object_id: user.object_id.clone(),
                    };
                    match first_index.get(&key) {
                        Some(&first) => repeats.push((index, first)),
                        None => {
                            first_index.insert(key, index);
                            users.push((index, user));
                        }
                    }
                }
            }
        }
        let batch = Batch {
            caller,
            import_id,
            company: &company,
            dry_run,
        };
        let resolved = self.import_with_retries(&batch, &users, now_ms).await?;
        for (index, outcome) in resolved {
            outcomes[index] = Some(outcome);
        }
        for (index, first) in repeats {
            outcomes[index] = outcomes[first].clone();
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| ImportOutcome::failed("", "internal: no outcome")))
            .collect())
    }

    async fn import_with_retries(
        &self,
        batch: &Batch<'_>,
        users: &[(usize, NewUser)],
        now_ms: i64,
    ) -> Result<Vec<(usize, ImportOutcome)>, Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self.import_once(batch, users, now_ms).await {
                Err(Error::Internal(e)) => e,
                other => return other,
            };
            let Some(database) = error.downcast_ref::<sqlx::Error>() else {
                return Err(Error::Internal(error));
            };
            let lost_race = is_unique_violation(database);
            if !lost_race && !is_transient_conflict(database) {
                return Err(Error::Internal(error));
            }
            if attempt >= MAX_TRANSACTION_ATTEMPTS {
                return Err(if lost_race {
                    Error::LostRace(format!(
                        "concurrent imports kept taking the same users or user ids \
                         ({attempt} attempts); import again"
                    ))
                } else {
                    Error::Internal(error)
                });
            }
            tracing::warn!(attempt, lost_race, error = %format!("{error:#}"), "import transaction conflicted, retrying");
            tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
        }
    }

    /// One attempt of the import transaction. It reads which of the users exist already and
    /// which of their base ids are taken (one statement), numbers the collided ones, and
    /// inserts the rest in one plain `INSERT`. A concurrent import elsewhere (another replica)
    /// that wins a race for an object id or a user id fails this insert with a unique
    /// violation, and the whole attempt is rolled back and run again, when its read sees the
    /// winner. `ON CONFLICT DO NOTHING` would settle such a race in place, but its speculative
    /// insertion cost a third more Postgres CPU per user for a race that claims make rare.
    async fn import_once(
        &self,
        batch: &Batch<'_>,
        users: &[(usize, NewUser)],
        now_ms: i64,
    ) -> Result<Vec<(usize, ImportOutcome)>, Error> {
        let backend = self.db.backend();
        // Before a connection is taken, so calls waiting here hold none.
        let mut gate = self.gates.pass(batch.import_id).await;
        let mut tx = self
            .db
            .begin_write()
            .await
            .map_err(Error::internal("begin import"))?;
        if !store::lock_company(&mut tx, backend, batch.company).await? {
            return Err(Error::UnknownCompany(batch.company.to_string()));
        }
        if !check_import_binding(&mut tx, batch, now_ms).await? {
            // Bound by an earlier call: nothing here for the next call of this id to wait on.
            gate.open();
        }
        // The users it inserts enter the import feed under this transaction's number.
        store::feed::number_transaction(&mut tx, backend).await?;
        let mut result = Vec::with_capacity(users.len());
        // Ordered by object id, so the n-th claimant of a base is the same whatever order the
        // caller sent.
        let mut pending: Vec<(usize, &NewUser)> = users.iter().map(|(i, u)| (*i, u)).collect();
        pending.sort_by(|a, b| a.1.object_id.cmp(&b.1.object_id));
        // User keys handed out by this transaction, held from other imports until it ends.
        let mut claimed = self.in_flight.hold();

        // One read answers both questions: which users exist, and which base ids are taken.
        let bases: Vec<(String, String)> = pending
            .iter()
            .map(|(_, u)| {
                let base = base_user_id(&u.network_alias);
                let key = user_key(&base);
                (base, key)
            })
            .collect();
        let probe_rows: Vec<(&str, &str, &str)> = pending
            .iter()
            .zip(&bases)
            .map(|((_, u), (_, key))| (u.tenant_id.as_str(), u.object_id.as_str(), key.as_str()))
            .collect();
        let store::Probe {
            existing,
            taken_keys: taken,
        } = store::probe(&mut tx, backend, &probe_rows).await?;
        let mut fresh: Vec<(Pending<'_>, String)> = Vec::with_capacity(pending.len());
        for ((index, user), (base, key)) in pending.into_iter().zip(bases) {
            match existing.get(&ObjectKey::of(user)) {
                // A replay of the import that created the user reports what it did then.
                Some(found) if found.created_by_import == batch.import_id => {
                    result.push((
                        index,
                        outcome(user, OutcomeKind::Created, found.user_id.clone()),
                    ));
                }
                Some(found) => {
                    result.push((
                        index,
                        outcome(user, OutcomeKind::AlreadyPresent, found.user_id.clone()),
                    ));
                }
                None => fresh.push((
                    Pending {
                        index,
                        user,
                        user_id: base.clone(),
                        base,
                    },
                    key,
                )),
            }
        }

        let (with_base, collided): (Vec<_>, Vec<_>) = fresh
            .into_iter()
            .partition(|(_, key)| !taken.contains(key) && claimed.claim(key));
        let mut ready: Vec<Pending<'_>> = with_base.into_iter().map(|(p, _)| p).collect();
        let collided: Vec<Pending<'_>> = collided.into_iter().map(|(p, _)| p).collect();
        if !collided.is_empty() {
            let (assigned, unassigned) = assign_suffixes(
                &self.db,
                &self.lanes,
                &mut tx,
                collided,
                &mut claimed,
                batch.dry_run,
            )
            .await?;
            for p in unassigned {
                let reason = format!("no free user id derived from {:?}", p.base);
                result.push((
                    p.index,
                    ImportOutcome::failed(p.user.object_id.clone(), reason),
                ));
            }
            ready.extend(assigned);
        }

        // In key order, so that inserts racing another replica's lock rows in one order
        // and wait rather than deadlock.
        ready.sort_by_cached_key(|p| user_key(&p.user_id));
        let ready_keys: Vec<String> = ready.iter().map(|p| user_key(&p.user_id)).collect();
        let rows: Vec<InsertRow<'_>> = ready
            .iter()
            .zip(&ready_keys)
            .map(|(p, key)| InsertRow {
                tenant_id: &p.user.tenant_id,
                object_id: &p.user.object_id,
                user_id: &p.user_id,
                user_key: key,
                network_alias: &p.user.network_alias,
                network_domain: &p.user.network_domain,
                email: &p.user.email,
                name: &p.user.name,
                enabled: p.user.enabled,
                account_type: p.user.account_type.as_str(),
            })
            .collect();
        if !rows.is_empty() {
            let _lane = self.lanes.users().await;
            store::insert_users(
                &mut tx,
                backend,
                &rows,
                batch.company,
                batch.import_id,
                now_ms,
            )
            .await?;
        }
        // Users this transaction inserted (not those a replay finds), for the audit trail.
        let created: Vec<NewEvent> = ready
            .iter()
            .map(|p| import_event(p.user, &p.user_id, batch.company))
            .collect();
        result.extend(ready.iter().map(|p| {
            (
                p.index,
                outcome(p.user, OutcomeKind::Created, p.user_id.clone()),
            )
        }));
        let origin = Origin {
            actor: &batch.caller.actor,
            service: &batch.caller.service,
            via: batch.import_id,
            at_ms: now_ms,
        };
        {
            let _lane = self.lanes.audit().await;
            store::audit::record(&mut tx, backend, origin, &created).await?;
        }
        if batch.dry_run {
            // Everything was worked out as the import would; none of it stays.
            tx.rollback()
                .await
                .map_err(Error::internal("roll back a dry run"))?;
            return Ok(result);
        }
        tx.commit()
            .await
            .map_err(Error::internal("commit import"))?;
        claimed.committed();
        Ok(result)
    }

    /// The object ids of `tenant_id` among `object_ids` that the registry holds.
    pub async fn check_imported(
        &self,
        tenant_id: &str,
        object_ids: &[String],
    ) -> Result<Vec<String>, Error> {
        if object_ids.len() > MAX_IDS_PER_CHECK {
            return Err(Error::invalid(
                "object_ids",
                format!(
                    "{} ids in one call; the limit is {MAX_IDS_PER_CHECK}",
                    object_ids.len()
                ),
            ));
        }
        if object_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        store::imported_object_ids(&mut conn, self.db.backend(), tenant_id, object_ids).await
    }

    /// The tenant's import-state changes after a position, in position order (at most
    /// `limit`, capped at [`MAX_IMPORT_CHANGES`]).
    pub async fn import_changes(
        &self,
        tenant_id: &str,
        after_seq: i64,
        after_object_id: &str,
        limit: u32,
    ) -> Result<Vec<store::feed::ImportChange>, Error> {
        let limit = match limit {
            0 => MAX_IMPORT_CHANGES,
            n => n.min(MAX_IMPORT_CHANGES),
        };
        let mut conn = self.conn().await?;
        store::feed::import_changes_after(
            &mut conn,
            self.db.backend(),
            tenant_id,
            after_seq,
            after_object_id,
            limit,
        )
        .await
    }

    /// Blanks `created_by_import` of users whose import is private to someone `viewer` is not,
    /// so a private job's id is not shown to others.
    pub async fn hide_private_imports(
        &self,
        viewer: &Viewer,
        users: &mut [RegistryUser],
    ) -> Result<(), Error> {
        if viewer.service {
            return Ok(());
        }
        let mut ids: Vec<&str> = users.iter().map(|u| u.created_by_import.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut conn = self.conn().await?;
        let hidden: HashSet<String> =
            store::bindings::private_imports(&mut conn, self.db.backend(), &ids)
                .await?
                .into_iter()
                .filter(|(_, actor)| !viewer.sees(actor))
                .map(|(id, _)| id)
                .collect();
        for user in users {
            if hidden.contains(&user.created_by_import) {
                user.created_by_import.clear();
            }
        }
        Ok(())
    }

    /// The user with this user id (case-insensitive).
    pub async fn user_by_user_id(&self, user_id: &str) -> Result<RegistryUser, Error> {
        let mut conn = self.conn().await?;
        store::user_by_user_id(&mut conn, user_id)
            .await?
            .ok_or_else(|| Error::UserNotFound(user_id.to_owned()))
    }

    /// The user with this directory identity.
    pub async fn user_by_object(&self, key: &ObjectKey) -> Result<RegistryUser, Error> {
        let mut conn = self.conn().await?;
        store::user_by_object(&mut conn, key).await?.ok_or_else(|| {
            Error::UserNotFound(format!(
                "with object id {} in tenant {}",
                key.object_id, key.tenant_id
            ))
        })
    }

    /// One page of users after `after_key`, at most `limit`.
    /// A private import's users are listed by import only to its person (and services); to
    /// anyone else such a listing is empty, and other listings do not name the import.
    pub async fn list_users(
        &self,
        viewer: &Viewer,
        filter: &UserFilter,
        after_key: &str,
        limit: u32,
    ) -> Result<Vec<RegistryUser>, Error> {
        let mut conn = self.conn().await?;
        if !filter.created_by_import.is_empty() && !viewer.service {
            let private = store::bindings::private_imports(
                &mut conn,
                self.db.backend(),
                &[filter.created_by_import.as_str()],
            )
            .await?;
            if private.iter().any(|(_, actor)| !viewer.sees(actor)) {
                return Ok(Vec::new());
            }
        }
        let mut users = store::list_users(&mut conn, filter, after_key, limit).await?;
        drop(conn);
        self.hide_private_imports(viewer, &mut users).await?;
        Ok(users)
    }

    pub async fn list_companies(&self) -> Result<Vec<Company>, Error> {
        let mut conn = self.conn().await?;
        store::list_companies(&mut conn).await
    }

    /// Creates a company; fails if the code is taken.
    pub async fn create_company(&self, company: &Company, now_ms: i64) -> Result<(), Error> {
        let mut conn = self.conn().await?;
        store::insert_company(&mut conn, company, now_ms).await
    }

    /// Creates each configured company that does not exist yet.
    pub async fn ensure_companies(&self, companies: &[Company], now_ms: i64) -> Result<(), Error> {
        let mut conn = self.conn().await?;
        for company in companies {
            store::ensure_company(&mut conn, company, now_ms).await?;
        }
        Ok(())
    }
}

/// Who sends an import: the authenticated principal, the person it is for (the same, unless
/// a service identity acts for someone), and whether the import is a private job.
#[derive(Debug, Clone)]
pub struct ImportCaller {
    pub principal: String,
    pub actor: String,
    /// The service identity acting for `actor`, or `''`.
    pub service: String,
    pub private: bool,
}

/// Binds the import id to its caller, person, company and privacy at its first call, and
/// refuses a later call that differs: an id is an idempotency key of one caller's one import,
/// never a way to record users against someone else's job. True when this call made the
/// binding.
async fn check_import_binding(
    tx: &mut sqlx::AnyConnection,
    batch: &Batch<'_>,
    now_ms: i64,
) -> Result<bool, Error> {
    let wanted = store::bindings::ImportBinding {
        import_id: batch.import_id.to_owned(),
        principal: batch.caller.principal.clone(),
        actor: batch.caller.actor.clone(),
        company: batch.company.to_string(),
        private: batch.caller.private,
    };
    let (bound, made) = store::bindings::bind_import(tx, &wanted, now_ms).await?;
    if bound == wanted {
        return Ok(made);
    }
    let what = if bound.principal != wanted.principal || bound.actor != wanted.actor {
        "another caller"
    } else if bound.company != wanted.company {
        "another company"
    } else {
        "another privacy setting"
    };
    Err(Error::IdempotencyKeyReused(format!(
        "import id {} was used by {what}; use a new import id",
        batch.import_id
    )))
}

/// What every user of one import shares.
struct Batch<'a> {
    caller: &'a ImportCaller,
    import_id: &'a str,
    company: &'a CompanyCode,
    /// Roll back instead of committing.
    dry_run: bool,
}

/// A user waiting for an id: its base id and the candidate it claims this round.
struct Pending<'a> {
    index: usize,
    user: &'a NewUser,
    base: String,
    user_id: String,
}

impl ObjectKey {
    fn of(user: &NewUser) -> Self {
        Self {
            tenant_id: user.tenant_id.clone(),
            object_id: user.object_id.clone(),
        }
    }
}

/// The audit event of a user an import created: the fields it was created with.
fn import_event(user: &NewUser, user_id: &str, company: &CompanyCode) -> NewEvent {
    let detail = serde_json::json!({
        "company": company.as_str(),
        "network_alias": user.network_alias,
        "name": user.name,
        "enabled": user.enabled,
        "account_type": user.account_type.as_str(),
    });
    NewEvent {
        action: Action::Import,
        tenant_id: user.tenant_id.clone(),
        object_id: user.object_id.clone(),
        user_id: user_id.to_owned(),
        detail: detail.to_string(),
    }
}

fn outcome(user: &NewUser, kind: OutcomeKind, user_id: String) -> ImportOutcome {
    let note = if user.name_truncated {
        format!(
            "display name truncated to {} characters",
            crate::domain::user::MAX_NAME_LEN
        )
    } else {
        String::new()
    };
    ImportOutcome {
        object_id: user.object_id.clone(),
        kind,
        user_id,
        reason: String::new(),
        note,
    }
}

/// Gives every collided user a free number of its base. Numbers come from a per-base counter
/// in blocks; the candidates of a block are checked against the taken ids in one statement and
/// the free ones are handed out in object id order. The first block is exactly what is needed,
/// so numbers normally run on without gaps (`john2`, `john3`); each further round doubles the
/// block, so a family whose numbers are taken by natural ids (`john.smith2` of
/// `john.smith2@…`) is skipped over in a few rounds rather than one number a round.
///
/// On Postgres a block is reserved on its own connection and committed at once, so concurrent
/// imports of common names never wait on each other's counter rows; a block whose import rolls
/// back leaves a gap, which only means a number is never used. SQLite's write transactions are
/// serial, so there the reservation joins the import's transaction.
async fn assign_suffixes<'a>(
    db: &Database,
    lanes: &lanes::Lanes,
    tx: &mut sqlx::AnyConnection,
    collided: Vec<Pending<'a>>,
    handed_out: &mut claims::Held<'_>,
    dry_run: bool,
) -> Result<(Vec<Pending<'a>>, Vec<Pending<'a>>), Error> {
    let backend = db.backend();
    // Sorted by base, so reservations touch counter rows in the same order everywhere.
    let mut needed: BTreeMap<String, usize> = BTreeMap::new();
    for p in &collided {
        *needed.entry(p.base.clone()).or_default() += 1;
    }
    let mut numbers: HashMap<String, Vec<u64>> = HashMap::new();
    for round in 0..MAX_ALLOCATION_ROUNDS {
        let growth = 1_u64 << round.min(20);
        let blocks: Vec<(String, u64)> = needed
            .iter()
            .map(|(base, n)| (base, n - numbers.get(base).map_or(0, Vec::len)))
            .filter(|(_, missing)| *missing > 0)
            .map(|(base, missing)| (base.clone(), missing as u64 * growth))
            .collect();
        if blocks.is_empty() {
            break;
        }
        let starts = match backend {
            // A dry run reserves inside its transaction, so its rollback gives the numbers
            // back and the real import then gets the same ones.
            Backend::Postgres if !dry_run => {
                // Not from the main pool: this transaction holds one of its connections, and
                // a full pool of such transactions would each wait for one more.
                let _lane = lanes.suffixes().await;
                let mut own = db.autonomous().await.map_err(Error::internal("acquire"))?;
                store::reserve_suffixes(&mut own, backend, &blocks).await?
            }
            Backend::Postgres | Backend::Sqlite => {
                store::reserve_suffixes(tx, backend, &blocks).await?
            }
        };
        let mut window: Vec<(&String, u64, String)> = Vec::new();
        for (base, size) in &blocks {
            let start = starts
                .get(base)
                .copied()
                .ok_or_else(|| anyhow::anyhow!("no block reserved for {base}"))?;
            window.extend((start..start + size).map(|n| (base, n, user_key(&candidate(base, n)))));
        }
        let keys: Vec<String> = window.iter().map(|(_, _, key)| key.clone()).collect();
        let taken = store::taken_user_keys(tx, backend, &keys).await?;
        for (base, n, key) in window {
            let got = numbers.entry(base.clone()).or_default();
            // Hand each key out once: another user of this batch may hold it as its base, and
            // two bases can yield one candidate (`ab1`+`2`, `ab`+`12`).
            if got.len() < needed[base] && !taken.contains(&key) && handed_out.claim(&key) {
                got.push(n);
            }
        }
    }

    let mut assigned = Vec::with_capacity(collided.len());
    let mut unassigned = Vec::new();
    for mut p in collided {
        match numbers
            .get_mut(&p.base)
            .and_then(|n| (!n.is_empty()).then(|| n.remove(0)))
        {
            Some(number) => {
                p.user_id = candidate(&p.base, number);
                assigned.push(p);
            }
            None => unassigned.push(p),
        }
    }
    Ok((assigned, unassigned))
}
