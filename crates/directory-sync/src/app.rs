//! Wiring: the mirror database, the Graph client, the registry channel, the sync schedule and
//! the gRPC server.

use std::net::SocketAddr;
use std::time::Duration;

use crate::service::FEED_PAGE;

/// How often the background follower reads the registry's import feed.
const FEED_FOLLOW_INTERVAL: Duration = Duration::from_secs(2);
/// Marks after which the follower rebuilds the index of unmarked users (a tenth of a 500,000
/// user tenant; rebuilding takes seconds at 1M users, in the background).
const REBUILD_AFTER_MARKS: usize = 50_000;

use anyhow::Context as _;
use graph::GraphClient;
use proto::directory::v1::directory_service_server::DirectoryServiceServer;
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
    guard: service_runtime::auth::Guard,
    tls: service_runtime::tls::ServerTls,
    metrics: Option<TcpListener>,
    full_sync_on_start: bool,
    delta_interval: Option<Duration>,
    /// The SCIM endpoint, when the tenant is pushed (`scim.enabled`).
    scim: Option<(
        TcpListener,
        crate::scim::ScimApi,
        service_runtime::tls::ServerTls,
    )>,
}

impl App {
    /// Wires the service on `listener` over a migrated database and a Graph client.
    pub async fn build(
        config: &Config,
        db: Database,
        listener: TcpListener,
        graph: GraphClient,
    ) -> anyhow::Result<Self> {
        let authenticator =
            service_runtime::auth::Authenticator::from_config(&config.auth, "directory-sync")?;
        config.tls.validate()?;
        service_runtime::metrics::handle()?;
        let metrics = service_runtime::metrics::bind(&config.metrics).await?;
        let outbound = service_runtime::auth::Outbound::new(&config.auth.outbound)?;
        let registry = crate::clients::Registry::connect_lazy(
            &config.registry_url,
            &config.registry_tls,
            outbound,
        )?;
        let groups = config
            .sync
            .groups
            .iter()
            .map(|g| {
                service_runtime::normalize_guid(g)
                    .with_context(|| format!("sync.groups: {g:?} is not a group object id"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let importer = match config.importer_url.trim() {
            "" => None,
            url => Some(crate::clients::Importer::connect_lazy(
                url,
                &config.registry_tls,
                service_runtime::auth::Outbound::new(&config.auth.outbound)?,
            )?),
        };
        let directory = Directory::new(
            db,
            graph,
            registry,
            groups,
            config.provisioning.clone(),
            importer,
        );
        // One process runs the tenant's rounds (one replica): a run still recorded as running
        // was left by a process that died, and is closed before this one starts any.
        directory.close_abandoned_runs().await?;
        directory.build_set_aside_indexes().await?;
        let mut delta_interval = (config.sync.delta_interval_secs > 0)
            .then(|| Duration::from_secs(config.sync.delta_interval_secs));
        let mut full_sync_on_start = config.sync.full_sync_on_start;
        let scim = if config.scim.enabled {
            // Pulled or pushed, never both: the Graph schedule does not run.
            if full_sync_on_start || delta_interval.is_some() {
                tracing::info!(
                    "scim.enabled: the Graph sync schedule (sync.full_sync_on_start, sync.delta_interval_secs) is off for this pushed tenant"
                );
            }
            full_sync_on_start = false;
            delta_interval = None;
            config.scim.tls.validate()?;
            let listener = TcpListener::bind(config.scim.listen_addr)
                .await
                .with_context(|| format!("scim: cannot listen on {}", config.scim.listen_addr))?;
            let api = directory.scim_api(config.scim.clone());
            Some((listener, api, config.scim.tls.clone()))
        } else {
            None
        };
        Ok(Self {
            listener,
            directory,
            guard: service_runtime::auth::Guard::new(authenticator, crate::grpc::ACCESS),
            tls: config.tls.clone(),
            metrics,
            full_sync_on_start,
            delta_interval,
            scim,
        })
    }

    /// Where the Prometheus endpoint listens, when it is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Where the SCIM endpoint listens, when the tenant is pushed.
    pub fn scim_addr(&self) -> Option<SocketAddr> {
        self.scim.as_ref().and_then(|(l, _, _)| l.local_addr().ok())
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
    /// background so the service answers while it reads the tenant; then delta rounds run on
    /// the configured interval.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if let Some(listener) = self.metrics {
            tokio::spawn(service_runtime::metrics::serve(listener, shutdown.clone()));
        }
        let directory = self.directory.clone();
        let schedule_shutdown = shutdown.clone();
        let full_sync_on_start = self.full_sync_on_start;
        let delta_interval = self.delta_interval;
        let background = tokio::spawn(async move {
            if full_sync_on_start && let Err(error) = directory.initial_sync_if_needed().await {
                tracing::warn!(%error, "initial full sync did not run");
            }
            if let Some(interval) = delta_interval {
                directory.run_schedule(interval, schedule_shutdown).await;
            }
        });
        // The imported marks follow the registry's import feed in the background, from start:
        // a large import (a million users take minutes to mark on Postgres, where each mark
        // rewrites the row's index entries) is applied here, not by the listing that comes
        // next, which reads one short page of the feed and confirms the rest. Nothing changed
        // costs one empty call per interval. The registry may start after us: a failure is
        // logged once until the feed is read again.
        let follower = self.directory.clone();
        let feed = tokio::spawn(async move {
            let mut failing = false;
            // Marks applied since the index of unmarked users was last rebuilt.
            let mut marked = 0;
            loop {
                match follower.follow_import_feed(None, FEED_PAGE).await {
                    Ok((_, applied)) => {
                        failing = false;
                        marked += applied;
                        // After a burst, once it is over (this pass applied less than a page).
                        if marked >= REBUILD_AFTER_MARKS && applied < FEED_PAGE as usize {
                            marked = 0;
                            if let Err(error) = follower.rebuild_unmarked_index().await {
                                tracing::warn!(%error, "rebuilding the index of unmarked users failed");
                            }
                        }
                    }
                    Err(error) if !failing => {
                        failing = true;
                        tracing::warn!(%error, "following the import feed failed, retrying");
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(FEED_FOLLOW_INTERVAL).await;
            }
        });
        // Rounds stop as soon as shutdown begins, not after serving ends: the streams that
        // follow a round end with it, and the server waits for them.
        let rounds = self.directory.clone();
        let stopper = (rounds.clone(), shutdown.clone());
        let rounds_stopper = tokio::spawn(async move {
            stopper.1.cancelled().await;
            stopper.0.shutdown().await;
        });
        let scim = self
            .scim
            .map(|(listener, api, tls)| tokio::spawn(api.serve(listener, tls, shutdown.clone())));
        let service = DirectoryServiceServer::new(GrpcApi::new(self.directory))
            .max_decoding_message_size(service_runtime::grpc::MAX_MESSAGE_BYTES);
        let name = <DirectoryServiceServer<GrpcApi> as tonic::server::NamedService>::NAME;
        let serving = service_runtime::grpc::Serving {
            service_name: name,
            guard: self.guard,
            tls: self.tls,
        };
        let served =
            service_runtime::grpc::serve(self.listener, serving, Routes::new(service), shutdown)
                .await;
        // The start-up round and the schedule only wait for rounds; the round in progress
        // belongs to the directory, which records it as stopped (its pages are committed one by
        // one, and the next round starts from the last stored link).
        background.abort();
        feed.abort();
        rounds_stopper.abort();
        // Also when serving failed before any shutdown: no round outlives the service.
        rounds.shutdown().await;
        if let Some(scim) = scim {
            match scim.await {
                Ok(Err(error)) => tracing::error!(%error, "the SCIM endpoint failed"),
                Err(error) => tracing::error!(%error, "the SCIM endpoint panicked"),
                Ok(Ok(())) => {}
            }
        }
        served
    }
}
