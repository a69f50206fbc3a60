//! Text as a terminal table or a page shows it: keys from events (they come from the public
//! internet), and spans of time.

use std::time::Duration;

/// Longest key shown whole in a table.
const KEY_CELL_CHARS: usize = 80;

/// A key as a terminal may show it: control characters (an ANSI escape, say) are escaped
/// and long keys cut short. JSON output (`--json`) carries keys whole.
pub fn printable(key: &str) -> String {
    let mut out = String::with_capacity(key.len().min(KEY_CELL_CHARS + 3));
    for c in key.chars().take(KEY_CELL_CHARS) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if key.chars().nth(KEY_CELL_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// A span of whole seconds as humantime writes it (`4m 10s`); what is under a second is
/// dropped.
pub fn seconds(span: Duration) -> String {
    humantime::format_duration(Duration::from_secs(span.as_secs())).to_string()
}

/// [`seconds`] of a span in milliseconds; a negative one (clocks apart) is zero.
pub fn seconds_ms(ms: i64) -> String {
    seconds(Duration::from_millis(ms.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_long_keys_cut() {
        assert_eq!(printable("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\\n");
        assert_eq!(printable("<script>"), "<script>");
        let long = "x".repeat(200);
        assert_eq!(printable(&long).chars().count(), KEY_CELL_CHARS + 1);
    }
}
