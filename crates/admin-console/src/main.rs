use anyhow::Context as _;
use clap::Parser as _;

/// admin-console: the web console. `serve` (the default) or `healthcheck`.
#[derive(Debug, clap::Parser)]
struct Args {
    /// A TOML file overriding the embedded defaults; environment variables override both.
    #[arg(long, global = true, env = "USERIMPORT_CONFIG_FILE")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Serves until SIGTERM or SIGINT (the default).
    Serve,
    /// Exits 0 when the console on this machine answers `/healthz` (container health checks).
    Healthcheck,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config =
        admin_console::Config::load(args.config.as_deref()).context("invalid configuration")?;
    match args.command.unwrap_or(Command::Serve) {
        Command::Healthcheck => healthcheck(config.listen_addr).await,
        Command::Serve => {
            let _telemetry = service_runtime::telemetry::init(&config.log, "admin-console");
            let listener = tokio::net::TcpListener::bind(config.listen_addr)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
            let app = admin_console::App::build(config, listener).await?;
            app.run(service_runtime::shutdown::on_signal()).await
        }
    }
}

async fn healthcheck(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let port = addr.port();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .with_context(|| format!("nothing listens on port {port}"))?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    anyhow::ensure!(
        answer.starts_with(b"HTTP/1.1 200"),
        "the console answered: {}",
        String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or_default()
    );
    Ok(())
}
