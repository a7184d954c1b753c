//! Benchmark: a batch import end to end (issue 4), every service a separate process of its
//! real release binary:
//!
//! graph-emulator (`BENCH_USERS` synthetic users) → directory-sync (one full sync, not timed
//! here) → two import-worker processes (RabbitMQ quorum queues in a virtual host of the
//! benchmark's own) → user-registry → Postgres (a fresh schema per service).
//!
//! It times one batch job of the whole tenant into company DAT, from `StartBatchImport` until
//! `GetJob` reports it completed, checks that the counts are exact (every user planned once,
//! outcomes adding up, one registry user per importable directory user), and then, in the same
//! run with the services stopped, times a `COPY … FROM STDIN` of the rows the import wrote
//! into an identical, freshly migrated registry table. It reports users/s end to end, COPY
//! rows/s and their ratio, the CPU time each process (and Postgres and RabbitMQ) spent during
//! the import, the cost budget per unit of work (CPU µs per user created of Postgres and of each
//! service, database statements per chunk by service from their `db_statements_total`), the
//! contention seen (registry transactions retried, deadlocks, sampled statements waiting on a
//! lock), and the peak RSS of every process (`VmHWM` from `/proc/<pid>/status`; the peak
//! is reset between the sync and the import, so both phases are shown).
//!
//! ```text
//! USERIMPORT_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//! USERIMPORT_TEST_AMQP_URL='amqp://guest:guest@127.0.0.1:5672/%2f' \
//!   BENCH_USERS=100000 cargo bench -p import-worker --bench batch
//! ```
//!
//! Knobs: `BENCH_USERS` (default 1,000,000), `BENCH_WORKERS` (2), `BENCH_CHUNK_SIZE` and
//! `BENCH_PREFETCH` (unset: the worker's defaults), `BENCH_KEEP_LOGS` (keep the services' log
//! files), `BENCH_LOG_FILTER` (the services' log filter, e.g. `info,sqlx::query=debug` to see
//! every statement's time). The services reach Postgres with the URL given, so a Unix socket URL
//! (`postgres://postgres@%2Fvar%2Frun%2Fpostgresql/test`) applies to them too.
//!
//! The import-worker binary is the one cargo built for this benchmark. The other three are
//! built by this benchmark with `cargo build --release -p user-registry -p directory-sync
//! -p graph-emulator` (the same profile settings, so the same target folder) and taken from
//! beside it; set `BENCH_SKIP_BUILD=1` to use the binaries found there as they are.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use test_support::BenchSchema as Schema;

use anyhow::{Context as _, bail, ensure};
use futures::StreamExt as _;
use proto::directory::v1 as directory_pb;
use proto::directory::v1::directory_service_client::DirectoryServiceClient;
use proto::importer::v1 as pb;
use proto::importer::v1::importer_service_client::ImporterServiceClient;
use sqlx::Connection as _;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

// ---- binaries -------------------------------------------------------------------------------

/// The folder of the release binaries: where cargo put this benchmark's import-worker. The
/// other services' binaries are built into it first, unless `BENCH_SKIP_BUILD` is set.
fn binaries() -> anyhow::Result<PathBuf> {
    let worker = PathBuf::from(env!("CARGO_BIN_EXE_import-worker"));
    let dir = worker
        .parent()
        .context("the import-worker binary has no folder")?
        .to_owned();
    if std::env::var_os("BENCH_SKIP_BUILD").is_none() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        eprintln!("building user-registry, directory-sync and graph-emulator (release)");
        let status = Command::new(cargo)
            .args(["build", "--release", "--manifest-path"])
            .arg(&manifest)
            .args([
                "-p",
                "user-registry",
                "-p",
                "directory-sync",
                "-p",
                "graph-emulator",
            ])
            .status()
            .context("running cargo build")?;
        ensure!(status.success(), "cargo build failed: {status}");
    }
    for name in ["user-registry", "directory-sync", "graph-emulator"] {
        ensure!(
            dir.join(name).is_file(),
            "{name} not found in {}: build it with `cargo build --release -p {name}`",
            dir.display()
        );
    }
    Ok(dir)
}

// ---- processes ------------------------------------------------------------------------------

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// `(comm, utime + stime, cutime + cstime)` of a process, in clock ticks.
fn proc_stat(pid: &str) -> Option<(String, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    // After the command: state is field 3; utime, stime, cutime, cstime are fields 14–17.
    let fields: Vec<u64> = stat[close + 1..]
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let own = fields.get(10)? + fields.get(11)?;
    let children = fields.get(12)? + fields.get(13)?;
    Some((comm, own, children))
}

/// CPU ticks of every process whose command is `comm`, with their waited-for children (the
/// postmaster's count includes backends that have exited).
fn cpu_ticks_of(comm: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| proc_stat(&entry.file_name().to_string_lossy()))
        .filter(|(c, _, _)| c == comm)
        .map(|(_, own, children)| own + children)
        .sum()
}

/// Samples which Postgres backends serve this benchmark's services (their connections are
/// named `bench-…`) and how much CPU each has used, so that only theirs is counted: a
/// backend seen at the start counts from there, one born later from zero.
struct BackendSampler {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<Sampled>>,
}

/// What the sampler saw of the benchmark's backends.
#[derive(Default)]
struct Sampled {
    /// CPU ticks since the start, in all and by connection name (`bench-registry`, …).
    ticks: u64,
    ticks_by_name: std::collections::BTreeMap<String, u64>,
    /// Backend samples running a statement, and those of them waiting for a lock another
    /// transaction holds (row, transaction id, relation: `wait_event_type = 'Lock'`).
    active: u64,
    lock_waits: u64,
    /// The waiting statements (connection name and the statement's first words), by count.
    waiting: std::collections::BTreeMap<String, u64>,
}

impl BackendSampler {
    async fn start(server: &str) -> anyhow::Result<Self> {
        let mut conn = sqlx::PgConnection::connect(server).await?;
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            // pid → (connection name, ticks when first seen, latest ticks)
            let mut seen: std::collections::HashMap<i32, (String, u64, u64)> = Default::default();
            let mut first = true;
            let mut sampled = Sampled::default();
            loop {
                let backends: Vec<(i32, String, bool, bool, String)> = sqlx::query_as(
                    "SELECT pid, application_name, coalesce(state = 'active', false), \
                     coalesce(wait_event_type = 'Lock', false), \
                     '[' || coalesce(wait_event, '') || '] ' || regexp_replace(left(query, 60), '\\s+', ' ', 'g') \
                     FROM pg_stat_activity WHERE application_name LIKE 'bench-%'",
                )
                .fetch_all(&mut conn)
                .await?;
                for (pid, name, active, waiting, query) in backends {
                    sampled.active += u64::from(active);
                    sampled.lock_waits += u64::from(waiting);
                    if waiting {
                        let what = format!("{}: {query}", name.trim_start_matches("bench-"));
                        *sampled.waiting.entry(what).or_default() += 1;
                    }
                    let Some((_, ticks, _)) = proc_stat(&pid.to_string()) else {
                        continue;
                    };
                    let from = if first { ticks } else { 0 };
                    seen.entry(pid).or_insert((name, from, ticks)).2 = ticks;
                }
                first = false;
                tokio::select! {
                    () = stopped.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            conn.close().await?;
            for (name, from, last) in seen.into_values() {
                let ticks = last.saturating_sub(from);
                sampled.ticks += ticks;
                *sampled.ticks_by_name.entry(name).or_default() += ticks;
            }
            Ok(sampled)
        });
        Ok(Self { stop, task })
    }

    /// What was seen since the start.
    async fn stop(self) -> Sampled {
        self.stop.cancel();
        match self.task.await {
            Ok(Ok(sampled)) => sampled,
            _ => Sampled::default(),
        }
    }
}

/// The database statements a service has run so far (`db_statements_total` of its
/// `/metrics`, on `port`).
async fn statements_run(port: u16) -> anyhow::Result<f64> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body
        .lines()
        .find_map(|line| line.strip_prefix("db_statements_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0))
}

/// Deadlocks Postgres has detected in the database so far.
async fn deadlocks(server: &str) -> anyhow::Result<i64> {
    let mut conn = sqlx::PgConnection::connect(server).await?;
    let n = sqlx::query_scalar(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    Ok(n)
}

/// `(busy, total)` jiffies of all CPUs, from the first line of `/proc/stat`.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let total: u64 = fields.iter().sum();
    // idle and iowait
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A service process; killed when dropped.
struct Service {
    name: String,
    child: Child,
    log: PathBuf,
    /// Peak RSS before the last reset (KiB).
    peak_before_reset: u64,
}

impl Service {
    fn spawn(
        name: &str,
        binary: &Path,
        args: &[&str],
        env: &[(String, String)],
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(binary)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
            peak_before_reset: 0,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); see {}",
                self.name,
                self.log.display()
            );
        }
        Ok(())
    }

    fn peak_kib(&self) -> u64 {
        status_kib(self.pid(), "VmHWM:")
    }

    fn cpu_ticks(&self) -> u64 {
        proc_stat(&self.pid().to_string()).map_or(0, |(_, own, _)| own)
    }

    /// Notes the peak so far and resets it to the current resident size (`clear_refs` 5).
    fn reset_peak(&mut self) {
        self.peak_before_reset = self.peak_kib();
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }

    /// Reads the peak RSS, then stops the process with SIGTERM (SIGKILL after 30 s).
    /// Returns (peak before the reset, peak since) in KiB.
    async fn stop(mut self) -> anyhow::Result<(u64, u64)> {
        self.ensure_running()?;
        let peak = self.peak_kib();
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let started = Instant::now();
        while self.child.try_wait()?.is_none() {
            if started.elapsed() > Duration::from_secs(30) {
                eprintln!("{} did not stop on SIGTERM; killed", self.name);
                let _ = self.child.kill();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok((self.peak_before_reset, peak))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until a gRPC service answers its health check.
async fn wait_serving(service: &mut Service, port: u16, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    while service_runtime::grpc::probe(addr).await.is_err() {
        service.ensure_running()?;
        ensure!(
            started.elapsed() < timeout,
            "{} did not start in time",
            service.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Waits until something listens on the port (the emulator speaks HTTP, not gRPC).
async fn wait_listening(service: &mut Service, port: u16, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        service.ensure_running()?;
        ensure!(
            started.elapsed() < timeout,
            "{} did not start in time",
            service.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

// ---- Postgres schemas and the RabbitMQ virtual host ----------------------------------------

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .context("running rabbitmqctl (the benchmark needs it on the PATH)")?;
    ensure!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// A RabbitMQ virtual host of this run's own, deleted (with its queues) when dropped.
struct Vhost {
    name: String,
    url: String,
}

impl Vhost {
    fn create(url: &str) -> anyhow::Result<Self> {
        let name = format!("userimport-bench-{}", uuid::Uuid::new_v4().simple());
        let (scheme, rest) = url.split_once("://").context("AMQP URL without scheme")?;
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let user = authority
            .rsplit_once('@')
            .map_or("guest", |(credentials, _)| {
                credentials.split(':').next().unwrap_or("guest")
            })
            .to_owned();
        rabbitmqctl(&["add_vhost", &name])?;
        let vhost = Self {
            url: format!("{scheme}://{authority}/{name}"),
            name,
        };
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            &user,
            ".*",
            ".*",
            ".*",
        ])?;
        Ok(vhost)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        if let Err(error) = rabbitmqctl(&["delete_vhost", &self.name]) {
            eprintln!("could not delete virtual host {}: {error:#}", self.name);
        }
    }
}

// ---- the run --------------------------------------------------------------------------------

struct Settings {
    server: String,
    amqp: String,
    users: usize,
    workers: usize,
    chunk_size: Option<u32>,
    prefetch: Option<u16>,
}

/// A row of the report: a process, its peak RSS in the sync and import phases, and its CPU
/// seconds during the import.
struct Row {
    name: String,
    sync_peak_kib: Option<u64>,
    import_peak_kib: u64,
    import_cpu_s: f64,
    /// Warnings in its log.
    warnings: usize,
}

/// Lines of a log file that contain `needle`.
fn lines_with(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

const WARNING: &str = "\"level\":\"WARN\"";

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

async fn run() -> anyhow::Result<()> {
    test_support::init();
    let (Ok(server), Ok(amqp)) = (
        std::env::var("USERIMPORT_TEST_DATABASE_URL"),
        std::env::var("USERIMPORT_TEST_AMQP_URL"),
    ) else {
        eprintln!(
            "set USERIMPORT_TEST_DATABASE_URL (Postgres) and USERIMPORT_TEST_AMQP_URL (RabbitMQ) to run this benchmark"
        );
        return Ok(());
    };
    let settings = Settings {
        server,
        amqp,
        users: env_or("BENCH_USERS", 1_000_000),
        workers: env_or("BENCH_WORKERS", 2),
        chunk_size: std::env::var("BENCH_CHUNK_SIZE")
            .ok()
            .and_then(|v| v.parse().ok()),
        prefetch: std::env::var("BENCH_PREFETCH")
            .ok()
            .and_then(|v| v.parse().ok()),
    };
    let bin = binaries()?;
    let log_dir = std::env::temp_dir().join(format!(
        "userimport-bench-batch-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&log_dir)?;
    eprintln!("service logs in {}", log_dir.display());

    let mut schemas = Vec::new();
    let vhost = Vhost::create(&settings.amqp)?;
    let outcome = bench(&settings, &bin, &log_dir, &vhost, &mut schemas).await;
    for schema in schemas {
        if let Err(error) = schema.drop().await {
            eprintln!("could not drop a schema: {error:#}");
        }
    }
    drop(vhost);
    if outcome.is_ok() && std::env::var_os("BENCH_KEEP_LOGS").is_none() {
        let _ = std::fs::remove_dir_all(&log_dir);
    }
    outcome
}

async fn bench(
    settings: &Settings,
    bin: &Path,
    log_dir: &Path,
    vhost: &Vhost,
    schemas: &mut Vec<Schema>,
) -> anyhow::Result<()> {
    let n = settings.users;
    let ticks = clock_ticks_per_second();
    let log_filter =
        std::env::var("BENCH_LOG_FILTER").unwrap_or_else(|_| "info,sqlx=warn".to_owned());
    let log_env = |prefix: &str| {
        vec![
            (format!("{prefix}LOG__FORMAT"), "json".to_owned()),
            (format!("{prefix}LOG__FILTER"), log_filter.clone()),
        ]
    };

    // Databases: one fresh schema per service.
    let mut urls = Vec::new();
    for prefix in ["bench_registry", "bench_directory", "bench_importer"] {
        let (schema, url) = Schema::create(&settings.server, prefix).await?;
        schemas.push(schema);
        urls.push(url);
    }
    // Each service's connections carry a name of the benchmark's, so that Postgres CPU is
    // counted for this benchmark's own backends only.
    let named = |url: &str, name: &str| format!("{url}&application_name=bench-{name}");
    let (registry_db_url, directory_db_url, importer_db_url) = (
        named(&urls[0], "registry"),
        named(&urls[1], "directory"),
        named(&urls[2], "importer"),
    );

    // 1. The emulated tenant.
    let started = Instant::now();
    let emulator_port = free_port()?;
    let mut emulator = Service::spawn(
        "graph-emulator",
        &bin.join("graph-emulator"),
        &[
            "--listen",
            &format!("127.0.0.1:{emulator_port}"),
            "--users",
            &n.to_string(),
        ],
        &[("RUST_LOG".to_owned(), "warn".to_owned())],
        log_dir,
    )?;
    wait_listening(&mut emulator, emulator_port, Duration::from_secs(600)).await?;
    println!(
        "emulated tenant of {n} users ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // 2. user-registry.
    let registry_port = free_port()?;
    let mut env = log_env("USER_REGISTRY_");
    env.push((
        "USER_REGISTRY_LISTEN_ADDR".into(),
        format!("127.0.0.1:{registry_port}"),
    ));
    env.push((
        "USER_REGISTRY_DATABASE__URL".into(),
        registry_db_url.clone(),
    ));
    // Loopback only, throw-away data: the benchmark measures imports, not token checks.
    env.push((
        "USER_REGISTRY_AUTH__INSECURE_DEVELOPMENT".into(),
        "true".into(),
    ));
    let registry_metrics = free_port()?;
    env.push((
        "USER_REGISTRY_METRICS__LISTEN_ADDR".into(),
        format!("127.0.0.1:{registry_metrics}"),
    ));
    let mut registry = Service::spawn(
        "user-registry",
        &bin.join("user-registry"),
        &[],
        &env,
        log_dir,
    )?;
    wait_serving(&mut registry, registry_port, Duration::from_secs(60)).await?;
    let registry_url = format!("http://127.0.0.1:{registry_port}");

    // 3. directory-sync, and one full sync.
    let directory_port = free_port()?;
    let directory_metrics = free_port()?;
    let graph = format!("http://127.0.0.1:{emulator_port}");
    let mut env = log_env("DIRECTORY_SYNC_");
    env.extend([
        (
            "DIRECTORY_SYNC_LISTEN_ADDR".to_owned(),
            format!("127.0.0.1:{directory_port}"),
        ),
        ("DIRECTORY_SYNC_REGISTRY_URL".into(), registry_url.clone()),
        ("DIRECTORY_SYNC_DATABASE__URL".into(), directory_db_url),
        (
            "DIRECTORY_SYNC_AUTH__INSECURE_DEVELOPMENT".into(),
            "true".into(),
        ),
        (
            "DIRECTORY_SYNC_METRICS__LISTEN_ADDR".into(),
            format!("127.0.0.1:{directory_metrics}"),
        ),
        (
            "DIRECTORY_SYNC_DIRECTORY__AUTHORITY_HOST".into(),
            graph.clone(),
        ),
        ("DIRECTORY_SYNC_DIRECTORY__GRAPH_HOST".into(), graph),
        (
            "DIRECTORY_SYNC_DIRECTORY__TENANT_ID".into(),
            graph_emulator::SYNTHETIC_TENANT_ID.into(),
        ),
        (
            "DIRECTORY_SYNC_DIRECTORY__CLIENT_ID".into(),
            graph_emulator::SYNTHETIC_CLIENT_ID.into(),
        ),
        (
            "DIRECTORY_SYNC_DIRECTORY__CLIENT_SECRET".into(),
            graph_emulator::SYNTHETIC_CLIENT_SECRET.into(),
        ),
        // The emulator does not throttle; no client-side budget either.
        (
            "DIRECTORY_SYNC_DIRECTORY__RESOURCE_UNITS_PER_10S".into(),
            "0".into(),
        ),
        (
            "DIRECTORY_SYNC_SYNC__FULL_SYNC_ON_START".into(),
            "false".into(),
        ),
        (
            "DIRECTORY_SYNC_SYNC__DELTA_INTERVAL_SECS".into(),
            "0".into(),
        ),
        // No import-worker to reconcile rules with after the sync (the bench has no rules,
        // and its workers start later): the default address would fail the round.
        ("DIRECTORY_SYNC_IMPORTER_URL".into(), String::new()),
    ]);
    let mut directory = Service::spawn(
        "directory-sync",
        &bin.join("directory-sync"),
        &[],
        &env,
        log_dir,
    )?;
    wait_serving(&mut directory, directory_port, Duration::from_secs(60)).await?;
    let directory_url = format!("http://127.0.0.1:{directory_port}");
    let started = Instant::now();
    let mut directory_client = DirectoryServiceClient::connect(directory_url.clone()).await?;
    let run_id = directory_client
        .sync_now(directory_pb::SyncNowRequest {
            mode: directory_pb::SyncMode::Full.into(),
            ..Default::default()
        })
        .await
        .context("full sync")?
        .into_inner()
        .run
        .context("no sync run")?
        .run_id;
    // SyncNow answers at once; the round's end comes with the watch.
    let mut watch = directory_client
        .watch_sync_run(directory_pb::WatchSyncRunRequest { run_id })
        .await
        .context("watching the full sync")?
        .into_inner();
    let mut run = None;
    while let Some(update) = watch.message().await? {
        run = update.run;
    }
    let run = run.context("no sync run")?;
    ensure!(
        run.status() == directory_pb::SyncRunStatus::Succeeded && run.users_seen == n as u64,
        "full sync: {run:?}"
    );
    println!(
        "full sync of {n} users: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // 4. The workers, sharing one job database, migrated once before they start.
    let worker_env = |port: u16, metrics_port: u16, name: &str| {
        let mut env = log_env("IMPORT_WORKER_");
        env.extend([
            ("HOSTNAME".to_owned(), name.to_owned()),
            (
                "IMPORT_WORKER_LISTEN_ADDR".into(),
                format!("127.0.0.1:{port}"),
            ),
            (
                "IMPORT_WORKER_DATABASE__URL".into(),
                importer_db_url.clone(),
            ),
            (
                "IMPORT_WORKER_AUTH__INSECURE_DEVELOPMENT".into(),
                "true".into(),
            ),
            (
                "IMPORT_WORKER_METRICS__LISTEN_ADDR".into(),
                format!("127.0.0.1:{metrics_port}"),
            ),
            ("IMPORT_WORKER_DIRECTORY_URL".into(), directory_url.clone()),
            ("IMPORT_WORKER_REGISTRY_URL".into(), registry_url.clone()),
            ("IMPORT_WORKER_QUEUE__KIND".into(), "amqp".into()),
            ("IMPORT_WORKER_QUEUE__URL".into(), vhost.url.clone()),
            ("IMPORT_WORKER_QUEUE__PREFIX".into(), "bench".into()),
        ]);
        if let Some(chunk_size) = settings.chunk_size {
            env.push((
                "IMPORT_WORKER_WORKER__CHUNK_SIZE".into(),
                chunk_size.to_string(),
            ));
        }
        if let Some(prefetch) = settings.prefetch {
            env.push(("IMPORT_WORKER_QUEUE__PREFETCH".into(), prefetch.to_string()));
        }
        env
    };
    let migrate = Command::new(bin.join("import-worker"))
        .arg("migrate")
        .envs(worker_env(0, 0, "bench-migrate"))
        .output()?;
    ensure!(
        migrate.status.success(),
        "import-worker migrate: {}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let mut workers = Vec::new();
    let mut worker_ports = Vec::new();
    let mut metrics_ports = vec![
        ("user-registry".to_owned(), registry_metrics),
        ("directory-sync".to_owned(), directory_metrics),
    ];
    for i in 1..=settings.workers {
        let port = free_port()?;
        let metrics_port = free_port()?;
        let name = format!("import-worker-{i}");
        metrics_ports.push((name.clone(), metrics_port));
        let mut worker = Service::spawn(
            &name,
            &bin.join("import-worker"),
            &[],
            &worker_env(port, metrics_port, &name),
            log_dir,
        )?;
        wait_serving(&mut worker, port, Duration::from_secs(60)).await?;
        workers.push(worker);
        worker_ports.push(port);
    }
    let mut importer =
        ImporterServiceClient::connect(format!("http://127.0.0.1:{}", worker_ports[0])).await?;

    // 5. The batch job, timed. Peaks are reset so the import phase shows on its own.
    for service in [&mut emulator, &mut registry, &mut directory] {
        service.reset_peak();
    }
    let cpu_before: Vec<u64> = [&emulator, &registry, &directory]
        .into_iter()
        .chain(workers.iter())
        .map(Service::cpu_ticks)
        .collect();
    let postgres_before = cpu_ticks_of("postgres");
    let mut statements_before = Vec::new();
    for (_, port) in &metrics_ports {
        statements_before.push(statements_run(*port).await?);
    }
    let deadlocks_before = deadlocks(&settings.server).await?;
    let backends = BackendSampler::start(&settings.server).await?;
    let rabbit_before = cpu_ticks_of("beam.smp");
    let machine_before = machine_ticks();

    let started = Instant::now();
    let job = importer
        .start_batch_import(pb::StartBatchImportRequest {
            company: "DAT".into(),
            scope: Some(directory_pb::Scope {
                scope: Some(directory_pb::scope::Scope::All(directory_pb::AllUsers {})),
            }),
            options: Some(pb::BatchOptions::default()),
            dry_run: false,
        })
        .await?
        .into_inner()
        .job
        .context("no job")?;
    let mut planned_at = None;
    let mut last_report = Instant::now();
    let job = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let job = importer
            .get_job(pb::GetJobRequest {
                job_id: job.job_id.clone(),
            })
            .await?
            .into_inner()
            .job
            .context("no job")?;
        match job.status() {
            pb::JobStatus::Completed => break job,
            pb::JobStatus::Failed | pb::JobStatus::Cancelled => bail!("job ended: {job:?}"),
            pb::JobStatus::Running if planned_at.is_none() => planned_at = Some(started.elapsed()),
            _ => {}
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            let counts = job.counts.unwrap_or_default();
            let done = counts.created + counts.already_present + counts.skipped + counts.failed;
            eprintln!(
                "  {:>6.1} s: {:?}, {} planned in {} chunks, {} chunks done ({done} users, {:.0}/s)",
                started.elapsed().as_secs_f64(),
                job.status(),
                job.planned,
                job.chunks_planned,
                job.chunks_done,
                done as f64 / started.elapsed().as_secs_f64(),
            );
            for service in workers
                .iter_mut()
                .chain([&mut emulator, &mut registry, &mut directory])
            {
                service.ensure_running()?;
            }
        }
    };
    let elapsed = started.elapsed();
    let cpu_after: Vec<u64> = [&emulator, &registry, &directory]
        .into_iter()
        .chain(workers.iter())
        .map(Service::cpu_ticks)
        .collect();
    let postgres_cpu = cpu_ticks_of("postgres").saturating_sub(postgres_before) as f64 / ticks;
    let sampled = backends.stop().await;
    let own_backends_cpu = sampled.ticks as f64 / ticks;
    let deadlocks_seen = deadlocks(&settings.server).await? - deadlocks_before;
    let mut statements_by_service = Vec::new();
    for ((name, port), before) in metrics_ports.iter().zip(&statements_before) {
        statements_by_service.push((name.clone(), statements_run(*port).await? - before));
    }
    let rabbit_cpu = cpu_ticks_of("beam.smp").saturating_sub(rabbit_before) as f64 / ticks;
    let machine_after = machine_ticks();
    let busy = (machine_after.0 - machine_before.0) as f64
        / (machine_after.1 - machine_before.1).max(1) as f64;

    // 6. The figures must be honest: every user planned once, counts adding up, one registry
    // user per importable directory user.
    let counts = job.counts.unwrap_or_default();
    ensure!(job.planned == n as u64, "planned {} of {n}", job.planned);
    ensure!(
        counts.created + counts.already_present + counts.skipped + counts.failed == n as u64,
        "counts do not add up to {n}: {counts:?}"
    );
    ensure!(
        job.chunks_done == job.chunks_planned && job.chunks_dead_lettered == 0,
        "chunks: {job:?}"
    );
    let importable = graph_emulator::synthetic_users(n, graph_emulator::SYNTHETIC_DOMAIN)
        .iter()
        .filter(|u| !(u.user_type == "Guest" && u.mail.is_none()))
        .count() as i64;
    let mut registry_conn = sqlx::PgConnection::connect(&registry_db_url).await?;
    let (total, distinct): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT object_id) FROM users")
            .fetch_one(&mut registry_conn)
            .await?;
    ensure!(
        total == distinct && total == importable && counts.created as i64 == total,
        "registry holds {total} users ({distinct} distinct object ids), {importable} importable, {} created",
        counts.created
    );

    // 7. Peaks, then stop everything: workers first, then the services they call.
    let mut rows = Vec::new();
    let mut cpu = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|(before, after)| after.saturating_sub(*before) as f64 / ticks);
    let service_cpu: Vec<f64> = cpu.by_ref().take(3).collect();
    for worker in workers {
        let (name, log) = (worker.name.clone(), worker.log.clone());
        let (_, peak) = worker.stop().await?;
        rows.push(Row {
            name,
            sync_peak_kib: None,
            import_peak_kib: peak,
            import_cpu_s: cpu.next().unwrap_or_default(),
            warnings: lines_with(&log, WARNING),
        });
    }
    let registry_log = registry.log.clone();
    for (service, cpu) in [directory, registry, emulator].into_iter().zip([
        service_cpu[2],
        service_cpu[1],
        service_cpu[0],
    ]) {
        let (name, log) = (service.name.clone(), service.log.clone());
        let (sync_peak, import_peak) = service.stop().await?;
        rows.push(Row {
            name,
            sync_peak_kib: Some(sync_peak),
            import_peak_kib: import_peak,
            import_cpu_s: cpu,
            warnings: lines_with(&log, WARNING),
        });
    }

    // Concurrent imports that conflicted in the registry (a deadlock waits out Postgres's
    // deadlock_timeout) and were retried.
    let registry_retries = lines_with(&registry_log, "import transaction conflicted");

    // 8. The reference: COPY of exactly what the import wrote (its users and their audit
    // rows, same ids) into an identical, freshly migrated schema, one transaction, over the
    // same kind of connection as the services'.
    let mut written = Vec::new();
    for table in ["users", "audit_events"] {
        let mut data = Vec::new();
        let mut out = registry_conn
            .copy_out_raw(&format!("COPY {table} TO STDOUT"))
            .await?;
        while let Some(chunk) = out.next().await {
            data.extend_from_slice(&chunk?);
        }
        drop(out);
        written.push((table, data));
    }
    registry_conn.close().await?;
    // Twice, each into a fresh schema, and the faster counts: one COPY of a million users
    // moved by a third between runs (a checkpoint or autovacuum landing in it), and a slow
    // reference flatters the ratio.
    let mut copies = Vec::new();
    let mut copied = 0;
    for _ in 0..2 {
        let (schema, copy_url) = Schema::create(&settings.server, "bench_copy").await?;
        schemas.push(schema);
        let db = service_runtime::storage::Database::connect(&copy_url, 1).await?;
        db.migrate(&user_registry::store::MIGRATIONS).await?;
        db.close().await;
        let mut conn = sqlx::PgConnection::connect(&copy_url).await?;
        sqlx::query("CHECKPOINT").execute(&mut conn).await?;
        let copy_started = Instant::now();
        sqlx::query("BEGIN").execute(&mut conn).await?;
        for (table, data) in &written {
            let mut copy = conn
                .copy_in_raw(&format!("COPY {table} FROM STDIN"))
                .await?;
            for part in data.chunks(1 << 20) {
                copy.send(part).await?;
            }
            let rows = copy.finish().await?;
            if *table == "users" {
                copied = rows;
            }
        }
        sqlx::query("COMMIT").execute(&mut conn).await?;
        copies.push(copy_started.elapsed());
        conn.close().await?;
    }
    let copy_elapsed = copies.iter().copied().min().unwrap_or_default();
    ensure!(copied == total as u64, "copied {copied} of {total} users");

    // 9. The report.
    // Users/s counts the users created, in both.
    let rate = counts.created as f64 / elapsed.as_secs_f64();
    let copy_rate = copied as f64 / copy_elapsed.as_secs_f64();
    println!();
    println!(
        "batch import of {n} users, {} workers, chunk size {}, prefetch {}: {} chunks",
        settings.workers,
        settings
            .chunk_size
            .map_or("default".to_owned(), |c| c.to_string()),
        settings
            .prefetch
            .map_or("default".to_owned(), |p| p.to_string()),
        job.chunks_planned
    );
    println!(
        "  counts: {} created, {} already present, {} skipped, {} failed; registry holds {total} users",
        counts.created, counts.already_present, counts.skipped, counts.failed
    );
    println!(
        "  end to end: {:.1} s = {rate:.0} users created/s (planning done after {:.1} s)",
        elapsed.as_secs_f64(),
        planned_at.unwrap_or(elapsed).as_secs_f64()
    );
    println!(
        "  COPY of what the import wrote ({copied} users and their audit rows): {:.2} s = {copy_rate:.0} users/s (the faster of {})",
        copy_elapsed.as_secs_f64(),
        copies
            .iter()
            .map(|d| format!("{:.2} s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" and ")
    );
    println!("  ratio: {:.2}x COPY", rate / copy_rate);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "  CPU during the import: {:.0} % of {cores} cores busy ({:.1} CPU-s available); Postgres: this benchmark's backends {own_backends_cpu:.1} CPU-s (every postgres process {postgres_cpu:.1}), RabbitMQ {rabbit_cpu:.1} CPU-s",
        busy * 100.0,
        cores as f64 * elapsed.as_secs_f64()
    );
    println!(
        "  contention: {registry_retries} registry import transactions retried after a conflict, {deadlocks_seen} deadlocks; {} of {} sampled running statements waited on a lock",
        sampled.lock_waits, sampled.active
    );
    let mut waiting: Vec<_> = sampled.waiting.iter().collect();
    waiting.sort_by(|a, b| b.1.cmp(a.1));
    for (what, n) in waiting.into_iter().take(5) {
        println!("    waited {n}×: {what}");
    }
    let chunks = job.chunks_planned.max(1) as f64;
    let statements_total: f64 = statements_by_service.iter().map(|(_, n)| n).sum();
    println!(
        "  statements per chunk: {:.1} ({})",
        statements_total / chunks,
        statements_by_service
            .iter()
            .map(|(name, n)| format!("{name} {:.1}", n / chunks))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The per-user cost budget, so the next regression shows where it happens.
    let per_user = |cpu_s: f64| cpu_s * 1e6 / (counts.created.max(1) as f64);
    let ours: f64 = rows
        .iter()
        .filter(|row| row.name != "graph-emulator")
        .map(|row| row.import_cpu_s)
        .sum();
    println!(
        "  CPU per user created: Postgres (this benchmark's backends) {:.1} µs ({}), our services {:.1} µs ({})",
        per_user(own_backends_cpu),
        sampled
            .ticks_by_name
            .iter()
            .map(|(name, t)| format!(
                "{} {:.1}",
                name.trim_start_matches("bench-"),
                per_user(*t as f64 / ticks)
            ))
            .collect::<Vec<_>>()
            .join(", "),
        per_user(ours),
        rows.iter()
            .filter(|row| row.name != "graph-emulator")
            .map(|row| format!("{} {:.1}", row.name, per_user(row.import_cpu_s)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  {:<16} {:>16} {:>18} {:>12} {:>9}",
        "process", "peak RSS (sync)", "peak RSS (import)", "CPU (import)", "warnings"
    );
    for row in &rows {
        println!(
            "  {:<16} {:>16} {:>18} {:>10.1} s {:>9}",
            row.name,
            row.sync_peak_kib.map_or("—".to_owned(), mib),
            mib(row.import_peak_kib),
            row.import_cpu_s,
            row.warnings
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
