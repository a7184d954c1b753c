//! directory-sync's use cases: sync, listing for the select-import dialog, lookups, status.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use graph::GraphClient;
use service_runtime::storage::Database;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{ListFilter, MirrorUser, SyncMode, SyncRun, SyncRunStatus};
use crate::error::Error;
use crate::provision::Effects;
use crate::store::{self, ListCursor};
use crate::sync::{self, Phase, Progress, RoundView, SyncContext};

/// Most ids accepted by one lookup.
pub const MAX_LOOKUP_IDS: usize = 1000;
/// A listing that hides imported users stops scanning after this many rows and returns a
/// short page with a token to continue, so one call stays bounded on a mostly imported tenant.
const MAX_SCANNED_PER_PAGE: usize = 20_000;
/// Changes asked for per `ListImportChanges` call by the background follower (the
/// registry's maximum).
pub const FEED_PAGE: u32 = 10_000;
/// Changes a listing reads from the feed before it answers (one call, about 0.2 s to apply
/// on Postgres when full); the rest is the background follower's. A mark that lags is safe:
/// pages are confirmed with the registry, so it costs time, never a wrong row.
const LISTING_FEED_PAGE: u32 = 1_000;
/// Ended rounds kept in memory for their followers (a dry run's preview lives only there, and
/// holds up to 10,000 entries per kind: a few rounds, not a history).
const ENDED_ROUNDS_KEPT: usize = 8;
/// The note on a run that was running when its process stopped without ending it.
pub const ABANDONED_REASON: &str = "abandoned: the directory-sync process running this round \
     stopped before it ended; closed at the next start (pages read before were kept, and the \
     next round continues from the last stored delta link)";
/// The note on a run stopped by the service's shutdown.
pub const SHUTDOWN_REASON: &str = "stopped: directory-sync shut down while the round ran \
     (pages read before were kept, and the next round continues from the last stored delta link)";

/// A listed user and whether the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedUser {
    pub user: MirrorUser,
    pub imported: bool,
}

/// directory-sync over its mirror, Microsoft Graph and the registry.
#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

struct Inner {
    sync: SyncContext,
    registry: crate::clients::Registry,
    // One sync round (or approval) at a time per directory; a round's task holds it to its end.
    sync_lock: Arc<tokio::sync::Mutex<()>>,
    /// The rounds this process started: the running one and the last ended ones.
    rounds: std::sync::Mutex<Rounds>,
    /// Rounds run here, owned by the service rather than by the call that started them.
    tasks: TaskTracker,
    /// Stops the rounds: only the service's shutdown does.
    shutdown: CancellationToken,
    /// When the scheduled delta round runs next (Unix ms); 0 when none is scheduled.
    next_run_at_ms: AtomicI64,
    /// The tenant is pushed over SCIM: no Graph round runs.
    pushed: std::sync::atomic::AtomicBool,
}

/// Rounds by run id, for their followers.
#[derive(Default)]
struct Rounds {
    running: Option<String>,
    by_id: HashMap<String, Arc<Progress>>,
    ended: VecDeque<String>,
}

impl Directory {
    /// A pooled connection for one read or write outside a transaction.
    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, Error> {
        self.inner.sync.conn().await
    }

    /// A directory over its mirror, Graph, and the registry; `groups` are the groups whose
    /// members are mirrored.
    pub fn new(
        db: Database,
        graph: GraphClient,
        registry: crate::clients::Registry,
        groups: Vec<String>,
        provisioning: crate::config::ProvisioningConfig,
        importer: Option<crate::clients::Importer>,
    ) -> Self {
        let tenant_id = graph.tenant_id().to_ascii_lowercase();
        Self {
            inner: Arc::new(Inner {
                sync: SyncContext {
                    db,
                    graph,
                    tenant_id,
                    groups,
                    registry: registry.clone(),
                    provisioning,
                    importer,
                },
                registry,
                sync_lock: Arc::new(tokio::sync::Mutex::new(())),
                rounds: std::sync::Mutex::new(Rounds::default()),
                tasks: TaskTracker::new(),
                shutdown: CancellationToken::new(),
                next_run_at_ms: AtomicI64::new(0),
                pushed: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    pub fn tenant_id(&self) -> &str {
        &self.inner.sync.tenant_id
    }

    /// Makes a SCIM bearer token: answers it and its secret (shown once; its digest is kept).
    pub async fn create_scim_token(
        &self,
        name: &str,
        created_by: &str,
    ) -> Result<(store::scim::TokenRow, String), Error> {
        let secret = crate::scim::new_token_secret()?;
        let token = store::scim::TokenRow {
            token_id: uuid::Uuid::new_v4().to_string(),
            name: name.to_owned(),
            created_ms: service_runtime::now_ms(),
            created_by: created_by.to_owned(),
            last_used_ms: None,
            revoked_ms: None,
        };
        let mut conn = self.conn().await?;
        store::scim::create_token(
            &mut conn,
            &self.inner.sync.tenant_id,
            &token,
            &crate::scim::token_digest(&secret),
        )
        .await?;
        tracing::info!(token_id = %token.token_id, name, created_by, "SCIM token created");
        Ok((token, secret))
    }

    /// The tenant's SCIM tokens (never their secrets), newest first.
    pub async fn scim_tokens(&self) -> Result<Vec<store::scim::TokenRow>, Error> {
        let mut conn = self.conn().await?;
        store::scim::list_tokens(&mut conn, &self.inner.sync.tenant_id).await
    }

    /// Revokes a SCIM token: requests bearing its secret are refused from now on.
    pub async fn revoke_scim_token(&self, token_id: &str) -> Result<store::scim::TokenRow, Error> {
        let mut conn = self.conn().await?;
        store::scim::revoke_token(
            &mut conn,
            &self.inner.sync.tenant_id,
            token_id,
            service_runtime::now_ms(),
        )
        .await?;
        let token = store::scim::token(&mut conn, &self.inner.sync.tenant_id, token_id)
            .await?
            .ok_or_else(|| Error::ScimTokenNotFound(token_id.to_owned()))?;
        tracing::info!(token_id, "SCIM token revoked");
        Ok(token)
    }

    /// Turns this directory into a pushed one (`scim.enabled`): from now on no Graph round
    /// starts, and the SCIM endpoint's runs are provisioned under the same lock as rounds and
    /// approvals.
    pub fn scim_api(&self, config: crate::config::ScimConfig) -> crate::scim::ScimApi {
        self.inner
            .pushed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        crate::scim::ScimApi::new(
            self.inner.sync.clone(),
            config,
            Arc::clone(&self.inner.sync_lock),
        )
    }

    pub fn database(&self) -> &Database {
        &self.inner.sync.db
    }

    /// Starts a sync round owned by the service and answers its run as recorded at the start,
    /// with a follower of its progress. The round runs to its end whatever happens to the
    /// caller; only [`Directory::shutdown`] stops it. One round runs at a time: a second
    /// caller gets `SyncBusy` naming the running run.
    pub async fn start_round(
        &self,
        mode: SyncMode,
        dry_run: bool,
    ) -> Result<(SyncRun, watch::Receiver<RoundView>), Error> {
        if self.inner.pushed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::PushedTenant);
        }
        let guard = self
            .inner
            .sync_lock
            .clone()
            .try_lock_owned()
            .map_err(|_| Error::SyncBusy(self.running_run_id()))?;
        let run = SyncRun::start(
            uuid::Uuid::new_v4().to_string(),
            mode,
            service_runtime::now_ms(),
        );
        // Recorded before the answer, so the run is listed as soon as its id is known.
        sync::record(&self.inner.sync, &run).await;
        let progress = Arc::new(Progress::new(&run));
        let follower = progress.subscribe();
        if let Ok(mut rounds) = self.inner.rounds.lock() {
            rounds.running = Some(run.run_id.clone());
            rounds.by_id.insert(run.run_id.clone(), progress.clone());
        }
        let this = self.clone();
        let started = run.clone();
        // A child of the call that started it, so the round stays in the caller's trace.
        let span = tracing::info_span!("sync_round", run_id = %run.run_id, mode = run.mode.as_str(), dry_run);
        let round = async move {
            let ctx = &this.inner.sync;
            let shutdown = this.inner.shutdown.clone();
            let (run, preview) = tokio::select! {
                ended = sync::run_round(ctx, started, service_runtime::now_ms, dry_run, &progress) => ended,
                () = shutdown.cancelled() => {
                    // Pages are committed one by one: what was read stays, and the stored
                    // delta link still marks where the next round starts.
                    let mut run = progress.view().run;
                    run.status = SyncRunStatus::Failed;
                    run.finished_at_ms = service_runtime::now_ms();
                    run.error = SHUTDOWN_REASON.to_owned();
                    sync::record(ctx, &run).await;
                    tracing::warn!(run_id = %run.run_id, "sync round stopped by shutdown");
                    (run, None)
                }
            };
            // The lock goes before followers hear of the end, so one that starts the next
            // round as soon as this one ended is not told a round is running.
            drop(guard);
            this.round_ended(&run.run_id);
            progress.end(&run, preview);
        };
        self.inner
            .tasks
            .spawn(tracing::Instrument::instrument(round, span));
        Ok((run, follower))
    }

    /// Runs a sync round now and returns it once ended (also when it failed: the run says
    /// why), with what it would change when it is a `dry_run`. For in-process callers (the
    /// schedule, the start-up round, `userimport dev`); the round is the service's all the same.
    pub async fn sync_now(
        &self,
        mode: SyncMode,
        dry_run: bool,
    ) -> Result<(SyncRun, Option<Effects>), Error> {
        let (_, mut follower) = self.start_round(mode, dry_run).await?;
        loop {
            {
                let view = follower.borrow_and_update();
                if view.phase == Phase::Ended {
                    return Ok((view.run.clone(), view.preview.clone()));
                }
            }
            if follower.changed().await.is_err() {
                return Err(Error::Internal(anyhow::anyhow!(
                    "the sync round's task ended without an outcome"
                )));
            }
        }
    }

    /// The id of the round running now, if any.
    fn running_run_id(&self) -> Option<String> {
        self.inner
            .rounds
            .lock()
            .ok()
            .and_then(|rounds| rounds.running.clone())
    }

    fn round_ended(&self, run_id: &str) {
        let Ok(mut rounds) = self.inner.rounds.lock() else {
            return;
        };
        if rounds.running.as_deref() == Some(run_id) {
            rounds.running = None;
        }
        rounds.ended.push_back(run_id.to_owned());
        while rounds.ended.len() > ENDED_ROUNDS_KEPT {
            if let Some(old) = rounds.ended.pop_front() {
                rounds.by_id.remove(&old);
            }
        }
    }

    /// A follower of a round this process started and still holds, if any.
    pub fn follow(&self, run_id: &str) -> Option<watch::Receiver<RoundView>> {
        self.inner
            .rounds
            .lock()
            .ok()
            .and_then(|rounds| rounds.by_id.get(run_id).map(|p| p.subscribe()))
    }

    /// One run as recorded.
    pub async fn run(&self, run_id: &str) -> Result<SyncRun, Error> {
        let mut conn = self.conn().await?;
        store::run(&mut conn, &self.inner.sync.tenant_id, run_id)
            .await?
            .ok_or_else(|| Error::RunNotFound(run_id.to_owned()))
    }

    /// Closes the runs a previous process left running (it died mid-round) as failed
    /// ("abandoned"); called once at start-up, before any round of this process. Answers their
    /// ids.
    pub async fn close_abandoned_runs(&self) -> Result<Vec<String>, Error> {
        let mut conn = self.conn().await?;
        let closed =
            store::close_abandoned_runs(&mut conn, &self.inner.sync.tenant_id, ABANDONED_REASON)
                .await?;
        for run_id in &closed {
            tracing::warn!(%run_id, "sync run left running by a stopped process closed as abandoned");
        }
        Ok(closed)
    }

    /// Builds the search indexes a first load set aside when its process died before it
    /// built them; called once at start-up, before any round of this process.
    pub async fn build_set_aside_indexes(&self) -> Result<(), Error> {
        let mut conn = self.conn().await?;
        let built =
            store::deferred::build_set_aside(&mut conn, self.inner.sync.db.backend()).await?;
        if built > 0 {
            tracing::warn!(
                built,
                "search indexes a stopped first load set aside were built"
            );
        }
        Ok(())
    }

    /// Stops the round in progress (it is recorded as stopped) and waits for it.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// Applies the changes of a run the safety threshold halted or that was a dry run (the
    /// users it changed, as the mirror holds them now; its new users; the role rules), and
    /// marks it succeeded.
    pub async fn approve_run(&self, run_id: &str) -> Result<SyncRun, Error> {
        let _guard = self
            .inner
            .sync_lock
            .try_lock()
            .map_err(|_| Error::SyncBusy(self.running_run_id()))?;
        let mut run = self.awaiting_approval(run_id).await?;
        let ctx = &self.inner.sync;
        // A SCIM run is approved as it was provisioned (auto-import as for every push).
        let pushed = (run.mode == SyncMode::Scim).then_some(0);
        let applied = crate::provision::after_round_within(
            ctx,
            run_id,
            crate::provision::Mode::Apply { approved: true },
            pushed,
        )
        .await?;
        tracing::info!(
            run_id,
            updated = applied.updated,
            disabled = applied.disabled,
            imported = applied.imported,
            "sync run approved and applied"
        );
        run.status = SyncRunStatus::Succeeded;
        run.error = if run.error == sync::DRY_RUN_REASON {
            "approved after a dry run".to_owned()
        } else {
            format!("approved after it halted ({})", run.error)
        };
        sync::record(ctx, &run).await;
        self.decided(&run);
        Ok(run)
    }

    /// Tells the followers of a round this process still holds how it was decided, so a
    /// watch after approval or rejection reports the run as recorded, not as it ended.
    fn decided(&self, run: &SyncRun) {
        if let Ok(rounds) = self.inner.rounds.lock()
            && let Some(progress) = rounds.by_id.get(&run.run_id)
        {
            let preview = progress.view().preview;
            progress.end(run, preview);
        }
    }

    /// Drops the changes of a halted run: the registry keeps its users as they are.
    pub async fn reject_run(&self, run_id: &str, reason: &str) -> Result<SyncRun, Error> {
        let _guard = self
            .inner
            .sync_lock
            .try_lock()
            .map_err(|_| Error::SyncBusy(self.running_run_id()))?;
        let mut run = self.awaiting_approval(run_id).await?;
        run.status = SyncRunStatus::Rejected;
        run.error = match reason.trim() {
            "" => "rejected".to_owned(),
            reason => format!("rejected: {reason}"),
        };
        tracing::info!(
            run_id,
            reason,
            "halted sync run rejected; its changes are dropped"
        );
        sync::record(&self.inner.sync, &run).await;
        self.decided(&run);
        Ok(run)
    }

    async fn awaiting_approval(&self, run_id: &str) -> Result<SyncRun, Error> {
        let mut conn = self.conn().await?;
        let run = store::run(&mut conn, &self.inner.sync.tenant_id, run_id.trim())
            .await?
            .ok_or_else(|| Error::RunNotFound(run_id.to_owned()))?;
        if run.status != SyncRunStatus::AwaitingApproval {
            return Err(Error::RunNotAwaitingApproval(
                run_id.to_owned(),
                run.status.as_str(),
            ));
        }
        Ok(run)
    }

    /// Runs a delta round every `interval` until `shutdown`; a round still running when the
    /// next is due is not doubled. Keeps `next_run_at_ms` current for the status.
    pub async fn run_schedule(&self, interval: Duration, shutdown: CancellationToken) {
        loop {
            let due =
                service_runtime::now_ms() + i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
            self.inner.next_run_at_ms.store(due, Ordering::Relaxed);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(interval) => {}
            }
            match self.sync_now(SyncMode::Delta, false).await {
                Ok(_) | Err(Error::SyncBusy(_)) => {}
                Err(error) => tracing::warn!(%error, "scheduled sync round did not run"),
            }
        }
        self.inner.next_run_at_ms.store(0, Ordering::Relaxed);
    }

    /// When the scheduled round runs next (Unix ms), or 0.
    pub fn next_run_at_ms(&self) -> i64 {
        self.inner.next_run_at_ms.load(Ordering::Relaxed)
    }

    /// Runs a full sync unless one has succeeded before (the first start of a service).
    pub async fn initial_sync_if_needed(&self) -> Result<Option<SyncRun>, Error> {
        let mut conn = self.conn().await?;
        if store::has_completed_full_sync(&mut conn, &self.inner.sync.tenant_id).await? {
            return Ok(None);
        }
        drop(conn);
        self.sync_now(SyncMode::Full, false)
            .await
            .map(|(run, _)| Some(run))
    }

    /// The last run (a running one with its counts so far) and the mirror's size.
    pub async fn status(&self) -> Result<(Option<SyncRun>, u64), Error> {
        let mut conn = self.conn().await?;
        let last = store::last_run(&mut conn, &self.inner.sync.tenant_id)
            .await?
            .map(|run| match self.follow(&run.run_id) {
                Some(follower) if !run.has_ended() => follower.borrow().run.clone(),
                _ => run,
            });
        let count = store::present_count(&mut conn, &self.inner.sync.tenant_id).await?;
        Ok((last, count))
    }

    /// Sync runs, newest first, after the cursor.
    pub async fn runs(
        &self,
        before: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<SyncRun>, Error> {
        let mut conn = self.conn().await?;
        store::list_runs(&mut conn, &self.inner.sync.tenant_id, before, limit).await
    }

    /// One page of the select-import listing in display-name order, each user annotated with
    /// whether the registry holds it; with `not_imported_only`, imported users are left out.
    /// Returns the page and the cursor of the next one (`None` on the last page).
    ///
    /// With `not_imported_only` the mirror is read through its imported marks, after catching
    /// them up with the registry's import feed, so a page costs about a page whatever share of
    /// the tenant is imported. The marks are never trusted alone: every batch read is
    /// confirmed with `CheckImported` (one call), users it finds imported are left out and
    /// marked on the spot, so a mark that lags the registry costs one extra read, never a
    /// wrong row.
    pub async fn list_users(
        &self,
        filter: &ListFilter,
        not_imported_only: bool,
        after: ListCursor,
        limit: u32,
    ) -> Result<(Vec<ListedUser>, Option<ListCursor>), Error> {
        if let Some(group_id) = &filter.group_id {
            self.ensure_group_synced(group_id).await?;
        }
        // With synced groups, the tenant is their members: nobody else is listed.
        let scoped = ListFilter {
            in_synced_groups: filter.group_id.is_none() && !self.inner.sync.groups.is_empty(),
            ..filter.clone()
        };
        let filter = &scoped;
        // The feed number the marks have followed to; marks written from this listing's
        // confirmations never override a change newer than it.
        // A feed that cannot be read (a registry from before the feed) leaves marks that may
        // hide a user the registry deleted since: such a listing reads every user instead,
        // slow but exact, as before the marks.
        let followed = if not_imported_only {
            match self.follow_import_feed(Some(1), LISTING_FEED_PAGE).await {
                Ok((followed, _)) => Some(followed),
                Err(error) => {
                    tracing::warn!(%error, "import feed unreadable, listing without the marks");
                    None
                }
            }
        } else {
            None
        };
        let wanted = limit as usize;
        let mut page = Vec::with_capacity(wanted);
        let mut cursor = after;
        let mut scanned = 0;
        loop {
            // Fetch one more than needed to know whether anything follows.
            let fetch = u32::try_from(wanted - page.len() + 1)
                .unwrap_or(u32::MAX)
                .min(1000);
            let mut conn = self.conn().await?;
            let batch = store::list_users(
                &mut conn,
                &self.inner.sync.tenant_id,
                filter,
                followed.is_some(),
                &cursor,
                fetch,
            )
            .await?;
            drop(conn);
            let exhausted = batch.len() < fetch as usize;
            let ids: Vec<String> = batch.iter().map(|u| u.object_id.clone()).collect();
            let imported = self.imported(&ids).await?;
            if let Some(followed) = followed
                && !imported.is_empty()
            {
                // Marks that lagged (an import the feed has not brought yet): fixed now, so
                // the next listing does not read these users again.
                let stale: Vec<String> = imported.iter().cloned().collect();
                let mut conn = self.conn().await?;
                store::imported::mark_imported(
                    &mut conn,
                    self.inner.sync.db.backend(),
                    &self.inner.sync.tenant_id,
                    &stale,
                    followed,
                )
                .await?;
            }
            for user in batch {
                if page.len() == wanted {
                    // The user just fetched beyond the page proves there is a next page.
                    return Ok((page, Some(cursor)));
                }
                cursor = ListCursor {
                    name: user.display_name.to_lowercase(),
                    object_id: user.object_id.clone(),
                };
                scanned += 1;
                let is_imported = imported.contains(&user.object_id);
                if !(not_imported_only && is_imported) {
                    page.push(ListedUser {
                        user,
                        imported: is_imported,
                    });
                }
            }
            if exhausted {
                return Ok((page, None));
            }
            if scanned >= MAX_SCANNED_PER_PAGE {
                return Ok((page, Some(cursor)));
            }
        }
    }

    /// Brings the imported marks up to the registry's import feed, reading at most
    /// `max_pages` pages of `page_size` changes (`None`: until the end). Returns the feed
    /// number the marks have followed to and how many changes it applied. Cheap when nothing
    /// changed: one call that answers
    /// nothing. Readers may run at once (a listing beside the background follower): each page
    /// applies only over older marks and the position never moves back, so they only repeat
    /// work.
    pub async fn follow_import_feed(
        &self,
        max_pages: Option<usize>,
        page_size: u32,
    ) -> Result<(i64, usize), Error> {
        let tenant_id = &self.inner.sync.tenant_id;
        let mut applied = 0;
        let mut conn = self.conn().await?;
        let mut position = store::imported::feed_position(&mut conn, tenant_id).await?;
        drop(conn);
        let mut pages = 0;
        while max_pages.is_none_or(|max| pages < max) {
            let changes = self
                .inner
                .registry
                .list_import_changes(tenant_id, &position, page_size)
                .await?;
            let Some(last) = changes.last() else {
                break;
            };
            let next = store::imported::FeedPosition {
                seq: last.seq,
                object_id: last.object_id.clone(),
            };
            let db = &self.inner.sync.db;
            let mut tx = db
                .begin_write()
                .await
                .map_err(Error::internal("begin applying import changes"))?;
            store::imported::apply_import_changes(&mut tx, db.backend(), tenant_id, &changes)
                .await?;
            tx.commit()
                .await
                .map_err(Error::internal("commit import changes"))?;
            applied += changes.len();
            let full = changes.len() >= page_size as usize;
            position = next;
            pages += 1;
            if !full {
                break;
            }
        }
        Ok((position.seq, applied))
    }

    /// Rebuilds the index of unmarked users after many marks (Postgres only; see
    /// `store::imported::rebuild_unmarked_index`).
    pub async fn rebuild_unmarked_index(&self) -> Result<(), Error> {
        let mut conn = self.conn().await?;
        store::imported::rebuild_unmarked_index(&mut conn, self.inner.sync.db.backend()).await
    }

    /// Asks the registry which of these users it holds.
    async fn imported(&self, object_ids: &[String]) -> Result<HashSet<String>, Error> {
        if object_ids.is_empty() {
            return Ok(HashSet::new());
        }
        self.inner
            .registry
            .check_imported(&self.inner.sync.tenant_id, object_ids)
            .await
    }

    /// Looks users up by object id (lower-case GUIDs) and by UPN: from the mirror first, then
    /// from Graph for the misses, which join the mirror. Returns the users found (object ids
    /// in request order, then UPNs) and the requested keys the directory does not know.
    pub async fn get_users(
        &self,
        object_ids: &[String],
        upns: &[String],
    ) -> Result<(Vec<MirrorUser>, Vec<String>), Error> {
        if object_ids.len() + upns.len() > MAX_LOOKUP_IDS {
            return Err(Error::invalid(
                "object_ids",
                format!(
                    "{} ids in one call; the limit is {MAX_LOOKUP_IDS}",
                    object_ids.len() + upns.len()
                ),
            ));
        }
        let db = &self.inner.sync.db;
        let mut conn = self.conn().await?;
        let by_id: HashMap<String, MirrorUser> = store::users_by_object_ids(
            &mut conn,
            db.backend(),
            &self.inner.sync.tenant_id,
            object_ids,
        )
        .await?
        .into_iter()
        .map(|u| (u.object_id.clone(), u))
        .collect();
        let by_upn: HashMap<String, MirrorUser> =
            store::users_by_upns(&mut conn, db.backend(), &self.inner.sync.tenant_id, upns)
                .await?
                .into_iter()
                .map(|u| (u.user_principal_name.to_lowercase(), u))
                .collect();
        drop(conn);

        let misses: Vec<String> = object_ids
            .iter()
            .filter(|id| !by_id.contains_key(*id))
            .chain(
                upns.iter()
                    .filter(|upn| !by_upn.contains_key(&upn.to_lowercase())),
            )
            .cloned()
            .collect();
        let fetched = self.fetch_from_graph(&misses).await?;

        let mut found = Vec::new();
        let mut not_found = Vec::new();
        for id in object_ids {
            match by_id.get(id).or_else(|| fetched.get(id)) {
                Some(user) => found.push(user.clone()),
                None => not_found.push(id.clone()),
            }
        }
        for upn in upns {
            match by_upn.get(&upn.to_lowercase()).or_else(|| fetched.get(upn)) {
                Some(user) => found.push(user.clone()),
                None => not_found.push(upn.clone()),
            }
        }
        Ok((found, not_found))
    }

    /// Reads `keys` (object ids or UPNs) from Graph, writes the users found into the mirror,
    /// and returns them by the key asked for.
    async fn fetch_from_graph(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, MirrorUser>, Error> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        // $batch: twenty lookups per request, instead of one request each.
        let results = self.inner.sync.graph.get_users_batch(keys).await?;
        let mut fetched = HashMap::new();
        for (key, found) in results {
            if let Some(user) = found {
                match sync::mirror_user(&self.inner.sync.tenant_id, &user) {
                    Ok(mirrored) => {
                        fetched.insert(key, mirrored);
                    }
                    // Answered as not found, since it cannot be imported either.
                    Err(reason) => tracing::warn!(%key, %reason, "directory user rejected"),
                }
            }
        }
        if !fetched.is_empty() {
            let users: Vec<MirrorUser> = fetched.values().cloned().collect();
            let db = &self.inner.sync.db;
            let mut tx = db
                .begin_write()
                .await
                .map_err(Error::internal("begin lookup"))?;
            let run_id = format!("lookup-{}", uuid::Uuid::new_v4());
            store::upsert_users(
                &mut tx,
                db.backend(),
                &self.inner.sync.tenant_id,
                &users,
                &run_id,
                service_runtime::now_ms(),
            )
            .await?;
            tx.commit()
                .await
                .map_err(Error::internal("commit lookup"))?;
        }
        Ok(fetched)
    }

    /// Up to `limit` present users after `after_object_id`, in object id order: a synced
    /// group's members, or every user in scope (the synced groups' members when
    /// `sync.groups` is set).
    pub async fn users_after(
        &self,
        group_id: Option<&str>,
        after_object_id: &str,
        limit: u32,
    ) -> Result<Vec<MirrorUser>, Error> {
        let mut conn = self.conn().await?;
        store::users_after(
            &mut conn,
            self.inner.sync.db.backend(),
            &self.inner.sync.tenant_id,
            group_id,
            !self.inner.sync.groups.is_empty(),
            after_object_id,
            limit,
        )
        .await
    }

    /// Fails with `GroupNotSynced` unless the group's members are mirrored.
    pub async fn ensure_group_synced(&self, group_id: &str) -> Result<(), Error> {
        let mut conn = self.conn().await?;
        if store::group_exists(&mut conn, &self.inner.sync.tenant_id, group_id).await? {
            Ok(())
        } else {
            Err(Error::GroupNotSynced(group_id.to_owned()))
        }
    }

    /// Mirrored groups by name, after the cursor.
    pub async fn groups(
        &self,
        search: &str,
        after: &(String, String),
        limit: u32,
    ) -> Result<Vec<store::GroupRow>, Error> {
        let mut conn = self.conn().await?;
        store::list_groups(&mut conn, &self.inner.sync.tenant_id, search, after, limit).await
    }
}
