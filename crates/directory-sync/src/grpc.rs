//! The gRPC edge: converts protobuf messages to domain values and back.

use std::pin::Pin;

use futures::Stream;
use proto::directory::v1 as pb;
use service_runtime::auth::{ADMIN, AccessRules, IMPORT_WORKER, READ, READER, WRITE};
use service_runtime::grpc::{
    MAX_FILTER_LEN, bounded, decode_page_token, encode_page_token, page_size,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::domain::{
    AccountType, DeletionState, ListFilter, MirrorUser, SyncMode, SyncRun, SyncRunStatus,
};
use crate::error::Error;
use crate::provision::Effects;
use crate::service::{Directory, ListedUser};
use crate::store::ListCursor;
use crate::sync::{Phase, RoundView};

/// Who may call each RPC.
pub const ACCESS: AccessRules = &[
    // import-worker checks that a batch job's or a rule's group is synced (it may stream the
    // same users anyway).
    (
        "/userimport.directory.v1.DirectoryService/ListUsers",
        &[ADMIN, READER, IMPORT_WORKER],
    ),
    (
        "/userimport.directory.v1.DirectoryService/GetUsers",
        &[ADMIN, READER, IMPORT_WORKER],
    ),
    (
        "/userimport.directory.v1.DirectoryService/StreamUsers",
        &[ADMIN, IMPORT_WORKER],
    ),
    ("/userimport.directory.v1.DirectoryService/ListGroups", READ),
    ("/userimport.directory.v1.DirectoryService/SyncNow", WRITE),
    // Readers may follow a round; only administrators start one.
    (
        "/userimport.directory.v1.DirectoryService/WatchSyncRun",
        READ,
    ),
    (
        "/userimport.directory.v1.DirectoryService/GetSyncStatus",
        READ,
    ),
    (
        "/userimport.directory.v1.DirectoryService/ListSyncRuns",
        READ,
    ),
    (
        "/userimport.directory.v1.DirectoryService/ApproveSyncRun",
        WRITE,
    ),
    (
        "/userimport.directory.v1.DirectoryService/RejectSyncRun",
        WRITE,
    ),
    // Who holds a SCIM secret writes the mirror: administrators only.
    (
        "/userimport.directory.v1.DirectoryService/CreateScimToken",
        &[ADMIN],
    ),
    (
        "/userimport.directory.v1.DirectoryService/ListScimTokens",
        &[ADMIN],
    ),
    (
        "/userimport.directory.v1.DirectoryService/RevokeScimToken",
        &[ADMIN],
    ),
];

/// Largest page of a listing.
pub const MAX_PAGE_SIZE: u32 = 1000;
const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest batch of a user stream.
pub const MAX_STREAM_BATCH: u32 = 1000;
const DEFAULT_STREAM_BATCH: u32 = 500;
/// A watched round's changes are sent at most this often (pages can come faster).
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);
/// How often the record of a run this process does not hold is read again while it runs.
const WATCH_RECORD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Implements `userimport.directory.v1.DirectoryService`.
pub struct GrpcApi {
    directory: Directory,
}

impl GrpcApi {
    pub fn new(directory: Directory) -> Self {
        Self { directory }
    }
}

fn to_pb(user: MirrorUser, imported: bool) -> pb::DirectoryUser {
    let account_type = match user.account_type {
        AccountType::Member => pb::AccountType::Member,
        AccountType::Guest => pb::AccountType::Guest,
    };
    let deletion_state = match user.deletion_state {
        DeletionState::Present => pb::DeletionState::Present,
        DeletionState::SoftDeleted => pb::DeletionState::SoftDeleted,
        DeletionState::HardDeleted => pb::DeletionState::HardDeleted,
    };
    pb::DirectoryUser {
        object_id: user.object_id,
        tenant_id: user.tenant_id,
        user_principal_name: user.user_principal_name,
        mail: user.mail,
        display_name: user.display_name,
        given_name: user.given_name,
        surname: user.surname,
        account_enabled: user.account_enabled,
        account_type: account_type.into(),
        imported,
        deletion_state: deletion_state.into(),
        source: if user.pushed {
            pb::UserSource::Scim
        } else {
            pb::UserSource::Graph
        }
        .into(),
    }
}

fn preview_to_pb(effects: Effects) -> pb::SyncPreview {
    use crate::domain::{ImportKind, UpdateKind};
    use proto::registry::v1 as registry_pb;
    pb::SyncPreview {
        updates: effects
            .updates
            .into_iter()
            .map(|u| registry_pb::UserUpdateOutcome {
                kind: match u.kind {
                    UpdateKind::Updated => registry_pb::UpdateKind::Updated,
                    UpdateKind::Unchanged => registry_pb::UpdateKind::Unchanged,
                    UpdateKind::NotFound => registry_pb::UpdateKind::NotFound,
                    UpdateKind::Failed => registry_pb::UpdateKind::Failed,
                    UpdateKind::Deleted => registry_pb::UpdateKind::Deleted,
                }
                .into(),
                object_id: u.object_id,
                user_id: u.user_id,
                changed: u.changed,
                reason: u.reason,
                enabled: u.enabled,
            })
            .collect(),
        would_update: effects.updated,
        would_disable: effects.disabled,
        imports: effects
            .imports
            .into_iter()
            .map(|o| registry_pb::ImportOutcome {
                kind: match o.kind {
                    ImportKind::Created => registry_pb::OutcomeKind::Created,
                    ImportKind::AlreadyPresent => registry_pb::OutcomeKind::AlreadyPresent,
                    ImportKind::Skipped => registry_pb::OutcomeKind::Skipped,
                    ImportKind::Failed => registry_pb::OutcomeKind::Failed,
                }
                .into(),
                object_id: o.object_id,
                user_id: o.user_id,
                reason: o.reason,
                note: o.note,
            })
            .collect(),
        would_import: effects.imported,
        rules: effects.rules.map(|r| registry_pb::RuleChanges {
            granted: r.granted,
            revoked: r.revoked,
            truncated: r.truncated,
            changes: r
                .changes
                .into_iter()
                .map(|c| registry_pb::RuleChange {
                    rule_id: c.rule_id,
                    role_id: c.role_id,
                    company: c.company,
                    object_id: c.object_id,
                    user_id: c.user_id,
                    granted: c.granted,
                })
                .collect(),
        }),
        truncated: effects.truncated,
    }
}

/// A watched run: its state, what it is doing, its rate, and at the end a dry run's preview.
fn watched_to_pb(run: SyncRun, phase: &str, preview: Option<Effects>) -> pb::WatchSyncRunResponse {
    let seconds = run.duration_ms(service_runtime::now_ms()) as f64 / 1000.0;
    let users_per_second = if seconds > 0.0 {
        run.users_seen as f64 / seconds
    } else {
        0.0
    };
    pb::WatchSyncRunResponse {
        run: Some(run_to_pb(run)),
        phase: phase.to_owned(),
        users_per_second,
        preview: preview.map(preview_to_pb),
    }
}

fn view_to_pb(view: RoundView) -> pb::WatchSyncRunResponse {
    watched_to_pb(view.run, view.phase.as_str(), view.preview)
}

fn token_to_pb(token: crate::store::scim::TokenRow) -> pb::ScimToken {
    pb::ScimToken {
        token_id: token.token_id,
        name: token.name,
        created_at_ms: token.created_ms,
        created_by: token.created_by,
        last_used_at_ms: token.last_used_ms.unwrap_or(0),
        revoked_at_ms: token.revoked_ms.unwrap_or(0),
    }
}

fn run_to_pb(run: SyncRun) -> pb::SyncRun {
    let duration_ms = run.duration_ms(service_runtime::now_ms());
    let mode = match run.mode {
        SyncMode::Full => pb::SyncMode::Full,
        SyncMode::Delta => pb::SyncMode::Delta,
        SyncMode::Scim => pb::SyncMode::Scim,
    };
    let status = match run.status {
        SyncRunStatus::Running => pb::SyncRunStatus::Running,
        SyncRunStatus::Succeeded => pb::SyncRunStatus::Succeeded,
        SyncRunStatus::Failed => pb::SyncRunStatus::Failed,
        SyncRunStatus::AwaitingApproval => pb::SyncRunStatus::AwaitingApproval,
        SyncRunStatus::Rejected => pb::SyncRunStatus::Rejected,
    };
    pb::SyncRun {
        run_id: run.run_id,
        mode: mode.into(),
        status: status.into(),
        started_at_ms: run.started_at_ms,
        finished_at_ms: run.finished_at_ms,
        users_seen: run.users_seen,
        users_created: run.users_created,
        users_updated: run.users_updated,
        users_removed: run.users_removed,
        users_rejected: run.users_rejected,
        error: run.error,
        pages_read: run.pages_read,
        fell_back_from_delta: run.fell_back_from_delta.is_some(),
        fallback_reason: run.fell_back_from_delta.unwrap_or_default(),
        duration_ms,
    }
}

/// Parses a GUID field such as a group id.
fn parse_guid(field: &'static str, raw: &str) -> Result<String, Error> {
    service_runtime::normalize_guid(raw).ok_or_else(|| {
        Error::invalid(
            field,
            format!(
                "{} is not a GUID",
                service_runtime::error::quote(raw.trim())
            ),
        )
    })
}

/// Parses an Entra object id (a GUID), naming the field and position on error.
pub fn parse_object_id(field: &str, raw: &str) -> Result<String, Error> {
    service_runtime::normalize_guid(raw).ok_or_else(|| {
        Error::invalid(
            "object_ids",
            format!(
                "{field} {} is not an object id (a GUID)",
                service_runtime::error::quote(raw.trim())
            ),
        )
    })
}

type UserStream = Pin<Box<dyn Stream<Item = Result<pb::StreamUsersResponse, Status>> + Send>>;
type RunStream = Pin<Box<dyn Stream<Item = Result<pb::WatchSyncRunResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::directory_service_server::DirectoryService for GrpcApi {
    #[tracing::instrument(skip_all, fields(search = %request.get_ref().search))]
    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let request = request.into_inner();
        // What the page token is bound to: every filter of the request.
        let query = pb::ListUsersRequest {
            page_token: String::new(),
            page_size: 0,
            ..request.clone()
        };
        let group_id = match request.group_id.trim() {
            "" => None,
            id => Some(parse_guid("group_id", id)?),
        };
        let limit = page_size(
            "page_size",
            request.page_size,
            DEFAULT_PAGE_SIZE,
            MAX_PAGE_SIZE,
        )?;
        let cursor: ListCursor = decode_page_token(&query, &request.page_token)?;
        let account_type = match pb::AccountType::try_from(request.account_type) {
            Ok(pb::AccountType::Member) => Some(AccountType::Member),
            Ok(pb::AccountType::Guest) => Some(AccountType::Guest),
            _ => None,
        };
        bounded("search", &request.search, MAX_FILTER_LEN)?;
        let filter = ListFilter {
            search: request.search,
            enabled_only: request.enabled_only,
            account_type,
            group_id,
            in_synced_groups: false,
        };
        let not_imported_only = request.not_imported_only.unwrap_or(true);
        let (users, next) = self
            .directory
            .list_users(&filter, not_imported_only, cursor, limit)
            .await?;
        let next_page_token = match next {
            Some(cursor) => encode_page_token(&query, &cursor),
            None => String::new(),
        };
        Ok(Response::new(pb::ListUsersResponse {
            users: users
                .into_iter()
                .map(|ListedUser { user, imported }| to_pb(user, imported))
                .collect(),
            next_page_token,
        }))
    }

    async fn get_users(
        &self,
        request: Request<pb::GetUsersRequest>,
    ) -> Result<Response<pb::GetUsersResponse>, Status> {
        let request = request.into_inner();
        let object_ids = request
            .object_ids
            .iter()
            .enumerate()
            .map(|(i, id)| parse_object_id(&format!("object_ids[{i}]"), id))
            .collect::<Result<Vec<_>, _>>()?;
        let upns: Vec<String> = request
            .user_principal_names
            .iter()
            .map(|u| u.trim().to_owned())
            .collect();
        if let Some(i) = upns.iter().position(|u| u.is_empty() || !u.contains('@')) {
            return Err(Error::invalid(
                "user_principal_names",
                format!("user_principal_names[{i}] is not a UPN"),
            )
            .into());
        }
        let (users, not_found) = self.directory.get_users(&object_ids, &upns).await?;
        Ok(Response::new(pb::GetUsersResponse {
            users: users.into_iter().map(|u| to_pb(u, false)).collect(),
            not_found,
        }))
    }

    type StreamUsersStream = UserStream;

    async fn stream_users(
        &self,
        request: Request<pb::StreamUsersRequest>,
    ) -> Result<Response<UserStream>, Status> {
        let request = request.into_inner();
        let group_id = match request.scope.and_then(|scope| scope.scope) {
            Some(pb::scope::Scope::GroupId(id)) => {
                let id = parse_guid("scope.group_id", &id)?;
                self.directory.ensure_group_synced(&id).await?;
                Some(id)
            }
            Some(pb::scope::Scope::All(_)) | None => None,
        };
        let batch = page_size(
            "batch_size",
            request.batch_size,
            DEFAULT_STREAM_BATCH,
            MAX_STREAM_BATCH,
        )?;
        let mut after = match request.after_object_id.trim() {
            "" => String::new(),
            id => parse_object_id("after_object_id", id)?,
        };
        // A small channel: the reader stays at most two batches ahead of the client.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let directory = self.directory.clone();
        tokio::spawn(async move {
            loop {
                let users = match directory
                    .users_after(group_id.as_deref(), &after, batch)
                    .await
                {
                    Ok(users) => users,
                    Err(error) => {
                        let _ = tx.send(Err(Status::from(error))).await;
                        return;
                    }
                };
                let Some(last) = users.last() else { return };
                after = last.object_id.clone();
                let done = users.len() < batch as usize;
                let message = pb::StreamUsersResponse {
                    users: users.into_iter().map(|u| to_pb(u, false)).collect(),
                };
                if tx.send(Ok(message)).await.is_err() || done {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let request = request.into_inner();
        // What the page token is bound to: every filter of the request.
        let query = pb::ListGroupsRequest {
            page_token: String::new(),
            page_size: 0,
            ..request.clone()
        };
        let limit = page_size(
            "page_size",
            request.page_size,
            DEFAULT_PAGE_SIZE,
            MAX_PAGE_SIZE,
        )?;
        let after: (String, String) = decode_page_token(&query, &request.page_token)?;
        bounded("search", &request.search, MAX_FILTER_LEN)?;
        let groups = self
            .directory
            .groups(request.search.trim(), &after, limit)
            .await?;
        let next_page_token = match groups.last() {
            Some(last) if groups.len() == limit as usize => {
                encode_page_token(&query, &(last.display_name.clone(), last.group_id.clone()))
            }
            _ => String::new(),
        };
        Ok(Response::new(pb::ListGroupsResponse {
            groups: groups
                .into_iter()
                .map(|g| pb::Group {
                    object_id: g.group_id,
                    display_name: g.display_name,
                    member_count: g.member_count,
                })
                .collect(),
            next_page_token,
        }))
    }

    async fn sync_now(
        &self,
        request: Request<pb::SyncNowRequest>,
    ) -> Result<Response<pb::SyncNowResponse>, Status> {
        let request = request.into_inner();
        let mode = match request.mode() {
            pb::SyncMode::Delta => SyncMode::Delta,
            pb::SyncMode::Full | pb::SyncMode::Unspecified => SyncMode::Full,
            pb::SyncMode::Scim => {
                return Err(Status::invalid_argument(
                    "mode: SCIM rounds gather what Entra pushes; they are not started",
                ));
            }
        };
        // The round is the service's: this call only starts it, and its deadline or
        // cancellation no longer reaches it.
        let (run, _) = self.directory.start_round(mode, request.dry_run).await?;
        Ok(Response::new(pb::SyncNowResponse {
            run: Some(run_to_pb(run)),
            preview: None,
        }))
    }

    type WatchSyncRunStream = RunStream;

    async fn watch_sync_run(
        &self,
        request: Request<pb::WatchSyncRunRequest>,
    ) -> Result<Response<RunStream>, Status> {
        let request = request.into_inner();
        bounded("run_id", &request.run_id, MAX_FILTER_LEN)?;
        let run_id = request.run_id.trim().to_owned();
        if run_id.is_empty() {
            return Err(Error::invalid("run_id", "is empty").into());
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        match self.directory.follow(&run_id) {
            Some(mut views) => {
                tokio::spawn(async move {
                    loop {
                        // Converted under the view's lock: the time so far is read in step
                        // with the round taking its end time (`Progress::take_end_time`).
                        let (update, ended) = {
                            let view = views.borrow_and_update();
                            (view_to_pb(view.clone()), view.phase == Phase::Ended)
                        };
                        if tx.send(Ok(update)).await.is_err() || ended {
                            return;
                        }
                        tokio::select! {
                            () = tx.closed() => return,
                            () = tokio::time::sleep(WATCH_INTERVAL) => {}
                        }
                        tokio::select! {
                            () = tx.closed() => return,
                            changed = views.changed() => if changed.is_err() {
                                // The round is no longer held; its last view is its end.
                                let view = views.borrow().clone();
                                let _ = tx.send(Ok(view_to_pb(view))).await;
                                return;
                            },
                        }
                    }
                });
            }
            None => {
                // A run this process did not start (or no longer holds): its record.
                let mut run = self.directory.run(&run_id).await?;
                let directory = self.directory.clone();
                tokio::spawn(async move {
                    loop {
                        let ended = run.has_ended();
                        // No phase: only the process running a round knows it.
                        if tx.send(Ok(watched_to_pb(run, "", None))).await.is_err() || ended {
                            return;
                        }
                        tokio::select! {
                            () = tx.closed() => return,
                            () = tokio::time::sleep(WATCH_RECORD_INTERVAL) => {}
                        }
                        run = match directory.run(&run_id).await {
                            Ok(run) => run,
                            Err(error) => {
                                let _ = tx.send(Err(Status::from(error))).await;
                                return;
                            }
                        };
                    }
                });
            }
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_sync_status(
        &self,
        _: Request<pb::GetSyncStatusRequest>,
    ) -> Result<Response<pb::GetSyncStatusResponse>, Status> {
        let (last_run, mirrored_users) = self.directory.status().await?;
        Ok(Response::new(pb::GetSyncStatusResponse {
            last_run: last_run.map(run_to_pb),
            next_run_at_ms: self.directory.next_run_at_ms(),
            mirrored_users,
            tenant_id: self.directory.tenant_id().to_owned(),
        }))
    }

    async fn list_sync_runs(
        &self,
        request: Request<pb::ListSyncRunsRequest>,
    ) -> Result<Response<pb::ListSyncRunsResponse>, Status> {
        let request = request.into_inner();
        // What the page token is bound to: this listing (which has no filters).
        let query = pb::ListSyncRunsRequest::default();
        let limit = page_size(
            "page_size",
            request.page_size,
            DEFAULT_PAGE_SIZE,
            MAX_PAGE_SIZE,
        )?;
        let before: Option<(i64, String)> = decode_page_token(&query, &request.page_token)?;
        let runs = self.directory.runs(before, limit).await?;
        let next_page_token = match runs.last() {
            Some(last) if runs.len() == limit as usize => {
                encode_page_token(&query, &Some((last.started_at_ms, last.run_id.clone())))
            }
            _ => String::new(),
        };
        Ok(Response::new(pb::ListSyncRunsResponse {
            runs: runs.into_iter().map(run_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn approve_sync_run(
        &self,
        request: Request<pb::ApproveSyncRunRequest>,
    ) -> Result<Response<pb::ApproveSyncRunResponse>, Status> {
        let request = request.into_inner();
        bounded("run_id", &request.run_id, MAX_FILTER_LEN)?;
        let run = self.directory.approve_run(&request.run_id).await?;
        Ok(Response::new(pb::ApproveSyncRunResponse {
            run: Some(run_to_pb(run)),
        }))
    }

    async fn reject_sync_run(
        &self,
        request: Request<pb::RejectSyncRunRequest>,
    ) -> Result<Response<pb::RejectSyncRunResponse>, Status> {
        let request = request.into_inner();
        bounded("run_id", &request.run_id, MAX_FILTER_LEN)?;
        bounded("reason", &request.reason, MAX_FILTER_LEN)?;
        let run = self
            .directory
            .reject_run(&request.run_id, &request.reason)
            .await?;
        Ok(Response::new(pb::RejectSyncRunResponse {
            run: Some(run_to_pb(run)),
        }))
    }

    async fn create_scim_token(
        &self,
        request: Request<pb::CreateScimTokenRequest>,
    ) -> Result<Response<pb::CreateScimTokenResponse>, Status> {
        let created_by = service_runtime::grpc::principal(&request);
        let request = request.into_inner();
        bounded("name", &request.name, MAX_FILTER_LEN)?;
        if request.name.trim().is_empty() {
            return Err(Error::Invalid {
                field: "name",
                reason: "name the token (what it is for, e.g. entra-prod)".into(),
            }
            .into());
        }
        let (token, secret) = self
            .directory
            .create_scim_token(request.name.trim(), &created_by)
            .await?;
        Ok(Response::new(pb::CreateScimTokenResponse {
            token: Some(token_to_pb(token)),
            secret,
        }))
    }

    async fn list_scim_tokens(
        &self,
        _request: Request<pb::ListScimTokensRequest>,
    ) -> Result<Response<pb::ListScimTokensResponse>, Status> {
        let tokens = self.directory.scim_tokens().await?;
        Ok(Response::new(pb::ListScimTokensResponse {
            tokens: tokens.into_iter().map(token_to_pb).collect(),
        }))
    }

    async fn revoke_scim_token(
        &self,
        request: Request<pb::RevokeScimTokenRequest>,
    ) -> Result<Response<pb::RevokeScimTokenResponse>, Status> {
        let request = request.into_inner();
        bounded("token_id", &request.token_id, MAX_FILTER_LEN)?;
        let token = self.directory.revoke_scim_token(&request.token_id).await?;
        Ok(Response::new(pb::RevokeScimTokenResponse {
            token: Some(token_to_pb(token)),
        }))
    }
}
