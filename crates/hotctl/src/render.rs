//! Text from events (keys come from the public internet) as a terminal table shows it.

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
