//! S3 object keys: prefix expressions and the fixed suffix, as Firehose writes them.
//!
//! A key is `<evaluated prefix><stream>-<version>-<yyyy-MM-dd-HH-mm-ss>-<uuid><extension>`.
//! A prefix may hold these expressions:
//!
//! | expression | value |
//! | --- | --- |
//! | `!{timestamp:<Java DateTimeFormatter pattern>}` | the arrival time of the oldest record of the object (every occurrence the same instant) |
//! | `!{firehose:random-string}` | 11 random letters and digits, new per occurrence |
//! | `!{firehose:error-output-type}` | `processing-failed`, `format-conversion-failed`, ... (error prefixes only) |
//! | `!{partitionKeyFromQuery:KEY}` | a key of the jq `MetadataExtraction` query (dynamic partitioning) |
//! | `!{partitionKeyFromLambda:KEY}` | a key the transformation returned in `metadata.partitionKeys` |
//!
//! A prefix with no `!{timestamp:...}` gets `yyyy/MM/dd/HH/` appended (not with dynamic
//! partitioning, whose prefixes are the partition). Times are in UTC unless the destination
//! names a `CustomTimeZone` (any IANA zone).
//!
//! Deliberately not here: which records share an object (the delivery pipeline).

use std::collections::BTreeMap;

use jiff::Zoned;
use jiff::tz::TimeZone;
use rand::RngExt;

/// Longest evaluated prefix AWS accepts.
pub const PREFIX_BYTES_MAX: usize = 512;
/// Length of `!{firehose:random-string}`.
const RANDOM_STRING_LEN: usize = 11;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Timestamp(Vec<DatePart>),
    RandomString,
    ErrorOutputType,
    FromQuery(String),
    FromLambda(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum DatePart {
    Text(String),
    /// A pattern letter and how many times it repeats (`yyyy` is ('y', 4)).
    Field(char, usize),
}

/// A parsed `Prefix` or `ErrorOutputPrefix`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixTemplate {
    segments: Vec<Segment>,
}

/// What the expressions of one object's prefix evaluate against.
pub struct PrefixValues<'a> {
    pub time: &'a Zoned,
    pub error_output_type: Option<&'a str>,
    pub query_keys: &'a BTreeMap<String, String>,
    pub lambda_keys: &'a BTreeMap<String, String>,
}

impl PrefixTemplate {
    /// Parses a prefix; the error is the message of an `InvalidArgumentException`.
    pub fn parse(text: &str) -> Result<PrefixTemplate, String> {
        let mut segments = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("!{") {
            if let Some(literal) = rest.get(..start)
                && !literal.is_empty()
            {
                segments.push(Segment::Literal(literal.to_string()));
            }
            let after = rest.get(start + 2..).unwrap_or("");
            let end = after
                .find('}')
                .ok_or_else(|| format!("Unterminated expression in prefix {text}"))?;
            let expression = after.get(..end).unwrap_or("");
            segments.push(parse_expression(expression)?);
            rest = after.get(end + 1..).unwrap_or("");
        }
        if !rest.is_empty() {
            segments.push(Segment::Literal(rest.to_string()));
        }
        Ok(PrefixTemplate { segments })
    }

    pub fn has_expressions(&self) -> bool {
        self.segments
            .iter()
            .any(|s| !matches!(s, Segment::Literal(_)))
    }

    pub fn has_timestamp(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Timestamp(_)))
    }

    pub fn has_error_output_type(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::ErrorOutputType))
    }

    pub fn has_partition_keys(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::FromQuery(_) | Segment::FromLambda(_)))
    }

    pub fn uses_query_keys(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::FromQuery(_)))
    }

    /// With `yyyy/MM/dd/HH/` appended when it has no timestamp expression.
    pub fn with_default_time(mut self) -> PrefixTemplate {
        if !self.has_timestamp() {
            self.segments.push(Segment::Timestamp(default_time_parts()));
        }
        self
    }

    /// The prefix for one object; `Err` names a partition key the record did not have.
    pub fn evaluate(&self, values: &PrefixValues<'_>) -> Result<String, String> {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Timestamp(parts) => format_time(&mut out, parts, values.time),
                Segment::RandomString => out.push_str(&random_string()),
                Segment::ErrorOutputType => {
                    out.push_str(values.error_output_type.unwrap_or("processing-failed"));
                }
                Segment::FromQuery(key) => out.push_str(
                    values
                        .query_keys
                        .get(key)
                        .ok_or_else(|| format!("partitionKeyFromQuery:{key} is missing"))?,
                ),
                Segment::FromLambda(key) => out.push_str(
                    values
                        .lambda_keys
                        .get(key)
                        .ok_or_else(|| format!("partitionKeyFromLambda:{key} is missing"))?,
                ),
            }
        }
        if out.len() > PREFIX_BYTES_MAX {
            return Err(format!(
                "the evaluated prefix is {} bytes, more than {PREFIX_BYTES_MAX}",
                out.len()
            ));
        }
        Ok(out)
    }
}

fn parse_expression(expression: &str) -> Result<Segment, String> {
    let (namespace, argument) = expression
        .split_once(':')
        .ok_or_else(|| format!("The expression !{{{expression}}} is not valid."))?;
    match (namespace, argument) {
        ("timestamp", pattern) => Ok(Segment::Timestamp(parse_date_pattern(pattern)?)),
        ("firehose", "random-string") => Ok(Segment::RandomString),
        ("firehose", "error-output-type") => Ok(Segment::ErrorOutputType),
        ("partitionKeyFromQuery", key) if !key.is_empty() => {
            Ok(Segment::FromQuery(key.to_string()))
        }
        ("partitionKeyFromLambda", key) if !key.is_empty() => {
            Ok(Segment::FromLambda(key.to_string()))
        }
        _ => Err(format!(
            "The expression !{{{expression}}} is not valid. Supported namespaces are timestamp, \
             firehose, partitionKeyFromQuery and partitionKeyFromLambda."
        )),
    }
}

/// Java `DateTimeFormatter` patterns: letters `y M d H h m s S D E a`, text in single quotes
/// (`''` is a quote), everything else literal.
fn parse_date_pattern(pattern: &str) -> Result<Vec<DatePart>, String> {
    let mut parts = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            let mut text = String::new();
            loop {
                match chars.next() {
                    None => {
                        return Err(format!("Unterminated quote in timestamp format {pattern}"));
                    }
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        text.push('\'');
                    }
                    Some('\'') => break,
                    Some(other) => text.push(other),
                }
            }
            if text.is_empty() {
                text.push('\'');
            }
            parts.push(DatePart::Text(text));
        } else if c.is_ascii_alphabetic() {
            if !"yMdHhmsSDEa".contains(c) {
                return Err(format!(
                    "The timestamp format {pattern} uses the unsupported pattern letter {c}."
                ));
            }
            let mut n = 1;
            while chars.peek() == Some(&c) {
                chars.next();
                n += 1;
            }
            parts.push(DatePart::Field(c, n));
        } else {
            parts.push(DatePart::Text(c.to_string()));
        }
    }
    Ok(parts)
}

fn default_time_parts() -> Vec<DatePart> {
    let text = |s: &str| DatePart::Text(s.to_string());
    vec![
        DatePart::Field('y', 4),
        text("/"),
        DatePart::Field('M', 2),
        text("/"),
        DatePart::Field('d', 2),
        text("/"),
        DatePart::Field('H', 2),
        text("/"),
    ]
}

fn pad(out: &mut String, value: i64, width: usize) {
    use std::fmt::Write as _;
    let _ = write!(out, "{value:0width$}");
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

fn format_time(out: &mut String, parts: &[DatePart], time: &Zoned) {
    for part in parts {
        match part {
            DatePart::Text(text) => out.push_str(text),
            DatePart::Field(letter, n) => {
                let n = *n;
                match letter {
                    'y' if n == 2 => pad(out, i64::from(time.year()).rem_euclid(100), 2),
                    'y' => pad(out, i64::from(time.year()), n),
                    'M' if n >= 3 => {
                        let name = MONTHS
                            .get(usize::try_from(time.month() - 1).unwrap_or(0))
                            .copied()
                            .unwrap_or("");
                        out.push_str(if n == 3 {
                            name.get(..3).unwrap_or(name)
                        } else {
                            name
                        });
                    }
                    'M' => pad(out, i64::from(time.month()), n),
                    'd' => pad(out, i64::from(time.day()), n),
                    'H' => pad(out, i64::from(time.hour()), n),
                    'h' => {
                        let hour = i64::from(time.hour()) % 12;
                        pad(out, if hour == 0 { 12 } else { hour }, n);
                    }
                    'm' => pad(out, i64::from(time.minute()), n),
                    's' => pad(out, i64::from(time.second()), n),
                    'S' => {
                        let millis = format!("{:03}", time.millisecond());
                        let digits: String = millis
                            .chars()
                            .chain(std::iter::repeat('0'))
                            .take(n)
                            .collect();
                        out.push_str(&digits);
                    }
                    'D' => pad(out, i64::from(time.day_of_year()), n),
                    'E' => {
                        let idx =
                            usize::try_from(time.weekday().to_monday_zero_offset()).unwrap_or(0);
                        let name = WEEKDAYS.get(idx).copied().unwrap_or("");
                        out.push_str(if n >= 4 {
                            name
                        } else {
                            name.get(..3).unwrap_or(name)
                        });
                    }
                    'a' => out.push_str(if time.hour() < 12 { "AM" } else { "PM" }),
                    _ => {}
                }
            }
        }
    }
}

fn random_string() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..RANDOM_STRING_LEN)
        .map(|_| {
            let idx = rng.random_range(0..ALPHABET.len());
            char::from(ALPHABET.get(idx).copied().unwrap_or(b'a'))
        })
        .collect()
}

/// The zone of `CustomTimeZone` (`None` or empty: UTC); the error is an API message.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, String> {
    match name {
        None | Some("") | Some("UTC") => Ok(TimeZone::UTC),
        Some(name) => TimeZone::get(name)
            .map_err(|_| format!("CustomTimeZone {name} is not a valid time zone.")),
    }
}

/// The instant `epoch_ms` in `zone`.
pub fn zoned(epoch_ms: i64, zone: &TimeZone) -> Zoned {
    let timestamp =
        jiff::Timestamp::from_millisecond(epoch_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    timestamp.to_zoned(zone.clone())
}

/// The fixed part of an object name after the prefix (without extension):
/// `<stream>-<version>-yyyy-MM-dd-HH-mm-ss-<uuid>`.
pub fn object_suffix(stream: &str, version: u64, time: &Zoned) -> String {
    format!(
        "{stream}-{version}-{:04}-{:02}-{:02}-{:02}-{:02}-{:02}-{}",
        time.year(),
        time.month(),
        time.day(),
        time.hour(),
        time.minute(),
        time.second(),
        uuid::Uuid::new_v4()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evaluate(prefix: &str, epoch_ms: i64) -> Result<String, String> {
        let keys = BTreeMap::from([("customer".to_string(), "c1".to_string())]);
        let lambda = BTreeMap::from([("year".to_string(), "2024".to_string())]);
        let time = zoned(epoch_ms, &TimeZone::UTC);
        PrefixTemplate::parse(prefix)?
            .with_default_time()
            .evaluate(&PrefixValues {
                time: &time,
                error_output_type: Some("processing-failed"),
                query_keys: &keys,
                lambda_keys: &lambda,
            })
    }

    // 2018-08-27T10:30:05.123Z
    const T: i64 = 1_535_365_805_123;

    #[test]
    fn evaluates_expressions() {
        assert_eq!(evaluate("", T).as_deref(), Ok("2018/08/27/10/"));
        assert_eq!(
            evaluate("myPrefix/", T).as_deref(),
            Ok("myPrefix/2018/08/27/10/")
        );
        assert_eq!(
            evaluate("logs/!{timestamp:yyyy}/!{timestamp:MM}/", T).as_deref(),
            Ok("logs/2018/08/")
        );
        assert_eq!(
            evaluate(
                "!{timestamp:'year='yyyy'/month='MM'/day='dd/HH:mm:ss.SSS}/",
                T
            )
            .as_deref(),
            Ok("year=2018/month=08/day=27/10:30:05.123/")
        );
        assert_eq!(
            evaluate("e/!{firehose:error-output-type}/!{timestamp:yyyy-MM-dd}", T).as_deref(),
            Ok("e/processing-failed/2018-08-27")
        );
        assert_eq!(
            evaluate("c=!{partitionKeyFromQuery:customer}/y=!{partitionKeyFromLambda:year}/!{timestamp:EEE MMM}", T)
                .as_deref(),
            Ok("c=c1/y=2024/Mon Aug")
        );
        assert!(evaluate("!{partitionKeyFromQuery:nope}/", T).is_err());
        let random = evaluate("r/!{firehose:random-string}/", T).expect("evaluates");
        assert_eq!(random.len(), "r//2018/08/27/10/".len() + RANDOM_STRING_LEN);
    }

    #[test]
    fn refuses_bad_prefixes() {
        for bad in [
            "!{timestamp:yyyy",
            "!{unknown:x}",
            "!{timestamp:yyyy-QQ}",
            "!{firehose:nope}",
            "!{timestamp:'x}",
        ] {
            assert!(PrefixTemplate::parse(bad).is_err(), "{bad}");
        }
        let parsed = PrefixTemplate::parse("a/!{firehose:error-output-type}/").expect("parses");
        assert!(
            parsed.has_error_output_type() && parsed.has_expressions() && !parsed.has_timestamp()
        );
    }

    #[test]
    fn suffixes_and_zones() {
        let time = zoned(T, &TimeZone::UTC);
        let suffix = object_suffix("orders", 3, &time);
        assert!(
            suffix.starts_with("orders-3-2018-08-27-10-30-05-"),
            "{suffix}"
        );
        assert_eq!(suffix.len(), "orders-3-2018-08-27-10-30-05-".len() + 36);
        let tokyo = time_zone(Some("Asia/Tokyo")).expect("known zone");
        assert_eq!(zoned(T, &tokyo).hour(), 19);
        assert!(time_zone(Some("Mars/Olympus")).is_err());
    }
}
