//! The delta cursor: where the next delta round starts.

use super::*;

/// The stored deltaLink of the directory, if a sync has established one.
pub async fn delta_link(
    conn: &mut AnyConnection,
    tenant_id: &str,
) -> Result<Option<String>, Error> {
    sqlx::query_scalar("SELECT delta_link FROM directory_sync_state WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_optional(conn)
        .await
        .map_err(Error::internal("read delta link"))
}

/// Stores the whole deltaLink, as Graph returned it.
pub async fn save_delta_link(
    conn: &mut AnyConnection,
    tenant_id: &str,
    link: &str,
    now_ms: i64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO directory_sync_state (tenant_id, delta_link, updated_at_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id) DO UPDATE SET delta_link = excluded.delta_link, updated_at_ms = excluded.updated_at_ms",
    )
    .bind(tenant_id)
    .bind(link)
    .bind(now_ms)
    .execute(conn)
    .await
    .map_err(Error::internal("save delta link"))?;
    Ok(())
}

/// Forgets the deltaLink (it expired): the next round is a full sync.
pub async fn clear_delta_link(conn: &mut AnyConnection, tenant_id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM directory_sync_state WHERE tenant_id = $1")
        .bind(tenant_id)
        .execute(conn)
        .await
        .map_err(Error::internal("clear delta link"))?;
    Ok(())
}
