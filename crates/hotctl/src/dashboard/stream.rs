//! `GET /api/stream?counter=C&top=N`: Server-Sent Events for any language.
//!
//! Each event carries the JSON of `/api/hot` and `id:` = the view's id (the zxid of the
//! newest publish it reflects, which only grows, across a reset too). The first event is the current set; after that, one event per
//! change. A client that reconnects with `Last-Event-ID` (browsers' `EventSource` does so
//! on its own) gets the current set at once if anything was published since that id, and
//! otherwise waits for the next change: no repeat, no gap. Comment lines every
//! [`HEARTBEAT`] keep proxies from closing a quiet stream; streams end on shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};

use super::ApiError;
use super::api::HotQuery;
use super::hub::Latest;
use super::state::Dashboard;

/// Interval of the heartbeat comments.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// What a browser waits before reconnecting after the stream broke.
const RETRY: Duration = Duration::from_secs(2);

pub async fn stream(
    State(d): State<Arc<Dashboard>>,
    Query(q): Query<HotQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (counter, top) = q.resolve(&d)?;
    let latest = d
        .hub
        .latest(&counter.name)
        .ok_or_else(|| ApiError::not_found(format!("no live set of `{}`", counter.name)))?;
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let cursor = Cursor {
        latest,
        last_id,
        _open: ClientGauge::new(),
    };
    let events = futures::stream::unfold(cursor, move |mut cursor| async move {
        let view = next_view(&mut cursor.latest, cursor.last_id).await?;
        let event = Event::default()
            .id(view.id.to_string())
            .retry(RETRY)
            .json_data(view.truncated(top))
            .unwrap_or_else(|_| Event::default().comment("unserializable view"));
        metrics::counter!("hotkeys_dashboard_stream_events_total").increment(1);
        cursor.last_id = Some(view.id);
        Some((Ok(event), cursor))
    })
    .take_until(d.shutdown.clone().cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat")))
}

/// Where one client's stream is.
struct Cursor {
    latest: Latest,
    /// The id of the last view this client has (sent, or named by `Last-Event-ID`).
    last_id: Option<i64>,
    _open: ClientGauge,
}

/// Counts open streams in `hotkeys_dashboard_stream_clients` while it lives.
struct ClientGauge;

impl ClientGauge {
    fn new() -> ClientGauge {
        metrics::gauge!("hotkeys_dashboard_stream_clients").increment(1.0);
        ClientGauge
    }
}

impl Drop for ClientGauge {
    fn drop(&mut self) {
        metrics::gauge!("hotkeys_dashboard_stream_clients").decrement(1.0);
    }
}

/// The next view whose id differs from `last_id`; `None` when the hub has stopped.
async fn next_view(latest: &mut Latest, last_id: Option<i64>) -> Option<Arc<super::hub::HotView>> {
    loop {
        let current = latest.borrow_and_update().clone();
        if let Some(view) = current
            && Some(view.id) != last_id
        {
            return Some(view);
        }
        latest.changed().await.ok()?;
    }
}
