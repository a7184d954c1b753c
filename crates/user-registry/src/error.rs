//! The registry's error type and its one mapping to gRPC statuses.

use tonic::Status;

/// What a caller of the registry must decide on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("company {0} does not exist")]
    UnknownCompany(String),
    #[error("company {0} already exists")]
    CompanyExists(String),
    #[error("user {0} not found")]
    UserNotFound(String),
    #[error("role {0} does not exist")]
    UnknownRole(String),
    #[error("user id {0} is taken")]
    UserIdTaken(String),
    #[error("{0} is not implemented yet")]
    Unimplemented(&'static str),
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

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match &error {
            Error::Invalid { .. } => Status::invalid_argument(error.to_string()),
            Error::UnknownCompany(_) | Error::UserNotFound(_) | Error::UnknownRole(_) => {
                Status::not_found(error.to_string())
            }
            Error::CompanyExists(_) | Error::UserIdTaken(_) => {
                Status::already_exists(error.to_string())
            }
            Error::Unimplemented(_) => Status::unimplemented(error.to_string()),
            Error::Internal(inner) => {
                // The chain goes to the log once; the caller gets an opaque message.
                tracing::error!(error = ?inner, "request failed");
                Status::internal("internal error")
            }
        }
    }
}
