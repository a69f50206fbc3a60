//! Replication operations: a change to one cache key, to be made in the other data centre,
//! and its self-describing JSON line, one list element each:
//!
//! ```json
//! {"op":"set","key":"product:11","value":"{\"id\":11}","ttl_ms":3600000,"at_ms":1700000000000}
//! {"op":"set","key":"blob:1","value_b64":"AAEC/w==","at_ms":1700000000000}
//! {"op":"delete","key":"product:11","at_ms":1700000000000}
//! ```
//!
//! `value` carries a UTF-8 value as is, `value_b64` any other value in standard base64;
//! `ttl_ms` is the TTL the writer set (absent: no expiry) and `at_ms` the enqueue time, which
//! dates the TTL and measures lag.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

/// A change to one cache key, to be made in the other data centre.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Set {
        key: String,
        value: Vec<u8>,
        /// TTL in milliseconds; `None` keeps the key without expiry.
        ttl_ms: Option<u64>,
    },
    Delete {
        key: String,
    },
}

impl Op {
    /// A `set` with an optional TTL.
    pub fn set(key: impl Into<String>, value: impl Into<Vec<u8>>, ttl: Option<Duration>) -> Op {
        Op::Set {
            key: key.into(),
            value: value.into(),
            ttl_ms: ttl.map(|t| t.as_millis().min(u128::from(u64::MAX)) as u64),
        }
    }

    /// A `delete`.
    pub fn delete(key: impl Into<String>) -> Op {
        Op::Delete { key: key.into() }
    }

    /// The key the operation changes.
    pub fn key(&self) -> &str {
        match self {
            Op::Set { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// An operation as it waits in the queue and travels: the operation and when it was queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedOp {
    pub op: Op,
    /// Milliseconds since the Unix epoch when the operation was queued.
    pub at_ms: u64,
}

/// Why a queue element or request body is not a valid operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OpError(pub String);

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Set,
    Delete,
}

/// The JSON form of [`QueuedOp`]; borrowed on decode where the JSON has no escapes.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireOp<'a> {
    op: Kind,
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    value: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    value_b64: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl_ms: Option<u64>,
    at_ms: u64,
}

impl QueuedOp {
    /// The operation stamped with the current time.
    pub fn now(op: Op) -> QueuedOp {
        QueuedOp {
            op,
            at_ms: now_ms(),
        }
    }

    /// The JSON line stored in the queue.
    pub fn to_json(&self) -> String {
        let wire = match &self.op {
            Op::Set { key, value, ttl_ms } => {
                let (value, value_b64) = match std::str::from_utf8(value) {
                    Ok(text) => (Some(Cow::Borrowed(text)), None),
                    Err(_) => (None, Some(Cow::Owned(BASE64.encode(value)))),
                };
                WireOp {
                    op: Kind::Set,
                    key: Cow::Borrowed(key),
                    value,
                    value_b64,
                    ttl_ms: *ttl_ms,
                    at_ms: self.at_ms,
                }
            }
            Op::Delete { key } => WireOp {
                op: Kind::Delete,
                key: Cow::Borrowed(key),
                value: None,
                value_b64: None,
                ttl_ms: None,
                at_ms: self.at_ms,
            },
        };
        serde_json::to_string(&wire).expect("an operation always serializes")
    }

    /// Reads one JSON line; the error says what is wrong with it.
    pub fn from_json(bytes: &[u8]) -> Result<QueuedOp, OpError> {
        let wire: WireOp<'_> = serde_json::from_slice(bytes).map_err(|e| OpError(e.to_string()))?;
        QueuedOp::from_wire(wire)
    }

    fn from_wire(wire: WireOp<'_>) -> Result<QueuedOp, OpError> {
        if wire.key.is_empty() {
            return Err(OpError("empty key".into()));
        }
        let op = match wire.op {
            Kind::Set => {
                let value = match (wire.value, wire.value_b64) {
                    (Some(v), None) => v.into_owned().into_bytes(),
                    (None, Some(b)) => BASE64
                        .decode(b.as_bytes())
                        .map_err(|e| OpError(format!("value_b64 is not base64: {e}")))?,
                    (Some(_), Some(_)) => {
                        return Err(OpError("set has both value and value_b64".into()));
                    }
                    (None, None) => return Err(OpError("set has no value".into())),
                };
                Op::Set {
                    key: wire.key.into_owned(),
                    value,
                    ttl_ms: wire.ttl_ms,
                }
            }
            Kind::Delete => {
                if wire.value.is_some() || wire.value_b64.is_some() || wire.ttl_ms.is_some() {
                    return Err(OpError("delete carries a value or ttl_ms".into()));
                }
                Op::Delete {
                    key: wire.key.into_owned(),
                }
            }
        };
        Ok(QueuedOp {
            op,
            at_ms: wire.at_ms,
        })
    }
}

/// A list of operations in the JSON form of the queue, e.g. the `ops` array of a request.
/// Every element is checked; the error names the index of the first bad one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpList(pub Vec<QueuedOp>);

impl<'de> Deserialize<'de> for OpList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<OpList, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OpList;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of operations")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OpList, A::Error> {
                let mut ops = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(10_000));
                while let Some(wire) = seq
                    .next_element::<WireOp<'de>>()
                    .map_err(|e| serde::de::Error::custom(format!("ops[{}]: {e}", ops.len())))?
                {
                    let op = QueuedOp::from_wire(wire).map_err(|e| {
                        serde::de::Error::custom(format!("ops[{}]: {e}", ops.len()))
                    })?;
                    ops.push(op);
                }
                Ok(OpList(ops))
            }
        }
        d.deserialize_seq(Visitor)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(op: Op) -> (String, QueuedOp) {
        let queued = QueuedOp { op, at_ms: 42 };
        let json = queued.to_json();
        let back = QueuedOp::from_json(json.as_bytes()).unwrap();
        assert_eq!(back, queued);
        (json, back)
    }

    #[test]
    fn utf8_values_travel_as_text() {
        let (json, _) = round_trip(Op::set(
            "product:1",
            "{\"name\":\"café\"}",
            Some(Duration::from_secs(60)),
        ));
        assert_eq!(
            json,
            r#"{"op":"set","key":"product:1","value":"{\"name\":\"café\"}","ttl_ms":60000,"at_ms":42}"#
        );
    }

    #[test]
    fn non_utf8_values_travel_as_base64() {
        let (json, _) = round_trip(Op::set("blob:1", vec![0u8, 1, 2, 0xff], None));
        assert_eq!(
            json,
            r#"{"op":"set","key":"blob:1","value_b64":"AAEC/w==","at_ms":42}"#
        );
    }

    #[test]
    fn deletes_carry_only_the_key() {
        let (json, _) = round_trip(Op::delete("product:1"));
        assert_eq!(json, r#"{"op":"delete","key":"product:1","at_ms":42}"#);
    }

    #[test]
    fn malformed_operations_say_what_is_wrong() {
        for (line, expected) in [
            (r#"{"op":"set","key":"k","at_ms":1}"#, "no value"),
            (
                r#"{"op":"set","key":"k","value":"a","value_b64":"YQ==","at_ms":1}"#,
                "both",
            ),
            (
                r#"{"op":"set","key":"k","value_b64":"!!","at_ms":1}"#,
                "base64",
            ),
            (
                r#"{"op":"delete","key":"k","value":"a","at_ms":1}"#,
                "delete carries",
            ),
            (
                r#"{"op":"set","key":"","value":"a","at_ms":1}"#,
                "empty key",
            ),
            (r#"{"op":"rename","key":"k","at_ms":1}"#, "unknown variant"),
            (r#"{"op":"set","key":"k","value":"a"}"#, "at_ms"),
            (
                r#"{"op":"set","key":"k","value":"a","at_ms":1,"x":1}"#,
                "unknown field",
            ),
            ("not json", "expected"),
        ] {
            let err = QueuedOp::from_json(line.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{line}: {err}");
        }
    }

    #[test]
    fn an_op_list_names_the_index_of_the_first_bad_operation() {
        let body = r#"[{"op":"delete","key":"a","at_ms":1},{"op":"set","key":"b","at_ms":1}]"#;
        let err = serde_json::from_str::<OpList>(body)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ops[1]") && err.contains("no value"), "{err}");
        let ok = r#"[{"op":"delete","key":"a","at_ms":1}]"#;
        assert_eq!(serde_json::from_str::<OpList>(ok).unwrap().0.len(), 1);
    }

    #[test]
    fn escaped_keys_and_values_decode() {
        let line = br#"{"op":"set","key":"k\"1","value":"line\nbreak","at_ms":1}"#;
        let op = QueuedOp::from_json(line).unwrap();
        assert_eq!(op.op, Op::set("k\"1", "line\nbreak", None));
    }
}
