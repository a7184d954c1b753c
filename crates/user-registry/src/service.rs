//! The registry's use cases, independent of gRPC: import a batch, look users up, list them,
//! manage companies.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use service_runtime::storage::{Database, is_transient_conflict};

use crate::domain::user_id::{base_user_id, candidate, user_key};
use crate::domain::{Company, CompanyCode, ImportOutcome, NewUser, OutcomeKind, RegistryUser};
use crate::error::Error;
use crate::store::{self, InsertRow, ObjectKey, UserFilter};

/// Most users accepted by one `ImportUsers` call.
pub const MAX_USERS_PER_IMPORT: usize = 1000;
/// Most object ids accepted by one `CheckImported` call.
pub const MAX_IDS_PER_CHECK: usize = 1000;
/// Allocation rounds before a user whose every candidate id is taken fails alone.
const MAX_ALLOCATION_ROUNDS: usize = 32;
/// Attempts of a whole import transaction that hit a deadlock or a busy database.
const MAX_TRANSACTION_ATTEMPTS: u32 = 8;

/// The registry's use cases over its database.
#[derive(Debug, Clone)]
pub struct Registry {
    db: Database,
}

/// A user of an import: either valid, or already failed with a reason.
pub type ImportItem = Result<NewUser, (String, Error)>;

impl Registry {
    pub fn new(db: Database) -> Self {
        Self { db }
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
        import_id: &str,
        company: CompanyCode,
        items: Vec<ImportItem>,
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
            import_id,
            company: &company,
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
            match self.import_once(batch, users, now_ms).await {
                Err(Error::Internal(e))
                    if attempt < MAX_TRANSACTION_ATTEMPTS
                        && e.downcast_ref::<sqlx::Error>()
                            .is_some_and(is_transient_conflict) =>
                {
                    tracing::warn!(attempt, error = %e, "import transaction conflicted, retrying");
                    tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
                }
                other => return other,
            }
        }
    }

    async fn import_once(
        &self,
        batch: &Batch<'_>,
        users: &[(usize, NewUser)],
        now_ms: i64,
    ) -> Result<Vec<(usize, ImportOutcome)>, Error> {
        let backend = self.db.backend();
        let mut tx = self
            .db
            .begin_write()
            .await
            .map_err(Error::internal("begin import"))?;
        if !store::company_exists(&mut tx, batch.company).await? {
            return Err(Error::UnknownCompany(batch.company.to_string()));
        }
        let mut result = Vec::with_capacity(users.len());
        // Every pending user with the id it claims this round. Ordered by object id, so the
        // n-th claimant of a base is the same whatever order the caller sent.
        let mut pending: Vec<Pending<'_>> = users
            .iter()
            .map(|(index, user)| {
                let base = base_user_id(&user.network_alias);
                Pending {
                    index: *index,
                    user,
                    user_id: base.clone(),
                    base,
                }
            })
            .collect();
        pending.sort_by(|a, b| a.user.object_id.cmp(&b.user.object_id));

        for round in 0.. {
            if pending.is_empty() {
                break;
            }
            let keys: Vec<String> = pending.iter().map(|p| user_key(&p.user_id)).collect();
            let rows: Vec<InsertRow<'_>> = pending
                .iter()
                .zip(&keys)
                .enumerate()
                .map(|(ord, (p, key))| InsertRow {
                    ord,
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
            let inserted = store::insert_users(
                &mut tx,
                backend,
                &rows,
                batch.company,
                batch.import_id,
                now_ms,
            )
            .await?;
            let inserted: HashSet<ObjectKey> = inserted.into_iter().collect();
            let (created, rest): (Vec<_>, Vec<_>) = pending
                .into_iter()
                .partition(|p| inserted.contains(&p.key()));
            result.extend(
                created
                    .into_iter()
                    .map(|p| (p.index, p.outcome(OutcomeKind::Created, p.user_id.clone()))),
            );
            if rest.is_empty() {
                break;
            }

            // Skipped rows either exist already (same object id) or collided on the user id.
            let rest_keys: Vec<ObjectKey> = rest.iter().map(Pending::key).collect();
            let existing: HashMap<ObjectKey, RegistryUser> =
                store::find_users(&mut tx, backend, &rest_keys)
                    .await?
                    .into_iter()
                    .map(|u| {
                        (
                            ObjectKey {
                                tenant_id: u.tenant_id.clone(),
                                object_id: u.object_id.clone(),
                            },
                            u,
                        )
                    })
                    .collect();
            let mut collided = Vec::new();
            for p in rest {
                match existing.get(&p.key()) {
                    Some(user) if user.created_by_import == batch.import_id => {
                        result.push((
                            p.index,
                            p.outcome(OutcomeKind::Created, user.user_id.clone()),
                        ));
                    }
                    Some(user) => result.push((
                        p.index,
                        p.outcome(OutcomeKind::AlreadyPresent, user.user_id.clone()),
                    )),
                    None => collided.push(p),
                }
            }
            if collided.is_empty() {
                break;
            }
            if round + 1 >= MAX_ALLOCATION_ROUNDS {
                for p in collided {
                    let reason = format!(
                        "no free user id derived from {:?} after {MAX_ALLOCATION_ROUNDS} attempts",
                        p.base
                    );
                    result.push((
                        p.index,
                        ImportOutcome::failed(p.user.object_id.clone(), reason),
                    ));
                }
                break;
            }
            pending = assign_suffixes(&mut tx, backend, collided).await?;
        }
        tx.commit()
            .await
            .map_err(Error::internal("commit import"))?;
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
        let mut conn = self
            .db
            .pool()
            .acquire()
            .await
            .map_err(Error::internal("acquire"))?;
        store::imported_object_ids(&mut conn, self.db.backend(), tenant_id, object_ids).await
    }

    /// The user with this user id (case-insensitive).
    pub async fn user_by_user_id(&self, user_id: &str) -> Result<RegistryUser, Error> {
        let mut conn = self
            .db
            .pool()
            .acquire()
            .await
            .map_err(Error::internal("acquire"))?;
        store::user_by_user_id(&mut conn, user_id)
            .await?
            .ok_or_else(|| Error::UserNotFound(user_id.to_owned()))
    }

    /// The user with this directory identity.
    pub async fn user_by_object(&self, key: &ObjectKey) -> Result<RegistryUser, Error> {
        let mut conn = self
            .db
            .pool()
            .acquire()
            .await
            .map_err(Error::internal("acquire"))?;
        store::user_by_object(&mut conn, key).await?.ok_or_else(|| {
            Error::UserNotFound(format!(
                "with object id {} in tenant {}",
                key.object_id, key.tenant_id
            ))
        })
    }

    /// One page of users after `after_key`, at most `limit`.
    pub async fn list_users(
        &self,
        filter: &UserFilter,
        after_key: &str,
        limit: u32,
    ) -> Result<Vec<RegistryUser>, Error> {
        let mut conn = self
            .db
            .pool()
            .acquire()
            .await
            .map_err(Error::internal("acquire"))?;
        store::list_users(&mut conn, filter, after_key, limit).await
    }

    pub async fn list_companies(&self) -> Result<Vec<Company>, Error> {
        let mut conn = self
            .db
            .pool()
            .acquire()
            .await
            .map_err(Error::internal("acquire"))?;
        store::list_companies(&mut conn).await
    }

    /// Creates a company; fails if the code is taken.
    pub async fn create_company(&self, company: &Company, now_ms: i64) -> Result<(), Error> {
        let mut conn = self
            .db
            .pool()
            .acquire()
            .await
            .map_err(Error::internal("acquire"))?;
        store::insert_company(&mut conn, company, now_ms).await
    }

    /// Creates each configured company that does not exist yet.
    pub async fn ensure_companies(&self, companies: &[Company], now_ms: i64) -> Result<(), Error> {
        let mut conn = self
            .db
            .pool()
            .acquire()
            .await
            .map_err(Error::internal("acquire"))?;
        for company in companies {
            store::ensure_company(&mut conn, company, now_ms).await?;
        }
        Ok(())
    }
}

/// What every user of one import shares.
struct Batch<'a> {
    import_id: &'a str,
    company: &'a CompanyCode,
}

/// A user waiting for an id: its base id and the candidate it claims this round.
struct Pending<'a> {
    index: usize,
    user: &'a NewUser,
    base: String,
    user_id: String,
}

impl Pending<'_> {
    fn key(&self) -> ObjectKey {
        ObjectKey {
            tenant_id: self.user.tenant_id.clone(),
            object_id: self.user.object_id.clone(),
        }
    }

    fn outcome(&self, kind: OutcomeKind, user_id: String) -> ImportOutcome {
        let note = if self.user.name_truncated {
            format!(
                "display name truncated to {} characters",
                crate::domain::user::MAX_NAME_LEN
            )
        } else {
            String::new()
        };
        ImportOutcome {
            object_id: self.user.object_id.clone(),
            kind,
            user_id,
            reason: String::new(),
            note,
        }
    }
}

/// Gives every collided user the next free number of its base, claimed from the counters.
async fn assign_suffixes<'a>(
    tx: &mut sqlx::AnyConnection,
    backend: service_runtime::storage::Backend,
    collided: Vec<Pending<'a>>,
) -> Result<Vec<Pending<'a>>, Error> {
    // Sorted by base, so concurrent imports lock counter rows in the same order.
    let mut by_base: BTreeMap<String, u64> = BTreeMap::new();
    for p in &collided {
        *by_base.entry(p.base.clone()).or_default() += 1;
    }
    let counts: Vec<(String, u64)> = by_base.into_iter().collect();
    let mut next = store::claim_suffixes(tx, backend, &counts).await?;
    let mut assigned = Vec::with_capacity(collided.len());
    for mut p in collided {
        let number = next
            .get_mut(&p.base)
            .ok_or_else(|| anyhow::anyhow!("no suffix claimed for {}", p.base))?;
        p.user_id = candidate(&p.base, *number);
        *number += 1;
        assigned.push(p);
    }
    Ok(assigned)
}
