#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Tests of the Graph client against the emulator and small scripted servers.

mod batch;
mod certificates;
mod config;
mod deleted;
mod delta;
mod get_user;
mod groups;
mod helpers;
mod listing;
mod metrics;
mod scripted;
mod throttling;
mod tokens;
