//! directory-sync: the edge to the directory (Microsoft Entra ID through Microsoft Graph).
//! Keeps a mirror of the tenant's users in its own tables (Postgres or SQLite) and serves
//! listing and search for the select-import dialog, lookups by object id, a stream of every
//! user for batch planning, and sync control (`userimport.directory.v1.DirectoryService`).
//!
//! It asks user-registry over gRPC which users are imported already; it never reads the
//! registry's tables.

pub mod app;
pub mod clients;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod provision;
pub mod service;
pub mod store;
pub mod sync;

pub use app::App;
pub use config::Config;
pub use error::Error;
