//! What a run reports: one [`TaskRecord`] per task, the [`Summary`] printed at the end (a
//! table, or JSON with `--json`), and the live progress line on a terminal. Every record also
//! counts into Prometheus metrics (`hotkeys_prewarm_*`, labelled by outcome only).

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use comfy_table::{CellAlignment, Table, presets};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::options::Mode;

/// How one task ended for this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskOutcome {
    /// This process warmed it and wrote the `warmed` mark.
    Warmed,
    /// Already warmed for its current hot-list version; no lock taken.
    UpToDate,
    /// Found warmed after taking the lock (the double check): someone finished meanwhile.
    AlreadyWarmed,
    /// Another process held the lock; this one moved on without waiting.
    Locked,
    /// Was locked by another process, which then warmed it.
    WarmedByOther,
    /// Still locked by another process, and not warmed, when `--once` stopped looking.
    StillLocked,
    /// No hot list published yet: nothing to warm.
    NoHotList,
    /// The hot list cannot be read; the task was skipped and the others proceeded.
    Malformed,
    /// The ZooKeeper session expired while warming: not marked, the lock was gone.
    SessionLost,
    /// `--dry-run`: rows counted, nothing locked or written.
    DryRun,
    /// Stopped by shutdown or by another task's failure; lock released, not marked.
    Aborted,
    /// Stopped by an error that ended the run.
    Failed,
}

impl TaskOutcome {
    /// Whether the task needs nothing more from anyone.
    pub fn is_done(self) -> bool {
        matches!(
            self,
            TaskOutcome::Warmed
                | TaskOutcome::UpToDate
                | TaskOutcome::AlreadyWarmed
                | TaskOutcome::WarmedByOther
                | TaskOutcome::NoHotList
                | TaskOutcome::DryRun
        )
    }

    /// Whether `--once` should look at the task again at the end of its pass.
    pub fn is_pending(self) -> bool {
        matches!(self, TaskOutcome::Locked | TaskOutcome::SessionLost)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskOutcome::Warmed => "warmed",
            TaskOutcome::UpToDate => "up_to_date",
            TaskOutcome::AlreadyWarmed => "already_warmed",
            TaskOutcome::Locked => "locked",
            TaskOutcome::WarmedByOther => "warmed_by_other",
            TaskOutcome::StillLocked => "still_locked",
            TaskOutcome::NoHotList => "no_hot_list",
            TaskOutcome::Malformed => "malformed",
            TaskOutcome::SessionLost => "session_lost",
            TaskOutcome::DryRun => "dry_run",
            TaskOutcome::Aborted => "aborted",
            TaskOutcome::Failed => "failed",
        }
    }
}

/// What warming did to a task's keys; per task in [`TaskRecord`], summed in [`Totals`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Keys whose row was found and encoded.
    pub rows: u64,
    /// Values stored in Redis.
    pub written: u64,
    /// Values left alone because Redis already had one (`SET NX`).
    pub already_present: u64,
    /// Keys not read from MySQL because Redis holds them for longer than
    /// `prewarm.refresh_before`.
    pub skipped_warm: u64,
    /// Keys without a row in MySQL.
    pub missing: u64,
    /// Keys not asked of MySQL because it had no row for them less than
    /// `prewarm.missing_ttl` ago.
    #[serde(default)]
    pub missing_cached: u64,
    /// Rows that could not be encoded as JSON.
    pub unencodable: u64,
    /// Writes queued for the other data centre.
    pub replicated: u64,
}

impl Counts {
    pub(crate) fn add(&mut self, o: Counts) {
        self.rows += o.rows;
        self.written += o.written;
        self.already_present += o.already_present;
        self.skipped_warm += o.skipped_warm;
        self.missing += o.missing;
        self.missing_cached += o.missing_cached;
        self.unencodable += o.unencodable;
        self.replicated += o.replicated;
    }
}

/// What happened to one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub task: u32,
    pub outcome: TaskOutcome,
    /// Version of the hot list looked at.
    pub hot_version: Option<i64>,
    /// Distinct keys of the hot list.
    pub keys: u64,
    #[serde(flatten)]
    pub counts: Counts,
    pub took_ms: u64,
    /// How many times the try-lock found the lock taken (each time: skipped, no wait).
    pub lock_busy: u32,
    /// Whether a session expiry cost this process the lock while warming.
    pub session_lost: bool,
    /// Who held the lock, or who warmed it (`host:pid`), when it was not this process.
    pub holder: Option<String>,
    pub error: Option<String>,
}

impl TaskRecord {
    pub(crate) fn new(task: u32, outcome: TaskOutcome) -> TaskRecord {
        TaskRecord {
            task,
            outcome,
            hot_version: None,
            keys: 0,
            counts: Counts::default(),
            took_ms: 0,
            lock_busy: 0,
            session_lost: false,
            holder: None,
            error: None,
        }
    }

    /// Keeps what earlier attempts at the same task learned.
    pub(crate) fn after(mut self, earlier: &TaskRecord) -> TaskRecord {
        self.lock_busy += earlier.lock_busy;
        self.session_lost |= earlier.session_lost;
        self
    }
}

/// Sums over all tasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub tasks: u64,
    /// Tasks per outcome, by outcome name.
    pub outcomes: std::collections::BTreeMap<String, u64>,
    pub keys: u64,
    #[serde(flatten)]
    pub counts: Counts,
    pub lock_busy: u64,
}

/// The end-of-run report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// This process, `host:pid`, as written in `warmed.by`.
    pub by: String,
    pub topology: String,
    pub mode: Mode,
    pub force: bool,
    pub dry_run: bool,
    pub passes: u64,
    /// Every task, in task order, with its last outcome.
    pub tasks: Vec<TaskRecord>,
    pub totals: Totals,
    pub took_ms: u64,
    /// Rows found and written or kept, per second of the whole run.
    pub rows_per_s: f64,
    /// Every task is warmed by someone (or has nothing to warm).
    pub complete: bool,
    /// The error that ended the run, if one did.
    pub error: Option<String>,
}

/// The columns of [`Summary::to_table`]: `warm` is keys skipped as warm, `bad` rows that
/// cannot be encoded.
const COLUMNS: [&str; 11] = [
    "task",
    "outcome",
    "version",
    "keys",
    "written",
    "present",
    "warm",
    "missing",
    "bad",
    "ms",
    "holder / error",
];

impl Summary {
    pub(crate) fn new(
        by: String,
        topology: String,
        mode: Mode,
        force: bool,
        dry_run: bool,
    ) -> Summary {
        Summary {
            by,
            topology,
            mode,
            force,
            dry_run,
            passes: 0,
            tasks: Vec::new(),
            totals: Totals::default(),
            took_ms: 0,
            rows_per_s: 0.0,
            complete: false,
            error: None,
        }
    }

    pub(crate) fn finish(
        &mut self,
        records: Vec<TaskRecord>,
        took: Duration,
        error: Option<String>,
    ) {
        let mut totals = Totals {
            tasks: records.len() as u64,
            ..Totals::default()
        };
        for r in &records {
            *totals
                .outcomes
                .entry(r.outcome.as_str().into())
                .or_default() += 1;
            totals.keys += r.keys;
            totals.counts.add(r.counts);
            totals.lock_busy += u64::from(r.lock_busy);
        }
        self.complete = error.is_none() && records.iter().all(|r| r.outcome.is_done());
        self.tasks = records;
        self.took_ms = took.as_millis() as u64;
        self.rows_per_s = totals.counts.rows as f64 / took.as_secs_f64().max(1e-3);
        self.totals = totals;
        self.error = error;
    }

    /// Tasks this process warmed itself.
    pub fn warmed_here(&self) -> Vec<u32> {
        self.tasks
            .iter()
            .filter(|r| r.outcome == TaskOutcome::Warmed)
            .map(|r| r.task)
            .collect()
    }

    /// A table for people: a row per task, then the totals line.
    pub fn to_table(&self) -> String {
        let mut table = Table::new();
        table.load_style(presets::NOTHING).set_header(COLUMNS);
        for r in &self.tasks {
            table.add_row([
                r.task.to_string(),
                r.outcome.as_str().to_string(),
                r.hot_version.map_or("-".to_string(), |v| v.to_string()),
                r.keys.to_string(),
                r.counts.written.to_string(),
                r.counts.already_present.to_string(),
                r.counts.skipped_warm.to_string(),
                r.counts.missing.to_string(),
                r.counts.unencodable.to_string(),
                r.took_ms.to_string(),
                r.error
                    .as_deref()
                    .or(r.holder.as_deref())
                    .unwrap_or("")
                    .to_string(),
            ]);
        }
        for column in [0, 2, 3, 4, 5, 6, 7, 8, 9] {
            if let Some(c) = table.column_mut(column) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
        let mut out = table.trim_fmt();
        out.push('\n');
        let outcomes: Vec<String> = self
            .totals
            .outcomes
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        let _ = writeln!(
            out,
            "{} tasks ({}); {} rows: {} written, {} already present, {} missing ({} more known missing), {} unencodable; {} skipped warm; {} replicated; {:.1}s, {:.0} rows/s{}",
            self.totals.tasks,
            outcomes.join(", "),
            self.totals.counts.rows,
            self.totals.counts.written,
            self.totals.counts.already_present,
            self.totals.counts.missing,
            self.totals.counts.missing_cached,
            self.totals.counts.unencodable,
            self.totals.counts.skipped_warm,
            self.totals.counts.replicated,
            self.took_ms as f64 / 1000.0,
            self.rows_per_s,
            if self.complete { "" } else { "; NOT COMPLETE" }
        );
        out
    }
}

/// Counters shared by the tasks of a run, for the progress line.
#[derive(Default)]
pub(crate) struct Progress {
    tasks: AtomicU64,
    done: AtomicU64,
    locked: AtomicU64,
    failed: AtomicU64,
    /// Rows loaded so far; the batches add to it as they go.
    pub rows: AtomicU64,
}

impl Progress {
    pub(crate) fn set_total(&self, tasks: usize) {
        self.tasks.store(tasks as u64, Ordering::Relaxed);
    }

    /// Recounts the tasks by outcome.
    pub(crate) fn update<'a>(&self, records: impl Iterator<Item = &'a TaskRecord>) {
        let (mut done, mut locked, mut failed) = (0, 0, 0);
        for r in records {
            if r.outcome.is_done() {
                done += 1;
            } else if r.outcome.is_pending() {
                locked += 1;
            } else {
                failed += 1;
            }
        }
        self.done.store(done, Ordering::Relaxed);
        self.locked.store(locked, Ordering::Relaxed);
        self.failed.store(failed, Ordering::Relaxed);
    }

    /// Counts a finished attempt into the metrics: keys by what became of them, and the
    /// keys looked up in MySQL (found, missing or unencodable).
    pub(crate) fn record(&self, r: &TaskRecord) {
        metrics::counter!("hotkeys_prewarm_tasks_total", "outcome" => r.outcome.as_str())
            .increment(1);
        for (result, n) in [
            ("written", r.counts.written),
            ("already_present", r.counts.already_present),
            ("skipped_warm", r.counts.skipped_warm),
            ("missing", r.counts.missing),
            ("missing_cached", r.counts.missing_cached),
            ("unencodable", r.counts.unencodable),
        ] {
            metrics::counter!("hotkeys_prewarm_keys_total", "result" => result).increment(n);
        }
        metrics::counter!("hotkeys_prewarm_mysql_lookups_total")
            .increment(r.counts.rows + r.counts.missing + r.counts.unencodable);
    }

    pub(crate) fn line(&self, started: Instant) -> String {
        let rows = self.rows.load(Ordering::Relaxed);
        format!(
            "prewarm: {}/{} tasks done, {} locked elsewhere, {} not warmed, {} rows, {:.0} rows/s",
            self.done.load(Ordering::Relaxed),
            self.tasks.load(Ordering::Relaxed),
            self.locked.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            rows,
            rows as f64 / started.elapsed().as_secs_f64().max(1e-3)
        )
    }
}

/// Redraws the progress line on stderr twice a second until `stop`.
pub(crate) fn show_progress(progress: Arc<Progress>, started: Instant, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => break,
            }
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{}", progress.line(started));
            let _ = err.flush();
        }
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "\r\x1b[2K{}", progress.line(started));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_outcomes_and_completeness() {
        let mut s = Summary::new("h:1".into(), "t".into(), Mode::Once, false, false);
        let mut a = TaskRecord::new(0, TaskOutcome::Warmed);
        a.counts.rows = 10;
        a.counts.written = 9;
        a.counts.already_present = 1;
        let b = TaskRecord::new(1, TaskOutcome::WarmedByOther);
        s.finish(vec![a.clone(), b], Duration::from_secs(1), None);
        assert!(s.complete);
        assert_eq!(s.totals.counts.rows, 10);
        assert_eq!(s.totals.outcomes["warmed"], 1);
        assert_eq!(s.warmed_here(), vec![0]);

        let c = TaskRecord::new(2, TaskOutcome::StillLocked);
        s.finish(vec![a, c], Duration::from_secs(1), None);
        assert!(!s.complete);
        assert!(s.to_table().contains("NOT COMPLETE"));
    }

    #[test]
    fn summary_json_round_trips() {
        let mut s = Summary::new("h:1".into(), "t".into(), Mode::Watch, true, false);
        s.finish(
            vec![TaskRecord::new(3, TaskOutcome::Malformed)],
            Duration::from_millis(5),
            None,
        );
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"outcome\":\"malformed\""), "{json}");
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn later_attempts_keep_the_lock_history() {
        let mut first = TaskRecord::new(1, TaskOutcome::Locked);
        first.lock_busy = 2;
        first.session_lost = true;
        let later = TaskRecord::new(1, TaskOutcome::Warmed).after(&first);
        assert_eq!(later.lock_busy, 2);
        assert!(later.session_lost);
    }
}
