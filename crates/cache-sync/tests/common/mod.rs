//! What the integration tests share: the two real Redis servers of the local stack
//! (`scripts/stack.sh up`), unique names per test, topologies and an in-process receiver.
//!
//! Addresses come from `.stack/env`'s variables: `HOTKEYS_REDIS_NODES` (first node: the
//! local data centre, default 127.0.0.1:6379) and `REMOTE_REDIS_URL` (the remote one,
//! default 127.0.0.1:6380). A test skips when a server is unreachable, except with `CI` set,
//! where it fails.
//!
//! [`RedisCluster`] is different: it starts a throwaway Redis Cluster of the test's own
//! (`redis-server` and `redis-cli` must be installed) and fails the test when it cannot.

#![allow(dead_code)]

use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cache_sync::receive::{self, Receiver, StreamState};
use cache_sync::ship::{ShipSummary, Shipper};
use hotkeys::Topology;
use hotkeys::cli::shutdown::CancellationToken;
use hotkeys::sync_queue::{QueueStatus, SyncQueue};
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
            if std::env::var_os("CI").is_some() {
                panic!(
                    "Redis at {url} is unreachable: {e} (CI is set: start the stack with scripts/stack.sh up)"
                );
            }
            eprintln!("SKIPPED {test}: Redis at {url} is unreachable: {e}");
            return None;
        }
    }
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let id = format!(
        "t{}-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        hotkeys::sync_queue::now_ms() % 100_000_000,
        test
    );
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
        let conn = hotkeys::cache::RedisConn::connect_home(&remote_redis(t))
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

/// A throwaway Redis Cluster of three masters on free loopback ports, with its files in a
/// temporary directory. Dropping it kills its processes.
pub struct RedisCluster {
    /// `redis://127.0.0.1:<port>` of each master: the seeds of a cluster client.
    pub seeds: Vec<String>,
    nodes: Vec<ClusterNode>,
    dir: tempfile::TempDir,
}

struct ClusterNode {
    port: u16,
    child: Child,
}

/// Longest wait for any one step of starting a cluster; only there so a broken set-up
/// fails instead of hanging.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(60);

impl RedisCluster {
    /// Starts three `redis-server --cluster-enabled yes` processes, joins them with
    /// `redis-cli --cluster create`, and waits until every node reports `cluster_state:ok`.
    /// Panics (failing the test) if any step fails.
    pub fn start() -> RedisCluster {
        let dir = tempfile::Builder::new()
            .prefix("hotkeys-redis-cluster-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let mut cluster = RedisCluster {
            seeds: Vec::new(),
            nodes: Vec::new(),
            dir,
        };
        // From here on a panic drops `cluster`, which kills the nodes started so far.
        for _ in 0..3 {
            let node = cluster.start_node();
            cluster
                .seeds
                .push(format!("redis://127.0.0.1:{}", node.port));
            cluster.nodes.push(node);
        }
        cluster.create();
        cluster.wait_until_ok();
        cluster
    }

    /// Keys held by each master, in the order of `seeds`.
    pub fn keys_per_node(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|node| {
                let mut conn = node_connection(node.port).expect("cluster node unreachable");
                redis::cmd("DBSIZE").query(&mut conn).unwrap()
            })
            .collect()
    }

    /// One node on free ports, answering as the process just started. A port taken by
    /// someone else between choosing and binding it makes the server exit: choose again.
    fn start_node(&self) -> ClusterNode {
        let mut failures = Vec::new();
        for _ in 0..5 {
            let (port, bus_port) = (testing::free_port(), testing::free_port());
            let log = self.dir.path().join(format!("redis-{port}.log"));
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-port", &bus_port.to_string()])
                .arg("--cluster-config-file")
                .arg(self.dir.path().join(format!("nodes-{port}.conf")))
                .arg("--dir")
                .arg(self.dir.path())
                .arg("--logfile")
                .arg(&log)
                .args(["--appendonly", "no", "--save", ""])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run redis-server (apt-get install redis-server): {e}")
                });
            let deadline = Instant::now() + CLUSTER_DEADLINE;
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    failures.push(format!(
                        "redis-server on port {port} exited ({status}):\n{}",
                        tail(&log)
                    ));
                    break;
                }
                // The answer must come from our process, not from a stranger on the port.
                let pid = node_connection(port).ok().and_then(|mut conn| {
                    let info: String = redis::cmd("INFO").arg("server").query(&mut conn).ok()?;
                    info_field(&info, "process_id")?.parse::<u32>().ok()
                });
                if pid == Some(child.id()) {
                    return ClusterNode { port, child };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "redis-server on port {port} did not answer within {CLUSTER_DEADLINE:?}:\n{}",
                        tail(&log)
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("cannot start a cluster node:\n{}", failures.join("\n"));
    }

    /// Assigns the slots over the three masters.
    fn create(&self) {
        let out = self.dir.path().join("cluster-create.out");
        let file = File::create(&out).unwrap();
        let mut child = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-cli (apt-get install redis-tools): {e}"));
        let deadline = Instant::now() + CLUSTER_DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "redis-cli --cluster create did not finish within {CLUSTER_DEADLINE:?}:\n{}",
                    tail(&out)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "redis-cli --cluster create failed ({status}):\n{}",
            tail(&out)
        );
    }

    /// Waits until every node sees all slots covered and all three masters.
    fn wait_until_ok(&self) {
        let deadline = Instant::now() + CLUSTER_DEADLINE;
        for node in &self.nodes {
            loop {
                let info = node_connection(node.port)
                    .and_then(|mut conn| {
                        redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut conn)
                    })
                    .unwrap_or_else(|e| e.to_string());
                if info_field(&info, "cluster_state") == Some("ok")
                    && info_field(&info, "cluster_known_nodes") == Some("3")
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster node {} not ready within {CLUSTER_DEADLINE:?}:\n{info}\n{}",
                    node.port,
                    tail(&self.dir.path().join(format!("redis-{}.log", node.port)))
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
        }
        for node in &mut self.nodes {
            let _ = node.child.wait();
        }
    }
}

fn node_connection(port: u16) -> redis::RedisResult<redis::Connection> {
    let conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))?
        .get_connection_with_timeout(Duration::from_secs(1))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(conn)
}

/// The value of `field` in an `INFO` / `CLUSTER INFO` reply.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// The last lines of a log, for failure messages.
fn tail(path: &Path) -> String {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
