//! Wiring: the job database, the clients of the other services and the gRPC server.

use std::net::SocketAddr;

use proto::importer::v1::importer_service_server::ImporterServiceServer;
use service_runtime::storage::Database;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::clients::{Directory, Registry};
use crate::config::Config;
use crate::grpc::GrpcApi;
use crate::service::Importer;

/// A built import-worker: bound and wired, serving nothing until [`App::run`].
pub struct App {
    listener: TcpListener,
    importer: Importer,
}

impl App {
    /// Wires the service on `listener` over a migrated database.
    pub async fn build(
        config: &Config,
        db: Database,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        let directory = Directory::connect_lazy(&config.directory_url)?;
        let registry = Registry::connect_lazy(&config.registry_url)?;
        let importer = Importer::new(db, directory, registry, config.mapping.clone());
        Ok(Self { listener, importer })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight calls finish.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let service = ImporterServiceServer::new(GrpcApi::new(self.importer))
            .max_decoding_message_size(service_runtime::grpc::MAX_MESSAGE_BYTES);
        let name = <ImporterServiceServer<GrpcApi> as tonic::server::NamedService>::NAME;
        service_runtime::grpc::serve(self.listener, name, Routes::new(service), shutdown).await
    }
}
