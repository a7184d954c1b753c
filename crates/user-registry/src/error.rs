//! The registry's error type and its one mapping to gRPC statuses.

use tonic::{Code, Status};

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
    /// An import id used before by another caller, for another person, company or privacy.
    #[error("{0}")]
    IdempotencyKeyReused(String),
    /// Rule grants for a rule import-worker never registered, or with another role or company.
    #[error("{0}")]
    RuleNotRegistered(String),
    /// An import that kept losing races for the same users or ids to concurrent imports of
    /// other replicas; retrying it is safe.
    #[error("{0}")]
    LostRace(String),
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

impl Error {
    /// The stable `ErrorInfo` reason of this error (listed in registry_service.proto).
    pub fn reason(&self) -> &'static str {
        use service_runtime::error::reason;
        match self {
            Error::Invalid { .. } => reason::INVALID_FIELD,
            Error::UnknownCompany(_) => "COMPANY_NOT_FOUND",
            Error::CompanyExists(_) => "COMPANY_EXISTS",
            Error::UserNotFound(_) => "USER_NOT_FOUND",
            Error::UnknownRole(_) => "ROLE_NOT_FOUND",
            Error::UserIdTaken(_) => "USER_ID_TAKEN",
            Error::IdempotencyKeyReused(_) => "IDEMPOTENCY_KEY_REUSED",
            Error::RuleNotRegistered(_) => "RULE_NOT_REGISTERED",
            Error::LostRace(_) => reason::TRANSACTION_ABORTED,
            Error::Unimplemented(_) => reason::UNIMPLEMENTED,
            Error::Internal(_) => reason::INTERNAL,
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        use service_runtime::error::{internal_status, invalid_field, status};
        let code = match &error {
            Error::Invalid { field, reason } => return invalid_field(field, reason.clone()),
            // Database faults keep their class (UNAVAILABLE, ABORTED…); defects are logged
            // once and the caller gets an opaque message.
            Error::Internal(inner) => return internal_status(inner),
            Error::UnknownCompany(_) | Error::UserNotFound(_) | Error::UnknownRole(_) => {
                Code::NotFound
            }
            Error::CompanyExists(_) | Error::UserIdTaken(_) => Code::AlreadyExists,
            Error::IdempotencyKeyReused(_) | Error::RuleNotRegistered(_) => {
                Code::FailedPrecondition
            }
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::LostRace(_) => Code::Aborted,
        };
        status(code, error.reason(), error.to_string())
    }
}
