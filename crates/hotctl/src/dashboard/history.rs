//! The hot-key history in MySQL (`migrations/*_hot_history.sql`): one row per key per
//! recorded snapshot of a counter's merged top N, scoped by topology so several can share a
//! database.
//!
//! Every query is bounded three ways: an index range with a `LIMIT`; a statement timeout
//! on the server (`max_statement_time`) with lock waits bounded alike, so a locked table
//! answers with an error rather than a wait; and a timeout here, past which the caller is
//! answered whatever the server does. The recorder writes on a pool of its own, so reads,
//! however many, never take its connections.

use std::collections::HashMap;
use std::time::Duration;

use futures::Stream;
use hotkeys::Topology;
use hotkeys::hotlist::HotItem;
use hotkeys::mysql::{self, Limits, MysqlError, Pool};
use serde::Serialize;
use sqlx::mysql::MySqlRow;
use sqlx::{QueryBuilder, Row as _};

/// Keys longer than this (in characters) are not recorded: the column is `VARCHAR(512)`.
pub const MAX_KEY_CHARS: usize = 512;
/// Points of one key's series.
const MAX_POINTS: usize = 10_000;
/// Rows of the hot-keys page's trend lines.
const MAX_TREND_ROWS: usize = 100_000;
/// Rows one CSV export page reads; each page is a statement of its own.
const PAGE_ROWS: usize = 5_000;
/// Rows one retention `DELETE` removes, so no statement holds locks for long.
const DELETE_CHUNK: u64 = 10_000;
/// Connections of the readers (pages and API) and of the recorder.
const READ_CONNECTIONS: u32 = 4;
const WRITE_CONNECTIONS: u32 = 2;
/// The recorder's bound on one statement and one lock wait: an `INSERT` of a top N and a
/// `DELETE` of [`DELETE_CHUNK`] rows take far less.
const WRITE_STATEMENT: Duration = Duration::from_secs(10);
const WRITE_LOCK_WAIT: Duration = Duration::from_secs(5);
/// Time for the server to report its own timeout before the one here answers.
const SLACK: Duration = Duration::from_secs(1);

/// A history query that failed or ran out of time; MySQL's message, without the URL.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("no history answer within {0:?}")]
    TimedOut(Duration),
}

/// A time range in Unix milliseconds, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from_ms: i64,
    pub to_ms: i64,
}

impl Range {
    pub fn span(&self) -> Duration {
        Duration::from_millis(self.to_ms.saturating_sub(self.from_ms).max(0) as u64)
    }
}

/// A key's highest count over a range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopKey {
    pub key: String,
    pub max: u64,
}

/// One recorded row, as the CSV export writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub id: i64,
    pub taken_at: i64,
    pub key: String,
    pub count: u64,
    pub error: Option<u64>,
}

/// Columns by name, as `#[derive(sqlx::FromRow)]` would read them.
impl<'r> sqlx::FromRow<'r, MySqlRow> for Row {
    fn from_row(row: &'r MySqlRow) -> Result<Self, sqlx::Error> {
        Ok(Row {
            id: row.try_get("id")?,
            taken_at: row.try_get("taken_at")?,
            key: row.try_get("key")?,
            count: row.try_get("count")?,
            error: row.try_get("error")?,
        })
    }
}

pub struct History {
    /// Pages and API; statements bounded by `dashboard.query_timeout`.
    read: Pool,
    /// The recorder's inserts and deletes.
    write: Pool,
    topology: String,
    /// What a read may take, on the server and here.
    read_limit: Duration,
}

impl History {
    /// Connects and applies the migrations, so the table exists; then opens the bounded
    /// pools of the readers and the recorder.
    pub async fn open(topology: &Topology, timeout: Duration) -> Result<History, MysqlError> {
        let setup = mysql::connect(&topology.mysql, timeout).await?;
        mysql::migrate(&setup).await?;
        setup.close().await;
        let read_limit = topology.dashboard.query_timeout;
        let read = Limits {
            connections: READ_CONNECTIONS,
            acquire: read_limit,
            statement: read_limit,
            lock_wait: read_limit,
        };
        let write = Limits {
            connections: WRITE_CONNECTIONS,
            acquire: WRITE_LOCK_WAIT,
            statement: WRITE_STATEMENT,
            lock_wait: WRITE_LOCK_WAIT,
        };
        Ok(History {
            read: mysql::connect_limited(&topology.mysql, timeout, read).await?,
            write: mysql::connect_limited(&topology.mysql, timeout, write).await?,
            topology: topology.name.clone(),
            read_limit,
        })
    }

    /// The longest a read may take before its caller is answered.
    pub fn read_limit(&self) -> Duration {
        self.read_limit + SLACK
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
        within(WRITE_STATEMENT + SLACK, insert.build().execute(&self.write)).await?;
        Ok(items.len())
    }

    /// Deletes this topology's rows taken before `before_ms`; answers how many.
    pub async fn prune(&self, before_ms: i64) -> Result<u64, HistoryError> {
        let counters: Vec<String> = within(
            WRITE_STATEMENT + SLACK,
            sqlx::query_scalar("SELECT DISTINCT counter FROM hot_history WHERE topology = ?")
                .bind(&self.topology)
                .fetch_all(&self.write),
        )
        .await?;
        let mut deleted = 0;
        for counter in counters {
            loop {
                let delete = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM hot_history WHERE topology = ? AND counter = ? AND taken_at < ? \
                     LIMIT {DELETE_CHUNK}"
                )))
                .bind(&self.topology)
                .bind(&counter)
                .bind(before_ms)
                .execute(&self.write);
                let done = within(WRITE_STATEMENT + SLACK, delete)
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
        let query = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT taken_at, count FROM hot_history \
             WHERE topology = ? AND counter = ? AND `key` = ? AND taken_at BETWEEN ? AND ? \
             ORDER BY taken_at LIMIT {MAX_POINTS}"
        )))
        .bind(&self.topology)
        .bind(counter)
        .bind(key)
        .bind(range.from_ms)
        .bind(range.to_ms)
        .fetch_all(&self.read);
        within(self.read_limit(), query).await
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
        query.push(format!(") ORDER BY taken_at LIMIT {MAX_TREND_ROWS}"));
        let rows: Vec<(String, i64, u64)> = within(
            self.read_limit(),
            query.build_query_as().fetch_all(&self.read),
        )
        .await?;
        for (key, at, count) in rows {
            series.entry(key).or_default().push((at, count));
        }
        Ok(series)
    }

    /// The `n` keys with the highest count recorded over `range` (JD's "max hot"). The
    /// caller bounds the range (`dashboard.max_range`): this reads every row in it.
    pub async fn top(
        &self,
        counter: &str,
        range: Range,
        n: usize,
    ) -> Result<Vec<TopKey>, HistoryError> {
        // The covering index (migration `…_hot_history_ranked`): the optimizer would take the
        // key index and read every row of the counter.
        let query = sqlx::query_as(
            "SELECT `key`, MAX(count) AS top FROM hot_history \
             FORCE INDEX (hot_history_taken_counts) \
             WHERE topology = ? AND counter = ? AND taken_at BETWEEN ? AND ? \
             GROUP BY `key` ORDER BY top DESC, `key` LIMIT ?",
        )
        .bind(&self.topology)
        .bind(counter)
        .bind(range.from_ms)
        .bind(range.to_ms)
        .bind(n as u64)
        .fetch_all(&self.read);
        let rows: Vec<(String, u64)> = within(self.read_limit(), query).await?;
        Ok(rows
            .into_iter()
            .map(|(key, max)| TopKey { key, max })
            .collect())
    }

    /// Every row of `counter` over `range`, oldest first (a snapshot's rows hottest
    /// first), at most `limit`: read page by page, each page a short statement of its own,
    /// so a slow reader of the export holds no statement open.
    pub fn rows(
        &self,
        counter: &str,
        range: Range,
        limit: usize,
    ) -> impl Stream<Item = Result<Vec<Row>, HistoryError>> + Send + 'static {
        let pages = Pages {
            pool: self.read.clone(),
            topology: self.topology.clone(),
            counter: counter.to_string(),
            to_ms: range.to_ms,
            // Just before the first row at `from_ms`.
            after: (range.from_ms.saturating_sub(1), i64::MAX),
            left: limit,
            timeout: self.read_limit(),
        };
        futures::stream::unfold(pages, |mut pages| async move {
            if pages.left == 0 {
                return None;
            }
            let page = pages.next().await;
            match &page {
                Ok(rows) if rows.is_empty() => return None,
                Ok(rows) => pages.left -= rows.len(),
                Err(_) => pages.left = 0,
            }
            Some((page, pages))
        })
    }
}

/// Where a paged export is: past row `after` = (taken_at, id).
struct Pages {
    pool: Pool,
    topology: String,
    counter: String,
    to_ms: i64,
    after: (i64, i64),
    left: usize,
    timeout: Duration,
}

impl Pages {
    async fn next(&mut self) -> Result<Vec<Row>, HistoryError> {
        let (at, id) = self.after;
        // Keyset paging on the index (topology, counter, taken_at), whose rows end in the id.
        let query = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, taken_at, `key`, count, error FROM hot_history \
             WHERE topology = ? AND counter = ? AND taken_at BETWEEN ? AND ? \
             AND (taken_at > ? OR (taken_at = ? AND id > ?)) \
             ORDER BY taken_at, id LIMIT {}",
            self.left.min(PAGE_ROWS)
        )))
        .bind(&self.topology)
        .bind(&self.counter)
        .bind(at)
        .bind(self.to_ms)
        .bind(at)
        .bind(at)
        .bind(id)
        .fetch_all(&self.pool);
        let rows: Vec<Row> = within(self.timeout, query).await?;
        if let Some(last) = rows.last() {
            self.after = (last.taken_at, last.id);
        }
        Ok(rows)
    }
}

/// `query`'s answer, or [`HistoryError::TimedOut`] after `limit`.
async fn within<T>(
    limit: Duration,
    query: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, HistoryError> {
    tokio::time::timeout(limit, query)
        .await
        .map_err(|_| HistoryError::TimedOut(limit))?
        .map_err(HistoryError::from)
}
