//! graph: the Microsoft Graph client userimport reads tenants with.
//!
//! It gets app-only tokens with the client-credentials grant (client secret), caches them and
//! refreshes them ahead of expiry with one shared request, lists users page by page following
//! `@odata.nextLink` verbatim, and reads single users by id or userPrincipalName. A malformed
//! user entry is rejected alone ([`RejectedUser`]) instead of failing its page. Errors are
//! grouped by what the caller does next ([`Error::is_retryable`]). Retrying and throttling are
//! not done yet; all requests go through one private function so they can be added there.
//!
//! TLS is rustls with the ring provider: call
//! `rustls::crypto::ring::default_provider().install_default()` at process start-up.

mod client;
mod cloud;
mod config;
mod error;
mod token;
mod users;

pub use crate::client::GraphClient;
pub use crate::cloud::Cloud;
pub use crate::config::{GraphConfig, MAX_PAGE_SIZE};
pub use crate::error::Error;
pub use crate::users::{GraphUser, RejectedUser, USER_SELECT, UserPages, UsersPage};
