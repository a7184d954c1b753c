//! import-worker's error type and its one mapping to gRPC statuses.

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
    /// Another service answered with an error worth passing on (its code is kept).
    #[error("{service}: {message}")]
    Upstream {
        service: &'static str,
        code: Code,
        message: String,
    },
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

    /// Wraps a status from `service`: client mistakes keep their code, failures of the
    /// service become `UNAVAILABLE` when retrying may help and `INTERNAL` otherwise.
    pub(crate) fn upstream(service: &'static str) -> impl FnOnce(Status) -> Self {
        move |status| {
            let code = match status.code() {
                code @ (Code::InvalidArgument
                | Code::NotFound
                | Code::FailedPrecondition
                | Code::AlreadyExists) => code,
                code if service_runtime::grpc::is_retryable(&status) => code,
                Code::Unknown | Code::Internal | Code::Unimplemented | Code::DataLoss => {
                    Code::Internal
                }
                _ => Code::Unavailable,
            };
            Self::Upstream {
                service,
                code,
                message: status.message().to_owned(),
            }
        }
    }
}

impl Error {
    /// True when trying again later may succeed: another service or the database was
    /// unavailable or slow, as opposed to a request that can never succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Upstream { code, .. } => matches!(
                code,
                Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted
            ),
            Error::Internal(_) => true,
            _ => false,
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match &error {
            Error::Invalid { .. } => Status::invalid_argument(error.to_string()),
            Error::UnknownCompany(_) | Error::NotFound(_) => Status::not_found(error.to_string()),
            Error::FailedPrecondition(_) => Status::failed_precondition(error.to_string()),
            Error::Upstream { code, .. } => Status::new(*code, error.to_string()),
            Error::Internal(inner) => {
                tracing::error!(error = ?inner, "request failed");
                Status::internal("internal error")
            }
        }
    }
}
