//! Benchmark: `RegistryService.ImportUsers` on Postgres against a raw `COPY` of exactly what
//! the import wrote — its users *and* its audit rows, same ids, into an identical freshly
//! migrated schema over the same kind of connection — measured in the same run on the same
//! server. Users/s counts users created.
//!
//! ```text
//! USERIMPORT_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo bench -p user-registry --bench import_users
//! ```
//! Knobs: `BENCH_USERS` (default 100000), `BENCH_BATCH` (500), `BENCH_CONCURRENCY` (a list,
//! default "1,4": calls in flight at once).

use std::time::{Duration, Instant};
use test_support::BenchSchema as Schema;

use anyhow::Context as _;
use futures::StreamExt as _;
use proto::registry::v1 as pb;
use proto::registry::v1::registry_service_client::RegistryServiceClient;
use service_runtime::storage::Database;
use sqlx::Connection as _;
use tokio_util::sync::CancellationToken;
use user_registry::{App, Config, store};

const TENANT: &str = "8b5a3c1e-2f4d-4c6b-9a7e-0d1f2e3c4b5a";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The synthetic tenant mapped as import-worker maps it (guests without mail keep their UPN
/// here so every generated user is imported).
fn users(n: usize) -> Vec<pb::NewUser> {
    graph_emulator::synthetic_users(n, "contoso.com")
        .into_iter()
        .map(|u| {
            let guest = u.user_type == "Guest";
            let alias = if guest {
                u.mail.clone().unwrap_or(u.user_principal_name.clone())
            } else {
                u.user_principal_name.clone()
            };
            pb::NewUser {
                tenant_id: TENANT.into(),
                object_id: u.id,
                email: alias.clone(),
                network_alias: alias,
                network_domain: "https://sts.windows.net/".into(),
                name: u.display_name,
                enabled: u.account_enabled,
                account_type: if guest {
                    pb::AccountType::Guest
                } else {
                    pb::AccountType::Member
                }
                .into(),
            }
        })
        .collect()
}

/// Imports every user through a registry served on loopback; returns the elapsed time.
async fn import_through_grpc(
    server: &str,
    users: &[pb::NewUser],
    batch: usize,
    concurrency: usize,
) -> anyhow::Result<(Duration, Written)> {
    let (schema, url) = Schema::create(server, "bench_import").await?;
    let db = Database::connect(&url, 10).await?;
    db.migrate(&store::MIGRATIONS).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let app = App::build(&Config::local(&url), db.clone(), listener).await?;
    let addr = app.local_addr();
    let shutdown = CancellationToken::new();
    let server_task = tokio::spawn(app.run(shutdown.clone()));
    let client = RegistryServiceClient::connect(format!("http://{addr}")).await?;

    let started = Instant::now();
    let results: Vec<anyhow::Result<usize>> =
        futures::stream::iter(users.chunks(batch).enumerate())
            .map(|(i, chunk)| {
                let mut client = client.clone();
                let request = pb::ImportUsersRequest {
                    import_id: format!("bench-{i}"),
                    company: "DAT".into(),
                    users: chunk.to_vec(),
                    dry_run: false,
                    private: false,
                };
                async move {
                    let outcomes = client.import_users(request).await?.into_inner().outcomes;
                    Ok(outcomes
                        .iter()
                        .filter(|o| o.kind() == pb::OutcomeKind::Created)
                        .count())
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    let elapsed = started.elapsed();
    let created: usize = results
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .sum();
    anyhow::ensure!(
        created == users.len(),
        "created {created} of {}",
        users.len()
    );
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(db.pool())
        .await?;
    anyhow::ensure!(rows == users.len() as i64, "{rows} rows");

    shutdown.cancel();
    server_task.await??;
    db.close().await;
    let written = Written::dump(&url).await?;
    schema.drop().await?;
    Ok((elapsed, written))
}

/// What an import wrote, as COPY text: the reference writes exactly this.
struct Written {
    users: Vec<u8>,
    audit: Vec<u8>,
}

impl Written {
    async fn dump(url: &str) -> anyhow::Result<Self> {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        let mut read = async |table: &str| -> anyhow::Result<Vec<u8>> {
            let mut out = Vec::new();
            let mut stream = conn
                .copy_out_raw(&format!("COPY {table} TO STDOUT"))
                .await?;
            while let Some(bytes) = stream.next().await {
                out.extend_from_slice(&bytes?);
            }
            Ok(out)
        };
        let users = read("users").await?;
        let audit = read("audit_events").await?;
        conn.close().await?;
        Ok(Self { users, audit })
    }
}

/// COPYs what the import wrote (users and audit rows, same ids) into an identical, freshly
/// migrated schema, in one transaction over TCP as the import's; returns the time of the COPYs
/// and their commit.
async fn copy_what_was_written(server: &str, written: &Written) -> anyhow::Result<Duration> {
    let (schema, url) = Schema::create(server, "bench_copy").await?;
    let db = Database::connect(&url, 1).await?;
    db.migrate(&store::MIGRATIONS).await?;
    db.close().await;

    let mut conn = sqlx::PgConnection::connect(&url).await?;
    let started = Instant::now();
    sqlx::query("BEGIN").execute(&mut conn).await?;
    for (table, data) in [("users", &written.users), ("audit_events", &written.audit)] {
        let mut copy = conn
            .copy_in_raw(&format!("COPY {table} FROM STDIN"))
            .await?;
        copy.send(data.as_slice()).await?;
        copy.finish().await?;
    }
    sqlx::query("COMMIT").execute(&mut conn).await?;
    let elapsed = started.elapsed();
    conn.close().await?;
    schema.drop().await?;
    Ok(elapsed)
}

async fn run() -> anyhow::Result<()> {
    test_support::init();
    let Ok(server) = std::env::var("USERIMPORT_TEST_DATABASE_URL") else {
        eprintln!("set USERIMPORT_TEST_DATABASE_URL to a Postgres server to run this benchmark");
        return Ok(());
    };
    let n: usize = env_or("BENCH_USERS", 100_000);
    let batch: usize = env_or("BENCH_BATCH", 500);
    let concurrency: Vec<usize> = std::env::var("BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,4".into())
        .split(',')
        .map(|c| c.trim().parse().context("BENCH_CONCURRENCY"))
        .collect::<anyhow::Result<_>>()?;
    let users = users(n);
    println!("users: {n}, batch: {batch}");
    let mut reference = None;
    for c in concurrency {
        let (elapsed, written) = import_through_grpc(&server, &users, batch, c).await?;
        // The reference is measured once, from the first import's rows, in the same run.
        let copy = match reference {
            Some(copy) => copy,
            None => {
                let copy = copy_what_was_written(&server, &written).await?;
                println!(
                    "COPY of what the import wrote (users + audit rows, same ids): {:>7.3} s  {:>9.0} users/s",
                    copy.as_secs_f64(),
                    n as f64 / copy.as_secs_f64()
                );
                reference = Some(copy);
                copy
            }
        };
        let rate = n as f64 / elapsed.as_secs_f64();
        println!(
            "ImportUsers over gRPC, {c} call(s) in flight: {:>7.3} s  {:>9.0} users/s  = {:.2}x COPY",
            elapsed.as_secs_f64(),
            rate,
            copy.as_secs_f64() / elapsed.as_secs_f64()
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
