//! `hotctl dashboard`: one server with the web UI, the JSON API, the SSE push stream and the
//! hot-key history recorder of one topology.
//!
//! | module | owns |
//! |---|---|
//! | `admit` | what a request passes first: allowed `Host`, `Origin` of a POST, concurrency and time limits |
//! | `settings` | the flags of `hotctl dashboard`, combined with the topology's `[dashboard]` |
//! | `state` | what every request shares: topology, the one session per server, token, live hot sets |
//! | `hub` | one `hotkeys::zk::subscribe` subscription per counter, fanned out to every client |
//! | `query` | which counter and how many keys a request of the live hot set asks for |
//! | `api` | the JSON routes under `/api/` and their bounds |
//! | `stream` | `GET /api/stream`: Server-Sent Events with resumable ids and heartbeats |
//! | `slots` | the bound on open streams: a slot per client, `dashboard.max_streams` at most |
//! | `auth` | the write token: `Authorization: Bearer` or the unban form's field |
//! | `history` | the `hot_history` table: inserts, retention, series, top keys, CSV rows |
//! | `record` | the recorder: one dashboard at a time (ZooKeeper try-lock) writes history |
//! | `pages` | the server-rendered HTML pages (maud escapes every key) |
//! | `charts` | SVG charts drawn by plotters on the server |
//! | `probe` | Kafka end offsets (one client, cached) and Redis node states, for the overview and `/api/tasks` |
//! | `assets` | the stylesheet and the live-update script, compiled into the binary |
//!
//! The server is read-only unless `dashboard.token_env` names a set variable, and listens on
//! loopback unless told otherwise. On SIGINT/SIGTERM it stops within [`STOP_LIMIT`] plus
//! the recorder's release of its lock, whatever its dependencies do.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use hotkeys::Topology;

use crate::error::Context;

mod admit;
mod api;
mod assets;
mod auth;
mod charts;
mod error;
mod history;
mod hub;
mod pages;
mod probe;
mod query;
mod record;
mod settings;
mod slots;
mod state;
mod stream;

pub use settings::DashboardArgs;
use settings::Settings;
use state::Dashboard;

/// How long open requests may go on after a stop signal before the server stops without
/// them.
const STOP_LIMIT: Duration = Duration::from_secs(6);
/// How long the recorder may take to stop and release its lock after the server stopped.
const RECORDER_STOP_LIMIT: Duration = Duration::from_secs(3);

pub async fn run(topology: &Topology, args: DashboardArgs) -> crate::error::Result<()> {
    let settings = Settings::resolve(topology, &args)?;
    if let Some(addr) = args.metrics {
        hotkeys::cli::telemetry::serve_metrics(addr)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("--metrics {addr}"))?;
    }
    if !settings.listen.ip().is_loopback() {
        tracing::warn!(listen = %settings.listen,
            "the dashboard listens beyond loopback: whoever reaches it reads hot keys and bans");
    }
    let shutdown = hotkeys::cli::shutdown::on_signals();
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("listening on {}", settings.listen))?;
    let dashboard = tokio::select! {
        started = Dashboard::start(topology, settings.clone(), shutdown.clone()) => Arc::new(started?),
        () = shutdown.cancelled() => return Ok(()),
    };
    let recorder = tokio::spawn(record::run(dashboard.clone()));
    let addr = listener.local_addr().context("listening address")?;
    println!("dashboard of `{}` on http://{addr}/", topology.name);
    tracing::info!(%addr, record = ?settings.record, retain = ?settings.retain,
        writable = dashboard.writable(), "serving the dashboard");
    let server = axum::serve(listener, router(dashboard))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let served = tokio::select! {
        served = server => served.context("serving the dashboard"),
        () = after_stop(&shutdown, STOP_LIMIT) => {
            tracing::warn!(limit = ?STOP_LIMIT, "requests still open after the stop signal: stopping without them");
            Ok(())
        }
    };
    shutdown.cancel();
    match tokio::time::timeout(RECORDER_STOP_LIMIT, recorder).await {
        Ok(stopped) => stopped.context("the recorder task")?,
        Err(_) => {
            tracing::warn!("the recorder did not stop in time; its lock ends with the session")
        }
    }
    served
}

/// Returns `limit` after `shutdown` was cancelled.
async fn after_stop(shutdown: &hotkeys::cli::shutdown::CancellationToken, limit: Duration) {
    shutdown.cancelled().await;
    tokio::time::sleep(limit).await;
}

fn router(dashboard: Arc<Dashboard>) -> Router {
    let limits = &dashboard.topology.dashboard;
    let hosts = Arc::new(admit::Hosts::new(
        dashboard.settings.listen,
        &limits.allowed_hosts,
    ));
    let (max_requests, timeout) = (limits.max_requests, limits.request_timeout);
    let routes = Router::new()
        .merge(api::routes())
        .merge(pages::routes())
        .merge(assets::routes())
        .fallback(|| async { pages::not_found() })
        .with_state(dashboard);
    admit::limited(routes, max_requests, timeout)
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::middleware::from_fn_with_state(
            hosts,
            admit::check_host_and_origin,
        ))
}

/// Keys come from the public access log: besides escaping them, pages run no script and
/// load nothing that is not served from here, and no response may be sniffed or framed.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Links carry keys, which must not leave for other sites; `same-origin` rather than
    // `no-referrer`, under which browsers send `Origin: null` with the unban form, which
    // `admit` cannot tell from a foreign page's.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}
