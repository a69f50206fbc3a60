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

/// A compose service with `<<: *anchor` merged in (YAML merge keys are not resolved by the
/// parser): the service's own keys win.
fn merged(service: &yaml_rust2::Yaml) -> yaml_rust2::yaml::Hash {
    let own = service.as_hash().expect("a service is a mapping");
    let mut all = own
        .get(&yaml_rust2::Yaml::from_str("<<"))
        .and_then(|base| base.as_hash())
        .cloned()
        .unwrap_or_default();
    for (k, v) in own {
        all.insert(k.clone(), v.clone());
    }
    all
}

fn strings(value: Option<&yaml_rust2::Yaml>) -> Vec<String> {
    value
        .and_then(|v| v.as_vec())
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn docker_compose_images_are_upstream_or_built_here_and_our_commands_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("docker-compose.yml")).expect("compose file");
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("valid YAML");
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    // The binaries the image installs: the sources of the runtime stage's COPY.
    let installed: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("/src/target/release/"))
        .map(|l| l.trim_end_matches(" \\"))
        .collect();
    assert_eq!(installed.len(), 5, "the five binaries: {installed:?}");
    let installed_topology = hotkeys::cli::SEARCH_PATH[1];
    assert!(
        dockerfile.contains(&format!("COPY topology/default.toml {installed_topology}")),
        "the image's topology is where the binaries look for one"
    );
    // Binaries `cargo test --workspace` built next to this test, to ask each subcommand's
    // --help (absent when only this package was built).
    let bin_dir = std::env::current_exe()
        .expect("test path")
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .to_path_buf();
    let key = |k: &str| yaml_rust2::Yaml::from_str(k);
    for (name, service) in docs[0]["services"].as_hash().expect("services") {
        let name = name.as_str().expect("service name");
        let service = merged(service);
        let image = service
            .get(&key("image"))
            .and_then(|i| i.as_str())
            .unwrap_or_default();
        let Some(build) = service.get(&key("build")) else {
            let (repo, tag) = image.rsplit_once(':').unwrap_or((image, ""));
            assert!(
                !repo.is_empty() && !tag.is_empty() && !repo.contains("hotkeys"),
                "{name}: `{image}` is neither a tagged upstream image nor built here"
            );
            continue;
        };
        assert_eq!(
            build["context"].as_str(),
            Some("."),
            "{name}: built from this repository"
        );
        let file = build["dockerfile"].as_str().unwrap_or("Dockerfile");
        assert!(root.join(file).is_file(), "{name}: {file} exists");
        let mut argv = strings(service.get(&key("entrypoint")));
        argv.extend(strings(service.get(&key("command"))));
        let program = argv
            .first()
            .unwrap_or_else(|| panic!("{name} runs no command"));
        assert!(
            installed.contains(&program.as_str()),
            "{name}: the image has no `{program}`"
        );
        // The topology the command names is the mounted ./topology.
        for path in argv.iter().filter(|a| a.starts_with("/etc/hotkeys/")) {
            let local = root.join("topology").join(&path["/etc/hotkeys/".len()..]);
            assert!(local.is_file(), "{name}: {path} is not in ./topology");
        }
        let binary = bin_dir.join(program);
        if !binary.is_file() {
            hotkeys::testing::unavailable(format_args!(
                "{name}: --help of {program}: {} not built; run cargo test --workspace",
                binary.display()
            ));
            continue;
        }
        let out = std::process::Command::new(&binary)
            .args(&argv[1..])
            .arg("--help")
            .output()
            .expect("run the binary");
        assert!(
            out.status.success(),
            "{name}: `{} --help` fails: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
