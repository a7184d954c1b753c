#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Black-box tests of the emulator over HTTP.

mod batch;
mod delta;
mod faults;
mod groups;
mod helpers;
mod mutations;
mod scale;
mod tenant;
mod token;
mod users;
