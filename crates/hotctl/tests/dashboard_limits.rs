//! `hotctl dashboard` under hostile or heavy use, against the real stack: a rebinding
//! `Host`, a cross-site POST, 60 requests at once (connections counted with `ss`), more SSE
//! streams than allowed, a long history, and a history table another session has locked.

mod dashboard_support;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use dashboard_support::Dashboard;
use hotkeys::hotlist::now_ms;
use hotkeys::testing::{self, publish_hot_list};
use hotkeys::zk::Zk;

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// A client that only guards against hanging: a request still open after this fails.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebinding_host_is_refused_and_a_cross_site_post_is_forbidden() {
    let t = dashboard_support::topology("dash-host");
    let d = Dashboard::start(&t, &["--record", "0"], Some("s3cret")).await;
    let port = d.base.rsplit(':').next().expect("port").to_string();
    let get = |host: String| client().get(d.url("/api/hot")).header("host", host).send();

    let evil = get(format!("evil.example:{port}")).await.expect("GET");
    assert_eq!(evil.status().as_u16(), 421);
    let reason = evil.text().await.expect("body");
    assert!(reason.contains("evil.example"), "{reason}");
    assert_eq!(reason.trim_end().lines().count(), 1, "one line: {reason}");
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let ok = get(host.clone()).await.expect("GET");
        assert_eq!(ok.status().as_u16(), 200, "Host: {host}");
    }

    let unban = |origin: Option<&str>| {
        let mut request = client()
            .post(d.url("/api/unban"))
            .bearer_auth("s3cret")
            .header("content-type", "application/json")
            .body(r#"{"counter":"caller","keys":["6.6.6.6"]}"#);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let cross = unban(Some("http://evil.example")).await.expect("POST");
    assert_eq!(cross.status().as_u16(), 403);
    let reason = cross.text().await.expect("body");
    assert!(reason.contains("Origin"), "{reason}");
    let same = unban(Some(&d.base)).await.expect("POST");
    assert_eq!(
        same.status().as_u16(),
        200,
        "{}",
        same.text().await.unwrap()
    );
    assert_eq!(unban(None).await.expect("POST").status().as_u16(), 200);
}

/// The ZooKeeper and Kafka connections `pid` holds now, by the server's port (`ss -tnp`).
fn connections(pid: u32, ports: &[u16]) -> HashMap<u16, usize> {
    let out = Command::new("ss")
        .args(["-tnpH", "state", "established"])
        .output()
        .expect("run ss");
    let owner = format!("pid={pid},");
    let mut counts: HashMap<u16, usize> = ports.iter().map(|p| (*p, 0)).collect();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Recv-Q Send-Q Local Peer Process
        let (Some(peer), true) = (fields.get(3), line.contains(&owner)) else {
            continue;
        };
        let port = peer.rsplit(':').next().and_then(|p| p.parse().ok());
        if let Some(n) = port.and_then(|p| counts.get_mut(&p)) {
            *n += 1;
        }
    }
    counts
}

fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("process status")
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("thread count")
}

fn port_of(address: &str) -> u16 {
    let first = address.split(',').next().expect("an address");
    let first = first.rsplit('/').next().expect("host:port");
    first
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

#[tokio::test(flavor = "multi_thread")]
async fn sixty_concurrent_task_and_cache_requests_share_one_zookeeper_session_and_kafka_client() {
    let t = dashboard_support::topology("dash-conns");
    hotkeys::kafka::ensure_topic(&t.kafka)
        .await
        .expect("create the topic");
    let zk = Zk::connect(&t).await.expect("ZooKeeper");
    for task in 0..6 {
        publish_hot_list(&zk, &t.name, task, &keys("p", 20), "test")
            .await
            .expect("publish");
    }
    let d = Dashboard::start(&t, &["--record", "0"], None).await;
    let (zk_port, kafka_port) = (port_of(&t.zookeeper.connect), port_of(&t.kafka.brokers));
    let pid = d.pid();

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::task::spawn_blocking(move || {
            let mut peak = (0, 0, 0);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let now = connections(pid, &[zk_port, kafka_port]);
                peak.0 = peak.0.max(now[&zk_port]);
                peak.1 = peak.1.max(now[&kafka_port]);
                peak.2 = peak.2.max(threads(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let http = client();
    let requests = (0..60).map(|i| {
        let path = if i % 2 == 0 {
            "/api/tasks"
        } else {
            "/api/cache"
        };
        let request = http.get(d.url(path)).send();
        async move { (path, request.await.expect("answered").status().as_u16()) }
    });
    let statuses = futures::future::join_all(requests).await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (zk_peak, kafka_peak, thread_peak) = sampler.await.expect("sampler");

    let failed: Vec<_> = statuses.iter().filter(|(_, s)| *s != 200).collect();
    assert!(failed.is_empty(), "every request answered 200: {failed:?}");
    assert!(zk_peak <= 2, "{zk_peak} ZooKeeper connections at the peak");
    assert!(
        kafka_peak <= 6,
        "{kafka_peak} Kafka connections at the peak"
    );
    assert!(thread_peak <= 96, "{thread_peak} threads at the peak");
    zk.delete_all().await.expect("clean up");
}

#[tokio::test(flavor = "multi_thread")]
async fn past_max_streams_a_stream_is_refused_with_503_and_retry_after() {
    let mut t = dashboard_support::topology("dash-streams");
    t.dashboard.max_streams = 2;
    let zk = Zk::connect(&t).await.expect("ZooKeeper");
    publish_hot_list(&zk, &t.name, 0, &keys("p", 3), "test")
        .await
        .expect("publish");
    let d = Dashboard::start(&t, &["--record", "0"], None).await;
    let open = || client().get(d.url("/api/stream")).send();

    let first = open().await.expect("stream");
    let second = open().await.expect("stream");
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let refused = open().await.expect("answered");
    assert_eq!(refused.status().as_u16(), 503);
    assert!(refused.headers().contains_key("retry-after"), "{refused:?}");
    assert_eq!(
        d.json("/api/hot").await["counter"],
        "hot",
        "the rest still answers"
    );

    drop(first);
    testing::eventually(30, "a slot freed by the closed stream", || async {
        let again = open().await.ok()?;
        (again.status() == 200).then_some(again)
    })
    .await;
    drop(second);
    zk.delete_all().await.expect("clean up");
}

/// Writes `snapshots` snapshots of 100 keys, one a minute back from now, in one statement.
async fn long_history(pool: &hotkeys::mysql::Pool, topology: &str, snapshots: u64) {
    let rows = snapshots * 100;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO hot_history (topology, counter, taken_at, `key`, count, error) \
         SELECT ?, 'hot', ? - (seq DIV 100) * 60000, CONCAT('k', seq MOD 100), \
         1000 - seq MOD 100 + seq DIV 100, NULL FROM seq_0_to_{}",
        rows - 1
    )))
    .bind(topology)
    .bind(now_ms())
    .execute(pool)
    .await
    .expect("insert a long history");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_history_is_ranked_only_within_max_range_and_the_csv_states_its_cut() {
    let t = dashboard_support::topology("dash-long");
    let pool = dashboard_support::history_db().await;
    let d = Dashboard::start(&t, &["--record", "0"], None).await;
    // 1,500 minutes of snapshots: more than the default max_range (24h) and the CSV cap.
    long_history(&pool, &t.name, 1500).await;

    let (status, body) = d.get("/api/top?from=0").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("86400000 ms"),
        "names the largest range: {body}"
    );
    let top = d.json("/api/top?from=-1h&n=3").await;
    assert_eq!(top["keys"].as_array().map(Vec::len), Some(3), "{top}");

    let csv = client()
        .get(d.url("/api/history.csv?from=0"))
        .send()
        .await
        .expect("CSV");
    assert_eq!(csv.status(), 200);
    assert_eq!(
        csv.headers()
            .get("x-hotkeys-row-limit")
            .map(|v| v.as_bytes()),
        Some(&b"100000"[..])
    );
    let text = csv.text().await.expect("CSV body");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "taken_at_ms,counter,key,count,error");
    assert_eq!(lines.len(), 1 + 100_000 + 1, "header, rows, the cut");
    assert!(
        lines[lines.len() - 1].starts_with("# cut at 100000 rows"),
        "{}",
        lines[lines.len() - 1]
    );
    sqlx::query("DELETE FROM hot_history WHERE topology = ?")
        .bind(&t.name)
        .execute(&pool)
        .await
        .expect("clean up");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_history_table_locked_pages_answer_the_recorder_lets_go_and_sigterm_exits() {
    const LOCKED_DB: &str = "hotkeys_dashboard_locked";
    let t = dashboard_support::topology_in("dash-locked", LOCKED_DB);
    let zk = Zk::connect(&t).await.expect("ZooKeeper");
    publish_hot_list(&zk, &t.name, 0, &keys("p", 3), "test")
        .await
        .expect("publish");
    let mut d = Dashboard::start(&t, &["--record", "1s"], None).await;
    testing::eventually(60, "this dashboard to record", || async {
        (d.json("/api/recorder").await["this"] == true).then_some(())
    })
    .await;
    let locker = dashboard_support::lock_history(LOCKED_DB).await;

    let page = client()
        .get(d.url("/hot"))
        .send()
        .await
        .expect("/hot answers");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("page");
    assert!(html.contains("history unavailable"), "{html}");
    assert!(html.contains("p0"), "the live counts still show: {html}");
    let page = client()
        .get(d.url("/history"))
        .send()
        .await
        .expect("/history answers");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("page");
    assert!(html.contains("history unavailable"), "{html}");
    let top = client()
        .get(d.url("/api/top"))
        .send()
        .await
        .expect("/api/top answers");
    assert_eq!(
        top.status(),
        503,
        "{}",
        top.text().await.unwrap_or_default()
    );
    let me = format!(":{}", d.pid());
    testing::eventually(60, "the recorder to let go of its lock", || async {
        let holder = zk.read_recorder().await.expect("ZooKeeper");
        (!holder.is_some_and(|(h, _)| h.holder().ends_with(&me))).then_some(())
    })
    .await;
    let status = d.terminate().await;
    assert!(status.success(), "exit status {status}");

    locker.unlock().await;
    zk.delete_all().await.expect("clean up");
}
