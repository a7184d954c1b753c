//! Search indexes set aside while a tenant's first full round loads an empty mirror
//! (Postgres). Random inserts into the mirror's eight wide search indexes were most of a
//! first round's cost at 1M users; building each index once from the loaded table is a sort.
//! The definitions are kept in `directory_deferred_indexes`, written in the transaction that
//! drops the indexes, so whatever happens to the round they are built again: at the round's
//! end, or at the next start of the service.
//!
//! Before they are built, the loaded tables are rewritten in object-id order
//! ([`order_by_object_id`]), which is cheapest then, with no search index to rebuild.

use service_runtime::storage::Backend;
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe};

use crate::error::Error;

/// The mirror's secondary indexes on users: every index of `directory_users` that backs no
/// constraint (the primary key stays, for the upsert).
const SEARCH_INDEXES: &str = "SELECT c.relname::text AS name, pg_get_indexdef(i.indexrelid) AS definition \
     FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
     WHERE i.indrelid = 'directory_users'::regclass AND NOT i.indisprimary AND NOT i.indisunique";

/// Sets the search indexes aside when the mirror holds no user at all (a first load); true
/// when it did. Nothing on SQLite.
pub async fn set_aside_if_empty(conn: &mut AnyConnection, backend: Backend) -> Result<bool, Error> {
    if backend != Backend::Postgres {
        return Ok(false);
    }
    let mut tx = sqlx::Connection::begin(&mut *conn)
        .await
        .map_err(Error::internal("set the search indexes aside"))?;
    // The lock keeps a concurrent writer from adding users between the check and the drop.
    sqlx::query("LOCK TABLE directory_users IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .map_err(Error::internal("set the search indexes aside"))?;
    let empty: bool = sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM directory_users)")
        .fetch_one(&mut *tx)
        .await
        .map_err(Error::internal("set the search indexes aside"))?;
    if !empty {
        return Ok(false);
    }
    let indexes: Vec<(String, String)> =
        sqlx::query_as(SEARCH_INDEXES)
            .fetch_all(&mut *tx)
            .await
            .map_err(Error::internal("set the search indexes aside"))?;
    for (name, definition) in &indexes {
        sqlx::query(
            "INSERT INTO directory_deferred_indexes (name, definition) VALUES ($1, $2) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(definition)
        .execute(&mut *tx)
        .await
        .map_err(Error::internal("set the search indexes aside"))?;
        // The name comes from the catalog, quoted as an identifier.
        let drop = format!("DROP INDEX IF EXISTS \"{}\"", name.replace('"', "\"\""));
        sqlx::query(AssertSqlSafe(drop))
            .execute(&mut *tx)
            .await
            .map_err(Error::internal("set the search indexes aside"))?;
    }
    tx.commit()
        .await
        .map_err(Error::internal("set the search indexes aside"))?;
    Ok(!indexes.is_empty())
}

/// Begins a transaction with more sort memory than the server's default, for that
/// transaction only: an index of a million keys, or the not-imported rows of a million users,
/// sorts in memory (the mirror's wider rows still spill to disk).
async fn begin_with_sort_memory(
    conn: &mut AnyConnection,
) -> Result<sqlx::Transaction<'_, sqlx::Any>, sqlx::Error> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    sqlx::query("SET LOCAL maintenance_work_mem = '256MB'")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Rewrites the mirror and its not-imported table in object-id order after a first load
/// (Postgres; nothing on SQLite). The pages arrive in the directory's order, which is not the
/// object id's, while a batch import walks the tenant in object-id order: each of its chunks
/// read the mirror, and the marking of its users deleted from the not-imported table, a row
/// on a different page for nearly every user, which at 1M users (tables larger than the
/// server's buffers) was a buffer read, a dirtied page and often a full-page image per user.
/// In key order a chunk's rows share pages. `CLUSTER` locks the table while it rewrites it,
/// with only the primary keys and the not-imported name index to rebuild; a first load's
/// listings wait that long once. The two tables are rewritten at once, on two connections of
/// `pool`: each rewrite sorts in one process, so one alone leaves a core idle.
pub async fn order_by_object_id(pool: &AnyPool, backend: Backend) -> Result<(), Error> {
    if backend != Backend::Postgres {
        return Ok(());
    }
    let (users, not_imported) = tokio::join!(
        cluster(pool, "directory_users", "directory_users_pkey"),
        cluster(
            pool,
            "directory_not_imported",
            "directory_not_imported_pkey"
        ),
    );
    users
        .and(not_imported)
        .map_err(Error::internal("put the loaded mirror in order"))
}

/// Rewrites `table` in the order of its index `key`, on a connection of its own.
async fn cluster(pool: &AnyPool, table: &str, key: &str) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut tx = begin_with_sort_memory(&mut conn).await?;
    sqlx::query(AssertSqlSafe(format!("CLUSTER {table} USING {key}")))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Builds every index set aside and forgets its definition; answers how many. Each is built
/// and forgotten in one transaction, so a build cut short is redone whole.
pub async fn build_set_aside(conn: &mut AnyConnection, backend: Backend) -> Result<usize, Error> {
    if backend != Backend::Postgres {
        return Ok(0);
    }
    let pending: Vec<(String, String)> =
        sqlx::query_as("SELECT name, definition FROM directory_deferred_indexes ORDER BY name")
            .fetch_all(&mut *conn)
            .await
            .map_err(Error::internal("read the indexes set aside"))?;
    for (name, definition) in &pending {
        // The definition is the catalog's own (`pg_get_indexdef`), written by this service.
        let create = definition.replacen("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1);
        let mut tx = begin_with_sort_memory(conn)
            .await
            .map_err(Error::internal("build an index set aside"))?;
        sqlx::query(AssertSqlSafe(create))
            .execute(&mut *tx)
            .await
            .map_err(Error::internal("build an index set aside"))?;
        sqlx::query("DELETE FROM directory_deferred_indexes WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(Error::internal("build an index set aside"))?;
        tx.commit()
            .await
            .map_err(Error::internal("build an index set aside"))?;
    }
    Ok(pending.len())
}
