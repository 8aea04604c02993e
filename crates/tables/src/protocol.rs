//! The three protocols CloudWatch clients speak, as pure functions of the body bytes:
//! awsQuery (form-encoded, XML answers; the Java SDK v2 in KCL's jars), JSON 1.0 with
//! `X-Amz-Target: GraniteServiceVersion20100801.<Operation>`, and Smithy RPC v2 CBOR
//! (`/service/GraniteServiceVersion20100801/operation/<Operation>`; recent botocore).
//!
//! Requests become one `serde_json::Value` tree whatever the protocol: awsQuery's flattened
//! `MetricData.member.1.Value=...` keys are rebuilt into lists and maps (scalars stay
//! strings; `metrics.rs` reads numbers and timestamps from either form), CBOR tag-1 dates
//! become epoch seconds. Answers are built from a tree in which a timestamp is the object
//! `{"$timestamp": <epoch seconds>}`, so each encoder can render it its own way (ISO 8601,
//! epoch number, CBOR tag 1). The server crate owns HTTP; this module knows only bytes.

use serde_json::{Map, Value};

/// A request's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// awsQuery: `application/x-www-form-urlencoded`, `Action=...`, XML answers.
    Query,
    /// `application/x-amz-json-1.0` with `X-Amz-Target`.
    Json10,
    /// Smithy RPC v2 CBOR (`smithy-protocol: rpc-v2-cbor`).
    RpcV2Cbor,
}

/// An HTTP answer without HTTP types: status, content type, extra headers, body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json10(status: u16, body: Vec<u8>) -> Answer {
        Answer {
            status,
            content_type: "application/x-amz-json-1.0",
            headers: Vec::new(),
            body,
        }
    }
}

/// Form bodies and CBOR maps larger than this many entries are refused (a request is at most
/// 1,000 metric data of 30 dimensions and 150 values each).
const ENTRIES_MAX: usize = 1 << 20;
/// Nesting of CBOR input.
const CBOR_DEPTH_MAX: usize = 32;

pub const TIMESTAMP_KEY: &str = "$timestamp";

pub fn timestamp(secs: f64) -> Value {
    let mut m = Map::new();
    m.insert(TIMESTAMP_KEY.into(), secs.into());
    Value::Object(m)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An awsQuery body: the action and the parameters as a tree.
pub fn decode_query(body: &[u8]) -> Result<(String, Value), String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
    let mut root = Value::Object(Map::new());
    let mut action = String::new();
    for (n, pair) in text.split('&').filter(|p| !p.is_empty()).enumerate() {
        if n > ENTRIES_MAX {
            return Err("too many parameters".into());
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key);
        let value = percent_decode(value);
        match key.as_str() {
            "Action" => action = value,
            "Version" => {}
            _ => insert_path(&mut root, &key, value),
        }
    }
    Ok((action, lists_from_maps(root)))
}

/// Inserts `a.member.1.b = v` as `{"a": {"#1": {"b": v}}}`; `lists_from_maps` then turns the
/// `#n` maps into lists.
fn insert_path(root: &mut Value, key: &str, value: String) {
    let parts: Vec<&str> = key.split('.').collect();
    let mut current = root;
    let mut i = 0;
    while let Some(part) = parts.get(i) {
        let (segment, step) = if (*part == "member" || *part == "entry")
            && parts.get(i + 1).is_some_and(|n| n.parse::<usize>().is_ok())
        {
            (format!("#{}", parts.get(i + 1).copied().unwrap_or("0")), 2)
        } else {
            ((*part).to_string(), 1)
        };
        let last = i + step >= parts.len();
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        let Value::Object(map) = current else {
            return;
        };
        if last {
            map.insert(segment, Value::String(value));
            return;
        }
        current = map
            .entry(segment)
            .or_insert_with(|| Value::Object(Map::new()));
        i += step;
    }
}

fn lists_from_maps(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            if !map.is_empty() && map.keys().all(|k| k.starts_with('#')) {
                let mut entries: Vec<(usize, Value)> = map
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k.trim_start_matches('#').parse().unwrap_or(0),
                            lists_from_maps(v),
                        )
                    })
                    .collect();
                entries.sort_by_key(|(n, _)| *n);
                Value::Array(entries.into_iter().map(|(_, v)| v).collect())
            } else {
                Value::Object(
                    map.into_iter()
                        .map(|(k, v)| (k, lists_from_maps(v)))
                        .collect(),
                )
            }
        }
        other => other,
    }
}

/// An RPC v2 CBOR body as a tree.
pub fn decode_cbor(body: &[u8]) -> Result<Value, String> {
    if body.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let value: ciborium::Value = ciborium::from_reader(body).map_err(|e| e.to_string())?;
    cbor_to_json(value, 0)
}

fn cbor_to_json(value: ciborium::Value, depth: usize) -> Result<Value, String> {
    use base64::Engine as _;
    if depth > CBOR_DEPTH_MAX {
        return Err("nesting too deep".into());
    }
    Ok(match value {
        ciborium::Value::Null => Value::Null,
        ciborium::Value::Bool(b) => Value::Bool(b),
        ciborium::Value::Integer(i) => {
            let i: i128 = i.into();
            match i64::try_from(i) {
                Ok(i) => Value::from(i),
                Err(_) => Value::from(i as f64),
            }
        }
        ciborium::Value::Float(f) => Value::from(f),
        ciborium::Value::Text(t) => Value::String(t),
        ciborium::Value::Bytes(b) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        ciborium::Value::Tag(1, inner) => cbor_to_json(*inner, depth + 1)?,
        ciborium::Value::Tag(_, inner) => cbor_to_json(*inner, depth + 1)?,
        ciborium::Value::Array(list) => {
            if list.len() > ENTRIES_MAX {
                return Err("list too long".into());
            }
            Value::Array(
                list.into_iter()
                    .map(|v| cbor_to_json(v, depth + 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        ciborium::Value::Map(entries) => {
            let mut map = Map::new();
            for (k, v) in entries {
                let ciborium::Value::Text(k) = k else {
                    return Err("map keys must be text".into());
                };
                map.insert(k, cbor_to_json(v, depth + 1)?);
            }
            Value::Object(map)
        }
        _ => Value::Null,
    })
}

fn json_to_cbor(value: &Value) -> ciborium::Value {
    match value {
        Value::Null => ciborium::Value::Null,
        Value::Bool(b) => ciborium::Value::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => ciborium::Value::Integer(i.into()),
            None => ciborium::Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => ciborium::Value::Text(s.clone()),
        Value::Array(list) => ciborium::Value::Array(list.iter().map(json_to_cbor).collect()),
        Value::Object(map) => {
            if let Some(secs) = map.get(TIMESTAMP_KEY).and_then(Value::as_f64)
                && map.len() == 1
            {
                return ciborium::Value::Tag(1, Box::new(ciborium::Value::Float(secs)));
            }
            ciborium::Value::Map(
                map.iter()
                    .map(|(k, v)| (ciborium::Value::Text(k.clone()), json_to_cbor(v)))
                    .collect(),
            )
        }
    }
}

fn json_plain(value: &Value) -> Value {
    match value {
        Value::Array(list) => Value::Array(list.iter().map(json_plain).collect()),
        Value::Object(map) => {
            if let Some(secs) = map.get(TIMESTAMP_KEY)
                && map.len() == 1
            {
                return secs.clone();
            }
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), json_plain(v)))
                    .collect(),
            )
        }
        other => other.clone(),
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn xml(value: &Value, out: &mut String) {
    match value {
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => out.push_str(&xml_escape(s)),
        Value::Array(list) => {
            for v in list {
                out.push_str("<member>");
                xml(v, out);
                out.push_str("</member>");
            }
        }
        Value::Object(map) => {
            if let Some(secs) = map.get(TIMESTAMP_KEY).and_then(Value::as_f64)
                && map.len() == 1
            {
                out.push_str(&iso8601(secs));
                return;
            }
            for (k, v) in map {
                out.push('<');
                out.push_str(k);
                out.push('>');
                xml(v, out);
                out.push_str("</");
                out.push_str(k);
                out.push('>');
            }
        }
    }
}

const XMLNS: &str = "http://monitoring.amazonaws.com/doc/2010-08-01/";

/// A successful answer in the request's protocol.
pub fn encode_ok(protocol: Protocol, operation: &str, result: &Value, request_id: &str) -> Answer {
    match protocol {
        Protocol::Json10 => Answer::json10(200, json_plain(result).to_string().into_bytes()),
        Protocol::RpcV2Cbor => cbor_answer(200, result),
        Protocol::Query => {
            let mut body = format!("<{operation}Response xmlns=\"{XMLNS}\">");
            if result.as_object().is_some_and(|m| !m.is_empty()) {
                body.push_str(&format!("<{operation}Result>"));
                xml(result, &mut body);
                body.push_str(&format!("</{operation}Result>"));
            }
            body.push_str(&format!(
                "<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{operation}Response>"
            ));
            Answer {
                status: 200,
                content_type: "text/xml",
                headers: Vec::new(),
                body: body.into_bytes(),
            }
        }
    }
}

fn cbor_answer(status: u16, value: &Value) -> Answer {
    let mut body = Vec::new();
    if ciborium::into_writer(&json_to_cbor(value), &mut body).is_err() {
        body.clear();
    }
    Answer {
        status,
        content_type: "application/cbor",
        headers: vec![("smithy-protocol", "rpc-v2-cbor".to_string())],
        body,
    }
}

/// An error answer: `code` is the awsQuery error code (`InvalidParameterValue`), `shape`
/// the model's exception shape (`InvalidParameterValueException`).
pub fn encode_error(
    protocol: Protocol,
    status: u16,
    code: &str,
    shape: &str,
    message: &str,
    request_id: &str,
) -> Answer {
    let fault = if status >= 500 { "Receiver" } else { "Sender" };
    let query_error = ("x-amzn-query-error", format!("{code};{fault}"));
    match protocol {
        Protocol::Json10 => {
            let mut answer = Answer::json10(
                status,
                serde_json::json!({"__type": shape, "message": message})
                    .to_string()
                    .into_bytes(),
            );
            answer.headers.push(query_error);
            answer
        }
        Protocol::RpcV2Cbor => {
            let mut answer = cbor_answer(
                status,
                &serde_json::json!({"__type": shape, "message": message}),
            );
            answer.headers.push(query_error);
            answer
        }
        Protocol::Query => {
            let body = format!(
                "<ErrorResponse xmlns=\"{XMLNS}\"><Error><Type>{fault}</Type><Code>{code}</Code><Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
                xml_escape(message)
            );
            Answer {
                status,
                content_type: "text/xml",
                headers: Vec::new(),
                body: body.into_bytes(),
            }
        }
    }
}

/// Epoch seconds from a number, a numeric string or an ISO 8601 date-time (UTC, `Z` or an
/// offset), the forms the three protocols send.
pub fn parse_time(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok().or_else(|| parse_iso8601(s)),
        Value::Object(m) => m.get(TIMESTAMP_KEY).and_then(Value::as_f64),
        _ => None,
    }
}

fn parse_iso8601(text: &str) -> Option<f64> {
    // YYYY-MM-DDTHH:MM:SS[.fff][Z|+HH:MM]
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut d = date.split('-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    let (clock, offset_secs) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else if let Some(pos) = time.rfind(['+', '-']) {
        let (c, off) = time.split_at(pos);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let off = off.get(1..)?;
        let (h, m) = off
            .split_once(':')
            .unwrap_or((off.get(..2)?, off.get(2..).unwrap_or("0")));
        (
            c,
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().unwrap_or(0) * 60),
        )
    } else {
        (time, 0)
    };
    let mut t = clock.split(':');
    let hour: i64 = t.next()?.parse().ok()?;
    let minute: i64 = t.next()?.parse().ok()?;
    let second: f64 = t.next().unwrap_or("0").parse().ok()?;
    let days = days_from_civil(year, month, day);
    Some((days * 86400 + hour * 3600 + minute * 60 - offset_secs) as f64 + second)
}

// Howard Hinnant's civil-date algorithms.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub fn iso8601(secs: f64) -> String {
    let millis = (secs * 1000.0).round() as i64;
    let days = millis.div_euclid(86_400_000);
    let rest = millis.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_bodies_become_trees() {
        let body = b"Action=PutMetricData&Version=2010-08-01&Namespace=app&MetricData.member.1.MetricName=Rate&MetricData.member.1.Dimensions.member.1.Name=Op&MetricData.member.1.Dimensions.member.1.Value=Get%20Records&MetricData.member.1.Value=2.5&MetricData.member.2.MetricName=Time";
        let (action, tree) = decode_query(body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(action, "PutMetricData");
        assert_eq!(
            tree["MetricData"][0]["Dimensions"][0]["Value"],
            "Get Records"
        );
        assert_eq!(tree["MetricData"][1]["MetricName"], "Time");
    }

    #[test]
    fn dates_round_trip() {
        let secs = parse_time(&Value::String("2024-02-29T12:34:56.789Z".into())).unwrap_or(0.0);
        assert_eq!(iso8601(secs), "2024-02-29T12:34:56.789Z");
    }
}
