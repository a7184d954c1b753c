//! `graph-emulator`: serves a synthetic Microsoft Graph tenant until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use graph_emulator::{Emulator, EmulatorConfig};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Microsoft Graph + Entra token endpoint emulator with a deterministic synthetic tenant.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "GRAPH_EMULATOR_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Number of synthetic users in the tenant.
    #[arg(long, env = "GRAPH_EMULATOR_USERS", default_value_t = 1000)]
    users: usize,
    /// Tenant id accepted by the token endpoint.
    #[arg(long, env = "GRAPH_EMULATOR_TENANT_ID")]
    tenant_id: Option<String>,
    /// Client id accepted by the token endpoint.
    #[arg(long, env = "GRAPH_EMULATOR_CLIENT_ID")]
    client_id: Option<String>,
    /// Client secret accepted by the token endpoint.
    #[arg(long, env = "GRAPH_EMULATOR_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// Lifetime of issued access tokens, in seconds.
    #[arg(
        long,
        env = "GRAPH_EMULATOR_TOKEN_LIFETIME_SECS",
        default_value_t = 3599
    )]
    token_lifetime_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let defaults = EmulatorConfig::synthetic_with_groups(args.users);
    let config = EmulatorConfig {
        tenant_id: args.tenant_id.unwrap_or(defaults.tenant_id),
        client_id: args.client_id.unwrap_or(defaults.client_id),
        client_secret: args.client_secret.unwrap_or(defaults.client_secret),
        token_lifetime: Duration::from_secs(args.token_lifetime_secs),
        ..defaults
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let emulator = Emulator::start(config, listener).await?;
    println!("graph emulator listening");
    println!("  base url (authority and graph): {}", emulator.base_url());
    println!("  tenant id:     {}", emulator.tenant_id());
    println!("  client id:     {}", emulator.client_id());
    println!("  client secret: {}", emulator.client_secret());
    println!("  users:         {}", args.users);
    println!("  groups:        {}", emulator.groups().len());
    wait_for_signal().await?;
    tracing::info!("shutting down");
    emulator.shutdown().await
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
