//! Values that carry credentials, held so that they cannot be shown by accident.
//!
//! [`NodeUrl`] is the one type for the address of a Redis node (a `redis://` URL, or
//! `host:port`). It is parsed with the `url` crate, the parser the redis client itself uses,
//! so what is shown and what is connected to are read the same way. Its `Display` and
//! `Debug` show scheme, host, port and path only: no userinfo (`user:password@`), no query,
//! no fragment, so a node named in an error, a log line, a metric label or a page never
//! shows a password. Only [`NodeUrl::expose`] hands the full URL out, to the client that
//! connects with it.
//!
//! A password pasted raw with a character that ends the userinfo early (`?`, `#`, `/`) or
//! a second `@` would be cut at the wrong place, and part of it taken for the host, the path
//! or the query. [`NodeUrl::parse`] refuses such a URL without quoting any of it; the
//! configuration names the node by its place (`redis.nodes[1]`) instead.

use std::fmt;

use super::error::Invalid;

/// The characters that end a URL's authority, and so a password pasted raw.
const DELIMITERS: [char; 3] = ['/', '?', '#'];

/// Why a node URL is refused. The messages never quote the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeUrlError {
    #[error(
        "its password holds a raw `{0}`, which would cut it in two and show a part of it; \
         percent-encode the password (`?` as %3F, `#` as %23, `@` as %40, `/` as %2F, `%` as %25)"
    )]
    RawInPassword(char),
    #[error("expected host:port or a redis:// URL with a host")]
    Invalid,
}

/// The address of a Redis node; shown without credentials.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NodeUrl {
    /// As configured, credentials included.
    raw: String,
    /// Scheme, host, port and path.
    shown: String,
}

impl NodeUrl {
    /// Parses a node's address, refusing one whose password is pasted raw with a URL
    /// delimiter in it.
    pub fn parse(raw: &str) -> Result<NodeUrl, NodeUrlError> {
        let Some((_, rest)) = raw.split_once("://") else {
            // `host:port`: there is no place for a password.
            if raw.contains('@') {
                return Err(NodeUrlError::Invalid);
            }
            url::Url::parse(&format!("redis://{raw}")).map_err(|_| NodeUrlError::Invalid)?;
            return Ok(NodeUrl {
                raw: raw.to_string(),
                shown: raw.to_string(),
            });
        };
        let authority_end = rest.find(DELIMITERS).unwrap_or(rest.len());
        if rest[..authority_end].matches('@').count() > 1 {
            return Err(NodeUrlError::RawInPassword('@'));
        }
        let parsed = url::Url::parse(raw).ok().filter(|u| {
            u.host_str().is_some_and(|h| !h.is_empty()) || u.scheme().ends_with("+unix")
        });
        let Some(parsed) = parsed else {
            // An `@` after the authority's end: the userinfo was cut by a raw delimiter.
            return Err(
                match (rest.find('@'), rest[authority_end..].chars().next()) {
                    (Some(at), Some(delimiter)) if at > authority_end => {
                        NodeUrlError::RawInPassword(delimiter)
                    }
                    _ => NodeUrlError::Invalid,
                },
            );
        };
        let mut shown = format!("{}://{}", parsed.scheme(), parsed.host_str().unwrap_or(""));
        if let Some(port) = parsed.port() {
            shown.push_str(&format!(":{port}"));
        }
        shown.push_str(parsed.path());
        Ok(NodeUrl {
            raw: raw.to_string(),
            shown,
        })
    }

    /// A node's address, whatever it holds: one that does not parse is shown as the text
    /// after its last `@`, without query or fragment, so that it still shows no password
    /// (the configuration refuses such URLs at start; this is for anything else).
    pub fn new(url: impl Into<String>) -> NodeUrl {
        let raw = url.into();
        NodeUrl::parse(&raw).unwrap_or_else(|_| {
            let (scheme, rest) = match raw.split_once("://") {
                Some((scheme, rest)) => (format!("{scheme}://"), rest),
                None => (String::new(), raw.as_str()),
            };
            let host = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
            let host = host.split(['?', '#']).next().unwrap_or_default();
            NodeUrl {
                shown: format!("{scheme}{host}"),
                raw: raw.clone(),
            }
        })
    }

    /// The URL as configured, credentials included: for connecting, never for showing.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// Several nodes shown as one comma-separated text.
    pub fn join(urls: &[String]) -> String {
        urls.iter()
            .map(|u| NodeUrl::new(u.as_str()).to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl From<&str> for NodeUrl {
    fn from(url: &str) -> NodeUrl {
        NodeUrl::new(url)
    }
}

impl From<&String> for NodeUrl {
    fn from(url: &String) -> NodeUrl {
        NodeUrl::new(url.as_str())
    }
}

impl fmt::Display for NodeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for NodeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeUrl({self})")
    }
}

/// `message` with every double-quoted part replaced, for errors about a key whose value
/// may hold a credential: serde quotes the value it could not take
/// (`invalid type: string "redis://:pw@h", expected a sequence`).
pub fn hide_quoted(message: &str) -> String {
    message
        .split('"')
        .enumerate()
        .map(|(i, part)| if i % 2 == 1 { "(value hidden)" } else { part })
        .collect::<Vec<_>>()
        .concat()
}

/// Keys whose values may carry a credential: an error about one never quotes its value.
pub(super) fn may_hold_secret(key: &str) -> bool {
    [
        "redis.nodes",
        "redis.backups",
        "sync.apply_nodes",
        "sync.state",
        "sync.remote",
        "mysql.url",
    ]
    .iter()
    .any(|k| key.starts_with(k))
}

/// Checks every node URL of the list at `key` (`sync.state` alone is a list of one); an
/// error names the node by its place (`redis.nodes[1]`). A password pasted raw is never
/// quoted; another malformed URL is shown as `NodeUrl` shows it, without credentials.
pub(super) fn node_urls(key: &str, urls: &[String]) -> Result<(), Invalid> {
    for (i, url) in urls.iter().enumerate() {
        let place = match key {
            "sync.state" => key.to_string(),
            _ => format!("{key}[{i}]"),
        };
        match NodeUrl::parse(url) {
            Ok(_) => {}
            Err(e @ NodeUrlError::RawInPassword(_)) => {
                return Err(Invalid::new(key, format!("{place}: {e}")));
            }
            Err(e) => {
                let shown = NodeUrl::new(url.as_str());
                return Err(Invalid::new(key, format!("{place} (`{shown}`): {e}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_debug_never_show_userinfo_or_query() {
        for (url, shown) in [
            ("redis://:s3cret@10.0.0.1:6379/2", "redis://10.0.0.1:6379/2"),
            ("rediss://user:s3cret@cache:6380", "rediss://cache:6380"),
            ("redis://us@er:s3cret@h:1", "redis://h:1"),
            ("redis://:s3/cret@h:1/0", "redis://h:1/0"),
            ("redis://h:1/0?password=s3cret", "redis://h:1/0"),
            ("redis://:s3%3Fcr%23et%40x@h:1", "redis://h:1"),
            ("redis://:s3cret@[::1]:6379", "redis://[::1]:6379"),
            (
                "redis+unix:///run/r.sock?pass=s3cret",
                "redis+unix:///run/r.sock",
            ),
            ("10.0.0.1:6379", "10.0.0.1:6379"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:ab?s3cret@h:6379", "redis://h:6379"),
            ("redis://:ab#s3cret@h:6379", "redis://h:6379"),
        ] {
            let node = NodeUrl::new(url);
            assert_eq!(node.to_string(), shown, "{url}");
            let debug = format!("{node:?}");
            assert!(
                !debug.contains("s3cret") && !debug.contains("ab"),
                "{debug}"
            );
            assert_eq!(node.expose(), url);
        }
        assert_eq!(
            NodeUrl::join(&["redis://:p@a:1".into(), "redis://b:2".into()]),
            "redis://a:1,redis://b:2"
        );
    }

    #[test]
    fn a_raw_delimiter_in_a_password_is_refused_without_quoting_it() {
        for (url, delimiter) in [
            ("redis://:ab?s3cret@h:6379", '?'),
            ("redis://:ab#s3cret@h:6379", '#'),
            ("redis://:ab@s3cret@h:6379", '@'),
            ("redis://:ab/s3cret@h:6379/0", '/'),
        ] {
            let refused = NodeUrl::parse(url).expect_err(url);
            assert_eq!(refused, NodeUrlError::RawInPassword(delimiter), "{url}");
            let message = refused.to_string();
            assert!(message.contains("percent-encode"), "{message}");
            assert!(
                !message.contains("ab") && !message.contains("s3cret"),
                "{message}"
            );
        }
    }

    #[test]
    fn percent_encoded_passwords_and_plain_addresses_parse() {
        for url in [
            "redis://:ab%3Fs3%23cr%40et@h:6379",
            "redis://user:pw@h:6379/2",
            "redis://h:6379/0?protocol=resp3",
            "h:6379",
        ] {
            assert!(NodeUrl::parse(url).is_ok(), "{url}");
        }
        for url in ["redis://:6379", "not a node", "pw@h:6379"] {
            assert_eq!(NodeUrl::parse(url), Err(NodeUrlError::Invalid), "{url}");
        }
    }

    #[test]
    fn quoted_values_are_hidden() {
        assert_eq!(
            hide_quoted(r#"invalid type: string "redis://:pw@h:1", expected a sequence"#),
            "invalid type: string (value hidden), expected a sequence"
        );
    }
}
