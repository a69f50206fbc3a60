//! Accuracy of the counting algorithms against exact counts, on an event file written by
//! `access-producer synthetic --write`. Run through `scripts/bench-accuracy.sh`, or:
//! `cargo bench -p hotkeys --bench accuracy -- FILE [TOP]`.
//!
//! For each algorithm and capacity it prints top-N recall (the share of the exact top-N that
//! the published top-N holds) and the mean relative error of the published counts.

use std::collections::HashMap;
use std::io::BufRead;
use std::time::Duration;

use hotkeys::config::{Algorithm, CountConfig};
use hotkeys::count::WindowCounter;
use hotkeys::event::KeyPointer;

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
