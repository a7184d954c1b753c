//! Benchmark: directory-sync against an emulated tenant, into Postgres.
//!
//! 1. A full sync of `BENCH_USERS` users (default 1,000,000): users/s and the extra peak RSS
//!    of the process during the sync (the emulator's tenant lives in this process too, so the
//!    peak is reset before the sync and reported as growth over the resident size then).
//! 2. A delta round after 1 % of the users changed (created, renamed, disabled, soft-deleted,
//!    hard-deleted, restored): its time, and the users it read.
//! 3. `ListUsers` as the select-import dialog calls it (page of 50, imported users hidden,
//!    which asks the registry): p50/p99 over 1,000 random 1–3 letter prefixes, and without a
//!    search.
//!
//! ```text
//! USERIMPORT_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo bench -p directory-sync --bench sync
//! ```

mod common;

use std::time::{Duration, Instant};
use test_support::BenchSchema as Schema;

use directory_sync::domain::SyncMode;
use directory_sync::store;
use graph_emulator::{EmulatedUser, Emulator, EmulatorConfig, UserUpdate};
use proto::directory::v1 as pb;
use proto::directory::v1::directory_service_client::DirectoryServiceClient;
use service_runtime::storage::Database;
use tokio_util::sync::CancellationToken;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resets the peak resident size to the current one (Linux `clear_refs` 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn new_user(n: usize) -> EmulatedUser {
    EmulatedUser {
        id: format!("be9c0000-0000-4000-8000-{n:012x}"),
        user_principal_name: format!("bench.new{n}@contoso.com"),
        mail: Some(format!("bench.new{n}@contoso.com")),
        display_name: format!("Bench New {n}"),
        given_name: None,
        surname: None,
        account_enabled: true,
        user_type: "Member".into(),
    }
}

async fn run() -> anyhow::Result<()> {
    test_support::init();
    let Ok(server) = std::env::var("USERIMPORT_TEST_DATABASE_URL") else {
        eprintln!("set USERIMPORT_TEST_DATABASE_URL to a Postgres server to run this benchmark");
        return Ok(());
    };
    let n: usize = env_or("BENCH_USERS", 1_000_000);
    let queries: usize = env_or("BENCH_QUERIES", 1_000);

    let started = Instant::now();
    let mut emulator_config = EmulatorConfig::synthetic(n);
    // Users soft-deleted before the full sync, so the changes below can restore them.
    let to_restore: Vec<String> = emulator_config
        .users
        .iter()
        .take(n / 600)
        .map(|u| u.id.clone())
        .collect();
    emulator_config.delta_page_size = 1_000;
    let emulator = Emulator::start(
        emulator_config,
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?;
    for id in &to_restore {
        emulator.soft_delete_user(id)?;
    }
    println!(
        "emulated tenant of {n} users ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The registry, empty, asked by ListUsers which users are imported.
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
    let app = common::directory_sync(&url, &db, &registry_addr, &emulator).await?;
    let addr = app.local_addr();
    let directory = app.directory();
    let app_task = tokio::spawn(app.run(shutdown.clone()));

    // 1. Full sync.
    reset_peak_rss();
    let rss_before = status_kib("VmRSS:");
    let started = Instant::now();
    let full = directory.sync_now(SyncMode::Full, false).await?.0;
    let elapsed = started.elapsed();
    let peak = status_kib("VmHWM:");
    anyhow::ensure!(full.error.is_empty(), "full sync failed: {}", full.error);
    println!(
        "full sync: {} users in {:.1} s = {:.0} users/s; peak RSS {} MiB, {} MiB above the {} MiB before the sync",
        full.users_seen,
        elapsed.as_secs_f64(),
        full.users_seen as f64 / elapsed.as_secs_f64(),
        peak / 1024,
        peak.saturating_sub(rss_before) / 1024,
        rss_before / 1024,
    );

    // 2. A delta round after 1 % of the users changed.
    let users = emulator.users();
    let changes = n / 100;
    for (i, user) in users.iter().skip(n / 2).take(changes).enumerate() {
        match i % 6 {
            0 => drop(emulator.create_user(new_user(i))?),
            1 => drop(emulator.update_user(
                &user.id,
                UserUpdate {
                    display_name: Some(format!("Bench Renamed {i}")),
                    ..UserUpdate::default()
                },
            )?),
            2 => drop(emulator.update_user(
                &user.id,
                UserUpdate {
                    account_enabled: Some(false),
                    ..UserUpdate::default()
                },
            )?),
            3 => drop(emulator.soft_delete_user(&user.id)?),
            4 => drop(emulator.hard_delete_user(&user.id)?),
            _ => {
                if let Some(id) = to_restore.get(i / 6) {
                    emulator.restore_user(id)?;
                }
            }
        }
    }
    emulator.clear_requests();
    let started = Instant::now();
    let delta = directory.sync_now(SyncMode::Delta, false).await?.0;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        delta.error.is_empty(),
        "delta round failed: {}",
        delta.error
    );
    let delta_requests = emulator
        .requests()
        .iter()
        .filter(|r| r.path_and_query.starts_with("/v1.0/users/delta"))
        .count();
    println!(
        "delta round after {changes} changes: {:.2} s, {} entries read in {delta_requests} pages ({} new, {} changed, {} removed)",
        elapsed.as_secs_f64(),
        delta.users_seen,
        delta.users_created,
        delta.users_updated,
        delta.users_removed,
    );

    // 3. ListUsers latency.
    let mut client = DirectoryServiceClient::connect(format!("http://{addr}")).await?;
    let mut seed: u64 = 0x5eed;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut by_length: Vec<Vec<Duration>> = vec![Vec::new(); 4];
    for q in 0..queries {
        let length = q % 4; // 0 = no search
        let search: String = (0..length)
            .map(|_| char::from(b'a' + (next() % 26) as u8))
            .collect();
        let request = pb::ListUsersRequest {
            search,
            page_size: 50,
            ..Default::default()
        };
        let started = Instant::now();
        client.list_users(request).await?;
        by_length[length].push(started.elapsed());
    }
    let mut all: Vec<Duration> = by_length.iter().flatten().copied().collect();
    all.sort();
    println!(
        "ListUsers (page 50, imported hidden) over {} queries: p50 {:.1} ms, p99 {:.1} ms",
        all.len(),
        percentile(&all, 0.5).as_secs_f64() * 1000.0,
        percentile(&all, 0.99).as_secs_f64() * 1000.0
    );
    for (length, times) in by_length.iter_mut().enumerate() {
        times.sort();
        println!(
            "  {}: p50 {:.1} ms, p99 {:.1} ms",
            if length == 0 {
                "no search".to_owned()
            } else {
                format!("{length}-letter prefix")
            },
            percentile(times, 0.5).as_secs_f64() * 1000.0,
            percentile(times, 0.99).as_secs_f64() * 1000.0
        );
    }

    shutdown.cancel();
    app_task.await??;
    registry_task.await??;
    db.close().await;
    registry_db.close().await;
    if std::env::var_os("BENCH_KEEP_SCHEMA").is_some() {
        println!("kept the mirror in schema {}", schema.name());
    } else {
        schema.drop().await?;
    }
    registry_schema.drop().await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
