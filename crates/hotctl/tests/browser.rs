//! The dashboard in a real browser: Debian's headless `chromium`, driven over WebDriver by
//! fantoccini through `chromedriver` (both installed by scripts/test.sh). The hot-keys page
//! shows a planted key, its count changes without a reload when the key is counted again,
//! a hostile key is text, and unban with the token lifts a ban in Redis. A page reached
//! through a name that resolves to loopback (DNS rebinding) is refused, and with the history
//! table locked the hot-keys page still shows its counts, under a banner.
//!
//! Skipped when `chromedriver` is not installed, except with `CI` set (then a failure).

mod dashboard_support;

use std::process::{Child, Command, Stdio};

use dashboard_support::Dashboard;
use fantoccini::{Client, ClientBuilder, Locator};
use hotkeys::blacklist::redis_key;
use hotkeys::hotlist::now_ms;
use hotkeys::redis::RedisConn;
use hotkeys::testing::{self, publish_hot_list};
use hotkeys::zk::Zk;
use serde_json::json;

const HOSTILE: &str = "<img src=x onerror=alert(1)>";

/// The flags headless Chromium needs on these machines (root, no GPU, no network).
const CHROMIUM_ARGS: [&str; 7] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--no-first-run",
    "--window-size=1200,900",
];

/// A chromedriver of the test's own; killed when dropped.
struct Driver {
    url: String,
    child: Child,
}

impl Driver {
    fn start() -> Option<Driver> {
        let port = testing::free_port();
        match Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => Some(Driver {
                url: format!("http://127.0.0.1:{port}"),
                child,
            }),
            Err(e) => {
                testing::unavailable(format_args!(
                    "chromedriver: {e}; scripts/test.sh installs chromium-driver"
                ));
                None
            }
        }
    }

    async fn browser(&self) -> Client {
        self.browser_with(&[]).await
    }

    /// A browser started with `extra` flags besides [`CHROMIUM_ARGS`].
    async fn browser_with(&self, extra: &[&str]) -> Client {
        let args: Vec<&str> = CHROMIUM_ARGS.iter().chain(extra).copied().collect();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": args, "binary": "/usr/bin/chromium"}),
        );
        testing::eventually(30, "chromedriver to start a browser", || {
            let caps = caps.clone();
            async move {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&self.url)
                    .await
                    .ok()
            }
        })
        .await
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of the first element matching `css`, if there is one.
async fn text(browser: &Client, css: &str) -> Option<String> {
    browser
        .find(Locator::Css(css))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hot_keys_page_updates_live_and_unban_with_the_token_lifts_a_ban() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let t = dashboard_support::topology("dash-browser");
    let zk = Zk::connect(&t).await.expect("ZooKeeper");
    let planted = format!("planted-{}", std::process::id());
    let listed = |extra: usize| {
        let mut keys = vec![planted.clone(), HOSTILE.to_string()];
        keys.extend((0..extra).map(|i| format!("k{i}")));
        keys
    };
    publish_hot_list(&zk, &t.name, 0, &listed(1), "test")
        .await
        .expect("publish");
    let mut redis = RedisConn::connect_home(&t.redis).await.expect("Redis");
    let bans = redis_key(&t.name, "caller");
    let _: () = redis::cmd("ZADD")
        .arg(&bans)
        .arg(now_ms() + 600_000)
        .arg("6.6.6.6")
        .query_async(&mut redis)
        .await
        .expect("ZADD");
    let d = Dashboard::start(&t, &["--record", "0"], Some("s3cret")).await;
    let browser = driver.browser().await;

    browser.goto(&d.url("/hot")).await.expect("open /hot");
    let row = format!("#hot tr[data-key='{planted}'] td.count");
    // live.js re-renders the rows when the stream's first event arrives, which can detach
    // an element between finding it and reading it: read again until the row holds.
    testing::eventually(30, "the planted key with its count", || async {
        (text(&browser, &row).await.as_deref() == Some("3")).then_some(())
    })
    .await;
    let hostile_cell = "#hot tbody tr:nth-child(2) td:nth-child(2)";
    testing::eventually(30, "the hostile key shown as text, not markup", || async {
        (text(&browser, hostile_cell).await.as_deref() == Some(HOSTILE)).then_some(())
    })
    .await;
    // A marker that a reload would wipe out.
    browser
        .execute("window.notReloaded = true; return true;", vec![])
        .await
        .expect("set a marker");

    // The key is counted again: the next version lists it at 5.
    publish_hot_list(&zk, &t.name, 0, &listed(3), "test")
        .await
        .expect("publish");
    testing::eventually(30, "the count to change on the open page", || async {
        (text(&browser, &row).await.as_deref() == Some("5")).then_some(())
    })
    .await;
    let same_page = browser
        .execute("return window.notReloaded === true;", vec![])
        .await
        .expect("read the marker");
    assert_eq!(same_page, json!(true), "updated without a reload");
    std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-hot.png"),
        browser.screenshot().await.expect("screenshot"),
    )
    .expect("save the screenshot");

    browser
        .goto(&d.url("/blacklist"))
        .await
        .expect("open /blacklist");
    browser
        .find(Locator::Css("form.unban input[name=token]"))
        .await
        .expect("the token field")
        .send_keys("s3cret")
        .await
        .expect("type the token");
    browser
        .find(Locator::Css("tr[data-key='6.6.6.6'] button"))
        .await
        .expect("the unban button")
        .click()
        .await
        .expect("click unban");
    testing::eventually(30, "the ban lifted in Redis", || async {
        let mut redis = redis.clone();
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(&bans)
            .arg("6.6.6.6")
            .query_async(&mut redis)
            .await
            .ok()?;
        score.is_none().then_some(())
    })
    .await;
    assert_eq!(
        text(&browser, "tr[data-key='6.6.6.6']").await,
        None,
        "the page no longer lists it"
    );
    browser.close().await.expect("close the browser");
    zk.delete_all().await.expect("clean up");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_reached_through_a_rebinding_name_is_refused() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let t = dashboard_support::topology("dash-rebind");
    let zk = Zk::connect(&t).await.expect("ZooKeeper");
    publish_hot_list(&zk, &t.name, 0, &["secret-key".to_string()], "test")
        .await
        .expect("publish");
    let d = Dashboard::start(&t, &["--record", "0"], None).await;
    // What a rebinding attacker's name does: it resolves to the dashboard's loopback address.
    let browser = driver
        .browser_with(&["--host-resolver-rules=MAP evil.example 127.0.0.1"])
        .await;
    let port = d.base.rsplit(':').next().expect("port");
    browser
        .goto(&format!("http://evil.example:{port}/hot"))
        .await
        .expect("open the page through the rebinding name");
    let body = text(&browser, "body").await.unwrap_or_default();
    assert!(
        body.contains("evil.example"),
        "the refusal names the host: {body}"
    );
    assert!(
        !body.contains("secret-key"),
        "nothing of the dashboard: {body}"
    );
    browser.goto(&d.url("/hot")).await.expect("open /hot");
    testing::eventually(30, "the page through its own address", || async {
        text(&browser, "#hot")
            .await
            .filter(|t| t.contains("secret-key"))
    })
    .await;
    browser.close().await.expect("close the browser");
    zk.delete_all().await.expect("clean up");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_history_table_locked_the_hot_keys_page_shows_its_counts_under_a_banner() {
    const LOCKED_DB: &str = "hotkeys_dashboard_locked_page";
    let Some(driver) = Driver::start() else {
        return;
    };
    let t = dashboard_support::topology_in("dash-locked-page", LOCKED_DB);
    let zk = Zk::connect(&t).await.expect("ZooKeeper");
    publish_hot_list(&zk, &t.name, 0, &["planted".to_string()], "test")
        .await
        .expect("publish");
    let d = Dashboard::start(&t, &["--record", "0"], None).await;
    let locker = dashboard_support::lock_history(LOCKED_DB).await;
    let browser = driver.browser().await;

    browser.goto(&d.url("/hot")).await.expect("open /hot");
    let banner = text(&browser, ".banner").await.unwrap_or_default();
    assert!(banner.contains("history unavailable"), "banner: {banner}");
    testing::eventually(30, "the planted key with its count", || async {
        (text(&browser, "#hot tr[data-key='planted'] td.count")
            .await
            .as_deref()
            == Some("1"))
        .then_some(())
    })
    .await;
    std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-hot-locked.png"),
        browser.screenshot().await.expect("screenshot"),
    )
    .expect("save the screenshot");
    browser.close().await.expect("close the browser");
    locker.unlock().await;
    zk.delete_all().await.expect("clean up");
}
