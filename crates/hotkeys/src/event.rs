//! Access events and how the hot key is taken out of them.
//!
//! Two formats travel on the access topic (DESIGN.md): the OpenResty JSON event of the
//! existing nginx+Lua reporters, and a bare message key with an empty or ignored value. The
//! key is found with a JSON pointer from the topology, falling back to the message key.
//!
//! Counting runs at millions of events per second per worker, so [`KeyPointer::extract`]
//! never builds a JSON tree: sonic-rs walks to the pointer with SIMD, skipping the values
//! around it, and the key is borrowed from the message when it has no escapes. What lies
//! after the key is not read, so an event cut short after its key still counts; one that is
//! not JSON up to the key is malformed.

use std::borrow::Cow;

use sonic_rs::JsonValueTrait;

/// Why an event yielded no key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("value is not JSON: {0}")]
    NotJson(String),
    #[error("no key at the pointer and no message key")]
    Missing,
}

impl KeyError {
    /// A short, bounded label for metrics and log sampling.
    pub fn kind(&self) -> &'static str {
        match self {
            KeyError::NotJson(_) => "not_json",
            KeyError::Missing => "no_key",
        }
    }
}

/// A parsed JSON pointer (RFC 6901) naming where the hot key sits in an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPointer {
    segments: Vec<String>,
}

impl KeyPointer {
    /// Parses `/a/b`; the empty string means "always use the message key".
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
        KeyPointer { segments }
    }

    /// The pointer's segments, unescaped; none for the empty pointer.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The hot key of one Kafka message: the string or number at the pointer, else the
    /// message key. An empty payload is the plain-key format; any other payload must be JSON.
    pub fn extract<'a>(
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
        let key = if value.is_str() {
            match value.as_str() {
                // No escapes: the text inside the quotes is the key, borrowed from the message.
                Some(text) if value.as_raw_str().len() == text.len() + 2 => {
                    reborrow(payload, &value.as_raw_str()[1..text.len() + 1])
                        .map_or_else(|| Cow::Owned(text.to_owned()), Cow::Borrowed)
                }
                Some(text) => Cow::Owned(text.to_owned()),
                None => return Err(KeyError::NotJson("invalid string at the pointer".into())),
            }
        } else if value.is_number() {
            let raw = value.as_raw_str();
            reborrow(payload, raw).map_or_else(|| Cow::Owned(raw.to_owned()), Cow::Borrowed)
        } else {
            return from_key();
        };
        if key.is_empty() { from_key() } else { Ok(key) }
    }
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
    fn an_array_where_an_object_is_expected_falls_back_to_the_message_key() {
        assert_eq!(
            key("/uri_args/productId", r#"{"uri_args":["1"]}"#, Some("m")).unwrap(),
            "m"
        );
    }
}
