//! `hotctl dashboard`: one server with the web UI, the JSON API, the SSE push stream and the
//! hot-key history recorder of one topology.
//!
//! | module | owns |
//! |---|---|
//! | `state` | what every request shares: topology, sessions, token, live hot sets |
//! | `hub` | one `hotkeys::subscribe` subscription per counter, fanned out to every client |
//! | `api` | the JSON routes under `/api/` and their bounds |
//! | `stream` | `GET /api/stream`: Server-Sent Events with resumable ids and heartbeats |
//! | `auth` | the write token: `Authorization: Bearer` or the unban form's field |
//! | `history` | the `hot_history` table: inserts, retention, series, top keys, CSV rows |
//! | `record` | the recorder: one dashboard at a time (ZooKeeper try-lock) writes history |
//! | `pages` | the server-rendered HTML pages (maud escapes every key) |
//! | `charts` | SVG charts drawn by plotters on the server |
//! | `probe` | Kafka end offsets and Redis node states, for the overview and `/api/tasks` |
//! | `assets` | the stylesheet and the live-update script, compiled into the binary |
//!
//! The server is read-only unless `dashboard.token_env` names a set variable, and listens on
//! loopback unless told otherwise.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use clap::Args;
use hotkeys::Topology;

mod api;
mod assets;
mod auth;
mod charts;
mod error;
mod history;
mod hub;
mod pages;
mod probe;
mod record;
mod state;
mod stream;

pub use error::ApiError;
use state::Dashboard;

#[derive(Args)]
pub struct DashboardArgs {
    /// Address to serve on; `dashboard.listen` of the topology when absent.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// How often to record every counter's merged top N into MySQL (0 = never);
    /// `dashboard.record` when absent.
    #[arg(long, value_parser = humantime::parse_duration)]
    record: Option<Duration>,
    /// How long recorded rows are kept; `dashboard.retain` when absent.
    #[arg(long, value_parser = humantime::parse_duration)]
    retain: Option<Duration>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9466).
    #[arg(long)]
    metrics: Option<SocketAddr>,
}

/// The settings after flags and topology are combined.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Zero: this dashboard never records.
    pub record: Duration,
    pub retain: Duration,
}

impl Settings {
    fn resolve(topology: &Topology, args: &DashboardArgs) -> anyhow::Result<Settings> {
        let listen = match args.listen {
            Some(a) => a,
            None => topology
                .dashboard
                .listen
                .parse()
                .context("dashboard.listen")?,
        };
        Ok(Settings {
            listen,
            record: args.record.unwrap_or(topology.dashboard.record),
            retain: args.retain.unwrap_or(topology.dashboard.retain),
        })
    }
}

pub async fn run(topology: &Topology, args: DashboardArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(topology, &args)?;
    if let Some(addr) = args.metrics {
        hotkeys::telemetry::serve_metrics(addr).with_context(|| format!("--metrics {addr}"))?;
    }
    if !settings.listen.ip().is_loopback() {
        tracing::warn!(listen = %settings.listen,
            "the dashboard listens beyond loopback: whoever reaches it reads hot keys and bans");
    }
    let shutdown = hotkeys::shutdown::on_signals();
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("listening on {}", settings.listen))?;
    let dashboard = Arc::new(Dashboard::start(topology, settings.clone(), shutdown.clone()).await?);
    let recorder = tokio::spawn(record::run(dashboard.clone()));
    let addr = listener.local_addr().context("listening address")?;
    println!("dashboard of `{}` on http://{addr}/", topology.name);
    tracing::info!(%addr, record = ?settings.record, retain = ?settings.retain,
        writable = dashboard.writable(), "serving the dashboard");
    let served = axum::serve(listener, router(dashboard))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("serving the dashboard");
    shutdown.cancel();
    recorder.await.context("the recorder task")?;
    served
}

fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .merge(api::routes())
        .merge(pages::routes())
        .merge(assets::routes())
        .fallback(|| async { pages::not_found() })
        .layer(axum::middleware::map_response(security_headers))
        .with_state(dashboard)
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
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
