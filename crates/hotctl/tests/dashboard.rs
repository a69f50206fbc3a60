//! `hotctl dashboard` against the real stack: every JSON route, the token rules of unban,
//! the escaping of hostile keys, the SSE stream, and the history recorder. Hot lists are
//! published the way hot-counter does (`testing::publish_hot_list`).

mod dashboard_support;

use std::time::Duration;

use dashboard_support::Dashboard;
use hotkeys::Topology;
use hotkeys::blacklist::redis_key;
use hotkeys::hotlist::now_ms;
use hotkeys::redis::RedisConn;
use hotkeys::testing::{self, publish_hot_list};
use hotkeys::zk::Zk;
use serde_json::{Value, json};

const HOSTILE: &str = "<script>alert(1)</script>";

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Task 0 lists `p1` (3) and the hostile key (2) and `p2` (1); task 1 lists `p3` (2), `p4`.
async fn publish_products(zk: &Zk, t: &Topology) {
    publish_hot_list(zk, &t.name, 0, &keys(&["p1", HOSTILE, "p2"]), "test")
        .await
        .expect("publish");
    publish_hot_list(zk, &t.name, 1, &keys(&["p3", "p4"]), "test")
        .await
        .expect("publish");
}

#[tokio::test(flavor = "multi_thread")]
async fn read_routes_answer_json_and_every_page_escapes_a_hostile_key() {
    let t = dashboard_support::topology("dash-read");
    let zk = Zk::connect(&t).await.expect("ZooKeeper");
    publish_products(&zk, &t).await;
    let d = Dashboard::start(&t, &["--record", "0"], None).await;

    let tasks = d.json("/api/tasks").await;
    assert_eq!(tasks.as_array().map(Vec::len), Some(2), "{tasks}");
    assert_eq!(tasks[0]["task"], 0);
    assert_eq!(tasks[0]["items"], 3);
    assert_eq!(tasks[0]["owner"], "test");
    assert_eq!(
        tasks[0]["end_offset"],
        Value::Null,
        "no topic, no end offset: {tasks}"
    );

    let hot = d.json("/api/hot?top=3").await;
    assert_eq!(hot["counter"], "hot");
    assert!(
        hot["id"].as_i64().is_some_and(|id| id > 0),
        "the id is the newest publish's zxid: {hot}"
    );
    assert_eq!(hot["versions"], json!({"0": 0, "1": 0}), "{hot}");
    let items: Vec<(&str, u64)> = hot["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| (i["key"].as_str().unwrap(), i["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(items, [("p1", 3), (HOSTILE, 2), ("p3", 2)]);
    let (status, body) = d.get("/api/hot?counter=nope").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("has no counter `nope`"), "{body}");

    assert_eq!(d.json("/api/blacklist").await, json!([]));
    let replication = d.json("/api/replication").await;
    assert_eq!(replication["length"], 0, "{replication}");
    assert_eq!(replication["queue"], t.sync.queue);
    let cache = d.json("/api/cache").await;
    assert_eq!(cache["missing"], 5, "nothing warmed: {cache}");
    assert_eq!(cache["complete"], true, "every node answered: {cache}");
    assert_eq!(
        cache["tasks"][1],
        json!({"task": 1, "warm": 0, "expired": 0, "missing": 2, "unknown": 0})
    );
    assert_eq!(cache["keys"].as_array().map(Vec::len), Some(5));
    let recorder = d.json("/api/recorder").await;
    assert_eq!(
        recorder["holder"],
        Value::Null,
        "--record 0 never locks: {recorder}"
    );

    for page in [
        "/",
        "/hot",
        "/hot?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "/cache",
    ] {
        let (status, html) = d.get(page).await;
        assert_eq!(status, 200, "{page}: {html}");
        assert!(
            !html.contains("<script>alert"),
            "{page} renders the key as markup"
        );
    }
    let (_, overview) = d.get("/").await;
    assert!(
        overview.contains(r#"<td class="up">up</td>"#),
        "the Redis node: {overview}"
    );
    let (_, hot_page) = d.get("/hot").await;
    assert!(
        hot_page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the key is shown as text: {hot_page}"
    );
    let (status, page) = d.get("/history").await;
    assert_eq!(status, 200, "{page}");
    zk.delete_all().await.expect("clean up");
}

#[tokio::test(flavor = "multi_thread")]
async fn unban_is_forbidden_without_a_server_token_and_unauthorized_without_the_right_one() {
    let t = dashboard_support::topology("dash-unban");
    let mut redis = RedisConn::connect_home(&t.redis).await.expect("Redis");
    let set = redis_key(&t.name, "caller");
    let until = now_ms() + 600_000;
    redis::cmd("ZADD")
        .arg(&set)
        .arg(until)
        .arg(HOSTILE)
        .arg(until)
        .arg("6.6.6.6")
        .query_async::<()>(&mut redis)
        .await
        .expect("ZADD");
    let client = reqwest::Client::new();
    let unban = |d: &Dashboard, token: Option<&str>| {
        let mut request = client
            .post(d.url("/api/unban"))
            .header("content-type", "application/json")
            .body(json!({"counter": "caller", "keys": [HOSTILE]}).to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    let read_only = Dashboard::start(&t, &["--record", "0"], None).await;
    let answer = unban(&read_only, Some("s3cret")).await.expect("POST");
    assert_eq!(answer.status(), 403);
    drop(read_only);

    let d = Dashboard::start(&t, &["--record", "0"], Some("s3cret")).await;
    let bans = d.json("/api/blacklist?counter=caller").await;
    assert_eq!(bans.as_array().map(Vec::len), Some(2), "{bans}");
    let (_, page) = d.get("/blacklist").await;
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>alert"), "{page}");

    for token in [None, Some("wrong")] {
        let answer = unban(&d, token).await.expect("POST");
        assert_eq!(answer.status(), 401, "token {token:?}");
        assert_eq!(
            answer
                .headers()
                .get("www-authenticate")
                .map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
    }
    let form = client
        .post(d.url("/blacklist/unban"))
        .form(&[("counter", "caller"), ("key", HOSTILE), ("token", "wrong")])
        .send()
        .await
        .expect("POST form");
    assert_eq!(form.status(), 401);
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(&set)
        .arg(HOSTILE)
        .query_async(&mut redis)
        .await
        .expect("ZSCORE");
    assert!(score.is_some(), "refused requests lift nothing");

    let answer = unban(&d, Some("s3cret")).await.expect("POST");
    assert_eq!(answer.status(), 200);
    let body = json_body(answer).await;
    assert_eq!(body, json!({"counter": "caller", "asked": 1, "lifted": 1}));
    let left: Vec<String> = redis::cmd("ZRANGE")
        .arg(&set)
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .expect("ZRANGE");
    assert_eq!(left, ["6.6.6.6"]);
    let _: () = redis::cmd("DEL")
        .arg(&set)
        .query_async(&mut redis)
        .await
        .expect("DEL");
    Zk::connect(&t)
        .await
        .expect("ZooKeeper")
        .delete_all()
        .await
        .expect("clean up");
}

/// The JSON body of a response (reqwest's `json` feature is off).
async fn json_body(response: reqwest::Response) -> Value {
    serde_json::from_slice(&response.bytes().await.expect("body")).expect("JSON")
}

/// One SSE event or heartbeat as read off the wire.
#[derive(Debug)]
enum Sse {
    Event { id: i64, data: Value },
    Heartbeat,
}

/// Reads an SSE response block by block.
struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    async fn open(d: &Dashboard, path: &str, last_id: Option<i64>) -> SseReader {
        let mut request = reqwest::Client::new().get(d.url(path));
        if let Some(id) = last_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.expect("GET stream");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers().get("content-type").map(|v| v.as_bytes()),
            Some(&b"text/event-stream"[..])
        );
        SseReader {
            response,
            buffer: String::new(),
        }
    }

    /// The next block, waiting at most `seconds` (a guard against hanging, not a measure).
    async fn next(&mut self, seconds: u64) -> Sse {
        self.next_before(tokio::time::Instant::now() + Duration::from_secs(seconds))
            .await
    }

    async fn next_before(&mut self, deadline: tokio::time::Instant) -> Sse {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if block.starts_with(':') {
                    return Sse::Heartbeat;
                }
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(str::to_string)
                };
                let id = field("id:")
                    .expect("every event has an id")
                    .trim()
                    .parse()
                    .expect("numeric id");
                let data =
                    serde_json::from_str(field("data:").expect("data").trim()).expect("JSON data");
                return Sse::Event { id, data };
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("timed out waiting for an SSE block")
                .expect("stream read")
                .expect("stream still open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next event, heartbeats skipped, within `seconds` in all.
    async fn next_event(&mut self, seconds: u64) -> (i64, Value) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            if let Sse::Event { id, data } = self.next_before(deadline).await {
                return (id, data);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stream_pushes_each_publish_and_a_reconnect_resumes_from_last_event_id() {
    let mut t = dashboard_support::topology("dash-sse");
    t.count.publish_every = Duration::from_secs(1);
    let zk = Zk::connect(&t).await.expect("ZooKeeper");
    publish_products(&zk, &t).await;
    let metrics_port = testing::free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let d = Dashboard::start(&t, &["--record", "0", "--metrics", &metrics], None).await;

    let mut stream = SseReader::open(&d, "/api/stream?top=2", None).await;
    let (first, data) = stream.next_event(30).await;
    assert_eq!(data["items"][0], json!({"key": "p1", "count": 3}), "{data}");
    assert_eq!(data["items"].as_array().map(Vec::len), Some(2));
    let scraped = testing::scrape_metrics(metrics_port)
        .await
        .expect("metrics");
    assert!(
        scraped.contains("hotkeys_dashboard_stream_clients 1"),
        "{scraped}"
    );

    // New events counted: p1 rises to 5 in task 0's next version.
    publish_hot_list(&zk, &t.name, 0, &keys(&["p1", "a", "b", "c", "d"]), "test")
        .await
        .expect("publish");
    let (second, data) = stream.next_event(30).await;
    assert!(second > first, "{second} after {first}");
    assert_eq!(data["items"][0], json!({"key": "p1", "count": 5}), "{data}");
    assert_eq!(data["versions"]["0"], 1);

    // A client that saw everything resumes without a repeat: its first event is the next
    // publish.
    drop(stream);
    let mut resumed = SseReader::open(&d, "/api/stream?top=2", Some(second)).await;
    publish_hot_list(&zk, &t.name, 1, &keys(&["p3"]), "test")
        .await
        .expect("publish");
    let (third, data) = resumed.next_event(30).await;
    assert!(third > second, "no repeat of {second}: got {third}");
    assert_eq!(data["versions"]["1"], 1, "{data}");

    // A client that missed publishes gets the current set at once.
    let mut behind = SseReader::open(&d, "/api/stream?top=2", Some(first)).await;
    let (caught_up, _) = behind.next_event(30).await;
    assert_eq!(caught_up, third);

    // A quiet stream carries heartbeats (every 10 s).
    assert!(matches!(resumed.next(30).await, Sse::Heartbeat));
    zk.delete_all().await.expect("clean up");
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_ids_keep_growing_across_a_reset_and_never_repeat() {
    let t = dashboard_support::topology("dash-sse-reset");
    let zk = Zk::connect(&t).await.expect("ZooKeeper");
    publish_products(&zk, &t).await;
    let d = Dashboard::start(&t, &["--record", "0"], None).await;
    let mut stream = SseReader::open(&d, "/api/stream?top=2", None).await;
    let mut ids = vec![stream.next_event(30).await.0];
    for _ in 0..3 {
        publish_hot_list(&zk, &t.name, 0, &keys(&["p1", "a"]), "test")
            .await
            .expect("publish");
        ids.push(stream.next_event(30).await.0);
    }

    // What `hotctl reset --yes --force` does; the workers publish again, from version 0.
    zk.delete_all().await.expect("reset");
    publish_products(&zk, &t).await;
    loop {
        let (id, data) = stream.next_event(30).await;
        ids.push(id);
        if data["versions"] == json!({"0": 0, "1": 0}) && data["items"][0]["key"] == "p1" {
            break;
        }
    }
    assert!(
        ids.windows(2).all(|w| w[1] > w[0]),
        "ids go back or repeat across the reset: {ids:?}"
    );
    zk.delete_all().await.expect("clean up");
}

/// How many rows of `topology` the history table holds older than `before`, and newer.
async fn rows_around(pool: &hotkeys::mysql::Pool, topology: &str, before: i64) -> (i64, i64) {
    sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(taken_at < ?), 0) AS SIGNED), \
         CAST(COALESCE(SUM(taken_at >= ?), 0) AS SIGNED) \
         FROM hot_history WHERE topology = ?",
    )
    .bind(before)
    .bind(before)
    .bind(topology)
    .fetch_one(pool)
    .await
    .expect("count rows")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_recorder_writes_history_that_the_api_reads_back_and_deletes_old_rows() {
    let t = dashboard_support::topology("dash-record");
    let zk = Zk::connect(&t).await.expect("ZooKeeper");
    publish_products(&zk, &t).await;
    let pool = dashboard_support::history_db().await;
    // The dashboard migrates at start; a row two hours old must go with --retain 1h.
    let d = Dashboard::start(&t, &["--record", "1s", "--retain", "1h"], None).await;
    let old = now_ms() - 2 * 3600 * 1000;
    sqlx::query(
        "INSERT INTO hot_history (topology, counter, taken_at, `key`, count, error) \
         VALUES (?, 'hot', ?, 'p1', 99, NULL)",
    )
    .bind(&t.name)
    .bind(old)
    .execute(&pool)
    .await
    .expect("insert an old row");

    let points = testing::eventually(60, "two recorded points of p1", || async {
        let doc = d.json("/api/history?key=p1&from=-1h").await;
        let points = doc["points"].as_array()?.clone();
        (points.len() >= 2).then_some(points)
    })
    .await;
    assert_eq!(points[0][1], 3, "[ms, count]: {points:?}");
    assert!(points[0][0].as_i64().unwrap() > now_ms() - 60_000);
    testing::eventually(60, "the old row deleted", || async {
        let (older, newer) = rows_around(&pool, &t.name, now_ms() - 3600 * 1000).await;
        (older == 0 && newer > 0).then_some(())
    })
    .await;

    let top = d.json("/api/top?from=-1h&n=2").await;
    assert_eq!(
        top["keys"],
        json!([{"key": "p1", "max": 3}, {"key": HOSTILE, "max": 2}]),
        "{top}"
    );
    let (status, csv) = d.get("/api/history.csv?from=-1h").await;
    assert_eq!(status, 200);
    assert!(
        csv.starts_with("taken_at_ms,counter,key,count,error\n"),
        "{csv}"
    );
    assert!(csv.contains(",hot,p1,3,\n"), "{csv}");
    assert!(csv.contains(&format!(",hot,{HOSTILE},2,\n")), "{csv}");
    let (status, page) = d.get("/history?key=p1&range=1h").await;
    assert_eq!(status, 200);
    assert!(page.contains("<polyline"), "a chart: {page}");
    let (_, page) = d.get("/hot").await;
    assert!(page.contains("<polyline"), "trend lines: {page}");
    assert_eq!(d.get("/api/history").await.0, 400, "a key is required");
    assert_eq!(d.get("/api/history?key=p1&from=later").await.0, 400);
    zk.delete_all().await.expect("clean up");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_of_two_dashboards_records_and_the_other_takes_over_when_it_dies() {
    let mut t = dashboard_support::topology("dash-recorders");
    // ZooKeeper's shortest session (2 × its tick): a killed holder's lock goes soon.
    t.zookeeper.session_timeout = Duration::from_secs(4);
    let zk = Zk::connect(&t).await.expect("ZooKeeper");
    publish_products(&zk, &t).await;
    let mut a = Dashboard::start(&t, &["--record", "1s"], None).await;
    let mut b = Dashboard::start(&t, &["--record", "1s"], None).await;

    let holder = testing::eventually(60, "a recorder", || async {
        let (ra, rb) = (a.json("/api/recorder").await, b.json("/api/recorder").await);
        ra["holder"].as_str()?;
        Some((ra, rb))
    })
    .await;
    let (ra, rb) = holder;
    assert_eq!(ra["holder"], rb["holder"], "both see the same holder");
    assert_ne!(ra["this"], rb["this"], "exactly one records: {ra} {rb}");
    let (dead, survivor) = if ra["this"] == true {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    assert!(
        ra["holder"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", dead.pid())),
        "{ra}"
    );
    dead.kill();
    testing::eventually(60, "the survivor to take over", || async {
        let r = survivor.json("/api/recorder").await;
        (r["this"] == true).then_some(())
    })
    .await;
    zk.delete_all().await.expect("clean up");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_open_streams_and_releases_the_recorder_lock() {
    let t = dashboard_support::topology("dash-sigterm");
    let zk = Zk::connect(&t).await.expect("ZooKeeper");
    publish_products(&zk, &t).await;
    let mut d = Dashboard::start(&t, &["--record", "1s"], None).await;
    testing::eventually(60, "this dashboard to record", || async {
        (d.json("/api/recorder").await["this"] == true).then_some(())
    })
    .await;
    let mut stream = SseReader::open(&d, "/api/stream", None).await;
    stream.next_event(30).await;

    let status = d.terminate().await;
    assert!(status.success(), "exit status {status}");
    assert!(
        zk.read_recorder().await.expect("ZooKeeper").is_none(),
        "the lock is released at once, not when the session times out"
    );
    zk.delete_all().await.expect("clean up");
}

#[test]
fn an_unreachable_zookeeper_exits_3() {
    let mut t = dashboard_support::topology("dash-no-zk");
    t.zookeeper.connect = format!("127.0.0.1:{}", testing::free_port());
    let file = testing::write_topology(&t);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hotctl"))
        .env("RUST_LOG", "off")
        .env_remove("HOTKEYS_ZOOKEEPER_CONNECT")
        .arg("--topology")
        .arg(file)
        .args(["dashboard", "--listen", "127.0.0.1:0", "--record", "0"])
        .output()
        .expect("run hotctl");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
