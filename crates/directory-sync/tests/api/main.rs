#![allow(clippy::unwrap_used, clippy::expect_used)]

mod full_sync;
mod helpers;
mod listing;
mod lookups;
