//! `hotctl db` and the catalogue library behind it, against the stack's real MariaDB/MySQL.
//!
//! Everything happens in the database `hotkeys_test` (the stack grants `hotkeys_*`), whose
//! catalogue the prewarm tests share: seeds here use the same seed, so concurrent runs write
//! identical rows. Skipped when MySQL is unreachable, except with `CI` set (then a failure).

use std::process::Output;
use std::time::Duration;

use hotkeys::config::MysqlConfig;
use hotkeys::mysql::{self, RowLoader, SeedProduct};
use serde_json::json;

/// The seed of the shared test catalogue (as in crates/prewarm/tests).
const SEED: u64 = 42;

fn admin_url() -> String {
    std::env::var("HOTKEYS_MYSQL_URL").unwrap_or_else(|_| MysqlConfig::default().url)
}

fn test_url() -> String {
    url_of("hotkeys_test")
}

/// The configured server's URL with `database` in place of its own.
fn url_of(database: &str) -> String {
    let url = admin_url();
    let (base, _) = url.rsplit_once('/').expect("mysql url has a database");
    format!("{base}/{database}")
}

fn config(url: &str) -> MysqlConfig {
    MysqlConfig {
        url: url.to_string(),
        ..MysqlConfig::default()
    }
}

/// A pool on `url`; the server must be up.
async fn connect(url: &str) -> mysql::Pool {
    mysql::connect(&config(url), Duration::from_secs(5))
        .await
        .expect("MySQL")
}

/// Creates `hotkeys_test` if needed; `false` (skip) when MySQL is unreachable.
async fn test_db() -> bool {
    match mysql::connect(&config(&admin_url()), Duration::from_secs(5)).await {
        Ok(pool) => {
            sqlx::query("CREATE DATABASE IF NOT EXISTS hotkeys_test CHARACTER SET utf8mb4")
                .execute(&pool)
                .await
                .expect("create database hotkeys_test");
            pool.close().await;
            true
        }
        Err(e) if e.is_unreachable() => {
            hotkeys::testing::unavailable(format_args!("{e}; start it with scripts/stack.sh up"));
            false
        }
        Err(e) => panic!("MySQL for the tests: {e}"),
    }
}

/// Runs `hotctl` with the repository's topology pointed at `url`.
fn hotctl(url: &str, args: &[&str]) -> Output {
    let topology =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../topology/default.toml");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hotctl"));
    for k in hotkeys::testing::topology_overrides() {
        cmd.env_remove(k);
    }
    cmd.env("HOTKEYS_MYSQL_URL", url)
        .env("RUST_LOG", "warn")
        .arg("--topology")
        .arg(topology)
        .args(args)
        .output()
        .expect("run hotctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn migrate_twice_is_harmless_and_the_second_run_is_up_to_date() {
    if !test_db().await {
        return;
    }
    for _ in 0..2 {
        let out = hotctl(&test_url(), &["db", "migrate"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = hotctl(&test_url(), &["db", "migrate"]);
    assert!(
        text(&out.stdout).contains("up to date"),
        "{}",
        text(&out.stdout)
    );
    let pool = connect(&test_url()).await;
    let applied: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = 1")
            .fetch_one(&pool)
            .await
            .expect("migrations table");
    assert_eq!(applied as usize, mysql::MIGRATOR.iter().count());
    pool.close().await;
}

#[tokio::test]
async fn seed_writes_the_same_deterministic_products_every_time() {
    if !test_db().await {
        return;
    }
    let checksum = || async {
        let pool = connect(&test_url()).await;
        let sum: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(CRC32(CONCAT_WS('|', id, shop_id, name, price, stock, \
             attributes, updated_at))), 0) AS SIGNED) FROM products WHERE id <= 300",
        )
        .fetch_one(&pool)
        .await
        .expect("checksum");
        pool.close().await;
        sum
    };
    let out = hotctl(
        &test_url(),
        &["db", "seed", "--products", "300", "--seed", "42"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("seeded 300 products"),
        "{}",
        text(&out.stdout)
    );
    let first = checksum().await;
    let out = hotctl(
        &test_url(),
        &["db", "seed", "--products", "300", "--seed", "42"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(checksum().await, first, "a second seed changed the rows");

    let pool = connect(&test_url()).await;
    let ids: Vec<String> = (1..=300).map(|i: i64| i.to_string()).collect();
    let loaded = mysql::load_rows(&pool, &MysqlConfig::default().query, 128, &ids)
        .await
        .expect("load rows");
    assert_eq!(loaded.rows.len(), 300);
    for id in 1..=300 {
        let row = &loaded.rows[&id.to_string()];
        assert_eq!(
            row.to_value(),
            SeedProduct::generate(id, SEED).expected_json(),
            "product {id}"
        );
    }
    pool.close().await;
}

#[tokio::test]
async fn unreachable_database_exits_3_naming_its_address() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let url = format!("mysql://hotkeys:hotkeys@{closed}/hotkeys_test");
    let out = hotctl(&url, &["db", "migrate"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&closed.to_string()) && err.contains("unreachable"),
        "{err}"
    );
    assert!(
        !err.contains("hotkeys:hotkeys"),
        "the password leaked: {err}"
    );
}

#[tokio::test]
async fn rows_load_as_json_with_every_column_type_mapped() {
    if !test_db().await {
        return;
    }
    let pool = connect(&test_url()).await;
    let table = format!("column_types_{}", std::process::id());
    let ddl = format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, u BIGINT UNSIGNED, flag TINYINT(1), \
         small SMALLINT, f FLOAT, d DOUBLE, price DECIMAL(12,2), big DECIMAL(30,10), day DATE, \
         t TIME(3), dt DATETIME(6), ts TIMESTAMP(3) NULL, y YEAR, name VARCHAR(50), body TEXT, \
         e ENUM('a','b'), doc JSON, bin VARBINARY(10), b BIT(8))"
    );
    let insert = format!(
        "INSERT INTO {table} VALUES \
         (1, 18446744073709551615, 1, -5, 0.1, 2.5, 19.90, 12345678901234567890.0123456789, \
          '2024-02-29', '-12:30:00.250', '2024-05-01 12:34:56.123456', '2024-05-01 12:34:56.250', \
          2024, 'café \"quoted\"', 'line\\nbreak', 'b', '{{\"a\": [1, 2, {{\"b\": null}}]}}', 'ok', b'101'), \
         (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL), \
         (3, 1, 0, 0, 0, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, 'x', 'x', 'a', '[]', X'FF00', b'0')"
    );
    for sql in [format!("DROP TABLE IF EXISTS {table}"), ddl, insert] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .expect("set up the table");
    }

    let query = format!("SELECT * FROM {table} WHERE id IN ({{ids}})");
    let loader = RowLoader::with_query(&pool, &query, 2)
        .await
        .expect("query accepted");
    let keys: Vec<String> = ["1", "2", "3", "4", "abc"].map(String::from).to_vec();
    let loaded = loader.load(&keys).await.expect("load");
    let one = loaded.rows["1"].as_str();
    assert!(
        one.starts_with(r#"{"id":1,"u":18446744073709551615,"flag":1,"#),
        "select order: {one}"
    );
    assert_eq!(
        loaded.rows["1"].to_value(),
        json!({
            "id": 1, "u": 18446744073709551615u64, "flag": 1, "small": -5, "f": 0.1, "d": 2.5,
            "price": "19.90", "big": "12345678901234567890.0123456789",
            "day": "2024-02-29", "t": "-12:30:00.250", "dt": "2024-05-01T12:34:56.123456",
            "ts": "2024-05-01T12:34:56.250Z", "y": 2024, "name": "café \"quoted\"",
            "body": "line\nbreak", "e": "b", "doc": {"a": [1, 2, {"b": null}]}, "bin": "ok", "b": 5
        })
    );
    let two = loaded.rows["2"].to_value();
    let fields = two.as_object().expect("object");
    assert!(
        fields.iter().all(|(k, v)| k == "id" || v.is_null()),
        "{two}"
    );
    assert_eq!(loaded.unencodable.len(), 1);
    assert_eq!(loaded.unencodable[0].key.as_deref(), Some("3"));
    assert_eq!(loaded.unencodable[0].column, "bin");
    let mut missing = loaded.missing.clone();
    missing.sort();
    assert_eq!(missing, ["4", "abc"]);

    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&pool)
        .await
        .expect("drop");
    pool.close().await;
}

#[tokio::test]
async fn a_query_the_server_rejects_is_a_configuration_error() {
    if !test_db().await {
        return;
    }
    let pool = connect(&test_url()).await;
    // The second query must fail on its columns, not on a missing table.
    mysql::migrate(&pool).await.expect("migrate");
    let err = RowLoader::with_query(
        &pool,
        "SELECT id FROM no_such_table WHERE id IN ({ids})",
        10,
    )
    .await
    .err()
    .expect("rejected");
    assert!(matches!(err, mysql::MysqlError::BadQuery(_)), "{err}");
    let err = RowLoader::with_query(&pool, "SELECT name FROM products WHERE id IN ({ids})", 10)
        .await
        .err()
        .expect("rejected");
    assert!(err.to_string().contains("`id`"), "{err}");
    pool.close().await;
}

#[tokio::test]
async fn concurrent_migrations_of_a_fresh_database_apply_each_version_once() {
    if !test_db().await {
        return;
    }
    // Its own database: the race only exists before the first migration has run.
    let admin = connect(&admin_url()).await;
    for sql in [
        "DROP DATABASE IF EXISTS hotkeys_test_race",
        "CREATE DATABASE hotkeys_test_race CHARACTER SET utf8mb4",
    ] {
        sqlx::raw_sql(sql).execute(&admin).await.expect(sql);
    }
    let url = url_of("hotkeys_test_race");
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let pool = connect(&url).await;
                let applied = mysql::migrate(&pool).await;
                pool.close().await;
                applied
            })
        })
        .collect();
    let mut applied_by = Vec::new();
    for run in runs {
        let applied = run
            .await
            .expect("join")
            .expect("every concurrent migrate succeeds");
        applied_by.push(applied.len());
    }
    let total = mysql::MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .count();
    applied_by.sort_unstable();
    assert_eq!(
        applied_by,
        [0, 0, 0, total],
        "one process applies, the others find it done"
    );
    sqlx::raw_sql("DROP DATABASE hotkeys_test_race")
        .execute(&admin)
        .await
        .expect("drop");
    admin.close().await;
}
