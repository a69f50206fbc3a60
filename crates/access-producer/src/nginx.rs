//! nginx `combined` access-log lines and their conversion to the OpenResty JSON event.
//!
//! The `combined` format is
//! `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
//! "$http_referer" "$http_user_agent"`, optionally followed by more fields (many sites append
//! `"$http_x_forwarded_for"` or timings), which are ignored. nginx escapes `"`, `\` and
//! non-printable bytes in quoted fields as `\xHH`; Apache-style `\"` is accepted too.
//!
//! A converted event carries what the line can tell: the method, the query arguments decoded
//! the way `ngx.req.get_uri_args()` decodes them, the HTTP version as the number
//! `ngx.req.http_version()` returns, the user agent and referer as headers, and a
//! reconstructed `raw_reader`. The access time is not carried: the event time of the
//! pipeline is the Kafka timestamp.

use std::ops::Range;

use crate::json::{push_escaped, push_string};

/// The fields of one `combined` line, borrowed from it and still escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Combined<'a> {
    pub remote_addr: &'a [u8],
    pub remote_user: &'a [u8],
    pub time_local: &'a [u8],
    pub request: &'a [u8],
    pub status: u16,
    pub body_bytes_sent: &'a [u8],
    pub referer: &'a [u8],
    pub user_agent: &'a [u8],
}

impl<'a> Combined<'a> {
    /// Splits a line into its fields; `None` when it is not in the `combined` format.
    pub fn parse(line: &'a [u8]) -> Option<Combined<'a>> {
        let mut c = Cursor { s: line, i: 0 };
        let remote_addr = c.token()?;
        c.space()?;
        let _ident = c.token()?;
        c.space()?;
        let remote_user = c.token()?;
        c.space()?;
        let time_local = c.delimited(b'[', b']')?;
        c.space()?;
        let request = c.quoted()?;
        c.space()?;
        let status = c.token()?;
        if status.len() != 3 || !status.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let status = status
            .iter()
            .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        c.space()?;
        let body_bytes_sent = c.token()?;
        if body_bytes_sent != b"-" && !body_bytes_sent.iter().all(u8::is_ascii_digit) {
            return None;
        }
        c.space()?;
        let referer = c.quoted()?;
        c.space()?;
        let user_agent = c.quoted()?;
        if !(c.at_end() || c.peek() == Some(b' ')) {
            return None;
        }
        if time_local.is_empty() {
            return None;
        }
        Some(Combined {
            remote_addr,
            remote_user,
            time_local,
            request,
            status,
            body_bytes_sent,
            referer,
            user_agent,
        })
    }
}

/// Why a line produced no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// The line is not in the `combined` format.
    NotCombined,
    /// The line is well-formed but its request has no value for the key parameter (a `"-"`
    /// request, a TLS handshake on a plain port, another page).
    NoKey,
}

/// Converts `combined` lines into OpenResty JSON events, reusing its buffers between lines.
#[derive(Debug)]
pub struct Converter {
    /// Query parameter whose first non-empty value is the hot key.
    param: Vec<u8>,
    /// The request line with nginx's `\xHH` escapes undone.
    request: Vec<u8>,
    user_agent: Vec<u8>,
    referer: Vec<u8>,
    /// Percent-decoded names and values of the query arguments, indexed by `args`.
    decoded: Vec<u8>,
    args: Vec<Arg>,
}

/// One query argument: ranges into `Converter::decoded`; `value` is `None` for `?flag`.
#[derive(Debug, Clone)]
struct Arg {
    name: Range<usize>,
    value: Option<Range<usize>>,
}

/// Which headers a line carries: nginx logs a missing one as `-`.
#[derive(Debug, Clone, Copy)]
struct Headers {
    user_agent: bool,
    referer: bool,
}

impl Headers {
    fn of(fields: &Combined<'_>) -> Headers {
        Headers {
            user_agent: fields.user_agent != b"-",
            referer: fields.referer != b"-" && !fields.referer.is_empty(),
        }
    }
}

impl Converter {
    pub fn new(param: &str) -> Converter {
        Converter {
            param: param.as_bytes().to_vec(),
            request: Vec::new(),
            user_agent: Vec::new(),
            referer: Vec::new(),
            decoded: Vec::new(),
            args: Vec::new(),
        }
    }

    /// Writes the event of `line` into `out` and its hot key into `key` (both cleared first).
    pub fn convert(
        &mut self,
        line: &[u8],
        out: &mut Vec<u8>,
        key: &mut Vec<u8>,
    ) -> Result<(), Reject> {
        let fields = Combined::parse(line).ok_or(Reject::NotCombined)?;
        out.clear();
        key.clear();
        unescape_log(fields.request, &mut self.request);
        let Some(request) = Request::split(&self.request) else {
            return Err(Reject::NoKey);
        };
        parse_query(request.uri, &mut self.decoded, &mut self.args);
        let value = self.key_value().ok_or(Reject::NoKey)?;
        key.extend_from_slice(&self.decoded[value]);
        let headers = Headers::of(&fields);
        unescape_log(fields.user_agent, &mut self.user_agent);
        unescape_log(fields.referer, &mut self.referer);
        self.write_event(out, &request, headers);
        Ok(())
    }

    /// Where in `decoded` the first non-empty value of the key parameter is.
    #[inline]
    fn key_value(&self) -> Option<Range<usize>> {
        let found = self.args.iter().find(|a| {
            self.decoded[a.name.clone()] == self.param[..]
                && a.value.as_ref().is_some_and(|v| !v.is_empty())
        });
        found.and_then(|a| a.value.clone())
    }

    /// Writes the JSON event of `request`, with the headers the line has.
    #[inline]
    fn write_event(&self, out: &mut Vec<u8>, request: &Request<'_>, headers: Headers) {
        out.extend_from_slice(br#"{"request_module":"product_detail_info","headers":{"#);
        self.write_headers(out, headers);
        out.extend_from_slice(br#"},"uri_args":"#);
        self.write_args(out);
        out.extend_from_slice(br#","http_version":"#);
        match request.http_version() {
            Some(v) => out.extend_from_slice(v.as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(br#","method":"#);
        push_string(out, request.method);
        out.extend_from_slice(br#","raw_reader":""#);
        self.write_raw_reader(out, headers);
        out.extend_from_slice(br#"","body_data":null}"#);
    }

    /// The members of the `headers` object.
    #[inline]
    fn write_headers(&self, out: &mut Vec<u8>, headers: Headers) {
        let mut sep = "";
        if headers.user_agent {
            out.extend_from_slice(br#""user-agent":"#);
            push_string(out, &self.user_agent);
            sep = ",";
        }
        if headers.referer {
            out.extend_from_slice(sep.as_bytes());
            out.extend_from_slice(br#""referer":"#);
            push_string(out, &self.referer);
        }
    }

    /// The reconstructed request, escaped for a JSON string: request line, headers, and
    /// the blank line that ends them.
    #[inline]
    fn write_raw_reader(&self, out: &mut Vec<u8>, headers: Headers) {
        push_escaped(out, &self.request);
        out.extend_from_slice(br"\r\n");
        if headers.user_agent {
            out.extend_from_slice(b"User-Agent: ");
            push_escaped(out, &self.user_agent);
            out.extend_from_slice(br"\r\n");
        }
        if headers.referer {
            out.extend_from_slice(b"Referer: ");
            push_escaped(out, &self.referer);
            out.extend_from_slice(br"\r\n");
        }
        out.extend_from_slice(br"\r\n");
    }

    /// Writes `uri_args` as OpenResty does: a repeated name becomes an array of its values,
    /// a name without `=` is `true`; names keep the order of their first appearance.
    fn write_args(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        let d = &self.decoded;
        let mut first = true;
        for (i, arg) in self.args.iter().enumerate() {
            let name = &d[arg.name.clone()];
            if self.args[..i].iter().any(|a| &d[a.name.clone()] == name) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            push_string(out, name);
            out.push(b':');
            let same = || self.args[i..].iter().filter(|a| &d[a.name.clone()] == name);
            let write_value = |out: &mut Vec<u8>, a: &Arg| match &a.value {
                Some(v) => push_string(out, &d[v.clone()]),
                None => out.extend_from_slice(b"true"),
            };
            if same().nth(1).is_none() {
                write_value(out, arg);
            } else {
                out.push(b'[');
                for (j, a) in same().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    write_value(out, a);
                }
                out.push(b']');
            }
        }
        out.push(b'}');
    }
}

/// Splits and percent-decodes the query of `uri` into `args`, as
/// `ngx.req.get_uri_args()` does: `&`-separated, `+` is a space, empty names are dropped.
fn parse_query(uri: &[u8], decoded: &mut Vec<u8>, args: &mut Vec<Arg>) {
    decoded.clear();
    args.clear();
    let Some(q) = uri.iter().position(|&b| b == b'?') else {
        return;
    };
    let query = &uri[q + 1..];
    let query = query
        .iter()
        .position(|&b| b == b'#')
        .map_or(query, |h| &query[..h]);
    for pair in query.split(|&b| b == b'&') {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], Some(&pair[eq + 1..])),
            None => (pair, None),
        };
        if name.is_empty() {
            continue;
        }
        let start = decoded.len();
        percent_decode(name, decoded);
        let name = start..decoded.len();
        let value = value.map(|v| {
            let start = decoded.len();
            percent_decode(v, decoded);
            start..decoded.len()
        });
        args.push(Arg { name, value });
    }
}

/// The parts of an HTTP request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Request<'a> {
    method: &'a [u8],
    uri: &'a [u8],
    protocol: Option<&'a [u8]>,
}

impl<'a> Request<'a> {
    /// `METHOD URI [HTTP/x.y]`; `None` for `-`, binary noise and other non-requests.
    fn split(line: &'a [u8]) -> Option<Request<'a>> {
        let mut parts = line.split(|&b| b == b' ').filter(|p| !p.is_empty());
        let method = parts.next()?;
        if !method
            .iter()
            .all(|b| b.is_ascii_uppercase() || *b == b'-' || *b == b'_')
        {
            return None;
        }
        let uri = parts.next()?;
        let protocol = parts.next();
        if parts.next().is_some() || protocol.is_some_and(|p| !p.starts_with(b"HTTP/")) {
            return None;
        }
        Some(Request {
            method,
            uri,
            protocol,
        })
    }

    /// The version as `ngx.req.http_version()` gives it, printed as Lua's cjson prints
    /// numbers: `1.1`, `1` for 1.0, `2`, and `0.9` for a request line without a protocol.
    fn http_version(&self) -> Option<&'static str> {
        Some(match self.protocol {
            None => "0.9",
            Some(b"HTTP/1.1") => "1.1",
            Some(b"HTTP/1.0") => "1",
            Some(b"HTTP/2.0" | b"HTTP/2") => "2",
            Some(b"HTTP/3.0" | b"HTTP/3") => "3",
            Some(b"HTTP/0.9") => "0.9",
            Some(_) => return None,
        })
    }
}

/// Undoes the escaping of a quoted log field: `\xHH` (nginx), `\"` and `\\` (Apache).
fn unescape_log(s: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' {
            if s.get(i + 1) == Some(&b'x')
                && let (Some(h), Some(l)) = (
                    s.get(i + 2).and_then(|&b| hex(b)),
                    s.get(i + 3).and_then(|&b| hex(b)),
                )
            {
                out.push(h << 4 | l);
                i += 4;
                continue;
            }
            if let Some(&c @ (b'"' | b'\\')) = s.get(i + 1) {
                out.push(c);
                i += 2;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
}

/// Appends the URL-decoded form of a query component (`%HH`, `+` as space); a `%` that
/// does not start an escape is kept, as nginx keeps it. `+` is split on first, so that
/// `%2B` stays a plus. Bytes stay bytes: nginx does not insist on UTF-8.
fn percent_decode(s: &[u8], out: &mut Vec<u8>) {
    for (i, part) in s.split(|&b| b == b'+').enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend(percent_encoding::percent_decode(part));
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// A position in a line being split into fields.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn space(&mut self) -> Option<()> {
        (self.peek()? == b' ').then(|| self.i += 1)
    }

    /// A non-empty run of bytes up to the next space.
    fn token(&mut self) -> Option<&'a [u8]> {
        let rest = &self.s[self.i..];
        let n = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        (n > 0).then(|| {
            self.i += n;
            &rest[..n]
        })
    }

    /// `open … close` with nothing special inside (the `[time]` field).
    fn delimited(&mut self, open: u8, close: u8) -> Option<&'a [u8]> {
        if self.peek()? != open {
            return None;
        }
        let rest = &self.s[self.i + 1..];
        let n = rest.iter().position(|&b| b == close)?;
        self.i += n + 2;
        Some(&rest[..n])
    }

    /// `"…"` where a backslash escapes the next byte.
    fn quoted(&mut self) -> Option<&'a [u8]> {
        if self.peek()? != b'"' {
            return None;
        }
        let rest = &self.s[self.i + 1..];
        let mut j = 0;
        while j < rest.len() {
            match rest[j] {
                b'\\' => j += 2,
                b'"' => {
                    self.i += j + 2;
                    return Some(&rest[..j]);
                }
                _ => j += 1,
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const LINE: &str = r#"203.0.113.7 - - [10/Oct/2025:13:55:36 +0800] "GET /product?productId=11&shopId=1 HTTP/1.1" 200 2326 "https://shop.example/list" "Mozilla/5.0 (X11; Linux x86_64)""#;

    fn convert(line: &str) -> Result<(Value, String), Reject> {
        let mut c = Converter::new("productId");
        let (mut out, mut key) = (Vec::new(), Vec::new());
        c.convert(line.as_bytes(), &mut out, &mut key)?;
        let event = serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
        Ok((event, String::from_utf8(key).unwrap()))
    }

    #[test]
    fn combined_line_splits_into_its_fields() {
        let c = Combined::parse(LINE.as_bytes()).unwrap();
        assert_eq!(c.remote_addr, b"203.0.113.7");
        assert_eq!(c.remote_user, b"-");
        assert_eq!(c.time_local, b"10/Oct/2025:13:55:36 +0800");
        assert_eq!(c.request, b"GET /product?productId=11&shopId=1 HTTP/1.1");
        assert_eq!(c.status, 200);
        assert_eq!(c.body_bytes_sent, b"2326");
        assert_eq!(c.referer, b"https://shop.example/list");
        assert_eq!(c.user_agent, b"Mozilla/5.0 (X11; Linux x86_64)");
    }

    #[test]
    fn combined_line_becomes_the_openresty_event() {
        let (event, key) = convert(LINE).unwrap();
        assert_eq!(key, "11");
        assert_eq!(
            event,
            json!({
                "request_module": "product_detail_info",
                "headers": {
                    "user-agent": "Mozilla/5.0 (X11; Linux x86_64)",
                    "referer": "https://shop.example/list"
                },
                "uri_args": {"productId": "11", "shopId": "1"},
                "http_version": 1.1,
                "method": "GET",
                "raw_reader": "GET /product?productId=11&shopId=1 HTTP/1.1\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nReferer: https://shop.example/list\r\n\r\n",
                "body_data": null
            })
        );
    }

    #[test]
    fn converted_event_keeps_the_openresty_field_order() {
        let mut c = Converter::new("productId");
        let (mut out, mut key) = (Vec::new(), Vec::new());
        c.convert(LINE.as_bytes(), &mut out, &mut key).unwrap();
        let text = String::from_utf8(out).unwrap();
        let order: Vec<usize> = [
            "request_module",
            "headers",
            "uri_args",
            "http_version",
            "method",
            "raw_reader",
            "body_data",
        ]
        .iter()
        .map(|f| text.find(&format!("\"{f}\"")).unwrap())
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn trailing_fields_after_the_user_agent_are_ignored() {
        let line = format!("{LINE} \"198.51.100.2, 10.0.0.1\" rt=0.003 uct=\"0.001\"");
        let (event, key) = convert(&line).unwrap();
        assert_eq!(key, "11");
        assert_eq!(event["uri_args"]["shopId"], "1");
    }

    #[test]
    fn dashes_mean_absent_referer_and_user_agent() {
        let line = r#"10.0.0.1 - alice [01/Jan/2025:00:00:00 +0000] "GET /product?productId=5 HTTP/1.0" 304 - "-" "-""#;
        let (event, key) = convert(line).unwrap();
        assert_eq!(key, "5");
        assert_eq!(event["headers"], json!({}));
        assert_eq!(event["http_version"], json!(1));
        assert_eq!(
            event["raw_reader"],
            "GET /product?productId=5 HTTP/1.0\r\n\r\n"
        );
    }

    #[test]
    fn ipv6_clients_and_http2_are_understood() {
        let line = r#"2001:db8::1 - - [01/Jan/2025:00:00:00 +0000] "HEAD /product?productId=9 HTTP/2.0" 200 0 "-" "curl/8.5.0""#;
        let (event, key) = convert(line).unwrap();
        assert_eq!(key, "9");
        assert_eq!(event["method"], "HEAD");
        assert_eq!(event["http_version"], json!(2));
    }

    #[test]
    fn query_arguments_are_decoded_like_ngx_get_uri_args() {
        let line = r#"1.2.3.4 - - [t] "GET /p?productId=%37%37&q=red+shoes&flag&tag=a&tag=b&=x&pct=100%&shopId= HTTP/1.1" 200 1 "-" "-""#;
        let (event, key) = convert(line).unwrap();
        assert_eq!(key, "77");
        assert_eq!(
            event["uri_args"],
            json!({"productId": "77", "q": "red shoes", "flag": true, "tag": ["a", "b"], "pct": "100%", "shopId": ""})
        );
    }

    #[test]
    fn repeated_key_parameter_uses_its_first_value() {
        let line =
            r#"1.2.3.4 - - [t] "GET /p?productId=&productId=3&productId=4 HTTP/1.1" 200 1 "-" "-""#;
        let (event, key) = convert(line).unwrap();
        assert_eq!(key, "3");
        assert_eq!(event["uri_args"]["productId"], json!(["", "3", "4"]));
    }

    #[test]
    fn nginx_hex_escapes_are_undone_in_quoted_fields() {
        let line = r#"1.2.3.4 - - [t] "GET /p?productId=1&n=\x22x\x22 HTTP/1.1" 200 1 "-" "Agent \x22quoted\x22 \xE4\xB8\xAD""#;
        let (event, _) = convert(line).unwrap();
        assert_eq!(event["headers"]["user-agent"], "Agent \"quoted\" 中");
        assert_eq!(event["uri_args"]["n"], "\"x\"");
    }

    #[test]
    fn apache_style_backslash_quotes_are_accepted() {
        let line = r#"1.2.3.4 - - [t] "GET /p?productId=1 HTTP/1.1" 200 1 "-" "say \"hi\"""#;
        let (event, key) = convert(line).unwrap();
        assert_eq!(key, "1");
        assert_eq!(event["headers"]["user-agent"], "say \"hi\"");
    }

    #[test]
    fn request_without_the_key_parameter_has_no_key() {
        for request in [
            "GET /product?shopId=1 HTTP/1.1",
            "GET /product?productId= HTTP/1.1",
            "GET /product?productId HTTP/1.1",
            "GET /index.html HTTP/1.1",
            "-",
            r"\x16\x03\x01\x02\x00\x01\x00\x01\xFC\x03\x03",
            "GET /product?productId=1 SPDY/3",
        ] {
            let line = format!(r#"1.2.3.4 - - [t] "{request}" 400 0 "-" "-""#);
            assert_eq!(convert(&line).unwrap_err(), Reject::NoKey, "{request}");
        }
    }

    #[test]
    fn http09_request_line_without_protocol_is_version_0_9() {
        let line = r#"1.2.3.4 - - [t] "GET /p?productId=2" 200 1 "-" "-""#;
        let (event, _) = convert(line).unwrap();
        assert_eq!(event["http_version"], json!(0.9));
    }

    #[test]
    fn lines_that_are_not_combined_are_rejected() {
        for line in [
            "",
            "garbage",
            "{\"uri_args\":{\"productId\":\"1\"}}",
            // Common log format: no referer and user agent.
            r#"1.2.3.4 - - [t] "GET /p?productId=1 HTTP/1.1" 200 1"#,
            // Unterminated quote.
            r#"1.2.3.4 - - [t] "GET /p?productId=1 HTTP/1.1" 200 1 "-" "curl"#,
            // Status is not three digits.
            r#"1.2.3.4 - - [t] "GET /p?productId=1 HTTP/1.1" OK 1 "-" "-""#,
            // Bytes is not a number.
            r#"1.2.3.4 - - [t] "GET /p?productId=1 HTTP/1.1" 200 x "-" "-""#,
            // Unterminated time.
            r#"1.2.3.4 - - [t "GET /p?productId=1 HTTP/1.1" 200 1 "-" "-""#,
            // Something glued to the user agent.
            r#"1.2.3.4 - - [t] "GET /p?productId=1 HTTP/1.1" 200 1 "-" "-"x"#,
        ] {
            assert_eq!(convert(line).unwrap_err(), Reject::NotCombined, "{line}");
        }
    }

    #[test]
    fn converter_buffers_do_not_leak_between_lines() {
        let mut c = Converter::new("productId");
        let (mut out, mut key) = (Vec::new(), Vec::new());
        c.convert(LINE.as_bytes(), &mut out, &mut key).unwrap();
        let short = r#"1.2.3.4 - - [t] "GET /p?productId=2 HTTP/1.1" 200 1 "-" "-""#;
        c.convert(short.as_bytes(), &mut out, &mut key).unwrap();
        assert_eq!(key, b"2");
        let event: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(event["uri_args"], json!({"productId": "2"}));
    }

    #[test]
    fn key_parameter_name_comes_from_the_topology() {
        let mut c = Converter::new("sku");
        let (mut out, mut key) = (Vec::new(), Vec::new());
        let line = r#"1.2.3.4 - - [t] "GET /p?productId=1&sku=A-7 HTTP/1.1" 200 1 "-" "-""#;
        c.convert(line.as_bytes(), &mut out, &mut key).unwrap();
        assert_eq!(key, b"A-7");
    }
}
