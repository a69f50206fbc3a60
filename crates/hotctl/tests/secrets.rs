//! A Redis password planted in the URL shapes that used to leak never shows: not in a
//! configuration error that quotes a value, not in the refusal of a password pasted raw
//! with `?`, `#` or `@`, and, percent-encoded the way the refusal asks, not in any log line,
//! metric or dashboard page of a dashboard that works with it.

mod common;
mod dashboard_support;

use std::process::Command;

use common::hotctl_logging;
use dashboard_support::Dashboard;
use hotkeys::testing::{self, RedisServer};

/// The two halves of the planted password; neither may show anywhere.
const HALVES: [&str; 2] = ["Pl4ntedHead", "Pl4ntedTail"];

fn assert_hidden(what: &str, text: &str) {
    for half in HALVES {
        assert!(!text.contains(half), "{what} shows the password:\n{text}");
    }
}

fn output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_config_error_quoting_a_node_url_does_not_echo_its_password() {
    let [head, tail] = HALVES;
    let file = std::env::temp_dir().join(format!("{}.toml", testing::unique("secret-quote")));
    // `nodes` written as a string rather than a list: serde quotes the value back.
    std::fs::write(
        &file,
        format!("[redis]\nnodes = \"redis://:{head}{tail}@127.0.0.1:6379\"\n"),
    )
    .expect("write topology");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hotctl"));
    for k in testing::topology_overrides() {
        cmd.env_remove(k);
    }
    let out = cmd
        .env("RUST_LOG", "trace")
        .arg("--topology")
        .arg(&file)
        .arg("tasks")
        .output()
        .expect("run hotctl");
    let _ = std::fs::remove_file(&file);
    let text = output(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("redis.nodes"), "names the key: {text}");
    assert_hidden("the configuration error", &text);
}

#[test]
fn a_password_pasted_raw_with_a_url_delimiter_is_refused_by_its_place_and_never_shown() {
    let [head, tail] = HALVES;
    for delimiter in ["?", "#", "@"] {
        let mut t = testing::topology("secret-raw");
        t.redis.mode = hotkeys::config::RedisMode::Ring;
        t.redis.nodes = vec![
            "redis://127.0.0.1:1".into(),
            format!("redis://:{head}{delimiter}{tail}@127.0.0.1:2"),
        ];
        let out = hotctl_logging(&t, &["keys"], "trace");
        let text = output(&out);
        assert_eq!(out.status.code(), Some(2), "raw {delimiter}: {text}");
        assert!(
            text.contains("redis.nodes[1]"),
            "raw {delimiter}: names the node by its place: {text}"
        );
        assert!(
            text.contains("percent-encode"),
            "raw {delimiter}: says what to do: {text}"
        );
        assert_hidden(&format!("the refusal of a raw {delimiter}"), &text);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_percent_encoded_password_shows_in_no_log_metric_or_dashboard_page() {
    let [head, tail] = HALVES;
    let password = format!("{head}?#@{tail}");
    let server = RedisServer::start_with(&["--requirepass", &password]);
    let mut t = dashboard_support::topology("secret-pages");
    t.redis.nodes = vec![format!(
        "redis://:{head}%3F%23%40{tail}@127.0.0.1:{}",
        server.port
    )];
    let metrics_port = testing::free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let d = Dashboard::start(&t, &["--record", "0", "--metrics", &metrics], None).await;

    let (_, overview) = d.get("/").await;
    assert!(
        overview.contains(&format!("redis://127.0.0.1:{}", server.port)),
        "the node is named by host and port: {overview}"
    );
    assert!(
        overview.contains(r#"<td class="up">up</td>"#),
        "the password works: {overview}"
    );
    for page in [
        "/",
        "/hot",
        "/history",
        "/blacklist",
        "/cache",
        "/api/tasks",
        "/api/hot",
        "/api/blacklist?counter=caller",
        "/api/replication",
        "/api/cache",
        "/api/recorder",
        "/api/top",
        "/api/history?key=1",
    ] {
        let (status, body) = d.get(page).await;
        assert!(
            status < 500 || page == "/history",
            "{page}: {status} {body}"
        );
        assert_hidden(page, &body);
    }
    let scraped = testing::scrape_metrics(metrics_port)
        .await
        .expect("metrics");
    assert_hidden("the metrics", &scraped);
    assert_hidden("the dashboard's log", &d.log());
}
