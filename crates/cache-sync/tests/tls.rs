//! HTTPS between shipper and receiver with a certificate made at test time: the shipper
//! trusting it through `sync.tls_ca` replicates; one trusting only the system's roots
//! refuses to send to it.

mod common;

use std::path::Path;

use common::{cache_sync, topology_file};
use hotkeys::Topology;
use hotkeys::sync::{Op, SyncQueue};
use hotkeys::testing;

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files in `dir`:
/// (certificate, key).
fn certificate(dir: &Path) -> (String, String) {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    (cert.display().to_string(), key.display().to_string())
}

/// The topology file of `t` with extra `[sync]` keys.
fn with_sync_keys(t: &Topology, keys: &[(&str, &str)]) -> tempfile::NamedTempFile {
    let file = topology_file(t);
    let text = std::fs::read_to_string(file.path()).unwrap();
    let mut table: toml::Table = text.parse().unwrap();
    let sync = table.get_mut("sync").unwrap().as_table_mut().unwrap();
    for (key, value) in keys {
        sync.insert((*key).into(), toml::Value::String((*value).into()));
    }
    std::fs::write(file.path(), toml::to_string(&table).unwrap()).unwrap();
    file
}

async fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_travel_over_https_to_a_receiver_the_shipper_trusts_through_tls_ca() {
    let Some(mut stack) = common::stack("tls").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let mut t = stack.topology();
    t.sync.listen = format!("127.0.0.1:{}", testing::free_port());
    t.sync.remote = format!("https://{}/sync", t.sync.listen);
    t.sync.retries = 2;
    let receiving = with_sync_keys(&t, &[("tls_cert", &cert), ("tls_key", &key)]);
    let mut receiver = cache_sync(receiving.path()).arg("receive").spawn().unwrap();
    testing::eventually(30, "the receiver to listen", || async {
        tokio::net::TcpStream::connect(&t.sync.listen).await.ok()
    })
    .await;
    let queue = SyncQueue::connect(&t.redis, &t.sync).await.unwrap();
    let key_name = format!("{}k", stack.prefix());
    queue
        .enqueue(&Op::set(key_name.clone(), "over-tls", None))
        .await
        .unwrap();

    // Only the system's roots: the self-signed certificate is refused, nothing is sent.
    let untrusting = with_sync_keys(&t, &[]);
    let out = cache_sync(untrusting.path())
        .args(["ship", "--until-empty"])
        .output()
        .await
        .unwrap();
    let text = output_text(&out).await;
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("certificate"), "{text}");

    let trusting = with_sync_keys(&t, &[("tls_ca", &cert)]);
    let out = cache_sync(trusting.path())
        .args(["ship", "--until-empty"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out).await);
    let value: Option<String> = redis::cmd("GET")
        .arg(&key_name)
        .query_async(&mut stack.remote)
        .await
        .unwrap();
    assert_eq!(value.as_deref(), Some("over-tls"));

    // Plain HTTP to the HTTPS port gets no answer.
    let plain = reqwest::get(format!("http://{}/healthz", t.sync.listen)).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    receiver.start_kill().unwrap();
    receiver.wait().await.unwrap();
    stack.cleanup().await;
}
