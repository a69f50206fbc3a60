//! Is a line one complete JSON text? (RFC 8259, as `serde_json` accepts it.)
//!
//! Replay publishes JSON lines unchanged, so a line must be checked whole: the key pointer
//! reads only as far as the key, and a line cut short after it would reach every consumer
//! broken. Checking with `serde_json` (or sonic-rs) costs more than the rest of the decoding;
//! this validator builds nothing, skips string bodies eight bytes at a time, and leaves
//! UTF-8 to `std::str::from_utf8`, which is vectorised.

/// Nesting deeper than this is refused, as `serde_json` refuses it for typed values; it
/// bounds the recursion, and no access event comes near it.
const MAX_DEPTH: u32 = 128;

/// True when `s` is exactly one JSON value, optionally surrounded by whitespace.
pub fn is_json(s: &[u8]) -> bool {
    if std::str::from_utf8(s).is_err() {
        return false;
    }
    let mut v = Validator { s, i: 0 };
    if !v.value(0) {
        return false;
    }
    v.skip_ws();
    v.i == s.len()
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

struct Validator<'a> {
    s: &'a [u8],
    i: usize,
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

    fn value(&mut self, depth: u32) -> bool {
        self.skip_ws();
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        }
    }

    fn object(&mut self, depth: u32) -> bool {
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
            if self.peek() != Some(b'"') || !self.string() {
                return false;
            }
            self.skip_ws();
            if self.bump() != Some(b':') || !self.value(depth) {
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
            if !self.value(depth) {
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

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use serde::de::IgnoredAny;

    use super::*;

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
    fn agrees_with_serde_json_on_damaged_events() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let bytes: &[u8] = b"{}[]\",:\\/ u0123456789abcdefAEtrunl-+.e\t\n\x01\xc3\xa9\xff";
        for base in VALID {
            for _ in 0..3_000 {
                let mut s = base.as_bytes().to_vec();
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..=s.len());
                    match rng.random_range(0..3) {
                        0 if at < s.len() => {
                            s.remove(at);
                        }
                        1 if at < s.len() => s[at] = bytes[rng.random_range(0..bytes.len())],
                        _ => s.insert(at, bytes[rng.random_range(0..bytes.len())]),
                    }
                }
                assert_eq!(is_json(&s), oracle(&s), "{:?}", String::from_utf8_lossy(&s));
            }
        }
    }
}
