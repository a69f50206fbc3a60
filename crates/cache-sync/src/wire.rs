//! The HTTP contract between `cache-sync ship` and `cache-sync receive`.
//!
//! A shipper first asks the receiver for a stream: `POST /sync/streams` of
//! `{"queue":"FIFO:MEM","previous":"FIFO:MEM@…"|null,"sent_ms":…}`, answered
//! `{"stream":"FIFO:MEM@<random hex>"}`. The receiver records the streams it issued and
//! closes `previous`, so a batch of a stream it never issued (its records were lost) or of
//! a stream the shipper left behind is refused, whoever sends it.
//!
//! Then one request carries one batch: `POST /sync` of a JSON body
//! `{"stream":"FIFO:MEM@…","stamp":17,"sent_ms":…,"wait_ms":30000,"ops":[<queue elements, as stored>]}`
//! (`wait_ms`, optional: how long the receiver may hold a batch whose predecessors have
//! not arrived yet, since the shipper sends several at once; 0 refuses a gap at once;
//! `sent_ms`: when the body was signed, refused once older than the receiver's
//! `sync.max_skew`), optionally compressed (`Content-Encoding: zstd` or `gzip`), signed with
//! `X-Hotkeys-Signature: sha256=<hex HMAC-SHA256 of the body as sent>` under the shared
//! secret. Signing the bytes on the wire lets the receiver refuse a forged request before it
//! spends anything on decompressing it.
//!
//! Answers: 200 `{"status":"applied"|"duplicate","stamp":17,"ops":1000}`; errors carry
//! `{"error":"…"}` with 400 (malformed), 401 (signature, or signed too long ago), 409 (stamp
//! gap; with `"reset":"<reason>"` when the shipper must start a new stream), 413 (too large),
//! 415 (unknown encoding) or 503 (the receiver's Redis failed; try again).

use std::io::Read;

use std::time::Duration;

use hmac::{Hmac, Mac};
use hotkeys::config::SyncCompression;
use hotkeys::sync::OpList;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// Header holding the body's signature.
pub const SIGNATURE_HEADER: &str = "x-hotkeys-signature";

const SIGNATURE_PREFIX: &str = "sha256=";

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!(
        "{SIGNATURE_PREFIX}{}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Whether `header` is the signature of `body` under `secret` (compared in constant time).
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(digest) = header
        .strip_prefix(SIGNATURE_PREFIX)
        .and_then(|h| hex::decode(h.trim()).ok())
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&digest).is_ok()
}

/// The body of a batch, built around the queue elements without decoding them again: they
/// are JSON objects already, and the shipper has checked each one.
pub fn encode_batch<'a>(
    stream: &str,
    stamp: u64,
    sent_ms: u64,
    wait_ms: u64,
    ops: impl ExactSizeIterator<Item = &'a [u8]> + Clone,
) -> Vec<u8> {
    let stream = serde_json::to_string(stream).expect("a string always serializes");
    let len = ops.clone().map(|op| op.len() + 1).sum::<usize>() + stream.len() + 64;
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(b"{\"stream\":");
    body.extend_from_slice(stream.as_bytes());
    body.extend_from_slice(
        format!(",\"stamp\":{stamp},\"sent_ms\":{sent_ms},\"wait_ms\":{wait_ms},\"ops\":[")
            .as_bytes(),
    );
    for (i, op) in ops.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(op);
    }
    body.extend_from_slice(b"]}");
    body
}

/// A decoded batch request.
#[derive(Debug)]
pub struct BatchRequest {
    pub stream: String,
    pub stamp: u64,
    /// When the shipper signed the body (milliseconds since the Unix epoch).
    pub sent_ms: u64,
    /// How long the batch may wait for the stamps before it (milliseconds).
    pub wait_ms: u64,
    pub ops: OpList,
    /// What tells this batch from another one under the same stamp: see [`ops_digest`].
    pub digest: String,
}

/// The body as it is read: `ops` kept as text first, to digest the bytes the shipper sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch<'a> {
    stream: String,
    stamp: u64,
    sent_ms: u64,
    #[serde(default)]
    wait_ms: u64,
    #[serde(borrow)]
    ops: &'a RawValue,
}

impl BatchRequest {
    /// Reads a body, checking every operation; the error is the first problem found.
    pub fn parse(body: &[u8]) -> Result<BatchRequest, String> {
        let raw: RawBatch<'_> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if raw.stream.is_empty() || raw.stream.len() > 256 {
            return Err("stream: expected 1 to 256 characters".into());
        }
        if raw.stream.chars().any(char::is_control) {
            return Err("stream: control characters are not allowed".into());
        }
        if raw.stamp == 0 {
            return Err("stamp: expected at least 1".into());
        }
        let ops: OpList = serde_json::from_str(raw.ops.get()).map_err(|e| e.to_string())?;
        Ok(BatchRequest {
            digest: ops_digest(raw.ops.get().as_bytes()),
            stream: raw.stream,
            stamp: raw.stamp,
            sent_ms: raw.sent_ms,
            wait_ms: raw.wait_ms,
            ops,
        })
    }
}

/// A digest of a batch's operations as sent (the `ops` array's text): a shipper re-sends
/// a batch byte for byte, so a stamp that comes back with another digest is a stamp
/// re-used for other operations. 128 bits of SHA-256, in hex.
pub fn ops_digest(ops: &[u8]) -> String {
    hex::encode(&Sha256::digest(ops)[..16])
}

/// Why a refused request must be followed by a new stream, in the `reset` of an answer and
/// in the label of `hotkeys_sync_resets_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetReason {
    /// The receiver had applied this stamp with other operations: the sender's state went
    /// back (a failover to a replica that lagged, a restore) and re-used stamps.
    ReusedStamp,
    /// The receiver has no record of the stream: it lost its state (flushed, or failed
    /// over to a replica without the records).
    UnknownStream,
    /// The stream was left for a newer one (by this shipper or another on the same queue).
    ClosedStream,
    /// The shipper found its own queue state behind what it had seen (detected on the
    /// sending side, never answered by a receiver).
    SenderWentBack,
    /// The queue's meta hash is gone: the sending state node lost its data (sending side).
    SenderLostState,
}

impl ResetReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::ReusedStamp => "reused_stamp",
            ResetReason::UnknownStream => "unknown_stream",
            ResetReason::ClosedStream => "closed_stream",
            ResetReason::SenderWentBack => "sender_went_back",
            ResetReason::SenderLostState => "sender_lost_state",
        }
    }
}

/// `POST /sync/streams`: a shipper asks for a new stream of `queue`, leaving `previous`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRequest {
    pub queue: String,
    #[serde(default)]
    pub previous: Option<String>,
    pub sent_ms: u64,
}

/// The answer to a [`StreamRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamReply {
    pub stream: String,
}

/// How far `sent_ms` is from `now_ms`, if further than `max_skew` either way: a body signed
/// that long ago is a replay or comes from a clock that is off.
pub fn skewed(sent_ms: u64, now_ms: u64, max_skew: Duration) -> Option<Duration> {
    let apart = Duration::from_millis(sent_ms.abs_diff(now_ms));
    (apart > max_skew).then_some(apart)
}

/// What the receiver did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Applied now.
    Applied,
    /// Applied before; acknowledged again without applying.
    Duplicate,
}

/// The answer to a batch the receiver accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchReply {
    pub status: Outcome,
    pub stamp: u64,
    pub ops: usize,
}

/// The answer to a refused request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: String,
    /// Set on a 409 after which the shipper must start a new stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<ResetReason>,
}

/// `Content-Encoding` of a compression, `None` for plain bodies.
pub fn content_encoding(compression: SyncCompression) -> Option<&'static str> {
    match compression {
        SyncCompression::Zstd => Some("zstd"),
        SyncCompression::Gzip => Some("gzip"),
        SyncCompression::None => None,
    }
}

/// Compresses a body for sending.
pub fn compress(body: Vec<u8>, compression: SyncCompression) -> std::io::Result<Vec<u8>> {
    match compression {
        // Level 1: the link is fast and the queue elements compress well even so.
        SyncCompression::Zstd => zstd::bulk::compress(&body, 1),
        SyncCompression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut encoder, &body)?;
            encoder.finish()
        }
        SyncCompression::None => Ok(body),
    }
}

/// Why a request body could not be decompressed.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("body is larger than {0} bytes once decompressed")]
    TooLarge(usize),
    #[error("unsupported Content-Encoding `{0}` (expected zstd, gzip or identity)")]
    Unsupported(String),
    #[error("body is not valid {encoding}: {source}")]
    Corrupt {
        encoding: &'static str,
        source: std::io::Error,
    },
}

/// Decompresses a body, never producing more than `limit` bytes.
pub fn decompress(
    body: &[u8],
    encoding: Option<&str>,
    limit: usize,
) -> Result<Vec<u8>, DecodeError> {
    let (name, reader): (&'static str, Box<dyn Read + '_>) =
        match encoding.map(str::trim).filter(|e| !e.is_empty()) {
            None | Some("identity") => {
                if body.len() > limit {
                    return Err(DecodeError::TooLarge(limit));
                }
                return Ok(body.to_vec());
            }
            Some(e) if e.eq_ignore_ascii_case("zstd") => (
                "zstd",
                Box::new(zstd::stream::read::Decoder::new(body).map_err(|source| {
                    DecodeError::Corrupt {
                        encoding: "zstd",
                        source,
                    }
                })?),
            ),
            Some(e) if e.eq_ignore_ascii_case("gzip") => {
                ("gzip", Box::new(flate2::read::GzDecoder::new(body)))
            }
            Some(other) => return Err(DecodeError::Unsupported(other.to_string())),
        };
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    // One byte past the limit tells "exactly at the limit" from "over it".
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|source| DecodeError::Corrupt {
            encoding: name,
            source,
        })?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge(limit));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_body_and_secret() {
        let sig = sign(b"secret", b"body");
        assert!(sig.starts_with("sha256="));
        assert!(verify(b"secret", b"body", &sig));
        assert!(!verify(b"secret", b"body!", &sig));
        assert!(!verify(b"other", b"body", &sig));
        assert!(!verify(b"secret", b"body", "sha256=zz"));
        assert!(!verify(b"secret", b"body", &sig[7..]));
    }

    #[test]
    fn an_encoded_batch_parses_back() {
        let ops: [&[u8]; 2] = [
            br#"{"op":"set","key":"a","value":"1","ttl_ms":5,"at_ms":1}"#,
            br#"{"op":"delete","key":"a","at_ms":2}"#,
        ];
        let body = encode_batch("FIFO:MEM@\"x\"", 7, 99, 250, ops.iter().copied());
        let request = BatchRequest::parse(&body).unwrap();
        assert_eq!(request.stream, "FIFO:MEM@\"x\"");
        assert_eq!(
            (request.stamp, request.sent_ms, request.wait_ms),
            (7, 99, 250)
        );
        assert_eq!(request.ops.0.len(), 2);
        let empty = BatchRequest::parse(&encode_batch("s", 1, 1, 0, std::iter::empty())).unwrap();
        assert!(empty.ops.0.is_empty());
    }

    #[test]
    fn a_malformed_batch_names_its_first_error() {
        let body =
            br#"{"stream":"s","stamp":1,"sent_ms":1,"ops":[{"op":"set","key":"a","at_ms":1}]}"#;
        let err = BatchRequest::parse(body).unwrap_err();
        assert!(err.contains("ops[0]") && err.contains("no value"), "{err}");
        let err =
            BatchRequest::parse(br#"{"stream":"s","stamp":0,"sent_ms":1,"ops":[]}"#).unwrap_err();
        assert!(err.contains("stamp"), "{err}");
        let err = BatchRequest::parse(br#"{"stream":"s","sent_ms":1,"ops":[]}"#).unwrap_err();
        assert!(err.contains("stamp"), "{err}");
    }

    #[test]
    fn the_digest_tells_a_resent_batch_from_other_operations_under_its_stamp() {
        let a: &[u8] = br#"{"op":"delete","key":"a","at_ms":2}"#;
        let b: &[u8] = br#"{"op":"delete","key":"b","at_ms":2}"#;
        let digest = |sent_ms, wait_ms, op| {
            let body = encode_batch("s", 3, sent_ms, wait_ms, std::iter::once(op));
            BatchRequest::parse(&body).unwrap().digest
        };
        assert_eq!(digest(1, 0, a), digest(2, 500, a), "re-sent later");
        assert_ne!(digest(1, 0, a), digest(1, 0, b));
    }

    #[test]
    fn a_body_signed_more_than_max_skew_away_either_way_is_refused() {
        let max = Duration::from_secs(300);
        assert_eq!(skewed(1_000_000, 1_000_000 + 300_000, max), None);
        assert_eq!(
            skewed(1_000_000, 1_000_000 + 300_001, max),
            Some(Duration::from_millis(300_001))
        );
        assert!(skewed(1_000_000 + 400_000, 1_000_000, max).is_some());
    }

    #[test]
    fn compressed_bodies_round_trip() {
        let op: &[u8] = br#"{"op":"delete","key":"a","at_ms":2}"#;
        let body = encode_batch("s", 1, 1, 0, std::iter::once(op));
        for compression in [
            SyncCompression::Zstd,
            SyncCompression::Gzip,
            SyncCompression::None,
        ] {
            let sent = compress(body.clone(), compression).unwrap();
            let back = decompress(&sent, content_encoding(compression), 1 << 20).unwrap();
            assert_eq!(back, body, "{compression:?}");
        }
    }

    #[test]
    fn decompression_stops_at_the_limit() {
        let big = vec![b'a'; 100_000];
        for compression in [
            SyncCompression::Zstd,
            SyncCompression::Gzip,
            SyncCompression::None,
        ] {
            let sent = compress(big.clone(), compression).unwrap();
            let encoding = content_encoding(compression);
            assert!(matches!(
                decompress(&sent, encoding, 99_999),
                Err(DecodeError::TooLarge(_))
            ));
            assert_eq!(decompress(&sent, encoding, 100_000).unwrap().len(), 100_000);
        }
    }

    #[test]
    fn corrupt_and_unknown_encodings_are_refused() {
        assert!(matches!(
            decompress(b"not zstd", Some("zstd"), 1000),
            Err(DecodeError::Corrupt { .. })
        ));
        assert!(matches!(
            decompress(b"not gzip", Some("gzip"), 1000),
            Err(DecodeError::Corrupt { .. })
        ));
        assert!(matches!(
            decompress(b"x", Some("br"), 1000),
            Err(DecodeError::Unsupported(_))
        ));
    }
}
