//! The registry's tables (sqlx, Postgres or SQLite). Every function takes a connection so it
//! composes inside one transaction. Batches travel as one text parameter expanded by the
//! database (`service_runtime::storage::RowsParam`), so each batch is one set-based statement
//! on both backends.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use anyhow::Context as _;
use service_runtime::storage::{
    Backend, Dialects, Migrations, escape_like, flag, flag_text, known, probe_join, rows_from,
    rows_text,
};
use sqlx::any::AnyRow;
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, AssertSqlSafe, Row as _};

use crate::domain::{AccountType, Company, CompanyCode, RegistryUser};
use crate::error::Error;

pub mod audit;
pub mod bindings;
pub mod feed;
pub mod roles;

static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The registry's migrations for both backends.
pub static MIGRATIONS: Migrations = Migrations {
    postgres: &POSTGRES,
    sqlite: &SQLITE,
};

const USER_COLUMNS: &str = "u.tenant_id, u.object_id, u.user_id, u.network_alias, u.network_domain, \
     u.email, u.name, u.enabled, u.company, u.account_type, u.created_at_ms, u.updated_at_ms, \
     u.created_by_import, u.deleted_in_directory_at_ms";

fn user_from_row(row: &AnyRow) -> Result<RegistryUser, sqlx::Error> {
    Ok(RegistryUser {
        user_id: row.try_get("user_id")?,
        tenant_id: row.try_get("tenant_id")?,
        object_id: row.try_get("object_id")?,
        network_alias: row.try_get("network_alias")?,
        network_domain: row.try_get("network_domain")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        enabled: flag(row, "enabled")?,
        company: row.try_get("company")?,
        account_type: known(row, "account_type", |text| AccountType::parse(text).ok())?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        created_by_import: row.try_get("created_by_import")?,
        deleted_in_directory_at_ms: row
            .try_get::<Option<i64>, _>("deleted_in_directory_at_ms")?
            .unwrap_or(0),
    })
}

// ---------------------------------------------------------------------------------------------
// Companies

static LOCK_COMPANY: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| match backend {
        // Users reference their company without a foreign key (its per-row trigger costs a
        // fifth of a bulk insert); the row lock keeps the company from going away until the
        // import commits. SQLite's write transactions are serial, so a read is enough.
        Backend::Postgres => {
            "SELECT 1 AS one FROM companies WHERE code = $1 FOR KEY SHARE".to_owned()
        }
        Backend::Sqlite => "SELECT 1 AS one FROM companies WHERE code = $1".to_owned(),
    })
});

/// True when the company exists; in a transaction, it then stays until commit.
pub async fn lock_company(
    conn: &mut AnyConnection,
    backend: Backend,
    code: &CompanyCode,
) -> Result<bool, Error> {
    let found = sqlx::query(LOCK_COMPANY.get(backend))
        .bind(code.as_str())
        .fetch_optional(conn)
        .await
        .map_err(Error::internal("lock company"))?;
    Ok(found.is_some())
}

/// Every company, by code.
pub async fn list_companies(conn: &mut AnyConnection) -> Result<Vec<Company>, Error> {
    let rows = sqlx::query("SELECT code, name FROM companies ORDER BY code")
        .fetch_all(conn)
        .await
        .map_err(Error::internal("list companies"))?;
    rows.iter()
        .map(|row| {
            let code: String = row.try_get("code").context("company code")?;
            let name: String = row.try_get("name").context("company name")?;
            Company::parse(&code, &name)
        })
        .collect()
}

/// Inserts a company; `Error::CompanyExists` if the code is taken.
pub async fn insert_company(
    conn: &mut AnyConnection,
    company: &Company,
    now_ms: i64,
) -> Result<(), Error> {
    sqlx::query("INSERT INTO companies (code, name, created_at_ms) VALUES ($1, $2, $3)")
        .bind(company.code.as_str())
        .bind(&company.name)
        .bind(now_ms)
        .execute(conn)
        .await
        .map_err(|e| {
            if service_runtime::storage::is_unique_violation(&e) {
                Error::CompanyExists(company.code.to_string())
            } else {
                Error::internal("insert company")(e)
            }
        })?;
    Ok(())
}

/// Inserts a company unless one with its code exists (configured companies at start-up).
pub async fn ensure_company(
    conn: &mut AnyConnection,
    company: &Company,
    now_ms: i64,
) -> Result<(), Error> {
    sqlx::query("INSERT INTO companies (code, name, created_at_ms) VALUES ($1, $2, $3) ON CONFLICT (code) DO NOTHING")
        .bind(company.code.as_str())
        .bind(&company.name)
        .bind(now_ms)
        .execute(conn)
        .await
        .map_err(Error::internal("ensure company"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Import

/// A user row to insert, with the user id it claims.
#[derive(Debug)]
pub struct InsertRow<'a> {
    pub tenant_id: &'a str,
    pub object_id: &'a str,
    pub user_id: &'a str,
    pub user_key: &'a str,
    pub network_alias: &'a str,
    pub network_domain: &'a str,
    pub email: &'a str,
    pub name: &'a str,
    pub enabled: bool,
    pub account_type: &'a str,
}

/// Identity of a user within the registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    pub tenant_id: String,
    pub object_id: String,
}

static INSERT_USERS: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(
            backend,
            &[
                ("tenant_id", "text"),
                ("object_id", "text"),
                ("user_id", "text"),
                ("user_key", "text"),
                ("network_alias", "text"),
                ("network_domain", "text"),
                ("email", "text"),
                ("name", "text"),
                ("enabled", "boolean"),
                ("account_type", "text"),
            ],
        );
        // The caller has checked both keys in this transaction and claimed the user keys in
        // this process; a row that still clashes (another replica's import won a race) fails
        // the statement with a unique violation, and the caller runs the transaction again.
        format!(
            "INSERT INTO users (tenant_id, object_id, user_id, user_key, network_alias, \
             network_domain, email, name, enabled, company, account_type, created_at_ms, \
             updated_at_ms, created_by_import, feed_seq) \
             SELECT r.tenant_id, r.object_id, r.user_id, r.user_key, r.network_alias, \
             r.network_domain, r.email, r.name, r.enabled, $2, r.account_type, $3, $3, $4, \
             {feed_seq} \
             FROM {rows}",
            feed_seq = feed::transaction_number(backend)
        )
    })
});

/// Inserts new users in one statement, all or none: a user whose identity or user key is
/// taken fails it with a unique violation. Each is in the import feed under this
/// transaction's number ([`feed::number_transaction`] first).
pub async fn insert_users(
    conn: &mut AnyConnection,
    backend: Backend,
    rows: &[InsertRow<'_>],
    company: &CompanyCode,
    import_id: &str,
    now_ms: i64,
) -> Result<(), Error> {
    let param = rows_text(
        backend,
        rows.iter().map(|r| {
            [
                r.tenant_id,
                r.object_id,
                r.user_id,
                r.user_key,
                r.network_alias,
                r.network_domain,
                r.email,
                r.name,
                flag_text(r.enabled),
                r.account_type,
            ]
        }),
    )
    .context("encode user rows")?;
    let inserted = sqlx::query(INSERT_USERS.get(backend))
        .bind(param)
        .bind(company.as_str())
        .bind(now_ms)
        .bind(import_id)
        .execute(conn)
        .await
        .map_err(Error::internal("insert users"))?;
    if inserted.rows_affected() != rows.len() as u64 {
        return Err(Error::Internal(anyhow::anyhow!(
            "inserted {} of {} users",
            inserted.rows_affected(),
            rows.len()
        )));
    }
    Ok(())
}

static PROBE: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(
            backend,
            &[
                ("tenant_id", "text"),
                ("object_id", "text"),
                ("key", "text"),
            ],
        );
        let by_object = probe_join(
            backend,
            &rows,
            "users",
            "u.tenant_id = r.tenant_id AND u.object_id = r.object_id",
        );
        let by_key = probe_join(backend, &rows, "users", "u.user_key = r.key");
        format!(
            "SELECT 'object' AS hit, {USER_COLUMNS} FROM {by_object} \
             UNION ALL SELECT 'key' AS hit, {USER_COLUMNS} FROM {by_key}"
        )
    })
});

/// What the registry already holds for a batch: the users with these identities, and which
/// of these user keys are taken.
#[derive(Debug, Default)]
pub struct Probe {
    pub existing: HashMap<ObjectKey, RegistryUser>,
    pub taken_keys: HashSet<String>,
}

/// Looks a batch up by identity and by wanted user key in one statement: one row per
/// `(tenant_id, object_id, user_key)`.
pub async fn probe(
    conn: &mut AnyConnection,
    backend: Backend,
    rows: &[(&str, &str, &str)],
) -> Result<Probe, Error> {
    let mut result = Probe::default();
    if rows.is_empty() {
        return Ok(result);
    }
    let param = rows_text(
        backend,
        rows.iter()
            .map(|(tenant, object, key)| [*tenant, *object, *key]),
    )
    .context("encode probe")?;
    let found = sqlx::query(PROBE.get(backend))
        .bind(param)
        .fetch_all(conn)
        .await
        .map_err(Error::internal("probe users"))?;
    for row in &found {
        let hit: String = row.try_get("hit").map_err(Error::internal("read probe"))?;
        let user = user_from_row(row).map_err(Error::internal("read probe"))?;
        if hit == "key" {
            result
                .taken_keys
                .insert(crate::domain::user_id::user_key(&user.user_id));
        } else {
            let key = ObjectKey {
                tenant_id: user.tenant_id.clone(),
                object_id: user.object_id.clone(),
            };
            result.existing.insert(key, user);
        }
    }
    Ok(result)
}

static RESERVE_SUFFIXES: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(backend, &[("base", "text"), ("n", "bigint")]);
        // next_suffix is the next number to hand out; a family starts at 2 (the base itself is
        // number 1). Each reservation of n numbers moves it by n. ORDER BY base touches the
        // counter rows in one order everywhere.
        format!(
            "INSERT INTO user_id_families (base, next_suffix) \
             SELECT r.base, 2 + r.n FROM {rows} WHERE true ORDER BY r.base \
             ON CONFLICT (base) DO UPDATE \
             SET next_suffix = user_id_families.next_suffix + excluded.next_suffix - 2 \
             RETURNING base, next_suffix"
        )
    })
});

/// Reserves a block of `n` suffix numbers for each base and returns, per base, the first
/// number of its block. Counters are rows, so no two reservations overlap.
pub async fn reserve_suffixes(
    conn: &mut AnyConnection,
    backend: Backend,
    blocks: &[(String, u64)],
) -> Result<HashMap<String, u64>, Error> {
    let sizes: Vec<String> = blocks.iter().map(|(_, n)| n.to_string()).collect();
    let param = rows_text(
        backend,
        blocks
            .iter()
            .zip(&sizes)
            .map(|((base, _), n)| [base.as_str(), n.as_str()]),
    )
    .context("encode blocks")?;
    let returned = sqlx::query(RESERVE_SUFFIXES.get(backend))
        .bind(param)
        .fetch_all(conn)
        .await
        .map_err(Error::internal("reserve user id suffixes"))?;
    let sizes: HashMap<&str, u64> = blocks.iter().map(|(base, n)| (base.as_str(), *n)).collect();
    let mut starts = HashMap::with_capacity(returned.len());
    for row in &returned {
        let base: String = row
            .try_get("base")
            .map_err(Error::internal("read reservation"))?;
        let next: i64 = row
            .try_get("next_suffix")
            .map_err(Error::internal("read reservation"))?;
        let next = u64::try_from(next).context("negative suffix counter")?;
        let size = sizes.get(base.as_str()).copied().unwrap_or(0);
        starts.insert(base, next - size);
    }
    Ok(starts)
}

static TAKEN_KEYS: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(backend, &[("key", "text")]);
        format!(
            "SELECT u.user_key FROM {}",
            probe_join(backend, &rows, "users", "u.user_key = r.key")
        )
    })
});

/// The user keys among `keys` that a user holds, in one statement.
pub async fn taken_user_keys(
    conn: &mut AnyConnection,
    backend: Backend,
    keys: &[String],
) -> Result<HashSet<String>, Error> {
    if keys.is_empty() {
        return Ok(HashSet::new());
    }
    let param = rows_text(backend, keys.iter().map(|key| [key.as_str()])).context("encode keys")?;
    let returned = sqlx::query(TAKEN_KEYS.get(backend))
        .bind(param)
        .fetch_all(conn)
        .await
        .map_err(Error::internal("look up taken user ids"))?;
    returned
        .iter()
        .map(|row| row.try_get("user_key"))
        .collect::<Result<_, _>>()
        .map_err(Error::internal("read taken user ids"))
}

static IMPORTED_OBJECT_IDS: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(backend, &[("object_id", "text")]);
        let probe = probe_join(
            backend,
            &rows,
            "users",
            "u.tenant_id = $2 AND u.object_id = r.object_id",
        );
        format!("SELECT u.object_id FROM {probe}")
    })
});

/// The object ids among `object_ids` that the registry holds for `tenant_id`.
pub async fn imported_object_ids(
    conn: &mut AnyConnection,
    backend: Backend,
    tenant_id: &str,
    object_ids: &[String],
) -> Result<Vec<String>, Error> {
    let param = rows_text(backend, object_ids.iter().map(|id| [id.as_str()]))
        .context("encode object ids")?;
    let rows = sqlx::query(IMPORTED_OBJECT_IDS.get(backend))
        .bind(param)
        .bind(tenant_id)
        .fetch_all(conn)
        .await
        .map_err(Error::internal("check imported"))?;
    rows.iter()
        .map(|row| row.try_get("object_id"))
        .collect::<Result<_, _>>()
        .map_err(Error::internal("read object ids"))
}

// ---------------------------------------------------------------------------------------------
// Directory changes

static USERS_BY_OBJECT: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(backend, &[("tenant_id", "text"), ("object_id", "text")]);
        let probe = probe_join(
            backend,
            &rows,
            "users",
            "u.tenant_id = r.tenant_id AND u.object_id = r.object_id",
        );
        format!("SELECT {USER_COLUMNS} FROM {probe}")
    })
});

/// The users with these identities, in one statement (unknown ones are absent).
pub async fn users_by_object(
    conn: &mut AnyConnection,
    backend: Backend,
    keys: &[ObjectKey],
) -> Result<HashMap<ObjectKey, RegistryUser>, Error> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let param = rows_text(
        backend,
        keys.iter()
            .map(|k| [k.tenant_id.as_str(), k.object_id.as_str()]),
    )
    .context("encode identities")?;
    let rows = sqlx::query(USERS_BY_OBJECT.get(backend))
        .bind(param)
        .fetch_all(conn)
        .await
        .map_err(Error::internal("read users"))?;
    let mut found = HashMap::with_capacity(rows.len());
    for row in &rows {
        let user = user_from_row(row).map_err(Error::internal("read users"))?;
        let key = ObjectKey {
            tenant_id: user.tenant_id.clone(),
            object_id: user.object_id.clone(),
        };
        found.insert(key, user);
    }
    Ok(found)
}

static APPLY_UPDATES: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(
            backend,
            &[
                ("tenant_id", "text"),
                ("object_id", "text"),
                ("name", "text"),
                ("network_alias", "text"),
                ("enabled", "boolean"),
                ("deleted_at_ms", "bigint"),
            ],
        );
        // The mail address follows the alias only where it was the alias (members' UPN).
        format!(
            "UPDATE users SET name = r.name, \
             email = CASE WHEN users.email = users.network_alias THEN r.network_alias ELSE users.email END, \
             network_alias = r.network_alias, enabled = r.enabled, updated_at_ms = $2, \
             deleted_in_directory_at_ms = NULLIF(r.deleted_at_ms, 0) \
             FROM {rows} WHERE users.tenant_id = r.tenant_id AND users.object_id = r.object_id"
        )
    })
});

/// Deletes users (and their grants, whatever their source) in two statements.
pub async fn delete_users(
    conn: &mut AnyConnection,
    backend: Backend,
    keys: &[ObjectKey],
) -> Result<(), Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let param = rows_text(
        backend,
        keys.iter()
            .map(|k| [k.tenant_id.as_str(), k.object_id.as_str()]),
    )
    .context("encode deletions")?;
    // Grants first: they refer to the users.
    for statement in [&DELETE_USERS_GRANTS, &DELETE_USERS] {
        sqlx::query(statement.get(backend))
            .bind(&param)
            .execute(&mut *conn)
            .await
            .map_err(Error::internal("delete users"))?;
    }
    Ok(())
}

/// `DELETE FROM table` for the rows of the (tenant, object id) batch parameter.
/// SQLite takes the row-value `IN`, which it answers with one key probe per row; its
/// correlated `EXISTS` scanned the whole table and the batch for every row (issue 15).
fn delete_by_identity(backend: Backend, table: &str) -> String {
    let rows = rows_from(backend, &[("tenant_id", "text"), ("object_id", "text")]);
    match backend {
        Backend::Postgres => format!(
            "DELETE FROM {table} WHERE EXISTS (SELECT 1 FROM {rows} \
             WHERE r.tenant_id = {table}.tenant_id AND r.object_id = {table}.object_id)"
        ),
        Backend::Sqlite => format!(
            "DELETE FROM {table} WHERE (tenant_id, object_id) IN \
             (SELECT r.tenant_id, r.object_id FROM {rows})"
        ),
    }
}

static DELETE_USERS_GRANTS: LazyLock<Dialects> =
    LazyLock::new(|| Dialects::new(|backend| delete_by_identity(backend, "role_assignments")));
static DELETE_USERS: LazyLock<Dialects> =
    LazyLock::new(|| Dialects::new(|backend| delete_by_identity(backend, "users")));

/// How many users the registry holds.
pub async fn count_users(conn: &mut AnyConnection) -> Result<u64, Error> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(conn)
        .await
        .map_err(Error::internal("count users"))?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// A user's new directory attributes (all of them, as they are to be).
#[derive(Debug)]
pub struct UpdateRow<'a> {
    pub tenant_id: &'a str,
    pub object_id: &'a str,
    pub name: &'a str,
    pub network_alias: &'a str,
    pub enabled: bool,
    /// 0: not deleted in the directory.
    pub deleted_at_ms: i64,
}

/// Writes the new attributes of users in one statement.
pub async fn apply_updates(
    conn: &mut AnyConnection,
    backend: Backend,
    rows: &[UpdateRow<'_>],
    now_ms: i64,
) -> Result<(), Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let deleted: Vec<String> = rows.iter().map(|r| r.deleted_at_ms.to_string()).collect();
    let param = rows_text(
        backend,
        rows.iter().zip(&deleted).map(|(r, deleted)| {
            [
                r.tenant_id,
                r.object_id,
                r.name,
                r.network_alias,
                flag_text(r.enabled),
                deleted.as_str(),
            ]
        }),
    )
    .context("encode updates")?;
    sqlx::query(APPLY_UPDATES.get(backend))
        .bind(param)
        .bind(now_ms)
        .execute(conn)
        .await
        .map_err(Error::internal("update users"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reading users

/// The user with this user id (case-insensitive).
pub async fn user_by_user_id(
    conn: &mut AnyConnection,
    user_id: &str,
) -> Result<Option<RegistryUser>, Error> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.user_key = $1");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(crate::domain::user_id::user_key(user_id))
        .fetch_optional(conn)
        .await
        .map_err(Error::internal("get user"))?;
    row.as_ref()
        .map(user_from_row)
        .transpose()
        .map_err(Error::internal("read user"))
}

/// The user with this directory identity.
pub async fn user_by_object(
    conn: &mut AnyConnection,
    key: &ObjectKey,
) -> Result<Option<RegistryUser>, Error> {
    let sql =
        format!("SELECT {USER_COLUMNS} FROM users u WHERE u.tenant_id = $1 AND u.object_id = $2");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(&key.tenant_id)
        .bind(&key.object_id)
        .fetch_optional(conn)
        .await
        .map_err(Error::internal("get user"))?;
    row.as_ref()
        .map(user_from_row)
        .transpose()
        .map_err(Error::internal("read user"))
}

/// Filters of a user listing; empty strings and `None` mean "any".
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// Lower-case prefix of user id, name or alias.
    pub search: String,
    pub company: Option<CompanyCode>,
    pub enabled: Option<bool>,
    pub account_type: Option<AccountType>,
    pub created_by_import: String,
    /// Only users holding no role.
    pub without_roles: bool,
}

/// One page of users ordered by user key, starting after `after_key`.
pub async fn list_users(
    conn: &mut AnyConnection,
    filter: &UserFilter,
    after_key: &str,
    limit: u32,
) -> Result<Vec<RegistryUser>, Error> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM users u \
         WHERE u.user_key > $1 \
         AND ($2 = '' OR u.user_key LIKE $3 ESCAPE '\\' OR lower(u.name) LIKE $3 ESCAPE '\\' \
              OR lower(u.network_alias) LIKE $3 ESCAPE '\\') \
         AND ($4 = '' OR u.company = $4) \
         AND ($5 = -1 OR u.enabled = ($5 = 1)) \
         AND ($6 = '' OR u.account_type = $6) \
         AND ($7 = '' OR u.created_by_import = $7) \
         AND ($9 = 0 OR NOT EXISTS (SELECT 1 FROM role_assignments a \
              WHERE a.tenant_id = u.tenant_id AND a.object_id = u.object_id)) \
         ORDER BY u.user_key LIMIT $8"
    );
    let search = filter.search.to_lowercase();
    let pattern = format!("{}%", escape_like(&search));
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(after_key)
        .bind(search.clone())
        .bind(pattern)
        .bind(
            filter
                .company
                .as_ref()
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default(),
        )
        .bind(filter.enabled.map_or(-1_i64, i64::from))
        .bind(filter.account_type.map(|t| t.as_str()).unwrap_or_default())
        .bind(&filter.created_by_import)
        .bind(i64::from(limit))
        .bind(i64::from(filter.without_roles))
        .fetch_all(conn)
        .await
        .map_err(Error::internal("list users"))?;
    rows.iter()
        .map(user_from_row)
        .collect::<Result<_, _>>()
        .map_err(Error::internal("read users"))
}
