//! The HTTP contract between `cache-sync ship` and `cache-sync receive`.
//!
//! One request carries one batch: `POST` of a JSON body
//! `{"stream":"FIFO:MEM@…","stamp":17,"wait_ms":30000,"ops":[<queue elements, as stored>]}`
//! (`wait_ms`, optional: how long the receiver may hold a batch whose predecessors have
//! not arrived yet, since the shipper sends several at once; 0 refuses a gap at once),
//! optionally
//! compressed (`Content-Encoding: zstd` or `gzip`), signed with
//! `X-Hotkeys-Signature: sha256=<hex HMAC-SHA256 of the body as sent>` under the shared
//! secret. Signing the bytes on the wire lets the receiver refuse a forged request before it
//! spends anything on decompressing it.
//!
//! Answers: 200 `{"status":"applied"|"duplicate","stamp":17,"ops":1000}`; errors carry
//! `{"error":"…"}` with 400 (malformed), 401 (signature), 409 (stamp gap), 413 (too large),
//! 415 (unknown encoding) or 503 (the receiver's Redis failed; try again).

use std::io::Read;

use hmac::{Hmac, Mac};
use hotkeys::config::SyncCompression;
use hotkeys::sync_queue::OpList;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

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
    wait_ms: u64,
    ops: impl ExactSizeIterator<Item = &'a [u8]> + Clone,
) -> Vec<u8> {
    let stream = serde_json::to_string(stream).expect("a string always serializes");
    let len = ops.clone().map(|op| op.len() + 1).sum::<usize>() + stream.len() + 64;
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(b"{\"stream\":");
    body.extend_from_slice(stream.as_bytes());
    body.extend_from_slice(
        format!(",\"stamp\":{stamp},\"wait_ms\":{wait_ms},\"ops\":[").as_bytes(),
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub stream: String,
    pub stamp: u64,
    /// How long the batch may wait for the stamps before it (milliseconds).
    #[serde(default)]
    pub wait_ms: u64,
    pub ops: OpList,
}

impl BatchRequest {
    /// Reads a body, checking every operation; the error is the first problem found.
    pub fn parse(body: &[u8]) -> Result<BatchRequest, String> {
        let request: BatchRequest = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if request.stream.is_empty() || request.stream.len() > 256 {
            return Err("stream: expected 1 to 256 characters".into());
        }
        if request.stream.chars().any(char::is_control) {
            return Err("stream: control characters are not allowed".into());
        }
        if request.stamp == 0 {
            return Err("stamp: expected at least 1".into());
        }
        Ok(request)
    }
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
        let body = encode_batch("FIFO:MEM@\"x\"", 7, 250, ops.iter().copied());
        let request = BatchRequest::parse(&body).unwrap();
        assert_eq!(request.stream, "FIFO:MEM@\"x\"");
        assert_eq!((request.stamp, request.wait_ms), (7, 250));
        assert_eq!(request.ops.0.len(), 2);
        let empty = BatchRequest::parse(&encode_batch("s", 1, 0, std::iter::empty())).unwrap();
        assert!(empty.ops.0.is_empty());
    }

    #[test]
    fn a_malformed_batch_names_its_first_error() {
        let body = br#"{"stream":"s","stamp":1,"ops":[{"op":"set","key":"a","at_ms":1}]}"#;
        let err = BatchRequest::parse(body).unwrap_err();
        assert!(err.contains("ops[0]") && err.contains("no value"), "{err}");
        let err = BatchRequest::parse(br#"{"stream":"s","stamp":0,"ops":[]}"#).unwrap_err();
        assert!(err.contains("stamp"), "{err}");
        let err = BatchRequest::parse(br#"{"stream":"s","ops":[]}"#).unwrap_err();
        assert!(err.contains("stamp"), "{err}");
    }

    #[test]
    fn compressed_bodies_round_trip() {
        let op: &[u8] = br#"{"op":"delete","key":"a","at_ms":2}"#;
        let body = encode_batch("s", 1, 0, std::iter::once(op));
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
