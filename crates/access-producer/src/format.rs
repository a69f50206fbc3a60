//! Input line formats, their detection, and what one input line turns into.
//!
//! A line is either an OpenResty JSON event (published unchanged, keyed by the topology's
//! JSON pointer) or an nginx `combined` line (converted to that event, keyed by the query
//! parameter). In `auto` mode a line whose first non-blank byte is `{` is taken as JSON and
//! anything else as nginx, so one file may mix both.

use std::borrow::Cow;

use hotkeys::config::SourceConfig;
use hotkeys::event::{KeyError, KeyPointer};

use crate::nginx::{self, Converter};

/// Which formats input lines may be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Detect per line: `{…}` is JSON, anything else nginx `combined`.
    #[default]
    Auto,
    /// OpenResty JSON events only.
    Json,
    /// nginx `combined` access-log lines only.
    Nginx,
}

/// Why a line was skipped as malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadKind {
    /// Looks like JSON (or JSON was forced) but does not parse.
    NotJson,
    /// nginx was forced and the line is not `combined`.
    NotNginx,
    /// Neither format.
    Unrecognized,
    /// Kafka refused the message itself (larger than `message.max.bytes`, say).
    Rejected,
}

impl BadKind {
    /// What was wrong, for the summary and the logs.
    pub fn describe(self) -> &'static str {
        match self {
            BadKind::NotJson => "not valid JSON",
            BadKind::NotNginx => "not an nginx combined line",
            BadKind::Unrecognized => "neither OpenResty JSON nor an nginx combined line",
            BadKind::Rejected => "refused by the Kafka client",
        }
    }
}

/// What one input line turns into.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// Publish `payload` keyed by `key` (never empty).
    Event { key: &'a [u8], payload: &'a [u8] },
    /// Nothing but whitespace: skipped without complaint.
    Blank,
    /// Well-formed, but no hot key: counted and skipped.
    NoKey,
    /// Malformed: counted, sampled, skipped (fatal with `--strict`).
    Bad(BadKind),
}

/// Turns lines into keyed events, reusing its buffers from one line to the next.
#[derive(Debug)]
pub struct Decoder {
    format: Format,
    pointer: KeyPointer,
    nginx: Converter,
    /// The converted event of an nginx line.
    event: Vec<u8>,
    /// A key that could not be borrowed from the line (escaped or numeric in the JSON).
    key: Vec<u8>,
}

impl Decoder {
    pub fn new(format: Format, source: &SourceConfig) -> Decoder {
        Decoder {
            format,
            pointer: KeyPointer::parse(&source.key),
            nginx: Converter::new(&source.query_param),
            event: Vec::with_capacity(1024),
            key: Vec::with_capacity(64),
        }
    }

    /// Decodes one line, given without its line terminator.
    pub fn decode<'a>(&'a mut self, line: &'a [u8]) -> Decoded<'a> {
        let Some(first) = line.iter().position(|b| !b.is_ascii_whitespace()) else {
            return Decoded::Blank;
        };
        let json = match self.format {
            Format::Auto => line[first] == b'{',
            Format::Json => true,
            Format::Nginx => false,
        };
        if json {
            return self.decode_json(line);
        }
        match self.nginx.convert(line, &mut self.event, &mut self.key) {
            Ok(()) => Decoded::Event {
                key: &self.key,
                payload: &self.event,
            },
            Err(nginx::Reject::NoKey) => Decoded::NoKey,
            Err(nginx::Reject::NotCombined) if self.format == Format::Nginx => {
                Decoded::Bad(BadKind::NotNginx)
            }
            Err(nginx::Reject::NotCombined) => Decoded::Bad(BadKind::Unrecognized),
        }
    }

    fn decode_json<'a>(&'a mut self, line: &'a [u8]) -> Decoded<'a> {
        // The key pointer reads only as far as the key, but the line is published whole, so
        // all of it must be JSON: a line cut short would reach every consumer broken.
        if !crate::validate::is_json(line) {
            return Decoded::Bad(BadKind::NotJson);
        }
        // The message key never stands in here: a replayed line has none.
        match self.pointer.extract(Some(line), None) {
            Ok(Cow::Borrowed(key)) => Decoded::Event {
                key: key.as_bytes(),
                payload: line,
            },
            Ok(Cow::Owned(key)) => {
                self.key.clear();
                self.key.extend_from_slice(key.as_bytes());
                Decoded::Event {
                    key: &self.key,
                    payload: line,
                }
            }
            Err(KeyError::Missing) => Decoded::NoKey,
            Err(KeyError::NotJson(_)) => Decoded::Bad(BadKind::NotJson),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = r#"{"request_module":"product_detail_info","headers":{"host":"shop"},"uri_args":{"productId":"11","shopId":"1"},"http_version":1.1,"method":"GET","raw_reader":"GET /product?productId=11&shopId=1 HTTP/1.1\r\n\r\n","body_data":null}"#;
    const NGINX: &str = r#"10.0.0.1 - - [01/Jan/2025:00:00:00 +0000] "GET /product?productId=12&shopId=3 HTTP/1.1" 200 512 "-" "curl/8.5.0""#;

    fn decoder(format: Format) -> Decoder {
        Decoder::new(format, &SourceConfig::default())
    }

    fn event(d: &mut Decoder, line: &str) -> (String, String) {
        match d.decode(line.as_bytes()) {
            Decoded::Event { key, payload } => (
                String::from_utf8(key.to_vec()).unwrap(),
                String::from_utf8(payload.to_vec()).unwrap(),
            ),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn json_lines_are_published_unchanged_with_the_pointer_key() {
        let (key, payload) = event(&mut decoder(Format::Auto), JSON);
        assert_eq!(key, "11");
        assert_eq!(payload, JSON);
    }

    #[test]
    fn auto_detects_nginx_lines_and_converts_them() {
        let (key, payload) = event(&mut decoder(Format::Auto), NGINX);
        assert_eq!(key, "12");
        let v: serde_json::Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(v["uri_args"]["productId"], "12");
        assert_eq!(v["headers"]["user-agent"], "curl/8.5.0");
    }

    #[test]
    fn auto_calls_garbage_unrecognized_and_broken_json_not_json() {
        let mut d = decoder(Format::Auto);
        assert_eq!(
            d.decode(b"hello world"),
            Decoded::Bad(BadKind::Unrecognized)
        );
        assert_eq!(
            d.decode(br#"{"uri_args":{"productId":"1"}"#),
            Decoded::Bad(BadKind::NotJson)
        );
        assert_eq!(d.decode(br#"  {"a":1} x"#), Decoded::Bad(BadKind::NotJson));
        // Cut short after the key: the key is readable, but the line is not an event.
        assert_eq!(
            d.decode(br#"{"uri_args":{"productId":"1"},"method":"GE"#),
            Decoded::Bad(BadKind::NotJson)
        );
        assert_eq!(
            d.decode(b"{\"k\":\"\xff\"}"),
            Decoded::Bad(BadKind::NotJson)
        );
    }

    #[test]
    fn forced_formats_reject_the_other_format() {
        assert_eq!(
            decoder(Format::Json).decode(NGINX.as_bytes()),
            Decoded::Bad(BadKind::NotJson)
        );
        assert_eq!(
            decoder(Format::Nginx).decode(JSON.as_bytes()),
            Decoded::Bad(BadKind::NotNginx)
        );
        assert!(matches!(
            decoder(Format::Json).decode(JSON.as_bytes()),
            Decoded::Event { .. }
        ));
        assert!(matches!(
            decoder(Format::Nginx).decode(NGINX.as_bytes()),
            Decoded::Event { .. }
        ));
    }

    #[test]
    fn blank_lines_are_blank_not_bad() {
        let mut d = decoder(Format::Auto);
        assert_eq!(d.decode(b""), Decoded::Blank);
        assert_eq!(d.decode(b" \t\r"), Decoded::Blank);
    }

    #[test]
    fn events_without_a_usable_key_have_no_key() {
        let mut d = decoder(Format::Auto);
        for line in [
            r#"{"uri_args":{"shopId":"1"}}"#,
            r#"{"uri_args":{"productId":""}}"#,
            r#"{"uri_args":{"productId":null}}"#,
            r#"{"uri_args":{"productId":{"id":1}}}"#,
            r#"{}"#,
        ] {
            assert_eq!(d.decode(line.as_bytes()), Decoded::NoKey, "{line}");
        }
        let line = r#"10.0.0.1 - - [t] "GET /product?shopId=3 HTTP/1.1" 200 512 "-" "-""#;
        assert_eq!(d.decode(line.as_bytes()), Decoded::NoKey);
    }

    #[test]
    fn numeric_and_escaped_json_keys_are_copied_out() {
        let mut d = decoder(Format::Auto);
        assert_eq!(event(&mut d, r#"{"uri_args":{"productId":42}}"#).0, "42");
        assert_eq!(
            event(&mut d, r#"{"uri_args":{"productId":"a\u0041"}}"#).0,
            "aA"
        );
    }
}
