//! Wiring: the mirror database, the Graph client, the registry channel and the gRPC server.

use std::net::SocketAddr;

use graph::GraphClient;
use proto::directory::v1::directory_service_server::DirectoryServiceServer;
use proto::registry::v1::registry_service_client::RegistryServiceClient;
use service_runtime::storage::Database;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::config::Config;
use crate::grpc::GrpcApi;
use crate::service::Directory;

/// A built directory-sync: bound and wired, serving nothing until [`App::run`].
pub struct App {
    listener: TcpListener,
    directory: Directory,
    full_sync_on_start: bool,
}

impl App {
    /// Wires the service on `listener` over a migrated database and a Graph client.
    pub async fn build(
        config: &Config,
        db: Database,
        listener: TcpListener,
        graph: GraphClient,
    ) -> anyhow::Result<Self> {
        let registry =
            RegistryServiceClient::new(service_runtime::grpc::channel(&config.registry_url)?)
                .max_decoding_message_size(service_runtime::grpc::MAX_MESSAGE_BYTES);
        let directory = Directory::new(db, graph, registry);
        Ok(Self {
            listener,
            directory,
            full_sync_on_start: config.sync.full_sync_on_start,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The use cases, for in-process callers such as `userimport dev`.
    pub fn directory(&self) -> Directory {
        self.directory.clone()
    }

    /// Serves until `shutdown` is cancelled. The first full sync, when configured, runs in the
    /// background so the service answers while it reads the tenant.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if self.full_sync_on_start {
            let directory = self.directory.clone();
            tokio::spawn(async move {
                if let Err(error) = directory.initial_sync_if_needed().await {
                    tracing::warn!(%error, "initial full sync did not run");
                }
            });
        }
        let service = DirectoryServiceServer::new(GrpcApi::new(self.directory))
            .max_decoding_message_size(service_runtime::grpc::MAX_MESSAGE_BYTES);
        let name = <DirectoryServiceServer<GrpcApi> as tonic::server::NamedService>::NAME;
        service_runtime::grpc::serve(self.listener, name, Routes::new(service), shutdown).await
    }
}
