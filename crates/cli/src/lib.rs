//! cli: the `userimport` admin command line. Every command is a gRPC client of the services;
//! `dev` and `demo` also run all of them in this one process ([`stack`]) on the embedded
//! default: SQLite files and the built-in Graph emulator.

pub mod admin;
pub mod changes;
pub mod commands;
pub mod demo;
pub mod output;
pub mod profile;
pub mod rounds;
pub mod show;
pub mod stack;
pub mod tenant;
