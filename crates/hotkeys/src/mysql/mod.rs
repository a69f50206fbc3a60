//! The product catalogue in MySQL/MariaDB: connection pool, embedded migrations, deterministic
//! seeding, and loading rows as the JSON values the cache holds.
//!
//! | item | owns |
//! |---|---|
//! | [`connect`] | a pool from `[mysql]`, after one probe connection that fails fast and clearly |
//! | [`connect_limited`] / [`Limits`] | the same, with a connection budget and every statement and lock wait bounded |
//! | [`migrate`] | the migrations of `migrations/` at the repository root, embedded at build time |
//! | [`seed`] | `products` rows `1..=n` computed from `(id, seed)` alone ([`SeedProduct`]) |
//! | [`RowQuery`] | the configured `mysql.query`, validated before it is ever sent |
//! | [`RowLoader`] / [`load_rows`] | `WHERE id IN (…)` in batches, rows encoded as JSON objects |
//!
//! Row values are JSON objects with one member per selected column, in select order, under
//! the column's name (its alias if it has one). How each column type is written:
//!
//! | MySQL type | JSON |
//! |---|---|
//! | integer types, `YEAR`, `BIT` | number (`BIGINT UNSIGNED` up to 2^64-1) |
//! | `FLOAT`, `DOUBLE` | number (shortest text that reads back to the same float) |
//! | `DECIMAL` | **string**, exactly as the server prints it (`"19.90"`): scale is kept and no float rounding happens in a consumer |
//! | `TIMESTAMP` | RFC 3339 string in UTC, milliseconds (`"2024-05-01T12:00:00.250Z"`; six digits when the value has sub-millisecond digits) |
//! | `DATETIME` | the same without the `Z`: MySQL stores no zone for it |
//! | `DATE`, `TIME` | `"2024-05-01"`, `"-838:59:59.000"` (fraction as for `TIMESTAMP`) |
//! | `JSON` (MySQL 8), or a MariaDB column with a `json_valid()` check (how MariaDB stores `JSON`) | the document itself, nested |
//! | character types, `ENUM`, `SET` | string |
//! | binary types | string if valid UTF-8, else the row cannot be encoded |
//! | `NULL` (and MySQL's zero dates) | `null` |
//!
//! A row that cannot be encoded (invalid UTF-8, a JSON column holding something that is not
//! JSON) is reported in [`Loaded::unencodable`] and left out; the others proceed.

mod encode;
mod load;
mod query;
mod seed;

use std::sync::LazyLock;
use std::time::Duration;

use sqlx::Connection;
use sqlx::SqlStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPoolOptions};

use crate::config::MysqlConfig;

pub use encode::{RowFailure, RowJson};
pub use load::{Loaded, RowLoader, load_rows};
pub use query::RowQuery;
pub use seed::{SeedProduct, SeedReport, seed};

/// A pool of connections to the catalogue database.
pub type Pool = sqlx::MySqlPool;

/// What went wrong with the database, told apart where callers act differently: retry
/// ([`MysqlError::is_unreachable`]), fix the configuration, or give up.
#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    #[error("mysql.url: {0}")]
    BadUrl(String),
    #[error("mysql.query: {0}")]
    BadQuery(String),
    #[error("MySQL at {target} is unreachable: {source}")]
    Unreachable { target: String, source: sqlx::Error },
    #[error("MySQL at {target} did not answer within {timeout:?}")]
    Timeout { target: String, timeout: Duration },
    /// The server answered but refused us: wrong password, unknown database, no privilege.
    #[error("MySQL at {target} refused the connection: {source}")]
    Rejected { target: String, source: sqlx::Error },
    /// Another process held the named lock that serialises migrations or seeds.
    #[error("another process held the MySQL lock `{lock}…` for {wait:?}")]
    LockBusy { lock: &'static str, wait: Duration },
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A statement failed; `what` says which one.
    #[error("{what}: {source}")]
    Query {
        what: &'static str,
        source: sqlx::Error,
    },
}

impl MysqlError {
    /// True when waiting and retrying may help: the server is down, restarting or overloaded.
    pub fn is_unreachable(&self) -> bool {
        match self {
            MysqlError::Unreachable { .. } | MysqlError::Timeout { .. } => true,
            MysqlError::Query { source, .. } => is_transient(source),
            _ => false,
        }
    }

    fn query(what: &'static str, source: sqlx::Error) -> MysqlError {
        MysqlError::Query { what, source }
    }
}

/// Errors that say nothing about the statement itself, only about the server or the link.
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            // too many connections, server shutdown, lock wait timeout, deadlock,
            // connection killed, query interrupted
            Some("1040" | "1053" | "1205" | "1213" | "1927" | "1317")
        ),
        _ => false,
    }
}

/// `host:port/database` of a URL, for messages: never the password.
pub fn target(opts: &MySqlConnectOptions) -> String {
    match opts.get_socket() {
        Some(socket) => format!("{}/{}", socket.display(), opts.get_database().unwrap_or("")),
        None => format!(
            "{}:{}/{}",
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap_or("")
        ),
    }
}

/// Parses `mysql.url`.
pub fn options(url: &str) -> Result<MySqlConnectOptions, MysqlError> {
    if !(url.starts_with("mysql://") || url.starts_with("mariadb://")) {
        return Err(MysqlError::BadUrl(
            "expected mysql://user:password@host:port/database".into(),
        ));
    }
    url.parse::<MySqlConnectOptions>()
        .map_err(|e| MysqlError::BadUrl(format!("cannot parse the URL: {e}")))
}

/// Opens a pool of `mysql.pool` connections, with the password of `mysql.password_env` when
/// that variable is set. One connection is made first, within
/// `connect_timeout`, so that an unreachable server or a refused login is reported now, with
/// its real cause, rather than as a pool timeout at the first query.
pub async fn connect(cfg: &MysqlConfig, connect_timeout: Duration) -> Result<Pool, MysqlError> {
    let opts = probe(cfg, connect_timeout).await?;
    Ok(MySqlPoolOptions::new()
        .max_connections(cfg.pool.max(1))
        .min_connections(0)
        .acquire_timeout(connect_timeout)
        .connect_lazy_with(opts))
}

/// Bounds of a pool whose every statement must end in bounded time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections of the pool.
    pub connections: u32,
    /// How long a caller waits for a free connection.
    pub acquire: Duration,
    /// The longest run of one statement: MariaDB's `max_statement_time` (MySQL's
    /// `max_execution_time`, which bounds only `SELECT`).
    pub statement: Duration,
    /// The longest wait for a table or row lock (`lock_wait_timeout`,
    /// `innodb_lock_wait_timeout`, whole seconds, at least 1). The servers' defaults are a
    /// day and 50 s: an `INSERT` under another session's `LOCK TABLES … WRITE` would wait
    /// that long.
    pub lock_wait: Duration,
}

/// A pool like [`connect`]'s, of `limits.connections` connections whose sessions carry
/// `limits`' statement and lock-wait bounds.
pub async fn connect_limited(
    cfg: &MysqlConfig,
    connect_timeout: Duration,
    limits: Limits,
) -> Result<Pool, MysqlError> {
    let opts = probe(cfg, connect_timeout).await?;
    let lock_wait = limits.lock_wait.as_secs().max(1);
    let statement = limits.statement.as_secs_f64();
    let mariadb = format!(
        "SET SESSION max_statement_time = {statement:.3}, lock_wait_timeout = {lock_wait}, \
         innodb_lock_wait_timeout = {lock_wait}"
    );
    let mysql = format!(
        "SET SESSION max_execution_time = {}, lock_wait_timeout = {lock_wait}, \
         innodb_lock_wait_timeout = {lock_wait}",
        limits.statement.as_millis()
    );
    Ok(MySqlPoolOptions::new()
        .max_connections(limits.connections.max(1))
        .min_connections(0)
        .acquire_timeout(limits.acquire)
        .after_connect(move |conn, _| {
            let (mariadb, mysql) = (mariadb.clone(), mysql.clone());
            Box::pin(async move {
                use sqlx::Executor;
                // MariaDB first; MySQL knows neither `max_statement_time` nor the reverse.
                if conn.execute(sqlx::AssertSqlSafe(mariadb)).await.is_err() {
                    conn.execute(sqlx::AssertSqlSafe(mysql)).await?;
                }
                Ok(())
            })
        })
        .connect_lazy_with(opts))
}

/// The connect options of `cfg`, after one connection made within `connect_timeout`.
async fn probe(
    cfg: &MysqlConfig,
    connect_timeout: Duration,
) -> Result<MySqlConnectOptions, MysqlError> {
    let mut opts = options(&cfg.url)?;
    if let Some(password) = cfg.password_from_env() {
        opts = opts.password(&password);
    }
    let target = target(&opts);
    match tokio::time::timeout(connect_timeout, MySqlConnection::connect_with(&opts)).await {
        Err(_) => {
            return Err(MysqlError::Timeout {
                target,
                timeout: connect_timeout,
            });
        }
        Ok(Err(source)) => {
            return Err(if matches!(source, sqlx::Error::Database(_)) {
                MysqlError::Rejected { target, source }
            } else {
                MysqlError::Unreachable { target, source }
            });
        }
        Ok(Ok(probe)) => {
            // Closing politely is a nicety; a failure here changes nothing for the pool.
            let _ = probe.close().await;
        }
    }
    Ok(opts)
}

/// The migrations of `migrations/`, compiled in (listed by `build.rs`): what
/// `sqlx::migrate!("../../migrations")` would build, without sqlx's proc macros.
pub static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    const EMBEDDED: &[(i64, &str, MigrationType, &str)] =
        include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
    Migrator::with_migrations(
        EMBEDDED
            .iter()
            .map(|&(version, description, kind, sql)| {
                // As sqlx reads a migration file: the checksum is of the whole text.
                let no_tx = sql.starts_with("-- no-transaction");
                Migration::new(
                    version,
                    description.into(),
                    kind,
                    SqlStr::from_static(sql),
                    no_tx,
                )
            })
            .collect(),
    )
});

/// Applies the migrations not applied yet and answers which ones it applied (version and
/// description). Safe to run from several processes at once.
pub async fn migrate(pool: &Pool) -> Result<Vec<(i64, String)>, MysqlError> {
    // sqlx locks with `GET_LOCK(name, -1)`, which MariaDB refuses (warning 1411, NULL, no
    // lock), so two migrators would both insert the same version.
    with_named_lock(pool, "hotkeys.migrate.", Duration::from_secs(300), async {
        let mut conn = pool
            .acquire()
            .await
            .map_err(|e| MysqlError::query("migrations: connecting", e))?;
        let before = applied_versions(&mut conn).await;
        // `run_direct` is `run` on a plain connection; `run` through `Acquire` makes a future
        // the compiler cannot prove `Send`, so callers could not spawn it.
        MIGRATOR.run_direct(None, &mut *conn, false).await?;
        Ok(MIGRATOR
            .iter()
            .filter(|m| !m.migration_type.is_down_migration() && !before.contains(&m.version))
            .map(|m| (m.version, m.description.to_string()))
            .collect())
    })
    .await
}

/// Runs `work` while this process holds the MySQL named lock `prefix` + MD5 of the database
/// (`GET_LOCK`, at most 64 characters), waiting up to `wait` for another holder. The lock
/// lives on a connection of its own so `work` can use every connection of the pool, and
/// closing that connection releases it even when the release statement is lost.
async fn with_named_lock<T>(
    pool: &Pool,
    prefix: &'static str,
    wait: Duration,
    work: impl Future<Output = Result<T, MysqlError>>,
) -> Result<T, MysqlError> {
    const NAME: &str = "CONCAT(?, MD5(DATABASE()))";
    let mut conn = MySqlConnection::connect_with(&pool.connect_options())
        .await
        .map_err(|e| MysqlError::query("connecting for a named lock", e))?;
    let locked: Option<i64> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT GET_LOCK({NAME}, ?)")))
            .bind(prefix)
            .bind(wait.as_secs())
            .fetch_one(&mut conn)
            .await
            .map_err(|e| MysqlError::query("taking a named lock", e))?;
    if locked != Some(1) {
        let _ = conn.close().await;
        return Err(MysqlError::LockBusy { lock: prefix, wait });
    }
    let result = work.await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DO RELEASE_LOCK({NAME})")))
        .bind(prefix)
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    result
}

/// Versions already applied; empty when the bookkeeping table does not exist yet.
async fn applied_versions(conn: &mut sqlx::pool::PoolConnection<sqlx::MySql>) -> Vec<i64> {
    sqlx::query_scalar::<_, i64>("SELECT version FROM _sqlx_migrations WHERE success = 1")
        .fetch_all(&mut **conn)
        .await
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_never_shows_the_password() {
        let opts = options("mysql://u:secret@db.example:3307/shop").unwrap();
        assert_eq!(target(&opts), "db.example:3307/shop");
    }

    #[test]
    fn bad_url_is_a_configuration_error() {
        let err = options("postgres://x").unwrap_err();
        assert!(matches!(err, MysqlError::BadUrl(_)), "{err}");
        assert!(!err.is_unreachable());
    }

    #[test]
    fn migrations_are_embedded() {
        assert!(
            MIGRATOR.iter().any(|m| m.description.contains("products")),
            "migrations/ should create the products table"
        );
    }

    /// The embedded list is what sqlx itself resolves from the directory (as `migrate!` did):
    /// same versions, descriptions, types, transaction mode and checksums, so databases
    /// migrated by earlier builds see no changed migration.
    #[tokio::test]
    async fn embedded_migrations_match_what_sqlx_resolves() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
        let resolved = Migrator::new(dir.as_path()).await.unwrap();
        let key = |m: &Migration| {
            (
                m.version,
                m.description.to_string(),
                m.migration_type,
                m.no_tx,
                m.checksum.to_vec(),
                m.sql.as_str().to_string(),
            )
        };
        let embedded: Vec<_> = MIGRATOR.iter().map(key).collect();
        let expected: Vec<_> = resolved.iter().map(key).collect();
        assert!(!embedded.is_empty());
        assert_eq!(embedded, expected);
    }
}
