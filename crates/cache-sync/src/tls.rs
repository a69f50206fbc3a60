//! TLS on the replication path: the receiver's HTTPS server (rustls, `sync.tls_cert` and
//! `sync.tls_key`) and the shipper's HTTP client, which verifies an `https` remote against
//! the system's root certificates, or only against `sync.tls_ca` when it is set. Plain HTTP
//! is for loopback: the shipper warns when it sends batches in clear to another host.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hotkeys::config::SyncConfig;
use hotkeys::config::secret::NodeUrl;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::error::Error;

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 1024;

/// The shipper's HTTP client: `sync.timeout` per request, TLS roots as configured.
pub fn client(sync: &SyncConfig) -> Result<reqwest::Client, Error> {
    let mut builder = reqwest::Client::builder()
        .timeout(sync.timeout)
        .connect_timeout(sync.timeout.min(Duration::from_secs(5)));
    if sync.tls_ca.is_empty() {
        builder = builder
            .tls_built_in_webpki_certs(false)
            .tls_built_in_native_certs(true);
    } else {
        let pem = std::fs::read(&sync.tls_ca)
            .map_err(|e| Error::Config(format!("sync.tls_ca `{}`: {e}", sync.tls_ca)))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| Error::Config(format!("sync.tls_ca `{}`: {e}", sync.tls_ca)))?;
        if certs.is_empty() {
            return Err(Error::Config(format!(
                "sync.tls_ca `{}`: no PEM certificate in it",
                sync.tls_ca
            )));
        }
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| Error::Config(format!("HTTP client: {e}")))
}

/// Warns once when batches go over plain HTTP to a host that is not this machine.
pub fn warn_if_plain_remote(remote: &NodeUrl) {
    let Ok(url) = reqwest::Url::parse(remote.expose()) else {
        return;
    };
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if url.scheme() == "http" && !loopback {
        tracing::warn!(%remote, "sync.remote is plain http to another host: anyone on the path can read the batches; serve the receiver over https (sync.tls_cert, sync.tls_key)");
    }
}

/// The receiver's TLS acceptor, when `sync.tls_cert` and `sync.tls_key` are set.
pub fn acceptor(sync: &SyncConfig) -> Result<Option<TlsAcceptor>, Error> {
    if sync.tls_cert.is_empty() {
        return Ok(None);
    }
    let bad = |key: &str, path: &str, e: &dyn std::fmt::Display| {
        Error::Config(format!("{key} `{path}`: {e}"))
    };
    let certs = CertificateDer::pem_file_iter(&sync.tls_cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad("sync.tls_cert", &sync.tls_cert, &e))?;
    if certs.is_empty() {
        return Err(bad(
            "sync.tls_cert",
            &sync.tls_cert,
            &"no PEM certificate in it",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&sync.tls_key)
        .map_err(|e| bad("sync.tls_key", &sync.tls_key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("sync.tls_key", &sync.tls_key, &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// Serves `router` over HTTPS on `listener` until `stop`, then lets the connections finish
/// the requests under way. At most `MAX_CONNECTIONS` at once; a handshake gets `handshake`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    acceptor: TlsAcceptor,
    handshake: Duration,
    stop: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = accept(&listener, &slots) => accepted,
            () = &mut stop => break,
        };
        let (tcp, permit) = accepted;
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!("TLS handshake timed out"),
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
}

/// The next connection, once a slot is free. Failed accepts (out of file descriptors) are
/// logged and retried after a pause, not a busy loop.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (tokio::net::TcpStream, tokio::sync::OwnedSemaphorePermit) {
    let permit = Arc::clone(slots)
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => return (tcp, permit),
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
