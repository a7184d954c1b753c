//! user-registry: the system of record for ERP users, companies and roles, served over gRPC
//! (`userimport.registry.v1.RegistryService`). Owns its tables in Postgres or SQLite; nothing
//! else reads them.
//!
//! Its import is a batch upsert keyed by (tenant, object id) that allocates user ids by the
//! rule in [`domain::user_id`] and answers one outcome per user.

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod service;
pub mod store;

pub use app::App;
pub use config::Config;
pub use error::Error;
