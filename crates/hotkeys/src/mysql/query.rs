//! The row query of the topology (`mysql.query`), checked before it reaches the server.
//!
//! The text comes from a configuration file, so sqlx makes us assert it is safe
//! (`AssertSqlSafe`). This is where that assertion is earned: the query must be one plain
//! `SELECT` with exactly one `{ids}` placeholder, no bind parameters of its own, nothing that
//! writes (`INTO OUTFILE`, `INTO @var`) or locks rows (`FOR UPDATE`, `LOCK IN SHARE MODE`),
//! and no MySQL executable comments (`/*! … */`), which would run text we cannot see. The
//! hot keys themselves are never spliced into the text: they are bound as parameters.

use super::MysqlError;

/// A validated row query, split around its `{ids}` placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowQuery {
    prefix: String,
    suffix: String,
}

/// Keywords a read-only single SELECT has no business containing.
const FORBIDDEN: &[(&str, &str)] = &[
    (
        "INTO",
        "`INTO` writes the result somewhere instead of returning it",
    ),
    ("UPDATE", "`FOR UPDATE` would lock the rows"),
    ("SHARE", "`FOR SHARE` would lock the rows"),
    ("LOCK", "`LOCK IN SHARE MODE` would lock the rows"),
];

impl RowQuery {
    /// Checks `text` and splits it at `{ids}`; a trailing `;` is accepted and dropped.
    pub fn parse(text: &str) -> Result<RowQuery, MysqlError> {
        let bad = |m: String| Err(MysqlError::BadQuery(m));
        let scan = scan(text).map_err(MysqlError::BadQuery)?;
        match scan.words.first() {
            Some(w) if w.eq_ignore_ascii_case("SELECT") => {}
            Some(w) => return bad(format!("expected a SELECT, found `{w}` first")),
            None => return bad("expected a SELECT, found nothing".into()),
        }
        for (word, why) in FORBIDDEN {
            if scan.words.iter().any(|w| w.eq_ignore_ascii_case(word)) {
                return bad(format!("not allowed: {why}"));
            }
        }
        let [at] = scan.placeholders[..] else {
            return bad(format!(
                "expected the `{{ids}}` placeholder exactly once outside strings and comments, found it {} times",
                scan.placeholders.len()
            ));
        };
        let body = &text[..scan.end];
        Ok(RowQuery {
            prefix: body[..at].to_string(),
            suffix: body[at + "{ids}".len()..].to_string(),
        })
    }

    /// The statement text for `n` keys: `{ids}` replaced by `n` bind markers.
    pub fn sql(&self, n: usize) -> String {
        let mut sql = String::with_capacity(self.prefix.len() + self.suffix.len() + 3 * n);
        sql.push_str(&self.prefix);
        for i in 0..n.max(1) {
            sql.push_str(if i == 0 { "?" } else { ", ?" });
        }
        sql.push_str(&self.suffix);
        sql
    }
}

#[derive(Debug, Default)]
struct Scan {
    /// Bare words outside strings, quoted identifiers and comments, in order.
    words: Vec<String>,
    /// Byte offsets of `{ids}` outside strings and comments.
    placeholders: Vec<usize>,
    /// Where the statement ends: before a trailing `;` and whatever blank follows it.
    end: usize,
}

/// A small MySQL lexer: enough to know what is code and what is quoted or commented out.
fn scan(text: &str) -> Result<Scan, String> {
    let bytes = text.as_bytes();
    let mut out = Scan {
        end: text.len(),
        ..Scan::default()
    };
    let mut i = 0;
    let mut terminated = false;
    while i < bytes.len() {
        let c = bytes[i];
        if terminated && !c.is_ascii_whitespace() && !starts_comment(bytes, i) {
            return Err("expected a single statement; found text after `;`".into());
        }
        match c {
            b'\'' | b'"' | b'`' => i = skip_quoted(bytes, i)?,
            b'#' => i = skip_line(bytes, i),
            b'-' if bytes.get(i + 1) == Some(&b'-')
                && bytes.get(i + 2).is_none_or(|b| b.is_ascii_whitespace()) =>
            {
                i = skip_line(bytes, i)
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = skip_block_comment(text, i)?,
            b';' => {
                terminated = true;
                out.end = i;
                i += 1;
            }
            b'?' => {
                return Err(
                    "must not contain `?` parameters: `{ids}` is the only parameter".into(),
                );
            }
            b'{' if text[i..].starts_with("{ids}") => {
                out.placeholders.push(i);
                i += "{ids}".len();
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                i = skip_word(bytes, i);
                out.words.push(text[start..i].to_string());
            }
            _ => i += 1,
        }
    }
    Ok(out)
}

/// Past the `/* … */` comment at `i`; executable comments and optimizer hints are refused.
fn skip_block_comment(text: &str, i: usize) -> Result<usize, String> {
    if matches!(text.as_bytes().get(i + 2), Some(b'!' | b'M' | b'+')) {
        return Err(
            "executable comments (`/*! … */`, `/*M! … */`) and optimizer hints are not allowed"
                .into(),
        );
    }
    match text[i + 2..].find("*/") {
        Some(end) => Ok(i + 2 + end + 2),
        None => Err("unterminated `/*` comment".into()),
    }
}

/// Past the bare word at `i`.
fn skip_word(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'$')) {
        i += 1;
    }
    i
}

fn starts_comment(bytes: &[u8], i: usize) -> bool {
    match bytes[i] {
        b'#' => true,
        b'-' => bytes.get(i + 1) == Some(&b'-'),
        b'/' => bytes.get(i + 1) == Some(&b'*'),
        _ => false,
    }
}

fn skip_line(bytes: &[u8], i: usize) -> usize {
    bytes[i..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |p| i + p + 1)
}

/// Skips a quoted string or identifier starting at `i`; doubled quotes and (outside
/// backticks) backslash escapes stay inside.
fn skip_quoted(bytes: &[u8], i: usize) -> Result<usize, String> {
    let quote = bytes[i];
    let mut j = i + 1;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' if quote != b'`' => j += 2,
            b if b == quote => {
                if bytes.get(j + 1) == Some(&quote) {
                    j += 2;
                } else {
                    return Ok(j + 1);
                }
            }
            _ => j += 1,
        }
    }
    Err(format!("unterminated {} quote", quote as char))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        RowQuery::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn default_query_splits_at_the_placeholder() {
        let q = RowQuery::parse("SELECT id, name FROM products WHERE id IN ({ids})").unwrap();
        assert_eq!(
            q.sql(3),
            "SELECT id, name FROM products WHERE id IN (?, ?, ?)"
        );
        assert_eq!(q.sql(1), "SELECT id, name FROM products WHERE id IN (?)");
    }

    #[test]
    fn trailing_semicolon_and_comment_are_dropped() {
        let q = RowQuery::parse("select id from p where id in ({ids}); -- done\n").unwrap();
        assert_eq!(q.sql(1), "select id from p where id in (?)");
    }

    #[test]
    fn placeholder_in_strings_or_comments_does_not_count() {
        let q = RowQuery::parse(
            "SELECT id, '{ids}' AS lit, `{ids}` FROM p /* {ids} */ WHERE id IN ({ids}) # {ids}",
        )
        .unwrap();
        assert!(q.sql(2).contains("IN (?, ?)"));
        assert!(q.sql(2).contains("'{ids}' AS lit"));
    }

    #[test]
    fn second_statement_is_rejected() {
        assert!(
            err("SELECT id FROM p WHERE id IN ({ids}); DROP TABLE p").contains("single statement")
        );
    }

    #[test]
    fn only_select_is_accepted() {
        assert!(err("DELETE FROM p WHERE id IN ({ids})").contains("SELECT"));
        assert!(err("  ").contains("SELECT"));
    }

    #[test]
    fn placeholder_must_appear_exactly_once() {
        assert!(err("SELECT id FROM p").contains("exactly once"));
        assert!(
            err("SELECT id FROM p WHERE id IN ({ids}) OR shop_id IN ({ids})").contains("2 times")
        );
    }

    #[test]
    fn writing_locking_and_hidden_sql_are_rejected() {
        assert!(err("SELECT id FROM p WHERE id IN ({ids}) INTO OUTFILE '/tmp/x'").contains("INTO"));
        assert!(err("SELECT id FROM p WHERE id IN ({ids}) FOR UPDATE").contains("lock"));
        assert!(err("SELECT id FROM p WHERE id IN ({ids}) LOCK IN SHARE MODE").contains("lock"));
        assert!(
            err("SELECT /*! SLEEP(10), */ id FROM p WHERE id IN ({ids})").contains("executable")
        );
        assert!(err("SELECT id FROM p WHERE id IN ({ids}) AND shop_id = ?").contains("`?`"));
    }

    #[test]
    fn keywords_inside_names_and_quotes_are_fine() {
        RowQuery::parse("SELECT id, updated_at, 'into' AS `lock` FROM p WHERE id IN ({ids})")
            .unwrap();
    }

    #[test]
    fn quotes_with_escapes_do_not_end_early() {
        let q =
            RowQuery::parse(r"SELECT id, 'it''s; \' {ids}' FROM p WHERE id IN ({ids})").unwrap();
        assert!(q.sql(1).ends_with("IN (?)"));
        assert!(err("SELECT 'open FROM p WHERE id IN ({ids})").contains("unterminated"));
    }
}
