//! A redis-server (or sentinel) of a test's own, for tests that stop, restart or fail over a
//! node without disturbing the shared stack.

use std::path::PathBuf;

use super::net::free_port;
use super::topology::unique;

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
