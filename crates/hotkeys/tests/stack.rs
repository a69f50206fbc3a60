//! One real round trip per server of the local stack (`scripts/stack.sh up`), through the
//! library's own clients and settings, plus the shape of docker-compose.yml.

use std::time::Duration;

use hotkeys::testing::{self, Record};
use hotkeys::zk::Zk;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

#[tokio::test]
async fn kafka_round_trip_through_a_consumer_group() {
    let mut t = testing::topology("stack-kafka");
    t.kafka.partitions = 3;
    testing::produce(&t, ["a", "b", "c"].map(Record::openresty)).await;
    let consumer: BaseConsumer = hotkeys::kafka::consumer_config(&t.kafka, &t.kafka.group)
        .create()
        .expect("consumer");
    consumer.subscribe(&[&t.kafka.topic]).expect("subscribe");
    let pointer = hotkeys::event::KeyPointer::parse(&t.source.key);
    let mut keys = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while keys.len() < 3 && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("message");
            keys.push(
                pointer
                    .extract(m.payload(), m.key())
                    .expect("key")
                    .into_owned(),
            );
        }
    }
    keys.sort();
    assert_eq!(
        keys,
        ["a", "b", "c"],
        "keys consumed within the 60 s deadline"
    );
}

#[tokio::test]
async fn zookeeper_create_get_delete() {
    let t = testing::topology("stack-zk");
    let zk = Zk::connect(&t)
        .await
        .expect("ZooKeeper reachable (is scripts/stack.sh up?)");
    zk.ensure_task(4).await.expect("create");
    assert_eq!(zk.list_tasks().await.expect("list"), vec![4]);
    zk.delete_all().await.expect("delete");
    assert!(zk.list_tasks().await.expect("list").is_empty());
}

#[tokio::test]
async fn redis_set_get_on_both_data_centres() {
    let local = std::env::var("HOTKEYS_REDIS_NODES").unwrap_or("redis://127.0.0.1:6379".into());
    let remote = std::env::var("REMOTE_REDIS_URL").unwrap_or("redis://127.0.0.1:6380".into());
    for url in [local, remote] {
        let client = redis::Client::open(url.as_str()).expect("url");
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("Redis {url} reachable (is scripts/stack.sh up?): {e}"));
        let key = testing::unique("stack-redis");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("v")
            .arg("EX")
            .arg(60)
            .query_async(&mut con)
            .await
            .expect("set");
        let got: String = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut con)
            .await
            .expect("get");
        assert_eq!(got, "v");
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut con)
            .await
            .expect("del");
    }
}

#[test]
fn docker_compose_describes_the_same_servers_and_ports() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docker-compose.yml");
    let text = std::fs::read_to_string(path).expect("docker-compose.yml");
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("valid YAML");
    let services = &docs[0]["services"];
    let ports = |name: &str| -> Vec<String> {
        services[name]["ports"]
            .as_vec()
            .map(|v| {
                v.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let find = |needle: &str| {
        services
            .as_hash()
            .expect("services")
            .keys()
            .filter_map(|k| k.as_str())
            .any(|name| ports(name).iter().any(|p| p.contains(needle)))
    };
    for port in [":9092", ":2181", ":3306", ":6379", ":6380"] {
        assert!(find(port), "no service publishes {port}");
    }
}
