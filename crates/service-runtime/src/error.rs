//! The one error model of every userimport service (ARCHITECTURE.md, "Invariants"): a failure leaves a service as
//! the gRPC code of its class, with machine-readable `google.rpc` details that clients in any
//! language decode the way they decode Google's own APIs:
//!
//! - `google.rpc.ErrorInfo`: `reason` (UPPER_SNAKE_CASE, stable, listed in the protos),
//!   `domain` [`DOMAIN`], and `metadata` (for example the service that failed);
//! - `google.rpc.BadRequest`: one field violation per invalid request field;
//! - `google.rpc.RetryInfo`: on the codes a retry may cure, the delay to wait first.
//!
//! Callers decide retries from the code and these details ([`is_retryable`],
//! [`retry_delay`], [`reason`]), never from the message text.
//!
//! Database errors are classified here once, for every service ([`classify_database`]): a
//! connection lost, a pool timeout, a server shutting down or starting, a full disk, too many
//! connections → `UNAVAILABLE`; a serialization failure or deadlock → `ABORTED`; text the
//! database cannot store (a NUL byte) → `INVALID_ARGUMENT`; anything else is a defect →
//! `INTERNAL`, logged once with its chain.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// The `ErrorInfo.domain` of every reason userimport's services give.
pub const DOMAIN: &str = "userimport";

/// The delay a `RetryInfo` suggests after a database or upstream fault.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Stable `ErrorInfo` reasons shared by every service. Each service adds its own
/// (`COMPANY_NOT_FOUND`, `SYNC_BUSY`, …); the protos list them all.
pub mod reason {
    /// A request field is invalid; `BadRequest` names it.
    pub const INVALID_FIELD: &str = "INVALID_FIELD";
    /// The database (or its connection pool) is unavailable for now; retry after the delay.
    pub const DATABASE_UNAVAILABLE: &str = "DATABASE_UNAVAILABLE";
    /// A transaction lost a serialization conflict or a deadlock; retrying the call is safe.
    pub const TRANSACTION_ABORTED: &str = "TRANSACTION_ABORTED";
    /// Text the database cannot store, such as a NUL byte.
    pub const INVALID_TEXT: &str = "INVALID_TEXT";
    /// Another service this one needs is unavailable; `metadata.service` names it.
    pub const UPSTREAM_UNAVAILABLE: &str = "UPSTREAM_UNAVAILABLE";
    /// A defect: the service logged it; retrying will not help.
    pub const INTERNAL: &str = "INTERNAL";
    /// The request is larger than the message limit (4 MiB).
    pub const MESSAGE_TOO_LARGE: &str = "MESSAGE_TOO_LARGE";
    /// The RPC is not served here.
    pub const UNIMPLEMENTED: &str = "UNIMPLEMENTED";
    /// The service has not fetched its identity provider's signing keys yet (start-up, or the
    /// provider unreachable since); retry.
    pub const SIGNING_KEYS_UNAVAILABLE: &str = "SIGNING_KEYS_UNAVAILABLE";
}

/// At most this many characters of a request's value are quoted in an error message.
pub const QUOTED_CHARS: usize = 64;
/// At most this many values of a list are named in an error message; the rest are counted.
pub const NAMED_VALUES: usize = 5;

/// `value` for an error message: quoted, cut to its first [`QUOTED_CHARS`] characters (with
/// the number left out), so a message never grows with its input.
pub fn quote(value: &str) -> String {
    let mut chars = value.chars();
    let shown: String = chars.by_ref().take(QUOTED_CHARS).collect();
    match chars.count() {
        0 => format!("{shown:?}"),
        more => format!("{shown:?}…({more} more characters)"),
    }
}

/// Up to [`NAMED_VALUES`] of `values`, each [`quote`]d, and a count of the rest:
/// `"a", "b", "c", "d", "e" …and 298 more`.
pub fn quote_some<S: AsRef<str>>(values: &[S]) -> String {
    let shown = values
        .iter()
        .take(NAMED_VALUES)
        .map(|value| quote(value.as_ref()))
        .collect::<Vec<_>>()
        .join(", ");
    match values.len().saturating_sub(NAMED_VALUES) {
        0 => shown,
        more => format!("{shown} …and {more} more"),
    }
}

/// A status with code `code`, message `message` and an `ErrorInfo` with `reason`.
pub fn status(code: Code, reason: &str, message: impl Into<String>) -> Status {
    with_info(code, reason, message, HashMap::new())
}

/// [`status`] with `ErrorInfo.metadata`.
pub fn with_info(
    code: Code,
    reason: &str,
    message: impl Into<String>,
    metadata: HashMap<String, String>,
) -> Status {
    let mut details = ErrorDetails::with_error_info(reason, DOMAIN, metadata);
    if retryable_code(code) {
        details.set_retry_info(Some(DEFAULT_RETRY_DELAY));
    }
    Status::with_error_details(code, message, details)
}

/// `INVALID_ARGUMENT` naming `field`, with a `BadRequest` violation for it.
pub fn invalid_field(field: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    let mut details = ErrorDetails::with_error_info(
        reason::INVALID_FIELD,
        DOMAIN,
        HashMap::from([("field".to_owned(), field.to_owned())]),
    );
    details.add_bad_request_violation(field, description.clone());
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid {field}: {description}"),
        details,
    )
}

/// `UNAVAILABLE` because `service` could not be reached or answered with a passing fault.
pub fn upstream_unavailable(service: &str, message: impl std::fmt::Display) -> Status {
    with_info(
        Code::Unavailable,
        reason::UPSTREAM_UNAVAILABLE,
        format!("{service} unavailable: {message}"),
        HashMap::from([("service".to_owned(), service.to_owned())]),
    )
}

/// The class of a database error, which decides its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseFault {
    /// The database cannot serve now (connection, pool, shutdown, disk, connection limit):
    /// the same statement may succeed later.
    Unavailable,
    /// The transaction lost a conflict (serialization failure, deadlock): retry it.
    Aborted,
    /// The request carried text the database refuses (NUL, invalid encoding).
    InvalidText,
    /// Anything else: a defect.
    Defect,
}

impl DatabaseFault {
    /// True when retrying the same work later may succeed.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Unavailable | Self::Aborted)
    }
}

/// Classifies a database error by its kind and, for errors the server returned, its
/// SQLSTATE (Postgres) or result code (SQLite).
pub fn classify_database(error: &sqlx::Error) -> DatabaseFault {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => DatabaseFault::Unavailable,
        sqlx::Error::Database(database) => {
            let code = database.code().unwrap_or_default();
            if database
                .try_downcast_ref::<sqlx::sqlite::SqliteError>()
                .is_some()
            {
                classify_sqlite(&code)
            } else {
                classify_sqlstate(&code)
            }
        }
        _ => DatabaseFault::Defect,
    }
}

/// SQLite extended result codes (numbers).
fn classify_sqlite(code: &str) -> DatabaseFault {
    // The primary result code is the low byte of the extended one.
    match code.parse::<i64>().map(|code| code & 0xff) {
        // SQLITE_BUSY, SQLITE_LOCKED: another writer holds the database.
        Ok(5 | 6) => DatabaseFault::Aborted,
        // SQLITE_NOMEM, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_PROTOCOL.
        Ok(7 | 10 | 13 | 14 | 15) => DatabaseFault::Unavailable,
        _ => DatabaseFault::Defect,
    }
}

/// Postgres SQLSTATEs.
fn classify_sqlstate(code: &str) -> DatabaseFault {
    match code {
        // serialization_failure, deadlock_detected; lock_not_available (lock_timeout).
        "40001" | "40P01" | "55P03" => DatabaseFault::Aborted,
        // admin_shutdown, crash_shutdown, cannot_connect_now, query_canceled (a statement
        // timeout or a cancel at shutdown), read_only_sql_transaction (a standby after a
        // failover), idle_in_transaction_session_timeout.
        "57P01" | "57P02" | "57P03" | "57014" | "25006" | "25P03" => DatabaseFault::Unavailable,
        // character_not_in_repertoire ("invalid byte sequence … 0x00"),
        // untranslatable_character.
        "22021" | "22P05" => DatabaseFault::InvalidText,
        // Class 08: connection exceptions; class 53: insufficient resources (disk full
        // 53100, out of memory 53200, too many connections 53300); class 58: system errors
        // (I/O).
        _ if code.starts_with("08") || code.starts_with("53") || code.starts_with("58") => {
            DatabaseFault::Unavailable
        }
        _ => DatabaseFault::Defect,
    }
}

/// The database error anywhere in `error`'s chain, if any.
pub fn database_error(error: &anyhow::Error) -> Option<&sqlx::Error> {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<sqlx::Error>())
}

/// True when `error` is a database fault that may pass (see [`DatabaseFault::is_transient`]).
pub fn is_transient_database_error(error: &anyhow::Error) -> bool {
    database_error(error).is_some_and(|db| classify_database(db).is_transient())
}

/// The status of an error no more specific variant describes: a classified database fault,
/// or `INTERNAL`. Transient faults are logged as warnings, defects once as errors with their
/// chain; neither message reaches the caller beyond its class.
pub fn internal_status(error: &anyhow::Error) -> Status {
    match database_error(error).map(classify_database) {
        Some(DatabaseFault::Unavailable) => {
            tracing::warn!(error = %format!("{error:#}"), "database unavailable");
            status(
                Code::Unavailable,
                reason::DATABASE_UNAVAILABLE,
                "the database is unavailable; retry later",
            )
        }
        Some(DatabaseFault::Aborted) => {
            tracing::warn!(error = %format!("{error:#}"), "transaction aborted");
            status(
                Code::Aborted,
                reason::TRANSACTION_ABORTED,
                "the transaction was aborted by a concurrent one; retry",
            )
        }
        Some(DatabaseFault::InvalidText) => {
            tracing::info!(error = %format!("{error:#}"), "request text refused by the database");
            status(
                Code::InvalidArgument,
                reason::INVALID_TEXT,
                "the request holds text that cannot be stored (such as a NUL byte)",
            )
        }
        Some(DatabaseFault::Defect) | None => {
            tracing::error!(error = ?error, "request failed");
            status(Code::Internal, reason::INTERNAL, "internal error")
        }
    }
}

/// True for the codes a retry may cure: the callee was unavailable, slow, overloaded, or lost
/// a conflict.
pub fn retryable_code(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted
    )
}

/// True when retrying `status` may succeed (by its code; see [`retryable_code`]).
pub fn is_retryable(status: &Status) -> bool {
    retryable_code(status.code())
}

/// The `ErrorInfo.reason` of `status`, if it carries one.
pub fn reason(status: &Status) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
}

/// The value of `key` in the `ErrorInfo.metadata` of `status`, if any.
pub fn metadata(status: &Status, key: &str) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .and_then(|info| info.metadata.get(key).cloned())
}

/// The delay the callee asked for in `RetryInfo`, if any.
pub fn retry_delay(status: &Status) -> Option<Duration> {
    status
        .get_error_details()
        .retry_info()
        .and_then(|info| info.retry_delay)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_message_quotes_a_short_prefix_of_a_value_and_counts_the_rest_of_a_list() {
        let huge = "x".repeat(3 * 1024 * 1024);
        let quoted = super::quote(&huge);
        assert!(quoted.len() < 120, "{quoted}");
        assert!(quoted.contains(&format!("{} more characters", huge.len() - 64)));
        let ids: Vec<String> = (0..300).map(|n| format!("id{n}")).collect();
        let named = super::quote_some(&ids);
        assert!(named.starts_with("\"id0\", \"id1\""), "{named}");
        assert!(named.ends_with("…and 295 more"), "{named}");
        assert_eq!(super::quote_some(&["a"]), "\"a\"");
    }

    use super::*;

    #[test]
    fn postgres_states_are_classified_by_what_a_retry_can_do() {
        for (state, fault) in [
            ("53100", DatabaseFault::Unavailable),
            ("53300", DatabaseFault::Unavailable),
            ("57P01", DatabaseFault::Unavailable),
            ("08006", DatabaseFault::Unavailable),
            ("40001", DatabaseFault::Aborted),
            ("40P01", DatabaseFault::Aborted),
            ("22021", DatabaseFault::InvalidText),
            ("23505", DatabaseFault::Defect),
            ("P0001", DatabaseFault::Defect),
        ] {
            assert_eq!(classify_sqlstate(state), fault, "{state}");
        }
    }

    #[test]
    fn sqlite_codes_are_classified_by_their_primary_code() {
        assert_eq!(classify_sqlite("5"), DatabaseFault::Aborted);
        // SQLITE_BUSY_SNAPSHOT (517) is a kind of SQLITE_BUSY.
        assert_eq!(classify_sqlite("517"), DatabaseFault::Aborted);
        assert_eq!(classify_sqlite("13"), DatabaseFault::Unavailable);
        assert_eq!(classify_sqlite("2067"), DatabaseFault::Defect);
    }

    #[test]
    fn a_lost_connection_inside_a_context_chain_is_unavailable_with_a_retry_delay() {
        let error = anyhow::Error::new(sqlx::Error::PoolTimedOut).context("begin import");
        let status = internal_status(&error);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            reason(&status).as_deref(),
            Some(reason::DATABASE_UNAVAILABLE)
        );
        assert_eq!(retry_delay(&status), Some(DEFAULT_RETRY_DELAY));
        assert!(is_retryable(&status));
    }

    #[test]
    fn an_invalid_field_carries_its_name_in_bad_request_and_error_info() {
        let status = invalid_field("company", "must not be empty");
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let violations = &details.bad_request().expect("bad request").field_violations;
        assert_eq!(violations[0].field, "company");
        assert_eq!(
            details.error_info().expect("error info").metadata["field"],
            "company"
        );
        assert_eq!(retry_delay(&status), None);
    }
}
