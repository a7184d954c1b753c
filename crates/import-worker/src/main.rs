use anyhow::Context as _;
use clap::Parser as _;
use import_worker::{App, Config, store};
use service_runtime::storage::Database;
use service_runtime::{ServiceArgs, ServiceCommand};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = ServiceArgs::parse();
    let config = Config::load(args.config.as_deref()).context("invalid configuration")?;
    service_runtime::telemetry::init(&config.log);
    service_runtime::install_crypto_provider();
    match args.command.unwrap_or(ServiceCommand::Serve) {
        ServiceCommand::Healthcheck { addr } => {
            service_runtime::grpc::probe(ServiceCommand::probe_addr(addr, config.listen_addr)).await
        }
        ServiceCommand::Migrate => {
            let db = Database::connect(&config.database.url, 1).await?;
            db.migrate(&store::MIGRATIONS).await
        }
        ServiceCommand::Serve => {
            let db =
                Database::connect(&config.database.url, config.database.max_connections).await?;
            db.migrate(&store::MIGRATIONS).await?;
            let listener = tokio::net::TcpListener::bind(config.listen_addr)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
            let app = App::build(&config, db, listener).await?;
            app.run(service_runtime::shutdown::on_signal()).await
        }
    }
}
