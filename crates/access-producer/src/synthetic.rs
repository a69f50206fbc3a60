//! The synthetic workload: Zipf-distributed product views as OpenResty JSON events.
//!
//! The stream is a pure function of the seed and the options: event `i` is the `i`-th draw
//! of a ChaCha8 generator (portable, unlike `StdRng`, whose algorithm may change between
//! `rand` releases), and every notion of time (`--burst` starts, `--drift` periods) is
//! turned into an event index through `--rate` before the first event. Pacing only decides
//! when an event is sent, never what it is, so the same seed gives the same bytes.
//!
//! Popularity rank `r` (0 = hottest) maps to a product id through a fixed permutation of
//! `1..=keys`, so hot products are scattered over the id space as in a real catalogue, and
//! `--drift` shifts ranks over time so that yesterday's warm products become today's hot
//! ones. A product belongs to one shop for ever: its shop id is a hash of the product id.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use hotkeys::cli::shutdown::CancellationToken;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Zipf};

use crate::error::{Error, SpecError};
use crate::format::BadKind;
use crate::json::{push_escaped, push_u64};
use crate::publish::{Sent, Sink};
use crate::report::Stats;

/// A point in the stream: an event index, or a time from the start at the `--rate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum At {
    Event(u64),
    Time(Duration),
}

impl At {
    fn to_index(self, rate: Option<f64>, what: &str) -> Result<u64, SpecError> {
        match (self, rate) {
            (At::Event(i), _) => Ok(i),
            (At::Time(d), Some(rate)) => Ok((d.as_secs_f64() * rate).round() as u64),
            (At::Time(d), None) => Err(SpecError(format!(
                "{what} at {} needs --rate to turn time into events (or give an event number)",
                humantime::format_duration(d)
            ))),
        }
    }
}

impl FromStr for At {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<At, SpecError> {
        if let Ok(i) = s.parse::<u64>() {
            return Ok(At::Event(i));
        }
        humantime::parse_duration(s).map(At::Time).map_err(|_| {
            SpecError(format!(
                "`{s}`: expected an event number (`50000`) or a duration (`30s`, `2m`)"
            ))
        })
    }
}

/// A flash crowd: from `start` (until `end`), `key` takes `share` of all events.
#[derive(Debug, Clone, PartialEq)]
pub struct Burst {
    pub key: String,
    pub start: At,
    pub end: Option<At>,
    pub share: f64,
}

impl FromStr for Burst {
    type Err = SpecError;

    /// `KEY@START[..END]:SHARE`, e.g. `4242@30s:0.2` or `7@100000..200000:0.5`.
    fn from_str(s: &str) -> Result<Burst, SpecError> {
        let bad = |why: &str| SpecError(format!("--burst `{s}`: {why} (KEY@START[..END]:SHARE)"));
        let (key, rest) = s.split_once('@').ok_or_else(|| bad("missing `@`"))?;
        let (when, share) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad("missing `:SHARE`"))?;
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(bad("the key must be letters, digits, `-`, `_` or `.`"));
        }
        let share: f64 = share.parse().map_err(|_| bad("SHARE is not a number"))?;
        if !(share > 0.0 && share <= 1.0) {
            return Err(bad("SHARE must be in (0, 1]"));
        }
        let (start, end) = match when.split_once("..") {
            Some((a, b)) => (a.parse()?, Some(b.parse()?)),
            None => (when.parse()?, None),
        };
        Ok(Burst {
            key: key.to_string(),
            start,
            end,
            share,
        })
    }
}

/// Every `every`, ranks shift by `step`: the hot set moves to products that were warm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drift {
    pub every: At,
    pub step: u64,
}

/// Ranks a drift moves by when `--drift` gives no step: the default hot-list length.
pub const DEFAULT_DRIFT_STEP: u64 = 100;

impl FromStr for Drift {
    type Err = SpecError;

    /// `PERIOD[:STEP]`, e.g. `1m` or `500000:1000`.
    fn from_str(s: &str) -> Result<Drift, SpecError> {
        let (every, step) = match s.split_once(':') {
            Some((e, st)) => (
                e,
                st.parse()
                    .map_err(|_| SpecError(format!("--drift `{s}`: STEP is not a number")))?,
            ),
            None => (s, DEFAULT_DRIFT_STEP),
        };
        let every: At = every.parse()?;
        if every == At::Event(0) || every == At::Time(Duration::ZERO) || step == 0 {
            return Err(SpecError(format!(
                "--drift `{s}`: PERIOD and STEP must be positive"
            )));
        }
        Ok(Drift { every, step })
    }
}

/// Events per second, written `R` or `R/s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(pub f64);

impl FromStr for Rate {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Rate, SpecError> {
        let n = s.strip_suffix("/s").unwrap_or(s);
        match n.trim().parse::<f64>() {
            Ok(r) if r > 0.0 && r.is_finite() => Ok(Rate(r)),
            _ => Err(SpecError(format!(
                "--rate `{s}`: expected a positive number of events per second"
            ))),
        }
    }
}

/// Everything that determines the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub seed: u64,
    /// Distinct products; ids are `1..=keys`.
    pub keys: u64,
    /// Zipf exponent; 0 is uniform, around 1 is typical of web traffic.
    pub zipf: f64,
    /// Distinct shops products belong to.
    pub shops: u64,
    /// Distinct callers (client addresses, `x-real-ip`), Zipf-distributed like the
    /// products; 0 leaves the header out.
    pub callers: u64,
    pub bursts: Vec<Burst>,
    pub drift: Option<Drift>,
    /// Pacing, used here only to turn times into event indexes.
    pub rate: Option<f64>,
    /// Name of the query argument carrying the product id (the topology's `query_param`).
    pub param: String,
}

/// A burst resolved to event indexes.
#[derive(Debug, Clone)]
struct ActiveBurst {
    key: Vec<u8>,
    shop: u64,
    start: u64,
    end: u64,
    share: f64,
}

/// Produces the events of a [`Workload`], one at a time, into a reused buffer.
pub struct Generator {
    rng: ChaCha8Rng,
    zipf: Zipf<f64>,
    /// Popularity of callers, when events carry one.
    callers: Option<Zipf<f64>>,
    caller: Vec<u8>,
    keys: u64,
    shops: u64,
    /// Multiplier of the rank permutation, coprime with `keys`.
    mult: u64,
    offset: u64,
    bursts: Vec<ActiveBurst>,
    /// Drift period in events, and ranks per period.
    drift: Option<(u64, u64)>,
    param: Vec<u8>,
    index: u64,
    key: Vec<u8>,
    event: Vec<u8>,
}

/// The popularity of the keys and, with `--callers`, of the callers, after checking the
/// sizes they are drawn from.
fn distributions(w: &Workload) -> Result<(Zipf<f64>, Option<Zipf<f64>>), SpecError> {
    if w.keys == 0 || w.keys > u64::from(u32::MAX) {
        return Err(SpecError(format!(
            "--keys {}: expected 1 to {}",
            w.keys,
            u32::MAX
        )));
    }
    if w.shops == 0 {
        return Err(SpecError("--shops: expected at least 1".into()));
    }
    let zipf = Zipf::new(w.keys as f64, w.zipf)
        .map_err(|e| SpecError(format!("--zipf {}: {e}", w.zipf)))?;
    if w.callers > 1 << 24 {
        return Err(SpecError(format!(
            "--callers {}: expected at most {} (one 10.0.0.0/8 address each)",
            w.callers,
            1u64 << 24
        )));
    }
    let callers = match w.callers {
        0 => None,
        n => Some(
            Zipf::new(n as f64, w.zipf)
                .map_err(|e| SpecError(format!("--zipf {}: {e}", w.zipf)))?,
        ),
    };
    Ok((zipf, callers))
}

/// The `--burst`s as event index ranges; overlapping bursts may not take more than all
/// of the traffic.
fn active_bursts(w: &Workload) -> Result<Vec<ActiveBurst>, SpecError> {
    let mut bursts = Vec::with_capacity(w.bursts.len());
    for b in &w.bursts {
        let start = b.start.to_index(w.rate, "a burst")?;
        let end = match b.end {
            Some(e) => e.to_index(w.rate, "a burst end")?,
            None => u64::MAX,
        };
        if end <= start {
            return Err(SpecError(format!(
                "--burst {}: ends before it starts",
                b.key
            )));
        }
        bursts.push(ActiveBurst {
            key: b.key.as_bytes().to_vec(),
            shop: b.key.parse().map_or(1, |id| shop_of(id, w.shops)),
            start,
            end,
            share: b.share,
        });
    }
    for b in &bursts {
        let total: f64 = bursts
            .iter()
            .filter(|o| o.start <= b.start && b.start < o.end)
            .map(|o| o.share)
            .sum();
        if total > 1.0 + 1e-9 {
            return Err(SpecError(format!(
                "--burst: overlapping bursts take {total:.2} of the traffic, more than all of it"
            )));
        }
    }
    Ok(bursts)
}

/// Host header of every event: one site.
const HOST: &[u8] = b"shop.example";

/// A mix of app clients, scripts and browsers. App clients dominate, as on a mobile-heavy
/// site, which keeps the mean event near the ~300 bytes of the reporters' traffic.
const USER_AGENTS: &[&[u8]] = &[
    b"okhttp/4.12.0",
    b"okhttp/4.12.0",
    b"okhttp/3.14.9",
    b"ShopApp/8.3.1 iOS/17.4",
    b"ShopApp/8.3.1 iOS/17.4",
    b"ShopApp/8.2.0 Android/14",
    b"ShopApp/8.2.0 Android/14",
    b"curl/7.29.0",
    b"Dalvik/2.1.0 (Linux; U; Android 13)",
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
];

impl Generator {
    pub fn new(w: &Workload) -> Result<Generator, SpecError> {
        let (zipf, callers) = distributions(w)?;
        let bursts = active_bursts(w)?;
        let drift = match w.drift {
            Some(d) => Some((d.every.to_index(w.rate, "a drift period")?.max(1), d.step)),
            None => None,
        };
        let mult = coprime_near(w.keys, (w.keys as f64 * 0.618_033_988_75) as u64);
        Ok(Generator {
            rng: ChaCha8Rng::seed_from_u64(w.seed),
            zipf,
            callers,
            caller: Vec::with_capacity(16),
            keys: w.keys,
            shops: w.shops,
            mult,
            offset: splitmix64(w.seed) % w.keys,
            bursts,
            drift,
            param: w.param.as_bytes().to_vec(),
            index: 0,
            key: Vec::with_capacity(32),
            event: Vec::with_capacity(512),
        })
    }

    /// The product id of popularity rank `rank` (0 = hottest) at event `index`.
    fn product(&self, rank: u64, index: u64) -> u64 {
        let shifted = match self.drift {
            Some((every, step)) => {
                let epoch = index / every;
                (rank + (epoch % self.keys) * (step % self.keys)) % self.keys
            }
            None => rank,
        };
        1 + (self.mult * shifted + self.offset) % self.keys
    }

    /// The next event as `(key, payload)`.
    pub fn next_event(&mut self) -> (&[u8], &[u8]) {
        let i = self.index;
        self.index += 1;
        // Drawn for every event, so a burst changes nothing before it starts.
        let u: f64 = self.rng.random();
        let mut acc = 0.0;
        let burst = self.bursts.iter().position(|b| {
            if b.start <= i && i < b.end {
                acc += b.share;
                u < acc
            } else {
                false
            }
        });
        self.key.clear();
        let shop = match burst {
            Some(b) => {
                self.key.extend_from_slice(&self.bursts[b].key);
                self.bursts[b].shop
            }
            None => {
                let rank = (self.zipf.sample(&mut self.rng) as u64).clamp(1, self.keys) - 1;
                let id = self.product(rank, i);
                push_u64(&mut self.key, id);
                shop_of(id, self.shops)
            }
        };
        let ua = USER_AGENTS[self.rng.random_range(0..USER_AGENTS.len())];
        self.caller.clear();
        // Drawn only when asked for, so streams without callers stay byte for byte the same.
        if let Some(callers) = &self.callers {
            let rank = callers.sample(&mut self.rng) as u64;
            push_caller(&mut self.caller, rank);
        }
        self.write_event(shop, ua);
        (&self.key, &self.event)
    }

    fn write_event(&mut self, shop: u64, ua: &[u8]) {
        let e = &mut self.event;
        e.clear();
        e.extend_from_slice(br#"{"request_module":"product_detail_info","headers":{"host":""#);
        e.extend_from_slice(HOST);
        e.extend_from_slice(br#"","user-agent":""#);
        e.extend_from_slice(ua);
        if !self.caller.is_empty() {
            e.extend_from_slice(br#"","x-real-ip":""#);
            e.extend_from_slice(&self.caller);
        }
        e.extend_from_slice(br#""},"uri_args":{""#);
        push_escaped(e, &self.param);
        e.extend_from_slice(br#"":""#);
        e.extend_from_slice(&self.key);
        e.extend_from_slice(br#"","shopId":""#);
        push_u64(e, shop);
        e.extend_from_slice(br#""},"http_version":1.1,"method":"GET","raw_reader":"GET /product?"#);
        push_escaped(e, &self.param);
        e.push(b'=');
        e.extend_from_slice(&self.key);
        e.extend_from_slice(b"&shopId=");
        push_u64(e, shop);
        e.extend_from_slice(br" HTTP/1.1\r\nHost: ");
        e.extend_from_slice(HOST);
        e.extend_from_slice(br"\r\nUser-Agent: ");
        e.extend_from_slice(ua);
        if !self.caller.is_empty() {
            e.extend_from_slice(br"\r\nX-Real-IP: ");
            e.extend_from_slice(&self.caller);
        }
        e.extend_from_slice(br#"\r\n\r\n","body_data":null}"#);
    }
}

/// The address of popularity rank `rank` (1 = busiest), spread over 10.0.0.0/8 by a
/// multiplicative permutation so the busiest callers do not sit next to each other.
fn push_caller(out: &mut Vec<u8>, rank: u64) {
    let n = (rank.wrapping_mul(0x9E_37_79) ^ 0x5A_5A_5A) & 0xFF_FF_FF;
    for (i, octet) in [10, n >> 16, (n >> 8) & 0xFF, n & 0xFF]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            out.push(b'.');
        }
        push_u64(out, octet);
    }
}

impl fmt::Debug for Generator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generator")
            .field("keys", &self.keys)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// Sends `events` events of `generator` (endless when `None`) through `sink`, paced to
/// `rate` events per second when given, until done or shut down.
pub fn generate(
    generator: &mut Generator,
    events: Option<u64>,
    rate: Option<f64>,
    sink: &mut dyn Sink,
    stats: &Stats,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    let start = Instant::now();
    let mut i: u64 = 0;
    while events.is_none_or(|n| i < n) {
        if i.is_multiple_of(1024) && shutdown.is_cancelled() {
            break;
        }
        if let Some(rate) = rate
            && !pace(start, i, rate, sink, shutdown)
        {
            break;
        }
        let (key, payload) = generator.next_event();
        stats.read.fetch_add(1, Relaxed);
        match sink.send(key, payload)? {
            Sent::Queued => {}
            Sent::Cancelled => break,
            Sent::Rejected(code) => {
                stats.bad_line(
                    || format!("event {i}"),
                    BadKind::Rejected.describe(),
                    payload,
                );
                tracing::debug!(?code, "message refused");
            }
        }
        i += 1;
    }
    Ok(())
}

/// Waits until event `i` is due at `rate`; false when shutdown came first. Sleeps only when
/// at least a millisecond ahead, so high rates go out in small bursts rather than paying a
/// system call per event.
fn pace(
    start: Instant,
    i: u64,
    rate: f64,
    sink: &mut dyn Sink,
    shutdown: &CancellationToken,
) -> bool {
    let due = Duration::from_secs_f64(i as f64 / rate);
    loop {
        let now = start.elapsed();
        if now + Duration::from_millis(1) > due {
            return true;
        }
        if shutdown.is_cancelled() {
            return false;
        }
        sink.idle();
        std::thread::sleep((due - now).min(Duration::from_millis(50)));
    }
}

/// The shop a product belongs to: stable for the product whatever the seed.
pub fn shop_of(product: u64, shops: u64) -> u64 {
    1 + splitmix64(product) % shops
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The first number from `near` upwards that is coprime with `n`, so `r ↦ r·m mod n` is a
/// permutation.
fn coprime_near(n: u64, near: u64) -> u64 {
    let mut m = near.max(1);
    while gcd(m, n) != 1 {
        m += 1;
    }
    m
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    const PINNED_CRC: u32 = 3_055_953_279;

    fn workload(seed: u64) -> Workload {
        Workload {
            seed,
            keys: 10_000,
            zipf: 1.0,
            shops: 100,
            callers: 0,
            bursts: Vec::new(),
            drift: None,
            rate: None,
            param: "productId".into(),
        }
    }

    fn stream(w: &Workload, n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut g = Generator::new(w).unwrap();
        (0..n)
            .map(|_| {
                let (k, p) = g.next_event();
                (k.to_vec(), p.to_vec())
            })
            .collect()
    }

    fn keys(w: &Workload, n: usize) -> Vec<String> {
        stream(w, n)
            .into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect()
    }

    #[test]
    fn same_seed_gives_the_same_bytes() {
        let w = workload(42);
        assert_eq!(stream(&w, 5_000), stream(&w, 5_000));
    }

    #[test]
    fn callers_add_a_zipf_distributed_real_ip_to_the_json_and_the_raw_request() {
        let with = Workload {
            callers: 500,
            ..workload(5)
        };
        let mut per_caller = std::collections::HashMap::new();
        for (key, payload) in stream(&with, 2_000) {
            let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            let ip = v["headers"]["x-real-ip"].as_str().unwrap().to_string();
            let octets: Vec<u64> = ip.split('.').map(|o| o.parse().unwrap()).collect();
            assert!(
                octets.len() == 4 && octets[0] == 10 && octets.iter().all(|&o| o < 256),
                "{ip}"
            );
            assert!(
                v["raw_reader"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("X-Real-IP: {ip}\r\n"))
            );
            assert_eq!(v["uri_args"]["productId"].as_str().unwrap().as_bytes(), key);
            *per_caller.entry(ip).or_insert(0u32) += 1;
        }
        let busiest = per_caller.values().max().copied().unwrap();
        assert!(
            busiest > 100,
            "the busiest of 500 Zipf callers sent only {busiest} of 2000"
        );
        assert!(per_caller.len() > 50, "{} callers", per_caller.len());
    }

    #[test]
    fn a_seed_gives_the_same_stream_in_every_version() {
        // Pinned: benchmarks and tests of other tools replay streams by seed, so a change
        // to the generator that alters them must be deliberate (and update this value).
        let mut crc = flate2::Crc::new();
        for (key, payload) in stream(&workload(42), 1_000) {
            crc.update(&key);
            crc.update(&payload);
        }
        assert_eq!(crc.sum(), PINNED_CRC);
    }

    #[test]
    fn different_seeds_give_different_streams() {
        assert_ne!(keys(&workload(1), 100), keys(&workload(2), 100));
    }

    #[test]
    fn events_are_openresty_json_keyed_by_their_product() {
        let pointer = hotkeys::event::KeyPointer::parse("/uri_args/productId");
        for (key, payload) in stream(&workload(3), 1_000) {
            let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            assert_eq!(v["request_module"], "product_detail_info");
            assert_eq!(v["method"], "GET");
            let id: u64 = v["uri_args"]["productId"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=10_000).contains(&id));
            let shop: u64 = v["uri_args"]["shopId"].as_str().unwrap().parse().unwrap();
            assert_eq!(shop, shop_of(id, 100));
            let raw = v["raw_reader"].as_str().unwrap();
            assert!(raw.starts_with(&format!(
                "GET /product?productId={id}&shopId={shop} HTTP/1.1\r\n"
            )));
            assert!(raw.ends_with("\r\n\r\n"));
            assert_eq!(
                pointer.extract(Some(&payload), None).unwrap().as_bytes(),
                key
            );
        }
    }

    #[test]
    fn events_average_about_300_bytes_like_reporter_traffic() {
        let s = stream(&workload(4), 10_000);
        let mean = s.iter().map(|(_, p)| p.len()).sum::<usize>() / s.len();
        assert!((280..=360).contains(&mean), "mean event size {mean}");
    }

    #[test]
    fn popularity_follows_zipf() {
        let ks = keys(&workload(5), 100_000);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for k in &ks {
            *counts.entry(k).or_default() += 1;
        }
        let mut sorted: Vec<usize> = counts.into_values().collect();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        // With s = 1 the hottest product gets 1/H(10000) ≈ 10.2% and the second half of that.
        let top = sorted[0] as f64 / ks.len() as f64;
        assert!((0.09..0.115).contains(&top), "top share {top}");
        let ratio = sorted[0] as f64 / sorted[1] as f64;
        assert!((1.7..2.3).contains(&ratio), "rank 1/2 ratio {ratio}");
    }

    #[test]
    fn hot_products_are_scattered_over_the_id_space() {
        let g = Generator::new(&workload(6)).unwrap();
        let hottest: Vec<u64> = (0..100).map(|r| g.product(r, 0)).collect();
        let low = hottest.iter().filter(|&&id| id <= 1_000).count();
        // A tenth of the id space should hold about a tenth of the hot products, not all.
        assert!(
            (3..=20).contains(&low),
            "{low} of the 100 hottest have ids 1..=1000"
        );
    }

    #[test]
    fn burst_key_takes_its_share_from_its_start() {
        let mut w = workload(7);
        w.bursts.push("777777@10000:0.3".parse().unwrap());
        let ks = keys(&w, 40_000);
        assert!(!ks[..10_000].iter().any(|k| k == "777777"));
        let after = ks[10_000..].iter().filter(|k| *k == "777777").count() as f64 / 30_000.0;
        assert!((0.28..0.32).contains(&after), "burst share {after}");
    }

    #[test]
    fn burst_ends_when_told() {
        let mut w = workload(8);
        w.bursts.push("x1@100..200:1".parse().unwrap());
        let ks = keys(&w, 300);
        assert!(ks[100..200].iter().all(|k| k == "x1"));
        assert!(!ks[..100].iter().chain(&ks[200..]).any(|k| k == "x1"));
    }

    #[test]
    fn burst_leaves_the_stream_before_it_unchanged() {
        let plain = stream(&workload(9), 2_000);
        let mut w = workload(9);
        w.bursts.push("5@1000:0.5".parse().unwrap());
        assert_eq!(stream(&w, 1_000), plain[..1_000]);
    }

    #[test]
    fn burst_start_as_time_uses_the_rate() {
        let mut w = workload(10);
        w.bursts.push("b@2s:1".parse().unwrap());
        assert!(Generator::new(&w).unwrap_err().0.contains("--rate"));
        w.rate = Some(50.0);
        let ks = keys(&w, 101);
        assert_ne!(ks[99], "b");
        assert_eq!(ks[100], "b");
    }

    #[test]
    fn overlapping_bursts_over_the_whole_traffic_are_refused() {
        let mut w = workload(11);
        w.bursts.push("a@0:0.6".parse().unwrap());
        w.bursts.push("b@10:0.6".parse().unwrap());
        assert!(Generator::new(&w).is_err());
        w.bursts[0] = "a@0..10:0.6".parse().unwrap();
        assert!(Generator::new(&w).is_ok());
    }

    #[test]
    fn drift_moves_the_hottest_product_every_period() {
        let mut w = workload(12);
        w.drift = Some("20000:100".parse().unwrap());
        let ks = keys(&w, 40_000);
        let hottest = |s: &[String]| {
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for k in s {
                *counts.entry(k).or_default() += 1;
            }
            counts
                .into_iter()
                .max_by_key(|(_, c)| *c)
                .unwrap()
                .0
                .to_string()
        };
        let g = Generator::new(&w).unwrap();
        assert_eq!(hottest(&ks[..20_000]), g.product(0, 0).to_string());
        assert_eq!(hottest(&ks[20_000..]), g.product(100, 0).to_string());
        assert_eq!(g.product(0, 20_000), g.product(100, 0));
    }

    #[test]
    fn rank_mapping_is_a_permutation() {
        let mut w = workload(13);
        w.keys = 1_000;
        let g = Generator::new(&w).unwrap();
        let ids: HashSet<u64> = (0..1_000).map(|r| g.product(r, 0)).collect();
        assert_eq!(ids.len(), 1_000);
        assert!(ids.iter().all(|id| (1..=1_000).contains(id)));
    }

    #[test]
    fn option_grammar_is_parsed_and_errors_name_the_option() {
        assert_eq!(
            "4242@30s..2m:0.25".parse::<Burst>().unwrap(),
            Burst {
                key: "4242".into(),
                start: At::Time(Duration::from_secs(30)),
                end: Some(At::Time(Duration::from_secs(120))),
                share: 0.25
            }
        );
        for bad in [
            "4242",
            "4242@1",
            "@1:0.5",
            "a b@1:0.5",
            "k@1:0",
            "k@1:1.5",
            "k@soon:0.5",
        ] {
            assert!(bad.parse::<Burst>().is_err(), "{bad}");
        }
        assert_eq!("1m".parse::<Drift>().unwrap().step, DEFAULT_DRIFT_STEP);
        assert_eq!(
            "5000:7".parse::<Drift>().unwrap(),
            Drift {
                every: At::Event(5000),
                step: 7
            }
        );
        assert!("0".parse::<Drift>().is_err());
        assert_eq!("2000/s".parse::<Rate>().unwrap(), Rate(2000.0));
        assert_eq!("2.5".parse::<Rate>().unwrap(), Rate(2.5));
        assert!("0".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().unwrap_err().0.contains("--rate"));
    }

    #[test]
    fn workload_limits_are_checked() {
        let mut w = workload(14);
        w.callers = (1 << 24) + 1;
        assert!(Generator::new(&w).unwrap_err().0.contains("--callers"));
        w.callers = 0;
        w.keys = 0;
        assert!(Generator::new(&w).is_err());
        let mut w = workload(14);
        w.zipf = -1.0;
        assert!(Generator::new(&w).is_err());
    }
}
