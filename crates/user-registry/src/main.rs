use anyhow::Context as _;
use clap::Parser as _;
use service_runtime::ServiceArgs;
use user_registry::{App, Config, store};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = ServiceArgs::parse();
    let config = Config::load(args.config.as_deref()).context("invalid configuration")?;
    let _telemetry = service_runtime::telemetry::init(&config.log, "user-registry");
    service_runtime::run_command(
        args.command,
        config.listen_addr,
        &config.database,
        &store::MIGRATIONS,
        |db, listener, shutdown| async {
            App::build(&config, db, listener).await?.run(shutdown).await
        },
    )
    .await
}
