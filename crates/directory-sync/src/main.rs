use anyhow::Context as _;
use clap::Parser as _;
use directory_sync::{App, Config, store};
use service_runtime::ServiceArgs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = ServiceArgs::parse();
    let config = Config::load(args.config.as_deref()).context("invalid configuration")?;
    let _telemetry = service_runtime::telemetry::init(&config.log, "directory-sync");
    service_runtime::run_command(
        args.command,
        config.listen_addr,
        &config.database,
        &store::MIGRATIONS,
        |db, listener, shutdown| async {
            let graph = graph::GraphClient::new(config.directory.graph_config()?)
                .context("invalid directory settings")?;
            App::build(&config, db, listener, graph)
                .await?
                .run(shutdown)
                .await
        },
    )
    .await
}
