//! The database connection. One `sqlx::Any` pool serves both backends; the URL's scheme picks
//! Postgres (production) or SQLite (the embedded default). Each service keeps one migration
//! folder per backend and backend-specific SQL only where the dialects differ.
//!
//! Conventions that keep the two schemas readable through `Any`: text columns are `TEXT`,
//! timestamps are `BIGINT` Unix milliseconds, and booleans are `BOOLEAN` in Postgres and
//! `INTEGER` in SQLite, read with [`flag`].

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, AssertSqlSafe, Executor as _, Row as _, Transaction};

/// Which SQL dialect a [`Database`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A service's migrations, one embedded set per backend.
pub struct Migrations {
    pub postgres: &'static Migrator,
    pub sqlite: &'static Migrator,
}

/// A connection pool and the backend behind it.
#[derive(Debug, Clone)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
}

impl Database {
    /// Connects to `url` (`postgres://…` or `sqlite://…`). A SQLite file and its folder are
    /// created when missing, and SQLite runs in WAL mode with a busy timeout so readers never
    /// block the single writer.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        let url = match backend {
            Backend::Postgres => url.to_owned(),
            Backend::Sqlite => prepare_sqlite_url(url)?,
        };
        let options = AnyConnectOptions::from_str(&url).context("invalid database URL")?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 30000; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .with_context(|| format!("cannot connect to the {backend:?} database"))?;
        Ok(Self { pool, backend })
    }

    /// Runs the migrations for this backend.
    pub async fn migrate(&self, migrations: &Migrations) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::Postgres => migrations.postgres,
            Backend::Sqlite => migrations.sqlite,
        };
        migrator.run(&self.pool).await.context("migrations failed")
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Begins a transaction that will write. SQLite takes the write lock up front
    /// (`BEGIN IMMEDIATE`) so a read-then-write transaction cannot fail on lock upgrade.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.backend {
            Backend::Postgres => self.pool.begin().await,
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
        }
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A `FROM` item named `r` that expands a JSON array of objects (the statement's first
/// parameter) into rows with the given columns: `(name, postgres type)`.
pub fn json_rows(backend: Backend, columns: &[(&str, &str)]) -> String {
    match backend {
        Backend::Postgres => {
            let defs: Vec<String> = columns
                .iter()
                .map(|(name, ty)| format!("{name} {ty}"))
                .collect();
            format!("jsonb_to_recordset($1::jsonb) AS r({})", defs.join(", "))
        }
        Backend::Sqlite => {
            let picks: Vec<String> = columns
                .iter()
                .map(|(name, _)| format!("json_extract(value, '$.{name}') AS {name}"))
                .collect();
            format!("(SELECT {} FROM json_each($1)) AS r", picks.join(", "))
        }
    }
}

/// One statement text per backend, built once (keep it in a `LazyLock`).
pub struct Dialects {
    postgres: String,
    sqlite: String,
}

impl Dialects {
    pub fn new(build: impl Fn(Backend) -> String) -> Self {
        Self {
            postgres: build(Backend::Postgres),
            sqlite: build(Backend::Sqlite),
        }
    }

    pub fn get(&self, backend: Backend) -> AssertSqlSafe<&str> {
        AssertSqlSafe(match backend {
            Backend::Postgres => &self.postgres,
            Backend::Sqlite => &self.sqlite,
        })
    }
}

/// Escapes `%`, `_` and `\` so a search term matches literally under `LIKE … ESCAPE '\'`
/// (written that way on both backends: SQLite has no default escape character).
pub fn escape_like(term: &str) -> String {
    term.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Reads a boolean column stored as `BOOLEAN` (Postgres) or `INTEGER` (SQLite).
pub fn flag(row: &AnyRow, column: &str) -> Result<bool, sqlx::Error> {
    match row.try_get::<bool, _>(column) {
        Ok(value) => Ok(value),
        Err(_) => Ok(row.try_get::<i64, _>(column)? != 0),
    }
}

/// True when a database error is a transient conflict worth retrying the whole transaction
/// for: a Postgres deadlock or serialization failure, or SQLite reporting the file busy.
pub fn is_transient_conflict(error: &sqlx::Error) -> bool {
    let Some(db) = error.as_database_error() else {
        return false;
    };
    match db.code().as_deref() {
        Some("40P01" | "40001") => true,
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
        Some(code) => code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6)),
        None => false,
    }
}

/// True when a database error is a unique-key violation.
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|db| db.is_unique_violation())
}

fn backend_of(url: &str) -> anyhow::Result<Backend> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else {
        anyhow::bail!(
            "database URL must start with postgres:// or sqlite: (got a different scheme)"
        )
    }
}

/// Adds `mode=rwc` (create if missing) unless a mode is given, and creates the parent folder.
fn prepare_sqlite_url(url: &str) -> anyhow::Result<String> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path == ":memory:" {
        return Ok(url.to_owned());
    }
    let parent = std::path::Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create the database folder {}", parent.display()))?;
    }
    let query = if query.split('&').any(|kv| kv.starts_with("mode=")) {
        query.to_owned()
    } else if query.is_empty() {
        "mode=rwc".to_owned()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_get_create_mode_unless_one_is_given() {
        let dir = std::env::temp_dir().join("service-runtime-url-test");
        let path = dir.join("x.db");
        let url = prepare_sqlite_url(&format!("sqlite://{}", path.display())).unwrap();
        assert_eq!(url, format!("sqlite://{}?mode=rwc", path.display()));
        assert!(dir.is_dir());
        let url = prepare_sqlite_url(&format!("sqlite://{}?mode=ro", path.display())).unwrap();
        assert!(url.ends_with("?mode=ro"));
    }

    #[test]
    fn unknown_url_schemes_are_rejected() {
        assert!(backend_of("mysql://x").is_err());
        assert_eq!(backend_of("postgres://h/db").unwrap(), Backend::Postgres);
        assert_eq!(backend_of("sqlite://a.db").unwrap(), Backend::Sqlite);
    }

    #[tokio::test]
    async fn flags_read_back_from_sqlite_integers() {
        let db = Database::connect("sqlite::memory:", 1).await.unwrap();
        let row = sqlx::query("SELECT 1 AS yes, 0 AS no")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert!(flag(&row, "yes").unwrap());
        assert!(!flag(&row, "no").unwrap());
    }
}
