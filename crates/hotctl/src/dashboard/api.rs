//! The JSON API under `/api/`. Every route reads through the same hotctl and hotkeys
//! functions as the command line (`hotctl tasks --json` and `GET /api/tasks` print the
//! same objects), and every size taken from a request is bounded here.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use hotkeys::blacklist::{self, BlacklistError};
use hotkeys::config::{Counter, PRIMARY_COUNTER};
use hotkeys::hotlist::now_ms;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{authorize, bearer};
use super::error::ApiError;
use super::history::{HistoryError, MAX_KEY_CHARS, Range, Row};
use super::hub::HotView;
use super::query::HotQuery;
use super::state::Dashboard;
use crate::blacklist::{bans, ruled_counters};
use crate::keys::diff_report_on;
use crate::tasks::task_json;

/// Keys of `/api/top` when `n` is absent, and the most it answers.
const DEFAULT_N: usize = 20;
const MAX_N: usize = 1000;
/// Keys one unban request may lift, and the request body that carries them.
const MAX_UNBAN_KEYS: usize = 1000;
const MAX_BODY: usize = 1024 * 1024;
/// The range a history query covers when `from` is absent.
const DEFAULT_RANGE: Duration = Duration::from_secs(3600);
/// Rows of one CSV export; the response says so in `X-Hotkeys-Row-Limit`, and a last line
/// `# cut at …` says when there were more.
pub const MAX_CSV_ROWS: usize = 100_000;
const CSV_HEADER: &str = "taken_at_ms,counter,key,count,error\n";

pub fn routes() -> Router<Arc<Dashboard>> {
    Router::new()
        .route("/api/tasks", get(tasks))
        .route("/api/hot", get(hot))
        .route("/api/blacklist", get(blacklist_entries))
        .route(
            "/api/unban",
            post(unban).layer(DefaultBodyLimit::max(MAX_BODY)),
        )
        .route("/api/history", get(history))
        .route("/api/top", get(top))
        .route("/api/history.csv", get(history_csv))
        .route("/api/replication", get(replication))
        .route("/api/cache", get(cache))
        .route("/api/recorder", get(recorder))
        .route("/api/stream", get(super::stream::stream))
}

/// `counter`, a time range and, per route, a key or a count.
#[derive(Deserialize)]
pub struct RangeQuery {
    pub counter: Option<String>,
    pub key: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub n: Option<usize>,
}

impl RangeQuery {
    pub fn counter(&self, dashboard: &Dashboard) -> Result<Counter, ApiError> {
        dashboard.counter(self.counter.as_deref().unwrap_or(PRIMARY_COUNTER))
    }

    /// `from` and `to`: Unix milliseconds, or a duration before now (`-1h`); `to` defaults
    /// to now and `from` to an hour before `to`.
    pub fn range(&self) -> Result<Range, ApiError> {
        let now = now_ms();
        let to = match &self.to {
            Some(t) => parse_time(t, now)?,
            None => now,
        };
        let from = match &self.from {
            Some(f) => parse_time(f, now)?,
            None => to - DEFAULT_RANGE.as_millis() as i64,
        };
        if from > to {
            return Err(ApiError::bad_request("`from` is after `to`"));
        }
        Ok(Range {
            from_ms: from,
            to_ms: to,
        })
    }

    fn key(&self) -> Result<&str, ApiError> {
        match self.key.as_deref() {
            Some(k) if !k.is_empty() && k.chars().count() <= MAX_KEY_CHARS => Ok(k),
            Some(k) if !k.is_empty() => Err(ApiError::bad_request(format!(
                "`key` is longer than {MAX_KEY_CHARS} characters"
            ))),
            _ => Err(ApiError::bad_request("`key` is required")),
        }
    }
}

/// A point in time: Unix milliseconds, `now`, or `-<duration>` before now.
fn parse_time(text: &str, now: i64) -> Result<i64, ApiError> {
    if text == "now" {
        return Ok(now);
    }
    if let Some(ago) = text.strip_prefix('-') {
        let d = humantime::parse_duration(ago)
            .map_err(|e| ApiError::bad_request(format!("time `-{ago}`: {e}")))?;
        return Ok(now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
    }
    text.parse().map_err(|_| {
        ApiError::bad_request("a time is Unix milliseconds, `now`, or `-<duration>` such as -1h")
    })
}

#[derive(Deserialize)]
struct CounterQuery {
    counter: Option<String>,
}

async fn tasks(
    State(d): State<Arc<Dashboard>>,
    Query(q): Query<CounterQuery>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let counter = d.counter(q.counter.as_deref().unwrap_or(PRIMARY_COUNTER))?;
    let name = counter.name.as_str();
    let views = d
        .with_zk(|zk| async move { zk.for_counter(name).task_views().await })
        .await?;
    // Lag needs Kafka; without it the tasks are still worth answering.
    let ends = d.end_offsets.get().await.unwrap_or_default();
    Ok(Json(
        views
            .iter()
            .map(|v| {
                let mut task = task_json(v);
                let end = ends.get(v.task as usize).copied();
                task["end_offset"] = json!(end);
                task["lag"] = json!(
                    end.zip(task["offset"].as_i64())
                        .map(|(e, o)| (e - o).max(0))
                );
                task
            })
            .collect(),
    ))
}

/// A counter's merged hot set read from ZooKeeper now.
pub async fn hot_view(d: &Dashboard, counter: &Counter, top: usize) -> Result<HotView, ApiError> {
    let name = counter.name.as_str();
    let lists = d
        .with_zk(|zk| async move { zk.for_counter(name).hot_lists().await })
        .await?;
    Ok(HotView::from_lists(name, &lists, top))
}

async fn hot(
    State(d): State<Arc<Dashboard>>,
    Query(q): Query<HotQuery>,
) -> Result<Json<HotView>, ApiError> {
    let (counter, top) = q.resolve(&d)?;
    Ok(Json(hot_view(&d, &counter, top).await?))
}

async fn blacklist_entries(
    State(d): State<Arc<Dashboard>>,
    Query(q): Query<CounterQuery>,
) -> Result<Json<Vec<crate::blacklist::Ban>>, ApiError> {
    if let Some(c) = &q.counter {
        d.counter(c)?;
    }
    let mut redis = d.redis.clone();
    Ok(Json(
        bans(&d.topology, &mut redis, q.counter.as_deref()).await?,
    ))
}

#[derive(Deserialize)]
struct UnbanRequest {
    counter: String,
    keys: Vec<String>,
}

/// Lifts bans after checking the token (see `auth`); shared by the API and the form.
pub async fn lift(d: &Dashboard, counter: &str, keys: &[String]) -> Result<usize, ApiError> {
    d.counter(counter)?;
    ruled_counters(&d.topology, Some(counter)).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if keys.is_empty() || keys.len() > MAX_UNBAN_KEYS {
        return Err(ApiError::bad_request(format!(
            "`keys` takes 1 to {MAX_UNBAN_KEYS} keys"
        )));
    }
    let mut redis = d.redis.clone();
    let topology = d.topology.name.as_str();
    let outcome = d
        .with_zk(|zk| async move {
            match blacklist::unban(&mut redis, &zk, topology, counter, keys, now_ms()).await {
                // Through `with_zk`, so a lost session is replaced for the next request.
                Err(BlacklistError::ZooKeeper(e)) => Err(e),
                other => Ok(other),
            }
        })
        .await?;
    outcome.map_err(|e| ApiError::unavailable(e.to_string()))
}

async fn unban(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    body: Result<Json<UnbanRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    // The token first: an unauthorized caller learns nothing about the body or the counters.
    authorize(d.token(), bearer(&headers))?;
    let Json(request) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let lifted = lift(&d, &request.counter, &request.keys).await?;
    Ok(Json(json!({
        "counter": request.counter,
        "asked": request.keys.len(),
        "lifted": lifted,
    })))
}

async fn history(
    State(d): State<Arc<Dashboard>>,
    Query(q): Query<RangeQuery>,
) -> Result<Json<Value>, ApiError> {
    let counter = q.counter(&d)?;
    let (key, range) = (q.key()?, q.range()?);
    let points = d.history()?.series(&counter.name, key, range).await?;
    Ok(Json(json!({
        "counter": counter.name,
        "key": key,
        "from": range.from_ms,
        "to": range.to_ms,
        "points": points,
    })))
}

async fn top(
    State(d): State<Arc<Dashboard>>,
    Query(q): Query<RangeQuery>,
) -> Result<Json<Value>, ApiError> {
    let counter = q.counter(&d)?;
    let range = q.range()?;
    ranked_range(&d, range)?;
    let n = q.n.unwrap_or(DEFAULT_N).clamp(1, MAX_N);
    let keys = d.history()?.top(&counter.name, range, n).await?;
    Ok(Json(json!({
        "counter": counter.name,
        "from": range.from_ms,
        "to": range.to_ms,
        "keys": keys,
    })))
}

/// Refuses a range `/api/top` and the history page may not rank keys over: ranking reads
/// every row of the range.
pub fn ranked_range(d: &Dashboard, range: Range) -> Result<(), ApiError> {
    let max = d.topology.dashboard.max_range;
    if range.span() > max {
        return Err(ApiError::bad_request(format!(
            "the range is longer than the largest this dashboard ranks keys over: {} \
             ({} ms, dashboard.max_range)",
            humantime::format_duration(max),
            max.as_millis()
        )));
    }
    Ok(())
}

async fn history_csv(
    State(d): State<Arc<Dashboard>>,
    Query(q): Query<RangeQuery>,
) -> Result<Response, ApiError> {
    let counter = q.counter(&d)?;
    let range = q.range()?;
    let pages = d.history()?.rows(&counter.name, range, MAX_CSV_ROWS + 1);
    let file = format!(
        "attachment; filename=\"hot-history-{}-{}.csv\"",
        range.from_ms, range.to_ms
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, file),
            (
                header::HeaderName::from_static("x-hotkeys-row-limit"),
                MAX_CSV_ROWS.to_string(),
            ),
        ],
        Body::from_stream(csv_stream(counter.name, pages)),
    )
        .into_response())
}

/// Where a CSV export is.
struct Export {
    pages: Pin<Box<dyn Stream<Item = Result<Vec<Row>, HistoryError>> + Send>>,
    counter: String,
    written: usize,
    done: bool,
}

/// The CSV text of `pages`: the header, then one chunk per page, then a comment line when
/// the export was cut at [`MAX_CSV_ROWS`] or failed.
fn csv_stream(
    counter: String,
    pages: impl Stream<Item = Result<Vec<Row>, HistoryError>> + Send + 'static,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let export = Export {
        pages: Box::pin(pages),
        counter: csv_field(&counter),
        written: 0,
        done: false,
    };
    let body = futures::stream::unfold(export, |mut e| async move {
        if e.done {
            return None;
        }
        let chunk = match e.pages.next().await? {
            Ok(rows) => e.write(&rows),
            Err(error) => {
                e.done = true;
                format!("# export failed after {} rows: {error}\n", e.written)
            }
        };
        Some((Ok(Bytes::from(chunk)), e))
    });
    futures::stream::once(async { Ok(Bytes::from_static(CSV_HEADER.as_bytes())) }).chain(body)
}

impl Export {
    /// The lines of `rows`, up to the cap; the cut line when rows are left over.
    fn write(&mut self, rows: &[Row]) -> String {
        let take = rows.len().min(MAX_CSV_ROWS - self.written);
        let mut csv = String::with_capacity(take * 48);
        for row in &rows[..take] {
            csv.push_str(&format!(
                "{},{},{},{},{}\n",
                row.taken_at,
                self.counter,
                csv_field(&row.key),
                row.count,
                row.error.map_or(String::new(), |e| e.to_string())
            ));
        }
        self.written += take;
        if take < rows.len() {
            self.done = true;
            csv.push_str(&format!(
                "# cut at {MAX_CSV_ROWS} rows: ask again from the last taken_at_ms for more\n"
            ));
        }
        csv
    }
}

/// A CSV field (RFC 4180) that a spreadsheet opens as text: quoted when it holds a
/// delimiter, and prefixed with `'` when it would start a formula (keys are untrusted).
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

async fn replication(State(d): State<Arc<Dashboard>>) -> Result<Json<Value>, ApiError> {
    let unavailable = |e: hotkeys::sync::SyncError| ApiError::unavailable(e.to_string());
    let status = d
        .queue()
        .await
        .map_err(unavailable)?
        .status()
        .await
        .map_err(unavailable)?;
    Ok(Json(json!(status)))
}

async fn cache(State(d): State<Arc<Dashboard>>) -> Result<Json<Value>, ApiError> {
    let diff = diff_report_on(&d.topology, &d.zk().await, &d.cache, None).await?;
    // `hotctl diff --json`, plus the counts of each task.
    let mut doc = diff.to_json();
    doc["tasks"] = diff
        .counts_by_task()
        .iter()
        .map(|(task, counts)| {
            let mut row = json!(counts);
            row["task"] = json!(task);
            row
        })
        .collect();
    Ok(Json(doc))
}

async fn recorder(State(d): State<Arc<Dashboard>>) -> Result<Json<Value>, ApiError> {
    let holder = d
        .with_zk(|zk| async move { zk.read_recorder().await })
        .await?;
    Ok(Json(json!({
        "holder": holder.as_ref().map(|(h, _)| h.holder()),
        "this": holder.is_some_and(|(_, this)| this),
        "record_ms": d.settings.record.as_millis() as u64,
        "retain_ms": d.settings.retain.as_millis() as u64,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("42"), "42");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=1+1"), "'=1+1");
        assert_eq!(csv_field("-2,3"), "\"'-2,3\"");
    }

    #[test]
    fn times_are_milliseconds_now_or_a_duration_ago() {
        assert_eq!(parse_time("1700000000000", 5).unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time("now", 5_000).unwrap(), 5_000);
        assert_eq!(parse_time("-2s", 5_000).unwrap(), 3_000);
        assert!(parse_time("yesterday", 5).is_err());
    }
}
