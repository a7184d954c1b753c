//! cli: the `userimport` admin command line. Every command is a gRPC client of the services;
//! `dev` and `demo` also run all of them in this one process ([`stack`]) on the embedded
//! default: SQLite files and the built-in Graph emulator.

pub mod admin;
pub mod changes;
pub mod commands;
#[cfg(feature = "dev")]
pub mod demo;
#[cfg(feature = "dev")]
pub mod dev;
pub mod output;
pub mod profile;
pub mod rounds;
pub mod show;
#[cfg(feature = "dev")]
pub mod stack;
pub mod tenant;
