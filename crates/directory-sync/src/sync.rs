//! Sync rounds. A full round reads every user into the mirror and marks the users the
//! directory no longer lists as deleted (soft-deleted while the deleted items hold them,
//! hard-deleted only when those were read and miss them too); a delta round applies only the
//! changes since the stored deltaLink (`@removed` reason `changed` is a soft deletion,
//! `deleted` a hard one). Both then refresh the members of the configured groups.

use std::collections::{HashMap, HashSet};

use std::time::{Duration, Instant};

use graph::{DeltaStart, GraphClient, GraphUser, RejectedUser, RemovedReason, RemovedUser};
use service_runtime::storage::Database;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::ProvisioningConfig;
use crate::domain::{AccountType, DeletionState, MirrorUser, SyncMode, SyncRun, SyncRunStatus};
use crate::error::Error;
use crate::provision::{Effects, Mode, after_round};
use crate::store;

/// Pages read ahead of the database writer: Graph latency and writes overlap, and memory stays
/// bounded by this many pages whatever the tenant size.
const PAGES_IN_FLIGHT: usize = 2;

/// Pages of a full round written at once, each in its own transaction. One writer left a
/// two-core database server half idle at 1M users (the page's statement is the round's whole
/// cost); two keep both cores busy. More would only wait for each other and for listings on
/// the pool.
const FULL_ROUND_WRITERS: usize = 2;

/// A page writer's result; a writer that panicked wrote nothing (its transaction rolled back).
fn joined(
    joined: Result<(Result<Applied, Error>, Vec<String>), tokio::task::JoinError>,
) -> (Result<Applied, Error>, Vec<String>) {
    joined.unwrap_or_else(|error| {
        (
            Err(Error::Internal(anyhow::anyhow!(
                "page writer failed: {error}"
            ))),
            Vec::new(),
        )
    })
}

/// Ends a written page's claim on its users.
fn release(in_flight: &mut HashMap<String, u32>, ids: &[String]) {
    for id in ids {
        if let Some(n) = in_flight.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(id);
            }
        }
    }
}

/// Maps a Graph user to its mirror form, or says why it cannot be mirrored (the user is then
/// rejected alone). Absent strings become empty; control characters in names become spaces; a
/// user whose `accountEnabled` was not returned counts as enabled (we always `$select` it).
pub fn mirror_user(tenant_id: &str, user: &GraphUser) -> Result<MirrorUser, String> {
    let object_id = service_runtime::normalize_guid(&user.id)
        .ok_or_else(|| format!("id {:?} is not a GUID", user.id))?;
    use service_runtime::error::quote;
    use service_runtime::validate::{string_limit, truncate};
    let upn = user.user_principal_name.trim();
    if upn.is_empty() || upn.chars().any(char::is_control) {
        return Err(format!(
            "userPrincipalName {} is empty or holds control characters",
            quote(upn)
        ));
    }
    // What the mirror stores, it must be able to send on: the limits of the requests that
    // carry these fields (identifiers refused, names cut).
    if upn.len() > string_limit("user_principal_name") {
        return Err(format!("userPrincipalName {}… is too long", quote(upn)));
    }
    let mail = user.mail.as_deref().unwrap_or_default().trim();
    if mail.chars().any(char::is_control) {
        return Err(format!("mail {} holds control characters", quote(mail)));
    }
    if mail.len() > string_limit("mail") {
        return Err(format!("mail {}… is too long", quote(mail)));
    }
    let text = |value: &Option<String>| -> String {
        let cleaned: String = value
            .as_deref()
            .unwrap_or_default()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        truncate(cleaned.trim(), string_limit("display_name")).to_owned()
    };
    Ok(MirrorUser {
        tenant_id: tenant_id.to_owned(),
        object_id,
        user_principal_name: upn.to_owned(),
        mail: mail.to_owned(),
        display_name: text(&user.display_name),
        given_name: text(&user.given_name),
        surname: text(&user.surname),
        account_enabled: user.account_enabled.unwrap_or(true),
        account_type: AccountType::classify(user.user_type.as_deref(), upn),
        deletion_state: DeletionState::Present,
        pushed: false,
    })
}

/// What a sync round needs.
#[derive(Clone)]
pub struct SyncContext {
    pub db: Database,
    pub graph: GraphClient,
    pub tenant_id: String,
    /// Groups whose transitive user members are mirrored.
    pub groups: Vec<String>,
    /// Where the rounds' changes go, and the limits on them.
    pub registry: crate::clients::Registry,
    pub provisioning: ProvisioningConfig,
    /// import-worker, for auto-import; `None` when no importer_url is configured.
    pub importer: Option<crate::clients::Importer>,
}

impl SyncContext {
    /// How long a round retries user-registry and import-worker while they are unavailable.
    pub(crate) fn peer_retry(&self) -> Duration {
        Duration::from_secs(self.provisioning.peer_retry_secs)
    }

    /// A pooled connection for one read or write outside a transaction.
    pub(crate) async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, Error> {
        self.db
            .pool()
            .acquire()
            .await
            .map_err(Error::internal("acquire"))
    }
}

/// What a round is doing, for those who follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    ReadingUsers,
    ReadingChanges,
    ReadingGroups,
    /// Building the mirror's search indexes after a first load.
    BuildingIndexes,
    /// Writing the round's changes to user-registry and import-worker.
    Provisioning,
    Ended,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadingUsers => "reading users",
            Self::ReadingChanges => "reading changes",
            Self::ReadingGroups => "reading groups",
            Self::BuildingIndexes => "building search indexes",
            Self::Provisioning => "provisioning",
            Self::Ended => "",
        }
    }
}

/// A round as its followers see it: the run with its counts so far, what it is doing, and at
/// its end a dry run's preview.
#[derive(Debug, Clone)]
pub struct RoundView {
    pub run: SyncRun,
    pub phase: Phase,
    pub preview: Option<Effects>,
}

/// How often a running round rewrites its record, so `status` (and the next start, should
/// the process die) sees how far it got.
const RECORD_PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Where a running round publishes its progress: followers see every page; its record is
/// rewritten at most every [`RECORD_PROGRESS_EVERY`].
pub struct Progress {
    view: watch::Sender<RoundView>,
    recorded: std::sync::Mutex<Instant>,
}

impl Progress {
    /// Progress of `run`, which starts reading the directory.
    pub fn new(run: &SyncRun) -> Self {
        let phase = match run.mode {
            SyncMode::Full => Phase::ReadingUsers,
            SyncMode::Delta | SyncMode::Scim => Phase::ReadingChanges,
        };
        let (view, _) = watch::channel(RoundView {
            run: run.clone(),
            phase,
            preview: None,
        });
        Self {
            view,
            recorded: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// A follower of the round.
    pub fn subscribe(&self) -> watch::Receiver<RoundView> {
        self.view.subscribe()
    }

    /// The round as it stands.
    pub fn view(&self) -> RoundView {
        self.view.borrow().clone()
    }

    fn phase(&self, run: &SyncRun, phase: Phase) {
        self.view.send_modify(|view| {
            view.run = run.clone();
            view.phase = phase;
        });
    }

    /// A page was read and applied.
    async fn page(&self, ctx: &SyncContext, run: &mut SyncRun) {
        run.pages_read += 1;
        self.view.send_modify(|view| view.run = run.clone());
        let due = {
            let Ok(mut recorded) = self.recorded.lock() else {
                return;
            };
            let due = recorded.elapsed() >= RECORD_PROGRESS_EVERY;
            if due {
                *recorded = Instant::now();
            }
            due
        };
        if due {
            record(ctx, run).await;
        }
    }

    /// The round takes its end time. Taken under the view's lock, so that a follower (which
    /// reads the clock under the same lock) never reports a time so far past this end.
    fn take_end_time(&self, run: &mut SyncRun, clock: impl Fn() -> i64) {
        self.view.send_modify(|view| {
            run.finished_at_ms = clock();
            view.run.finished_at_ms = run.finished_at_ms;
        });
    }

    /// The round ended (the run holds its outcome).
    pub fn end(&self, run: &SyncRun, preview: Option<Effects>) {
        self.view.send_replace(RoundView {
            run: run.clone(),
            phase: Phase::Ended,
            preview,
        });
    }
}

/// Runs one round and records it. A delta round without a stored deltaLink, or whose link
/// Graph no longer honours (410 Gone, `syncStateNotFound`, `resyncRequired`), runs as a full
/// round instead, and is recorded as one.
///
/// A `dry_run` round reads the directory into the mirror like any other, then only works out
/// what it would change in the registry: it answers that and waits for approval.
pub async fn run_round(
    ctx: &SyncContext,
    mut run: SyncRun,
    clock: impl Fn() -> i64,
    dry_run: bool,
    progress: &Progress,
) -> (SyncRun, Option<Effects>) {
    record(ctx, &run).await;
    let result = match run.mode {
        SyncMode::Full => full(ctx, &mut run, &clock, progress).await,
        SyncMode::Delta => match delta(ctx, &mut run, &clock, progress).await {
            Err(Error::DeltaUnavailable(reason)) => {
                tracing::info!(run_id = %run.run_id, %reason, "no usable delta link; running a full sync");
                // Recorded as what it is from here on: a full round, that fell back.
                run.mode = SyncMode::Full;
                run.fell_back_from_delta = Some(reason);
                record(ctx, &run).await;
                progress.phase(&run, Phase::ReadingUsers);
                full(ctx, &mut run, &clock, progress).await
            }
            other => other,
        },
        // SCIM runs are gathered by the SCIM endpoint (`scim.rs`), never read here.
        SyncMode::Scim => Err(Error::Internal(anyhow::anyhow!(
            "a SCIM run is not a round to read"
        ))),
    };
    let result = match result {
        Ok(()) => {
            progress.phase(&run, Phase::ReadingGroups);
            sync_groups(ctx, &mut run, &clock).await
        }
        Err(error) => Err(error),
    };
    // A full round reviews the whole scope: users in no synced group (imported before they
    // left, or before sync.groups was set) go through the out-of-scope policy too.
    let result = match result {
        Ok(())
            if run.mode == SyncMode::Full
                && !ctx.groups.is_empty()
                && ctx.provisioning.disable_out_of_scope =>
        {
            async {
                let mut conn = ctx.conn().await?;
                let marked = store::mark_out_of_scope(&mut conn, &ctx.tenant_id, &run.run_id).await?;
                if marked > 0 {
                    tracing::info!(run_id = %run.run_id, users = marked, "users in no synced group reviewed as out of scope");
                }
                Ok(())
            }
            .await
        }
        other => other,
    };
    if result.is_ok() {
        progress.phase(&run, Phase::Provisioning);
    }
    // Only a round that read the directory completely changes the registry.
    let mode = if dry_run {
        Mode::Preview
    } else {
        Mode::Apply { approved: false }
    };
    let result = match result {
        Ok(()) => after_round(ctx, &run.run_id, mode).await,
        Err(error) => Err(error),
    };
    progress.take_end_time(&mut run, &clock);
    let mut preview = None;
    match result {
        Ok(effects) if effects.halted.is_some() => {
            let (would_disable, total_users) = effects.halted.unwrap_or_default();
            run.status = SyncRunStatus::AwaitingApproval;
            run.error = halted_reason(would_disable, total_users, &ctx.provisioning);
            // Its registry changes, listed for the decision (the rules and auto-import run
            // only once it is approved).
            preview = Some(effects);
        }
        // A dry run with nothing to write holds nothing to approve.
        Ok(effects) if dry_run && effects.is_empty() => {
            run.status = SyncRunStatus::Succeeded;
            run.error = "dry run: the registry is in step; nothing would change".to_owned();
            preview = Some(effects);
        }
        Ok(effects) if dry_run => {
            run.status = SyncRunStatus::AwaitingApproval;
            run.error = DRY_RUN_REASON.to_owned();
            preview = Some(effects);
        }
        Ok(_) => run.status = SyncRunStatus::Succeeded,
        Err(error) => {
            run.status = SyncRunStatus::Failed;
            run.error = error.to_string();
            tracing::warn!(run_id = %run.run_id, mode = run.mode.as_str(), %error, "sync round failed");
        }
    }
    record(ctx, &run).await;
    tracing::info!(
        run_id = %run.run_id,
        mode = run.mode.as_str(),
        status = run.status.as_str(),
        seen = run.users_seen,
        created = run.users_created,
        updated = run.users_updated,
        removed = run.users_removed,
        rejected = run.users_rejected,
        "sync round finished"
    );
    (run, preview)
}

/// Why a dry-run round waits: its changes are held for approval.
pub const DRY_RUN_REASON: &str = "dry run: nothing was written to the registry; approve the \
     run to apply exactly what it reported, or reject it to drop it";

/// Why a run waits for approval, for the run record and the CLI.
pub fn halted_reason(would_disable: u64, total_users: u64, config: &ProvisioningConfig) -> String {
    format!(
        "halted before writing: it would disable {would_disable} of the registry's {total_users} \
         users (limits: {} users or {:.0}%); approve or reject the run",
        config.max_disable_count,
        config.max_disable_share * 100.0
    )
}

pub(crate) async fn record(ctx: &SyncContext, run: &SyncRun) {
    let saved = async {
        let mut conn = ctx.conn().await?;
        store::save_run(&mut conn, &ctx.tenant_id, run, service_runtime::now_ms()).await
    };
    if let Err(error) = saved.await {
        tracing::error!(%error, run_id = %run.run_id, "cannot record the sync run");
    }
}

/// What one page brings: users in their current state, removals, unusable entries, and on the
/// last page of a delta round the link to store.
#[derive(Default)]
struct Changes {
    users: Vec<GraphUser>,
    removed: Vec<RemovedUser>,
    rejected: Vec<RejectedUser>,
    delta_link: Option<String>,
}

/// What applying one page did.
#[derive(Debug, Default, Clone, Copy)]
struct Applied {
    seen: u64,
    created: u64,
    updated: u64,
    removed: u64,
    rejected: u64,
}

impl Applied {
    fn count_into(self, run: &mut SyncRun) {
        run.users_seen += self.seen;
        run.users_created += self.created;
        run.users_updated += self.updated;
        run.users_removed += self.removed;
        run.users_rejected += self.rejected;
    }
}

/// Applies one page in one transaction. Replays and duplicates are harmless: users are
/// upserted by object id and a removal already applied changes nothing.
async fn apply(
    ctx: &SyncContext,
    run_id: &str,
    changes: Changes,
    now_ms: i64,
) -> Result<Applied, Error> {
    let Changes {
        users: graph_users,
        removed,
        rejected,
        delta_link,
    } = changes;
    let mut users: Vec<MirrorUser> = Vec::with_capacity(graph_users.len());
    let mut rejected: Vec<(Option<String>, String)> =
        rejected.into_iter().map(|r| (r.id, r.reason)).collect();
    for user in &graph_users {
        match mirror_user(&ctx.tenant_id, user) {
            Ok(mirrored) => users.push(mirrored),
            Err(reason) => rejected.push((Some(user.id.clone()), reason)),
        }
    }
    // A rejected user the directory still lists must not be swept as deleted.
    let rejected_ids: Vec<String> = rejected
        .iter()
        .filter_map(|(id, _)| id.as_deref().and_then(service_runtime::normalize_guid))
        .collect();
    for (object_id, reason) in &rejected {
        tracing::warn!(run_id = %run_id, object_id = ?object_id, %reason, "directory user rejected");
    }
    let removals: Vec<(String, DeletionState)> = removed
        .iter()
        .filter_map(|r| {
            let state = match r.reason {
                RemovedReason::Changed => DeletionState::SoftDeleted,
                RemovedReason::Deleted => DeletionState::HardDeleted,
            };
            service_runtime::normalize_guid(&r.id).map(|id| (id, state))
        })
        .collect();

    let backend = ctx.db.backend();
    let mut tx = ctx
        .db
        .begin_write()
        .await
        .map_err(Error::internal("begin page"))?;
    let counts =
        store::upsert_users(&mut tx, backend, &ctx.tenant_id, &users, run_id, now_ms).await?;
    store::touch_seen(&mut tx, backend, &ctx.tenant_id, &rejected_ids, run_id).await?;
    let removed_count =
        store::mark_removed(&mut tx, backend, &ctx.tenant_id, &removals, run_id, now_ms).await?;
    if let Some(link) = &delta_link {
        // Stored with the last page's changes: the cursor never runs ahead of the mirror.
        store::save_delta_link(&mut tx, &ctx.tenant_id, link, now_ms).await?;
    }
    tx.commit().await.map_err(Error::internal("commit page"))?;
    Ok(Applied {
        seen: (users.len() + removed.len()) as u64,
        created: counts.created,
        updated: counts.updated,
        removed: removed_count,
        rejected: rejected.len() as u64,
    })
}

/// A full round. It first asks Graph for a deltaLink from now (`$deltatoken=latest`), so the
/// changes made while the tenant is being read come with the next delta round. The sweep of
/// unseen users runs only after every page was read: a round that fails part-way deletes
/// nothing, and a round that reads no users at all while the mirror holds some is refused
/// rather than read as "everyone left". Users missing from `/users` are soft-deleted
/// (restorable) unless the deleted items, read completely after `/users`, miss them too.
async fn full(
    ctx: &SyncContext,
    run: &mut SyncRun,
    clock: &impl Fn() -> i64,
    progress: &Progress,
) -> Result<(), Error> {
    let start_link = match ctx.graph.users_delta(DeltaStart::Latest).next_page().await {
        Ok(page) => page.and_then(|p| p.delta_link),
        // The cloud may not offer delta queries; the next delta round then reads everything.
        Err(error) if !error.is_retryable() => {
            tracing::warn!(%error, "no delta link from Graph; delta rounds will run as full rounds");
            None
        }
        Err(error) => return Err(error.into()),
    };

    // A first load of an empty mirror builds its search indexes after the users are in.
    let set_aside = {
        let mut conn = ctx.conn().await?;
        store::deferred::set_aside_if_empty(&mut conn, ctx.db.backend()).await?
    };
    let (pages_tx, mut pages_rx) = mpsc::channel(PAGES_IN_FLIGHT);
    let mut pages = ctx.graph.list_users();
    let reader = tokio::spawn(async move {
        loop {
            let next = pages.next_page().await;
            let done = !matches!(next, Ok(Some(_)));
            if pages_tx.send(next).await.is_err() || done {
                break;
            }
        }
    });
    // Pages are written by up to FULL_ROUND_WRITERS transactions at once. A page that holds
    // a user another page still being written holds too waits for it, so of a user Graph
    // listed twice the later entry still wins.
    let mut outcome = Ok(());
    // Each page is written by a task of its own, so that one waiting for the database (as
    // SQLite's single writer makes it) never holds up another, or the round's progress record.
    let shared = std::sync::Arc::new(ctx.clone());
    let mut writing: JoinSet<(Result<Applied, Error>, Vec<String>)> = JoinSet::new();
    let mut in_flight: HashMap<String, u32> = HashMap::new();
    'pages: while let Some(next) = pages_rx.recv().await {
        let page = match next {
            Ok(Some(page)) => page,
            Ok(None) => break,
            Err(error) => {
                outcome = Err(Error::from(error));
                break;
            }
        };
        let ids: Vec<String> = page
            .users
            .iter()
            .map(|u| u.id.to_ascii_lowercase())
            .collect();
        while writing.len() >= FULL_ROUND_WRITERS
            || (!writing.is_empty() && ids.iter().any(|id| in_flight.contains_key(id)))
        {
            let Some((written, done)) = writing.join_next().await.map(joined) else {
                break;
            };
            release(&mut in_flight, &done);
            match written {
                Ok(applied) => {
                    applied.count_into(run);
                    progress.page(ctx, run).await;
                }
                Err(error) => {
                    outcome = Err(error);
                    break 'pages;
                }
            }
        }
        for id in &ids {
            *in_flight.entry(id.clone()).or_default() += 1;
        }
        let changes = Changes {
            users: page.users,
            rejected: page.rejected,
            ..Changes::default()
        };
        let (run_id, now_ms) = (run.run_id.clone(), clock());
        let ctx = shared.clone();
        writing.spawn(async move { (apply(&ctx, &run_id, changes, now_ms).await, ids) });
    }
    // Pages already being written finish (and count) whatever happened meanwhile.
    while let Some((written, _)) = writing.join_next().await.map(joined) {
        match written {
            Ok(applied) => {
                applied.count_into(run);
                progress.page(ctx, run).await;
            }
            Err(error) => {
                if outcome.is_ok() {
                    outcome = Err(error);
                }
            }
        }
    }
    drop(pages_rx);
    reader
        .await
        .map_err(|e| anyhow::anyhow!("directory reader task failed: {e}"))?;
    // Whatever the pages' outcome: listings need the indexes, and the rest of the round (the
    // sweep, the groups, the registry's updates) reads through them. Indexes an earlier
    // round could not build are built here too.
    if set_aside {
        progress.phase(run, Phase::BuildingIndexes);
        // Only an optimisation of the batch import that usually follows: a failure leaves the
        // tables as loaded, and the round goes on to build the indexes.
        let started = Instant::now();
        match store::deferred::order_by_object_id(ctx.db.pool(), ctx.db.backend()).await {
            Ok(()) => tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "mirror put in object-id order after the first load"
            ),
            Err(error) => tracing::warn!(%error, "cannot put the loaded mirror in object-id order"),
        }
    }
    let started = Instant::now();
    let built = {
        let mut conn = ctx.conn().await?;
        store::deferred::build_set_aside(&mut conn, ctx.db.backend()).await?
    };
    if built > 0 {
        tracing::info!(
            built,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "search indexes built after the first load"
        );
    }
    if set_aside {
        // The deleted items are read next.
        progress.phase(run, Phase::ReadingUsers);
    }
    outcome?;

    {
        let mut conn = ctx.conn().await?;
        let present = store::present_count(&mut conn, &ctx.tenant_id).await?;
        if run.users_seen == 0 && run.users_rejected == 0 && present > 0 {
            return Err(Error::Directory {
                message: format!(
                    "the directory listed no users while the mirror holds {present}; \
                     refusing to mark them all deleted"
                ),
                retryable: true,
            });
        }
    }
    // Absence from /users is not deletion: a soft-deleted user is missing there too. Only a
    // user missing from the deleted items as well is gone for good, and only when those were
    // read completely; otherwise every missing user is taken as soft-deleted (restorable).
    let deleted_items = read_deleted_items(ctx, run).await;
    let concluded =
        if deleted_items.complete && recheck_unseen(ctx, run, &deleted_items.pages, clock).await? {
            DeletionState::HardDeleted
        } else {
            DeletionState::SoftDeleted
        };

    // The deleted items' users and the sweep are written with the new deltaLink in one
    // transaction: a round that fails here leaves the mirror's deletion states as they were.
    let mut tx = ctx
        .db
        .begin_write()
        .await
        .map_err(Error::internal("begin sweep"))?;
    for ids in &deleted_items.pages {
        run.users_removed += store::mark_restorable(
            &mut tx,
            ctx.db.backend(),
            &ctx.tenant_id,
            ids,
            &run.run_id,
            clock(),
        )
        .await?;
    }
    run.users_removed += store::sweep_unseen(
        &mut tx,
        &ctx.tenant_id,
        &run.run_id,
        run.started_at_ms,
        clock(),
        concluded,
    )
    .await?;
    match &start_link {
        Some(link) => store::save_delta_link(&mut tx, &ctx.tenant_id, link, clock()).await?,
        None => store::clear_delta_link(&mut tx, &ctx.tenant_id).await?,
    }
    tx.commit().await.map_err(Error::internal("commit sweep"))?;
    let mut conn = ctx.conn().await?;
    store::analyze(&mut conn).await
}

/// The soft-deleted users a full round read from the directory's deleted items.
struct DeletedItems {
    /// Object ids (normalized), a page each.
    pages: Vec<Vec<String>>,
    /// Every page was read and every entry had an id.
    complete: bool,
}

/// Reads the directory's deleted items (soft-deleted users, restorable for 30 days) during a
/// full round, after `/users`. A failed read (an outage, a missing permission) or an entry
/// without an id leaves the listing incomplete, and the round then concludes nobody is
/// hard-deleted; the pages read before the failure still count (those users are restorable).
async fn read_deleted_items(ctx: &SyncContext, run: &SyncRun) -> DeletedItems {
    let mut items = DeletedItems {
        pages: Vec::new(),
        complete: true,
    };
    let mut pages = ctx.graph.deleted_users();
    loop {
        let page = match pages.next_page().await {
            Ok(Some(page)) => page,
            Ok(None) => return items,
            Err(error) => {
                tracing::warn!(
                    run_id = %run.run_id,
                    %error,
                    "cannot read the directory's deleted items; users missing from this round \
                     are taken as soft-deleted, none as hard-deleted"
                );
                items.complete = false;
                return items;
            }
        };
        if !page.rejected.is_empty() {
            tracing::warn!(
                run_id = %run.run_id,
                rejected = page.rejected.len(),
                "deleted items without an id; users missing from this round are taken as \
                 soft-deleted, none as hard-deleted"
            );
            items.complete = false;
        }
        // An id that is not a GUID names no mirror user (the mirror holds normalized ones).
        let ids: Vec<String> = page
            .ids
            .iter()
            .filter_map(|id| service_runtime::normalize_guid(id))
            .collect();
        if !ids.is_empty() {
            items.pages.push(ids);
        }
    }
}

/// Looks the users about to be concluded hard-deleted (unseen, and not in the deleted items)
/// up once more (`$batch`, 20 a request): one restored after `/users` was read but before the
/// deleted items were is listed in neither, and is found here and kept as seen. Hard
/// deletions are few, so this costs a few requests a round. False when the lookup failed:
/// nobody is then concluded hard-deleted.
async fn recheck_unseen(
    ctx: &SyncContext,
    run: &mut SyncRun,
    deleted_items: &[Vec<String>],
    clock: &impl Fn() -> i64,
) -> Result<bool, Error> {
    let restorable: HashSet<&str> = deleted_items.iter().flatten().map(String::as_str).collect();
    let unseen: Vec<String> = {
        let mut conn = ctx.conn().await?;
        store::unseen_users(&mut conn, &ctx.tenant_id, &run.run_id, run.started_at_ms).await?
    }
    .into_iter()
    .filter(|id| !restorable.contains(id.as_str()))
    .collect();
    if unseen.is_empty() {
        return Ok(true);
    }
    let found = match ctx.graph.get_users_batch(&unseen).await {
        Ok(found) => found,
        Err(error) => {
            tracing::warn!(
                run_id = %run.run_id,
                %error,
                "cannot look up the users missing from this round; they are taken as \
                 soft-deleted, none as hard-deleted"
            );
            return Ok(false);
        }
    };
    let users: Vec<GraphUser> = found.into_iter().filter_map(|(_, user)| user).collect();
    if !users.is_empty() {
        tracing::info!(
            run_id = %run.run_id,
            back = users.len(),
            "users missing from the listing are in the directory after all"
        );
        let changes = Changes {
            users,
            ..Changes::default()
        };
        apply(ctx, &run.run_id, changes, clock())
            .await?
            .count_into(run);
    }
    Ok(true)
}

/// A delta round from the stored deltaLink, page by page, each in its own transaction; the
/// new link is stored with the last page. `DeltaUnavailable` when there is no link or Graph
/// wants a full resync.
async fn delta(
    ctx: &SyncContext,
    run: &mut SyncRun,
    clock: &impl Fn() -> i64,
    progress: &Progress,
) -> Result<(), Error> {
    let link = {
        let mut conn = ctx.conn().await?;
        store::delta_link(&mut conn, &ctx.tenant_id).await?
    };
    let Some(link) = link else {
        return Err(Error::DeltaUnavailable(
            "no delta link stored yet".to_owned(),
        ));
    };
    let mut pages = ctx.graph.users_delta(DeltaStart::Link(link));
    loop {
        let page = match pages.next_page().await {
            Ok(Some(page)) => page,
            Ok(None) => return Ok(()),
            Err(graph::Error::SyncReset { status, code, .. }) => {
                let mut conn = ctx.conn().await?;
                store::clear_delta_link(&mut conn, &ctx.tenant_id).await?;
                return Err(Error::DeltaUnavailable(format!(
                    "Graph asked for a resync ({status} {code})"
                )));
            }
            Err(error) => return Err(error.into()),
        };
        let last = page.delta_link.is_some();
        let changes = Changes {
            users: page.users,
            removed: page.removed,
            rejected: page.rejected,
            delta_link: page.delta_link,
        };
        apply(ctx, &run.run_id, changes, clock())
            .await?
            .count_into(run);
        progress.page(ctx, run).await;
        if last {
            return Ok(());
        }
    }
}

/// Refreshes the members of every configured group: the group's users join the mirror, and
/// members not seen in this complete read leave the group. A configured group the directory
/// does not know fails the round, naming it.
async fn sync_groups(
    ctx: &SyncContext,
    run: &mut SyncRun,
    clock: &impl Fn() -> i64,
) -> Result<(), Error> {
    let mut changed_members = 0;
    for group_id in &ctx.groups {
        let Some(group) = ctx.graph.get_group(group_id).await? else {
            return Err(Error::Directory {
                message: format!("configured group {group_id} does not exist"),
                retryable: false,
            });
        };
        let group_id = group.id.to_ascii_lowercase();
        let before = {
            let mut conn = ctx.conn().await?;
            store::group_member_count(&mut conn, &ctx.tenant_id, &group_id).await?
        };
        let mut pages = ctx.graph.group_users(&group_id);
        let mut members: u64 = 0;
        while let Some(page) = pages.next_page().await? {
            let ids: Vec<String> = page
                .users
                .iter()
                .filter_map(|u| service_runtime::normalize_guid(&u.id))
                .collect();
            let changes = Changes {
                users: page.users,
                rejected: page.rejected,
                ..Changes::default()
            };
            // Group members are users of the tenant: they join the mirror as any user does;
            // only what that changed counts, as the round has seen them already.
            let applied = apply(ctx, &run.run_id, changes, clock()).await?;
            run.users_created += applied.created;
            run.users_updated += applied.updated;
            let mut conn = ctx.conn().await?;
            store::add_group_members(
                &mut conn,
                ctx.db.backend(),
                &ctx.tenant_id,
                &group_id,
                &ids,
                &run.run_id,
            )
            .await?;
            members += ids.len() as u64;
        }
        let mut tx = ctx
            .db
            .begin_write()
            .await
            .map_err(Error::internal("begin group"))?;
        let left =
            store::remove_unseen_members(&mut tx, &ctx.tenant_id, &group_id, &run.run_id).await?;
        let row = store::GroupRow {
            group_id: group_id.clone(),
            display_name: group.display_name.unwrap_or_default(),
            member_count: members,
        };
        store::upsert_group(&mut tx, &ctx.tenant_id, &row, clock()).await?;
        tx.commit().await.map_err(Error::internal("commit group"))?;
        tracing::info!(run_id = %run.run_id, group_id = %group_id, members, left, "group members refreshed");
        // Everyone seen is a member now: members = before + joined - left.
        let joined = (members + left).saturating_sub(before);
        changed_members += left + joined;
    }
    if changed_members >= ANALYZE_AFTER_MEMBER_CHANGES {
        let mut conn = ctx.conn().await?;
        store::analyze_groups(&mut conn).await?;
    }
    Ok(())
}

/// Membership changes in one round after which the planner's statistics are refreshed.
const ANALYZE_AFTER_MEMBER_CHANGES: u64 = 1000;
