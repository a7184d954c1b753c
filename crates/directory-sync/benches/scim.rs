//! SCIM push throughput (issue 18): `BENCH_USERS` user creates (default 10,000) as Entra sends
//! them (a filter probe by userName, then the POST), by `BENCH_CLIENTS` concurrent clients
//! (default 8), against directory-sync with `scim.enabled` on Postgres over TCP, the registry
//! beside it; then the time the SCIM round takes to provision them (none is imported: the
//! registry is asked about each and nothing is written).
//!
//! ```sh
//! USERIMPORT_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo bench -p directory-sync --bench scim
//! ```

use std::time::{Duration, Instant};

use directory_sync::config::DirectoryConfig;
use directory_sync::{App, Config, store};
use serde_json::json;
use service_runtime::storage::Database;
use test_support::BenchSchema as Schema;
use tokio_util::sync::CancellationToken;

// Only the registry of the shared setup: this bench's directory-sync is a pushed one.
#[allow(dead_code)]
mod common;

const TENANT: &str = "8b5a3c1e-2f4d-4c6b-9a7e-0d1f2e3c4b5a";
const SECRET: &str = "bench-secret";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn object_id(i: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", i + 1, i + 1)
}

async fn run() -> anyhow::Result<()> {
    test_support::init();
    let Ok(server) = std::env::var("USERIMPORT_TEST_DATABASE_URL") else {
        eprintln!("set USERIMPORT_TEST_DATABASE_URL to a Postgres server to run this benchmark");
        return Ok(());
    };
    let n: usize = env_or("BENCH_USERS", 10_000);
    let clients: usize = env_or("BENCH_CLIENTS", 8).max(1);

    let (registry_schema, registry_url) = Schema::create(&server, "bench_registry").await?;
    let registry_db = Database::connect(&registry_url, 4).await?;
    registry_db
        .migrate(&user_registry::store::MIGRATIONS)
        .await?;
    let shutdown = CancellationToken::new();
    let (registry_addr, registry_task) =
        common::user_registry(&registry_url, &registry_db, &shutdown).await?;

    let (schema, url) = Schema::create(&server, "bench_directory").await?;
    let db = Database::connect(&url, 10).await?;
    db.migrate(&store::MIGRATIONS).await?;
    let directory_config =
        DirectoryConfig::single_host("http://127.0.0.1:9", TENANT, "unused", "unused");
    let mut config = Config::local(&url, &registry_addr, directory_config);
    config.scim.enabled = true;
    config.scim.listen_addr = "127.0.0.1:0".parse()?;
    config.scim.round_interval_secs = 1;
    let graph = graph::GraphClient::new(config.directory.graph_config()?)?;
    let app = App::build(
        &config,
        db.clone(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        graph,
    )
    .await?;
    let base = format!(
        "http://{}/scim/v2",
        app.scim_addr().expect("the SCIM endpoint listens")
    );
    let app_task = tokio::spawn(app.run(shutdown.clone()));
    let mut conn = db.pool().acquire().await?;
    let token = store::scim::TokenRow {
        token_id: "bench".into(),
        name: "bench".into(),
        created_ms: 1,
        created_by: "bench".into(),
        last_used_ms: None,
        revoked_ms: None,
    };
    store::scim::create_token(
        &mut conn,
        TENANT,
        &token,
        &directory_sync::scim::token_digest(SECRET),
    )
    .await?;
    drop(conn);

    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let http = http.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for i in (client..n).step_by(clients) {
                let user_name = format!("bench.user{i}@contoso.com");
                let call = Instant::now();
                let probe = http
                    .get(format!("{base}/Users"))
                    .query(&[("filter", format!("userName eq \"{user_name}\""))])
                    .bearer_auth(SECRET)
                    .send()
                    .await?;
                anyhow::ensure!(probe.status() == 200, "probe: {}", probe.status());
                let body = json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "externalId": object_id(i),
                    "userName": user_name,
                    "active": true,
                    "displayName": format!("Bench User {i}"),
                    "emails": [{"primary": true, "type": "work", "value": user_name}],
                    "name": {"givenName": "Bench", "familyName": format!("User {i}")},
                });
                let created = http
                    .post(format!("{base}/Users"))
                    .bearer_auth(SECRET)
                    .header("content-type", "application/scim+json")
                    .body(body.to_string())
                    .send()
                    .await?;
                anyhow::ensure!(created.status() == 201, "create: {}", created.status());
                latencies.push(call.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{n} users pushed (probe + create) by {clients} clients in {:.1} s = {:.0} users/s; \
         per user p50 {:.1} ms, p99 {:.1} ms",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        at(0.5).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
    );
    let mirrored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM directory_users")
        .fetch_one(db.pool())
        .await?;
    anyhow::ensure!(mirrored == n as i64, "{mirrored} users mirrored of {n}");

    // The rounds that provision them (closed every second).
    let provisioned = Instant::now();
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(users_created), 0) AS BIGINT) FROM sync_runs \
             WHERE mode = 'scim' AND status = 'succeeded'",
        )
        .fetch_one(db.pool())
        .await?;
        if open >= n as i64 {
            break;
        }
        anyhow::ensure!(
            provisioned.elapsed() < Duration::from_secs(600),
            "SCIM rounds did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "SCIM rounds provisioned them {:.1} s after the last push",
        provisioned.elapsed().as_secs_f64()
    );

    shutdown.cancel();
    app_task.await??;
    registry_task.await??;
    db.close().await;
    registry_db.close().await;
    schema.drop().await?;
    registry_schema.drop().await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
