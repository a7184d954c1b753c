#![allow(clippy::unwrap_used, clippy::expect_used)]

mod deletions;
mod delta;
mod full_sync;
mod groups;
mod helpers;
mod imported_marks;
mod listing;
mod lookups;
mod provisioning;
mod rounds;
mod scim;
