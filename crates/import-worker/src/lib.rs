//! import-worker: maps directory users to registry users (`domain/mapping.rs`, after D365's own
//! import) and imports them — a selection in the request, or a batch job fanned out as chunks
//! through a queue to any number of replicas — and keeps each import's job
//! record and report in its own tables (`userimport.importer.v1.ImporterService`).
//!
//! It reads the directory only through directory-sync's gRPC API and writes users only through
//! user-registry's.

pub mod app;
pub mod chunks;
pub mod clients;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod planner;
pub mod queue;
pub mod rules;
pub mod service;
pub mod store;

pub use app::App;
pub use config::Config;
pub use error::Error;

/// This replica's name: the host (the pod, in Kubernetes), or `import-worker` without one. It
/// names the replica's planning leases and its broker connections.
pub(crate) fn replica() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "import-worker".to_owned())
}
