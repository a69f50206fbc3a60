//! Loading rows by key: `mysql.query` with its `{ids}` bound, batch by batch, as JSON.
//!
//! Statements are prepared and cached per connection by sqlx. An `IN (…)` list of a new
//! length is a new statement, so batch lengths are rounded up to a power of two (the list is
//! padded by repeating a key, which changes nothing in the result): a connection prepares at
//! most a dozen statement texts however the hot lists are sized.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use sqlx::mysql::MySqlRow;
use sqlx::{AssertSqlSafe, Executor, SqlSafeStr, Statement};

use super::encode::{Origin, RowFailure, RowJson, RowPlan, origin};
use super::{MysqlError, Pool, RowQuery};
use crate::config::MysqlConfig;

/// The outcome of loading some keys.
#[derive(Debug, Default, Clone)]
pub struct Loaded {
    /// Rows found, by the key they were asked for.
    pub rows: HashMap<String, RowJson>,
    /// Keys with no row in the database (including keys that cannot be ids at all, such as
    /// `abc` when the id column is an integer).
    pub missing: Vec<String>,
    /// Rows found but not encodable as JSON; they are in neither `rows` nor `missing`.
    pub unencodable: Vec<RowFailure>,
}

impl Loaded {
    /// Adds the outcome of another batch.
    pub fn merge(&mut self, other: Loaded) {
        self.rows.extend(other.rows);
        self.missing.extend(other.missing);
        self.unencodable.extend(other.unencodable);
    }
}

/// Loads rows with one validated, prepared query; cheap to share between tasks.
#[derive(Clone)]
pub struct RowLoader {
    pool: Pool,
    query: RowQuery,
    plan: Arc<RowPlan>,
    batch: usize,
    /// Statement text per `IN` list length.
    texts: Arc<Mutex<HashMap<usize, Arc<str>>>>,
}

impl RowLoader {
    /// Validates `mysql.query`, prepares it once to learn its columns and checks it returns
    /// an `id`. A query the server rejects (unknown table or column) fails here, before any
    /// lock is taken.
    pub async fn new(pool: &Pool, cfg: &MysqlConfig) -> Result<RowLoader, MysqlError> {
        RowLoader::with_query(pool, &cfg.query, cfg.batch).await
    }

    pub async fn with_query(
        pool: &Pool,
        query: &str,
        batch: usize,
    ) -> Result<RowLoader, MysqlError> {
        let query = RowQuery::parse(query)?;
        // Validated above: a single read-only SELECT whose only parameters are our binds.
        let sql = AssertSqlSafe(query.sql(1)).into_sql_str();
        let statement = pool.prepare(sql).await.map_err(|source| {
            if matches!(source, sqlx::Error::Database(_)) {
                MysqlError::BadQuery(format!("the server rejected it: {source}"))
            } else {
                MysqlError::query("preparing mysql.query", source)
            }
        })?;
        let json = json_columns(pool, statement.columns()).await;
        let plan = RowPlan::new(statement.columns(), &json)?;
        Ok(RowLoader {
            pool: pool.clone(),
            query,
            plan: Arc::new(plan),
            batch: batch.clamp(1, 65_535),
            texts: Arc::default(),
        })
    }

    /// Keys per query.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Loads any number of keys, one batch after the other.
    pub async fn load(&self, keys: &[String]) -> Result<Loaded, MysqlError> {
        let mut all = Loaded::default();
        for chunk in keys.chunks(self.batch) {
            all.merge(self.load_batch(chunk).await?);
        }
        Ok(all)
    }

    /// Loads at most [`RowLoader::batch`] keys with one query (more are split anyway).
    pub async fn load_batch(&self, keys: &[String]) -> Result<Loaded, MysqlError> {
        if keys.len() > self.batch {
            return Box::pin(self.load(keys)).await;
        }
        let mut loaded = Loaded::default();
        let asked = self.ask(keys, &mut loaded.missing);
        if asked.binds.is_empty() {
            return Ok(loaded);
        }
        let rows = self.fetch(&asked.binds).await?;
        self.sort_rows(&asked, &rows, &mut loaded);
        Ok(loaded)
    }

    /// One bind per distinct key; a key that cannot be an id of an integer column is
    /// `missing` at once.
    fn ask<'k>(&self, keys: &'k [String], missing: &mut Vec<String>) -> Asked<'k> {
        let mut asked = Asked {
            wanted: HashMap::with_capacity(keys.len()),
            binds: Vec::with_capacity(keys.len()),
        };
        let mut seen = HashSet::with_capacity(keys.len());
        for key in keys {
            if !seen.insert(key.as_str()) {
                continue;
            }
            let bind = if self.plan.id_is_integer() {
                match (key.parse::<i64>(), key.parse::<u64>()) {
                    (Ok(n), _) => Bind::Signed(n),
                    (_, Ok(n)) => Bind::Unsigned(n),
                    _ => {
                        missing.push(key.clone());
                        continue;
                    }
                }
            } else {
                Bind::Text(key.clone())
            };
            asked.wanted.entry(bind.canonical()).or_default().push(key);
            asked.binds.push(bind);
        }
        asked
    }

    /// Runs the query for `binds`, padded to a cached statement length.
    async fn fetch(&self, binds: &[Bind]) -> Result<Vec<MySqlRow>, MysqlError> {
        let slots = binds
            .len()
            .next_power_of_two()
            .min(self.batch)
            .max(binds.len());
        let mut query = sqlx::query(AssertSqlSafe(self.text(slots)));
        for bind in binds
            .iter()
            .chain(std::iter::repeat_n(&binds[0], slots - binds.len()))
        {
            query = match bind {
                Bind::Signed(n) => query.bind(*n),
                Bind::Unsigned(n) => query.bind(*n),
                Bind::Text(s) => query.bind(s.as_str()),
            };
        }
        query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| MysqlError::query("loading rows", e))
    }

    /// Hands each row to the keys that asked for it, as JSON or as a failure; the keys no
    /// row answered are `missing`.
    fn sort_rows(&self, asked: &Asked<'_>, rows: &[MySqlRow], loaded: &mut Loaded) {
        let wanted = &asked.wanted;
        // String ids compare by collation (usually case-insensitive): fall back to that.
        let folded: HashMap<String, &Vec<&String>> = if self.plan.id_is_integer() {
            HashMap::new()
        } else {
            wanted.iter().map(|(k, v)| (k.to_lowercase(), v)).collect()
        };
        let owners = |id: &str| {
            wanted
                .get(id)
                .or_else(|| folded.get(&id.to_lowercase()).copied())
        };
        let mut found: HashSet<&str> = HashSet::with_capacity(asked.binds.len());
        for row in rows {
            match self.plan.encode(row) {
                Ok((id, json)) => {
                    for key in owners(&id).into_iter().flatten() {
                        found.insert(key.as_str());
                        loaded.rows.insert((*key).clone(), json.clone());
                    }
                }
                Err(failure) => {
                    if let Some(keys) = failure.key.as_deref().and_then(owners) {
                        found.extend(keys.iter().map(|k| k.as_str()));
                    }
                    loaded.unencodable.push(failure);
                }
            }
        }
        for bind in &asked.binds {
            for key in &wanted[&bind.canonical()] {
                if found.insert(key.as_str()) {
                    loaded.missing.push((*key).clone());
                }
            }
        }
    }

    fn text(&self, slots: usize) -> Arc<str> {
        let mut texts = self.texts.lock().unwrap_or_else(|p| p.into_inner());
        texts
            .entry(slots)
            .or_insert_with(|| self.query.sql(slots).into())
            .clone()
    }
}

/// The keys of one batch as the query binds them.
struct Asked<'k> {
    /// The text the database will report for each key's row, and the keys asking for it.
    wanted: HashMap<String, Vec<&'k String>>,
    /// One per distinct key, in the order given.
    binds: Vec<Bind>,
}

enum Bind {
    Signed(i64),
    Unsigned(u64),
    Text(String),
}

impl Bind {
    fn canonical(&self) -> String {
        match self {
            Bind::Signed(n) => n.to_string(),
            Bind::Unsigned(n) => n.to_string(),
            Bind::Text(s) => s.clone(),
        }
    }
}

/// Loads `ids` with `query` (see [`RowLoader`]); for one-off use, as it prepares the query
/// and looks up its columns each time.
pub async fn load_rows(
    pool: &Pool,
    query: &str,
    batch: usize,
    ids: &[String],
) -> Result<Loaded, MysqlError> {
    RowLoader::with_query(pool, query, batch)
        .await?
        .load(ids)
        .await
}

/// Table columns of the result that MariaDB declares as JSON: it stores `JSON` as
/// `LONGTEXT` with a `json_valid(col)` check and sends it as text. MySQL 8 sends a real JSON
/// type and has no such table; a failed lookup only means no column is found this way.
async fn json_columns(pool: &Pool, columns: &[sqlx::mysql::MySqlColumn]) -> HashSet<Origin> {
    let tables: HashSet<String> = columns.iter().filter_map(origin).map(|(t, _)| t).collect();
    let mut json = HashSet::new();
    for table in tables {
        let (schema, name) = match table.split_once('.') {
            Some((s, t)) => (Some(s.to_string()), t.to_string()),
            None => (None, table.clone()),
        };
        let clauses = sqlx::query_scalar::<_, String>(
            "SELECT CAST(CHECK_CLAUSE AS CHAR) FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?",
        )
        .bind(schema)
        .bind(&name)
        .fetch_all(pool)
        .await;
        match clauses {
            Ok(clauses) => {
                for clause in clauses {
                    if let Some(column) = json_valid_column(&clause) {
                        json.insert((table.clone(), column));
                    }
                }
            }
            Err(e) => tracing::debug!(%table, error = %e, "no CHECK constraints readable"),
        }
    }
    json
}

/// `json_valid(`col`)` → `col`.
fn json_valid_column(clause: &str) -> Option<String> {
    let compact: String = clause.chars().filter(|c| !c.is_whitespace()).collect();
    let inner = compact
        .get(.."json_valid(".len())
        .filter(|p| p.eq_ignore_ascii_case("json_valid("))
        .and_then(|_| compact["json_valid(".len()..].strip_suffix(')'))?;
    let name = inner.strip_prefix('`')?.strip_suffix('`')?;
    (!name.is_empty() && !name.contains('`')).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_valid_checks_name_their_column() {
        assert_eq!(
            json_valid_column("json_valid(`attributes`)").as_deref(),
            Some("attributes")
        );
        assert_eq!(json_valid_column("JSON_VALID( `a` )").as_deref(), Some("a"));
        assert_eq!(json_valid_column("json_valid(`a`) and `b` > 0"), None);
        assert_eq!(json_valid_column("`price` > 0"), None);
    }
}
