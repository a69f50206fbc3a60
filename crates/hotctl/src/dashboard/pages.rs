//! The server-rendered pages. maud escapes every interpolated string, so a key like
//! `<script>` is text wherever it appears; charts come from `charts` as SVG holding only
//! numbers. Every page works without JavaScript; `assets/live.js` only adds live updates
//! and remembers the unban token for the tab.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use hotkeys::config::Counter;
use hotkeys::hotlist::{HotItem, LockInfo, now_ms};
use hotkeys::sync::QueueStatus;
use hotkeys::zk::TaskView;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use super::api::{RangeQuery, hot_view, lift, ranked_range};
use super::auth::authorize;
use super::charts;
use super::error::ApiError;
use super::history::{History, HistoryError, Range, TopKey};
use super::probe::NodeState;
use super::query::HotQuery;
use super::state::Dashboard;
use crate::blacklist::{bans, remaining_text};
use crate::keys::diff_report_on;
use crate::render::seconds_ms;

/// Ranges offered by the history page's picker.
const RANGES: [(&str, &str); 5] = [
    ("15m", "15 minutes"),
    ("1h", "1 hour"),
    ("6h", "6 hours"),
    ("24h", "24 hours"),
    ("7d", "7 days"),
];
/// The span of the hot-keys page's trend lines.
const TREND: Duration = Duration::from_secs(3600);
/// What a page waits for the history before it renders without it, under a banner: pages
/// answer within about this plus what ZooKeeper takes.
const PAGE_HISTORY_BUDGET: Duration = Duration::from_secs(1);

pub fn routes() -> Router<Arc<Dashboard>> {
    Router::new()
        .route("/", get(overview))
        .route("/hot", get(hot))
        .route("/history", get(history))
        .route("/blacklist", get(blacklist))
        .route("/blacklist/unban", post(unban))
        .route("/cache", get(cache))
}

/// A page that could not be built: the error's status with the message as text.
struct PageError(ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> PageError {
        PageError(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status;
        let body = layout(
            "Error",
            "",
            html! { p.error { (status.as_u16()) " — " (self.0.message) } },
        );
        (status, body).into_response()
    }
}

type Page = Result<Markup, PageError>;

fn layout(title: &str, active: &str, body: Markup) -> Markup {
    let nav = [
        ("/", "Overview"),
        ("/hot", "Hot keys"),
        ("/history", "History"),
        ("/blacklist", "Blacklists"),
        ("/cache", "Cache"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · hotkeys" }
                link rel="stylesheet" href="/assets/style.css";
                script src="/assets/live.js" defer {}
            }
            body {
                header {
                    span.brand { "hotkeys" }
                    nav {
                        @for (href, name) in nav {
                            a href=(href) class=[(name == active).then_some("active")] { (name) }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A `<select>` of the topology's counters that submits its form.
fn counter_picker(d: &Dashboard, current: &str) -> Markup {
    html! {
        label { "counter "
            select name="counter" {
                @for c in d.topology.counters() {
                    option value=(c.name) selected[c.name == current] { (c.name) }
                }
            }
        }
    }
}

async fn overview(State(d): State<Arc<Dashboard>>) -> Page {
    let sections = counter_sections(&d).await?;
    let recorder = d
        .with_zk(|zk| async move { zk.read_recorder().await })
        .await
        .map_err(ApiError::from)?;
    let queue = queue_status(&d).await;
    let ends = d.end_offsets.get().await;
    let nodes = d.nodes.states(&d.topology.redis).await;
    Ok(layout(
        &format!("Overview of {}", d.topology.name),
        "Overview",
        html! {
            @for (counter, views) in &sections {
                h2 { "Counter " code { (counter.name) } }
                p.meta { (counter_summary(counter)) }
                (tasks_table(views, ends.as_deref().map_or(&[][..], Vec::as_slice)))
            }
            @if let Err(e) = &ends { p.error { "end offsets unknown: " (e) } }
            h2 { "Replication" }
            (replication(&queue))
            h2 { "Redis nodes" }
            (nodes_table(&nodes))
            h2 { "History recorder" }
            (recorder_line(&d, &recorder))
        },
    ))
}

/// Each counter with its tasks' views, in the topology's order.
async fn counter_sections(d: &Dashboard) -> Result<Vec<(Counter, Vec<TaskView>)>, ApiError> {
    let mut sections = Vec::new();
    for counter in d.topology.counters() {
        let name = counter.name.clone();
        let views = d
            .with_zk(|zk| async move { zk.for_counter(&name).task_views().await })
            .await
            .map_err(ApiError::from)?;
        sections.push((counter, views));
    }
    Ok(sections)
}

/// The replication queue's status, or why it is unknown.
async fn queue_status(d: &Dashboard) -> Result<QueueStatus, String> {
    match d.queue().await {
        Ok(q) => q.status().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The replication queue's figures, or the error in their place.
fn replication(queue: &Result<QueueStatus, String>) -> Markup {
    html! {
        @match queue {
            Ok(s) => table.kv {
                tr { th { "queue" } td { code { (s.queue) } } }
                tr { th { "length" } td { (s.length) } }
                tr { th { "in flight" } td { (s.in_flight_batches) " batches, " (s.in_flight_ops) " ops" } }
                tr { th { "last acked stamp" } td { (s.acked) " of " (s.last_stamp) } }
                tr { th { "lag" } td { (format!("{:.1}s", s.lag_ms as f64 / 1000.0)) } }
                tr { th { "dead letters" } td { (s.dead) } }
            },
            Err(e) => p.error { (e) },
        }
    }
}

/// The configured Redis nodes with their backups and states.
fn nodes_table(nodes: &[NodeState]) -> Markup {
    html! {
        table.kv {
            thead { tr { th { "node" } th { "backup" } th { "state" } } }
            tbody {
                @for n in nodes {
                    tr {
                        td { code { (n.node) } }
                        td { @if let Some(b) = &n.backup { code { (b) } } }
                        td class=(n.state) { (n.state) }
                    }
                }
            }
        }
    }
}

/// Who records the history, how often, and for how long it is kept.
fn recorder_line(d: &Dashboard, recorder: &Option<(LockInfo, bool)>) -> Markup {
    html! {
        p {
            @match recorder {
                Some((holder, this)) => { code { (holder.holder()) } @if *this { " (this dashboard)" } },
                None => "none",
            }
            " · every " (humantime::format_duration(d.settings.record))
            " · kept " (humantime::format_duration(d.settings.retain))
        }
    }
}

fn counter_summary(counter: &Counter) -> String {
    let mut text = format!(
        "key {} · window {} · top {} · {:?}",
        counter.key,
        humantime::format_duration(counter.count.window),
        counter.count.top_n,
        counter.count.algorithm
    );
    if let Some(rule) = &counter.rule {
        text.push_str(&format!(" · bans at {} per window", rule.threshold));
    }
    text
}

/// The tasks of a counter; `ends` are the partitions' end offsets (empty when unknown).
fn tasks_table(views: &[TaskView], ends: &[i64]) -> Markup {
    let now = now_ms();
    html! {
        table {
            thead { tr {
                th { "task" } th { "owner" } th { "version" } th { "age" } th.num { "events" }
                th.num { "offset" } th.num { "end offset" } th.num { "lag" } th.num { "malformed" }
                th { "warmed" } th { "lock" }
            } }
            tbody {
                @for v in views {
                    @let hot = v.hot.as_ref();
                    tr {
                        td { (v.task) }
                        td { (hot.and_then(|h| h.value.owner.clone()).unwrap_or_default()) }
                        td { @if let Some(h) = hot { (h.version) } }
                        td { @if let Some(h) = hot { (seconds_ms(now - h.value.generated_at_ms)) } }
                        td.num { @if let Some(h) = hot { (h.value.events) } }
                        td.num { @if let Some(h) = hot { (h.value.offset) } }
                        @let end = ends.get(v.task as usize).copied();
                        td.num { @if let Some(e) = end { (e) } }
                        td.num { @if let (Some(h), Some(e)) = (hot, end) { ((e - h.value.offset).max(0)) } }
                        td.num { @if let Some(h) = hot { (h.value.malformed) } }
                        td {
                            @match (&v.warmed, v.is_warm()) {
                                (Some(w), true) => { "v" (w.value.hot_version) ", " (w.value.rows) " rows" },
                                (Some(w), false) => { "stale (v" (w.value.hot_version) ")" },
                                (None, _) => "-",
                            }
                        }
                        td { (v.lock.as_ref().map_or("-".to_string(), |l| l.value.holder())) }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct HotPageQuery {
    counter: Option<String>,
    top: Option<usize>,
    /// One key to look up.
    q: Option<String>,
}

async fn hot(State(d): State<Arc<Dashboard>>, Query(q): Query<HotPageQuery>) -> Page {
    let asked = HotQuery {
        counter: q.counter.clone(),
        top: q.top,
    };
    let (counter, top) = asked.resolve(&d)?;
    let view = hot_view(&d, &counter, counter.count.top_n).await?;
    let now = now_ms();
    let range = Range {
        from_ms: now - TREND.as_millis() as i64,
        to_ms: now,
    };
    let shown: Vec<_> = view.items.iter().take(top).collect();
    let keys: Vec<String> = shown.iter().map(|i| i.key.clone()).collect();
    // Trend lines need the history; without it the page still shows the counts.
    let (trends, unavailable) = match d.history() {
        Ok(h) => match within_budget(h.series_of(&counter.name, &keys, range)).await {
            Ok(trends) => (trends, None),
            Err(error) => {
                tracing::warn!(%error, "no trend lines");
                (Default::default(), Some(error))
            }
        },
        Err(_) => Default::default(),
    };
    let search = q.q.as_deref().filter(|s| !s.is_empty());
    let found = search.map(|s| {
        view.items
            .iter()
            .position(|i| i.key == s)
            .map(|p| (p + 1, &view.items[p]))
    });
    let stream = format!("/api/stream?counter={}&top={top}", urlencode(&counter.name));
    Ok(layout(
        "Hot keys",
        "Hot keys",
        html! {
            form.bar method="get" action="/hot" {
                (counter_picker(&d, &counter.name))
                label { "top " input type="number" name="top" min="1" max=(counter.count.top_n) value=(top); }
                label { "key " input type="search" name="q" value=[search] placeholder="find one key"; }
                button { "Show" }
            }
            @if let (Some(key), Some(found)) = (search, found) {
                p.search {
                    @match found {
                        Some((rank, item)) => { code { (key) } " is #" (rank) " with " (item.count) },
                        None => { code { (key) } " is not in the hot set of " (counter.name) },
                    }
                    " · " a href=(history_link(&counter.name, key)) { "history" }
                }
            }
            @if let Some(error) = &unavailable { (banner(error)) }
            p.meta #updated { "version " (view.id) " · " (charts::utc(view.at_ms)) }
            (hot_table(&counter.name, view.id, &shown, &trends, &stream, now))
            noscript { p.meta { "Reload the page for newer counts (live updates need JavaScript)." } }
        },
    ))
}

/// The live table of the hot-keys page; `live.js` rebuilds its rows from `stream` when an
/// event's id differs from `version`, the id of the view rendered here.
fn hot_table(
    counter: &str,
    version: i64,
    shown: &[&HotItem],
    trends: &HashMap<String, Vec<(i64, u64)>>,
    stream: &str,
    now: i64,
) -> Markup {
    html! {
        table #hot data-stream=(stream) data-counter=(counter) data-version=(version) {
            thead { tr { th.num { "#" } th { "key" } th.num { "count" } th.num { "± error" } th { "trend" } } }
            tbody {
                @for (i, item) in shown.iter().enumerate() {
                    tr data-key=(item.key) {
                        td.num { (i + 1) }
                        td { a href=(history_link(counter, &item.key)) { (item.key) } }
                        td.num.count { (item.count) }
                        td.num { (item.error.map_or(String::new(), |e| e.to_string())) }
                        td.trend { (PreEscaped(trend(trends.get(&item.key).map_or(&[][..], Vec::as_slice), now))) }
                    }
                }
            }
        }
    }
}

/// A key's trend line from its first recorded point in the trend span until now.
fn trend(points: &[(i64, u64)], now: i64) -> String {
    let Some(&(first, _)) = points.first() else {
        return String::new();
    };
    charts::sparkline(
        points,
        Range {
            from_ms: first,
            to_ms: now,
        },
    )
}

fn history_link(counter: &str, key: &str) -> String {
    format!(
        "/history?counter={}&key={}",
        urlencode(counter),
        urlencode(key)
    )
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for keys in links.
fn urlencode(text: &str) -> String {
    /// What RFC 3986 leaves unreserved: letters, digits and `-._~`.
    const RESERVED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    utf8_percent_encode(text, RESERVED).to_string()
}

#[derive(Deserialize)]
struct HistoryPageQuery {
    counter: Option<String>,
    key: Option<String>,
    range: Option<String>,
}

async fn history(State(d): State<Arc<Dashboard>>, Query(q): Query<HistoryPageQuery>) -> Page {
    let ranges = offered_ranges(&d);
    let span = q
        .range
        .clone()
        .filter(|r| ranges.iter().any(|(v, _)| v == r))
        .unwrap_or("1h".into());
    let asked = RangeQuery {
        counter: q.counter.clone(),
        key: q.key.clone(),
        from: Some(format!("-{span}")),
        to: None,
        n: None,
    };
    let counter = asked.counter(&d)?;
    let range = asked.range()?;
    ranked_range(&d, range)?;
    let key = q.key.as_deref().filter(|k| !k.is_empty());
    let read = read_history(d.history()?, &counter.name, key, range).await;
    let shown = HistoryShown {
        counter: &counter.name,
        key,
        span: &span,
        range,
    };
    Ok(layout(
        "History",
        "History",
        html! {
            (history_form(&d, &shown, &ranges))
            @if let Some(error) = &read.unavailable { (banner(error)) }
            @if let Some(k) = key {
                h2 { code { (k) } " over the last " (span) }
                @if read.points.is_empty() { p.meta { "nothing recorded for this key in the range" } }
                @else { figure.chart { (PreEscaped(charts::series(&read.points, range))) } }
            }
            h2 { "Top keys by their highest count, last " (span) }
            (top_keys_table(&shown, &read.top))
        },
    ))
}

/// What the history page shows: the counter, the key (if one was asked), the picked span
/// and the range it stands for.
struct HistoryShown<'a> {
    counter: &'a str,
    key: Option<&'a str>,
    span: &'a str,
    range: Range,
}

/// The history page's data; empty, with the reason, when the history did not answer
/// within [`PAGE_HISTORY_BUDGET`].
struct HistoryRead {
    points: Vec<(i64, u64)>,
    top: Vec<TopKey>,
    unavailable: Option<HistoryError>,
}

/// The key's series (when a key is asked) and the counter's top keys in `range`.
async fn read_history(
    history: &History,
    counter: &str,
    key: Option<&str>,
    range: Range,
) -> HistoryRead {
    let read = async {
        let points = match key {
            Some(k) => history.series(counter, k, range).await?,
            None => Vec::new(),
        };
        Ok((points, history.top(counter, range, 20).await?))
    };
    match within_budget(read).await {
        Ok((points, top)) => HistoryRead {
            points,
            top,
            unavailable: None,
        },
        Err(error) => HistoryRead {
            points: Vec::new(),
            top: Vec::new(),
            unavailable: Some(error),
        },
    }
}

/// The history page's picker: counter, key and range, with the CSV export of the range.
fn history_form(d: &Dashboard, shown: &HistoryShown, ranges: &[(&str, &str)]) -> Markup {
    let csv = format!(
        "/api/history.csv?counter={}&from={}&to={}",
        urlencode(shown.counter),
        shown.range.from_ms,
        shown.range.to_ms
    );
    html! {
        form.bar method="get" action="/history" {
            (counter_picker(d, shown.counter))
            label { "key " input type="search" name="key" value=[shown.key] placeholder="a key"; }
            label { "range "
                select name="range" {
                    @for (value, name) in ranges { option value=(value) selected[*value == shown.span] { (name) } }
                }
            }
            button { "Show" }
            a.button href=(csv) download { "Export CSV" }
        }
    }
}

/// The top keys by their highest count, each linking to its own history.
fn top_keys_table(shown: &HistoryShown, top: &[TopKey]) -> Markup {
    let span = shown.span;
    html! {
        table {
            thead { tr { th.num { "#" } th { "key" } th.num { "highest count" } } }
            tbody {
                @for (i, t) in top.iter().enumerate() {
                    tr {
                        td.num { (i + 1) }
                        td { a href=(format!("{}&range={span}", history_link(shown.counter, &t.key))) { (t.key) } }
                        td.num { (t.max) }
                    }
                }
            }
        }
    }
}

/// The picker's ranges that `dashboard.max_range` allows.
fn offered_ranges(d: &Dashboard) -> Vec<(&'static str, &'static str)> {
    RANGES
        .into_iter()
        .filter(|(value, _)| {
            humantime::parse_duration(value).is_ok_and(|r| r <= d.topology.dashboard.max_range)
        })
        .collect()
}

/// `read`, or why the history is unavailable once [`PAGE_HISTORY_BUDGET`] has passed.
async fn within_budget<T>(
    read: impl Future<Output = Result<T, HistoryError>>,
) -> Result<T, HistoryError> {
    tokio::time::timeout(PAGE_HISTORY_BUDGET, read)
        .await
        .unwrap_or(Err(HistoryError::TimedOut(PAGE_HISTORY_BUDGET)))
}

/// The banner of a page rendered without its history.
fn banner(error: &HistoryError) -> Markup {
    html! {
        p.banner role="status" {
            "history unavailable: the page shows live counts only ("
            (error) ")"
        }
    }
}

async fn blacklist(State(d): State<Arc<Dashboard>>) -> Page {
    let mut redis = d.redis.clone();
    let bans = bans(&d.topology, &mut redis, None)
        .await
        .map_err(ApiError::from)?;
    let ruled: Vec<Counter> = d
        .topology
        .counters()
        .into_iter()
        .filter(|c| c.rule.is_some())
        .collect();
    Ok(layout(
        "Blacklists",
        "Blacklists",
        html! {
            @if !d.writable() {
                p.meta { "Read-only: start the dashboard with a token (the variable named by dashboard.token_env) to unban." }
            }
            @if ruled.is_empty() { p.meta { "No counter of this topology has a threshold rule." } }
            @for counter in &ruled {
                h2 { "Counter " code { (counter.name) } }
                form.unban method="post" action="/blacklist/unban" {
                    input type="hidden" name="counter" value=(counter.name);
                    table {
                        thead { tr { th { "key" } th { "time left" } th {} } }
                        tbody {
                            @for ban in bans.iter().filter(|b| b.counter == counter.name) {
                                tr data-key=(ban.key) {
                                    td { (ban.key) }
                                    td { (remaining_text(ban.remaining_ms)) }
                                    td { button name="key" value=(ban.key) disabled[!d.writable()] { "Unban" } }
                                }
                            }
                        }
                    }
                    @if d.writable() {
                        label { "token " input type="password" name="token" autocomplete="off" required; }
                    }
                }
            }
        },
    ))
}

#[derive(Deserialize)]
struct UnbanForm {
    counter: String,
    key: String,
    #[serde(default)]
    token: String,
}

async fn unban(
    State(d): State<Arc<Dashboard>>,
    Form(form): Form<UnbanForm>,
) -> Result<Redirect, PageError> {
    authorize(d.token(), Some(&form.token))?;
    lift(&d, &form.counter, &[form.key]).await?;
    Ok(Redirect::to("/blacklist"))
}

async fn cache(State(d): State<Arc<Dashboard>>) -> Page {
    let diff = diff_report_on(&d.topology, &d.zk().await, &d.cache, None)
        .await
        .map_err(ApiError::from)?;
    Ok(layout(
        "Cache",
        "Cache",
        html! {
            p.meta { "Each task's hot keys against Redis, as " code { "hotctl diff" } " reports them." }
            table {
                thead { tr {
                    th { "task" } th.num { "warm" } th.num { "expired" } th.num { "missing" } th.num { "unknown" }
                } }
                tbody {
                    @for (task, c) in diff.counts_by_task() {
                        tr {
                            td { (task) } td.num { (c.warm) } td.num { (c.expired) } td.num { (c.missing) }
                            td.num { (c.unknown) }
                        }
                    }
                }
            }
            @for note in diff.notes() { p.error { (note) } }
        },
    ))
}

/// 404 for a page that does not exist, in the pages' layout.
pub fn not_found() -> Response {
    PageError(ApiError::new(StatusCode::NOT_FOUND, "no such page")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencode_leaves_only_unreserved_characters() {
        assert_eq!(urlencode("a b&c=<d>"), "a%20b%26c%3D%3Cd%3E");
        assert_eq!(urlencode("10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn key_text_is_escaped_in_the_layout() {
        let page = layout("t", "", html! { td { ("<script>alert(1)</script>") } }).into_string();
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
        assert!(!page.contains("<script>alert"), "{page}");
    }
}
