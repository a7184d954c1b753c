#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Black-box tests of the emulator over HTTP.

mod helpers;
mod tenant;
mod token;
mod users;
