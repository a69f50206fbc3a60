//! Counting what happened to every event, the live progress line and the final summary.
//!
//! The publishing thread and librdkafka's delivery callbacks bump relaxed atomics; a
//! separate thread turns them into the progress line and the Prometheus counters once a
//! second, so the per-event path never formats, locks or touches the metrics registry.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Samples of skipped input kept for the summary, per category.
const SAMPLES: usize = 5;
/// Bytes of a skipped line shown in a sample.
const SAMPLE_BYTES: usize = 160;

/// Counters shared by the publishing thread, the delivery callbacks and the progress thread.
#[derive(Debug, Default)]
pub struct Stats {
    /// Input lines read (replay) or events generated (synthetic).
    pub read: AtomicU64,
    /// Events handed to the producer (or written to the file).
    pub sent: AtomicU64,
    /// Events the broker acknowledged (or written to the file).
    pub delivered: AtomicU64,
    /// Events that failed delivery after librdkafka's retries.
    pub failed: AtomicU64,
    /// Malformed lines skipped.
    pub bad: AtomicU64,
    /// Well-formed events without a hot key, skipped.
    pub no_key: AtomicU64,
    /// Empty lines skipped.
    pub blank: AtomicU64,
    samples: Mutex<Samples>,
}

#[derive(Debug, Default, Clone)]
struct Samples {
    bad: Vec<Sample>,
    no_key: Vec<Sample>,
    first_failure: Option<String>,
    /// Kinds of malformed input already logged (a handful at most).
    logged: Vec<&'static str>,
}

/// One skipped line, for the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// `file:line`.
    pub at: String,
    /// Why it was skipped.
    pub why: &'static str,
    /// The start of the line.
    pub text: String,
}

impl Stats {
    /// Counts a malformed line; keeps it as a sample while there are few, and logs the first
    /// of each kind.
    pub fn bad_line(&self, at: impl FnOnce() -> String, why: &'static str, line: &[u8]) {
        self.bad.fetch_add(1, Relaxed);
        let mut samples = self.lock();
        let first_of_kind = !samples.logged.contains(&why);
        if samples.bad.len() < SAMPLES || first_of_kind {
            let sample = Sample::new(at(), why, line);
            if first_of_kind {
                tracing::warn!(at = %sample.at, why, sample = %sample.text, "skipping malformed input");
                samples.logged.push(why);
            }
            if samples.bad.len() < SAMPLES {
                samples.bad.push(sample);
            }
        }
    }

    /// Counts an event without a key; keeps it as a sample while there are few.
    pub fn keyless(&self, at: impl FnOnce() -> String, line: &[u8]) {
        let n = self.no_key.fetch_add(1, Relaxed);
        if n < SAMPLES as u64 {
            let sample = Sample::new(at(), "no key", line);
            if n == 0 {
                tracing::warn!(at = %sample.at, sample = %sample.text, "skipping an event without a key");
            }
            self.lock().no_key.push(sample);
        }
    }

    /// Records a delivery failure; the first one's reason goes into the summary.
    pub fn delivery_failed(&self, reason: impl FnOnce() -> String) {
        if self.failed.fetch_add(1, Relaxed) == 0 {
            let reason = reason();
            tracing::error!(%reason, "message delivery failed");
            self.lock().first_failure = Some(reason);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Samples> {
        // A panic while pushing a sample leaves a usable vector behind.
        self.samples.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn snapshot(&self) -> Counts {
        Counts {
            read: self.read.load(Relaxed),
            sent: self.sent.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            failed: self.failed.load(Relaxed),
            bad: self.bad.load(Relaxed),
            no_key: self.no_key.load(Relaxed),
            blank: self.blank.load(Relaxed),
        }
    }
}

impl Sample {
    fn new(at: String, why: &'static str, line: &[u8]) -> Sample {
        let cut = &line[..line.len().min(SAMPLE_BYTES)];
        let mut text = String::from_utf8_lossy(cut).escape_debug().to_string();
        if cut.len() < line.len() {
            text.push('…');
        }
        Sample { at, why, text }
    }
}

/// A consistent-enough copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub read: u64,
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    pub bad: u64,
    pub no_key: u64,
    pub blank: u64,
}

/// What a run did, printed at the end.
#[derive(Debug, Clone)]
pub struct Summary {
    /// `replay` or `synthetic`.
    pub mode: &'static str,
    /// Where events went: `topic access-log` or `file x.jsonl`.
    pub target: String,
    /// The seed of a synthetic run, to reproduce it.
    pub seed: Option<u64>,
    pub elapsed: Duration,
    /// Stopped by a signal before the input ended.
    pub interrupted: bool,
    pub counts: Counts,
    pub bad_samples: Vec<Sample>,
    pub no_key_samples: Vec<Sample>,
    pub first_failure: Option<String>,
}

impl Summary {
    pub fn new(
        mode: &'static str,
        target: String,
        seed: Option<u64>,
        elapsed: Duration,
        interrupted: bool,
        stats: &Stats,
    ) -> Summary {
        let samples = stats.lock().clone();
        Summary {
            mode,
            target,
            seed,
            elapsed,
            interrupted,
            counts: stats.snapshot(),
            bad_samples: samples.bad,
            no_key_samples: samples.no_key,
            first_failure: samples.first_failure,
        }
    }

    /// Delivered events per second over the whole run, flush included.
    pub fn rate(&self) -> f64 {
        self.counts.delivered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        let how = if self.interrupted {
            "interrupted"
        } else {
            "done"
        };
        writeln!(
            f,
            "access-producer {}: {how} in {:.2}s: {} delivered to {} ({:.0}/s), {} failed",
            self.mode,
            self.elapsed.as_secs_f64(),
            c.delivered,
            self.target,
            self.rate(),
            c.failed,
        )?;
        let unit = if self.mode == "replay" {
            "lines read"
        } else {
            "events generated"
        };
        writeln!(
            f,
            "  {} {unit}, {} sent, {} malformed, {} without a key, {} blank",
            c.read, c.sent, c.bad, c.no_key, c.blank
        )?;
        if let Some(seed) = self.seed {
            writeln!(f, "  seed {seed}")?;
        }
        if let Some(reason) = &self.first_failure {
            writeln!(f, "  first delivery failure: {reason}")?;
        }
        for (title, samples, total) in [
            ("malformed", &self.bad_samples, c.bad),
            ("without a key", &self.no_key_samples, c.no_key),
        ] {
            if samples.is_empty() {
                continue;
            }
            writeln!(f, "  {title} (first {} of {total}):", samples.len())?;
            for s in samples {
                writeln!(f, "    {}: {}: {}", s.at, s.why, s.text)?;
            }
        }
        Ok(())
    }
}

/// The once-a-second reporter: a progress line on a terminal, Prometheus counters when
/// metrics are served.
pub struct Progress {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Progress {
    /// Starts the reporter when there is anything to report to; `None` otherwise.
    pub fn start(stats: Arc<Stats>, line: bool, metrics: bool) -> Option<Progress> {
        let line = line && std::io::stderr().is_terminal();
        if !line && !metrics {
            return None;
        }
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || report_loop(&stats, &stopped, line, metrics))
            .ok()?;
        Some(Progress { stop, thread })
    }

    /// Stops the reporter and clears its line.
    pub fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

fn report_loop(stats: &Stats, stopped: &mpsc::Receiver<()>, line: bool, metrics: bool) {
    let start = Instant::now();
    let mut last = (start, 0u64);
    loop {
        let done = !matches!(
            stopped.recv_timeout(Duration::from_secs(1)),
            Err(RecvTimeoutError::Timeout)
        );
        let c = stats.snapshot();
        if metrics {
            for (outcome, n) in [
                ("sent", c.sent),
                ("delivered", c.delivered),
                ("failed", c.failed),
                ("malformed", c.bad),
                ("no_key", c.no_key),
            ] {
                metrics::counter!("hotkeys_producer_events_total", "outcome" => outcome)
                    .absolute(n);
            }
        }
        if line {
            let mut err = std::io::stderr().lock();
            if done {
                let _ = write!(err, "\r\x1b[2K");
            } else {
                let now = Instant::now();
                let rate = (c.sent - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
                last = (now, c.sent);
                let _ = write!(
                    err,
                    "\r\x1b[2K{:>6.0}s  {} sent  {rate:.0}/s  {} delivered  {} failed  {} malformed  {} no key",
                    start.elapsed().as_secs_f64(),
                    c.sent,
                    c.delivered,
                    c.failed,
                    c.bad,
                    c.no_key,
                );
            }
            let _ = err.flush();
        }
        if done {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_bounded_and_keep_the_first_lines() {
        let stats = Stats::default();
        for i in 0..20 {
            stats.bad_line(|| format!("f:{i}"), "why", b"garbage");
        }
        let s = Summary::new(
            "replay",
            "topic t".into(),
            None,
            Duration::from_secs(1),
            false,
            &stats,
        );
        assert_eq!(s.counts.bad, 20);
        assert_eq!(s.bad_samples.len(), SAMPLES);
        assert_eq!(s.bad_samples[0].at, "f:0");
    }

    #[test]
    fn long_lines_are_cut_in_samples_and_control_bytes_escaped() {
        let stats = Stats::default();
        stats.keyless(|| "f:1".into(), &[b'x'; 1000]);
        stats.bad_line(|| "f:2".into(), "why", b"a\x1b[31mb");
        let s = Summary::new(
            "replay",
            "topic t".into(),
            None,
            Duration::from_secs(1),
            false,
            &stats,
        );
        assert!(s.no_key_samples[0].text.ends_with('…'));
        assert!(s.no_key_samples[0].text.len() < 200);
        assert!(!s.bad_samples[0].text.contains('\x1b'));
    }

    #[test]
    fn summary_names_counts_samples_and_first_failure() {
        let stats = Stats::default();
        stats.read.store(10, Relaxed);
        stats.sent.store(7, Relaxed);
        stats.delivered.store(6, Relaxed);
        stats.delivery_failed(|| "Message timed out".into());
        stats.bad_line(|| "in.log:3".into(), "unrecognized", b"junk");
        let text = Summary::new(
            "replay",
            "topic t".into(),
            Some(9),
            Duration::from_secs(2),
            true,
            &stats,
        )
        .to_string();
        assert!(text.contains("interrupted"), "{text}");
        assert!(
            text.contains("6 delivered to topic t (3/s), 1 failed"),
            "{text}"
        );
        assert!(
            text.contains("10 lines read, 7 sent, 1 malformed"),
            "{text}"
        );
        assert!(text.contains("in.log:3: unrecognized: junk"), "{text}");
        assert!(
            text.contains("first delivery failure: Message timed out"),
            "{text}"
        );
        assert!(text.contains("seed 9"), "{text}");
    }
}
