//! directory-sync's error type and its one mapping to gRPC statuses.

use tonic::{Code, Status};

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
    #[error("SCIM token {0} not found")]
    ScimTokenNotFound(String),
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
    /// The tenant is pushed over SCIM (`scim.enabled`): no Graph round runs.
    #[error(
        "this tenant is provisioned by Entra over SCIM (scim.enabled); Graph rounds do not run"
    )]
    PushedTenant,
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

impl Error {
    /// The stable `ErrorInfo` reason of this error (listed in directory_service.proto).
    pub fn reason(&self) -> &'static str {
        use service_runtime::error::reason;
        match self {
            Error::Invalid { .. } => reason::INVALID_FIELD,
            Error::Unimplemented(_) => reason::UNIMPLEMENTED,
            Error::GroupNotSynced(_) => "GROUP_NOT_SYNCED",
            Error::DeltaUnavailable(_) => "DELTA_UNAVAILABLE",
            Error::RunNotFound(_) => "SYNC_RUN_NOT_FOUND",
            Error::ScimTokenNotFound(_) => "SCIM_TOKEN_NOT_FOUND",
            Error::RunNotAwaitingApproval(..) => "SYNC_RUN_NOT_AWAITING_APPROVAL",
            Error::SyncBusy(_) => "SYNC_BUSY",
            Error::PushedTenant => "PUSHED_TENANT",
            Error::Directory {
                retryable: true, ..
            } => "DIRECTORY_UNAVAILABLE",
            Error::Directory {
                retryable: false, ..
            } => "DIRECTORY_REFUSED",
            Error::RegistryUnavailable(_) | Error::ImporterUnavailable(_) => {
                reason::UPSTREAM_UNAVAILABLE
            }
            Error::Internal(_) => reason::INTERNAL,
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        use service_runtime::error::{internal_status, invalid_field, with_info};
        let code = match &error {
            Error::Invalid { field, reason } => return invalid_field(field, reason.clone()),
            // Database faults keep their class (UNAVAILABLE, ABORTED…); defects are logged
            // once and the caller gets an opaque message.
            Error::Internal(inner) => return internal_status(inner),
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::SyncBusy(_) => Code::Aborted,
            Error::RunNotFound(_) | Error::ScimTokenNotFound(_) => Code::NotFound,
            Error::RunNotAwaitingApproval(..)
            | Error::PushedTenant
            | Error::GroupNotSynced(_)
            | Error::DeltaUnavailable(_)
            | Error::Directory {
                retryable: false, ..
            } => Code::FailedPrecondition,
            Error::Directory {
                retryable: true, ..
            }
            | Error::RegistryUnavailable(_)
            | Error::ImporterUnavailable(_) => Code::Unavailable,
        };
        let mut metadata = std::collections::HashMap::new();
        match &error {
            Error::RegistryUnavailable(_) => {
                metadata.insert("service".to_owned(), "user-registry".to_owned());
            }
            Error::ImporterUnavailable(_) => {
                metadata.insert("service".to_owned(), "import-worker".to_owned());
            }
            Error::Directory { .. } => {
                metadata.insert("service".to_owned(), "microsoft-graph".to_owned());
            }
            Error::SyncBusy(Some(run_id)) => {
                metadata.insert("run_id".to_owned(), run_id.clone());
            }
            _ => {}
        }
        with_info(code, error.reason(), error.to_string(), metadata)
    }
}
