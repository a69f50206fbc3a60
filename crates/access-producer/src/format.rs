//! Input line formats, their detection, and what one input line turns into.
//!
//! A line is either an OpenResty JSON event (published unchanged, keyed by the topology's
//! JSON pointer) or an nginx `combined` line (converted to that event, keyed by the query
//! parameter). In `auto` mode a line whose first non-blank byte is `{` is taken as JSON and
//! anything else as nginx, so one file may mix both.

use hotkeys::config::SourceConfig;
use std::borrow::Cow;

use hotkeys::event::{KeyPointer, key_of_json};

use crate::nginx::{self, Converter};
use crate::validate;

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
    /// The key is longer than `source.max_key_bytes`: hot-counter would skip it.
    KeyTooLong,
}

impl BadKind {
    /// What was wrong, for the summary and the logs.
    pub fn describe(self) -> &'static str {
        match self {
            BadKind::NotJson => "not valid JSON",
            BadKind::NotNginx => "not an nginx combined line",
            BadKind::Unrecognized => "neither OpenResty JSON nor an nginx combined line",
            BadKind::Rejected => "refused by the Kafka client",
            BadKind::KeyTooLong => "key longer than source.max_key_bytes",
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
    /// A key that is not in the line as it stands: escaped in the JSON, or from an nginx line.
    key: Vec<u8>,
    max_key_bytes: usize,
}

impl Decoder {
    pub fn new(format: Format, source: &SourceConfig) -> Decoder {
        Decoder {
            format,
            pointer: KeyPointer::parse(&source.key),
            nginx: Converter::new(&source.query_param),
            event: Vec::with_capacity(1024),
            key: Vec::with_capacity(64),
            max_key_bytes: source.max_key_bytes,
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
            Ok(()) if self.key.len() > self.max_key_bytes => Decoded::Bad(BadKind::KeyTooLong),
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
        // The line is published whole, so all of it must be JSON, not just as far as the key:
        // a line cut short would reach every consumer broken.
        let Ok(found) = validate::scan(line, self.pointer.segments()) else {
            return Decoded::Bad(BadKind::NotJson);
        };
        // The message key never stands in here: a replayed line has none.
        let Some(at) = found else {
            return Decoded::NoKey;
        };
        // The key as hot-counter reads it: the one key rule of `hotkeys::event`. The line
        // is valid UTF-8 (scan checked it), so the value's text is too.
        let Ok(value) = std::str::from_utf8(&line[at]) else {
            return Decoded::Bad(BadKind::NotJson);
        };
        let key: &[u8] = match key_of_json(value) {
            Ok(Some(Cow::Borrowed(key))) => key.as_bytes(),
            Ok(Some(Cow::Owned(key))) => {
                self.key.clear();
                self.key.extend_from_slice(key.as_bytes());
                &self.key
            }
            Ok(None) => return Decoded::NoKey,
            Err(_) => return Decoded::Bad(BadKind::NotJson),
        };
        if key.len() > self.max_key_bytes {
            return Decoded::Bad(BadKind::KeyTooLong);
        }
        Decoded::Event { key, payload: line }
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

    /// The key a replayed line is published with is the key hot-counter counts it under.
    #[test]
    fn json_keys_agree_with_hot_counters_extraction() {
        use rand::SeedableRng;
        use rand_chacha::ChaCha8Rng;

        let pointer = KeyPointer::parse(&SourceConfig::default().key);
        let mut d = decoder(Format::Json);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let bytes: &[u8] = b"{}[]\",:\\ u0123456789productIduri_args-.en";
        let bases = [
            JSON,
            r#"{"uri_args":{"productId":42}}"#,
            r#"{"uri_args":{"productId":"a\u0041\n"}}"#,
            r#"{"uri_args":{"shopId":"1"},"uri_args":{"productId":"2"}}"#,
            r#"{"uri_args":{"productId":"3"},"uri_args":{"productId":"4"}}"#,
            r#"{"uri_args":{"productId":null}}"#,
            r#"{"uri_args":[{"productId":"5"}]}"#,
            r#"{"uri_\u0061rgs":{"productId":"6"}}"#,
            r#"{"uri_args":{"productId":["7","8"]}}"#,
        ];
        let mut valid = 0;
        for base in bases {
            for _ in 0..2_000 {
                let s = crate::validate::damage(base.as_bytes(), 0..3, bytes, &mut rng);
                let ours = match d.decode(&s) {
                    Decoded::Event { key, .. } => Some(key.to_vec()),
                    Decoded::NoKey => None,
                    _ => continue,
                };
                valid += 1;
                let theirs = pointer.extract(Some(&s), None).ok();
                let theirs = theirs.map(|k| k.as_bytes().to_vec());
                assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(&s));
            }
        }
        assert!(valid > 2_000, "only {valid} valid lines");
    }

    /// `?productId=55&productId=56` as the OpenResty reporter writes it and as nginx logs it.
    #[test]
    fn a_repeated_argument_is_keyed_by_its_first_value_in_both_formats() {
        let mut d = decoder(Format::Json);
        let json = r#"{"uri_args":{"productId":["55","56"],"shopId":"1"},"method":"GET"}"#;
        assert_eq!(event(&mut d, json).0, "55");
        let mut d = decoder(Format::Nginx);
        let line = r#"10.0.0.1 - - [01/Jan/2025:00:00:00 +0000] "GET /product?productId=55&productId=56 HTTP/1.1" 200 512 "-" "curl/8.5.0""#;
        assert_eq!(event(&mut d, line).0, "55");
    }

    #[test]
    fn keys_over_max_key_bytes_are_bad_lines_in_both_formats() {
        let source = SourceConfig {
            max_key_bytes: 8,
            ..SourceConfig::default()
        };
        let mut d = Decoder::new(Format::Auto, &source);
        let json = r#"{"uri_args":{"productId":"123456789"}}"#;
        assert_eq!(d.decode(json.as_bytes()), Decoded::Bad(BadKind::KeyTooLong));
        let line =
            r#"10.0.0.1 - - [t] "GET /product?productId=123456789 HTTP/1.1" 200 512 "-" "-""#;
        assert_eq!(d.decode(line.as_bytes()), Decoded::Bad(BadKind::KeyTooLong));
        assert_eq!(
            event(&mut d, r#"{"uri_args":{"productId":"12345678"}}"#).0,
            "12345678"
        );
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
