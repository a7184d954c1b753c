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
    /// A second, small pool for short autonomous writes made while a transaction of the main
    /// pool is open. Taking a second connection from the main pool there would deadlock once
    /// every connection is held by such a transaction, each waiting for one more.
    autonomous: AnyPool,
    backend: Backend,
}

/// Connections of the autonomous pool (connected when first used).
const AUTONOMOUS_CONNECTIONS: u32 = 2;

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
        let pool = pool_options(backend, max_connections)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("cannot connect to the {backend:?} database"))?;
        let autonomous = pool_options(backend, AUTONOMOUS_CONNECTIONS).connect_lazy_with(options);
        Ok(Self {
            pool,
            autonomous,
            backend,
        })
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

    /// A connection for a short write that must commit on its own while the caller holds a
    /// transaction of [`Database::pool`] (Postgres only: SQLite has one writer, so such a
    /// write would wait for the caller's own transaction).
    pub async fn autonomous(&self) -> Result<sqlx::pool::PoolConnection<Any>, sqlx::Error> {
        self.autonomous.acquire().await
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
        self.autonomous.close().await;
    }
}

/// Pool options of every pool: the acquire timeout, and per-connection settings.
fn pool_options(backend: Backend, max_connections: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                match backend {
                    Backend::Sqlite => {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 30000; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                    }
                    // Batches arrive as one JSON parameter whose row count the planner cannot
                    // see, and tables grow from empty during a first import. A generic plan
                    // cached while a table was small (a hash join over a sequential scan) then
                    // stays 5-10x slower than the index lookups a custom plan picks, so every
                    // execution is planned for its table.
                    //
                    // A process that hangs inside a transaction (SIGSTOPped, stuck, cut off
                    // with its TCP connection alive) would hold its row locks for ever, and
                    // every replica writing the same job or user would wait behind it; none
                    // of our transactions waits between its statements for anything but the
                    // database, so the server ends such a session after 15 s, releasing its
                    // locks, and the hung process finds its work rolled back.
                    Backend::Postgres => {
                        conn.execute(
                            "SET plan_cache_mode = force_custom_plan; \
                             SET idle_in_transaction_session_timeout = '15s'",
                        )
                        .await?;
                    }
                }
                Ok(())
            })
        })
}

/// A `FROM` item named `r` that expands a [`RowsParam`] (the statement's first parameter)
/// into rows with the given columns: `(name, postgres type)` with type `text`, `bigint` or
/// `boolean`.
pub fn rows_from(backend: Backend, columns: &[(&str, &str)]) -> String {
    match backend {
        Backend::Postgres => {
            let picks: Vec<String> = columns
                .iter()
                .enumerate()
                .map(|(i, (name, ty))| format!("split_part(l, E'\\t', {})::{ty} AS {name}", i + 1))
                .collect();
            format!(
                "(SELECT {} FROM unnest(string_to_array($1, E'\\n')) AS l) AS r",
                picks.join(", ")
            )
        }
        Backend::Sqlite => {
            let picks: Vec<String> = columns
                .iter()
                .enumerate()
                .map(|(i, (name, ty))| {
                    let value = format!("json_extract(value, '$[{i}]')");
                    match *ty {
                        "text" => format!("{value} AS {name}"),
                        _ => format!("CAST({value} AS INTEGER) AS {name}"),
                    }
                })
                .collect();
            format!("(SELECT {} FROM json_each($1)) AS r", picks.join(", "))
        }
    }
}

/// Rows handed to one statement as a single text parameter, so a whole batch is one
/// set-based statement on both backends (expanded by [`rows_from`]). Postgres gets
/// tab-separated lines, split by `split_part`: about ten times cheaper per row than parsing
/// JSON, which made up a third of a 500-row insert. SQLite gets a JSON array of arrays for
/// `json_each`. Booleans are written with [`flag_text`].
#[derive(Debug)]
pub struct RowsParam {
    backend: Backend,
    text: String,
    rows: usize,
}

impl RowsParam {
    pub fn new(backend: Backend) -> Self {
        let text = match backend {
            Backend::Postgres => String::new(),
            Backend::Sqlite => "[".to_owned(),
        };
        Self {
            backend,
            text,
            rows: 0,
        }
    }

    /// Appends a row, its fields in the order of the columns given to [`rows_from`]. On
    /// Postgres a field cannot hold a tab or a line break (domain types keep control
    /// characters out), and a one-column row cannot be empty.
    pub fn push(&mut self, fields: &[&str]) -> anyhow::Result<()> {
        match self.backend {
            Backend::Postgres => {
                if let Some(bad) = fields.iter().find(|f| f.contains(['\t', '\n'])) {
                    anyhow::bail!("a batch field holds a tab or a line break: {bad:?}");
                }
                anyhow::ensure!(
                    fields.len() > 1 || fields.iter().any(|f| !f.is_empty()),
                    "an empty one-column row"
                );
                if self.rows > 0 {
                    self.text.push('\n');
                }
                self.text.push_str(&fields.join("\t"));
            }
            Backend::Sqlite => {
                if self.rows > 0 {
                    self.text.push(',');
                }
                self.text.push_str(&serde_json::to_string(fields)?);
            }
        }
        self.rows += 1;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The parameter's text.
    pub fn into_text(mut self) -> String {
        if self.backend == Backend::Sqlite {
            self.text.push(']');
        }
        self.text
    }
}

/// `<rows> JOIN <table> u ON <condition>`, for looking up each batch row by a key. On Postgres
/// it is a `LATERAL` subquery with `LIMIT 1`, which forces one index probe per row whatever
/// the statistics say: while an import fills a table, its statistics still describe it small,
/// and the planner's hash join over a full scan grows with the table. On SQLite it is a
/// `CROSS JOIN`, which SQLite never reorders: with a plain `JOIN` and a condition holding a
/// constant on the key's first column (`u.tenant_id = $2`), SQLite put the table outside (a
/// scan of the whole tenant) and `json_each` inside, so 1,000 ids against 30,000 users took
/// 33 s instead of 3 ms (issue 15).
pub fn probe_join(backend: Backend, rows: &str, table: &str, condition: &str) -> String {
    match backend {
        Backend::Postgres => format!(
            "{rows} CROSS JOIN LATERAL (SELECT * FROM {table} u WHERE {condition} LIMIT 1) u"
        ),
        Backend::Sqlite => format!("{rows} CROSS JOIN {table} u ON {condition}"),
    }
}

/// Encodes `rows` as one [`RowsParam`] text.
pub fn rows_text<'a, const N: usize>(
    backend: Backend,
    rows: impl IntoIterator<Item = [&'a str; N]>,
) -> anyhow::Result<String> {
    let mut param = RowsParam::new(backend);
    for row in rows {
        param.push(&row)?;
    }
    Ok(param.into_text())
}

/// How a boolean travels in a [`RowsParam`] (`'1'::boolean` in Postgres, `1` in SQLite).
pub fn flag_text(value: bool) -> &'static str {
    if value { "1" } else { "0" }
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

/// Reads a text column that holds one of a closed set of values (a status, a kind): text the
/// code does not know (a newer version's, a hand edit) is an error naming the column and the
/// value, never quietly some other value.
pub fn known<T>(
    row: &AnyRow,
    column: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T, sqlx::Error> {
    let text: String = row.try_get(column)?;
    parse(&text).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: format!("{text:?} is not a value this version knows").into(),
    })
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
    async fn text_a_closed_set_does_not_hold_is_an_error_naming_the_column_and_the_value() {
        let db = Database::connect("sqlite::memory:", 1).await.unwrap();
        let row = sqlx::query("SELECT 'done' AS status, 'teleported' AS kind")
            .fetch_one(db.pool())
            .await
            .unwrap();
        let parse = |text: &str| (text == "done").then_some(1);
        assert_eq!(known(&row, "status", parse).unwrap(), 1);
        let error = known(&row, "kind", parse).unwrap_err().to_string();
        assert!(
            error.contains("kind") && error.contains("\"teleported\""),
            "{error}"
        );
    }

    #[tokio::test]
    async fn rows_param_round_trips_through_sqlite() {
        let db = Database::connect("sqlite::memory:", 1).await.unwrap();
        let mut rows = RowsParam::new(Backend::Sqlite);
        rows.push(&["a\tb \"quoted\" Zoë", "7", flag_text(true)])
            .unwrap();
        rows.push(&["", "-1", flag_text(false)]).unwrap();
        let sql = format!(
            "SELECT r.s, r.n, r.b FROM {} ORDER BY r.n",
            rows_from(
                Backend::Sqlite,
                &[("s", "text"), ("n", "bigint"), ("b", "boolean")]
            )
        );
        let found = sqlx::query(AssertSqlSafe(sql))
            .bind(rows.into_text())
            .fetch_all(db.pool())
            .await
            .unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].try_get::<String, _>("s").unwrap(), "");
        assert_eq!(found[0].try_get::<i64, _>("n").unwrap(), -1);
        assert!(!flag(&found[0], "b").unwrap());
        assert_eq!(
            found[1].try_get::<String, _>("s").unwrap(),
            "a\tb \"quoted\" Zoë"
        );
        assert!(flag(&found[1], "b").unwrap());
    }

    #[test]
    fn postgres_rows_refuse_fields_with_tabs_or_line_breaks() {
        let mut rows = RowsParam::new(Backend::Postgres);
        rows.push(&["a", "b"]).unwrap();
        assert!(rows.push(&["a\tb", "c"]).is_err());
        assert!(rows.push(&["a", "b\nc"]).is_err());
        assert!(rows.push(&[""]).is_err());
        assert_eq!(rows.len(), 1);
        assert_eq!(rows.into_text(), "a\tb");
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
