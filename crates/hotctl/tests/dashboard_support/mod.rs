//! A `hotctl dashboard` process of a test's own, on a free loopback port, against the
//! stack's ZooKeeper, Redis and MariaDB. History goes to the database `hotkeys_dashboard`
//! (the stack grants `hotkeys_*`), so the shared catalogue databases never see the
//! history migration; rows are scoped by the test's unique topology name.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hotkeys::Topology;
use hotkeys::config::{Action, CounterConfig, MysqlConfig};
use hotkeys::testing;
use serde_json::Value;

/// The environment variable the test topologies name in `dashboard.token_env`.
pub const TOKEN_ENV: &str = "HOTKEYS_TEST_DASHBOARD_TOKEN";
pub const DATABASE: &str = "hotkeys_dashboard";

/// The stack's MySQL URL with `database` in place of its own.
pub fn mysql_url(database: &str) -> String {
    let url = std::env::var("HOTKEYS_MYSQL_URL").unwrap_or_else(|_| MysqlConfig::default().url);
    let (base, _) = url.rsplit_once('/').expect("mysql url has a database");
    format!("{base}/{database}")
}

/// Creates the history database if needed; returns a pool on it.
pub async fn history_db() -> hotkeys::mysql::Pool {
    history_db_named(DATABASE).await
}

/// Creates the history database `database` (a name the stack grants: `hotkeys_*`) if
/// needed; returns a pool on it. A test that locks the history table uses one of its own.
/// `hot_history` of `database` locked for writing by a session of its own, as a stalled
/// writer holds it, until [`HistoryLock::unlock`].
pub struct HistoryLock(sqlx::pool::PoolConnection<sqlx::MySql>);

pub async fn lock_history(database: &str) -> HistoryLock {
    let pool = history_db_named(database).await;
    let mut session = pool.acquire().await.expect("a second session");
    sqlx::raw_sql("LOCK TABLES hot_history WRITE")
        .execute(&mut *session)
        .await
        .expect("lock the history table");
    HistoryLock(session)
}

impl HistoryLock {
    pub async fn unlock(mut self) {
        sqlx::raw_sql("UNLOCK TABLES")
            .execute(&mut *self.0)
            .await
            .expect("unlock");
    }
}

pub async fn history_db_named(database: &str) -> hotkeys::mysql::Pool {
    let admin = hotkeys::mysql::connect(
        &MysqlConfig {
            url: mysql_url("hotkeys"),
            ..MysqlConfig::default()
        },
        Duration::from_secs(10),
    )
    .await
    .expect("MySQL (is scripts/stack.sh up?)");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE IF NOT EXISTS {database} CHARACTER SET utf8mb4"
    )))
    .execute(&admin)
    .await
    .expect("create the history database");
    admin.close().await;
    hotkeys::mysql::connect(
        &MysqlConfig {
            url: mysql_url(database),
            ..MysqlConfig::default()
        },
        Duration::from_secs(10),
    )
    .await
    .expect("MySQL")
}

/// An isolated topology with a `caller` counter that bans, history in [`DATABASE`], and the
/// token read from [`TOKEN_ENV`].
pub fn topology(test: &str) -> Topology {
    let mut t = testing::topology(test);
    t.mysql.url = mysql_url(DATABASE);
    t.dashboard.token_env = TOKEN_ENV.into();
    t.counters.push(CounterConfig {
        top_n: Some(10),
        threshold: Some(20),
        action: Some(Action::Blacklist),
        allow: vec![],
        ..CounterConfig::new("caller", "/headers/x-real-ip")
    });
    t
}

/// [`topology`] with its history in `database` instead of [`DATABASE`].
pub fn topology_in(test: &str, database: &str) -> Topology {
    let mut t = topology(test);
    t.mysql.url = mysql_url(database);
    t
}

/// A running dashboard; killed when dropped.
pub struct Dashboard {
    pub base: String,
    child: Child,
    log: std::path::PathBuf,
}

impl Dashboard {
    /// Starts `hotctl dashboard` with `args` (e.g. `--record 1s`), the server's token set
    /// to `token` (none: read-only), and waits until it answers.
    pub async fn start(t: &Topology, args: &[&str], token: Option<&str>) -> Dashboard {
        let (_, database) = t
            .mysql
            .url
            .rsplit_once('/')
            .expect("mysql url has a database");
        history_db_named(database).await.close().await;
        let file = testing::write_topology(t);
        let addr = format!("127.0.0.1:{}", testing::free_port());
        let log = std::env::temp_dir().join(format!("{}.log", testing::unique("dashboard")));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hotctl"));
        // The topology file is complete: no override from this process's environment applies.
        for k in testing::topology_overrides() {
            cmd.env_remove(k);
        }
        cmd.env_remove(TOKEN_ENV);
        if let Some(token) = token {
            cmd.env(TOKEN_ENV, token);
        }
        let child = cmd
            .env("RUST_LOG", "warn")
            .arg("--topology")
            .arg(&file)
            .args(["dashboard", "--listen", &addr])
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("dashboard log"))
            .spawn()
            .expect("run hotctl dashboard");
        let mut dashboard = Dashboard {
            base: format!("http://{addr}"),
            child,
            log: log.clone(),
        };
        let client = reqwest::Client::new();
        let probe = format!("{}/api/recorder", dashboard.base);
        let child = &mut dashboard.child;
        testing::eventually(60, "the dashboard to answer", || {
            if let Some(status) = child.try_wait().expect("child status") {
                let stderr = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("the dashboard exited ({status}): {stderr}");
            }
            let (client, probe) = (client.clone(), probe.clone());
            async move { client.get(&probe).send().await.ok() }
        })
        .await;
        dashboard
    }

    /// What the dashboard logged so far (at `warn`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path`: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(self.url(path)).await.expect("GET");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// `GET path`, which must answer 200 with JSON.
    pub async fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// Sends SIGTERM and waits (at most 30 s) for the process to exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM");
        let child = &mut self.child;
        testing::eventually(30, "the dashboard to exit after SIGTERM", || {
            let status = child.try_wait().expect("child status");
            async move { status }
        })
        .await
    }

    /// Sends SIGKILL: the process dies without releasing anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.kill();
    }
}
