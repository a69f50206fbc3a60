//! `GET /api/stream?counter=C&top=N`: Server-Sent Events for any language.
//!
//! Each event carries the JSON of `/api/hot` and `id:` = the view's id (the zxid of the
//! newest publish it reflects, which only grows, across a reset too). The first event is the current set; after that, one event per
//! change. A client that reconnects with `Last-Event-ID` (browsers' `EventSource` does so
//! on its own) gets the current set at once if anything was published since that id, and
//! otherwise waits for the next change: no repeat, no gap. Comment lines every
//! [`HEARTBEAT`] keep proxies from closing a quiet stream; streams end on shutdown.
//!
//! Bounds: at most `dashboard.max_streams` streams are open (503 with `Retry-After` past
//! it, see [`super::slots`]); every client of a (counter, top) gets the same bytes (`hub::Published::frame`);
//! a client is only ever handed the latest set, and one that has not taken an event for
//! [`STALLED`] loses its slot: its stream ends instead of anything being kept for it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};

use super::error::ApiError;
use super::hub::{Latest, Published};
use super::query::HotQuery;
use super::slots::Slot;
use super::state::Dashboard;

/// Interval of the heartbeat comments.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// How long a client may leave an event untaken before its stream ends.
pub const STALLED: Duration = Duration::from_secs(30);
/// What a refused client is told to wait before trying again, in seconds.
const RETRY_AFTER: &str = "5";

pub async fn stream(
    State(d): State<Arc<Dashboard>>,
    Query(q): Query<HotQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (counter, top) = q.resolve(&d)?;
    let latest = d
        .hub
        .latest(&counter.name)
        .ok_or_else(|| ApiError::not_found(format!("no live set of `{}`", counter.name)))?;
    let Some(slot) = d.streams.take() else {
        return Ok(refused(d.streams.max));
    };
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    // Capacity 0: each sender has one place, so nothing piles up for a slow client.
    let (tx, rx) = mpsc::channel(0);
    let cursor = Cursor {
        latest,
        last_id,
        top,
    };
    tokio::spawn(feed(cursor, tx, slot, d.shutdown.clone()));
    let body = Body::from_stream(rx.map(Ok::<_, Infallible>));
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

fn refused(max: usize) -> Response {
    let mut response = ApiError::unavailable(format!(
        "{max} streams are open, the most this dashboard serves (dashboard.max_streams)"
    ))
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
    response
}

/// Where one client's stream is.
struct Cursor {
    latest: Latest,
    /// The id of the last view this client has (sent, or named by `Last-Event-ID`).
    last_id: Option<i64>,
    top: usize,
}

/// Hands the client each new view and a heartbeat when quiet, until it goes away, stops
/// taking events, or the server stops.
async fn feed(
    mut cursor: Cursor,
    mut tx: mpsc::Sender<Bytes>,
    _slot: Slot,
    shutdown: hotkeys::cli::shutdown::CancellationToken,
) {
    loop {
        let next = tokio::select! {
            view = next_view(&mut cursor.latest, cursor.last_id) => view,
            () = tokio::time::sleep(HEARTBEAT) => Next::Heartbeat,
            () = shutdown.cancelled() => return,
        };
        let bytes = match next {
            Next::View(view) => {
                cursor.last_id = Some(view.view.id);
                metrics::counter!("hotkeys_dashboard_stream_events_total").increment(1);
                view.frame(cursor.top)
            }
            Next::Heartbeat => Bytes::from_static(b": heartbeat\n\n"),
            Next::HubStopped => return,
        };
        match tokio::time::timeout(STALLED, tx.send(bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                metrics::counter!("hotkeys_dashboard_stream_stalled_total").increment(1);
                return;
            }
        }
    }
}

/// What a stream sends next.
enum Next {
    View(Arc<Published>),
    Heartbeat,
    HubStopped,
}

/// The next view whose id differs from `last_id`.
async fn next_view(latest: &mut Latest, last_id: Option<i64>) -> Next {
    loop {
        let current = latest.borrow_and_update().clone();
        if let Some(published) = current
            && Some(published.view.id) != last_id
        {
            return Next::View(published);
        }
        if latest.changed().await.is_err() {
            return Next::HubStopped;
        }
    }
}
