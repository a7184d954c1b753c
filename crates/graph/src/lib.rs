//! graph: the Microsoft Graph client userimport reads tenants with.
//!
//! It gets app-only tokens with the client-credentials grant, with a client secret or a
//! certificate ([`ClientCertificate`]: a PS256 or RS256 client assertion), caches them,
//! refreshes them ahead of expiry with one shared request, again when Graph answers 401, and
//! waits briefly for a fresh token Graph refuses too. The token scope is the cloud's Graph
//! resource ([`Cloud::graph_scope`]) whatever host requests go to, unless
//! [`GraphConfig::scope`] says otherwise. It lists users page by page following `@odata.nextLink` verbatim (with
//! `ConsistencyLevel: eventual` re-sent on every page when asked), reads single users by id
//! or userPrincipalName, many at once with `$batch`, runs delta rounds
//! ([`GraphClient::users_delta`]), lists the soft-deleted users still restorable
//! ([`GraphClient::deleted_users`]) and reads the users of a group through its transitive
//! members. A malformed entry (wrong types, no id, a lone UTF-16 surrogate) is rejected alone
//! ([`RejectedUser`]) instead of failing its page.
//!
//! Every request goes through one path: a client-wide concurrency limit, a resource-unit
//! budget ([`ResourceBudget`]), a `Retry-After` hold shared by all callers, bounded retries
//! with full-jitter backoff ([`RetryPolicy`]), timeouts. Errors are grouped by what the caller
//! does next ([`Error::is_retryable`], [`Error::SyncReset`]). Throttling and retries are
//! counted with the `metrics` facade (`graph_requests_total{status}`,
//! `graph_throttled_total{status}`, `graph_retries_total{reason}`,
//! `graph_resource_units_total`, `graph_budget_waits_total`,
//! `graph_token_requests_total{outcome}`, `graph_entries_rejected_total{kind}`,
//! `graph_group_members_skipped_total{type}`) and logged with `tracing`.
//!
//! TLS is rustls with the ring provider: call
//! `rustls::crypto::ring::default_provider().install_default()` at process start-up.

mod batch;
mod certificate;
mod client;
mod cloud;
mod config;
mod deleted;
mod delta;
mod error;
mod groups;
mod page;
mod throttle;
mod token;
mod users;

pub use crate::batch::MAX_BATCH_REQUESTS;
pub use crate::certificate::{ASSERTION_LIFETIME, AssertionAlgorithm, ClientCertificate};
pub use crate::client::GraphClient;
pub use crate::cloud::Cloud;
pub use crate::config::{
    Credential, DEFAULT_MAX_CONCURRENCY, GraphConfig, MAX_PAGE_SIZE, ResourceBudget, RetryPolicy,
};
pub use crate::deleted::{DeletedUserPages, DeletedUsersPage};
pub use crate::delta::{DeltaPage, DeltaPages, DeltaStart, RemovedReason, RemovedUser};
pub use crate::error::Error;
pub use crate::groups::{GraphGroup, GroupUserPages, GroupUsersPage};
pub use crate::users::{
    GraphUser, ListUsersOptions, RejectedUser, USER_SELECT, UserPages, UsersPage,
};
