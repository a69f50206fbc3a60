//! Detection latency of a running hot-counter, as `scripts/bench-latency.sh` measures it.
//!
//! ```text
//! cargo run --release -p hotkeys --example latency_probe -- --topology topology/default.toml
//! ```
//!
//! Sends a steady background stream of plain-key events over products `1..=background_keys`,
//! then flash crowds of new products (`background_keys + 1`, `+ 2`, …; every event of a crowd
//! at once), and reports for each crowd the time from its first event sent to
//!
//! - its key first in a hot list in ZooKeeper (the znode's modification time),
//! - the whole crowd counted in a hot list in ZooKeeper (the modification time of the first
//!   version whose guaranteed count, `count - error`, covers the crowd),
//! - a subscriber (`hotkeys::zk::subscribe`) seeing the whole crowd in the hot set, and
//! - with `--redis`, its row in Redis (polled every 5 ms; a `prewarm --watch` must be running
//!   and the crowds' rows must exist in MySQL; the probe deletes their cache keys first),
//!
//! then p50, p99 and max of each; hot-counter's writes to ZooKeeper (hot lists and
//! checkpoints; prewarm's locks and marks are left out) in bytes and writes per second (the
//! bytes also split into hot lists and checkpoints), the shortest time between two writes
//! of one task's hot list, and the mean checkpoint's size spread over `checkpoint_every`.
//! The last lines are one summary line per figure. `--cleanup` deletes the topology's
//! ZooKeeper subtree.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hotkeys::Topology;
use hotkeys::cli::TopologyArg;
use hotkeys::config::PRIMARY_COUNTER;
use hotkeys::hotlist::{HotItem, now_ms};
use hotkeys::redis::{CacheNodes, cache_key};
use hotkeys::zk::{Layout, Zk};
use rand::Rng;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;
use zookeeper_client::EventType;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    topology: TopologyArg,
    /// Flash crowds sent.
    #[arg(long, default_value_t = 5)]
    crowds: usize,
    /// Events per crowd, all on one new product.
    #[arg(long, default_value_t = 3000)]
    crowd_size: u64,
    /// Background events per second, spread uniformly over `--background-keys` products.
    #[arg(long, default_value_t = 3000)]
    rate: u64,
    #[arg(long, default_value_t = 100_000)]
    background_keys: u64,
    /// Time between two crowds; each is sent at a random point of its slot, so crowds meet
    /// the worker's publish tick at different phases.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    spacing: Duration,
    /// How long a crowd may take to be seen before the run fails.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    patience: Duration,
    /// Background traffic before the first crowd: a window's worth reaches the steady
    /// state, where the hot lists' boundary no longer moves with every bucket.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Also wait for each crowd's row in Redis (warmed by a running `prewarm --watch`).
    #[arg(long)]
    redis: bool,
    /// Delete the topology's ZooKeeper subtree and exit.
    #[arg(long)]
    cleanup: bool,
}

/// First-sent times of the crowds, and when each was seen, by crowd key.
#[derive(Default)]
struct Crowds {
    sent_ms: HashMap<String, i64>,
    zk_enter_ms: HashMap<String, i64>,
    zk_ms: HashMap<String, i64>,
    subscriber_ms: HashMap<String, i64>,
    redis_ms: HashMap<String, i64>,
}

impl Crowds {
    /// Every figure that is measured has all `n` crowds.
    fn all_seen(&self, n: usize, redis: bool) -> bool {
        self.zk_enter_ms.len() >= n
            && self.zk_ms.len() >= n
            && self.subscriber_ms.len() >= n
            && (!redis || self.redis_ms.len() >= n)
    }
}

/// What hot-counter wrote to ZooKeeper while the crowds were measured.
#[derive(Default)]
struct Writes {
    bytes: u64,
    /// Of `bytes`, the checkpoints' (the rest are hot lists).
    checkpoint_bytes: u64,
    checkpoints: u64,
    count: u64,
    /// Version and modification time of each task's last hot list, and the shortest gap
    /// between two versions.
    last_hot: HashMap<u32, (i32, i64)>,
    min_gap_ms: Option<i64>,
}

type Shared = Arc<Mutex<Crowds>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    hotkeys::cli::telemetry::init_logs();
    let args = Args::parse();
    let Ok(topology) = args.topology.load() else {
        std::process::exit(hotkeys::cli::exit::USAGE);
    };
    let zk = Zk::connect(&topology).await?;
    if args.cleanup {
        return Ok(zk.delete_all().await?);
    }
    hotkeys::kafka::ensure_topic(&topology.kafka).await?;
    let producer: FutureProducer = hotkeys::kafka::producer_config(&topology.kafka).create()?;
    let stop = CancellationToken::new();
    tokio::spawn(background(
        producer.clone(),
        topology.kafka.topic.clone(),
        args.rate,
        args.background_keys,
        stop.clone(),
    ));
    wait_for_worker(&zk, topology.kafka.partitions, args.patience).await?;
    tokio::time::sleep(args.warmup).await;

    let crowds = Shared::default();
    let writes = Arc::new(Mutex::new(Writes::default()));
    let mut watchers = vec![
        tokio::spawn(watch_zk(
            zk.clone(),
            crowds.clone(),
            writes.clone(),
            args.crowd_size,
        )),
        tokio::spawn(watch_subscriber(
            topology.clone(),
            crowds.clone(),
            args.crowd_size,
        )),
    ];
    if args.redis {
        let cache = CacheNodes::connect(&topology.redis).await?;
        for i in 0..args.crowds {
            cache
                .delete(&cache_key(&topology.redis, &crowd_key(&args, i)))
                .await?;
        }
        watchers.push(tokio::spawn(watch_redis(
            cache,
            topology.clone(),
            crowds.clone(),
        )));
    }
    // The watchers are in place before the first crowd.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let measuring = Instant::now();
    send_crowds(&producer, &topology, &args, &crowds).await?;
    let seen = wait_for_all(&crowds, args.crowds, args.redis, args.patience).await;
    let elapsed = measuring.elapsed().as_secs_f64();
    stop.cancel();
    watchers.iter().for_each(|w| w.abort());
    producer.flush(Duration::from_secs(10))?;

    let writes = std::mem::take(&mut *writes.lock().unwrap_or_else(|p| p.into_inner()));
    report(&crowds, &writes, elapsed, topology.kafka.partitions);
    report_checkpoints(&writes, topology.count.checkpoint_every);
    if !seen {
        bail!("not every crowd was seen within {:?}", args.patience);
    }
    Ok(())
}

/// Sends `rate` events per second over `keys` products until `stop`.
async fn background(
    producer: FutureProducer,
    topic: String,
    rate: u64,
    keys: u64,
    stop: CancellationToken,
) {
    const TICK: Duration = Duration::from_millis(10);
    let per_tick = (rate / 100).max(1);
    let mut tick = tokio::time::interval(TICK);
    while !stop.is_cancelled() {
        tick.tick().await;
        for _ in 0..per_tick {
            let key = rand::rng().random_range(1..=keys).to_string();
            send(&producer, &topic, &key);
        }
    }
}

/// Queues one plain-key event (empty payload); delivery is the producer's business.
fn send(producer: &FutureProducer, topic: &str, key: &str) {
    let record = FutureRecord::to(topic).key(key).payload("");
    if let Err((e, _)) = producer.send_result(record) {
        tracing::warn!(error = %e, "event not queued");
    }
}

/// Waits until every task has published a hot list: the worker owns every partition.
async fn wait_for_worker(zk: &Zk, partitions: u32, patience: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + patience;
    loop {
        let lists = zk.hot_lists().await?;
        if lists.len() >= partitions as usize {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {partitions} tasks published a hot list within {patience:?}; is hot-counter running?",
                lists.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends the crowds, one per `spacing` slot, each at a random point of its slot.
async fn send_crowds(
    producer: &FutureProducer,
    topology: &Topology,
    args: &Args,
    crowds: &Shared,
) -> anyhow::Result<()> {
    for i in 0..args.crowds {
        let offset = args.spacing.mul_f64(rand::rng().random_range(0.0..1.0));
        tokio::time::sleep(offset).await;
        let key = crowd_key(args, i);
        let sent = now_ms();
        for _ in 0..args.crowd_size {
            send(producer, &topology.kafka.topic, &key);
        }
        lock(crowds).sent_ms.insert(key, sent);
        tokio::time::sleep(args.spacing - offset).await;
    }
    producer
        .flush(Duration::from_secs(10))
        .context("delivering the crowds")
}

/// The product of crowd `i`: the first ones after the background's.
fn crowd_key(args: &Args, i: usize) -> String {
    (args.background_keys + 1 + i as u64).to_string()
}

/// Whether `items` count all of `crowd` events of `key` for certain.
fn complete(items: &[HotItem], key: &str, crowd: u64) -> bool {
    items
        .iter()
        .any(|i| i.key == key && i.count - i.error.unwrap_or(0) >= crowd)
}

/// Records, from a persistent watch on the tasks, when each crowd first appears in a hot
/// list and when complete (the znode's modification time), and adds up hot-counter's
/// writes.
async fn watch_zk(
    zk: Zk,
    crowds: Shared,
    writes: Arc<Mutex<Writes>>,
    crowd: u64,
) -> anyhow::Result<()> {
    let mut watcher = zk.watch_tasks().await?;
    loop {
        let event = watcher.changed().await;
        if !matches!(
            event.event_type,
            EventType::NodeCreated | EventType::NodeDataChanged
        ) {
            continue;
        }
        let Some((task, node)) = zk.layout().task_node(&event.path) else {
            continue;
        };
        if node != Layout::HOT && node != Layout::CHECKPOINT {
            continue;
        }
        if let Ok(Some(stat)) = zk.client().check_stat(&event.path).await {
            let mut w = writes.lock().unwrap_or_else(|p| p.into_inner());
            w.bytes += stat.data_length as u64;
            if node == Layout::CHECKPOINT {
                w.checkpoint_bytes += stat.data_length as u64;
                w.checkpoints += 1;
            }
            w.count += 1;
        }
        if node != Layout::HOT {
            continue;
        }
        let Ok(Some(hot)) = zk.read_hot(task).await else {
            continue;
        };
        hot_written(&writes, task, hot.version, hot.modified_ms);
        let mut c = lock(&crowds);
        let items = &hot.value.items;
        let entered: Vec<(String, i64)> = c
            .sent_ms
            .iter()
            .filter(|(k, _)| !c.zk_enter_ms.contains_key(*k) && items.iter().any(|i| i.key == **k))
            .map(|(k, sent)| (k.clone(), hot.modified_ms - sent))
            .collect();
        c.zk_enter_ms.extend(entered);
        let done: Vec<(String, i64)> = c
            .sent_ms
            .iter()
            .filter(|(k, _)| !c.zk_ms.contains_key(*k) && complete(items, k, crowd))
            .map(|(k, sent)| (k.clone(), hot.modified_ms - sent))
            .collect();
        c.zk_ms.extend(done);
    }
}

/// Keeps the shortest gap between two hot-list versions of one task (two watch events may
/// read the same version).
fn hot_written(writes: &Mutex<Writes>, task: u32, version: i32, modified_ms: i64) {
    let mut w = writes.lock().unwrap_or_else(|p| p.into_inner());
    match w.last_hot.insert(task, (version, modified_ms)) {
        Some((last, last_ms)) if last < version => {
            let gap = modified_ms - last_ms;
            w.min_gap_ms = Some(w.min_gap_ms.map_or(gap, |m| m.min(gap)));
        }
        _ => {}
    }
}

/// Records when each crowd's row is first in Redis, looking every 5 ms.
async fn watch_redis(cache: CacheNodes, topology: Topology, crowds: Shared) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    loop {
        tick.tick().await;
        let pending: Vec<(String, i64)> = {
            let c = lock(&crowds);
            c.sent_ms
                .iter()
                .filter(|(k, _)| !c.redis_ms.contains_key(*k))
                .map(|(k, sent)| (k.clone(), *sent))
                .collect()
        };
        for (key, sent) in pending {
            if cache
                .get(&cache_key(&topology.redis, &key))
                .await?
                .is_some()
            {
                lock(&crowds).redis_ms.insert(key, now_ms() - sent);
            }
        }
    }
}

/// Records when a subscriber first sees each crowd complete in the hot set.
async fn watch_subscriber(topology: Topology, crowds: Shared, crowd: u64) -> anyhow::Result<()> {
    let mut sub = hotkeys::zk::subscribe::subscribe(&topology, PRIMARY_COUNTER).await?;
    loop {
        let set = sub.next().await;
        let now = now_ms();
        let mut c = lock(&crowds);
        let done: Vec<(String, i64)> = c
            .sent_ms
            .iter()
            .filter(|(k, _)| !c.subscriber_ms.contains_key(*k) && complete(&set.items, k, crowd))
            .map(|(k, sent)| (k.clone(), now - sent))
            .collect();
        c.subscriber_ms.extend(done);
    }
}

/// Waits until every watcher saw `n` crowds; false when `patience` ran out first.
async fn wait_for_all(crowds: &Shared, n: usize, redis: bool, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if lock(crowds).all_seen(n, redis) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn report(crowds: &Shared, writes: &Writes, seconds: f64, partitions: u32) {
    let c = lock(crowds);
    let mut order: Vec<(&String, &i64)> = c.sent_ms.iter().collect();
    order.sort_by_key(|(_, sent)| **sent);
    for (i, (key, _)) in order.iter().enumerate() {
        let show = |m: &HashMap<String, i64>| m.get(*key).map_or("never".into(), i64::to_string);
        println!(
            "crowd {i}: zk_enter_ms={} zk_ms={} subscriber_ms={} redis_ms={}",
            show(&c.zk_enter_ms),
            show(&c.zk_ms),
            show(&c.subscriber_ms),
            show(&c.redis_ms)
        );
    }
    let tasks = f64::from(partitions.max(1));
    let bytes_per_s = writes.bytes as f64 / seconds;
    let writes_per_s = writes.count as f64 / seconds;
    println!("latency_zk_ms {}", percentiles(c.zk_ms.values()));
    println!(
        "latency_subscriber_ms {}",
        percentiles(c.subscriber_ms.values())
    );
    println!(
        "zk_write_bytes_per_s total={bytes_per_s:.0} per_task={:.0}",
        bytes_per_s / tasks
    );
    let checkpoint_per_s = writes.checkpoint_bytes as f64 / seconds;
    println!(
        "zk_write_bytes_per_s_by_node per_task_hot={:.0} per_task_checkpoint={:.0}",
        (bytes_per_s - checkpoint_per_s) / tasks,
        checkpoint_per_s / tasks
    );
    println!(
        "latency_zk_enter_ms {}",
        percentiles(c.zk_enter_ms.values())
    );
    println!("latency_redis_ms {}", percentiles(c.redis_ms.values()));
    println!(
        "zk_writes_per_s total={writes_per_s:.1} per_task={:.1} min_gap_ms={}",
        writes_per_s / tasks,
        writes.min_gap_ms.map_or("-".into(), |g| g.to_string())
    );
}

/// The steady-state checkpoint bytes of a task: the mean size of the checkpoints written
/// while measuring, one per `every`. The measured span holds only one or two checkpoints
/// per task, so `per_task_checkpoint` above swings by up to a checkpoint; this does not.
fn report_checkpoints(writes: &Writes, every: Duration) {
    let mean = writes.checkpoint_bytes as f64 / writes.checkpoints.max(1) as f64;
    println!(
        "zk_checkpoint_bytes mean={mean:.0} every_s={} per_task_per_s={:.0}",
        every.as_secs_f64(),
        mean / every.as_secs_f64()
    );
}

/// `p50=… p99=… max=…` by nearest rank.
fn percentiles<'a>(values: impl Iterator<Item = &'a i64>) -> String {
    let mut v: Vec<i64> = values.copied().collect();
    if v.is_empty() {
        return "p50=- p99=- max=-".into();
    }
    v.sort_unstable();
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    format!(
        "p50={} p99={} max={}",
        rank(0.50),
        rank(0.99),
        v[v.len() - 1]
    )
}

fn lock(crowds: &Shared) -> std::sync::MutexGuard<'_, Crowds> {
    crowds.lock().unwrap_or_else(|p| p.into_inner())
}
