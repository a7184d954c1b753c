//! import-worker's error type and its one mapping to gRPC statuses.

use std::time::Duration;

use service_runtime::error::{self as model, reason};
use tonic::{Code, Status};

/// What a caller of import-worker must decide on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("company {0} does not exist")]
    UnknownCompany(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// An idempotency key (a select import's request id) sent again with another request.
    #[error("{0}")]
    IdempotencyKeyReused(String),
    /// Another service answered with an error worth passing on (its code and reason are
    /// kept).
    #[error("{service}: {message}")]
    Upstream {
        service: &'static str,
        code: Code,
        /// The callee's `ErrorInfo` reason, or ours for a transport failure.
        reason: String,
        message: String,
        /// The delay the callee asked for (`RetryInfo`).
        retry_delay: Option<Duration>,
    },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// How a failed piece of background work (a chunk, a planning) is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A dependency is unavailable, slow or lost a conflict: wait it out, however long.
    Transient,
    /// A defect here or in the callee (`INTERNAL`): a few attempts, then it fails.
    Defect,
    /// The work can never succeed as it is (a bad request, a missing thing).
    Permanent,
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

    /// Wraps a status from `service`. Statuses our services send carry an `ErrorInfo`; one
    /// without it came from the transport (a connection reset, a stream cut by a process
    /// that died, a refused connection), which is a passing fault: `UNAVAILABLE`.
    pub(crate) fn upstream(service: &'static str) -> impl FnOnce(Status) -> Self {
        move |status| {
            let reason = model::reason(&status);
            let code = match (status.code(), &reason) {
                (code, Some(_)) => code,
                (
                    Code::Unknown
                    | Code::Internal
                    | Code::Cancelled
                    | Code::Unavailable
                    | Code::DeadlineExceeded,
                    None,
                ) => Code::Unavailable,
                (code, None) => code,
            };
            Self::Upstream {
                service,
                code,
                reason: reason.unwrap_or_else(|| match code {
                    Code::Unavailable => reason::UPSTREAM_UNAVAILABLE.to_owned(),
                    _ => format!("{code:?}").to_ascii_uppercase(),
                }),
                retry_delay: model::retry_delay(&status),
                message: status.message().to_owned(),
            }
        }
    }

    /// A queue failure (the broker could not take a message): always passing.
    pub(crate) fn queue(error: &crate::queue::QueueError) -> Self {
        Self::Upstream {
            service: "queue",
            code: Code::Unavailable,
            reason: reason::UPSTREAM_UNAVAILABLE.to_owned(),
            message: error.to_string(),
            retry_delay: None,
        }
    }

    /// How background work that failed with this error is retried.
    pub fn retry(&self) -> Retry {
        match self {
            Error::Upstream { code, .. } if model::retryable_code(*code) => Retry::Transient,
            Error::Upstream {
                code: Code::Internal | Code::Unknown | Code::DataLoss,
                ..
            } => Retry::Defect,
            Error::Internal(inner) if model::is_transient_database_error(inner) => Retry::Transient,
            Error::Internal(_) => Retry::Defect,
            _ => Retry::Permanent,
        }
    }

    /// True when trying again later may succeed: another service or the database was
    /// unavailable or slow, as opposed to a request that can never succeed.
    pub fn is_transient(&self) -> bool {
        self.retry() == Retry::Transient
    }

    /// The delay the failing dependency asked for, if any.
    pub fn retry_delay(&self) -> Option<Duration> {
        match self {
            Error::Upstream { retry_delay, .. } => *retry_delay,
            _ => None,
        }
    }

    /// The stable `ErrorInfo` reason of this error (listed in importer_service.proto).
    pub fn reason(&self) -> String {
        match self {
            Error::Invalid { .. } => reason::INVALID_FIELD.to_owned(),
            Error::UnknownCompany(_) => "COMPANY_NOT_FOUND".to_owned(),
            Error::NotFound(_) => "NOT_FOUND".to_owned(),
            Error::FailedPrecondition(_) => "FAILED_PRECONDITION".to_owned(),
            Error::IdempotencyKeyReused(_) => "IDEMPOTENCY_KEY_REUSED".to_owned(),
            Error::Upstream { reason, .. } => reason.clone(),
            Error::Internal(_) => reason::INTERNAL.to_owned(),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = match &error {
            Error::Invalid { field, reason } => return model::invalid_field(field, reason.clone()),
            Error::Internal(inner) => return model::internal_status(inner),
            Error::UnknownCompany(_) | Error::NotFound(_) => Code::NotFound,
            Error::FailedPrecondition(_) | Error::IdempotencyKeyReused(_) => {
                Code::FailedPrecondition
            }
            Error::Upstream {
                code: Code::Internal | Code::Unknown | Code::DataLoss,
                ..
            } => {
                // The callee logged its defect; ours is that we could not finish.
                tracing::warn!(%error, "a service this call needs failed");
                Code::Internal
            }
            Error::Upstream { code, .. } => *code,
        };
        let metadata = match &error {
            Error::Upstream { service, .. } => {
                std::collections::HashMap::from([("service".to_owned(), (*service).to_owned())])
            }
            _ => Default::default(),
        };
        model::with_info(code, &error.reason(), error.to_string(), metadata)
    }
}
