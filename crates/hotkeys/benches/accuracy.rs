//! Accuracy of the counting algorithms against exact counts. Run through
//! `scripts/bench-accuracy.sh`, or:
//!
//! - `cargo bench -p hotkeys --bench accuracy -- FILE [TOP]`: on an event file written by
//!   `access-producer synthetic --write`, for each algorithm and capacity, top-N recall (the
//!   share of the exact top-N that the published top-N holds) and the mean relative error
//!   of the published counts;
//! - `cargo bench -p hotkeys --bench accuracy -- adversarial [TOP]`: on generated streams
//!   of Zipf traffic mixed with crawls and scans (see [`streams`]), for each algorithm,
//!   capacity and stream, top-N precision, recall, and the largest and mean relative error
//!   of the published counts of the exact top-N; then one summary line per stream and algorithm,
//!   `flood_precision stream=… algorithm=… value=…`, the precision at the shipped default
//!   capacity.

use std::collections::HashMap;
use std::io::BufRead;
use std::time::Duration;

use hotkeys::config::{Algorithm, CountConfig};
use hotkeys::count::WindowCounter;
use hotkeys::event::KeyPointer;
use hotkeys::hotlist::HotItem;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let Some(path) = args.first() else {
        eprintln!("usage: accuracy FILE [TOP]");
        std::process::exit(2);
    };
    let top: usize = args.get(1).and_then(|t| t.parse().ok()).unwrap_or(100);
    if path == "adversarial" {
        return adversarial(top);
    }
    let keys = read_keys(path);
    let mut exact: HashMap<&str, u64> = HashMap::new();
    for k in &keys {
        *exact.entry(k.as_str()).or_default() += 1;
    }
    let mut truth: Vec<(&str, u64)> = exact.iter().map(|(k, c)| (*k, *c)).collect();
    truth.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let cutoff = truth.get(top).map_or(0, |t| t.1);
    // Keys tied with the first one left out can swap places with it: any of them counts.
    let in_top = |k: &str| {
        exact
            .get(k)
            .is_some_and(|&c| c > cutoff || (c == cutoff && c > 0))
    };
    let strictly_top = truth.iter().take(top).filter(|t| t.1 > cutoff).count();

    println!("events={} distinct={} top={top}", keys.len(), exact.len());
    println!(
        "{:<13} {:>9} {:>8} {:>10}",
        "algorithm", "capacity", "recall", "mean_rel_err"
    );
    for algorithm in [Algorithm::Lru, Algorithm::SpaceSaving] {
        for capacity in [1_000usize, 10_000] {
            let config = CountConfig {
                algorithm,
                capacity,
                window: Duration::from_secs(3600),
                buckets: 1,
                top_n: top,
                ..CountConfig::default()
            };
            let mut counter = WindowCounter::new(&config);
            for k in &keys {
                counter.offer(k, 0);
            }
            let published = counter.top(top).items;
            let hits = published.iter().filter(|i| in_top(&i.key)).count();
            let recall = hits.min(top) as f64 / top.max(strictly_top) as f64;
            let err: f64 = published
                .iter()
                .map(|i| {
                    let t = exact.get(i.key.as_str()).copied().unwrap_or(0).max(1) as f64;
                    (i.count as f64 - t).abs() / t
                })
                .sum::<f64>()
                / published.len().max(1) as f64;
            let name = match algorithm {
                Algorithm::Lru => "lru",
                Algorithm::SpaceSaving => "space-saving",
            };
            println!("{name:<13} {capacity:>9} {recall:>8.4} {err:>10.4}");
        }
    }
}

/// Exact counts of a stream and who is in its top `top`.
struct Truth<'a> {
    exact: HashMap<&'a str, u64>,
    /// The count of the first key left out of the top: keys tied with it may take its place.
    cutoff: u64,
    /// Keys strictly above the cutoff.
    strictly_top: usize,
}

impl<'a> Truth<'a> {
    fn of(keys: &'a [String], top: usize) -> Truth<'a> {
        let mut exact: HashMap<&str, u64> = HashMap::new();
        for k in keys {
            *exact.entry(k.as_str()).or_default() += 1;
        }
        let mut counts: Vec<u64> = exact.values().copied().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let cutoff = counts.get(top).copied().unwrap_or(0);
        let strictly_top = counts.iter().take(top).filter(|&&c| c > cutoff).count();
        Truth {
            exact,
            cutoff,
            strictly_top,
        }
    }

    fn count(&self, key: &str) -> u64 {
        self.exact.get(key).copied().unwrap_or(0)
    }

    fn in_top(&self, key: &str) -> bool {
        let c = self.count(key);
        c > self.cutoff || (c == self.cutoff && c > 0)
    }
}

const ALGORITHMS: [(Algorithm, &str); 2] = [
    (Algorithm::Lru, "lru"),
    (Algorithm::SpaceSaving, "space-saving"),
];
const CAPACITIES: [usize; 2] = [1_000, 10_000];

/// Precision, recall and the exact top's largest relative count error, on generated
/// adversarial streams.
fn adversarial(top: usize) {
    println!(
        "{:<12} {:<13} {:>9} {:>9} {:>8} {:>11} {:>12}",
        "stream", "algorithm", "capacity", "precision", "recall", "top_max_err", "top_mean_err"
    );
    let mut summary = Vec::new();
    for (stream, keys) in streams() {
        let truth = Truth::of(&keys, top);
        for (algorithm, name) in ALGORITHMS {
            for capacity in CAPACITIES {
                let published = count(&keys, algorithm, capacity, top);
                let hits = published.iter().filter(|i| truth.in_top(&i.key)).count();
                let precision = hits as f64 / published.len().max(1) as f64;
                let recall = hits.min(top) as f64 / top.max(truth.strictly_top) as f64;
                let errors: Vec<f64> = published
                    .iter()
                    .filter(|i| truth.count(&i.key) > truth.cutoff)
                    .map(|i| {
                        let t = truth.count(&i.key) as f64;
                        (i.count as f64 - t).abs() / t
                    })
                    .collect();
                let max_err = errors.iter().copied().fold(0.0, f64::max);
                let mean_err = errors.iter().sum::<f64>() / errors.len().max(1) as f64;
                println!(
                    "{stream:<12} {name:<13} {capacity:>9} {precision:>9.4} {recall:>8.4} {max_err:>11.4} {mean_err:>12.4}"
                );
                if capacity == CountConfig::default().capacity {
                    summary.push(format!(
                        "flood_precision stream={stream} algorithm={name} value={precision:.4}"
                    ));
                }
            }
        }
    }
    for line in summary {
        println!("{line}");
    }
}

/// The published top `top` of one bucket of `algorithm` over the stream.
fn count(keys: &[String], algorithm: Algorithm, capacity: usize, top: usize) -> Vec<HotItem> {
    let config = CountConfig {
        algorithm,
        capacity,
        window: Duration::from_secs(3600),
        buckets: 1,
        top_n: top,
        ..CountConfig::default()
    };
    let mut counter = WindowCounter::new(&config);
    for k in keys {
        counter.offer(k, 0);
    }
    counter.top(top).items
}

/// The adversarial streams, by name. Product ids are numbers; the site's traffic is Zipf
/// (s = 1.0) over a catalogue; a crawl asks for catalogue ids 0, 1, 2… once each (so it
/// touches the hot products too), a scan asks for each id 2 or 3 times in a row.
fn streams() -> impl Iterator<Item = (&'static str, Vec<String>)> {
    let specs: [(&str, usize, u64, usize, Flood); 6] = [
        ("crawl-1x", 200_000, 100_000, 200_000, Flood::Even),
        ("crawl-10x", 200_000, 100_000, 2_000_000, Flood::Even),
        ("crawl-100x", 50_000, 20_000, 5_000_000, Flood::Even),
        ("burst-10x", 200_000, 100_000, 2_000_000, Flood::Burst),
        ("scan-10x", 200_000, 100_000, 2_000_000, Flood::Scan),
        ("zipf", 200_000, 100_000, 0, Flood::Even),
    ];
    specs
        .into_iter()
        .map(|(name, events, products, flood, how)| {
            let mut rng = SplitMix(42);
            let site = zipf(&mut rng, events, products, 1.0);
            (name, mix(&mut rng, site, flood, how))
        })
}

/// How the flood's requests lie in the stream.
#[derive(Clone, Copy)]
enum Flood {
    /// One-off ids spread evenly through the site's traffic.
    Even,
    /// One-off ids all at once, in the middle of the stream.
    Burst,
    /// Each id 2 or 3 times in a row, spread evenly.
    Scan,
}

fn mix(rng: &mut SplitMix, site: Vec<u64>, flood: usize, how: Flood) -> Vec<String> {
    let crawl: Vec<u64> = match how {
        Flood::Even | Flood::Burst => (0..flood as u64).collect(),
        Flood::Scan => (0..)
            .flat_map(|id: u64| std::iter::repeat_n(id, 2 + (id % 2) as usize))
            .take(flood)
            .collect(),
    };
    let mut out: Vec<u64> = Vec::with_capacity(site.len() + crawl.len());
    match how {
        Flood::Burst => {
            let (before, after) = site.split_at(site.len() / 2);
            out.extend(before.iter().chain(&crawl).chain(after).copied());
        }
        Flood::Even | Flood::Scan => {
            // Each next request is the site's or the crawl's in proportion to what is left.
            let (mut s, mut c) = (site.iter().peekable(), crawl.iter().peekable());
            while s.peek().is_some() || c.peek().is_some() {
                let left = (s.len() + c.len()) as u64;
                let next = if rng.below(left) < s.len() as u64 {
                    s.next()
                } else {
                    c.next()
                };
                out.extend(next.copied());
            }
        }
    }
    out.into_iter().map(|id| id.to_string()).collect()
}

/// `events` Zipf(`s`) draws over product ids 0..`products` (rank r is id r).
fn zipf(rng: &mut SplitMix, events: usize, products: u64, s: f64) -> Vec<u64> {
    let mut cdf: Vec<f64> = (1..=products).map(|r| (r as f64).powf(-s)).collect();
    for i in 1..cdf.len() {
        cdf[i] += cdf[i - 1];
    }
    let total = cdf[cdf.len() - 1];
    (0..events)
        .map(|_| {
            let u = rng.unit() * total;
            cdf.partition_point(|&c| c < u).min(cdf.len() - 1) as u64
        })
        .collect()
}

/// SplitMix64: a seeded, dependency-free generator, so the streams are the same on every
/// machine and in every tree the bench is compared across.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn read_keys(path: &str) -> Vec<String> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let reader: Box<dyn BufRead> = if path.ends_with(".gz") {
        Box::new(std::io::BufReader::new(flate2::read::GzDecoder::new(file)))
    } else {
        Box::new(std::io::BufReader::new(file))
    };
    let pointer = KeyPointer::parse("/uri_args/productId");
    reader
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| {
            pointer
                .extract(Some(line.as_bytes()), None)
                .ok()
                .map(|k| k.into_owned())
        })
        .collect()
}
