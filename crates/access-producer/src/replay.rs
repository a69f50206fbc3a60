//! `replay`: access events from files or stdin, published in input order.
//!
//! A reader thread does the I/O and gzip decoding and hands over chunks of whole lines
//! (about 1 MiB each, recycled) to the publishing thread, which splits, decodes and sends
//! them. The split keeps decompression off the publishing core, and lets the publishing
//! thread wait for input with a timeout: a blocked `read` on stdin (`tail -F … | replay -`)
//! neither delays shutdown nor stalls delivery reports.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use flate2::read::MultiGzDecoder;
use hotkeys::shutdown::CancellationToken;

use crate::error::Error;
use crate::format::{BadKind, Decoded, Decoder};
use crate::publish::{Sent, Sink};
use crate::report::Stats;

/// Bytes a chunk is filled to before it is handed over.
const CHUNK: usize = 1 << 20;
/// A line longer than this is handed over in pieces (each then counts as malformed) rather
/// than buffered without bound.
const MAX_LINE: usize = 16 << 20;
/// Chunks in flight between the reader and the publisher.
const CHUNKS_IN_FLIGHT: usize = 4;
/// How long the publisher waits for input before serving delivery reports and checking
/// for shutdown.
const INPUT_WAIT: Duration = Duration::from_millis(100);

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
        let raw: Box<dyn Read> = match self.input {
            Input::File(f) => Box::new(f),
            Input::Stdin => Box::new(io::stdin().lock()),
        };
        let mut buffered = BufReader::with_capacity(256 * 1024, raw);
        let head = buffered.fill_buf()?;
        if head.starts_with(&GZIP_MAGIC) {
            // Multi-member: concatenated .gz files (logrotate, `cat a.gz b.gz`) decode whole.
            Ok(Box::new(MultiGzDecoder::new(buffered)))
        } else {
            Ok(Box::new(buffered))
        }
    }
}

/// A message from the reader thread.
enum Chunk {
    /// Whole lines of source `source` (the last chunk of a source may lack its final `\n`).
    Lines { source: usize, data: Vec<u8> },
    Failed { source: usize, error: io::Error },
}

/// Reads every source in order into chunks that end at a line boundary.
fn read_sources(sources: Vec<Source>, chunks: &SyncSender<Chunk>, free: &Receiver<Vec<u8>>) {
    for (index, source) in sources.into_iter().enumerate() {
        let fail = |error| {
            let _ = chunks.send(Chunk::Failed {
                source: index,
                error,
            });
        };
        let mut reader = match source.reader() {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let mut buf = free.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK + 64 * 1024));
            buf.clear();
            buf.append(&mut carry);
            let eof = match fill(&mut reader, &mut buf) {
                Ok(eof) => eof,
                Err(e) => return fail(e),
            };
            if !eof {
                // Hand over whole lines only; the partial last line starts the next chunk.
                match memchr::memrchr(b'\n', &buf) {
                    Some(nl) => carry.extend_from_slice(&buf[nl + 1..]),
                    None if buf.len() < MAX_LINE => {
                        carry = buf;
                        continue;
                    }
                    None => {}
                }
                let keep = buf.len() - carry.len();
                buf.truncate(keep);
            }
            if !buf.is_empty()
                && chunks
                    .send(Chunk::Lines {
                        source: index,
                        data: buf,
                    })
                    .is_err()
            {
                return; // The publisher has stopped.
            }
            if eof {
                break;
            }
        }
    }
}

/// Reads until `buf` holds a chunk's worth or the input ends; returns whether it ended.
fn fill(reader: &mut dyn Read, buf: &mut Vec<u8>) -> io::Result<bool> {
    let target = buf.len().max(CHUNK - 1) + 1;
    while buf.len() < target {
        let start = buf.len();
        buf.resize(start + (target - start).max(64 * 1024), 0);
        match reader.read(&mut buf[start..]) {
            Ok(0) => {
                buf.truncate(start);
                return Ok(true);
            }
            Ok(n) => buf.truncate(start + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(start),
            Err(e) => {
                buf.truncate(start);
                return Err(e);
            }
        }
    }
    Ok(false)
}

/// Publishes every valid line of `sources` through `sink`, in input order.
pub fn replay(
    sources: Vec<Source>,
    mut decoder: Decoder,
    strict: bool,
    sink: &mut dyn Sink,
    stats: &Stats,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    let names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
    let mut line_numbers = vec![0u64; names.len()];
    let (chunk_tx, chunk_rx) = mpsc::sync_channel(CHUNKS_IN_FLIGHT);
    let (free_tx, free_rx) = mpsc::channel();
    // Not joined: it may sit in a read on stdin; it ends when it sees the receiver gone.
    std::thread::Builder::new()
        .name("reader".into())
        .spawn(move || read_sources(sources, &chunk_tx, &free_rx))
        .map_err(|e| Error::Thread(e.to_string()))?;

    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let chunk = match chunk_rx.recv_timeout(INPUT_WAIT) {
            Ok(c) => c,
            Err(RecvTimeoutError::Timeout) => {
                sink.idle();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        let (source, data) = match chunk {
            Chunk::Lines { source, data } => (source, data),
            Chunk::Failed { source, error } => {
                return Err(Error::Read {
                    source_name: names[source].clone(),
                    line: line_numbers[source],
                    error,
                });
            }
        };
        let name = &names[source];
        let line_no = &mut line_numbers[source];
        let mut rest = &data[..];
        while !rest.is_empty() {
            let (mut line, next) = match memchr::memchr(b'\n', rest) {
                Some(nl) => (&rest[..nl], &rest[nl + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            rest = next;
            *line_no += 1;
            stats.read.fetch_add(1, Relaxed);
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            if *line_no == 1
                && let Some(l) = line.strip_prefix(b"\xef\xbb\xbf")
            {
                line = l;
            }
            let at = || format!("{name}:{line_no}");
            let bad = match decoder.decode(line) {
                Decoded::Event { key, payload } => match sink.send(key, payload)? {
                    Sent::Queued => continue,
                    Sent::Cancelled => return Ok(()),
                    Sent::Rejected(code) => {
                        tracing::debug!(?code, "message refused");
                        BadKind::Rejected
                    }
                },
                Decoded::Blank => {
                    stats.blank.fetch_add(1, Relaxed);
                    continue;
                }
                Decoded::NoKey => {
                    stats.keyless(at, line);
                    continue;
                }
                Decoded::Bad(kind) => kind,
            };
            stats.bad_line(at, bad.describe(), line);
            if strict {
                return Err(Error::Strict {
                    at: at(),
                    why: bad.describe(),
                    text: String::from_utf8_lossy(&line[..line.len().min(160)]).escape_debug().to_string(),
                });
            }
        }
        // Recycling the buffer spares the reader an allocation per chunk.
        let _ = free_tx.send(data);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use flate2::write::GzEncoder;
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
            replay(sources, decoder, strict, &mut sink, &stats, &CancellationToken::new())
        });
        (sink, stats, result)
    }

    fn json(id: u32) -> String {
        format!(r#"{{"uri_args":{{"productId":"{id}"}},"n":"{}"}}"#, "x".repeat(id as usize % 50))
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
        assert_eq!(sink.events[2].1, json(3), "the \\r is not part of the event");
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
        assert!(sink.events.iter().enumerate().all(|(i, (k, p))| *k == i.to_string() && *p == json(i as u32)));
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
        std::fs::write(&path, format!("\u{feff}{}\ngarbage\n\n{{\"uri_args\":{{}}}}\n{}\n", json(1), json(2))).unwrap();
        let (sink, stats, result) = run(std::slice::from_ref(&path), false);
        result.unwrap();
        assert_eq!(sink.events.len(), 2, "the BOM does not spoil the first line");
        assert_eq!(stats.bad.load(Relaxed), 1);
        assert_eq!(stats.no_key.load(Relaxed), 1);
        assert_eq!(stats.blank.load(Relaxed), 1);
        assert_eq!(stats.read.load(Relaxed), 5);
        let summary = crate::report::Summary::new("replay", String::new(), None, Duration::ZERO, false, &stats);
        assert_eq!(summary.bad_samples[0].at, format!("{}:2", path.display()));
        assert_eq!(summary.no_key_samples[0].at, format!("{}:4", path.display()));
    }

    #[test]
    fn strict_stops_at_the_first_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        std::fs::write(&path, format!("{}\nnope\n{}\n", json(1), json(2))).unwrap();
        let (sink, _, result) = run(std::slice::from_ref(&path), true);
        let err = result.unwrap_err();
        assert_eq!(err.exit_code(), hotkeys::exit::USAGE);
        assert!(err.to_string().contains(&format!("{}:2", path.display())), "{err}");
        assert_eq!(sink.events.len(), 1);
    }

    #[test]
    fn missing_file_is_a_usage_error_before_anything_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.log");
        std::fs::write(&ok, json(1)).unwrap();
        let (sink, _, result) = run(&[ok, dir.path().join("missing.log")], false);
        assert_eq!(result.unwrap_err().exit_code(), hotkeys::exit::USAGE);
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
        let stats = Stats::default();
        let decoder = Decoder::new(Format::Auto, &SourceConfig::default());
        replay(Source::open_all(&[path]).unwrap(), decoder, false, &mut sink, &stats, &token).unwrap();
        assert!(sink.events.is_empty());
    }
}
