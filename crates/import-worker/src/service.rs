//! import-worker's use cases: the select import, batch jobs (started here, planned by
//! [`crate::planner`], processed by [`crate::chunks`]), run-now, and reading jobs and their
//! reports.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use service_runtime::storage::Database;

use crate::clients::{Directory, Registry};
use crate::domain::{
    BatchOptions, Counts, DirectoryUser, Job, JobKind, JobStatus, MappingConfig, Outcome,
    OutcomeKind, map_user,
};
use crate::error::Error;
use crate::queue::ChunkQueue;
use crate::store;

/// Most outcomes a batch preview lists (its counts are always complete).
pub const LISTED_PREVIEW_OUTCOMES: usize = 10_000;

/// What a batch import would do (a dry run).
#[derive(Debug, Clone, Default)]
pub struct BatchPreview {
    pub counts: Counts,
    /// In object id order; at most [`LISTED_PREVIEW_OUTCOMES`].
    pub outcomes: Vec<Outcome>,
    pub truncated: bool,
}

/// Most object ids one select import takes (the registry's per-call limit).
pub const MAX_SELECTED: usize = 1000;

/// What a select import asks for, validated at the edge.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Lower-case object ids, in the caller's order (repeats allowed).
    pub object_ids: Vec<String>,
    /// The caller's current company (upper-case code).
    pub company: String,
    /// Idempotency key of the call; the job id (see [`Importer::own_key`]).
    pub request_id: String,
    /// The caller chose `request_id` (else it is fresh, and nobody else's).
    pub key_given: bool,
    /// The calling principal.
    pub created_by: String,
    /// Report what the import would do and write nothing (no users, no job record).
    pub dry_run: bool,
    /// Refuse the whole call when an id is unknown (else it is that user's outcome).
    pub all_or_nothing: bool,
}

/// How this replica plans and processes batch jobs.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Users per chunk.
    pub chunk_size: u32,
    /// How long a planner's claim on a job lasts without renewal.
    pub planning_lease: Duration,
    /// Jobs this replica plans at once (a critical job is not held up by a big plan).
    pub concurrent_plans: usize,
    /// Batch groups whose chunks this replica processes.
    pub batch_groups: Vec<String>,
    /// This replica, as it appears as a planning lease owner.
    pub instance_id: String,
    /// How long a chunk failing for a passing cause (a dependency down) is held and retried
    /// before it goes back to its queue's tail; kept well under the broker's consumer timeout.
    pub chunk_retry_hold: Duration,
}

/// import-worker over its job store, the queue and the other two services. Cheap to clone.
#[derive(Clone)]
pub struct Importer {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    directory: Directory,
    registry: Registry,
    mapping: MappingConfig,
    queue: Arc<dyn ChunkQueue>,
    settings: WorkerSettings,
    /// Wakes the planner when a job is started here.
    wakeup: tokio::sync::Notify,
    /// One rule reconcile at a time in this replica: two would compute the same differences.
    reconciling: tokio::sync::Mutex<()>,
}

impl Importer {
    pub fn new(
        db: Database,
        directory: Directory,
        registry: Registry,
        mapping: MappingConfig,
        queue: Arc<dyn ChunkQueue>,
        settings: WorkerSettings,
    ) -> Self {
        let inner = Inner {
            db,
            directory,
            registry,
            mapping,
            queue,
            settings,
            wakeup: tokio::sync::Notify::new(),
            reconciling: tokio::sync::Mutex::new(()),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// A pooled connection for one read or write outside a transaction.
    pub(crate) async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, Error> {
        self.inner
            .db
            .pool()
            .acquire()
            .await
            .map_err(Error::internal("acquire"))
    }

    pub(crate) fn db(&self) -> &Database {
        &self.inner.db
    }

    pub(crate) fn directory(&self) -> &Directory {
        &self.inner.directory
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub(crate) fn queue(&self) -> &dyn ChunkQueue {
        self.inner.queue.as_ref()
    }

    pub(crate) fn settings(&self) -> &WorkerSettings {
        &self.inner.settings
    }

    pub(crate) fn reconciling(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.reconciling
    }

    pub(crate) fn wakeup(&self) -> &tokio::sync::Notify {
        &self.inner.wakeup
    }

    /// Maps directory users (`domain/mapping.rs`) and imports those that map under `import_id`; answers
    /// one outcome per user, in order. The registry call is idempotent by import id, so a
    /// replayed chunk or a retried request reports what the first one did.
    pub(crate) async fn import_users(
        &self,
        actor: &str,
        import_id: &str,
        company: &str,
        private: bool,
        users: &[DirectoryUser],
        dry_run: bool,
    ) -> Result<Vec<Outcome>, Error> {
        let mut by_id: HashMap<String, Outcome> = HashMap::with_capacity(users.len());
        let mut candidates = Vec::with_capacity(users.len());
        for user in users {
            match map_user(user, &self.inner.mapping) {
                Ok(candidate) => candidates.push(candidate),
                Err(reason) => {
                    by_id.insert(
                        user.object_id.clone(),
                        Outcome::skipped(user.object_id.clone(), reason),
                    );
                }
            }
        }
        for part in candidates.chunks(MAX_SELECTED) {
            let outcomes = self
                .inner
                .registry
                .import_users(actor, import_id, company, private, part, dry_run)
                .await?;
            by_id.extend(outcomes.into_iter().map(|o| (o.object_id.clone(), o)));
        }
        Ok(users
            .iter()
            .map(|u| {
                by_id
                    .remove(&u.object_id)
                    .unwrap_or_else(|| Outcome::skipped(u.object_id.clone(), "no outcome reported"))
            })
            .collect())
    }

    /// Imports the selected users now (D365 "Import users"): each gets the caller's company
    /// as default company and no roles. Answers one outcome per distinct requested id, in the
    /// order of their first occurrence (a repeated id is counted once).
    ///
    /// Whole-request problems (unknown company, object ids the directory does not know) are
    /// refused before anything is written. Per-user problems (a guest without mail, a user
    /// the registry rejects) fail that user alone.
    pub async fn import_selected(
        &self,
        mut selection: Selection,
        now_ms: i64,
    ) -> Result<(String, Vec<Outcome>, Counts), Error> {
        let digest = request_digest(&selection.company, &selection.object_ids);
        if selection.key_given {
            selection.request_id = self
                .own_key(
                    &selection.created_by,
                    &selection.request_id,
                    &selection.company,
                    &digest,
                )
                .await?;
        }
        if !self
            .inner
            .registry
            .company_exists(&selection.company)
            .await?
        {
            return Err(Error::UnknownCompany(selection.company));
        }
        let mut seen = HashSet::with_capacity(selection.object_ids.len());
        let unique: Vec<String> = selection
            .object_ids
            .iter()
            .filter(|id| seen.insert(*id))
            .cloned()
            .collect();
        let (users, not_found) = self.inner.directory.get_users(&unique).await?;
        if !not_found.is_empty() && selection.all_or_nothing {
            return Err(Error::NotFound(format!(
                "the directory has no user with object id {}",
                service_runtime::error::quote_some(&not_found)
            )));
        }
        // An id the directory does not know is that user's outcome; the others go ahead.
        let mut by_id: HashMap<String, Outcome> = not_found
            .iter()
            .map(|id| {
                let id = id.to_ascii_lowercase();
                (
                    id.clone(),
                    Outcome::skipped(id, "not in the directory: no user has this object id"),
                )
            })
            .collect();
        if !users.is_empty() {
            let imported = self
                .import_users(
                    &selection.created_by,
                    &selection.request_id,
                    &selection.company,
                    false,
                    &users,
                    selection.dry_run,
                )
                .await?;
            by_id.extend(imported.into_iter().map(|o| (o.object_id.clone(), o)));
        }
        // One outcome per distinct id: a repeated id is one user, imported and counted once.
        let outcomes: Vec<Outcome> = unique
            .iter()
            .map(|id| {
                by_id
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| Outcome::skipped(id.clone(), "no outcome reported"))
            })
            .collect();
        let counts = Counts::of(&outcomes);
        if !selection.dry_run {
            self.record(&selection, &digest, &outcomes, counts, now_ms)
                .await?;
            if counts.created > 0 {
                crate::rules::after_import(self, &selection.created_by, &selection.request_id);
            }
        }
        Ok((selection.request_id, outcomes, counts))
    }

    /// The job id a caller's idempotency key stands for: the key itself, unless another
    /// principal's job holds it — then an id derived from (principal, key), so one caller's
    /// key never names, or records users against, someone else's job. The same key sent
    /// again by its caller with another request (other ids, another company) is refused.
    pub async fn own_key(
        &self,
        principal: &str,
        key: &str,
        company: &str,
        digest: &str,
    ) -> Result<String, Error> {
        let mut conn = self.conn().await?;
        let candidates = [key.to_owned(), derived_key(principal, key)];
        for candidate in candidates {
            match store::job_request(&mut conn, &candidate).await? {
                None => return Ok(candidate),
                Some(found) if found.created_by == principal => {
                    let same = found.kind == JobKind::Select.as_str()
                        && (found.digest == digest
                            || (found.digest.is_empty() && found.company == company));
                    if !same {
                        return Err(key_reused(key));
                    }
                    return Ok(candidate);
                }
                Some(_) => {}
            }
        }
        Err(key_reused(key))
    }

    /// Records a finished select import and its report, once per request id.
    async fn record(
        &self,
        selection: &Selection,
        digest: &str,
        outcomes: &[Outcome],
        counts: Counts,
        now_ms: i64,
    ) -> Result<(), Error> {
        let mut job = Job::new(
            selection.request_id.clone(),
            JobKind::Select,
            selection.company.clone(),
            selection.created_by.clone(),
            now_ms,
        );
        job.status = JobStatus::Completed;
        job.planned = counts.total();
        job.counts = counts;
        job.planning_done = true;
        job.started_at_ms = now_ms;
        job.finished_at_ms = now_ms;
        let mut tx = self
            .inner
            .db
            .begin_write()
            .await
            .map_err(Error::internal("begin record"))?;
        if store::insert_job(&mut tx, &job).await? {
            store::set_request_digest(&mut tx, &job.job_id, digest).await?;
            store::insert_outcomes(&mut tx, self.inner.db.backend(), &job.job_id, outcomes).await?;
        } else {
            // A concurrent call with the same key got there first: it must have asked the same.
            let found = store::job_request(&mut tx, &job.job_id).await?;
            if found.is_some_and(|f| !f.digest.is_empty() && f.digest != digest) {
                return Err(key_reused(&selection.request_id));
            }
        }
        tx.commit()
            .await
            .map_err(Error::internal("commit record"))?;
        Ok(())
    }

    /// Checks what a batch job will need before it is accepted: the company, and the group
    /// when the scope is one.
    async fn check_batch(&self, company: &str, scope_group: Option<&str>) -> Result<(), Error> {
        if !self.inner.registry.company_exists(company).await? {
            return Err(Error::UnknownCompany(company.to_owned()));
        }
        if let Some(group) = scope_group {
            self.inner.directory.check_group(group).await?;
        }
        Ok(())
    }

    /// Starts a batch import of every user in scope (D365 "Batch import"): the job is queued,
    /// and a planner (this replica's or another's) cuts it into chunks for the workers.
    pub async fn start_batch(
        &self,
        created_by: String,
        company: String,
        scope_group: Option<String>,
        options: BatchOptions,
        now_ms: i64,
    ) -> Result<Job, Error> {
        self.check_batch(&company, scope_group.as_deref()).await?;
        let mut job = Job::new(
            uuid::Uuid::new_v4().to_string(),
            JobKind::Batch,
            company,
            created_by,
            now_ms,
        );
        job.scope_group = scope_group;
        job.options = options;
        job.trace_parent = service_runtime::trace::current_headers()
            .remove("traceparent")
            .unwrap_or_default();
        let mut conn = self.conn().await?;
        store::insert_job(&mut conn, &job).await?;
        drop(conn);
        tracing::info!(
            job_id = %job.job_id,
            batch_group = job.batch_group(),
            critical = job.options.critical,
            monitoring_category = %job.options.monitoring_category,
            "batch import queued"
        );
        self.inner.wakeup.notify_one();
        Ok(job)
    }

    /// Runs a batch import within the request (D365's sandbox path): the same planning and
    /// chunk handling as a queued job, without the queue. Returns the ended job and every
    /// user that was not created.
    pub async fn run_now(
        &self,
        created_by: String,
        company: String,
        scope_group: Option<String>,
        clock: impl Fn() -> i64,
    ) -> Result<(Job, Vec<Outcome>), Error> {
        self.check_batch(&company, scope_group.as_deref()).await?;
        let mut job = Job::new(
            uuid::Uuid::new_v4().to_string(),
            JobKind::RunNow,
            company,
            created_by,
            clock(),
        );
        job.scope_group = scope_group;
        job.status = JobStatus::Planning;
        job.started_at_ms = clock();
        let mut conn = self.conn().await?;
        store::insert_job(&mut conn, &job).await?;
        drop(conn);
        let ended = crate::planner::run_in_request(self, &job, &clock).await?;
        let mut not_created = Vec::new();
        let mut after = String::new();
        loop {
            let mut conn = self.conn().await?;
            let page = store::list_outcomes(&mut conn, &job.job_id, &after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.object_id.clone();
            not_created.extend(page.into_iter().filter(|o| o.kind != OutcomeKind::Created));
        }
        Ok((ended, not_created))
    }

    /// Works out what a batch import of `scope_group` (or every user) into `company` would do,
    /// in the request, and writes nothing: the registry answers each part as a dry run. The
    /// outcomes are those the job would record, except that users whose ids collide across
    /// parts of 1000 may get other collision numbers in the real run (its chunks run in
    /// parallel, in an order no preview can know).
    pub async fn preview_batch(
        &self,
        created_by: &str,
        company: &str,
        scope_group: Option<&str>,
    ) -> Result<BatchPreview, Error> {
        self.check_batch(company, scope_group).await?;
        let preview_id = format!("preview-{}", uuid::Uuid::new_v4());
        let mut stream = self
            .inner
            .directory
            .stream_users(scope_group, "", MAX_SELECTED as u32)
            .await?;
        let mut preview = BatchPreview::default();
        while let Some(batch) = stream
            .message()
            .await
            .map_err(Error::upstream("directory-sync"))?
        {
            let users: Vec<DirectoryUser> = batch
                .users
                .into_iter()
                .map(crate::clients::directory_user)
                .collect();
            let outcomes = self
                .import_users(created_by, &preview_id, company, false, &users, true)
                .await?;
            let counts = Counts::of(&outcomes);
            preview.counts.created += counts.created;
            preview.counts.already_present += counts.already_present;
            preview.counts.skipped += counts.skipped;
            preview.counts.failed += counts.failed;
            for outcome in outcomes {
                if preview.outcomes.len() < LISTED_PREVIEW_OUTCOMES {
                    preview.outcomes.push(outcome);
                } else {
                    preview.truncated = true;
                }
            }
        }
        Ok(preview)
    }

    /// The job, if `principal` may see it. Another principal's private job is reported as
    /// not found, as if it did not exist.
    pub async fn job_for(&self, principal: &str, job_id: &str) -> Result<Job, Error> {
        let mut conn = self.conn().await?;
        match store::job(&mut conn, job_id).await? {
            Some(job) if job.visible_to(principal) => Ok(job),
            _ => Err(Error::NotFound(format!("job {job_id} not found"))),
        }
    }

    /// Jobs `principal` may see, newest first.
    pub async fn jobs(
        &self,
        principal: &str,
        status: Option<JobStatus>,
        before: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<Job>, Error> {
        let mut conn = self.conn().await?;
        store::list_jobs(&mut conn, principal, status, before, limit).await
    }

    /// A page of a job's report (users not created); `NotFound` for an unknown or invisible job.
    pub async fn outcomes(
        &self,
        principal: &str,
        job_id: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<Outcome>, Error> {
        self.job_for(principal, job_id).await?;
        let mut conn = self.conn().await?;
        store::list_outcomes(&mut conn, job_id, after, limit).await
    }

    /// Why an unfinished batch job is not moving, as far as this replica can tell: no
    /// worker consumes its lane, so it waits until one serving its batch group starts.
    /// Empty otherwise (and when the queue cannot be asked).
    pub async fn notice(&self, job: &Job) -> String {
        if job.kind != JobKind::Batch || job.status.is_terminal() {
            return String::new();
        }
        let lane = crate::queue::Lane::new(job.batch_group(), job.options.critical);
        match self.queue().consumers(&lane).await {
            Ok(0) => format!(
                "no worker serves batch group {:?}; the job waits until one does \
                 (workers take the groups in their worker.batch_groups)",
                job.batch_group()
            ),
            Ok(_) => String::new(),
            Err(error) => {
                tracing::debug!(%error, "cannot ask the queue for the lane's consumers");
                String::new()
            }
        }
    }

    /// Resumes a failed batch job `principal` may see: its failed chunks run again in the
    /// same job (see `store::reopen_failed`), and a planner takes it up at once.
    pub async fn retry(
        &self,
        principal: &str,
        job_id: &str,
    ) -> Result<(Job, store::Reopened), Error> {
        let job = self.job_for(principal, job_id).await?;
        let not_failed = || {
            Error::FailedPrecondition(format!(
                "job {job_id} is {} ({}); only a failed batch job can be retried",
                job.status.as_str(),
                job.kind.as_str()
            ))
        };
        if job.status != JobStatus::Failed || job.kind != JobKind::Batch {
            return Err(not_failed());
        }
        let db = self.db();
        let mut tx = db
            .begin_write()
            .await
            .map_err(Error::internal("begin retry"))?;
        let Some(reopened) = store::reopen_failed(&mut tx, job_id).await? else {
            return Err(not_failed());
        };
        tx.commit().await.map_err(Error::internal("commit retry"))?;
        tracing::info!(%job_id, chunks = reopened.chunks, users = reopened.users, "failed job resumed");
        self.wakeup().notify_one();
        let job = self.job_for(principal, job_id).await?;
        Ok((job, reopened))
    }

    /// Cancels a job `principal` may see: planning stops, chunks not processed yet are
    /// discarded, and the job keeps the exact counts of what was done.
    pub async fn cancel(&self, principal: &str, job_id: &str, now_ms: i64) -> Result<Job, Error> {
        let job = self.job_for(principal, job_id).await?;
        if job.status.is_terminal() {
            return Err(Error::FailedPrecondition(format!(
                "job {job_id} has already ended ({})",
                job.status.as_str()
            )));
        }
        let mut conn = self.conn().await?;
        match store::cancel_job(&mut conn, job_id, now_ms).await? {
            Some(cancelled) => {
                drop(conn);
                crate::events::announce(self, &cancelled).await;
                Ok(cancelled)
            }
            None => self.job_for(principal, job_id).await,
        }
    }
}

/// A digest of what a select import asks for: the company and the set of object ids (order
/// and repeats do not change what is imported).
fn request_digest(company: &str, object_ids: &[String]) -> String {
    let ids: std::collections::BTreeSet<&str> = object_ids.iter().map(String::as_str).collect();
    let mut text = company.to_owned();
    for id in ids {
        text.push('\n');
        text.push_str(id);
    }
    hex(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref())
}

/// The job id of `principal`'s key `key` when another principal's job holds the key itself.
fn derived_key(principal: &str, key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, principal.as_bytes());
    format!("{key}~{}", &hex(digest.as_ref())[..16])
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn key_reused(key: &str) -> Error {
    Error::IdempotencyKeyReused(format!(
        "request id {key} was used before for another request (other users or another \
         company); use a new request id"
    ))
}
