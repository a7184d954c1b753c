use anyhow::Context as _;
use clap::Parser as _;
use import_worker::app::connect_queue;
use import_worker::{App, Config, store};
use service_runtime::ServiceArgs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = ServiceArgs::parse();
    let config = Config::load(args.config.as_deref()).context("invalid configuration")?;
    let _telemetry = service_runtime::telemetry::init(&config.log, "import-worker");
    service_runtime::run_command(
        args.command,
        config.listen_addr,
        &config.database,
        &store::MIGRATIONS,
        |db, listener, shutdown| async {
            let queue = connect_queue(&config.queue).await?;
            App::build(&config, db, listener, queue)
                .await?
                .run(shutdown)
                .await
        },
    )
    .await
}
