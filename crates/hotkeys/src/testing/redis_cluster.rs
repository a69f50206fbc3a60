//! A throwaway Redis Cluster of a test's own (`redis-server` and `redis-cli` must be
//! installed); it fails the test when it cannot start.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::net::free_port;

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
            let (port, bus_port) = (free_port(), free_port());
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
                    give_up(&mut child, &format!("redis-server on port {port}"), &log);
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
                give_up(&mut child, "redis-cli --cluster create", &out);
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
/// Stops `child`, which did not get done within the deadline, and fails with its log.
fn give_up(child: &mut Child, what: &str, log: &Path) -> ! {
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "{what} did not get done within {CLUSTER_DEADLINE:?}:\n{}",
        tail(log)
    );
}

fn tail(path: &Path) -> String {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
