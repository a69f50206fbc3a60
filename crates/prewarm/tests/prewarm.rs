//! prewarm against the real stack: ZooKeeper locks and marks, MySQL rows, Redis values.
//! Skipped when a server is unreachable, except with `CI` set, where that is a failure.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{ABSENT, Fixture, SEED, eventually, finished, keys, signal, warms};
use hotkeys::mysql::SeedProduct;
use hotkeys::testing::{TcpProxy, counter_value};
use prewarm::{TaskOutcome, TaskRecord};
use redis::AsyncCommands;

/// Task `t` of twelve: 40 products that exist and 3 that do not.
fn hot_keys_of(task: u32) -> Vec<String> {
    let t = u64::from(task);
    let mut k = keys(t * 100 + 1..=t * 100 + 40);
    k.extend(keys((0..3).map(|j| ABSENT + t * 10 + j)));
    k
}

fn record(summary: &prewarm::Summary, task: u32) -> &TaskRecord {
    summary
        .tasks
        .iter()
        .find(|r| r.task == task)
        .unwrap_or_else(|| panic!("task {task} missing from {summary:#?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn three_processes_warm_each_of_twelve_tasks_exactly_once_without_waiting() {
    let Some(mut f) = Fixture::new("prewarm-three", |_| {}).await else {
        return;
    };
    for task in 0..12 {
        f.publish(task, &hot_keys_of(task)).await;
    }
    // Each process holds every lock it takes for a second, so the three overlap for certain
    // and meet each other's locks.
    let args = [
        "--once",
        "--json",
        "--concurrency",
        "2",
        "--debug-hold-lock",
        "1s",
    ];
    let children: Vec<_> = (0..3)
        .map(|_| f.prewarm(&args).spawn().expect("spawn prewarm"))
        .collect();
    let mut summaries = Vec::new();
    for child in children {
        let (code, summary, stderr) = finished(child.wait_with_output().await.expect("wait"));
        assert_eq!(code, 0, "prewarm failed:\n{stderr}");
        summaries.push(summary);
    }

    let mut warmed_by: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for s in &summaries {
        assert_eq!(s.tasks.len(), 12, "{} did not account for every task", s.by);
        assert!(s.complete);
        for r in &s.tasks {
            if r.outcome == TaskOutcome::Warmed {
                warmed_by.entry(r.task).or_default().push(s.by.clone());
            }
            // A process that found a lock taken moved on and never warmed that task itself:
            // it did not wait for the lock and take it after its holder.
            if r.lock_busy > 0 {
                assert_ne!(
                    r.outcome,
                    TaskOutcome::Warmed,
                    "{} task {}: {r:?}",
                    s.by,
                    r.task
                );
            }
        }
    }
    for task in 0..12 {
        let by = warmed_by.get(&task).cloned().unwrap_or_default();
        assert_eq!(by.len(), 1, "task {task} warmed by {by:?}");
        let mark = f.warmed(task).await.expect("warmed mark");
        assert_eq!(
            mark.by, by[0],
            "task {task}: the mark names the process that warmed it"
        );
        assert_eq!((mark.rows, mark.missing), (40, 3));
    }
    let busy: u32 = summaries
        .iter()
        .flat_map(|s| &s.tasks)
        .map(|r| r.lock_busy)
        .sum();
    assert!(
        busy > 0,
        "the processes never met a taken lock: {summaries:#?}"
    );
    let written: u64 = summaries.iter().map(|s| s.totals.counts.written).sum();
    let missing: u64 = summaries.iter().map(|s| s.totals.counts.missing).sum();
    assert_eq!(
        written,
        12 * 40,
        "rows written = rows of the union of the hot lists"
    );
    assert_eq!(missing, 12 * 3);
    assert_eq!(f.cache_keys().await.len(), 12 * 40);
    assert!(f.locked_tasks().await.is_empty());
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_task_leaves_a_lock_that_vanishes_with_the_session_and_next_once_completes() {
    let Some(f) = Fixture::new("prewarm-sigkill", |_| {}).await else {
        return;
    };
    f.publish(0, &hot_keys_of(0)).await;
    let mut victim = f
        .prewarm(&["--once", "--debug-hold-lock", "10m"])
        .spawn()
        .expect("spawn prewarm");
    let pid = victim.id().expect("pid");
    let holder = eventually("the victim to take the lock", || async { f.lock(0).await }).await;
    assert_eq!(holder.pid, pid);
    victim.start_kill().expect("SIGKILL");
    let status = victim.wait().await.expect("wait");
    assert!(!status.success());
    assert!(
        f.warmed(0).await.is_none(),
        "a killed process must not have marked the task"
    );

    // Started while the dead process's lock may still be there: it must not wait on it,
    // and must finish the task once the lock is gone with the session.
    let next = f
        .prewarm(&["--once", "--json"])
        .spawn()
        .expect("spawn prewarm");
    eventually("the dead session's lock to disappear", || async {
        f.lock(0).await.is_none().then_some(())
    })
    .await;
    let (code, summary, stderr) = finished(next.wait_with_output().await.expect("wait"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(record(&summary, 0).outcome, TaskOutcome::Warmed);
    let mark = f.warmed(0).await.expect("marked");
    assert_eq!(mark.by, summary.by);
    assert_eq!(mark.rows, 40);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn warmed_task_is_skipped_a_new_version_is_due_again_and_force_rewarms() {
    let Some(f) = Fixture::new("prewarm-versions", |_| {}).await else {
        return;
    };
    f.publish(0, &keys(1..=10)).await;
    f.publish(1, &keys(11..=20)).await;

    let (code, first, _) = f.run(&["--once"]).await;
    assert_eq!(code, 0);
    assert_eq!(first.totals.counts.written, 20);
    assert_eq!(f.warmed(0).await.expect("mark").hot_version, 0);

    let (code, second, _) = f.run(&["--once"]).await;
    assert_eq!(code, 0);
    for task in [0, 1] {
        assert_eq!(record(&second, task).outcome, TaskOutcome::UpToDate);
    }
    assert_eq!(second.totals.counts.written, 0);

    let v = f.publish(0, &keys((1..=10).chain([21, 22]))).await;
    assert_eq!(v, 1);
    let (code, third, _) = f.run(&["--once"]).await;
    assert_eq!(code, 0);
    let t0 = record(&third, 0);
    assert_eq!(t0.outcome, TaskOutcome::Warmed);
    assert_eq!(
        (
            t0.counts.rows,
            t0.counts.written,
            t0.counts.already_present,
            t0.counts.skipped_warm
        ),
        (2, 2, 0, 10),
        "only new keys are read and written"
    );
    assert_eq!(record(&third, 1).outcome, TaskOutcome::UpToDate);
    assert_eq!(f.warmed(0).await.expect("mark").hot_version, 1);

    let (code, forced, _) = f.run(&["--once", "--force"]).await;
    assert_eq!(code, 0);
    for task in [0, 1] {
        assert_eq!(record(&forced, task).outcome, TaskOutcome::Warmed);
    }
    assert_eq!(
        forced.totals.counts.written, 22,
        "--force overwrites every value"
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn existing_redis_values_are_kept_and_missing_rows_are_counted() {
    let Some(mut f) = Fixture::new("prewarm-nx", |_| {}).await else {
        return;
    };
    let mut hot = keys([1, 2, 3]);
    hot.extend(keys([ABSENT + 1, ABSENT + 2]));
    f.publish(0, &hot).await;
    f.set("2", "live value").await;

    let (code, summary, stderr) = f.run(&["--once"]).await;
    assert_eq!(code, 0, "{stderr}");
    let r = record(&summary, 0);
    assert_eq!(
        (
            r.counts.rows,
            r.counts.written,
            r.counts.skipped_warm,
            r.counts.missing
        ),
        (2, 2, 1, 2),
        "the key Redis holds is not read from MySQL"
    );
    assert_eq!(f.get("2").await.as_deref(), Some("live value"));
    let one: serde_json::Value =
        serde_json::from_str(&f.get("1").await.expect("warmed value")).expect("the value is JSON");
    assert_eq!(one, SeedProduct::generate(1, SEED).expected_json());
    assert_eq!(f.get(&(ABSENT + 1).to_string()).await, None);
    let ttl = f.ttl_ms("1").await;
    let base = f.t.redis.ttl.as_millis() as i64;
    let most = base + (base as f64 * f.t.redis.ttl_jitter) as i64;
    assert!(
        ttl > base - 60_000 && ttl <= most,
        "TTL {ttl} ms outside the jittered range"
    );
    let mark = f.warmed(0).await.expect("mark");
    assert_eq!((mark.rows, mark.missing), (2, 2));
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_lost_mid_run_exits_3_with_a_clear_message_and_no_locks_left() {
    // A proxy of our own stands for the database, so that stopping "MySQL" disturbs no
    // other test or user of the shared server.
    let mysql = hotkeys::mysql::options(&common::test_db_url(
        &hotkeys::testing::topology("probe").mysql.url,
    ))
    .expect("mysql url");
    let proxy = TcpProxy::start(&format!("{}:{}", mysql.get_host(), mysql.get_port())).await;
    let addr = proxy.addr;
    let Some(f) = Fixture::new("prewarm-mysql-down", |t| {
        t.mysql.url = format!("mysql://hotkeys:hotkeys@{addr}/hotkeys_test");
    })
    .await
    else {
        return;
    };
    for task in 0..4 {
        f.publish(task, &hot_keys_of(task)).await;
    }
    let (code, summary, stderr) = cut_while_locked(&f, &proxy, &["--concurrency", "4"]).await;
    assert_eq!(
        code, 3,
        "expected exit 3 (dependency unreachable):\n{stderr}"
    );
    assert!(
        stderr.contains("MySQL unreachable"),
        "unclear message:\n{stderr}"
    );
    assert!(
        summary
            .error
            .as_deref()
            .is_some_and(|e| e.contains("MySQL"))
    );
    assert!(f.locked_tasks().await.is_empty(), "locks left behind");
    for task in 0..4 {
        assert!(
            f.warmed(task).await.is_none(),
            "task {task} marked without its rows"
        );
    }
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_lost_mid_run_exits_3_and_releases_the_locks() {
    let redis = hotkeys::testing::topology("probe").redis.nodes[0].clone();
    let target = redis
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_string();
    let proxy = TcpProxy::start(&target).await;
    let addr = proxy.addr;
    let Some(f) = Fixture::new("prewarm-redis-down", |t| {
        t.redis.nodes = vec![format!("redis://{addr}")];
        t.redis.timeout = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    for task in 0..3 {
        f.publish(task, &hot_keys_of(task)).await;
    }
    let (code, _, stderr) = cut_while_locked(&f, &proxy, &[]).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("Redis unreachable"), "{stderr}");
    assert!(f.locked_tasks().await.is_empty(), "locks left behind");
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_down_at_start_exits_3_before_taking_any_lock() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let Some(f) = Fixture::new("prewarm-mysql-closed", |t| {
        t.mysql.url = format!("mysql://hotkeys:hotkeys@{closed}/hotkeys_test");
    })
    .await
    else {
        return;
    };
    f.publish(0, &hot_keys_of(0)).await;
    let (code, _, stderr) = f.run(&["--once", "--retry-for", "1s"]).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("MySQL unreachable") && stderr.contains(&closed.to_string()),
        "the message should name MySQL and its address:\n{stderr}"
    );
    assert!(f.locked_tasks().await.is_empty());
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_password_in_a_node_url_shows_in_no_log_line_or_error() {
    const PLANTED: &str = "planted-Pw-3e7a";
    let closed = hotkeys::testing::free_port();
    let Some(f) = Fixture::new("prewarm-planted", |t| {
        t.redis.nodes = vec![format!("redis://:{PLANTED}@127.0.0.1:{closed}")];
    })
    .await
    else {
        return;
    };
    f.publish(0, &hot_keys_of(0)).await;
    let out = f
        .prewarm(&["--once", "--retry-for", "1s"])
        .env("RUST_LOG", "trace")
        .output()
        .await
        .expect("run prewarm");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{closed}")),
        "the node is named: {text}"
    );
    assert!(!text.contains(PLANTED), "the password shows:\n{text}");
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_hot_list_is_reported_and_the_other_tasks_proceed() {
    let Some(f) = Fixture::new("prewarm-malformed", |_| {}).await else {
        return;
    };
    f.publish_raw(0, b"{not a hot list").await;
    f.publish(1, &keys(1..=5)).await;
    let (code, summary, _) = f.run(&["--once"]).await;
    assert_eq!(
        code, 1,
        "a task that cannot be warmed makes the pass incomplete"
    );
    let bad = record(&summary, 0);
    assert_eq!(bad.outcome, TaskOutcome::Malformed);
    assert!(
        bad.error
            .as_deref()
            .is_some_and(|e| e.contains("malformed")),
        "{bad:?}"
    );
    assert_eq!(record(&summary, 1).outcome, TaskOutcome::Warmed);
    assert!(f.locked_tasks().await.is_empty());
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn session_expiry_mid_task_is_reported_and_not_marked() {
    let Some(f) = Fixture::new("prewarm-expiry", |_| {}).await else {
        return;
    };
    f.publish(0, &keys(1..=10)).await;
    let frozen = f
        .prewarm(&["--once", "--json", "--debug-hold-lock", "3s"])
        .spawn()
        .expect("spawn prewarm");
    let pid = frozen.id().expect("pid");
    eventually("the first process to lock", || async { f.lock(0).await }).await;
    // Frozen like a long GC pause: its session expires and its lock goes with it.
    signal(pid, "STOP");
    eventually("the frozen process's lock to disappear", || async {
        f.lock(0).await.is_none().then_some(())
    })
    .await;
    let (code, other, stderr) = f.run(&["--once"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(record(&other, 0).outcome, TaskOutcome::Warmed);
    signal(pid, "CONT");
    let (code, first, stderr) = finished(frozen.wait_with_output().await.expect("wait"));
    assert_eq!(code, 0, "the task is warmed by someone:\n{stderr}");
    let r = record(&first, 0);
    assert!(r.session_lost, "the lost session must be reported: {r:?}");
    assert_eq!(r.outcome, TaskOutcome::WarmedByOther);
    assert_eq!(
        f.warmed(0).await.expect("mark").by,
        other.by,
        "the frozen process marked"
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_counts_rows_without_locking_or_writing() {
    let Some(mut f) = Fixture::new("prewarm-dry", |_| {}).await else {
        return;
    };
    f.publish(0, &hot_keys_of(0)).await;
    let (code, summary, _) = f.run(&["--once", "--dry-run"]).await;
    assert_eq!(code, 0);
    let r = record(&summary, 0);
    assert_eq!(
        (r.outcome, r.counts.rows, r.counts.missing, r.counts.written),
        (TaskOutcome::DryRun, 40, 3, 0)
    );
    assert!(f.cache_keys().await.is_empty());
    assert!(f.warmed(0).await.is_none());
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn written_values_under_replicated_prefixes_are_queued_for_the_other_data_centre() {
    let Some(mut f) = Fixture::new("prewarm-sync", |t| {
        t.sync.replicate = vec![t.redis.key.replace("{key}", "")];
    })
    .await
    else {
        return;
    };
    f.publish(0, &keys(1..=6)).await;
    f.set("3", "live value").await;
    let (code, summary, stderr) = f.run(&["--once"]).await;
    assert_eq!(code, 0, "{stderr}");
    let r = record(&summary, 0);
    assert_eq!(
        (r.counts.written, r.counts.skipped_warm, r.counts.replicated),
        (5, 1, 5)
    );
    let queued: Vec<String> = f
        .redis
        .lrange(&f.t.sync.queue, 0, -1)
        .await
        .expect("LRANGE");
    let keys: BTreeSet<String> = queued
        .iter()
        .map(|line| {
            let op: serde_json::Value = serde_json::from_str(line).expect("queued op");
            op["key"].as_str().expect("key").to_string()
        })
        .collect();
    let expected: BTreeSet<String> = [1, 2, 4, 5, 6]
        .iter()
        .map(|k| f.cache_key(&k.to_string()))
        .collect();
    assert_eq!(
        keys, expected,
        "the value Redis already had is not replicated"
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_rewarms_a_task_when_its_hot_list_moves_to_a_new_version() {
    let Some(f) = Fixture::new("prewarm-watch", |_| {}).await else {
        return;
    };
    f.publish(0, &keys(1..=5)).await;
    let watcher = f
        .prewarm(&["--watch", "--json", "--interval", "200ms"])
        .spawn()
        .expect("spawn prewarm");
    eventually("version 0 to be warmed", || async {
        f.warmed(0).await.filter(|w| w.hot_version == 0)
    })
    .await;
    f.publish(0, &keys(1..=8)).await;
    let mark = eventually("version 1 to be warmed", || async {
        f.warmed(0).await.filter(|w| w.hot_version == 1)
    })
    .await;
    assert_eq!(mark.rows, 3, "only the keys new to the hot list are read");
    signal(watcher.id().expect("pid"), "TERM");
    let (code, summary, stderr) = finished(watcher.wait_with_output().await.expect("wait"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        record(&summary, 0).hot_version,
        Some(1),
        "the summary reports the newest version warmed"
    );
    assert!(f.locked_tasks().await.is_empty());
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_reads_mysql_only_for_keys_redis_lacks_or_is_about_to_expire() {
    let Some(mut f) = Fixture::new("prewarm-lacks", |_| {}).await else {
        return;
    };
    let hot = keys(1..=20);
    f.publish(0, &hot).await;
    let (watcher, port) = f.watch_with_metrics();
    let lookups = || counter_value(port, "hotkeys_prewarm_mysql_lookups_total");
    assert_eq!(warms(port, 1).await, 1);
    assert_eq!(lookups().await, Some(20));

    // The hot set stays the same and warm while its version moves.
    for version in 1..=3 {
        f.publish(0, &hot).await;
        assert_eq!(warms(port, version + 1).await, version + 1);
    }
    assert_eq!(
        lookups().await,
        Some(20),
        "an unchanged, warm hot set costs MySQL nothing"
    );
    assert_eq!(
        counter_value(port, r#"hotkeys_prewarm_keys_total{result="skipped_warm"}"#).await,
        Some(60)
    );

    // One key expires from Redis, another is about to.
    let gone = f.cache_key("5");
    let _: bool = f.redis.pexpire(&gone, 1).await.expect("PEXPIRE");
    let expiring = f.cache_key("6");
    let _: bool = f.redis.expire(&expiring, 30).await.expect("EXPIRE");
    eventually("key 5 to expire", || async {
        let mut redis = f.redis.clone();
        let left: i64 = redis.pttl(&gone).await.expect("PTTL");
        (left == -2).then_some(())
    })
    .await;
    f.publish(0, &hot).await;
    assert_eq!(warms(port, 5).await, 5);
    assert_eq!(
        lookups().await,
        Some(22),
        "only the two keys are read again"
    );
    assert!(
        f.get("5").await.is_some(),
        "the expired key is warmed again"
    );
    let refresh_before = f.t.refresh_before().as_millis() as i64;
    assert!(
        f.ttl_ms("6").await > refresh_before,
        "the key about to expire is refreshed"
    );

    signal(watcher.id().expect("pid"), "TERM");
    let (code, _, stderr) = finished(watcher.wait_with_output().await.expect("wait"));
    assert_eq!(code, 0, "{stderr}");
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_row_query_is_a_configuration_error_before_any_lock() {
    let Some(f) = Fixture::new("prewarm-bad-query", |t| {
        t.mysql.query = "SELECT id, no_such_column FROM products WHERE id IN ({ids})".into();
    })
    .await
    else {
        return;
    };
    f.publish(0, &keys(1..=3)).await;
    let (code, _, stderr) = f.run(&["--once", "--retry-for", "2s"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("mysql.query"), "{stderr}");
    assert!(f.locked_tasks().await.is_empty());
    f.cleanup().await;
}

/// Runs `prewarm --once` (holding each lock a while), cuts `proxy` once it holds a lock,
/// and returns how the process ended.
async fn cut_while_locked(
    f: &Fixture,
    proxy: &TcpProxy,
    extra: &[&str],
) -> (i32, prewarm::Summary, String) {
    let mut args = vec![
        "--once",
        "--json",
        "--debug-hold-lock",
        "2s",
        "--retry-for",
        "2s",
    ];
    args.extend_from_slice(extra);
    let child = f.prewarm(&args).spawn().expect("spawn prewarm");
    eventually("prewarm to hold locks", || async {
        (!f.locked_tasks().await.is_empty()).then_some(())
    })
    .await;
    proxy.cut();
    finished(child.wait_with_output().await.expect("wait"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_killed_mid_prewarm_hands_its_keys_to_its_backup_and_gets_them_all_back() {
    use hotkeys::config::RedisMode;
    use hotkeys::redis::CacheNodes;
    use hotkeys::redis::failover::State;
    use hotkeys::testing::RedisServer;

    let mut a = RedisServer::start();
    let b = RedisServer::start();
    let backup = RedisServer::start();
    let (a_url, b_url, backup_url) = (a.url(), b.url(), backup.url());
    let Some(f) = Fixture::new("prewarm-failover", |t| {
        t.redis.mode = RedisMode::Ring;
        t.redis.nodes = vec![a_url.clone(), b_url.clone()];
        t.redis.backups = [(a_url.clone(), backup_url.clone())].into();
        t.redis.health_every = Duration::from_millis(100);
        t.redis.health_failures = 2;
    })
    .await
    else {
        return;
    };
    for task in 0..3 {
        f.publish(task, &hot_keys_of(task)).await;
    }
    let present: Vec<String> = (0..3)
        .flat_map(|t: u64| keys(t * 100 + 1..=t * 100 + 40))
        .map(|k| f.cache_key(&k))
        .collect();

    // A dies while prewarm holds its locks, before any value is written.
    let child = f
        .prewarm(&[
            "--once",
            "--json",
            "--debug-hold-lock",
            "1s",
            "--concurrency",
            "3",
        ])
        .spawn()
        .expect("spawn prewarm");
    eventually("prewarm to hold locks", || async {
        (!f.locked_tasks().await.is_empty()).then_some(())
    })
    .await;
    a.kill();
    let (code, summary, stderr) = finished(child.wait_with_output().await.expect("wait"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        summary.totals.counts.written,
        present.len() as u64,
        "{summary:#?}"
    );

    let get_all = |url: String, keys: Vec<String>| async move {
        let mut conn = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let mut values = Vec::new();
        for k in keys {
            let v: Option<String> = conn.get(&k).await.unwrap();
            values.push(v);
        }
        values
    };
    // Every value is on B or on A's backup, never on the wrong one of them.
    let probe = CacheNodes::connect(&f.t.redis).await.expect("node set");
    let of_a: Vec<String> = present
        .iter()
        .filter(|k| probe.node_for(k) == 0)
        .cloned()
        .collect();
    let of_b: Vec<String> = present
        .iter()
        .filter(|k| probe.node_for(k) == 1)
        .cloned()
        .collect();
    assert!(!of_a.is_empty() && !of_b.is_empty());
    let on_backup = get_all(backup_url.clone(), of_a.clone()).await;
    assert!(
        on_backup.iter().all(Option::is_some),
        "A's keys on its backup"
    );
    let on_b = get_all(b_url.clone(), of_a.clone()).await;
    assert!(on_b.iter().all(Option::is_none), "A's keys moved to B");
    assert!(
        get_all(b_url.clone(), of_b.clone())
            .await
            .iter()
            .all(Option::is_some)
    );

    // A returns (empty); a running node set copies its keys back.
    a.restart();
    eventually("fail-back", || async {
        (probe.failover_state(0) == Some(State::Up)).then_some(())
    })
    .await;
    let back = get_all(a_url.clone(), of_a.clone()).await;
    assert_eq!(back, on_backup, "every value of A is back on A, unchanged");
    let mut to_backup = redis::Client::open(backup_url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let left: usize = redis::cmd("DBSIZE")
        .query_async(&mut to_backup)
        .await
        .unwrap();
    assert_eq!(left, 0, "the backup is clean");
    f.cleanup().await;
}

/// A connection of the test's own to the test catalogue.
async fn catalogue_pool(f: &Fixture) -> hotkeys::mysql::Pool {
    hotkeys::mysql::connect(&f.t.mysql, Duration::from_secs(10))
        .await
        .expect("MySQL")
}

/// One of MariaDB's global status counters.
async fn mysql_status(pool: &hotkeys::mysql::Pool, name: &str) -> u64 {
    // SHOW cannot be prepared with a placeholder; `name` is one of the test's constants.
    let (_, value): (String, String) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SHOW GLOBAL STATUS LIKE '{name}'"
    )))
    .fetch_one(pool)
    .await
    .expect("SHOW GLOBAL STATUS");
    value.parse().expect("a counter")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_never_overwrites_a_value_the_application_wrote_during_its_mysql_read() {
    let Some(mut f) = Fixture::new("prewarm-cas", |t| {
        t.sync.replicate = vec![t.redis.key.replace("{key}", "")];
    })
    .await
    else {
        return;
    };
    f.publish(0, &keys(1..=3)).await;
    // Key 2 is about to expire (30 s left, refresh_before is 10% of an hour): due a refresh.
    let app_key = f.cache_key("2");
    let _: () = f
        .redis
        .set_ex(&app_key, "application v1", 30)
        .await
        .expect("SET");

    // The database is held still, so prewarm's SELECT waits after its PTTL check.
    let pool = catalogue_pool(&f).await;
    let mut locker = pool.acquire().await.expect("a connection");
    sqlx::query("LOCK TABLES products WRITE")
        .execute(&mut *locker)
        .await
        .expect("LOCK TABLES");
    let child = f.prewarm(&["--once", "--json"]).spawn().expect("spawn");
    eventually("prewarm's SELECT to wait for the table lock", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE STATE LIKE '%table metadata lock%' AND INFO LIKE '%products%'",
        )
        .fetch_one(&pool)
        .await
        .expect("PROCESSLIST");
        (waiting > 0).then_some(())
    })
    .await;
    // The application writes a newer value while prewarm reads the older row.
    let _: () = f
        .redis
        .set_ex(&app_key, "application v2", 3600)
        .await
        .expect("SET");
    sqlx::query("UNLOCK TABLES")
        .execute(&mut *locker)
        .await
        .expect("UNLOCK TABLES");
    let (code, summary, stderr) = finished(child.wait_with_output().await.expect("wait"));
    assert_eq!(code, 0, "{stderr}");

    assert_eq!(
        f.get("2").await.as_deref(),
        Some("application v2"),
        "the refresh overwrote the application's newer value"
    );
    let r = record(&summary, 0);
    assert_eq!(
        (r.counts.rows, r.counts.written, r.counts.already_present),
        (3, 2, 1)
    );
    let queued: Vec<String> = f
        .redis
        .lrange(&f.t.sync.queue, 0, -1)
        .await
        .expect("LRANGE");
    let replicated: BTreeSet<String> = queued
        .iter()
        .map(|line| {
            let op: serde_json::Value = serde_json::from_str(line).expect("queued op");
            op["key"].as_str().expect("key").to_string()
        })
        .collect();
    let expected: BTreeSet<String> = [f.cache_key("1"), f.cache_key("3")].into();
    assert_eq!(replicated, expected, "only what was written is replicated");
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_looks_up_a_key_without_a_row_once_per_missing_ttl() {
    // MariaDB's counters are global: no other test of this binary may query meanwhile.
    let Some(f) = Fixture::alone("prewarm-misses", |_| {}).await else {
        return;
    };
    let mut hot = keys(1..=5);
    hot.extend(keys((1..=3).map(|j| ABSENT + j)));
    f.publish(0, &hot).await;
    let (watcher, port) = f.watch_with_metrics();
    assert_eq!(warms(port, 1).await, 1);
    let pool = catalogue_pool(&f).await;
    let (reads, selects) = (
        mysql_status(&pool, "Handler_read_key").await,
        mysql_status(&pool, "Com_select").await,
    );

    // The hot set stays the same while its version moves: its rows are warm, and the
    // three keys without a row were looked up by the first pass.
    for version in 1..=3 {
        f.publish(0, &hot).await;
        assert_eq!(warms(port, version + 1).await, version + 1);
    }
    assert_eq!(
        (
            mysql_status(&pool, "Handler_read_key").await - reads,
            mysql_status(&pool, "Com_select").await - selects
        ),
        (0, 0),
        "keys without a row are not looked up again within prewarm.missing_ttl"
    );
    assert_eq!(
        counter_value(
            port,
            r#"hotkeys_prewarm_keys_total{result="missing_cached"}"#
        )
        .await,
        Some(9)
    );
    signal(watcher.id().expect("pid"), "TERM");
    let (code, summary, stderr) = finished(watcher.wait_with_output().await.expect("wait"));
    assert_eq!(code, 0, "{stderr}");
    let last = record(&summary, 0);
    assert_eq!((last.counts.missing, last.counts.missing_cached), (0, 3));
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mark_written_after_a_reset_for_a_list_from_before_it_never_counts_as_warmed() {
    let Some(f) = Fixture::new("prewarm-reset", |_| {}).await else {
        return;
    };
    for _ in 0..6 {
        f.publish(0, &keys(1..=5)).await;
    }
    // A prewarm reads version 5, then holds the lock while the topology is reset under it.
    let late = f
        .prewarm(&["--once", "--json", "--debug-hold-lock", "3s"])
        .spawn()
        .expect("spawn prewarm");
    eventually("the late prewarm to hold the lock", || async {
        f.lock(0).await.map(|_| ())
    })
    .await;
    // What `hotctl reset --yes --force` does; the workers publish again at once.
    f.zk.delete_all().await.expect("reset");
    let mut versions = Vec::new();
    for _ in 0..3 {
        versions.push(f.publish(0, &keys(11..=15)).await);
    }
    let (code, _, stderr) = finished(late.wait_with_output().await.expect("wait"));
    assert_eq!(code, 0, "{stderr}");
    let stale = f.warmed(0).await.expect("the late prewarm's mark");
    assert_eq!(
        stale.hot_version, 5,
        "the mark is of the list from before the reset"
    );

    let (code, summary, stderr) = f.run(&["--once"]).await;
    assert_eq!(code, 0, "{stderr}");
    let r = record(&summary, 0);
    assert_eq!(
        r.outcome,
        TaskOutcome::Warmed,
        "a mark from before the reset covered the new list (versions {versions:?}): {r:#?}"
    );
    assert_eq!(r.counts.written, 5);
    f.cleanup().await;
}
