//! Helpers of prewarm's integration tests, against the real servers of `scripts/stack.sh`.
//!
//! Every test gets its own topology name (so its own ZooKeeper subtree), its own Redis key
//! prefix and replication queue (`hotkeys::testing::topology`), and shares one catalogue:
//! products `1..=CATALOGUE` of seed `SEED` in the database `hotkeys_test`, seeded once and
//! idempotently. Keys from `ABSENT` up never exist. Tests therefore run in parallel with each
//! other and with anything else using the stack.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use hotkeys::Topology;
use hotkeys::config::{MysqlConfig, ZookeeperConfig};
use hotkeys::hotlist::{LockInfo, Warmed};
use hotkeys::mysql::{self, Pool};
use hotkeys::testing;
use hotkeys::zk::Zk;
use prewarm::Summary;
use redis::AsyncCommands;

/// Products in the shared test catalogue.
pub const CATALOGUE: u64 = 5_000;
/// Seed of the shared test catalogue.
pub const SEED: u64 = 42;
/// First id that is never in the catalogue.
pub const ABSENT: u64 = 10_000_000;
/// Upper bound on any wait: a broken server fails a test instead of hanging it.
pub const PATIENCE: u64 = 90;

/// The database the tests use, next to the configured one (the stack grants `hotkeys_*`).
pub fn test_db_url(url: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("mysql.url has a database path");
    format!("{base}/hotkeys_test")
}

/// A pool on the test catalogue (`test`), created through `admin` (the configured
/// database), migrated and seeded on first use.
pub async fn catalogue(admin: &MysqlConfig, test: &MysqlConfig) -> Pool {
    static READY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    READY
        .get_or_init(|| async {
            let pool = mysql::connect(admin, Duration::from_secs(10))
                .await
                .expect("MySQL");
            sqlx::query("CREATE DATABASE IF NOT EXISTS hotkeys_test CHARACTER SET utf8mb4")
                .execute(&pool)
                .await
                .expect("create database hotkeys_test");
            pool.close().await;
            let pool = mysql::connect(test, Duration::from_secs(10))
                .await
                .expect("MySQL");
            mysql::migrate(&pool).await.expect("migrate");
            let have: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM products WHERE id BETWEEN 1 AND ?")
                    .bind(CATALOGUE as i64)
                    .fetch_one(&pool)
                    .await
                    .expect("count products");
            if have != CATALOGUE as i64 {
                mysql::seed(&pool, CATALOGUE, SEED).await.expect("seed");
            }
            pool.close().await;
        })
        .await;
    mysql::connect(test, Duration::from_secs(10))
        .await
        .expect("MySQL")
}

/// Keys as strings.
pub fn keys(ids: impl IntoIterator<Item = u64>) -> Vec<String> {
    ids.into_iter().map(|i| i.to_string()).collect()
}

/// Tests of this binary share MySQL, except one that reads MariaDB's global counters: it
/// waits for the others and runs alone ([`Fixture::alone`]).
static MYSQL_TURN: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A test's turn at MySQL, held as long as its fixture.
enum Turn {
    Shared(tokio::sync::RwLockReadGuard<'static, ()>),
    Alone(tokio::sync::RwLockWriteGuard<'static, ()>),
}

/// One test's world: a topology file for the child processes, and clients to inspect it.
pub struct Fixture {
    pub t: Topology,
    pub path: PathBuf,
    pub zk: Zk,
    pub redis: redis::aio::MultiplexedConnection,
    _turn: Turn,
}

impl Fixture {
    /// A fresh topology for `test`, with `adjust` applied; `None` when the stack is down.
    pub async fn new(test: &str, adjust: impl FnOnce(&mut Topology)) -> Option<Fixture> {
        let turn = Turn::Shared(MYSQL_TURN.read().await);
        Fixture::with_turn(test, adjust, turn).await
    }

    /// Like [`Fixture::new`], with no other test of this binary using MySQL meanwhile, so
    /// that the server's global counters count this test's queries alone.
    pub async fn alone(test: &str, adjust: impl FnOnce(&mut Topology)) -> Option<Fixture> {
        let turn = Turn::Alone(MYSQL_TURN.write().await);
        Fixture::with_turn(test, adjust, turn).await
    }

    async fn with_turn(
        test: &str,
        adjust: impl FnOnce(&mut Topology),
        turn: Turn,
    ) -> Option<Fixture> {
        let mut t = testing::topology(test);
        let admin = t.mysql.clone();
        t.mysql.url = test_db_url(&t.mysql.url);
        let test_db = t.mysql.clone();
        // The test inspects the real Redis even when the child is pointed at a proxy.
        let real_redis = t.redis.nodes[0].clone();
        // Short sessions: a killed holder's lock goes quickly (the stack allows 1 s).
        t.zookeeper.session_timeout = Duration::from_secs(2);
        t.sync.replicate = Vec::new();
        adjust(&mut t);
        let mut probe = t.clone();
        probe.mysql = test_db.clone();
        probe.redis.nodes = vec![real_redis.clone()];
        if !testing::servers_are_up(&probe) {
            return None;
        }
        catalogue(&admin, &test_db).await.close().await;
        let path = testing::write_topology(&t);
        // The test's own client keeps the default session: with 2 s, zookeeper-client drops
        // the connection after 800 ms without a reply, and one slow fsync would fail a read.
        let mut own = t.clone();
        own.zookeeper.session_timeout = ZookeeperConfig::default().session_timeout;
        let zk = Zk::connect(&own).await.expect("ZooKeeper");
        let redis = redis::Client::open(real_redis.as_str())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("Redis");
        Some(Fixture {
            t,
            path,
            zk,
            redis,
            _turn: turn,
        })
    }

    /// Publishes `keys` as the next version of `task`'s hot list; returns the version.
    pub async fn publish(&self, task: u32, keys: &[String]) -> i32 {
        hotkeys::testing::publish_hot_list(&self.zk, &self.t.name, task, keys, "test")
            .await
            .expect("publish")
    }

    /// Publishes bytes that are not a hot list.
    pub async fn publish_raw(&self, task: u32, bytes: &[u8]) {
        self.zk.ensure_task(task).await.expect("ensure task");
        self.zk
            .publish(task, None, bytes, Some(b"{}"))
            .await
            .expect("publish");
    }

    /// `prewarm --topology <this> …`, without the `HOTKEYS_*` overrides of the test's own
    /// environment (they would point the child elsewhere than this topology).
    pub fn prewarm(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_prewarm"));
        for k in hotkeys::testing::topology_overrides() {
            cmd.env_remove(k);
        }
        cmd.arg("--topology")
            .arg(&self.path)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// `prewarm --watch --json --interval 200ms`, serving its metrics on the port returned.
    pub fn watch_with_metrics(&self) -> (tokio::process::Child, u16) {
        let port = testing::free_port();
        let metrics = format!("127.0.0.1:{port}");
        let args = [
            "--watch",
            "--json",
            "--interval",
            "200ms",
            "--metrics",
            &metrics,
        ];
        let child = self.prewarm(&args).spawn().expect("spawn prewarm");
        (child, port)
    }

    /// Runs `prewarm --json …` to the end: exit code, summary, stderr.
    pub async fn run(&self, args: &[&str]) -> (i32, Summary, String) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.prewarm(&all).output().await.expect("run prewarm");
        finished(out)
    }

    pub async fn warmed(&self, task: u32) -> Option<Warmed> {
        self.zk
            .read_warmed(task)
            .await
            .expect("read warmed")
            .map(|w| w.value)
    }

    pub async fn lock(&self, task: u32) -> Option<LockInfo> {
        self.zk
            .read_lock(task)
            .await
            .expect("read lock")
            .map(|l| l.value)
    }

    /// Tasks whose lock node exists.
    pub async fn locked_tasks(&self) -> Vec<u32> {
        let mut locked = Vec::new();
        for task in self.zk.list_tasks().await.expect("list tasks") {
            if self.lock(task).await.is_some() {
                locked.push(task);
            }
        }
        locked
    }

    pub fn cache_key(&self, key: &str) -> String {
        hotkeys::redis::cache_key(&self.t.redis, key)
    }

    pub async fn get(&mut self, key: &str) -> Option<String> {
        let k = self.cache_key(key);
        self.redis.get(k).await.expect("GET")
    }

    pub async fn ttl_ms(&mut self, key: &str) -> i64 {
        let k = self.cache_key(key);
        self.redis.pttl(k).await.expect("PTTL")
    }

    pub async fn set(&mut self, key: &str, value: &str) {
        let k = self.cache_key(key);
        let _: () = self.redis.set_ex(k, value, 600).await.expect("SET");
    }

    /// Every Redis key of this test.
    pub async fn cache_keys(&mut self) -> Vec<String> {
        let pattern = self.cache_key("*");
        let mut keys: Vec<String> = Vec::new();
        let mut iter: redis::AsyncIter<String> =
            self.redis.scan_match(pattern).await.expect("SCAN");
        while let Some(k) = iter.next_item().await {
            keys.push(k.expect("key"));
        }
        keys.sort();
        keys
    }

    /// Removes what the test left in ZooKeeper and Redis.
    pub async fn cleanup(mut self) {
        let _ = self.zk.delete_all().await;
        let keys = self.cache_keys().await;
        if !keys.is_empty() {
            let _: Result<(), _> = self.redis.del(keys).await;
        }
        let _: Result<(), _> = self.redis.del(&self.t.sync.queue).await;
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Exit code, parsed `--json` summary and stderr of a finished prewarm.
pub fn finished(out: std::process::Output) -> (i32, Summary, String) {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().unwrap_or(-1);
    let summary: Summary = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "prewarm (exit {code}) printed no JSON summary ({e}):\n{}\nstderr:\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (code, summary, stderr)
}

/// Polls every 100 ms until `check` answers, for at most [`PATIENCE`] seconds.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    testing::eventually(PATIENCE, what, check).await
}

/// Sends a signal to a child by pid (`kill -STOP`, `-CONT`, `-TERM`).
pub fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid}");
}

/// Waits until the prewarm serving metrics on `port` has warmed `n` tasks; returns how many.
pub async fn warms(port: u16, n: u64) -> u64 {
    eventually(&format!("warm number {n} to be counted"), || async {
        testing::counter_value(port, r#"hotkeys_prewarm_tasks_total{outcome="warmed"}"#)
            .await
            .filter(|&warmed| warmed >= n)
    })
    .await
}
