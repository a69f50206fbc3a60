//! The hot-key history in MySQL (`migrations/*_hot_history.sql`): one row per key per
//! recorded snapshot of a counter's merged top N, scoped by topology so several can share a
//! database. Every read is bounded: a series or a CSV export stops at a fixed number of rows.

use std::collections::HashMap;
use std::time::Duration;

use hotkeys::Topology;
use hotkeys::hotlist::HotItem;
use hotkeys::mysql::{self, MysqlError, Pool};
use serde::Serialize;
use sqlx::QueryBuilder;

/// Keys longer than this (in characters) are not recorded: the column is `VARCHAR(512)`.
pub const MAX_KEY_CHARS: usize = 512;
/// Points of one key's series.
const MAX_POINTS: usize = 10_000;
/// Rows of one CSV export.
const MAX_ROWS: usize = 100_000;
/// Rows one retention `DELETE` removes, so no statement holds locks for long.
const DELETE_CHUNK: u64 = 10_000;

/// A history query that failed; MySQL's message, without the URL.
#[derive(Debug, thiserror::Error)]
#[error("history query failed: {0}")]
pub struct HistoryError(#[from] sqlx::Error);

/// A time range in Unix milliseconds, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from_ms: i64,
    pub to_ms: i64,
}

/// A key's highest count over a range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopKey {
    pub key: String,
    pub max: u64,
}

/// One recorded row, as the CSV export writes it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Row {
    pub taken_at: i64,
    pub key: String,
    pub count: u64,
    pub error: Option<u64>,
}

pub struct History {
    pool: Pool,
    topology: String,
}

impl History {
    /// Connects and applies the migrations, so the table exists.
    pub async fn open(topology: &Topology, timeout: Duration) -> Result<History, MysqlError> {
        let pool = mysql::connect(&topology.mysql, timeout).await?;
        mysql::migrate(&pool).await?;
        Ok(History {
            pool,
            topology: topology.name.clone(),
        })
    }

    /// Writes one snapshot of `counter`; answers the rows written.
    pub async fn record(
        &self,
        counter: &str,
        taken_at: i64,
        items: &[HotItem],
    ) -> Result<usize, HistoryError> {
        let items: Vec<&HotItem> = items
            .iter()
            .filter(|i| i.key.chars().count() <= MAX_KEY_CHARS)
            .collect();
        if items.is_empty() {
            return Ok(0);
        }
        // At most `top_n` (≤ 5000) items of 6 binds: within MySQL's 65,535.
        let mut insert = QueryBuilder::new(
            "INSERT INTO hot_history (topology, counter, taken_at, `key`, count, error) ",
        );
        insert.push_values(&items, |mut row, item| {
            row.push_bind(&self.topology)
                .push_bind(counter)
                .push_bind(taken_at)
                .push_bind(&item.key)
                .push_bind(item.count)
                .push_bind(item.error);
        });
        insert.build().execute(&self.pool).await?;
        Ok(items.len())
    }

    /// Deletes this topology's rows taken before `before_ms`; answers how many.
    pub async fn prune(&self, before_ms: i64) -> Result<u64, HistoryError> {
        let counters: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT counter FROM hot_history WHERE topology = ?")
                .bind(&self.topology)
                .fetch_all(&self.pool)
                .await?;
        let mut deleted = 0;
        for counter in counters {
            loop {
                let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM hot_history WHERE topology = ? AND counter = ? AND taken_at < ? \
                     LIMIT {DELETE_CHUNK}"
                )))
                .bind(&self.topology)
                .bind(&counter)
                .bind(before_ms)
                .execute(&self.pool)
                .await?
                .rows_affected();
                deleted += done;
                if done < DELETE_CHUNK {
                    break;
                }
            }
        }
        Ok(deleted)
    }

    /// `key`'s recorded counts over `range`, oldest first, as `(ms, count)`.
    pub async fn series(
        &self,
        counter: &str,
        key: &str,
        range: Range,
    ) -> Result<Vec<(i64, u64)>, HistoryError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT taken_at, count FROM hot_history \
             WHERE topology = ? AND counter = ? AND `key` = ? AND taken_at BETWEEN ? AND ? \
             ORDER BY taken_at LIMIT {MAX_POINTS}"
        )))
        .bind(&self.topology)
        .bind(counter)
        .bind(key)
        .bind(range.from_ms)
        .bind(range.to_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The series of several keys at once (the hot-keys page's trend lines).
    pub async fn series_of(
        &self,
        counter: &str,
        keys: &[String],
        range: Range,
    ) -> Result<HashMap<String, Vec<(i64, u64)>>, HistoryError> {
        let mut series: HashMap<String, Vec<(i64, u64)>> = HashMap::new();
        if keys.is_empty() {
            return Ok(series);
        }
        let mut query =
            QueryBuilder::new("SELECT `key`, taken_at, count FROM hot_history WHERE topology = ");
        query
            .push_bind(&self.topology)
            .push(" AND counter = ")
            .push_bind(counter)
            .push(" AND taken_at BETWEEN ")
            .push_bind(range.from_ms)
            .push(" AND ")
            .push_bind(range.to_ms)
            .push(" AND `key` IN (");
        let mut list = query.separated(", ");
        for key in keys {
            list.push_bind(key);
        }
        query.push(format!(") ORDER BY taken_at LIMIT {MAX_ROWS}"));
        let rows: Vec<(String, i64, u64)> = query.build_query_as().fetch_all(&self.pool).await?;
        for (key, at, count) in rows {
            series.entry(key).or_default().push((at, count));
        }
        Ok(series)
    }

    /// The `n` keys with the highest count recorded over `range` (JD's "max hot").
    pub async fn top(
        &self,
        counter: &str,
        range: Range,
        n: usize,
    ) -> Result<Vec<TopKey>, HistoryError> {
        let rows: Vec<(String, u64)> = sqlx::query_as(
            "SELECT `key`, MAX(count) AS top FROM hot_history \
             WHERE topology = ? AND counter = ? AND taken_at BETWEEN ? AND ? \
             GROUP BY `key` ORDER BY top DESC, `key` LIMIT ?",
        )
        .bind(&self.topology)
        .bind(counter)
        .bind(range.from_ms)
        .bind(range.to_ms)
        .bind(n as u64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(key, max)| TopKey { key, max })
            .collect())
    }

    /// Every row of `counter` over `range`, oldest first, at most [`MAX_ROWS`].
    pub async fn rows(&self, counter: &str, range: Range) -> Result<Vec<Row>, HistoryError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT taken_at, `key`, count, error FROM hot_history \
             WHERE topology = ? AND counter = ? AND taken_at BETWEEN ? AND ? \
             ORDER BY taken_at, count DESC LIMIT {MAX_ROWS}"
        )))
        .bind(&self.topology)
        .bind(counter)
        .bind(range.from_ms)
        .bind(range.to_ms)
        .fetch_all(&self.pool)
        .await?)
    }
}
