//! What a request passes before any route runs.
//!
//! - Its `Host` is one this dashboard serves: the loopback names, the listen address and
//!   `dashboard.allowed_hosts`. A DNS-rebinding page reaches the loopback port under its own
//!   name, so refusing foreign names keeps it from reading anything (421).
//! - A POST that carries `Origin` (browsers send it) comes from a served host (403).
//! - At most `dashboard.max_requests` run at once (503 past it, never a queue) and each has
//!   `dashboard.request_timeout` to answer (504). SSE streams hold a slot only while they
//!   open; their number has its own cap (`stream`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::http::uri::Authority;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::timeout::TimeoutLayer;
use tower::{BoxError, ServiceBuilder};

/// Characters of a refused name quoted back in the reason.
const MAX_QUOTED: usize = 100;

/// The host names this dashboard answers for, lower-case; each a name or `name:port`.
#[derive(Debug, Clone)]
pub struct Hosts {
    names: Vec<String>,
}

impl Hosts {
    pub fn new(listen: SocketAddr, allowed: &[String]) -> Hosts {
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "[::1]"].map(String::from).into();
        if !listen.ip().is_unspecified() {
            names.push(
                Authority::try_from(listen.to_string())
                    .map_or_else(|_| listen.ip().to_string(), |a| a.host().to_string()),
            );
        }
        names.extend(allowed.iter().map(|h| h.trim().to_ascii_lowercase()));
        Hosts { names }
    }

    /// Whether `authority` (a `Host` value or an origin's `host[:port]`) is served here.
    pub fn allows(&self, authority: &str) -> bool {
        let Ok(parsed) = Authority::try_from(authority) else {
            return false;
        };
        let full = parsed.as_str().to_ascii_lowercase();
        let name = parsed.host().to_ascii_lowercase();
        self.names.iter().any(|n| *n == full || *n == name)
    }
}

/// The middleware: refuses a foreign `Host`, and a POST from a foreign `Origin`.
pub async fn check_host_and_origin(
    State(hosts): State<Arc<Hosts>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "a request without Host is not served",
        );
    };
    if !hosts.allows(host) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            &format!(
                "Host `{}` is not served here: list it in dashboard.allowed_hosts",
                quoted(host)
            ),
        );
    }
    if request.method() == Method::POST
        && let Some(origin) = headers.get(header::ORIGIN)
        && !origin_allowed(&hosts, origin)
    {
        return refuse(
            StatusCode::FORBIDDEN,
            &format!(
                "Origin `{}` may not post here: only pages of this dashboard may",
                quoted(origin.to_str().unwrap_or("?"))
            ),
        );
    }
    next.run(request).await
}

/// An `Origin` (`scheme://host[:port]`, or `null` from sandboxed pages) of a served host.
fn origin_allowed(hosts: &Hosts, origin: &HeaderValue) -> bool {
    origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .is_some_and(|(_, authority)| hosts.allows(authority))
}

fn quoted(text: &str) -> String {
    text.chars().take(MAX_QUOTED).collect()
}

/// A refusal: one line of text.
fn refuse(status: StatusCode, reason: &str) -> Response {
    (status, format!("{reason}\n")).into_response()
}

/// `routes` under the concurrency limit and timeout of every route (tower layers): past
/// `max_requests` running requests the next is answered 503 at once; one that takes longer
/// than `timeout` is answered 504.
pub fn limited(routes: Router, max_requests: usize, timeout: Duration) -> Router {
    routes.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(overloaded))
            .layer(TimeoutLayer::new(timeout))
            .layer(LoadShedLayer::new())
            .layer(GlobalConcurrencyLimitLayer::new(max_requests)),
    )
}

/// The answer when a layer of [`limited`] stopped a request.
async fn overloaded(error: BoxError) -> Response {
    if error.is::<tower::timeout::error::Elapsed>() {
        return refuse(
            StatusCode::GATEWAY_TIMEOUT,
            "the request took longer than dashboard.request_timeout",
        );
    }
    let mut busy = refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many requests at once (dashboard.max_requests); retry shortly",
    );
    busy.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    busy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Hosts {
        Hosts::new(
            "127.0.0.1:8490".parse().unwrap(),
            &["Dash.Example".into(), "ops:9000".into()],
        )
    }

    #[test]
    fn loopback_names_the_listen_address_and_listed_hosts_are_served() {
        let h = hosts();
        for ok in [
            "localhost:8490",
            "127.0.0.1",
            "[::1]:8490",
            "dash.example",
            "DASH.example:1",
            "ops:9000",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "localhost.evil.example:8490",
            "ops:9001",
            "",
            "a b",
        ] {
            assert!(!h.allows(refused), "{refused}");
        }
    }

    #[test]
    fn an_origin_is_allowed_only_for_a_served_host() {
        let h = hosts();
        let origin = |o: &'static str| HeaderValue::from_static(o);
        assert!(origin_allowed(&h, &origin("http://127.0.0.1:8490")));
        assert!(!origin_allowed(&h, &origin("http://evil.example")));
        assert!(!origin_allowed(&h, &origin("null")));
    }
}
