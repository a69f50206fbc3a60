//! The binary against the real Kafka of the local stack (`scripts/stack.sh up`).
//!
//! Skipped when Kafka is unreachable, except with `CI` set, where that is a failure.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::Stdio;
use std::time::Instant;

use common::*;

/// An OpenResty JSON event whose `seq` argument orders it in the file.
fn json_event(product: &str, seq: usize) -> String {
    format!(
        r#"{{"request_module":"product_detail_info","headers":{{"host":"shop"}},"uri_args":{{"productId":"{product}","shopId":"1","seq":"{seq}"}},"http_version":1.1,"method":"GET","raw_reader":"GET /product?productId={product}&shopId=1&seq={seq} HTTP/1.1\r\n\r\n","body_data":null}}"#
    )
}

fn nginx_line(query: &str) -> String {
    format!(
        r#"198.51.100.4 - - [12/Mar/2025:10:00:00 +0800] "GET /product?{query} HTTP/1.1" 200 1834 "https://shop.example/" "Mozilla/5.0 (Linux; Android 14)""#
    )
}

/// One line of a test input file.
struct Line {
    text: String,
    /// The key it must be published with and its place in the file; `None` when skipped.
    publish: Option<(&'static str, u64)>,
}

#[test]
fn replay_of_a_mixed_file_publishes_exactly_the_valid_lines_keyed_and_in_order_per_key() {
    if !hotkeys::testing::kafka_is_up(&brokers()) {
        return;
    }
    let topic = unique_topic("mixed");
    let skipped = |text: &str| Line {
        text: text.into(),
        publish: None,
    };
    let mut lines = Vec::new();
    for seq in 0..60u64 {
        let product = ["11", "12", "13", "7001"][seq as usize % 4];
        let text = match seq % 5 {
            0 => nginx_line(&format!("productId={product}&shopId=2&seq={seq}")),
            _ => json_event(product, seq as usize),
        };
        lines.push(Line {
            text,
            publish: Some((product, seq)),
        });
        match seq % 9 {
            3 => lines.push(skipped("this is not an access log line")),
            5 => lines.push(skipped(r#"{"uri_args":{"productId":"99","seq":"x"}"#)),
            7 => lines.push(skipped("")),
            _ => {}
        }
    }
    lines.push(skipped("\u{1}\u{2}binary junk"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixed.log");
    let text: String = lines.iter().map(|l| format!("{}\n", l.text)).collect();
    std::fs::write(&file, text).unwrap();

    let stderr = run_ok(producer(&topic).arg("replay").arg(&file));

    let valid = lines.iter().filter(|l| l.publish.is_some()).count();
    let malformed = lines
        .iter()
        .filter(|l| l.publish.is_none() && !l.text.is_empty())
        .count();
    let counts = format!("{valid} sent, {malformed} malformed");
    assert!(
        stderr.contains(&counts),
        "expected `{counts}` in:\n{stderr}"
    );
    let records = read_all(&topic);
    assert_eq!(records.len(), valid, "stderr:\n{stderr}");

    // Per key, the lines arrive in file order.
    let mut wanted: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (key, seq) in lines.iter().filter_map(|l| l.publish) {
        wanted.entry(key).or_default().push(seq);
    }
    let mut published: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for r in &records {
        let event = r.json();
        assert_eq!(
            event["uri_args"]["productId"],
            r.key_str(),
            "keyed by the product"
        );
        let seq = event["uri_args"]["seq"].as_str().unwrap().parse().unwrap();
        published.entry(r.key_str()).or_default().push(seq);
    }
    assert_eq!(published, wanted);

    // JSON lines are published byte for byte; nginx lines carry what the line told.
    let originals: BTreeMap<u64, &str> = lines
        .iter()
        .filter_map(|l| Some((l.publish?.1, l.text.as_str())))
        .collect();
    for r in &records {
        let event = r.json();
        let seq: u64 = event["uri_args"]["seq"].as_str().unwrap().parse().unwrap();
        if seq.is_multiple_of(5) {
            assert_eq!(
                event["headers"]["user-agent"],
                "Mozilla/5.0 (Linux; Android 14)"
            );
            assert_eq!(event["uri_args"]["shopId"], "2");
        } else {
            assert_eq!(r.payload, originals[&seq].as_bytes());
        }
    }
}

#[test]
fn events_without_a_key_are_skipped_never_published_with_an_empty_key() {
    if !hotkeys::testing::kafka_is_up(&brokers()) {
        return;
    }
    let topic = unique_topic("nokey");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nokey.log");
    let lines = [
        r#"{"uri_args":{"shopId":"1"}}"#.to_string(),
        r#"{"uri_args":{"productId":""}}"#.to_string(),
        r#"{"uri_args":{"productId":null}}"#.to_string(),
        r#"{"headers":{}}"#.to_string(),
        nginx_line("shopId=1"),
        nginx_line("productId="),
        r#"203.0.113.9 - - [12/Mar/2025:10:00:00 +0800] "-" 400 0 "-" "-""#.to_string(),
        json_event("9", 0),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();

    let stderr = run_ok(producer(&topic).arg("replay").arg(&file));

    let records = read_all(&topic);
    assert_eq!(records.len(), 1, "stderr:\n{stderr}");
    assert_eq!(records[0].key_str(), "9");
    assert!(stderr.contains("7 without a key"), "{stderr}");
}

/// `?productId=55&productId=56`, as the OpenResty reporter writes it (cjson of
/// `get_uri_args()`) and as nginx logs it: both replays key it by 55, and hot-counter's
/// extraction of either published event says 55 too.
#[test]
fn a_repeated_product_id_is_keyed_by_its_first_value_through_either_format_and_hot_counter() {
    if !hotkeys::testing::kafka_is_up(&brokers()) {
        return;
    }
    let lua = r#"{"request_module":"product_detail_info","headers":{"host":"shop"},"uri_args":{"productId":["55","56"],"shopId":"1"},"http_version":1.1,"method":"GET","raw_reader":"GET \/product?productId=55&productId=56&shopId=1 HTTP\/1.1\r\n\r\n"}"#;
    let nginx = nginx_line("productId=55&productId=56&shopId=1");
    let dir = tempfile::tempdir().unwrap();
    let pointer = hotkeys::event::KeyPointer::parse(&hotkeys::config::SourceConfig::default().key);
    for (format, line) in [("json", lua.to_string()), ("nginx", nginx)] {
        let topic = unique_topic(&format!("repeated-{format}"));
        let file = dir.path().join(format!("{format}.log"));
        std::fs::write(&file, format!("{line}\n")).unwrap();
        let stderr = run_ok(
            producer(&topic)
                .args(["replay", "--format", format])
                .arg(&file),
        );
        let records = read_all(&topic);
        assert_eq!(records.len(), 1, "{format}: {stderr}");
        assert_eq!(records[0].key_str(), "55", "{format}");
        let counted = pointer.extract(Some(&records[0].payload), None).unwrap();
        assert_eq!(counted, "55", "{format}: hot-counter's key");
    }
}

#[test]
fn strict_replay_exits_2_at_the_first_malformed_line() {
    if !hotkeys::testing::kafka_is_up(&brokers()) {
        return;
    }
    let topic = unique_topic("strict");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strict.log");
    std::fs::write(
        &file,
        format!(
            "{}\nnot an event\n{}\n",
            json_event("1", 0),
            json_event("2", 1)
        ),
    )
    .unwrap();

    let (code, stderr) = run(producer(&topic).args(["replay", "--strict"]).arg(&file));

    assert_eq!(code, 2, "stderr:\n{stderr}");
    assert!(
        stderr.contains(&format!("{}:2", file.display())),
        "{stderr}"
    );
    let keys: Vec<String> = read_all(&topic)
        .iter()
        .map(|r| r.key_str().to_string())
        .collect();
    assert_eq!(
        keys,
        ["1"],
        "lines before the bad one are delivered, none after"
    );
}

/// A line larger than the client's `message.max.bytes` is refused by librdkafka itself: it
/// is counted as malformed and the others are published, in order per key; under `--strict`
/// nothing after it is.
#[test]
fn events_the_client_refuses_are_skipped_and_counted() {
    if !hotkeys::testing::kafka_is_up(&brokers()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let topology = dir.path().join("small-messages.toml");
    let text = std::fs::read_to_string(hotkeys::testing::default_topology_path()).unwrap();
    let text = text.replace(
        "[kafka.producer]\n",
        "[kafka.producer]\n\"message.max.bytes\" = \"2000\"\n",
    );
    std::fs::write(&topology, text).unwrap();
    // Large by a field other than the key: a long key is refused earlier, by the key rule.
    let huge = json_event("9", 0).replace(
        r#""shopId":"1""#,
        &format!(r#""shopId":"{}""#, "1".repeat(3000)),
    );
    let mut lines: Vec<String> = (0..40)
        .map(|i| json_event(&format!("{}", i % 8), i))
        .collect();
    lines.insert(20, huge);
    let file = dir.path().join("huge.log");
    std::fs::write(&file, lines.join("\n")).unwrap();

    let topic = unique_topic("refused-local");
    let stderr = run_ok(producer_with(&topic, &topology).arg("replay").arg(&file));
    assert!(stderr.contains("40 sent, 1 malformed"), "{stderr}");
    assert!(stderr.contains("refused by the Kafka client"), "{stderr}");
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in read_all(&topic) {
        let seq = r.json()["uri_args"]["seq"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        seqs.entry(r.key_str().to_string()).or_default().push(seq);
    }
    assert_eq!(seqs.len(), 8);
    for (key, seqs) in &seqs {
        let expected: Vec<u64> = (0..40)
            .filter(|i| i % 8 == key.parse::<u64>().unwrap())
            .collect();
        assert_eq!(seqs, &expected, "key {key}");
    }

    let topic = unique_topic("refused-strict");
    let (code, stderr) = run(producer_with(&topic, &topology)
        .args(["replay", "--strict"])
        .arg(&file));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("{}:21", file.display())),
        "{stderr}"
    );
    assert_eq!(message_count(&topic), 20, "{stderr}");
}

#[test]
fn synthetic_with_a_fixed_seed_publishes_the_same_keys_twice() {
    if !hotkeys::testing::kafka_is_up(&brokers()) {
        return;
    }
    let runs: Vec<Vec<Record>> = (0..2)
        .map(|i| {
            let topic = unique_topic(&format!("seed{i}"));
            run_ok(producer(&topic).args([
                "synthetic",
                "--events",
                "3000",
                "--keys",
                "500",
                "--seed",
                "7",
                "--burst",
                "4242@1000:0.2",
            ]));
            read_all(&topic)
        })
        .collect();
    assert_eq!(runs[0].len(), 3000);
    assert_eq!(per_partition(&runs[0]), per_partition(&runs[1]));
    assert!(runs[0].iter().any(|r| r.key_str() == "4242"));
}

/// Each partition's `(key, payload)` sequence: partitions are read independently, so only
/// the order within one is defined.
fn per_partition(records: &[Record]) -> Vec<Vec<(&str, &[u8])>> {
    let mut m: BTreeMap<i32, Vec<(&str, &[u8])>> = BTreeMap::new();
    for r in records {
        m.entry(r.partition)
            .or_default()
            .push((r.key_str(), &r.payload));
    }
    m.into_values().collect()
}

#[test]
fn every_event_of_a_product_lands_in_its_one_kafka_partition() {
    if !hotkeys::testing::kafka_is_up(&brokers()) {
        return;
    }
    let topic = unique_topic("placement");
    run_ok(producer(&topic).args([
        "synthetic",
        "--events",
        "5000",
        "--keys",
        "300",
        "--seed",
        "11",
    ]));

    let partitions = partitions_of(&topic).unwrap();
    assert_eq!(
        partitions,
        hotkeys::Topology::default().kafka.partitions as usize,
        "created with the topology's count"
    );
    let records = read_all(&topic);
    assert_eq!(records.len(), 5000);
    let mut placement: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for r in &records {
        assert!(!r.key_str().is_empty());
        assert_eq!(
            r.json()["uri_args"]["productId"],
            r.key_str(),
            "key and event agree"
        );
        placement
            .entry(r.key_str().to_string())
            .or_default()
            .insert(r.partition);
    }
    assert!(placement.len() > 50);
    for (key, parts) in &placement {
        assert_eq!(parts.len(), 1, "product {key} is in partitions {parts:?}");
        let p = *parts.first().unwrap();
        assert_eq!(
            p,
            murmur2_partition(key.as_bytes(), partitions),
            "product {key}: Java-compatible placement"
        );
    }
}

#[test]
fn written_stream_replays_to_the_same_messages_as_a_direct_publish() {
    if !hotkeys::testing::kafka_is_up(&brokers()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stream.jsonl.gz");
    let args = [
        "synthetic",
        "--events",
        "2000",
        "--seed",
        "5",
        "--drift",
        "500:10",
    ];
    let wrote = run_ok(producer("unused").args(args).arg("--write").arg(&file));
    assert!(wrote.contains("2000 delivered to file"), "{wrote}");
    let direct = unique_topic("direct");
    run_ok(producer(&direct).args(args));
    let replayed = unique_topic("replayed");
    run_ok(producer(&replayed).arg("replay").arg(&file));

    let strip = |rs: Vec<Record>| {
        rs.into_iter()
            .map(|r| (r.partition, r.key, r.payload))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(read_all(&direct)), strip(read_all(&replayed)));
}

#[test]
fn sigterm_stops_reading_flushes_and_reports_every_delivered_event() {
    if !hotkeys::testing::kafka_is_up(&brokers()) {
        return;
    }
    let topic = unique_topic("sigterm");
    let child = producer(&topic)
        .args(["synthetic", "--rate", "2000/s", "--seed", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while partitions_of(&topic).is_none() || message_count(&topic) == 0 {
        assert!(Instant::now() < deadline, "nothing was published");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let delivered: usize = stderr
        .split_once(" delivered to topic")
        .and_then(|(before, _)| before.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    assert!(delivered > 0);
    assert_eq!(read_all(&topic).len(), delivered, "{stderr}");
}

#[test]
fn unreachable_kafka_exits_3() {
    let (code, stderr) = run(producer("unused")
        .env("HOTKEYS_KAFKA_BROKERS", "127.0.0.1:1")
        .args(["synthetic", "--events", "1"]));
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("unreachable"), "{stderr}");
}

#[test]
fn write_mode_needs_no_kafka_and_is_byte_identical_for_the_same_seed() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = (0..2)
        .map(|i| dir.path().join(format!("s{i}.jsonl")))
        .collect();
    for f in &files {
        run_ok(
            producer("unused")
                .env("HOTKEYS_KAFKA_BROKERS", "127.0.0.1:1")
                .args([
                    "synthetic",
                    "--events",
                    "5000",
                    "--seed",
                    "99",
                    "--burst",
                    "1@10:0.5",
                ])
                .arg("--write")
                .arg(f),
        );
    }
    let a = std::fs::read(&files[0]).unwrap();
    assert_eq!(a, std::fs::read(&files[1]).unwrap());
    assert_eq!(a.iter().filter(|&&b| b == b'\n').count(), 5000);
}

#[test]
fn missing_input_file_exits_2_before_contacting_kafka() {
    let (code, stderr) = run(producer("unused")
        .env("HOTKEYS_KAFKA_BROKERS", "127.0.0.1:1")
        .args(["replay", "/nonexistent/access.log"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("/nonexistent/access.log"), "{stderr}");
}

#[test]
fn replay_from_stdin_writes_converted_nginx_lines_as_openresty_json() {
    let mut child = producer("unused")
        .env("HOTKEYS_KAFKA_BROKERS", "127.0.0.1:1")
        .args(["replay", "--quiet", "--write", "-", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", nginx_line("productId=5&shopId=8")).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["uri_args"],
        serde_json::json!({"productId": "5", "shopId": "8"})
    );
    assert_eq!(v["method"], "GET");
}

#[test]
fn delivery_failures_exit_1_and_report_their_count() {
    if !hotkeys::testing::kafka_is_up(&brokers()) {
        return;
    }
    // A topic whose broker refuses every batch as too large: each message fails for good.
    let topic = unique_topic("refused");
    create_topic(&topic, 2, &[("max.message.bytes", "100")]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("five.log");
    let lines: Vec<String> = (0..5)
        .map(|i| json_event(&format!("{}", 100 + i), i))
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();

    let (code, stderr) = run(producer(&topic).arg("replay").arg(&file));

    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("5 of 5 messages failed delivery"),
        "{stderr}"
    );
    assert!(stderr.contains("0 delivered"), "{stderr}");
    assert_eq!(message_count(&topic), 0);
}
