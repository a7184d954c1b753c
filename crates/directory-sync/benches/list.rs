//! Benchmark: the select-import list at scale (issue 15), on Postgres or SQLite.
//!
//! Builds a mirror of `BENCH_USERS` users (default 1,000,000) and a registry holding some of
//! them with bulk SQL (setup only: the tables as the services' migrations make them), serves
//! both services, and times `ListUsers` through gRPC with a page of 1,000 as
//! `userimport directory list --limit 1000` calls it, in three shapes:
//!
//! 1. an empty registry;
//! 2. every user imported but one in a thousand (`BENCH_USERS / 1000` not imported);
//! 3. half of them imported (the registry deleted the other half again).
//!
//! For each: not-imported only without a search, `--all` (imported shown, annotated), and
//! not-imported with random 1-, 2- and 3-letter prefixes; p50/p99 over `BENCH_QUERIES` calls
//! each (default 100). Between shapes, the time directory-sync's background follower takes to
//! mark the registry's changes is printed, and what a listing pays to read the feed first.
//!
//! ```text
//! BENCH_BACKEND=postgres USERIMPORT_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo bench -p directory-sync --bench list
//! BENCH_BACKEND=sqlite cargo bench -p directory-sync --bench list
//! ```

mod common;

use std::time::{Duration, Instant};

use directory_sync::store;
use graph_emulator::{Emulator, EmulatorConfig};
use proto::directory::v1 as pb;
use proto::directory::v1::directory_service_client::DirectoryServiceClient;
use service_runtime::storage::{Backend, Database};
use sqlx::{AssertSqlSafe, Row as _};
use test_support::BenchSchema as Schema;
use tokio_util::sync::CancellationToken;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

const FIRST: [&str; 40] = [
    "adele",
    "alex",
    "allan",
    "ben",
    "bianca",
    "carl",
    "chen",
    "christie",
    "debra",
    "diego",
    "emily",
    "enrico",
    "fatima",
    "grady",
    "henrietta",
    "irvin",
    "isaiah",
    "johanna",
    "joni",
    "kai",
    "lee",
    "lidia",
    "lynne",
    "megan",
    "miriam",
    "nestor",
    "olga",
    "patti",
    "pradeep",
    "quinn",
    "raul",
    "sofia",
    "tomas",
    "uma",
    "vera",
    "wilna",
    "xavier",
    "yolanda",
    "zane",
    "zoe",
];
const LAST: [&str; 50] = [
    "adams",
    "baker",
    "brown",
    "clark",
    "davis",
    "evans",
    "fischer",
    "garcia",
    "gonzalez",
    "green",
    "hall",
    "harris",
    "hill",
    "jackson",
    "johnson",
    "jones",
    "king",
    "lee",
    "lewis",
    "lopez",
    "martin",
    "martinez",
    "miller",
    "moore",
    "nelson",
    "nguyen",
    "ortiz",
    "parker",
    "perez",
    "quinn",
    "ramirez",
    "roberts",
    "robinson",
    "rodriguez",
    "sanchez",
    "scott",
    "smith",
    "taylor",
    "thomas",
    "thompson",
    "turner",
    "vance",
    "walker",
    "white",
    "williams",
    "wilson",
    "wright",
    "young",
    "yu",
    "zimmerman",
];

/// An SQL expression picking `list[index]` on this backend (`index` an SQL expression).
fn pick(backend: Backend, list: &[&str], index: &str) -> String {
    let quoted: Vec<String> = list.iter().map(|w| format!("'{w}'")).collect();
    match backend {
        Backend::Postgres => format!("(ARRAY[{}])[({index}) + 1]", quoted.join(",")),
        Backend::Sqlite => format!(
            "json_extract('[{}]', '$[' || ({index}) || ']')",
            list.iter()
                .map(|w| format!("\"{w}\""))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// `SELECT i FROM 1..=n` on this backend, as a FROM item named `s(i)`.
fn series(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Postgres => format!("generate_series(1, {n}) AS s(i)"),
        Backend::Sqlite => format!(
            "(WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {n}) \
             SELECT i FROM c) AS s"
        ),
    }
}

/// The object id of synthetic user `i` (an SQL expression).
fn object_id(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => {
            "lpad(to_hex(i), 8, '0') || '-0000-4000-8000-' || lpad(to_hex(i), 12, '0')"
        }
        Backend::Sqlite => "printf('%08x-0000-4000-8000-%012x', i, i)",
    }
}

async fn execute(db: &Database, sql: String) -> anyhow::Result<u64> {
    let mut conn = db.pool().acquire().await?;
    Ok(sqlx::query(AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await?
        .rows_affected())
}

/// The mirror: `n` present users named from the lists above.
async fn fill_mirror(db: &Database, tenant: &str, n: usize) -> anyhow::Result<()> {
    let backend = db.backend();
    let first = pick(backend, &FIRST, &format!("i % {}", FIRST.len()));
    let last = pick(
        backend,
        &LAST,
        &format!("(i / {}) % {}", FIRST.len(), LAST.len()),
    );
    let oid = object_id(backend);
    let enabled = match backend {
        Backend::Postgres => "true",
        Backend::Sqlite => "1",
    };
    // Through a subquery, so the names are computed once per row.
    execute(
        db,
        format!(
            "INSERT INTO directory_users (tenant_id, object_id, user_principal_name, mail, \
             display_name, given_name, surname, account_enabled, account_type, deletion_state, \
             search_name, search_upn, search_mail, content_hash, first_seen_run, last_seen_run, \
             changed_run, updated_at_ms) \
             SELECT '{tenant}', oid, upn, upn, display, f, l, {enabled}, 'member', 'present', \
             lower(display), upn, upn, 0, 'bench', 'bench', 'bench', 0 FROM \
             (SELECT {oid} AS oid, {first} || '.' || {last} || i || '@contoso.com' AS upn, \
             upper(substr({first}, 1, 1)) || substr({first}, 2) || ' ' || \
             upper(substr({last}, 1, 1)) || substr({last}, 2) || ' ' || i AS display, \
             {first} AS f, {last} AS l FROM {series}) AS u",
            series = series(backend, n)
        ),
    )
    .await?;
    // Every mirrored user has its mark row, as a sync gives it (store::imported::track_users).
    execute(
        db,
        "INSERT INTO directory_not_imported (tenant_id, object_id, search_name) \
         SELECT tenant_id, object_id, search_name FROM directory_users"
            .to_owned(),
    )
    .await?;
    execute(db, "ANALYZE".to_owned()).await?;
    Ok(())
}

/// The registry: users `i` with `i % 1000 <> 0` imported, one feed transaction.
async fn fill_registry(db: &Database, tenant: &str, n: usize) -> anyhow::Result<()> {
    let backend = db.backend();
    let oid = object_id(backend);
    let enabled = match backend {
        Backend::Postgres => "true",
        Backend::Sqlite => "1",
    };
    // An imported user is in the feed by its row's number (user-registry store::feed).
    let seq = next_feed_number(db).await?;
    execute(
        db,
        format!(
            "INSERT INTO users (tenant_id, object_id, user_id, user_key, network_alias, \
             network_domain, email, name, enabled, company, account_type, created_at_ms, \
             updated_at_ms, created_by_import, feed_seq) \
             SELECT '{tenant}', {oid}, 'u' || i, 'u' || i, 'u' || i || '@contoso.com', \
             'https://sts.windows.net/', 'u' || i || '@contoso.com', 'User ' || i, {enabled}, \
             'DAT', 'member', 0, 0, 'bench', {seq} FROM {series} WHERE i % 1000 <> 0",
            series = series(backend, n)
        ),
    )
    .await?;
    execute(db, "ANALYZE".to_owned()).await?;
    Ok(())
}

/// The registry deletes users `i` with `i % 2 = 0` (keeping `i % 1000 = 0` out as before), in
/// one feed transaction: half the tenant is imported.
async fn halve_registry(db: &Database, n: usize) -> anyhow::Result<()> {
    let backend = db.backend();
    let oid = object_id(backend);
    let not_imported = match backend {
        Backend::Postgres => "false",
        Backend::Sqlite => "0",
    };
    let gone = format!("(SELECT {oid} FROM {} WHERE i % 2 = 0)", series(backend, n));
    let seq = next_feed_number(db).await?;
    execute(
        db,
        format!(
            "INSERT INTO import_feed (tenant_id, object_id, seq, imported) \
             SELECT tenant_id, object_id, {seq}, {not_imported} FROM users \
             WHERE object_id IN {gone}"
        ),
    )
    .await?;
    execute(db, format!("DELETE FROM users WHERE object_id IN {gone}")).await?;
    execute(db, "ANALYZE".to_owned()).await?;
    Ok(())
}

/// The registry's feed number for the next statement, as the registry's own writers number
/// (user-registry store::feed): on Postgres that statement's transaction id, on SQLite the
/// next count of the head row.
async fn next_feed_number(db: &Database) -> anyhow::Result<String> {
    Ok(match db.backend() {
        Backend::Postgres => "pg_current_xact_id()::text::bigint".to_owned(),
        Backend::Sqlite => {
            execute(db, "UPDATE import_feed_head SET seq = seq + 1".to_owned()).await?;
            "(SELECT seq FROM import_feed_head)".to_owned()
        }
    })
}

/// Waits until directory-sync's background follower has read the registry's feed to its
/// head; answers the seconds it took.
async fn caught_up(registry: &Database, mirror: &Database, tenant: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    // The feed's last change: one transaction's changes share its number.
    let last: (i64, String) = {
        let mut conn = registry.pool().acquire().await?;
        let row = sqlx::query(
            "SELECT seq, object_id FROM (SELECT feed_seq AS seq, object_id FROM users \
             UNION ALL SELECT seq, object_id FROM import_feed) AS f \
             ORDER BY seq DESC, object_id DESC LIMIT 1",
        )
        .fetch_one(&mut *conn)
        .await?;
        (row.try_get("seq")?, row.try_get("object_id")?)
    };
    loop {
        let mut conn = mirror.pool().acquire().await?;
        let position = store::imported::feed_position(&mut conn, tenant).await?;
        if (position.seq, position.object_id) >= last {
            return Ok(started.elapsed().as_secs_f64());
        }
        drop(conn);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    /// A prefix of one of the names' words, `len` letters long.
    fn prefix(&mut self, len: usize) -> String {
        let word = match self.next() % 2 {
            0 => FIRST[self.next() as usize % FIRST.len()],
            _ => LAST[self.next() as usize % LAST.len()],
        };
        word.chars().take(len).collect()
    }
}

/// Times `queries` ListUsers calls (page of 1,000) and prints p50/p99 and the rows a call
/// answered on average.
async fn measure(
    client: &mut DirectoryServiceClient<tonic::transport::Channel>,
    label: &str,
    queries: usize,
    mut request: impl FnMut() -> pb::ListUsersRequest,
) -> anyhow::Result<()> {
    let mut times = Vec::with_capacity(queries);
    let mut rows = 0;
    for _ in 0..queries {
        let request = request();
        let started = Instant::now();
        let response = client.list_users(request).await?.into_inner();
        times.push(started.elapsed());
        rows += response.users.len();
    }
    times.sort();
    println!(
        "  {label}: p50 {:.1} ms, p99 {:.1} ms ({} rows a call on average)",
        percentile(&times, 0.5).as_secs_f64() * 1000.0,
        percentile(&times, 0.99).as_secs_f64() * 1000.0,
        rows / queries.max(1)
    );
    Ok(())
}

async fn measure_shape(
    client: &mut DirectoryServiceClient<tonic::transport::Channel>,
    directory: &directory_sync::service::Directory,
    queries: usize,
    random: &mut Lcg,
) -> anyhow::Result<()> {
    // What every not-imported listing pays first: reading the feed from the stored position.
    let mut times = Vec::with_capacity(queries);
    for _ in 0..queries {
        let started = Instant::now();
        directory.follow_import_feed(Some(1), 1000).await?;
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "  following the feed, nothing new: p50 {:.1} ms, p99 {:.1} ms",
        percentile(&times, 0.5).as_secs_f64() * 1000.0,
        percentile(&times, 0.99).as_secs_f64() * 1000.0
    );
    measure(client, "not imported, 1,000", queries, || {
        pb::ListUsersRequest {
            page_size: 1000,
            ..Default::default()
        }
    })
    .await?;
    measure(client, "--all, 1,000", queries, || pb::ListUsersRequest {
        page_size: 1000,
        not_imported_only: Some(false),
        ..Default::default()
    })
    .await?;
    for len in 1..=3 {
        let prefixes: Vec<String> = (0..queries).map(|_| random.prefix(len)).collect();
        let mut next = prefixes.into_iter();
        measure(
            client,
            &format!("not imported, {len}-letter prefix"),
            queries,
            || pb::ListUsersRequest {
                page_size: 1000,
                search: next.next().unwrap_or_default(),
                ..Default::default()
            },
        )
        .await?;
    }
    Ok(())
}

/// A database of its own for one service: a Postgres schema, or a SQLite file.
enum Store {
    Postgres(Schema),
    Sqlite(std::path::PathBuf),
}

async fn create_store(backend: Backend, name: &str) -> anyhow::Result<(Store, String)> {
    match backend {
        Backend::Postgres => {
            let server = std::env::var("USERIMPORT_TEST_DATABASE_URL")?;
            let (schema, url) = Schema::create(&server, name).await?;
            Ok((Store::Postgres(schema), url))
        }
        Backend::Sqlite => {
            let dir = std::path::PathBuf::from(env_or(
                "BENCH_SQLITE_DIR",
                "/tmp/userimport-bench-list".to_owned(),
            ));
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(format!("{name}.db"));
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            Ok((
                Store::Sqlite(path.clone()),
                format!("sqlite://{}", path.display()),
            ))
        }
    }
}

async fn drop_store(store: Store) -> anyhow::Result<()> {
    match store {
        Store::Postgres(schema) => schema.drop().await?,
        Store::Sqlite(path) => {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
    }
    Ok(())
}

async fn run() -> anyhow::Result<()> {
    test_support::init();
    let backend = match std::env::var("BENCH_BACKEND").as_deref() {
        Ok("sqlite") => Backend::Sqlite,
        _ if std::env::var_os("USERIMPORT_TEST_DATABASE_URL").is_none() => {
            eprintln!(
                "set BENCH_BACKEND=sqlite, or USERIMPORT_TEST_DATABASE_URL to a Postgres server"
            );
            return Ok(());
        }
        _ => Backend::Postgres,
    };
    let n: usize = env_or("BENCH_USERS", 1_000_000);
    let queries: usize = env_or("BENCH_QUERIES", 100);
    println!("{backend:?}, {n} users, {queries} calls per figure");

    // Only the tenant id and a Graph client are needed: the listing never calls Graph.
    let emulator = Emulator::start(
        EmulatorConfig::synthetic(0),
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?;
    let tenant = emulator.tenant_id().to_owned();

    let (registry_store, registry_url) = create_store(backend, "bench_list_registry").await?;
    let registry_db = Database::connect(&registry_url, 4).await?;
    registry_db
        .migrate(&user_registry::store::MIGRATIONS)
        .await?;
    let (mirror_store, url) = create_store(backend, "bench_list_directory").await?;
    let db = Database::connect(&url, 10).await?;
    db.migrate(&store::MIGRATIONS).await?;

    let started = Instant::now();
    fill_mirror(&db, &tenant, n).await?;
    println!(
        "mirror of {n} users written in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let shutdown = CancellationToken::new();
    let (registry_addr, registry_task) =
        common::user_registry(&registry_url, &registry_db, &shutdown).await?;
    let app = common::directory_sync(&url, &db, &registry_addr, &emulator).await?;
    let addr = app.local_addr();
    let directory = app.directory();
    let app_task = tokio::spawn(app.run(shutdown.clone()));
    let mut client = DirectoryServiceClient::connect(format!("http://{addr}")).await?;
    let mut random = Lcg(15);

    println!("1. empty registry");
    measure_shape(&mut client, &directory, queries, &mut random).await?;

    let started = Instant::now();
    fill_registry(&registry_db, &tenant, n).await?;
    println!(
        "2. {} imported, {} not (registry written in {:.1} s)",
        n - n / 1000,
        n / 1000,
        started.elapsed().as_secs_f64()
    );
    let took = caught_up(&registry_db, &db, &tenant).await?;
    // The follower rebuilds the index of unmarked users on its next pass (Postgres).
    tokio::time::sleep(Duration::from_secs(10)).await;
    println!(
        "  the background follower marked {} changes in {took:.1} s",
        n - n / 1000,
    );
    measure_shape(&mut client, &directory, queries, &mut random).await?;

    let started = Instant::now();
    halve_registry(&registry_db, n).await?;
    println!(
        "3. half imported (registry changed in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    let took = caught_up(&registry_db, &db, &tenant).await?;
    // The follower rebuilds the index of unmarked users on its next pass (Postgres).
    tokio::time::sleep(Duration::from_secs(10)).await;
    println!(
        "  the background follower marked {} changes in {took:.1} s",
        n / 2 - n / 2000,
    );
    measure_shape(&mut client, &directory, queries, &mut random).await?;

    shutdown.cancel();
    app_task.await??;
    registry_task.await??;
    db.close().await;
    registry_db.close().await;
    drop_store(mirror_store).await?;
    drop_store(registry_store).await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
