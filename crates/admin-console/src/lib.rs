//! admin-console: D365's import dialogs in a browser. Server-rendered pages (maud), a small
//! script of our own for search-as-you-type and live job progress (the pages work without
//! it), and an ordinary gRPC client of directory-sync, user-registry and import-worker that
//! calls them with the signed-in person's token. It owns no data.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod config;
mod oidc;
mod pages;
mod services;
mod session;
mod web;

pub use config::Config;

/// What every request handler shares.
pub(crate) struct State {
    pub(crate) config: Config,
    pub(crate) sessions: session::Sessions,
    pub(crate) services: services::Services,
    pub(crate) authenticator: service_runtime::auth::Authenticator,
    pub(crate) oidc: Option<oidc::OidcClient>,
}

pub(crate) type AppState = Arc<State>;

/// The console, bound and ready to serve.
pub struct App {
    listener: TcpListener,
    metrics: Option<TcpListener>,
    router: axum::Router,
}

impl App {
    /// Checks `config`, connects (lazily) to the services and binds the metrics listener.
    pub async fn build(config: Config, listener: TcpListener) -> anyhow::Result<Self> {
        service_runtime::install_crypto_provider();
        config.validate()?;
        let authenticator =
            service_runtime::auth::Authenticator::from_config(&config.auth, "admin-console")
                .context("auth")?;
        let oidc = config
            .sign_in
            .oidc
            .as_ref()
            .map(oidc::OidcClient::new)
            .transpose()
            .context("sign_in.oidc")?;
        let metrics = service_runtime::metrics::bind(&config.metrics).await?;
        let state = Arc::new(State {
            sessions: session::Sessions::new(Duration::from_secs(config.session_minutes * 60)),
            services: services::Services::new(&config)?,
            authenticator,
            oidc,
            config,
        });
        Ok(Self {
            listener,
            metrics,
            router: web::router(state),
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if let Some(metrics) = self.metrics {
            tokio::spawn(service_runtime::metrics::serve(metrics, shutdown.clone()));
        }
        tracing::info!(addr = ?self.listener.local_addr().ok(), "serving the console");
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .context("the console's web server failed")
    }
}
