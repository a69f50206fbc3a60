//! Replication through the cases where a stream can no longer be trusted, on the real Redis
//! servers: the sender's queue state goes back (a meta hash rolled back by hand, a real
//! failover to a replica that lagged), the receiver loses its records, a captured request
//! is replayed after that loss or long after it was signed, and a receiver that answers 409
//! again and again. Servers that are killed or stopped are the test's own.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use cache_sync::ship::ShipSummary;
use common::{RunningReceiver, SECRET, Stack, cache_sync, ship_until_empty, topology_file};
use hotkeys::Topology;
use hotkeys::sync::{Op, SyncQueue, now_ms};
use hotkeys::testing::{self, RedisServer};

/// Guards against a hang only: a shipper that recovers needs a few seconds.
const HANG: Duration = Duration::from_secs(90);

/// Queues `n` sets of `<prefix><tag><i>` to `<tag><i>` and returns the keys.
async fn enqueue(stack: &Stack, t: &Topology, tag: &str, n: usize) -> Vec<String> {
    let queue = SyncQueue::connect(&t.redis, &t.sync).await.unwrap();
    let keys: Vec<String> = (0..n)
        .map(|i| format!("{}{tag}{i}", stack.prefix()))
        .collect();
    let ops: Vec<Op> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Op::set(k.clone(), format!("{tag}{i}"), None))
        .collect();
    assert_eq!(queue.enqueue_many(&ops).await.unwrap(), n);
    keys
}

/// How many of `keys` the remote Redis does not hold with their value `<tag><i>`.
async fn missing_on_remote(stack: &mut Stack, tag: &str, keys: &[String]) -> usize {
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("GET").arg(k);
    }
    let values: Vec<Option<String>> = pipe.query_async(&mut stack.remote).await.unwrap();
    values
        .iter()
        .enumerate()
        .filter(|(i, v)| v.as_deref() != Some(format!("{tag}{i}").as_str()))
        .count()
}

async fn ship_guarded(t: &Topology) -> ShipSummary {
    tokio::time::timeout(HANG, ship_until_empty(t))
        .await
        .expect("the shipper drains the queue instead of cycling forever")
}

fn meta_key(t: &Topology) -> String {
    format!("{{{}}}:meta", t.sync.queue)
}

fn small_batches(stack: &Stack, remote: &str) -> Topology {
    let mut t = stack.topology();
    t.sync.remote = remote.to_string();
    t.sync.batch = 100;
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meta_hash_rolled_back_two_batches_loses_none_of_the_operations_queued_after() {
    let Some(mut stack) = common::stack("rollback").await else {
        return;
    };
    let receiver = RunningReceiver::start(&stack.topology(), "127.0.0.1:0").await;
    let t = small_batches(&stack, &receiver.url());
    let before = enqueue(&stack, &t, "before", 1000).await;
    ship_guarded(&t).await;
    assert_eq!(missing_on_remote(&mut stack, "before", &before).await, 0);

    // The state node goes back two batches, as a restore from an older copy would.
    for field in ["stamp", "acked"] {
        redis::cmd("HINCRBY")
            .arg(meta_key(&t))
            .arg(field)
            .arg(-2)
            .query_async::<()>(&mut stack.local)
            .await
            .unwrap();
    }
    let after = enqueue(&stack, &t, "after", 1000).await;
    let summary = ship_guarded(&t).await;
    assert_eq!(
        missing_on_remote(&mut stack, "after", &after).await,
        0,
        "operations queued after the rollback are missing on the remote"
    );
    assert_eq!(summary.resets, 1, "one incident, one reset: {summary:?}");
    receiver.stop().await;
    stack.cleanup().await;
}

/// `INFO replication` field of the server on `port`.
fn replication_field(port: u16, field: &str) -> Option<String> {
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .ok()?
        .get_connection_with_timeout(Duration::from_secs(2))
        .ok()?;
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut conn)
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

fn server_pid(port: u16) -> String {
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    let info: String = redis::cmd("INFO").arg("server").query(&mut conn).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .to_string()
}

fn signal(pid: &str, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_a_replica_that_lagged_loses_no_operation() {
    let Some(mut stack) = common::stack("failover").await else {
        return;
    };
    let mut primary = RedisServer::start();
    let replica = RedisServer::replica_of(primary.port);
    testing::eventually(30, "the replica's link to be up", || async {
        (replication_field(replica.port, "master_link_status")? == "up").then_some(())
    })
    .await;
    let receiver = RunningReceiver::start(&stack.topology(), "127.0.0.1:0").await;
    let mut t = small_batches(&stack, &receiver.url());
    t.redis.nodes = vec![primary.url()];
    let first = enqueue(&stack, &t, "first", 500).await;
    ship_guarded(&t).await;
    let offset = replication_field(primary.port, "master_repl_offset").unwrap();
    testing::eventually(30, "the replica to catch up", || async {
        (replication_field(replica.port, "slave_repl_offset")? == offset).then_some(())
    })
    .await;

    // The replica stops while the primary takes and ships five more batches. Its link is cut
    // first: otherwise what the primary sends waits in the stopped replica's socket buffer
    // and is read on SIGCONT, and the replica would not lag after all.
    let replica_pid = server_pid(replica.port);
    signal(&replica_pid, "-STOP");
    let mut on_primary = redis::Client::open(primary.url())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("replica")
        .query::<i64>(&mut on_primary)
        .unwrap();
    let lost_with_primary = enqueue(&stack, &t, "second", 500).await;
    ship_guarded(&t).await;
    primary.kill();
    signal(&replica_pid, "-CONT");
    let mut promote = redis::Client::open(replica.url())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query::<()>(&mut promote)
        .unwrap();

    t.redis.nodes = vec![replica.url()];
    let third = enqueue(&stack, &t, "third", 1000).await;
    let summary = ship_guarded(&t).await;
    assert_eq!(summary.resets, 1, "one incident, one reset: {summary:?}");
    assert_eq!(missing_on_remote(&mut stack, "first", &first).await, 0);
    assert_eq!(
        missing_on_remote(&mut stack, "second", &lost_with_primary).await,
        0,
        "what the receiver applied before the failover stays"
    );
    assert_eq!(
        missing_on_remote(&mut stack, "third", &third).await,
        0,
        "operations queued on the promoted replica are missing on the remote"
    );
    receiver.stop().await;
    stack.cleanup().await;
}

/// Deletes the receiving side's records of every stream of `t`'s queue.
async fn lose_receiver_records(stack: &mut Stack, t: &Topology) {
    let pattern = format!("cache-sync:stream:{}*", t.sync.queue);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut stack.remote)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the receiver kept a record");
    redis::cmd("DEL")
        .arg(&keys)
        .query_async::<()>(&mut stack.remote)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_receiver_loses_its_records_replication_resumes_without_an_operator() {
    let Some(mut stack) = common::stack("receiver_loss").await else {
        return;
    };
    let receiver = RunningReceiver::start(&stack.topology(), "127.0.0.1:0").await;
    let mut t = small_batches(&stack, &receiver.url());
    let before = enqueue(&stack, &t, "before", 1000).await;
    ship_guarded(&t).await;
    assert_eq!(missing_on_remote(&mut stack, "before", &before).await, 0);

    receiver.stop().await;
    lose_receiver_records(&mut stack, &t).await;
    let receiver = RunningReceiver::start(&stack.topology(), "127.0.0.1:0").await;
    t.sync.remote = receiver.url();
    let after = enqueue(&stack, &t, "after", 300).await;
    let summary = ship_guarded(&t).await;
    assert_eq!(summary.resets, 1, "one incident, one reset: {summary:?}");
    assert_eq!(missing_on_remote(&mut stack, "after", &after).await, 0);
    receiver.stop().await;
    stack.cleanup().await;
}

/// A request as the shipper sent it: path, the headers that matter, body.
#[derive(Clone)]
struct Captured {
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// An HTTP relay in front of a receiver that keeps a copy of every request: what someone
/// on the path of plain HTTP could capture.
struct Wiretap {
    addr: std::net::SocketAddr,
    captured: Arc<Mutex<Vec<Captured>>>,
}

impl Wiretap {
    async fn start(upstream: String) -> Wiretap {
        let captured = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&captured);
        let client = reqwest::Client::new();
        let relay = move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
            let (log, client, upstream) = (Arc::clone(&log), client.clone(), upstream.clone());
            async move {
                let kept: Vec<(String, String)> = headers
                    .iter()
                    .filter(|(name, _)| {
                        name.as_str().starts_with("x-hotkeys") || *name == "content-encoding"
                    })
                    .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                    .collect();
                let request = Captured {
                    path: uri.path().to_string(),
                    headers: kept,
                    body,
                };
                log.lock().unwrap().push(request.clone());
                let response = send(&client, &upstream, &request).await;
                (response.0, response.1)
            }
        };
        let app = axum::Router::new().fallback(axum::routing::post(relay));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Wiretap { addr, captured }
    }

    fn url(&self) -> String {
        format!("http://{}/sync", self.addr)
    }

    fn first_batch(&self) -> Captured {
        self.captured
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.path == "/sync")
            .cloned()
            .expect("a batch went through")
    }
}

/// Sends `request` again to the receiver at `base` (`http://host:port`).
async fn send(client: &reqwest::Client, base: &str, request: &Captured) -> (StatusCode, String) {
    let mut builder = client
        .post(format!("{base}{}", request.path))
        .header("content-type", "application/json")
        .body(request.body.clone());
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    let response = builder.send().await.unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_batch_replayed_after_the_receiver_lost_its_records_applies_nothing() {
    let Some(mut stack) = common::stack("replay_after_loss").await else {
        return;
    };
    let receiver = RunningReceiver::start(&stack.topology(), "127.0.0.1:0").await;
    let wiretap = Wiretap::start(format!("http://{}", receiver.addr)).await;
    let mut t = small_batches(&stack, &wiretap.url());
    let key = enqueue(&stack, &t, "old", 1).await.remove(0);
    ship_guarded(&t).await;
    let captured = wiretap.first_batch();
    t.sync.remote = receiver.url();
    let queue = SyncQueue::connect(&t.redis, &t.sync).await.unwrap();
    queue
        .enqueue(&Op::set(key.clone(), "new", None))
        .await
        .unwrap();
    ship_guarded(&t).await;

    receiver.stop().await;
    lose_receiver_records(&mut stack, &t).await;
    let receiver = RunningReceiver::start(&stack.topology(), "127.0.0.1:0").await;
    let client = reqwest::Client::new();
    let (status, text) = send(&client, &format!("http://{}", receiver.addr), &captured).await;
    let value: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut stack.remote)
        .await
        .unwrap();
    assert_eq!(
        value.as_deref(),
        Some("new"),
        "the replay answered {status} {text} and overwrote the newer value"
    );
    assert_ne!(status, StatusCode::OK, "{text}");
    receiver.stop().await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_signed_longer_ago_than_max_skew_is_refused_with_401_saying_why() {
    let Some(mut stack) = common::stack("skew").await else {
        return;
    };
    let receiver = RunningReceiver::start(&stack.topology(), "127.0.0.1:0").await;
    let key = format!("{}k", stack.prefix());
    let signed_ms = now_ms() - 10 * 60 * 1000;
    let body = format!(
        r#"{{"stream":"test:{}:s","stamp":1,"sent_ms":{signed_ms},"ops":[{{"op":"delete","key":"{key}","at_ms":{signed_ms}}}]}}"#,
        stack.id
    );
    let signature = cache_sync::wire::sign(SECRET.as_bytes(), body.as_bytes());
    let response = reqwest::Client::new()
        .post(receiver.url())
        .header(cache_sync::wire::SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("sync.max_skew"), "{text}");
    receiver.stop().await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_answers_409_again_and_again_makes_the_shipper_give_up_after_sync_retries()
{
    let Some(mut stack) = common::stack("endless_409").await else {
        return;
    };
    let conflict = || async {
        (
            StatusCode::CONFLICT,
            r#"{"error":"stamp skips ahead: expects 1"}"#,
        )
    };
    let issue = || async { r#"{"stream":"endless@1"}"# };
    let app = axum::Router::new()
        .route("/sync", axum::routing::post(conflict))
        .route("/sync/streams", axum::routing::post(issue));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut t = small_batches(&stack, &format!("http://{addr}/sync"));
    t.sync.retries = 3;
    enqueue(&stack, &t, "k", 10).await;
    let file = topology_file(&t);
    let out = tokio::time::timeout(HANG, cache_sync(file.path()).arg("ship").output())
        .await
        .expect("the shipper gives up instead of re-sending forever")
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stack.cleanup().await;
}
