//! The audit trail's table. Events are inserted inside the transaction of their change.

use std::sync::LazyLock;

use anyhow::Context as _;
use service_runtime::storage::{Backend, Dialects, RowsParam, rows_from};
use sqlx::{AnyConnection, AssertSqlSafe, Row as _};

use crate::domain::audit::{Action, AuditEvent};
use crate::error::Error;

/// One event to record: the user it is about and what changed.
#[derive(Debug)]
pub struct NewEvent {
    pub action: Action,
    pub tenant_id: String,
    pub object_id: String,
    pub user_id: String,
    /// The changed fields, as JSON.
    pub detail: String,
}

/// Who made a set of changes, when, and through which job, sync run or request.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The person the change is for.
    pub actor: &'a str,
    /// The service identity acting for `actor`, or `''`.
    pub service: &'a str,
    pub via: &'a str,
    pub at_ms: i64,
}

static INSERT_EVENTS: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(
            backend,
            &[
                ("action", "text"),
                ("tenant_id", "text"),
                ("object_id", "text"),
                ("user_id", "text"),
                ("detail", "text"),
            ],
        );
        format!(
            "INSERT INTO audit_events (at_ms, actor, action, tenant_id, object_id, user_id, via, detail, service) \
             SELECT $2, $3, r.action, r.tenant_id, r.object_id, r.user_id, $4, r.detail, $5 FROM {rows}"
        )
    })
});

/// Records events in one statement (nothing when there are none).
pub async fn record(
    conn: &mut AnyConnection,
    backend: Backend,
    origin: Origin<'_>,
    events: &[NewEvent],
) -> Result<(), Error> {
    if events.is_empty() {
        return Ok(());
    }
    let mut param = RowsParam::new(backend);
    for e in events {
        param
            .push(&[
                e.action.as_str(),
                &e.tenant_id,
                &e.object_id,
                &e.user_id,
                &e.detail,
            ])
            .context("encode audit events")?;
    }
    sqlx::query(INSERT_EVENTS.get(backend))
        .bind(param.into_text())
        .bind(origin.at_ms)
        .bind(origin.actor)
        .bind(origin.via)
        .bind(origin.service)
        .execute(conn)
        .await
        .map_err(Error::internal("record audit events"))?;
    Ok(())
}

/// Filters of an audit listing; empty means "any".
#[derive(Debug, Default)]
pub struct EventFilter {
    /// Events of this user: by its directory identity when it exists (so events from before
    /// a rename are found too), else by the user id the events were written with.
    pub user: Option<UserMatch>,
    pub action: Option<Action>,
    pub via: String,
}

/// How events are matched to a user.
#[derive(Debug)]
pub enum UserMatch {
    Object {
        tenant_id: String,
        object_id: String,
    },
    UserId(String),
}

/// One page of events, newest first, with event ids below `before` (0: from the newest).
pub async fn list(
    conn: &mut AnyConnection,
    filter: &EventFilter,
    before: i64,
    limit: u32,
) -> Result<Vec<AuditEvent>, Error> {
    let user_condition = match &filter.user {
        None => "$4 = '' AND $5 = ''",
        Some(UserMatch::Object { .. }) => "tenant_id = $4 AND object_id = $5",
        Some(UserMatch::UserId(_)) => "lower(user_id) = $4 AND $5 = ''",
    };
    let (first, second) = match &filter.user {
        None => (String::new(), String::new()),
        Some(UserMatch::Object {
            tenant_id,
            object_id,
        }) => (tenant_id.clone(), object_id.clone()),
        Some(UserMatch::UserId(user_id)) => (user_id.to_lowercase(), String::new()),
    };
    let sql = format!(
        "SELECT event_id, at_ms, actor, action, user_id, via, detail, service FROM audit_events \
         WHERE ($1 = 0 OR event_id < $1) AND ($2 = '' OR action = $2) AND ($3 = '' OR via = $3) \
         AND {user_condition} ORDER BY event_id DESC LIMIT $6"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(before)
        .bind(filter.action.map(Action::as_str).unwrap_or_default())
        .bind(&filter.via)
        .bind(first)
        .bind(second)
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await
        .map_err(Error::internal("list audit events"))?;
    rows.iter()
        .map(|row| {
            Ok(AuditEvent {
                event_id: row.try_get("event_id")?,
                at_ms: row.try_get("at_ms")?,
                actor: row.try_get("actor")?,
                action: row.try_get("action")?,
                user_id: row.try_get("user_id")?,
                via: row.try_get("via")?,
                detail: row.try_get("detail")?,
                service: row.try_get("service")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Error::internal("read audit events"))
}
