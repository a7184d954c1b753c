#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Tests of the Graph client against the emulator and small scripted servers.

mod config;
mod get_user;
mod helpers;
mod listing;
mod scripted;
mod tokens;
