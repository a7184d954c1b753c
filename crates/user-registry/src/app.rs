//! Wiring: the database, the use cases and the gRPC server on a pre-bound listener.

use std::net::SocketAddr;

use anyhow::Context as _;
use proto::registry::v1::registry_service_server::RegistryServiceServer;
use service_runtime::storage::Database;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use service_runtime::auth::{Authenticator, Guard};
use service_runtime::tls::ServerTls;

use crate::config::Config;
use crate::domain::Company;
use crate::grpc::GrpcApi;
use crate::service::Registry;

/// A built registry: bound and wired, serving nothing until [`App::run`].
pub struct App {
    listener: TcpListener,
    registry: Registry,
    guard: Guard,
    tls: ServerTls,
    metrics: Option<TcpListener>,
}

impl App {
    /// Wires the service on `listener` over an already migrated database, creating the
    /// configured companies.
    pub async fn build(
        config: &Config,
        db: Database,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        let companies = config
            .companies
            .iter()
            .map(|c| Company::parse(&c.code, &c.name))
            .collect::<Result<Vec<_>, _>>()
            .context("invalid company in configuration")?;
        let authenticator = Authenticator::from_config(&config.auth, "user-registry")?;
        config.tls.validate()?;
        service_runtime::metrics::handle()?;
        let metrics = service_runtime::metrics::bind(&config.metrics).await?;
        let registry = Registry::new(db);
        registry
            .ensure_companies(&companies, service_runtime::now_ms())
            .await?;
        Ok(Self {
            listener,
            registry,
            guard: Guard::new(authenticator, crate::grpc::ACCESS),
            tls: config.tls.clone(),
            metrics,
        })
    }

    /// Where the Prometheus endpoint listens, when it is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight calls finish.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if let Some(listener) = self.metrics {
            tokio::spawn(service_runtime::metrics::serve(listener, shutdown.clone()));
        }
        let service = RegistryServiceServer::new(GrpcApi::new(self.registry))
            .max_decoding_message_size(service_runtime::grpc::MAX_MESSAGE_BYTES);
        let name = <RegistryServiceServer<GrpcApi> as tonic::server::NamedService>::NAME;
        let serving = service_runtime::grpc::Serving {
            service_name: name,
            guard: self.guard,
            tls: self.tls,
        };
        service_runtime::grpc::serve(self.listener, serving, Routes::new(service), shutdown).await
    }
}
