//! Access events and how the hot key is taken out of them.
//!
//! Two formats travel on the access topic (ARCHITECTURE.md): the OpenResty JSON event of the
//! existing nginx+Lua reporters, and a bare message key with an empty or ignored value. The
//! key is found with a JSON pointer from the topology, falling back to the message key.
//!
//! # The key rule
//!
//! One rule, used by hot-counter for every counter and by `access-producer replay` for both
//! input formats, so a request is keyed the same way whichever path it took
//! ([`key_of_json`]):
//!
//! - a string is its text: `"productId":"55"` → `55` (escapes undone);
//! - a number is its JSON text: `"productId":55` → `55`;
//! - an array is its first element, as nginx's `$arg_productId` takes the first of a
//!   repeated argument: `"productId":["55","56"]` (what the OpenResty reporter's
//!   `cjson.encode(ngx.req.get_uri_args())` writes for `?productId=55&productId=56`) → `55`;
//! - anything else (`null`, an object, a boolean, an empty string or array) is no key.
//!
//! A key longer than `source.max_key_bytes` is malformed ([`KeyError::TooLong`]): keys
//! come from the public internet, and every byte of a key is held in counters, hot lists
//! and checkpoints.
//!
//! Counting runs at millions of events per second per worker, so [`KeyPointer::extract`]
//! never builds a JSON tree: sonic-rs walks to the pointer with SIMD, skipping the values
//! around it, and the key is borrowed from the message when it has no escapes. What lies
//! after the key is not read, so an event cut short after its key still counts; one that is
//! not JSON up to the key is malformed.

use std::borrow::Cow;

/// Why an event yielded no key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("value is not JSON: {0}")]
    NotJson(String),
    #[error("no key at the pointer and no message key")]
    Missing,
    #[error("key of {bytes} bytes is over the limit of {limit} (source.max_key_bytes)")]
    TooLong { bytes: usize, limit: usize },
}

impl KeyError {
    /// A short, bounded label for metrics and log sampling.
    pub fn kind(&self) -> &'static str {
        match self {
            KeyError::NotJson(_) => "not_json",
            KeyError::Missing => "no_key",
            KeyError::TooLong { .. } => "key_too_long",
        }
    }
}

/// A parsed JSON pointer (RFC 6901) naming where the hot key sits in an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPointer {
    segments: Vec<String>,
    /// Longer keys are [`KeyError::TooLong`].
    max_bytes: usize,
}

impl KeyPointer {
    /// Parses `/a/b`; the empty string means "always use the message key". Keys of any
    /// length are accepted until [`max_bytes`](Self::max_bytes) sets a limit.
    pub fn parse(pointer: &str) -> KeyPointer {
        let segments = if pointer.is_empty() {
            Vec::new()
        } else {
            pointer
                .split('/')
                .skip(1)
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .collect()
        };
        KeyPointer {
            segments,
            max_bytes: usize::MAX,
        }
    }

    /// The same pointer, refusing keys longer than `limit` bytes.
    pub fn max_bytes(self, limit: usize) -> KeyPointer {
        KeyPointer {
            max_bytes: limit,
            ..self
        }
    }

    /// The pointer's segments, unescaped; none for the empty pointer.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The hot key of one Kafka message: the value at the pointer under the key rule (module
    /// docs), else the message key. An empty payload is the plain-key format; any other
    /// payload must be JSON.
    pub fn extract<'a>(
        &self,
        payload: Option<&'a [u8]>,
        message_key: Option<&'a [u8]>,
    ) -> Result<Cow<'a, str>, KeyError> {
        let key = self.find(payload, message_key)?;
        if key.len() > self.max_bytes {
            return Err(KeyError::TooLong {
                bytes: key.len(),
                limit: self.max_bytes,
            });
        }
        Ok(key)
    }

    fn find<'a>(
        &self,
        payload: Option<&'a [u8]>,
        message_key: Option<&'a [u8]>,
    ) -> Result<Cow<'a, str>, KeyError> {
        let from_key = || {
            message_key
                .filter(|k| !k.is_empty())
                .map(String::from_utf8_lossy)
                .ok_or(KeyError::Missing)
        };
        let payload = match payload {
            Some(p) if !p.iter().all(u8::is_ascii_whitespace) => p,
            _ => return from_key(),
        };
        if self.segments.is_empty() {
            // Still reject garbage: an event that is not JSON is malformed whatever the key.
            return match sonic_rs::from_slice::<serde::de::IgnoredAny>(payload) {
                Ok(_) => from_key(),
                Err(e) => Err(KeyError::NotJson(e.to_string())),
            };
        }
        let value =
            match sonic_rs::get_from_slice(payload, self.segments.iter().map(String::as_str)) {
                Ok(v) => v,
                Err(e) if e.is_not_found() || e.is_unmatched_type() => return from_key(),
                Err(e) => return Err(KeyError::NotJson(e.to_string())),
            };
        let raw = value.as_raw_str();
        // The value's text is the message's own bytes: borrow the key from the message.
        let key = match reborrow(payload, raw) {
            Some(raw) => key_of_json(raw)?,
            None => key_of_json(raw)?.map(|k| Cow::Owned(k.into_owned())),
        };
        match key {
            Some(key) => Ok(key),
            None => from_key(),
        }
    }
}

/// The key a JSON value stands for under the key rule (module docs), from the value's raw
/// text; `None` when it stands for no key.
pub fn key_of_json(raw: &str) -> Result<Option<Cow<'_, str>>, KeyError> {
    let key = match raw.as_bytes().first() {
        Some(b'"') => {
            let text = &raw[1..raw.len() - 1];
            if !text.contains('\\') {
                Cow::Borrowed(text)
            } else {
                serde_json::from_str::<String>(raw)
                    .map(Cow::Owned)
                    .map_err(|e| KeyError::NotJson(e.to_string()))?
            }
        }
        Some(b'-' | b'0'..=b'9') => Cow::Borrowed(raw),
        Some(b'[') => {
            let items: Vec<&serde_json::value::RawValue> =
                serde_json::from_str(raw).map_err(|e| KeyError::NotJson(e.to_string()))?;
            // Only a scalar first element: nested arrays are no key, as in nginx.
            return match items.first().map(|v| v.get()) {
                Some(first) if !first.starts_with('[') => key_of_json(first),
                _ => Ok(None),
            };
        }
        _ => return Ok(None),
    };
    Ok((!key.is_empty()).then_some(key))
}

/// `part` as a borrow of `payload` when it points into it (sonic-rs hands out views of the
/// input tied to its own lifetime; the bytes are the message's).
fn reborrow<'a>(payload: &'a [u8], part: &str) -> Option<&'a str> {
    let start = (part.as_ptr() as usize).checked_sub(payload.as_ptr() as usize)?;
    let bytes = payload.get(start..start + part.len())?;
    std::str::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"request_module":"product_detail_info","headers":{"host":"shop","user-agent":"curl"},"uri_args":{"productId":"11","shopId":"1"},"http_version":1.1,"method":"GET","raw_reader":"GET /product?productId=11&shopId=1 HTTP/1.1\r\n","body_data":null}"#;

    fn key(pointer: &str, payload: &str, message_key: Option<&str>) -> Result<String, KeyError> {
        KeyPointer::parse(pointer)
            .extract(Some(payload.as_bytes()), message_key.map(str::as_bytes))
            .map(Cow::into_owned)
    }

    #[test]
    fn openresty_event_yields_the_product_id_borrowed() {
        let p = KeyPointer::parse("/uri_args/productId");
        let k = p.extract(Some(EVENT.as_bytes()), None).unwrap();
        assert_eq!(k, "11");
        assert!(matches!(k, Cow::Borrowed(_)));
    }

    #[test]
    fn numeric_values_become_their_text() {
        assert_eq!(
            key(
                "/uri_args/productId",
                r#"{"uri_args":{"productId":42}}"#,
                None
            )
            .unwrap(),
            "42"
        );
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        assert_eq!(key("/k", r#"{"k":"a\"b"}"#, None).unwrap(), "a\"b");
    }

    #[test]
    fn missing_or_null_value_falls_back_to_the_message_key() {
        assert_eq!(
            key(
                "/uri_args/productId",
                r#"{"uri_args":{"shopId":"1"}}"#,
                Some("7")
            )
            .unwrap(),
            "7"
        );
        assert_eq!(
            key(
                "/uri_args/productId",
                r#"{"uri_args":{"productId":null}}"#,
                Some("8")
            )
            .unwrap(),
            "8"
        );
        assert_eq!(
            key("/uri_args/productId", r#"{"uri_args":null}"#, Some("9")).unwrap(),
            "9"
        );
    }

    #[test]
    fn object_at_the_pointer_is_not_a_key() {
        assert_eq!(key("/uri_args", EVENT, Some("k")).unwrap(), "k");
    }

    #[test]
    fn no_value_and_no_message_key_is_missing() {
        assert_eq!(
            key("/uri_args/productId", "{}", None),
            Err(KeyError::Missing)
        );
        assert_eq!(
            key("/uri_args/productId", "{}", Some("")),
            Err(KeyError::Missing)
        );
    }

    #[test]
    fn empty_payload_is_the_plain_key_format() {
        let p = KeyPointer::parse("/uri_args/productId");
        assert_eq!(p.extract(Some(b""), Some(b"5")).unwrap(), "5");
        assert_eq!(p.extract(None, Some(b"6")).unwrap(), "6");
    }

    #[test]
    fn garbage_payload_is_not_json() {
        let e = key("/uri_args/productId", "GET /x HTTP/1.1", Some("1")).unwrap_err();
        assert_eq!(e.kind(), "not_json");
        let e = key("/uri_args/productId", r#"{"uri_args":{"shop"#, None).unwrap_err();
        assert_eq!(e.kind(), "not_json");
        let e = key("", "not json", Some("1")).unwrap_err();
        assert_eq!(e.kind(), "not_json");
    }

    #[test]
    fn escaped_segments_follow_rfc6901() {
        assert_eq!(
            key("/a~1b/c~0d", r#"{"a/b":{"c~d":"z"}}"#, None).unwrap(),
            "z"
        );
    }

    #[test]
    fn a_repeated_argument_is_keyed_by_its_first_value() {
        // What the OpenResty reporter writes for ?productId=55&productId=56.
        let event = r#"{"uri_args":{"productId":["55","56"],"shopId":"1"}}"#;
        assert_eq!(key("/uri_args/productId", event, Some("m")).unwrap(), "55");
        assert_eq!(key("/k", r#"{"k":[7,8]}"#, None).unwrap(), "7");
        assert_eq!(key("/k", r#"{"k":["a\"b"]}"#, None).unwrap(), "a\"b");
    }

    #[test]
    fn an_empty_or_nested_array_is_no_key() {
        assert_eq!(key("/k", r#"{"k":[]}"#, Some("m")).unwrap(), "m");
        assert_eq!(key("/k", r#"{"k":[["1"]]}"#, Some("m")).unwrap(), "m");
        assert_eq!(key("/k", r#"{"k":[null]}"#, None), Err(KeyError::Missing));
    }

    #[test]
    fn keys_over_the_limit_are_too_long_from_the_event_or_the_message_key() {
        let p = KeyPointer::parse("/k").max_bytes(4);
        assert_eq!(p.extract(Some(br#"{"k":"1234"}"#), None).unwrap(), "1234");
        let e = p.extract(Some(br#"{"k":"12345"}"#), None).unwrap_err();
        assert_eq!(e, KeyError::TooLong { bytes: 5, limit: 4 });
        assert_eq!(e.kind(), "key_too_long");
        let e = p.extract(None, Some(b"123456")).unwrap_err();
        assert_eq!(e.kind(), "key_too_long");
    }

    #[test]
    fn an_array_where_an_object_is_expected_falls_back_to_the_message_key() {
        assert_eq!(
            key("/uri_args/productId", r#"{"uri_args":["1"]}"#, Some("m")).unwrap(),
            "m"
        );
    }
}
