//! directory-sync: the edge to the directory (Microsoft Entra ID through Microsoft Graph).
//! Keeps a mirror of the tenant's users in its own tables (Postgres or SQLite) and serves
//! listing and search for the select-import dialog, lookups by object id, a stream of every
//! user for batch planning, and sync control (`userimport.directory.v1.DirectoryService`).
//!
//! It asks user-registry over gRPC which users are imported already; it never reads the
//! registry's tables. A tenant that cannot be read from Graph pushes its users instead, over
//! the SCIM 2.0 endpoint of `scim.rs` (Entra's app provisioning).

pub mod app;
pub mod clients;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod provision;
pub mod scim;
pub mod service;
pub mod store;
pub mod sync;

pub use app::App;
pub use config::Config;
pub use error::Error;
