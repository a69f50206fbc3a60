//! Values that carry credentials, held so that they cannot be shown by accident.
//!
//! [`NodeUrl`] is the one type for the address of a Redis node (a `redis://` URL, or
//! `host:port`). Its `Display` and `Debug` drop the userinfo (`user:password@`) and the query
//! string, so a node named in an error, a log line or a metric label never shows a password;
//! only [`NodeUrl::expose`] hands the full URL out, to the client that connects with it.

use std::fmt;

/// The address of a Redis node; shown without credentials.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NodeUrl(String);

impl NodeUrl {
    pub fn new(url: impl Into<String>) -> NodeUrl {
        NodeUrl(url.into())
    }

    /// The URL as configured, credentials included: for connecting, never for showing.
    pub fn expose(&self) -> &str {
        &self.0
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
        let url = self.0.split('?').next().unwrap_or_default();
        let (scheme, rest) = match url.split_once("://") {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, url),
        };
        // Everything up to the last `@`: a password with an unescaped `/` or `@` stays hidden.
        let shown = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
        if let Some(scheme) = scheme {
            write!(f, "{scheme}://")?;
        }
        f.write_str(shown)
    }
}

impl fmt::Debug for NodeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeUrl({self})")
    }
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
            (
                "redis+unix:///run/r.sock?pass=s3cret",
                "redis+unix:///run/r.sock",
            ),
            ("10.0.0.1:6379", "10.0.0.1:6379"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        ] {
            let node = NodeUrl::new(url);
            assert_eq!(node.to_string(), shown, "{url}");
            let debug = format!("{node:?}");
            assert!(!debug.contains("s3cret"), "{debug}");
            assert_eq!(node.expose(), url);
        }
        assert_eq!(
            NodeUrl::join(&["redis://:p@a:1".into(), "redis://b:2".into()]),
            "redis://a:1,redis://b:2"
        );
    }
}
