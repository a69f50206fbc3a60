//! Rows to JSON: a plan made once per query from its result columns, then applied to every
//! row without looking at type names again. The mapping is documented on the parent module.

use std::collections::HashSet;
use std::fmt::Write as _;

use sqlx::mysql::types::MySqlTime;
use sqlx::mysql::{MySql, MySqlColumn, MySqlRow, MySqlValueRef};
use sqlx::{Column, Decode, Row, TypeInfo, ValueRef};

use super::MysqlError;

/// One row as a JSON object text, members in select order. Always valid JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowJson(String);

impl RowJson {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The row parsed, for callers that want to look inside.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).expect("RowJson always holds valid JSON")
    }
}

/// A row that could not be encoded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFailure {
    /// The row's id when it could be read.
    pub key: Option<String>,
    pub column: String,
    pub reason: String,
}

/// How a column is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Signed,
    Unsigned,
    Bit,
    Float,
    Double,
    Decimal,
    /// `zulu`: TIMESTAMP (stored in UTC; the session time zone is `+00:00`) vs DATETIME.
    DateTime {
        zulu: bool,
    },
    Date,
    Time,
    Json,
    /// Character and binary strings alike: UTF-8 is required either way.
    Text,
    Null,
}

#[derive(Debug, Clone)]
struct ColumnPlan {
    name: String,
    /// `"name":`, escaped once.
    member: String,
    kind: Kind,
}

/// How the rows of one query are encoded and keyed.
#[derive(Debug, Clone)]
pub(crate) struct RowPlan {
    columns: Vec<ColumnPlan>,
    id: usize,
    id_is_integer: bool,
}

/// A table column, `(schema.table, column)`, as sqlx reports column origins.
pub(crate) type Origin = (String, String);

/// The origin of a result column, if it is a plain table column.
pub(crate) fn origin(column: &MySqlColumn) -> Option<Origin> {
    match column.origin() {
        sqlx::ColumnOrigin::Table(t) => Some((t.table.to_string(), t.name.to_string())),
        _ => None,
    }
}

impl RowPlan {
    /// A plan for these result columns; `json` lists the table columns known to hold JSON
    /// although the wire type says text (MariaDB).
    pub(crate) fn new(
        columns: &[MySqlColumn],
        json: &HashSet<Origin>,
    ) -> Result<RowPlan, MysqlError> {
        let mut plans = Vec::with_capacity(columns.len());
        for column in columns {
            let type_name = column.type_info().name();
            let kind = match kind_of(type_name) {
                Kind::Text if origin(column).is_some_and(|o| json.contains(&o)) => Kind::Json,
                kind => kind,
            };
            let mut member = String::new();
            push_json_string(&mut member, column.name());
            member.push(':');
            plans.push(ColumnPlan {
                name: column.name().to_string(),
                member,
                kind,
            });
        }
        let Some(id) = plans.iter().position(|c| c.name.eq_ignore_ascii_case("id")) else {
            return Err(MysqlError::BadQuery(
                "expected a column named `id` in the result (the hot key is matched against it)"
                    .into(),
            ));
        };
        let id_is_integer = match plans[id].kind {
            Kind::Signed | Kind::Unsigned => true,
            Kind::Text => false,
            other => {
                return Err(MysqlError::BadQuery(format!(
                    "the `id` column must be an integer or a string, not {other:?}"
                )));
            }
        };
        Ok(RowPlan {
            columns: plans,
            id,
            id_is_integer,
        })
    }

    /// Whether ids are integers: keys that are not integers then cannot match any row.
    pub(crate) fn id_is_integer(&self) -> bool {
        self.id_is_integer
    }

    /// The row's id as text (integers in canonical decimal form) and its JSON.
    pub(crate) fn encode(&self, row: &MySqlRow) -> Result<(String, RowJson), RowFailure> {
        if row.len() != self.columns.len() {
            return Err(RowFailure {
                key: None,
                column: String::new(),
                reason: format!(
                    "the query returned {} columns, {} when it was prepared",
                    row.len(),
                    self.columns.len()
                ),
            });
        }
        let mut id = None;
        let mut out = String::with_capacity(64 + 48 * self.columns.len());
        out.push('{');
        let mut failure = None;
        for (i, column) in self.columns.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&column.member);
            let start = out.len();
            match row.try_get_raw(i) {
                Ok(value) => {
                    if let Err(reason) = write_value(&mut out, column.kind, value) {
                        failure.get_or_insert((column.name.clone(), reason));
                    }
                }
                Err(e) => {
                    failure.get_or_insert((column.name.clone(), e.to_string()));
                }
            }
            if i == self.id {
                // Unquoted `null` is SQL NULL; strings are quoted and the key is inside.
                id = match &out[start..] {
                    "" | "null" => None,
                    written if column.kind == Kind::Text => serde_json::from_str(written).ok(),
                    written => Some(written.to_string()),
                };
            }
        }
        out.push('}');
        match (failure, id) {
            (None, Some(id)) => Ok((id, RowJson(out))),
            (None, None) => Err(RowFailure {
                key: None,
                column: self.columns[self.id].name.clone(),
                reason: "the id is NULL".into(),
            }),
            (Some((column, reason)), id) => Err(RowFailure {
                key: id,
                column,
                reason,
            }),
        }
    }
}

fn kind_of(type_name: &str) -> Kind {
    match type_name {
        "NULL" => Kind::Null,
        "BIT" => Kind::Bit,
        "FLOAT" => Kind::Float,
        "DOUBLE" => Kind::Double,
        "DECIMAL" => Kind::Decimal,
        "TIMESTAMP" => Kind::DateTime { zulu: true },
        "DATETIME" => Kind::DateTime { zulu: false },
        "DATE" => Kind::Date,
        "TIME" => Kind::Time,
        "JSON" => Kind::Json,
        "BOOLEAN" | "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => {
            Kind::Signed
        }
        t if t.ends_with(" UNSIGNED") => Kind::Unsigned,
        _ => Kind::Text,
    }
}

type Reason = String;

fn write_value(out: &mut String, kind: Kind, value: MySqlValueRef<'_>) -> Result<(), Reason> {
    if value.is_null() {
        out.push_str("null");
        return Ok(());
    }
    match kind {
        Kind::Null => out.push_str("null"),
        Kind::Signed => {
            let n = <i64 as Decode<MySql>>::decode(value).map_err(|e| e.to_string())?;
            let _ = write!(out, "{n}");
        }
        Kind::Unsigned | Kind::Bit => {
            let n = <u64 as Decode<MySql>>::decode(value).map_err(|e| e.to_string())?;
            let _ = write!(out, "{n}");
        }
        Kind::Float => {
            // Printed as f32 so that a FLOAT 0.1 reads 0.1, not 0.10000000149011612.
            let n = <f32 as Decode<MySql>>::decode(value).map_err(|e| e.to_string())?;
            write_float(out, n.is_finite(), &n.to_string())?;
        }
        Kind::Double => {
            let n = <f64 as Decode<MySql>>::decode(value).map_err(|e| e.to_string())?;
            write_float(out, n.is_finite(), &n.to_string())?;
        }
        Kind::Decimal => push_json_string(out, text(value)?),
        Kind::Json => {
            let doc = text(value)?.trim();
            serde_json::from_str::<serde::de::IgnoredAny>(doc)
                .map_err(|e| format!("JSON column does not hold JSON: {e}"))?;
            out.push_str(doc);
        }
        Kind::Text => push_json_string(out, text(value)?),
        Kind::DateTime { zulu } => {
            let bytes = <&[u8] as Decode<MySql>>::decode(value).map_err(|e| e.to_string())?;
            out.push('"');
            write_datetime(out, bytes, zulu)?;
            out.push('"');
        }
        Kind::Date => {
            let bytes = <&[u8] as Decode<MySql>>::decode(value).map_err(|e| e.to_string())?;
            out.push('"');
            write_date(out, bytes)?;
            out.push('"');
        }
        Kind::Time => write_time(out, value)?,
    }
    Ok(())
}

/// A `TIME` as a JSON string, `"-838:59:59.000000"` at most.
fn write_time(out: &mut String, value: MySqlValueRef<'_>) -> Result<(), Reason> {
    let time = <MySqlTime as Decode<MySql>>::decode(value).map_err(|e| e.to_string())?;
    // Not `time.is_negative()`: sqlx 0.9 returns the positive flag from it.
    let sign = if time.sign().is_negative() { "-" } else { "" };
    let _ = write!(
        out,
        "\"{sign}{:02}:{:02}:{:02}",
        time.hours(),
        time.minutes(),
        time.seconds()
    );
    write_fraction(out, time.microseconds());
    out.push('"');
    Ok(())
}

fn text(value: MySqlValueRef<'_>) -> Result<&str, Reason> {
    let bytes = <&[u8] as Decode<MySql>>::decode(value).map_err(|e| e.to_string())?;
    std::str::from_utf8(bytes).map_err(|_| "not valid UTF-8".to_string())
}

fn write_float(out: &mut String, finite: bool, text: &str) -> Result<(), Reason> {
    if !finite {
        return Err(format!("{text} has no JSON form"));
    }
    out.push_str(text);
    Ok(())
}

/// A DATETIME/TIMESTAMP value. Prepared statements return the binary form (a length byte,
/// then year, month, day, hour, minute, second, microseconds); a text-protocol value starts
/// with a digit instead and is converted from `YYYY-MM-DD HH:MM:SS[.f]`.
fn write_datetime(out: &mut String, bytes: &[u8], zulu: bool) -> Result<(), Reason> {
    let z = if zulu { "Z" } else { "" };
    if bytes.first().is_some_and(u8::is_ascii_digit) {
        let text = std::str::from_utf8(bytes).map_err(|_| "not valid UTF-8".to_string())?;
        let (date, time) = text.split_once(' ').unwrap_or((text, "00:00:00"));
        let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
        let micros: u32 = format!("{fraction:0<6}")[..6].parse().unwrap_or(0);
        let _ = write!(out, "{date}T{hms}");
        write_fraction(out, micros);
        out.push_str(z);
        return Ok(());
    }
    let (len, rest) = bytes.split_first().ok_or("empty date-time value")?;
    let field = |i: usize| rest.get(i).copied().unwrap_or(0);
    if rest.len() < usize::from(*len) || !matches!(len, 4 | 7 | 11) {
        return Err(format!(
            "unexpected date-time encoding of {} bytes",
            bytes.len()
        ));
    }
    let year = u16::from_le_bytes([field(0), field(1)]);
    let micros = if *len == 11 {
        u32::from_le_bytes([field(7), field(8), field(9), field(10)])
    } else {
        0
    };
    let _ = write!(
        out,
        "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        field(2),
        field(3),
        field(4),
        field(5),
        field(6)
    );
    write_fraction(out, micros);
    out.push_str(z);
    Ok(())
}

/// Milliseconds always (the project's unit), microseconds when they are not zero.
fn write_fraction(out: &mut String, micros: u32) {
    if micros.is_multiple_of(1000) {
        let _ = write!(out, ".{:03}", micros / 1000);
    } else {
        let _ = write!(out, ".{micros:06}");
    }
}

fn write_date(out: &mut String, bytes: &[u8]) -> Result<(), Reason> {
    if bytes.first().is_some_and(u8::is_ascii_digit) {
        out.push_str(std::str::from_utf8(bytes).map_err(|_| "not valid UTF-8".to_string())?);
        return Ok(());
    }
    match bytes {
        [4, y0, y1, m, d, ..] => {
            let _ = write!(out, "{:04}-{m:02}-{d:02}", u16::from_le_bytes([*y0, *y1]));
            Ok(())
        }
        _ => Err(format!("unexpected date encoding of {} bytes", bytes.len())),
    }
}

/// Appends `s` as a JSON string literal.
pub(crate) fn push_json_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut plain = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push_str(escape);
        }
        plain = i + c.len_utf8();
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datetime(bytes: &[u8], zulu: bool) -> String {
        let mut s = String::new();
        write_datetime(&mut s, bytes, zulu).unwrap();
        s
    }

    #[test]
    fn binary_timestamp_is_rfc3339_utc_with_milliseconds() {
        // 2024-05-01 12:34:56.250000
        let mut b = vec![11, 0xe8, 0x07, 5, 1, 12, 34, 56];
        b.extend_from_slice(&250_000u32.to_le_bytes());
        assert_eq!(datetime(&b, true), "2024-05-01T12:34:56.250Z");
        assert_eq!(datetime(&b, false), "2024-05-01T12:34:56.250");
    }

    #[test]
    fn short_binary_forms_mean_zero_time_parts() {
        assert_eq!(
            datetime(&[4, 0xe8, 0x07, 2, 29], true),
            "2024-02-29T00:00:00.000Z"
        );
        assert_eq!(
            datetime(&[7, 0xe8, 0x07, 2, 29, 1, 2, 3], true),
            "2024-02-29T01:02:03.000Z"
        );
    }

    #[test]
    fn sub_millisecond_digits_are_kept() {
        let mut b = vec![11, 0xe8, 0x07, 1, 1, 0, 0, 0];
        b.extend_from_slice(&123_456u32.to_le_bytes());
        assert_eq!(datetime(&b, true), "2024-01-01T00:00:00.123456Z");
    }

    #[test]
    fn text_protocol_timestamps_convert_the_same_way() {
        assert_eq!(
            datetime(b"2024-05-01 12:34:56.25", true),
            "2024-05-01T12:34:56.250Z"
        );
        assert_eq!(
            datetime(b"2024-05-01 12:34:56", true),
            "2024-05-01T12:34:56.000Z"
        );
    }

    #[test]
    fn binary_date() {
        let mut s = String::new();
        write_date(&mut s, &[4, 0xe8, 0x07, 12, 31]).unwrap();
        assert_eq!(s, "2024-12-31");
    }

    #[test]
    fn strings_are_escaped_as_json() {
        let mut s = String::new();
        push_json_string(&mut s, "a\"b\\c\nd\u{1}é€");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é€""#);
        assert_eq!(
            serde_json::from_str::<String>(&s).unwrap(),
            "a\"b\\c\nd\u{1}é€"
        );
    }

    #[test]
    fn type_names_map_to_kinds() {
        assert_eq!(kind_of("BIGINT"), Kind::Signed);
        assert_eq!(kind_of("BIGINT UNSIGNED"), Kind::Unsigned);
        assert_eq!(kind_of("DECIMAL"), Kind::Decimal);
        assert_eq!(kind_of("TIMESTAMP"), Kind::DateTime { zulu: true });
        assert_eq!(kind_of("LONGBLOB"), Kind::Text);
        assert_eq!(kind_of("VARCHAR"), Kind::Text);
        assert_eq!(kind_of("JSON"), Kind::Json);
    }
}
