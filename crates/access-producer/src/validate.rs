//! Is a line one complete JSON text (RFC 8259, as `serde_json` accepts it), and where in it
//! is the hot key?
//!
//! Replay publishes JSON lines unchanged, so a line must be checked whole: a line cut short
//! after the key would reach every consumer broken. Checking with `serde_json` (or sonic-rs)
//! costs more than the rest of the decoding; this validator builds nothing, skips string
//! bodies eight bytes at a time, and leaves UTF-8 to `std::str::from_utf8`, which is
//! vectorised. It finds the value at the key's JSON pointer on the same pass, so the line is
//! read once rather than a second time by a pointer lookup.

use std::ops::Range;

/// Nesting deeper than this is refused, as `serde_json` refuses it for typed values; it
/// bounds the recursion, and no access event comes near it.
const MAX_DEPTH: u32 = 128;

/// The line is not one JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotJson;

/// Checks that `s` is exactly one JSON value, optionally surrounded by whitespace, and
/// returns where the value at `pointer` (the unescaped segments of a JSON pointer) lies in
/// it, if anywhere.
///
/// The pointer is followed as sonic-rs's lookup follows it (hot-counter extracts keys with
/// that one, and both must agree on an event's key): through objects only, taking the first
/// member of a name, compared unescaped. An empty pointer finds nothing.
pub fn scan(s: &[u8], pointer: &[String]) -> Result<Option<Range<usize>>, NotJson> {
    if std::str::from_utf8(s).is_err() {
        return Err(NotJson);
    }
    let mut v = Validator {
        s,
        i: 0,
        pointer,
        found: None,
    };
    let at = (!pointer.is_empty()).then_some(0);
    if !v.value(0, at) {
        return Err(NotJson);
    }
    v.skip_ws();
    if v.i == s.len() {
        Ok(v.found)
    } else {
        Err(NotJson)
    }
}

/// The high bit of each byte of `x` that is below 0x20, `"` or `\`. Only the lowest flagged
/// byte is exact (a borrow can spoil the bytes above it), which is all that is needed.
fn special(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let quote = x ^ (ONES * u64::from(b'"'));
    let backslash = x ^ (ONES * u64::from(b'\\'));
    (x.wrapping_sub(ONES * 0x20) | quote.wrapping_sub(ONES) | backslash.wrapping_sub(ONES))
        & !x
        & HIGH
}

/// Whether the quoted, valid JSON string `quoted` says `name`.
fn is_named(quoted: &[u8], name: &[u8]) -> bool {
    let body = &quoted[1..quoted.len() - 1];
    if body == name {
        return true;
    }
    // Escaped names are rare; only they pay for decoding.
    memchr::memchr(b'\\', body).is_some()
        && serde_json::from_slice::<String>(quoted).is_ok_and(|s| s.as_bytes() == name)
}

struct Validator<'a> {
    s: &'a [u8],
    i: usize,
    pointer: &'a [String],
    /// The value at the pointer, once passed.
    found: Option<Range<usize>>,
}

impl Validator<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// `at`: how many segments of the pointer lead to this value, when it is on the
    /// pointer's path.
    fn value(&mut self, depth: u32, at: Option<usize>) -> bool {
        self.skip_ws();
        let start = self.i;
        let valid = match self.peek() {
            Some(b'{') => self.object(depth + 1, at),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        };
        if valid && at == Some(self.pointer.len()) {
            self.found = Some(start..self.i);
        }
        valid
    }

    fn object(&mut self, depth: u32, at: Option<usize>) -> bool {
        // The segment a member must be named to be on the pointer's path; only the first
        // member of that name is.
        let mut wanted = at.and_then(|n| Some((n + 1, self.pointer.get(n)?.as_bytes())));
        if depth > MAX_DEPTH {
            return false;
        }
        self.i += 1;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return true;
        }
        loop {
            self.skip_ws();
            let name = self.i;
            if self.peek() != Some(b'"') || !self.string() {
                return false;
            }
            let child = match wanted {
                Some((next, segment)) if is_named(&self.s[name..self.i], segment) => {
                    wanted = None;
                    Some(next)
                }
                _ => None,
            };
            self.skip_ws();
            if self.bump() != Some(b':') || !self.value(depth, child) {
                return false;
            }
            self.skip_ws();
            match self.bump() {
                Some(b',') => {}
                Some(b'}') => return true,
                _ => return false,
            }
        }
    }

    fn array(&mut self, depth: u32) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        self.i += 1;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return true;
        }
        loop {
            if !self.value(depth, None) {
                return false;
            }
            self.skip_ws();
            match self.bump() {
                Some(b',') => {}
                Some(b']') => return true,
                _ => return false,
            }
        }
    }

    /// At the opening quote.
    fn string(&mut self) -> bool {
        self.i += 1;
        loop {
            self.skip_plain();
            match self.bump() {
                Some(b'"') => return true,
                Some(b'\\') => match self.bump() {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                    Some(b'u') => {
                        for _ in 0..4 {
                            if !self.bump().is_some_and(|b| b.is_ascii_hexdigit()) {
                                return false;
                            }
                        }
                    }
                    _ => return false,
                },
                // A control character, or the end of the input.
                _ => return false,
            }
        }
    }

    /// Advances to the next `"`, `\` or control character (or the end), a word at a time.
    /// (Sixteen bytes at a time with SSE2 measured no faster: most strings are short, and
    /// the cost is per string, not per byte.)
    fn skip_plain(&mut self) {
        while let Some(chunk) = self.s.get(self.i..self.i + 8) {
            let flagged = special(u64::from_le_bytes(chunk.try_into().unwrap_or_default()));
            if flagged != 0 {
                self.i += (flagged.trailing_zeros() / 8) as usize;
                return;
            }
            self.i += 8;
        }
        while let Some(b) = self.peek() {
            if b < 0x20 || b == b'"' || b == b'\\' {
                return;
            }
            self.i += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> bool {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.bump() {
            Some(b'0') => {}
            Some(b'1'..=b'9') => self.digits(),
            _ => return false,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return false;
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return false;
            }
            self.digits();
        }
        true
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
    }
}

/// `line` with a few random edits (a byte removed, replaced or inserted from `alphabet`):
/// the damaged inputs of the tests that hold validation and key finding against an oracle.
#[cfg(test)]
pub(crate) fn damage(
    line: &[u8],
    edits: std::ops::Range<usize>,
    alphabet: &[u8],
    rng: &mut impl rand::Rng,
) -> Vec<u8> {
    let mut s = line.to_vec();
    for _ in 0..rng.random_range(edits) {
        let at = rng.random_range(0..=s.len());
        match rng.random_range(0..3) {
            0 if at < s.len() => {
                s.remove(at);
            }
            1 if at < s.len() => s[at] = alphabet[rng.random_range(0..alphabet.len())],
            _ => s.insert(at, alphabet[rng.random_range(0..alphabet.len())]),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use serde::de::IgnoredAny;

    use super::*;

    fn is_json(s: &[u8]) -> bool {
        scan(s, &[]).is_ok()
    }

    /// The text of the value at `pointer` in `s`.
    fn at<'a>(s: &'a str, pointer: &str) -> Option<&'a str> {
        let segments: Vec<String> = pointer.split('/').skip(1).map(str::to_owned).collect();
        scan(s.as_bytes(), &segments).unwrap().map(|r| &s[r])
    }

    /// serde_json skips ignored strings without checking their UTF-8; JSON text must be UTF-8.
    fn oracle(s: &[u8]) -> bool {
        serde_json::from_slice::<IgnoredAny>(s).is_ok() && std::str::from_utf8(s).is_ok()
    }

    const VALID: &[&str] = &[
        "{}",
        "[]",
        " { } ",
        "\t[1,\r\n2]\n",
        "0",
        "-0",
        "-12.5e+3",
        "1E-7",
        "3.25",
        "true",
        "false",
        "null",
        r#""""#,
        r#""a\"b\\c\/d\b\f\n\r\t\u00e9\uD83D\uDE00""#,
        r#"{"a":[1,{"b":null}],"c":"ü","d":-1.5e10}"#,
        r#"{"request_module":"product_detail_info","headers":{"host":"shop"},"uri_args":{"productId":"11"},"http_version":1.1,"method":"GET","raw_reader":"GET / HTTP/1.1\r\n\r\n","body_data":null}"#,
        r#"{"long":"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz"}"#,
    ];

    const INVALID: &[&str] = &[
        "",
        " ",
        "{",
        "}",
        "[1,]",
        "[,1]",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "{a:1}",
        "{\"a\":}",
        "{} {}",
        "{}x",
        "01",
        "-",
        "1.",
        ".5",
        "1e",
        "1e+",
        "+1",
        "tru",
        "nul",
        "True",
        "\"abc",
        "\"a\\x\"",
        "\"a\\u12g4\"",
        "\"a\\u12\"",
        "\"tab\there\"",
        "\"nl\nhere\"",
        "{\"uri_args\":{\"productId\":\"1\"}",
        "{\"uri_args\":{\"productId\":\"1\"},\"method\":\"GE",
        "NaN",
        "[1 2]",
        "{\"a\":1 \"b\":2}",
    ];

    #[test]
    fn accepts_what_serde_json_accepts() {
        for s in VALID {
            assert!(oracle(s.as_bytes()), "oracle rejects {s:?}");
            assert!(is_json(s.as_bytes()), "{s:?}");
        }
    }

    #[test]
    fn rejects_what_serde_json_rejects() {
        for s in INVALID {
            assert!(!oracle(s.as_bytes()), "oracle accepts {s:?}");
            assert!(!is_json(s.as_bytes()), "{s:?}");
        }
        assert!(!is_json(b"\"\xff\""), "invalid UTF-8");
        assert!(!is_json(b"\"\xc3\""), "truncated UTF-8");
    }

    #[test]
    fn nesting_is_bounded() {
        for depth in [1, 127, 128, 129] {
            let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            assert!(oracle(arrays.as_bytes()) && oracle(objects.as_bytes()));
            assert_eq!(is_json(arrays.as_bytes()), depth <= 128, "depth {depth}");
            assert_eq!(is_json(objects.as_bytes()), depth <= 128, "depth {depth}");
        }
        let very_deep = "[".repeat(100_000);
        assert!(!is_json(very_deep.as_bytes()));
    }

    #[test]
    fn finds_the_value_at_the_pointer() {
        let event = VALID[15];
        assert_eq!(at(event, "/uri_args/productId"), Some(r#""11""#));
        assert_eq!(at(event, "/uri_args"), Some(r#"{"productId":"11"}"#));
        assert_eq!(at(event, "/http_version"), Some("1.1"));
        assert_eq!(at(event, "/body_data"), Some("null"));
        assert_eq!(at(event, "/uri_args/shopId"), None);
        assert_eq!(at(event, "/headers/host/x"), None);
        assert_eq!(at(event, ""), None);
        assert_eq!(at(r#" { "a" : { "b" : -2e3 } } "#, "/a/b"), Some("-2e3"));
        // Arrays are not indexed, as sonic-rs's lookup by name does not index them.
        assert_eq!(at(r#"{"a":["x"]}"#, "/a/0"), None);
    }

    #[test]
    fn the_first_member_of_a_name_is_on_the_path() {
        assert_eq!(at(r#"{"a":{"b":1},"a":{"b":2}}"#, "/a/b"), Some("1"));
        // As sonic-rs: the first `a` has no `b`, and the second is not looked at.
        assert_eq!(at(r#"{"a":{"c":1},"a":{"b":2}}"#, "/a/b"), None);
        assert_eq!(at(r#"{"x":{"b":1},"a":{"b":2}}"#, "/a/b"), Some("2"));
    }

    #[test]
    fn member_names_are_compared_unescaped() {
        assert_eq!(at(r#"{"\u0061":{"b\/c":7}}"#, "/a/b/c"), None);
        let line = r#"{"\u0061":{"b\/c":7}}"#;
        let found = scan(line.as_bytes(), &["a".into(), "b/c".into()]).unwrap();
        assert_eq!(found.map(|r| &line[r]), Some("7"));
    }

    #[test]
    fn a_found_key_does_not_excuse_a_broken_line() {
        let segments = ["uri_args".to_owned(), "productId".to_owned()];
        assert_eq!(
            scan(br#"{"uri_args":{"productId":"1"},"method":"GE"#, &segments),
            Err(NotJson)
        );
    }

    #[test]
    fn agrees_with_serde_json_on_damaged_events() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let bytes: &[u8] = b"{}[]\",:\\/ u0123456789abcdefAEtrunl-+.e\t\n\x01\xc3\xa9\xff";
        for base in VALID {
            for _ in 0..3_000 {
                let s = damage(base.as_bytes(), 1..4, bytes, &mut rng);
                assert_eq!(is_json(&s), oracle(&s), "{:?}", String::from_utf8_lossy(&s));
            }
        }
    }
}
