//! Support for the workspace's integration tests (feature `testing`): a topology pointed at
//! the local stack (`scripts/stack.sh`, whose `.stack/env` sets the `HOTKEYS_*` overrides)
//! with names no other test uses, so tests can share the servers and run in parallel; and
//! [`RedisServer`], a redis-server or sentinel of a test's own that it may kill and restart.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::Topology;

/// The repository's `topology/default.toml`.
pub fn default_topology_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../topology/default.toml")
}

/// A name unique to this test process and call: `<prefix>-<pid>-<n>-<nanos>`.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The default topology with this process's overrides, isolated under a unique name: its
/// own ZooKeeper subtree, Kafka topic and group, Redis key space and replication queue.
pub fn topology(test: &str) -> Topology {
    let mut t = Topology::load(&default_topology_path()).expect("topology/default.toml loads");
    let id = unique(test);
    t.name = id.clone();
    t.kafka.topic = format!("{id}-access");
    t.kafka.group = format!("{id}-group");
    t.redis.key = format!("{id}:product:{{key}}");
    t.sync.queue = format!("{id}:FIFO");
    t.sync.replicate = vec![format!("{id}:product:")];
    t
}

/// One access event for [`produce`]: the message key, its value, and an optional timestamp.
pub struct Record {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub timestamp_ms: Option<i64>,
}

impl Record {
    /// An OpenResty-format event for product `key`.
    pub fn openresty(key: &str) -> Record {
        Record::openresty_from(key, "10.0.0.1")
    }

    /// A plain-key event: the product id as the message key, an empty value.
    pub fn plain(key: &str) -> Record {
        Record {
            key: Some(key.to_string()),
            payload: Vec::new(),
            timestamp_ms: None,
        }
    }

    /// An OpenResty-format event for product `key` requested by caller address `ip`
    /// (`/headers/x-real-ip`).
    pub fn openresty_from(key: &str, ip: &str) -> Record {
        let payload = format!(
            r#"{{"request_module":"product_detail_info","headers":{{"host":"shop.example","user-agent":"test","x-real-ip":"{ip}"}},"uri_args":{{"productId":"{key}","shopId":"1"}},"http_version":1.1,"method":"GET","raw_reader":"GET /product?productId={key}&shopId=1 HTTP/1.1\r\n","body_data":null}}"#
        );
        Record {
            key: Some(key.to_string()),
            payload: payload.into_bytes(),
            timestamp_ms: None,
        }
    }
}

/// Creates the topology's topic if needed and publishes `records` with the project's
/// producer settings, waiting for every delivery. Panics on failure: it is test set-up.
pub async fn produce(topology: &Topology, records: impl IntoIterator<Item = Record>) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    crate::kafka::ensure_topic(&topology.kafka)
        .await
        .expect("Kafka reachable (is scripts/stack.sh up?)");
    let producer: FutureProducer = crate::kafka::producer_config(&topology.kafka)
        .create()
        .expect("producer");
    let mut pending = Vec::new();
    for r in records {
        let mut fr = FutureRecord::to(&topology.kafka.topic).payload(&r.payload);
        if let Some(k) = &r.key {
            fr = fr.key(k);
        }
        if let Some(ts) = r.timestamp_ms {
            fr = fr.timestamp(ts);
        }
        pending.push(
            producer
                .send_result(fr)
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
        if pending.len() >= 10_000 {
            for p in pending.drain(..) {
                p.await.expect("delivery").expect("delivered");
            }
        }
    }
    for p in pending {
        p.await.expect("delivery").expect("delivered");
    }
}

/// Polls `check` every 100 ms until it returns `Some`, panicking with `what` after
/// `seconds`. The deadline only guards against hanging; it measures nothing.
pub async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A TCP forwarder a test can cut, to partition a client from a server (e.g. to let a
/// ZooKeeper session expire) without disturbing anyone else using the server.
pub struct TcpProxy {
    pub addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
}

impl TcpProxy {
    /// Starts forwarding a fresh loopback port to `target`.
    pub async fn start(target: &str) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (cut, watch) = tokio::sync::watch::channel(false);
        let target = target.to_string();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if *watch.borrow() {
                    continue;
                }
                let target = target.clone();
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        TcpProxy { addr, cut }
    }

    /// Drops every connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

/// The `HOTKEYS_*` variables of this process that override topology keys: a test removes
/// them from a child's environment so that they cannot point it elsewhere than the topology
/// it is given. The variables holding secrets (`mysql.password_env`, `sync.secret_env`) are
/// not overrides and stay.
pub fn topology_overrides() -> Vec<String> {
    let t = Topology::default();
    std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("HOTKEYS_"))
        .filter(|k| *k != t.mysql.password_env && *k != t.sync.secret_env)
        .collect()
}

/// Writes `topology` to a fresh file for a child process's `--topology`.
pub fn write_topology(topology: &Topology) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", unique("topology")));
    let text = toml::to_string(topology).expect("topology serializes");
    std::fs::write(&path, text).expect("write topology");
    path
}

/// The end offset (high watermark) of every partition of the topology's topic.
pub fn end_offsets(topology: &Topology) -> Vec<i64> {
    let ends = crate::kafka::end_offsets(&topology.kafka).expect("watermarks");
    assert!(!ends.is_empty(), "topic {} exists", topology.kafka.topic);
    ends
}

/// Publishes `keys`, hottest first, as the next version of `task`'s hot list the way a
/// hot-counter would (with an empty checkpoint); returns the new version. For tests and
/// benchmarks that need hot lists without running the counting pipeline.
pub async fn publish_hot_list(
    zk: &crate::zk::Zk,
    topology: &str,
    task: u32,
    keys: &[String],
    owner: &str,
) -> Result<i32, crate::zk::ZkError> {
    use crate::hotlist::{HotItem, HotList, now_ms};
    zk.ensure_task(task).await?;
    let seen = zk.read_hot(task).await.ok().flatten().map(|h| h.version);
    let n = keys.len() as u64;
    let hot = HotList {
        topology: topology.to_string(),
        task,
        version: i64::from(seen.map_or(0, |v| v + 1)),
        generated_at_ms: now_ms(),
        window_ms: 300_000,
        owner: Some(owner.to_string()),
        events: n * (n + 1) / 2,
        items: keys
            .iter()
            .enumerate()
            .map(|(i, k)| HotItem {
                key: k.clone(),
                count: n - i as u64,
                error: None,
            })
            .collect(),
        ..HotList::default()
    };
    let bytes = serde_json::to_vec(&hot).expect("hot list serializes");
    zk.publish(task, seen, &bytes, Some(b"{}")).await
}

/// The text of the Prometheus endpoint on `127.0.0.1:port` (`--metrics`); `None` while
/// nothing answers there.
pub async fn scrape_metrics(port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    Some(body)
}

/// A redis-server (or sentinel) of the test's own on a free loopback port, without
/// persistence; killed when dropped. For tests that stop, restart or fail over a node
/// without disturbing the shared stack.
pub struct RedisServer {
    pub port: u16,
    args: Vec<String>,
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl RedisServer {
    /// A plain node.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// A replica of the node on `master_port`.
    pub fn replica_of(master_port: u16) -> RedisServer {
        RedisServer::start_with(&["--replicaof", "127.0.0.1", &master_port.to_string()])
    }

    /// A sentinel monitoring the node on `master_port` as `name`, alone (quorum 1). Tests
    /// fail over with `SENTINEL FAILOVER`; the 5 s down-after keeps a starved CI machine
    /// from failing over on its own first.
    pub fn sentinel(name: &str, master_port: u16) -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique("sentinel"));
        std::fs::create_dir_all(&dir).expect("sentinel dir");
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {name} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {name} 5000\n\
                 sentinel failover-timeout {name} 3000\n",
                dir = dir.display()
            ),
        )
        .expect("sentinel.conf");
        // Debian's redis-sentinel is redis-server started in sentinel mode.
        let mut server = RedisServer {
            port,
            args: vec![conf.display().to_string(), "--sentinel".into()],
            dir,
            child: None,
        };
        server.spawn();
        server
    }

    /// A plain node with extra redis-server arguments.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique("redis"));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            &dir.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = RedisServer {
            port,
            args,
            dir,
            child: None,
        };
        server.spawn();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH (scripts/stack.sh installs it)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let client = redis::Client::open(self.url()).expect("url");
        loop {
            let pong = client
                .get_connection_with_timeout(std::time::Duration::from_secs(1))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            // A server started with `--requirepass` answers NOAUTH: it is up as well.
            if pong.as_ref().is_ok() || pong.is_err_and(|e| e.code() == Some("NOAUTH")) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server on port {} did not start",
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port nothing listens on now, never the same twice in this process: tests of
/// one binary run in parallel, and the OS may hand a just-released port out again.
pub fn free_port() -> u16 {
    static TAKEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        if !taken.contains(&port) {
            taken.push(port);
            return port;
        }
    }
}
