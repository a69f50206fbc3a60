//! What the integration tests share: the two real Redis servers of the local stack
//! (`scripts/stack.sh up`), unique names per test, topologies and an in-process receiver.
//!
//! Addresses come from `.stack/env`'s variables: `HOTKEYS_REDIS_NODES` (first node: the
//! local data centre, default 127.0.0.1:6379) and `REMOTE_REDIS_URL` (the remote one,
//! default 127.0.0.1:6380). A test skips when a server is unreachable, except with `CI` set,
//! where it fails (`hotkeys::testing::unavailable`).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use cache_sync::receive::{self, Receiver, StreamState};
use cache_sync::ship::{ShipSummary, Shipper};
use hotkeys::Topology;
use hotkeys::cli::shutdown::CancellationToken;
use hotkeys::sync::{QueueStatus, SyncQueue};
use hotkeys::testing;
use redis::aio::MultiplexedConnection;

pub const SECRET: &str = "integration-test-secret";

pub fn local_url() -> String {
    std::env::var("HOTKEYS_REDIS_NODES")
        .ok()
        .and_then(|v| v.split(',').next().map(|s| s.trim().to_string()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
}

pub fn remote_url() -> String {
    std::env::var("REMOTE_REDIS_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6380".into())
}

/// Connections to both data centres' Redis servers, and this test's unique name.
pub struct Stack {
    pub local_url: String,
    pub remote_url: String,
    pub local: MultiplexedConnection,
    pub remote: MultiplexedConnection,
    /// Unique per test and process; every key and queue of the test contains it.
    pub id: String,
}

async fn connect(url: &str) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(30)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    redis::cmd("PING").query_async::<()>(&mut conn).await?;
    Ok(conn)
}

/// Connects to both servers; `None` (skip) when one is down, a panic under CI.
pub async fn stack(test: &str) -> Option<Stack> {
    let (local_url, remote_url) = (local_url(), remote_url());
    for url in [&local_url, &remote_url] {
        if let Err(e) = connect(url).await {
            testing::unavailable(format_args!("{test}: Redis at {url} is unreachable: {e}"));
            return None;
        }
    }
    let id = testing::unique(test);
    Some(Stack {
        local: connect(&local_url).await.ok()?,
        remote: connect(&remote_url).await.ok()?,
        local_url,
        remote_url,
        id,
    })
}

impl Stack {
    /// Prefix of this test's cache keys; it is also the only replicated prefix.
    pub fn prefix(&self) -> String {
        format!("test:{}:", self.id)
    }

    /// A topology with this test's queue and prefix, the local server as the cache, and the
    /// remote server as the receiving side.
    pub fn topology(&self) -> Topology {
        let mut t = Topology::default();
        t.redis.nodes = vec![self.local_url.clone()];
        t.sync.apply_nodes = vec![self.remote_url.clone()];
        t.sync.queue = format!("test:{}:FIFO", self.id);
        t.sync.replicate = vec![self.prefix()];
        t.sync.timeout = Duration::from_secs(10);
        t.sync.retry_max = Duration::from_millis(300);
        t
    }

    pub async fn queue(&self, t: &Topology) -> SyncQueue {
        SyncQueue::connect(&t.redis, &t.sync).await.unwrap()
    }

    pub async fn status(&self, t: &Topology) -> QueueStatus {
        self.queue(t).await.status().await.unwrap()
    }

    /// The receiving side's record of the test queue's stream.
    pub async fn stream_state(&self, t: &Topology) -> StreamState {
        let stream = self
            .status(t)
            .await
            .stream
            .expect("a shipper started the stream");
        let conn = hotkeys::redis::RedisConn::connect_home(&remote_redis(t))
            .await
            .unwrap();
        receive::stream_state(&conn, &stream).await.unwrap()
    }

    /// Deletes every key of this test on both servers.
    pub async fn cleanup(&mut self) {
        let pattern = format!("*{}*", self.id);
        for conn in [&mut self.local, &mut self.remote] {
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(10_000)
                    .query_async(conn)
                    .await
                    .unwrap();
                if !keys.is_empty() {
                    redis::cmd("DEL")
                        .arg(&keys)
                        .query_async::<()>(conn)
                        .await
                        .unwrap();
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
    }
}

/// The `[redis]` settings of the receiving side of `t`.
pub fn remote_redis(t: &Topology) -> hotkeys::config::RedisConfig {
    let mut redis = t.redis.clone();
    redis.nodes = t.sync.apply_nodes.clone();
    redis
}

/// A receiver served in this process.
pub struct RunningReceiver {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), cache_sync::Error>>,
}

impl RunningReceiver {
    /// Starts a receiver for `t` on `addr` (`127.0.0.1:0` for any free port).
    pub async fn start(t: &Topology, addr: &str) -> RunningReceiver {
        let receiver = Receiver::connect(t, SECRET).await.unwrap();
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(receive::serve(
            listener,
            Arc::new(receiver),
            shutdown.clone(),
        ));
        RunningReceiver {
            addr,
            shutdown,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/sync", self.addr)
    }

    /// Stops serving and waits until the port is closed.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Writes `t` to a file the `cache-sync` binary can load.
pub fn topology_file(t: &Topology) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), toml::to_string(t).unwrap()).unwrap();
    file
}

/// The real binary, with an environment that cannot override the test's topology.
pub fn cache_sync(topology: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cache-sync"));
    cmd.env_clear()
        .env("HOTKEYS_SYNC_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .arg("--topology")
        .arg(topology)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Ships the queue of `t` in this process until it is empty.
pub async fn ship_until_empty(t: &Topology) -> ShipSummary {
    let queue = SyncQueue::connect(&t.redis, &t.sync).await.unwrap();
    let shipper = Shipper::new(queue, &t.sync, SECRET).unwrap();
    shipper.run(CancellationToken::new(), true).await.unwrap()
}

/// Value and remaining TTL (ms; -1 no expiry, -2 absent) of each key.
pub async fn snapshot(
    conn: &mut MultiplexedConnection,
    keys: &[String],
) -> Vec<(Option<Vec<u8>>, i64)> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("GET").arg(key).cmd("PTTL").arg(key);
        }
        let replies: Vec<redis::Value> = pipe.query_async(conn).await.unwrap();
        for pair in replies.chunks(2) {
            let value: Option<Vec<u8>> = redis::from_redis_value(pair[0].clone()).unwrap();
            let ttl: i64 = redis::from_redis_value(pair[1].clone()).unwrap();
            out.push((value, ttl));
        }
    }
    out
}

/// Asserts both data centres hold the same value for every key, with TTLs within a second.
pub async fn assert_same_state(stack: &mut Stack, keys: &[String]) {
    let local = snapshot(&mut stack.local, keys).await;
    let remote = snapshot(&mut stack.remote, keys).await;
    let mut present = 0;
    for ((key, l), r) in keys.iter().zip(&local).zip(&remote) {
        assert_eq!(l.0, r.0, "value of {key}");
        if l.0.is_some() {
            present += 1;
            let ttls_agree = if l.1 < 0 || r.1 < 0 {
                l.1 == r.1
            } else {
                (l.1 - r.1).abs() <= 1000
            };
            assert!(
                ttls_agree,
                "TTL of {key}: local {} ms, remote {} ms",
                l.1, r.1
            );
        }
    }
    eprintln!("{present} of {} keys present on both sides", keys.len());
}
