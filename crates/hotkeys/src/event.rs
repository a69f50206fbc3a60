//! Access events and how the hot key is taken out of them.
//!
//! Two formats travel on the access topic (DESIGN.md): the OpenResty JSON event of the
//! existing nginx+Lua reporters, and a bare message key with an empty or ignored value. The
//! key is found with a JSON pointer from the topology, falling back to the message key.
//!
//! Counting runs at millions of events per second per worker, so [`KeyPointer::extract`]
//! never builds a JSON tree: it walks the pointer's path with serde, skips every other value
//! with `IgnoredAny`, and borrows the key from the input when it has no escapes.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

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
            return match serde_json::from_slice::<IgnoredAny>(payload) {
                Ok(_) => from_key(),
                Err(e) => Err(KeyError::NotJson(e.to_string())),
            };
        }
        let mut de = serde_json::Deserializer::from_slice(payload);
        let found = PathSeed {
            path: &self.segments,
        }
        .deserialize(&mut de)
        .and_then(|found| de.end().map(|()| found))
        .map_err(|e| KeyError::NotJson(e.to_string()))?;
        match found {
            Some(key) if !key.is_empty() => Ok(key),
            _ => from_key(),
        }
    }
}

/// Walks one level of the pointer; yields the leaf as text when it is a string or number.
struct PathSeed<'p> {
    path: &'p [String],
}

impl<'de, 'p> DeserializeSeed<'de> for PathSeed<'p> {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 'p> Visitor<'de> for PathSeed<'p> {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(matches) = map.next_key_seed(KeyIs(self.path.first()))? {
            if matches && found.is_none() {
                found = map.next_value_seed(PathSeed {
                    path: &self.path[1..],
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found.filter(|_| !self.path.is_empty()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let index = self.path.first().and_then(|s| s.parse::<usize>().ok());
        let mut found = None;
        let mut i = 0;
        loop {
            let hit = Some(i) == index;
            let next = if hit {
                seq.next_element_seed(PathSeed {
                    path: &self.path[1..],
                })?
                .map(|v| found = v)
            } else {
                seq.next_element::<IgnoredAny>()?.map(|_| ())
            };
            if next.is_none() {
                return Ok(found);
            }
            i += 1;
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(self.path.is_empty().then_some(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.path.is_empty().then(|| Cow::Owned(v.to_owned())))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(self.path.is_empty().then(|| Cow::Owned(v.to_string())))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(self.path.is_empty().then(|| Cow::Owned(v.to_string())))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Compares an object key with the next pointer segment without allocating.
struct KeyIs<'p>(Option<&'p String>);

impl<'de, 'p> DeserializeSeed<'de> for KeyIs<'p> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'p> Visitor<'de> for KeyIs<'p> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(self.0.is_some_and(|s| s == v))
    }
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
        assert_eq!(key("/uri_args/productId", r#"{"uri_args":{"productId":42}}"#, None).unwrap(), "42");
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        assert_eq!(key("/k", r#"{"k":"a\"b"}"#, None).unwrap(), "a\"b");
    }

    #[test]
    fn missing_or_null_value_falls_back_to_the_message_key() {
        assert_eq!(key("/uri_args/productId", r#"{"uri_args":{"shopId":"1"}}"#, Some("7")).unwrap(), "7");
        assert_eq!(key("/uri_args/productId", r#"{"uri_args":{"productId":null}}"#, Some("8")).unwrap(), "8");
        assert_eq!(key("/uri_args/productId", r#"{"uri_args":null}"#, Some("9")).unwrap(), "9");
    }

    #[test]
    fn object_at_the_pointer_is_not_a_key() {
        assert_eq!(key("/uri_args", EVENT, Some("k")).unwrap(), "k");
    }

    #[test]
    fn no_value_and_no_message_key_is_missing() {
        assert_eq!(key("/uri_args/productId", "{}", None), Err(KeyError::Missing));
        assert_eq!(key("/uri_args/productId", "{}", Some("")), Err(KeyError::Missing));
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
        let e = key("/uri_args/productId", r#"{"uri_args":{"productId":"1"}"#, None).unwrap_err();
        assert_eq!(e.kind(), "not_json");
        let e = key("/a", r#"{"a":"1"} trailing"#, None).unwrap_err();
        assert_eq!(e.kind(), "not_json");
    }

    #[test]
    fn array_indexes_and_escaped_segments_follow_rfc6901() {
        assert_eq!(key("/a/1", r#"{"a":["x","y"]}"#, None).unwrap(), "y");
        assert_eq!(key("/a~1b/c~0d", r#"{"a/b":{"c~d":"z"}}"#, None).unwrap(), "z");
    }

    #[test]
    fn first_occurrence_of_a_duplicate_field_wins() {
        assert_eq!(key("/k", r#"{"k":"1","k":"2"}"#, None).unwrap(), "1");
    }
}
