//! The one skip policy of the integration tests, and the probes of the stack's servers.
//!
//! A test whose server (or tool) is missing is skipped with a message on a developer
//! machine, and fails when `CI` is set, so that a pipeline never passes without having run
//! it.

use std::fmt::Display;
use std::time::Duration;

use crate::Topology;
use crate::zk::Zk;

/// Applies the skip policy to a test that cannot run for `reason`: panics when `CI` is set,
/// otherwise prints why it is skipped. The caller then returns without testing anything.
pub fn unavailable(reason: impl Display) {
    if std::env::var_os("CI").is_some() {
        panic!("{reason} (CI is set: a test that cannot run fails)");
    }
    eprintln!("skipping: {reason}");
}

/// True when Kafka at `brokers` answers a metadata request; otherwise [`unavailable`].
pub fn kafka_is_up(brokers: &str) -> bool {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let probe = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create::<BaseConsumer>()
        .and_then(|c| c.fetch_metadata(None, Duration::from_secs(10)).map(|_| ()));
    match probe {
        Ok(()) => true,
        Err(e) => {
            unavailable(format_args!(
                "Kafka at {brokers} is unreachable ({e}); start it with scripts/stack.sh up"
            ));
            false
        }
    }
}

/// True when the topology's ZooKeeper, MySQL and first Redis node accept a TCP connection;
/// otherwise [`unavailable`].
pub fn servers_are_up(t: &Topology) -> bool {
    let redis = t.redis.nodes[0]
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_string();
    let mysql = crate::mysql::options(&t.mysql.url).expect("mysql.url parses");
    let zookeeper = t.zookeeper.connect.split(',').next().unwrap_or("");
    let servers = [
        ("ZooKeeper", zookeeper.to_string()),
        (
            "MySQL",
            format!("{}:{}", mysql.get_host(), mysql.get_port()),
        ),
        ("Redis", redis),
    ];
    for (name, addr) in servers {
        let up = addr
            .parse::<std::net::SocketAddr>()
            .ok()
            .and_then(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(3)).ok())
            .is_some();
        if !up {
            unavailable(format_args!(
                "{name} at {addr} is unreachable; start it with scripts/stack.sh up"
            ));
            return false;
        }
    }
    true
}

/// A session on the topology's ZooKeeper; `None` (after [`unavailable`]) when it cannot
/// be had.
pub async fn zookeeper(t: &Topology) -> Option<Zk> {
    match Zk::connect(t).await {
        Ok(zk) => Some(zk),
        Err(e) => {
            unavailable(format_args!(
                "ZooKeeper: {e}; start it with scripts/stack.sh up"
            ));
            None
        }
    }
}
