//! test-support: what the services' tests share — a fresh database per test on SQLite and on
//! Postgres (one suite, two backends), the broker URL, and test logging.
//!
//! Postgres and RabbitMQ are never faked. Tests that need them read
//! `USERIMPORT_TEST_DATABASE_URL` / `USERIMPORT_TEST_AMQP_URL`; without them a test says so on
//! stderr and returns, except under `CI=true`, where it fails so CI cannot pass by skipping.

use std::sync::Once;

use sqlx::{Connection as _, Executor as _};

/// Prepares the process once: the rustls crypto provider and test logging (`RUST_LOG`).
/// ERROR events are also counted per thread ([`errors_logged_on_this_thread`]).
pub fn init() {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        service_runtime::install_crypto_provider();
        sqlx::any::install_default_drivers();
        let _ = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_filter(
                        tracing_subscriber::EnvFilter::try_from_default_env()
                            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
                    ),
            )
            .with(CountErrors.with_filter(tracing_subscriber::filter::LevelFilter::ERROR))
            .try_init();
    });
}

std::thread_local! {
    static ERRORS_ON_THIS_THREAD: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many ERROR events this thread has logged. A test that runs the services on a
/// current-thread runtime of its own sees exactly theirs, whatever other tests log.
pub fn errors_logged_on_this_thread() -> u64 {
    ERRORS_ON_THIS_THREAD.with(std::cell::Cell::get)
}

struct CountErrors;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountErrors {
    fn on_event(
        &self,
        _event: &tracing::Event<'_>,
        _context: tracing_subscriber::layer::Context<'_, S>,
    ) {
        ERRORS_ON_THIS_THREAD.with(|count| count.set(count.get() + 1));
    }
}

fn required_env(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("CI needs {name}: a test that needs it must not be skipped")
        }
        _ => {
            eprintln!("skipped: {name} is not set");
            None
        }
    }
}

/// The Postgres server URL for tests, or `None` (with a note on stderr) to skip.
pub fn postgres_url_or_skip() -> Option<String> {
    required_env("USERIMPORT_TEST_DATABASE_URL")
}

/// The RabbitMQ URL for tests, or `None` (with a note on stderr) to skip.
pub fn amqp_url_or_skip() -> Option<String> {
    required_env("USERIMPORT_TEST_AMQP_URL")
}

/// The shared Postgres and RabbitMQ servers, as the tests of one binary (which run at once)
/// use them: every test holds a [`ServersGuard`] while it uses them, and a test that takes a
/// server down (a Postgres restart, a RabbitMQ `stop_app`) holds an [`ExclusiveServers`]
/// instead, so no other test of its binary sees the fault it injects. (Test binaries run one
/// after another.)
static SERVERS: std::sync::LazyLock<std::sync::Arc<tokio::sync::RwLock<()>>> =
    std::sync::LazyLock::new(Default::default);

thread_local! {
    /// Set on the thread of a test holding [`ExclusiveServers`]: the databases and brokers
    /// it creates itself do not wait for the lock it holds.
    static EXCLUSIVE_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The share this thread's test holds, so that a test taking several (its databases,
    /// its virtual host) takes the lock once: a second read queued behind a waiting
    /// exclusive test would deadlock.
    static SHARED_HERE: std::cell::RefCell<std::sync::Weak<tokio::sync::OwnedRwLockReadGuard<()>>> =
        const { std::cell::RefCell::new(std::sync::Weak::new()) };
}

/// A test's share of the servers (nothing in a test that holds them exclusively).
pub struct ServersGuard(
    #[allow(dead_code)] Option<std::sync::Arc<tokio::sync::OwnedRwLockReadGuard<()>>>,
);

/// Shares the servers with the other tests of this binary until dropped; waits while a test
/// holds them exclusively. Call it from the test's own thread (the test body).
pub async fn shared_servers() -> ServersGuard {
    if EXCLUSIVE_HERE.with(std::cell::Cell::get) {
        return ServersGuard(None);
    }
    if let Some(held) = SHARED_HERE.with(|here| here.borrow().upgrade()) {
        return ServersGuard(Some(held));
    }
    let held = std::sync::Arc::new(SERVERS.clone().read_owned().await);
    SHARED_HERE.with(|here| *here.borrow_mut() = std::sync::Arc::downgrade(&held));
    ServersGuard(Some(held))
}

/// The servers for this test alone, until dropped: for tests that stop or restart them.
/// Take it first, before creating databases or virtual hosts, and hold it on the test's own
/// thread (the test body, not a spawned task).
pub struct ExclusiveServers(#[allow(dead_code)] tokio::sync::OwnedRwLockWriteGuard<()>);

impl ExclusiveServers {
    pub async fn take() -> Self {
        let guard = SERVERS.clone().write_owned().await;
        EXCLUSIVE_HERE.with(|here| here.set(true));
        Self(guard)
    }
}

impl Drop for ExclusiveServers {
    fn drop(&mut self) {
        EXCLUSIVE_HERE.with(|here| here.set(false));
    }
}

/// A database of its own for one test: a SQLite file in a temporary folder, or a fresh
/// schema on the Postgres test server (dropped when the value is dropped).
pub struct TestDatabase {
    /// The URL a service connects with.
    pub url: String,
    /// Which backend this is, for test messages.
    pub backend: &'static str,
    _dir: Option<tempfile::TempDir>,
    postgres_schema: Option<(String, String)>,
    _servers: Option<ServersGuard>,
}

impl TestDatabase {
    /// The folder of a SQLite database (other files of the test may go there too).
    pub fn sqlite_dir(&self) -> Option<&std::path::Path> {
        self._dir.as_ref().map(tempfile::TempDir::path)
    }

    /// The Postgres server URL and this test's schema name. Schemas whose names start with
    /// it are dropped with the test database too, so a test may create more.
    pub fn postgres_schema(&self) -> Option<(&str, &str)> {
        self.postgres_schema
            .as_ref()
            .map(|(server, schema)| (server.as_str(), schema.as_str()))
    }

    /// A new SQLite database file.
    pub async fn sqlite() -> Self {
        init();
        let dir = tempfile::tempdir().expect("temporary folder");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        Self {
            url,
            backend: "sqlite",
            _dir: Some(dir),
            postgres_schema: None,
            _servers: None,
        }
    }

    /// A new schema on the Postgres test server, or `None` when no server is configured.
    pub async fn postgres() -> Option<Self> {
        init();
        let server = postgres_url_or_skip()?;
        let servers = shared_servers().await;
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&server)
            .await
            .expect("connect to the Postgres test server");
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .await
            .expect("create test schema");
        let separator = if server.contains('?') { '&' } else { '?' };
        let url = format!("{server}{separator}options=-c%20search_path%3D{schema}");
        Some(Self {
            url,
            backend: "postgres",
            _dir: None,
            postgres_schema: Some((server, schema)),
            _servers: Some(servers),
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((server, schema)) = self.postgres_schema.take() else {
            return;
        };
        // Drop runs outside async code; a short-lived thread with its own runtime does the I/O.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&server).await.ok()?;
                conn.execute(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE"
                )))
                .await
                .ok()
            })
        })
        .join();
    }
}

/// Declares tests that run once on SQLite and once on Postgres. Each becomes a module named
/// after the test, holding `on_sqlite` and `on_postgres`.
///
/// ```ignore
/// test_support::on_both_backends! {
///     async fn importing_twice_reports_already_present(db) { /* db: TestDatabase */ }
/// }
/// ```
#[macro_export]
macro_rules! on_both_backends {
    ($(async fn $name:ident($db:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_sqlite() {
                    let $db = $crate::TestDatabase::sqlite().await;
                    $body
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_postgres() {
                    let Some($db) = $crate::TestDatabase::postgres().await else { return };
                    $body
                }
            }
        )*
    };
}

/// A Postgres schema of a benchmark's own, on `server`: created by [`BenchSchema::create`]
/// (which also answers the URL whose connections use it), removed by [`BenchSchema::drop`].
pub struct BenchSchema {
    server: String,
    name: String,
}

impl BenchSchema {
    /// Creates `<prefix>_<random>` and answers it with a URL whose search path is that schema.
    pub async fn create(server: &str, prefix: &str) -> Result<(Self, String), sqlx::Error> {
        use sqlx::{Connection as _, Executor as _};
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(server).await?;
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .await?;
        let separator = if server.contains('?') { '&' } else { '?' };
        let url = format!("{server}{separator}options=-c%20search_path%3D{name}");
        Ok((
            Self {
                server: server.to_owned(),
                name,
            },
            url,
        ))
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the schema and everything in it.
    pub async fn drop(self) -> Result<(), sqlx::Error> {
        use sqlx::{Connection as _, Executor as _};
        let mut conn = sqlx::PgConnection::connect(&self.server).await?;
        conn.execute(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.name
        )))
        .await?;
        Ok(())
    }
}
