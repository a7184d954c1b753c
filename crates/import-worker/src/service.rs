//! import-worker's use cases: the select import, and reading jobs and their reports.

use std::collections::{HashMap, HashSet};

use service_runtime::storage::Database;

use crate::clients::{Directory, Registry};
use crate::domain::{Counts, Job, JobKind, JobStatus, MappingConfig, Outcome, map_user};
use crate::error::Error;
use crate::store;

/// Most object ids one select import takes (the registry's per-call limit).
pub const MAX_SELECTED: usize = 1000;

/// What a select import asks for, validated at the edge.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Lower-case object ids, in the caller's order (repeats allowed).
    pub object_ids: Vec<String>,
    /// The caller's current company (upper-case code).
    pub company: String,
    /// Idempotency key of the call; the job id.
    pub request_id: String,
    /// The calling principal.
    pub created_by: String,
}

/// import-worker over its job store and the other two services.
#[derive(Debug, Clone)]
pub struct Importer {
    db: Database,
    directory: Directory,
    registry: Registry,
    mapping: MappingConfig,
}

impl Importer {
    /// A pooled connection for one read or write outside a transaction.
    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, Error> {
        self.db
            .pool()
            .acquire()
            .await
            .map_err(Error::internal("acquire"))
    }

    pub fn new(
        db: Database,
        directory: Directory,
        registry: Registry,
        mapping: MappingConfig,
    ) -> Self {
        Self {
            db,
            directory,
            registry,
            mapping,
        }
    }

    /// Imports the selected users now (D365 "Import users"): each gets the caller's company
    /// as default company and no roles. Answers one outcome per requested id, in order.
    ///
    /// Whole-request problems (unknown company, object ids the directory does not know) are
    /// refused before anything is written. Per-user problems (a guest without mail, a user
    /// the registry rejects) fail that user alone.
    pub async fn import_selected(
        &self,
        selection: Selection,
        now_ms: i64,
    ) -> Result<(Vec<Outcome>, Counts), Error> {
        if !self.registry.company_exists(&selection.company).await? {
            return Err(Error::UnknownCompany(selection.company));
        }
        let mut seen = HashSet::with_capacity(selection.object_ids.len());
        let unique: Vec<String> = selection
            .object_ids
            .iter()
            .filter(|id| seen.insert(*id))
            .cloned()
            .collect();
        let (users, not_found) = self.directory.get_users(&unique).await?;
        if !not_found.is_empty() {
            return Err(Error::NotFound(format!(
                "the directory has no user with object id {}",
                not_found.join(", ")
            )));
        }

        let mut by_id: HashMap<String, Outcome> = HashMap::with_capacity(unique.len());
        let mut candidates = Vec::with_capacity(users.len());
        for user in &users {
            match map_user(user, &self.mapping) {
                Ok(candidate) => candidates.push(candidate),
                Err(reason) => {
                    by_id.insert(
                        user.object_id.clone(),
                        Outcome::skipped(user.object_id.clone(), reason),
                    );
                }
            }
        }
        if !candidates.is_empty() {
            let outcomes = self
                .registry
                .import_users(&selection.request_id, &selection.company, &candidates)
                .await?;
            by_id.extend(outcomes.into_iter().map(|o| (o.object_id.clone(), o)));
        }
        let outcomes: Vec<Outcome> = selection
            .object_ids
            .iter()
            .map(|id| {
                by_id
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| Outcome::skipped(id.clone(), "no outcome reported"))
            })
            .collect();
        let counts = Counts::of(&outcomes);
        self.record(&selection, &outcomes, counts, now_ms).await?;
        Ok((outcomes, counts))
    }

    /// Records a finished select import and its report, once per request id.
    async fn record(
        &self,
        selection: &Selection,
        outcomes: &[Outcome],
        counts: Counts,
        now_ms: i64,
    ) -> Result<(), Error> {
        let job = Job {
            job_id: selection.request_id.clone(),
            kind: JobKind::Select,
            status: JobStatus::Completed,
            company: selection.company.clone(),
            created_by: selection.created_by.clone(),
            planned: counts.total(),
            counts,
            created_at_ms: now_ms,
            started_at_ms: now_ms,
            finished_at_ms: now_ms,
            error: String::new(),
        };
        let mut tx = self
            .db
            .begin_write()
            .await
            .map_err(Error::internal("begin record"))?;
        if store::insert_job(&mut tx, &job).await? {
            store::insert_outcomes(&mut tx, self.db.backend(), &job.job_id, outcomes).await?;
        }
        tx.commit()
            .await
            .map_err(Error::internal("commit record"))?;
        Ok(())
    }

    pub async fn job(&self, job_id: &str) -> Result<Job, Error> {
        let mut conn = self.conn().await?;
        store::job(&mut conn, job_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("job {job_id} not found")))
    }

    pub async fn jobs(
        &self,
        status: Option<JobStatus>,
        before: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<Job>, Error> {
        let mut conn = self.conn().await?;
        store::list_jobs(&mut conn, status, before, limit).await
    }

    /// A page of a job's report; `NotFound` for an unknown job.
    pub async fn outcomes(
        &self,
        job_id: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<Outcome>, Error> {
        let mut conn = self.conn().await?;
        if store::job(&mut conn, job_id).await?.is_none() {
            return Err(Error::NotFound(format!("job {job_id} not found")));
        }
        store::list_outcomes(&mut conn, job_id, after, limit).await
    }
}
