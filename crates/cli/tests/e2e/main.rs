//! End to end: the Graph emulator and the three services, each on its own port and database,
//! driven over gRPC and through the `userimport` binary, on SQLite and on Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access_table;
mod auth;
mod bad_input;
mod cli_binary;
mod console;
mod edge;
mod error_details;
mod health_and_reflection;
mod helpers;
mod metrics;
mod readme;
mod rounds;
mod rules;
mod scim;
mod select_import;
mod traces;
