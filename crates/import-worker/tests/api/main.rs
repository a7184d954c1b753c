#![allow(clippy::unwrap_used, clippy::expect_used)]

mod batch;
mod cluster;
mod job_store;
mod queue;
mod rabbit;
