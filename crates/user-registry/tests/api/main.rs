#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;
mod companies;
mod helpers;
mod import_users;
mod lookups;
mod roles_and_audit;
mod trust;
mod updates;
