//! `replay`: access events from files or stdin, published in input order for each key.
//!
//! Two threads share the work. The input thread reads (and un-gzips) the sources into
//! ~1 MiB batches of whole lines and decodes them: format detection, key extraction, nginx
//! conversion, counting and sampling what it skips. The publishing thread only hands the
//! decoded events to the sink. Decoding is a third of the per-event cost and librdkafka's
//! `produce` most of the rest, so the split lets them use both cores; batches (and their
//! buffers, which are recycled) keep the hand-over cost per event near zero. Waiting for a
//! batch with a timeout also means a blocked read on stdin (`tail -F … | replay -`) neither
//! delays shutdown nor stalls the producer's housekeeping.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::time::Duration;

use flate2::read::MultiGzDecoder;
use hotkeys::cli::shutdown::CancellationToken;

use crate::error::Error;
use crate::format::{BadKind, Decoded, Decoder};
use crate::publish::{Record, Sent, Sink};
use crate::report::Stats;

/// Bytes of input a batch is filled to before it is decoded and handed over.
const CHUNK: usize = 1 << 20;
/// A line longer than this is handed over in pieces (each then counts as malformed) rather
/// than buffered without bound.
const MAX_LINE: usize = 16 << 20;
/// Batches in flight between the input thread and the publisher.
const BATCHES_IN_FLIGHT: usize = 4;
/// How long the publisher waits for input before doing the producer's housekeeping and
/// checking for shutdown.
const INPUT_WAIT: Duration = Duration::from_millis(100);
/// Bytes of a line quoted in a `--strict` error.
const QUOTE: usize = 160;

/// The bytes that start a gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// One input: a file opened up front (so a missing one is a usage error before anything is
/// published), or stdin.
pub struct Source {
    name: String,
    input: Input,
}

enum Input {
    File(File),
    Stdin,
}

impl Source {
    /// Opens the inputs named on the command line; none or `-` means stdin.
    pub fn open_all(paths: &[PathBuf]) -> Result<Vec<Source>, Error> {
        if paths.is_empty() {
            return Ok(vec![Source::stdin()]);
        }
        paths
            .iter()
            .map(|p| {
                if p == Path::new("-") {
                    return Ok(Source::stdin());
                }
                let file = File::open(p).map_err(|source| Error::Open {
                    path: p.clone(),
                    source,
                })?;
                Ok(Source {
                    name: p.display().to_string(),
                    input: Input::File(file),
                })
            })
            .collect()
    }

    fn stdin() -> Source {
        Source {
            name: "<stdin>".into(),
            input: Input::Stdin,
        }
    }

    /// A reader of the decoded bytes: gzip is recognised by its magic bytes, whatever the
    /// file is called (rotated logs are often `access.log.1.gz` or have no suffix at all).
    fn reader(self) -> io::Result<Box<dyn Read>> {
        let mut raw: Box<dyn Read> = match self.input {
            Input::File(f) => Box::new(f),
            Input::Stdin => Box::new(io::stdin().lock()),
        };
        // Sniffed by hand rather than through a BufReader, which would copy every byte of
        // a plain file once more on its way into the batch.
        let mut head = Vec::with_capacity(GZIP_MAGIC.len());
        raw.by_ref()
            .take(GZIP_MAGIC.len() as u64)
            .read_to_end(&mut head)?;
        let gzip = head == GZIP_MAGIC;
        let whole = io::Cursor::new(head).chain(raw);
        if gzip {
            // Multi-member: concatenated .gz files (logrotate, `cat a.gz b.gz`) decode whole.
            Ok(Box::new(MultiGzDecoder::new(BufReader::with_capacity(
                256 * 1024,
                whole,
            ))))
        } else {
            Ok(Box::new(whole))
        }
    }
}

/// Where a piece of an event lives in its batch.
#[derive(Debug, Clone)]
enum Span {
    /// In the input bytes: a JSON line, or a key borrowed from it.
    Input(Range<usize>),
    /// In the batch's own output: a converted nginx event, or an unescaped key.
    Output(Range<usize>),
}

/// One decoded event of a batch.
#[derive(Debug, Clone)]
struct Event {
    key: Span,
    payload: Span,
    line: u64,
}

/// Decoded lines of one source, ready to publish; recycled once published.
#[derive(Debug, Default)]
struct Batch {
    source: usize,
    input: Vec<u8>,
    output: Vec<u8>,
    events: Vec<Event>,
}

impl Batch {
    fn get(&self, span: &Span) -> &[u8] {
        match span {
            Span::Input(r) => &self.input[r.clone()],
            Span::Output(r) => &self.output[r.clone()],
        }
    }
}

/// A message from the input thread.
enum Msg {
    Batch(Batch),
    Failed {
        source: usize,
        line: u64,
        error: io::Error,
    },
    /// `--strict` met a malformed line; everything before it was in earlier batches.
    Strict(Error),
}

/// What the input thread needs besides the sources.
struct InputThread {
    decoder: Decoder,
    strict: bool,
    stats: Arc<Stats>,
    names: Vec<String>,
    batches: SyncSender<Msg>,
    free: Receiver<Batch>,
}

impl InputThread {
    /// Reads every source in order into batches of whole lines, decodes and hands them over.
    fn run(mut self, sources: Vec<Source>) {
        for (index, source) in sources.into_iter().enumerate() {
            if !self.read_source(index, source) {
                return;
            }
        }
    }

    /// False when the publisher is gone or the input thread must stop.
    fn read_source(&mut self, index: usize, source: Source) -> bool {
        let mut line_no = 0u64;
        let eager = matches!(source.input, Input::Stdin);
        let mut reader = match source.reader() {
            Ok(r) => r,
            Err(error) => return self.fail(index, line_no, error),
        };
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let mut batch = self.free.try_recv().unwrap_or_default();
            batch.source = index;
            batch.input.clear();
            batch.input.append(&mut carry);
            let eof = match fill(&mut reader, &mut batch.input, eager) {
                Ok(eof) => eof,
                Err(error) => return self.fail(index, line_no, error),
            };
            if !eof {
                // Decode whole lines only; the partial last line starts the next batch.
                match memchr::memrchr(b'\n', &batch.input) {
                    Some(nl) => carry.extend_from_slice(&batch.input[nl + 1..]),
                    None if batch.input.len() < MAX_LINE => {
                        std::mem::swap(&mut carry, &mut batch.input);
                        continue;
                    }
                    None => {}
                }
                let keep = batch.input.len() - carry.len();
                batch.input.truncate(keep);
            }
            let strict = self.decode(&mut batch, &mut line_no);
            let sent = batch.events.is_empty() || self.batches.send(Msg::Batch(batch)).is_ok();
            if let Some(e) = strict {
                let _ = self.batches.send(Msg::Strict(e));
                return false;
            }
            if !sent {
                return false;
            }
            if eof {
                return true;
            }
        }
    }

    /// Decodes the lines of `batch.input` into its events; under `--strict`, stops at the
    /// first malformed line and returns the error to report after the events before it.
    fn decode(&mut self, batch: &mut Batch, line_no: &mut u64) -> Option<Error> {
        let Batch {
            source,
            input,
            output,
            events,
        } = batch;
        output.clear();
        events.clear();
        let name = &self.names[*source];
        let mut lines = 0;
        let mut rest = &input[..];
        let mut result = None;
        while !rest.is_empty() {
            let (mut line, next) = match memchr::memchr(b'\n', rest) {
                Some(nl) => (&rest[..nl], &rest[nl + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            rest = next;
            *line_no += 1;
            lines += 1;
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            if *line_no == 1
                && let Some(l) = line.strip_prefix(b"\xef\xbb\xbf")
            {
                line = l;
            }
            let at = || format!("{name}:{line_no}");
            let kind = match self.decoder.decode(line) {
                Decoded::Event { key, payload } => {
                    events.push(Event {
                        key: locate(input, output, key),
                        payload: locate(input, output, payload),
                        line: *line_no,
                    });
                    continue;
                }
                Decoded::Blank => {
                    self.stats.blank.fetch_add(1, Relaxed);
                    continue;
                }
                Decoded::NoKey => {
                    self.stats.keyless(at, line);
                    continue;
                }
                Decoded::Bad(kind) => kind,
            };
            self.stats.bad_line(at, kind.describe(), line);
            if self.strict {
                result = Some(strict_error(at(), kind, line));
                break;
            }
        }
        self.stats.read.fetch_add(lines, Relaxed);
        result
    }

    fn fail(&self, source: usize, line: u64, error: io::Error) -> bool {
        let _ = self.batches.send(Msg::Failed {
            source,
            line,
            error,
        });
        false
    }
}

/// Where `piece` lies: inside `input` (found by address, as the decoder borrows from the
/// line it is given), or else copied to the end of `output`.
fn locate(input: &[u8], output: &mut Vec<u8>, piece: &[u8]) -> Span {
    let base = input.as_ptr() as usize;
    let at = piece.as_ptr() as usize;
    if at >= base && at + piece.len() <= base + input.len() {
        let start = at - base;
        return Span::Input(start..start + piece.len());
    }
    let start = output.len();
    output.extend_from_slice(piece);
    Span::Output(start..output.len())
}

fn strict_error(at: String, kind: BadKind, line: &[u8]) -> Error {
    Error::Strict {
        at,
        why: kind.describe(),
        text: String::from_utf8_lossy(&line[..line.len().min(QUOTE)])
            .escape_debug()
            .to_string(),
    }
}

/// Reads until `buf` holds a batch's worth or the input ends; returns whether it ended.
/// From a pipe or terminal (`eager`), whole lines are handed over as soon as a read brings
/// some, so a slow `tail -F` is published line by line rather than a megabyte at a time.
fn fill(reader: &mut dyn Read, buf: &mut Vec<u8>, eager: bool) -> io::Result<bool> {
    let target = buf.len().max(CHUNK - 1) + 1;
    while buf.len() < target {
        let start = buf.len();
        buf.resize(target, 0);
        match reader.read(&mut buf[start..]) {
            Ok(0) => {
                buf.truncate(start);
                return Ok(true);
            }
            Ok(n) => {
                buf.truncate(start + n);
                if eager && memchr::memchr(b'\n', &buf[start..]).is_some() {
                    return Ok(false);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(start),
            Err(e) => {
                buf.truncate(start);
                return Err(e);
            }
        }
    }
    Ok(false)
}

/// Publishes every valid line of `sources` through `sink`, in input order for each key.
pub fn replay(
    sources: Vec<Source>,
    decoder: Decoder,
    strict: bool,
    sink: &mut dyn Sink,
    stats: &Arc<Stats>,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    let names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
    let (batches, free) = start_input(sources, decoder, strict, stats, names.clone())?;
    while !shutdown.is_cancelled() {
        let batch = match next_batch(&batches, &names)? {
            Some(Next::Batch(batch)) => batch,
            Some(Next::Idle) => {
                sink.idle();
                continue;
            }
            None => return Ok(()),
        };
        let at = |event: &Event| format!("{}:{}", names[batch.source], event.line);
        let sent = if strict {
            send_one_by_one(&batch, sink, stats, &at)?
        } else {
            send_batch(&batch, sink, stats, &at)?
        };
        if sent == Sent::Cancelled {
            return Ok(());
        }
        // Recycling spares the input thread an allocation per batch.
        let _ = free.send(batch);
    }
    Ok(())
}

/// Starts the thread that reads and decodes `sources`; returns the channel of its batches
/// and the one that hands used batches back to it.
fn start_input(
    sources: Vec<Source>,
    decoder: Decoder,
    strict: bool,
    stats: &Arc<Stats>,
    names: Vec<String>,
) -> Result<(Receiver<Msg>, Sender<Batch>), Error> {
    let (batch_tx, batches) = mpsc::sync_channel(BATCHES_IN_FLIGHT);
    let (free_tx, free_rx) = mpsc::channel();
    let input = InputThread {
        decoder,
        strict,
        stats: Arc::clone(stats),
        names,
        batches: batch_tx,
        free: free_rx,
    };
    // Not joined: it may sit in a read on stdin; it ends when it sees the receiver gone.
    std::thread::Builder::new()
        .name("input".into())
        .spawn(move || input.run(sources))
        .map_err(|e| Error::Thread(e.to_string()))?;
    Ok((batches, free_tx))
}

/// What the input thread handed over within [`INPUT_WAIT`].
enum Next {
    Batch(Batch),
    /// Nothing yet: time for the producer's housekeeping.
    Idle,
}

/// The next batch, `Idle`, or `None` once the input is done; a read or `--strict` failure
/// of the input thread is the run's.
fn next_batch(batches: &Receiver<Msg>, names: &[String]) -> Result<Option<Next>, Error> {
    match batches.recv_timeout(INPUT_WAIT) {
        Ok(Msg::Batch(b)) => Ok(Some(Next::Batch(b))),
        Ok(Msg::Strict(e)) => Err(e),
        Ok(Msg::Failed {
            source,
            line,
            error,
        }) => Err(Error::Read {
            source_name: names[source].clone(),
            line,
            error,
        }),
        Err(RecvTimeoutError::Timeout) => Ok(Some(Next::Idle)),
        Err(RecvTimeoutError::Disconnected) => Ok(None),
    }
}

/// `--strict`: a refused event must stop everything after it, which a batch, sent
/// partition by partition, cannot promise; so the events go one by one.
fn send_one_by_one(
    batch: &Batch,
    sink: &mut dyn Sink,
    stats: &Stats,
    at: &dyn Fn(&Event) -> String,
) -> Result<Sent, Error> {
    for event in &batch.events {
        let payload = batch.get(&event.payload);
        match sink.send(batch.get(&event.key), payload)? {
            Sent::Queued => {}
            Sent::Cancelled => return Ok(Sent::Cancelled),
            Sent::Rejected(code) => {
                tracing::debug!(?code, "message refused");
                stats.bad_line(|| at(event), BadKind::Rejected.describe(), payload);
                return Err(strict_error(at(event), BadKind::Rejected, payload));
            }
        }
    }
    Ok(Sent::Queued)
}

/// The whole batch at once; a refused event is counted as a bad line and the rest go on.
fn send_batch(
    batch: &Batch,
    sink: &mut dyn Sink,
    stats: &Stats,
    at: &dyn Fn(&Event) -> String,
) -> Result<Sent, Error> {
    let records: Vec<Record> = batch
        .events
        .iter()
        .map(|e| Record {
            key: batch.get(&e.key),
            payload: batch.get(&e.payload),
        })
        .collect();
    sink.send_all(&records, &mut |i, code| {
        tracing::debug!(?code, "message refused");
        let event = &batch.events[i];
        stats.bad_line(
            || at(event),
            BadKind::Rejected.describe(),
            records[i].payload,
        );
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;
    use hotkeys::cli::Failure;
    use hotkeys::config::SourceConfig;

    use super::*;
    use crate::format::Format;

    /// Records what it is given.
    #[derive(Default)]
    struct Memory {
        events: Vec<(String, String)>,
    }

    impl Sink for Memory {
        fn send(&mut self, key: &[u8], payload: &[u8]) -> Result<Sent, Error> {
            self.events.push((
                String::from_utf8(key.to_vec()).unwrap(),
                String::from_utf8(payload.to_vec()).unwrap(),
            ));
            Ok(Sent::Queued)
        }

        fn finish(&mut self) -> Result<(), Error> {
            Ok(())
        }
    }

    fn run(files: &[PathBuf], strict: bool) -> (Memory, Arc<Stats>, Result<(), Error>) {
        let mut sink = Memory::default();
        let stats = Arc::new(Stats::default());
        let decoder = Decoder::new(Format::Auto, &SourceConfig::default());
        let result = Source::open_all(files).and_then(|sources| {
            replay(
                sources,
                decoder,
                strict,
                &mut sink,
                &stats,
                &CancellationToken::new(),
            )
        });
        (sink, stats, result)
    }

    fn json(id: u32) -> String {
        format!(
            r#"{{"uri_args":{{"productId":"{id}"}},"n":"{}"}}"#,
            "x".repeat(id as usize % 50)
        )
    }

    #[test]
    fn gzip_and_plain_files_are_read_alike_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.log");
        let gz = dir.path().join("b.log.1");
        std::fs::write(&plain, format!("{}\n{}\n", json(1), json(2))).unwrap();
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
        write!(enc, "{}\r\n{}", json(3), json(4)).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let (sink, _, result) = run(&[plain, gz], false);
        result.unwrap();
        let keys: Vec<&str> = sink.events.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["1", "2", "3", "4"]);
        assert_eq!(
            sink.events[2].1,
            json(3),
            "the \\r is not part of the event"
        );
    }

    #[test]
    fn lines_spanning_chunk_boundaries_arrive_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.log");
        let mut text = String::new();
        let n = 3 * CHUNK / 40;
        for i in 0..n {
            text.push_str(&json(i as u32));
            text.push('\n');
        }
        std::fs::write(&path, &text).unwrap();
        let (sink, stats, result) = run(&[path], false);
        result.unwrap();
        assert_eq!(sink.events.len(), n);
        assert_eq!(stats.bad.load(Relaxed), 0);
        assert!(
            sink.events
                .iter()
                .enumerate()
                .all(|(i, (k, p))| *k == i.to_string() && *p == json(i as u32))
        );
    }

    #[test]
    fn concatenated_gzip_members_are_all_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cat.gz");
        let mut bytes = Vec::new();
        for i in 0..2 {
            let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
            writeln!(enc, "{}", json(i)).unwrap();
            bytes.extend(enc.finish().unwrap());
        }
        std::fs::write(&path, bytes).unwrap();
        let (sink, _, result) = run(&[path], false);
        result.unwrap();
        assert_eq!(sink.events.len(), 2);
    }

    #[test]
    fn bad_lines_are_counted_with_file_and_line_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mixed.log");
        std::fs::write(
            &path,
            format!(
                "\u{feff}{}\ngarbage\n\n{{\"uri_args\":{{}}}}\n{}\n",
                json(1),
                json(2)
            ),
        )
        .unwrap();
        let (sink, stats, result) = run(std::slice::from_ref(&path), false);
        result.unwrap();
        assert_eq!(
            sink.events.len(),
            2,
            "the BOM does not spoil the first line"
        );
        assert_eq!(stats.bad.load(Relaxed), 1);
        assert_eq!(stats.no_key.load(Relaxed), 1);
        assert_eq!(stats.blank.load(Relaxed), 1);
        assert_eq!(stats.read.load(Relaxed), 5);
        let summary = crate::report::Summary::new(
            "replay",
            String::new(),
            None,
            Duration::ZERO,
            false,
            &stats,
        );
        assert_eq!(summary.bad_samples[0].at, format!("{}:2", path.display()));
        assert_eq!(
            summary.no_key_samples[0].at,
            format!("{}:4", path.display())
        );
    }

    #[test]
    fn strict_stops_at_the_first_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        std::fs::write(&path, format!("{}\nnope\n{}\n", json(1), json(2))).unwrap();
        let (sink, _, result) = run(std::slice::from_ref(&path), true);
        let err = result.unwrap_err();
        assert_eq!(err.exit_code(), hotkeys::cli::exit::USAGE);
        assert!(
            err.to_string().contains(&format!("{}:2", path.display())),
            "{err}"
        );
        assert_eq!(sink.events.len(), 1);
    }

    #[test]
    fn missing_file_is_a_usage_error_before_anything_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.log");
        std::fs::write(&ok, json(1)).unwrap();
        let (sink, _, result) = run(&[ok, dir.path().join("missing.log")], false);
        assert_eq!(result.unwrap_err().exit_code(), hotkeys::cli::exit::USAGE);
        assert!(sink.events.is_empty());
    }

    #[test]
    fn cancelled_replay_stops_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        std::fs::write(&path, json(1)).unwrap();
        let token = CancellationToken::new();
        token.cancel();
        let mut sink = Memory::default();
        let stats = Arc::new(Stats::default());
        let decoder = Decoder::new(Format::Auto, &SourceConfig::default());
        replay(
            Source::open_all(&[path]).unwrap(),
            decoder,
            false,
            &mut sink,
            &stats,
            &token,
        )
        .unwrap();
        assert!(sink.events.is_empty());
    }
}
