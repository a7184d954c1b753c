//! What the directory-sync benchmarks share: directory-sync served on loopback, reading an
//! emulated tenant, writing to the given database, with no round of its own; and the
//! user-registry it calls, served in the same process.

use directory_sync::config::{DirectoryConfig, SyncConfig};
use directory_sync::{App, Config};
use graph_emulator::Emulator;
use service_runtime::storage::Database;

/// directory-sync built on `db` (at `url`) against `emulator`, asking the registry at
/// `registry_addr`; no sync at start, no scheduled rounds, no synced groups.
pub(crate) async fn directory_sync(
    url: &str,
    db: &Database,
    registry_addr: &str,
    emulator: &Emulator,
) -> anyhow::Result<App> {
    let base = emulator
        .base_url()
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    let mut config = Config::local(
        url,
        registry_addr,
        DirectoryConfig::single_host(
            &base,
            emulator.tenant_id(),
            emulator.client_id(),
            emulator.client_secret(),
        ),
    );
    config.sync = SyncConfig {
        full_sync_on_start: false,
        delta_interval_secs: 0,
        groups: Vec::new(),
    };
    let graph = graph::GraphClient::new(config.directory.graph_config()?)?;
    App::build(
        &config,
        db.clone(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        graph,
    )
    .await
}

/// user-registry built on `db` (at `url`) and served on loopback until `shutdown`: its address
/// and its task.
pub(crate) async fn user_registry(
    url: &str,
    db: &Database,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<(String, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let registry = user_registry::App::build(
        &user_registry::Config::local(url),
        db.clone(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?;
    let addr = format!("http://{}", registry.local_addr());
    Ok((addr, tokio::spawn(registry.run(shutdown.clone()))))
}
