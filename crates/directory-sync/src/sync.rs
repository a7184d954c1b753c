//! Full sync: reads every user from Graph into the mirror, page by page, then marks the users
//! the directory no longer lists as deleted.

use graph::{GraphClient, GraphUser};
use service_runtime::storage::Database;
use tokio::sync::mpsc;

use crate::domain::{AccountType, DeletionState, MirrorUser, SyncMode, SyncRun, SyncRunStatus};
use crate::error::Error;
use crate::store;

/// Pages read ahead of the database writer: Graph latency and writes overlap, and memory stays
/// bounded by this many pages whatever the tenant size.
const PAGES_IN_FLIGHT: usize = 2;

/// Maps a Graph user to its mirror form, or says why it cannot be mirrored (the user is then
/// rejected alone). Absent strings become empty; control characters in names become spaces; a
/// user whose `accountEnabled` was not returned counts as enabled (we always `$select` it).
pub fn mirror_user(tenant_id: &str, user: &GraphUser) -> Result<MirrorUser, String> {
    let object_id = service_runtime::normalize_guid(&user.id)
        .ok_or_else(|| format!("id {:?} is not a GUID", user.id))?;
    let upn = user.user_principal_name.trim();
    if upn.is_empty() || upn.chars().any(char::is_control) {
        return Err(format!(
            "userPrincipalName {upn:?} is empty or holds control characters"
        ));
    }
    let mail = user.mail.as_deref().unwrap_or_default().trim();
    if mail.chars().any(char::is_control) {
        return Err(format!("mail {mail:?} holds control characters"));
    }
    let text = |value: &Option<String>| -> String {
        let cleaned: String = value
            .as_deref()
            .unwrap_or_default()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        cleaned.trim().to_owned()
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
    })
}

/// Runs one full sync of `tenant_id` and records it as `run`. The sweep of unseen users runs
/// only after every page was read: a round that fails part-way deletes nothing, and a round
/// that reads no users at all while the mirror holds some is refused rather than read as
/// "everyone left".
pub async fn full_sync(
    db: &Database,
    graph: &GraphClient,
    tenant_id: &str,
    mut run: SyncRun,
    clock: impl Fn() -> i64,
) -> SyncRun {
    debug_assert_eq!(run.mode, SyncMode::Full);
    if let Err(error) = save(db, tenant_id, &run).await {
        tracing::error!(%error, "cannot record the sync run");
    }
    let result = read_and_sweep(db, graph, tenant_id, &mut run, &clock).await;
    run.finished_at_ms = clock();
    match result {
        Ok(()) => run.status = SyncRunStatus::Succeeded,
        Err(error) => {
            run.status = SyncRunStatus::Failed;
            run.error = error.to_string();
            tracing::warn!(run_id = %run.run_id, %error, "full sync failed");
        }
    }
    if let Err(error) = save(db, tenant_id, &run).await {
        tracing::error!(%error, "cannot record the end of the sync run");
    }
    tracing::info!(
        run_id = %run.run_id,
        status = run.status.as_str(),
        seen = run.users_seen,
        created = run.users_created,
        updated = run.users_updated,
        removed = run.users_removed,
        rejected = run.users_rejected,
        "full sync finished"
    );
    run
}

async fn save(db: &Database, tenant_id: &str, run: &SyncRun) -> Result<(), Error> {
    let mut conn = db
        .pool()
        .acquire()
        .await
        .map_err(Error::internal("acquire"))?;
    store::save_run(&mut conn, tenant_id, run).await
}

async fn read_and_sweep(
    db: &Database,
    graph: &GraphClient,
    tenant_id: &str,
    run: &mut SyncRun,
    clock: &impl Fn() -> i64,
) -> Result<(), Error> {
    let (pages_tx, mut pages_rx) = mpsc::channel(PAGES_IN_FLIGHT);
    let mut pages = graph.list_users();
    let reader = tokio::spawn(async move {
        loop {
            let next = pages.next_page().await;
            let done = !matches!(next, Ok(Some(_)));
            if pages_tx.send(next).await.is_err() || done {
                break;
            }
        }
    });

    let mut outcome = Ok(());
    while let Some(next) = pages_rx.recv().await {
        let page = match next {
            Ok(Some(page)) => page,
            Ok(None) => break,
            Err(error) => {
                outcome = Err(Error::from(error));
                break;
            }
        };
        let mut users: Vec<MirrorUser> = Vec::with_capacity(page.users.len());
        let mut rejected: Vec<(Option<String>, String)> = page
            .rejected
            .into_iter()
            .map(|r| (r.id, r.reason))
            .collect();
        for user in &page.users {
            match mirror_user(tenant_id, user) {
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
            tracing::warn!(run_id = %run.run_id, object_id = ?object_id, %reason, "directory user rejected");
        }
        let mut tx = db
            .begin_write()
            .await
            .map_err(Error::internal("begin page"))?;
        let counts = store::upsert_users(
            &mut tx,
            db.backend(),
            tenant_id,
            &users,
            &run.run_id,
            clock(),
        )
        .await?;
        store::touch_seen(&mut tx, db.backend(), tenant_id, &rejected_ids, &run.run_id).await?;
        tx.commit().await.map_err(Error::internal("commit page"))?;
        run.users_seen += users.len() as u64;
        run.users_created += counts.created;
        run.users_updated += counts.updated;
        run.users_rejected += rejected.len() as u64;
    }
    drop(pages_rx);
    reader
        .await
        .map_err(|e| anyhow::anyhow!("directory reader task failed: {e}"))?;
    outcome?;

    let mut tx = db
        .begin_write()
        .await
        .map_err(Error::internal("begin sweep"))?;
    let present = store::present_count(&mut tx, tenant_id).await?;
    if run.users_seen == 0 && run.users_rejected == 0 && present > 0 {
        return Err(Error::Directory {
            message: format!(
                "the directory listed no users while the mirror holds {present}; \
                 refusing to mark them all deleted"
            ),
            retryable: true,
        });
    }
    run.users_removed =
        store::sweep_unseen(&mut tx, tenant_id, &run.run_id, run.started_at_ms, clock()).await?;
    tx.commit().await.map_err(Error::internal("commit sweep"))?;
    Ok(())
}
