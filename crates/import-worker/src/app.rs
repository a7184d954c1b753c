//! Wiring: the job database, the queue, the clients of the other services, the planner and
//! chunk consumers, and the gRPC server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use proto::importer::v1::importer_service_server::ImporterServiceServer;
use service_runtime::storage::Database;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::Routes;

use crate::clients::{Directory, Registry};
use crate::config::{Config, QueueSettings};
use crate::grpc::GrpcApi;
use crate::queue::{ChunkQueue, MemoryQueue, QueueConfig, RabbitQueue};
use crate::service::{Importer, WorkerSettings};

/// The queue the configuration names: in-process, or RabbitMQ.
pub async fn connect_queue(settings: &QueueSettings) -> anyhow::Result<Arc<dyn ChunkQueue>> {
    let config = QueueConfig {
        prefix: settings.prefix.clone(),
        delivery_limit: settings.delivery_limit,
        prefetch: settings.prefetch,
        heartbeat_secs: settings.heartbeat_secs,
        ..QueueConfig::default()
    };
    match settings.kind.as_str() {
        "memory" => Ok(Arc::new(MemoryQueue::new(config))),
        "amqp" => Ok(Arc::new(
            RabbitQueue::connect(&settings.url, config)
                .await
                .context("cannot connect to RabbitMQ")?,
        )),
        other => anyhow::bail!("queue.kind must be memory or amqp, not {other:?}"),
    }
}

/// How long a stopping worker waits for its planner and chunks in hand (Kubernetes gives it
/// 90 s before SIGKILL).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(75);

/// A built import-worker: bound and wired, serving nothing until [`App::run`].
pub struct App {
    listener: TcpListener,
    importer: Importer,
    guard: service_runtime::auth::Guard,
    tls: service_runtime::tls::ServerTls,
    metrics: Option<TcpListener>,
}

impl App {
    /// Wires the service on `listener` over a migrated database and a queue.
    pub async fn build(
        config: &Config,
        db: Database,
        listener: TcpListener,
        queue: Arc<dyn ChunkQueue>,
    ) -> anyhow::Result<Self> {
        let authenticator =
            service_runtime::auth::Authenticator::from_config(&config.auth, "import-worker")?;
        config.tls.validate()?;
        service_runtime::metrics::handle()?;
        let metrics = service_runtime::metrics::bind(&config.metrics).await?;
        let outbound = service_runtime::auth::Outbound::new(&config.auth.outbound)?;
        let directory =
            Directory::connect_lazy(&config.directory_url, &config.client_tls, outbound.clone())?;
        let registry = Registry::connect_lazy(&config.registry_url, &config.client_tls, outbound)?;
        anyhow::ensure!(
            (1..=1000).contains(&config.worker.chunk_size),
            "worker.chunk_size must be between 1 and 1000"
        );
        anyhow::ensure!(
            config.queue.kind == "memory"
                || !config
                    .worker
                    .batch_groups
                    .iter()
                    .any(|g| g == crate::queue::EVERY_GROUP),
            "worker.batch_groups = [\"*\"] (every group) works with the in-process queue only; \
             name the groups this worker serves"
        );
        let settings = WorkerSettings {
            chunk_size: config.worker.chunk_size,
            planning_lease: Duration::from_secs(config.worker.planning_lease_secs.max(1)),
            concurrent_plans: config.worker.concurrent_plans.max(1),
            batch_groups: config.worker.batch_groups.clone(),
            instance_id: format!("{}-{}", crate::replica(), uuid::Uuid::new_v4().simple()),
            chunk_retry_hold: Duration::from_secs(config.worker.chunk_retry_hold_secs.max(1)),
        };
        let importer = Importer::new(
            db,
            directory,
            registry,
            config.mapping.clone(),
            queue,
            settings,
        );
        Ok(Self {
            listener,
            importer,
            guard: service_runtime::auth::Guard::new(authenticator, crate::grpc::ACCESS),
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

    /// Serves until `shutdown` is cancelled, planning jobs and processing chunks meanwhile.
    /// On shutdown the server stops taking calls, the planner stops at its next chunk (its
    /// lease lets another replica go on), and chunks in hand are finished and acknowledged.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if let Some(listener) = self.metrics {
            tokio::spawn(service_runtime::metrics::serve(listener, shutdown.clone()));
        }
        let background = TaskTracker::new();
        background.spawn(crate::planner::run(self.importer.clone(), shutdown.clone()));
        background.spawn(crate::chunks::run_consumer(
            self.importer.clone(),
            shutdown.clone(),
        ));
        background.spawn(crate::chunks::run_dead_letters(
            self.importer.clone(),
            shutdown.clone(),
        ));
        background.close();

        let service = ImporterServiceServer::new(GrpcApi::new(self.importer.clone()))
            .max_decoding_message_size(service_runtime::grpc::MAX_MESSAGE_BYTES);
        let name = <ImporterServiceServer<GrpcApi> as tonic::server::NamedService>::NAME;
        let serving = service_runtime::grpc::Serving {
            service_name: name,
            guard: self.guard,
            tls: self.tls,
        };
        let served =
            service_runtime::grpc::serve(self.listener, serving, Routes::new(service), shutdown)
                .await;
        // Chunks in hand are finished and acknowledged; each is bounded by its calls' timeouts,
        // and whatever still hangs after the grace is left to redelivery.
        if tokio::time::timeout(SHUTDOWN_GRACE, background.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "background work did not stop in time; unacknowledged chunks will be redelivered"
            );
        }
        if tokio::time::timeout(Duration::from_secs(10), self.importer.queue().close())
            .await
            .is_err()
        {
            tracing::warn!("the queue did not close in time");
        }
        served
    }
}
