//! directory-sync's error type and its one mapping to gRPC statuses.

use tonic::Status;

/// What a caller of directory-sync must decide on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{0} is not implemented yet")]
    Unimplemented(&'static str),
    /// A group that is not among the synced groups, so its members are unknown.
    #[error("group {0} is not synced; add it to sync.groups")]
    GroupNotSynced(String),
    /// A delta round cannot run (no stored link, or Graph asked for a resync); the round
    /// runs as a full one instead.
    #[error("delta sync unavailable: {0}")]
    DeltaUnavailable(String),
    /// No sync run has this id.
    #[error("sync run {0} not found")]
    RunNotFound(String),
    /// Only a run halted by the safety threshold can be approved or rejected.
    #[error("sync run {0} is {1}, not awaiting approval")]
    RunNotAwaitingApproval(String, &'static str),
    /// A sync round is already running (its run id, when a round rather than an approval holds
    /// the lock); the caller may follow it, or wait and ask again.
    #[error("a sync round is already running{}", match .0 {
        Some(run_id) => format!(": run {run_id}"),
        None => String::new(),
    })]
    SyncBusy(Option<String>),
    /// Microsoft Graph refused or failed; `retryable` says whether asking again may help.
    #[error("directory error: {message}")]
    Directory { message: String, retryable: bool },
    /// The registry could not be asked (listing needs it to hide imported users; a round's
    /// changes go to it).
    #[error("user-registry unavailable: {0}")]
    RegistryUnavailable(String),
    /// import-worker could not be asked (a round's auto-import and role rules go through it).
    #[error("import-worker unavailable: {0}")]
    ImporterUnavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn internal(context: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |error| Self::Internal(anyhow::Error::new(error).context(context))
    }
}

impl From<graph::Error> for Error {
    fn from(error: graph::Error) -> Self {
        Self::Directory {
            retryable: error.is_retryable(),
            message: error.to_string(),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match &error {
            Error::Invalid { .. } => Status::invalid_argument(error.to_string()),
            Error::Unimplemented(_) => Status::unimplemented(error.to_string()),
            Error::SyncBusy(_) => Status::aborted(error.to_string()),
            Error::RunNotFound(_) => Status::not_found(error.to_string()),
            Error::RunNotAwaitingApproval(..) => Status::failed_precondition(error.to_string()),
            Error::GroupNotSynced(_) | Error::DeltaUnavailable(_) => {
                Status::failed_precondition(error.to_string())
            }
            Error::Directory {
                retryable: true, ..
            }
            | Error::RegistryUnavailable(_)
            | Error::ImporterUnavailable(_) => Status::unavailable(error.to_string()),
            Error::Directory {
                retryable: false, ..
            } => Status::failed_precondition(error.to_string()),
            Error::Internal(inner) => {
                tracing::error!(error = ?inner, "request failed");
                Status::internal("internal error")
            }
        }
    }
}
