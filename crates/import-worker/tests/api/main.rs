#![allow(clippy::unwrap_used, clippy::expect_used)]

mod job_store;
mod queue;
