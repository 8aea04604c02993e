//! JSON text to [`Value`] and typed values to JSON text, as AWS JSON 1.1 uses it.
//!
//! Parsing is serde_json driving a depth-bounded visitor that builds [`Value`] directly (no
//! intermediate `serde_json::Value`); it rejects malformed text, invalid UTF-8, lone surrogates,
//! trailing garbage and nesting deeper than [`DEPTH_MAX`]. Writing is hand-rolled into a
//! `Vec<u8>`: blobs are base64-encoded straight into the output, timestamps are epoch seconds
//! with millisecond precision (`1700000000.123`, or `1700000000` when whole). Deliberately not
//! here: any knowledge of shapes (blobs in requests are still strings after parsing; the type
//! checker decodes them).

use crate::EpochMillis;
use crate::encode::Writer;
use crate::error::SyntaxError;
use crate::value::Value;
use base64::Engine as _;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::io::Write as _;

/// The deepest nesting of objects and arrays a request may have.
pub const DEPTH_MAX: usize = 64;

/// Parse one JSON document.
pub fn parse(body: &[u8]) -> Result<Value, SyntaxError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = ValueSeed { depth: 0 }
        .deserialize(&mut deserializer)
        .map_err(syntax_error)?;
    deserializer.end().map_err(syntax_error)?;
    Ok(value)
}

/// Whether `body` is one JSON document [`parse`] accepts, without building the tree.
///
/// The server checks every body's syntax before it looks at the operation (AWS's order); this
/// drives the same serde_json deserializer with the same depth bound as [`parse`] and a
/// visitor that keeps nothing, so it accepts exactly what `parse` accepts at a fraction of the
/// cost (no `String` per member, no copy of the base64 text).
pub fn is_valid(body: &[u8]) -> bool {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    SkipSeed { depth: 0 }.deserialize(&mut deserializer).is_ok() && deserializer.end().is_ok()
}

/// [`ValueSeed`] with a visitor that keeps nothing.
struct SkipSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for SkipSeed {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(SkipVisitor { depth: self.depth })
    }
}

/// A map key, read as [`ValueVisitor::visit_map`] reads it (as a string) and dropped.
struct SkipKey;

impl<'de> DeserializeSeed<'de> for SkipKey {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_string(SkipVisitor { depth: 0 })
    }
}

struct SkipVisitor {
    depth: usize,
}

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = ValueVisitor { depth: self.depth }.nested()?;
        while seq.next_element_seed(SkipSeed { depth })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let depth = ValueVisitor { depth: self.depth }.nested()?;
        while map.next_key_seed(SkipKey)?.is_some() {
            map.next_value_seed(SkipSeed { depth })?;
        }
        Ok(())
    }
}

fn syntax_error(error: serde_json::Error) -> SyntaxError {
    SyntaxError {
        offset: error.column(),
        reason: error.to_string(),
    }
}

struct ValueSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor { depth: self.depth })
    }
}

struct ValueVisitor {
    depth: usize,
}

impl ValueVisitor {
    fn nested<E: de::Error>(&self) -> Result<usize, E> {
        let depth = self.depth + 1;
        if depth > DEPTH_MAX {
            return Err(E::custom(format_args!("nesting deeper than {DEPTH_MAX}")));
        }
        Ok(depth)
    }
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let depth = self.nested()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(ValueSeed { depth })? {
            items.push(item);
        }
        Ok(Value::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let depth = self.nested()?;
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(ValueSeed { depth })?;
            entries.push((key, value));
        }
        Ok(Value::Map(entries))
    }
}

/// The bytes [`JsonWriter`] escapes in strings: `"`, `\\` and the control characters.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// The index of the first byte of `bytes` that JSON must escape, if any.
///
/// Hand-written for speed (a GetRecords response runs 10,000 sequence numbers and partition
/// keys through here): eight bytes at a time, with the SWAR tests for "some byte is below
/// 0x20" and "some byte equals c" (exact as yes/no answers), and the table only to place the
/// byte in the word that has one.
fn first_to_escape(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    fn has_byte(word: u64, byte: u8) -> bool {
        let x = word ^ (ONES * u64::from(byte));
        x.wrapping_sub(ONES) & !x & HIGHS != 0
    }
    let mut words = bytes.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut words {
        let Ok(array) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let word = u64::from_le_bytes(array);
        let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS != 0;
        if (control || has_byte(word, b'"') || has_byte(word, b'\\'))
            && let Some(i) = chunk.iter().position(|&b| NEEDS_ESCAPE[usize::from(b)])
        {
            return Some(base + i);
        }
        base += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| NEEDS_ESCAPE[usize::from(b)])
        .map(|i| base + i)
}

/// A [`Writer`] producing compact JSON.
#[derive(Debug, Default)]
pub struct JsonWriter {
    out: Vec<u8>,
    /// One entry per open container: is it a map, and has it had an entry yet.
    frames: Vec<Frame>,
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    is_map: bool,
    has_entries: bool,
}

impl JsonWriter {
    pub fn new() -> JsonWriter {
        JsonWriter::default()
    }

    /// A writer whose buffer starts with `capacity` bytes reserved.
    pub fn with_capacity(capacity: usize) -> JsonWriter {
        JsonWriter {
            out: Vec::with_capacity(capacity),
            frames: Vec::new(),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        self.out
    }

    /// Write the comma between list items (map entries get theirs in [`Writer::key`]).
    fn before_value(&mut self) {
        if let Some(frame) = self.frames.last_mut()
            && !frame.is_map
        {
            if frame.has_entries {
                self.out.push(b',');
            }
            frame.has_entries = true;
        }
    }

    fn write_escaped(&mut self, s: &str) {
        self.out.push(b'"');
        let bytes = s.as_bytes();
        // Hand-written for speed: almost every string written (sequence numbers, shard ids,
        // partition keys) needs no escape, so find the first byte that does (a word at a
        // time) and copy everything before it at once.
        let Some(first) = first_to_escape(bytes) else {
            self.out.extend_from_slice(bytes);
            self.out.push(b'"');
            return;
        };
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate().skip(first) {
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0x00..=0x1f => b"",
                _ => continue,
            };
            self.out
                .extend_from_slice(bytes.get(start..i).unwrap_or_default());
            if escape.is_empty() {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                self.out.extend_from_slice(b"\\u00");
                self.out.push(HEX[usize::from(b >> 4)]);
                self.out.push(HEX[usize::from(b & 0xf)]);
            } else {
                self.out.extend_from_slice(escape);
            }
            start = i + 1;
        }
        self.out
            .extend_from_slice(bytes.get(start..).unwrap_or_default());
        self.out.push(b'"');
    }
}

impl Writer for JsonWriter {
    fn begin_map(&mut self, _len: usize) {
        self.before_value();
        self.out.push(b'{');
        self.frames.push(Frame {
            is_map: true,
            has_entries: false,
        });
    }

    fn key(&mut self, key: &str) {
        if let Some(frame) = self.frames.last_mut() {
            if frame.has_entries {
                self.out.push(b',');
            }
            frame.has_entries = true;
        }
        self.write_escaped(key);
        self.out.push(b':');
    }

    fn end_map(&mut self) {
        self.frames.pop();
        self.out.push(b'}');
    }

    fn begin_list(&mut self, _len: usize) {
        self.before_value();
        self.out.push(b'[');
        self.frames.push(Frame {
            is_map: false,
            has_entries: false,
        });
    }

    fn end_list(&mut self) {
        self.frames.pop();
        self.out.push(b']');
    }

    fn string(&mut self, value: &str) {
        self.before_value();
        self.write_escaped(value);
    }

    fn blob(&mut self, value: &[u8]) {
        self.before_value();
        self.out.push(b'"');
        let start = self.out.len();
        let encoded_len = base64::encoded_len(value.len(), true).unwrap_or(0);
        self.out.resize(start + encoded_len, 0);
        if let Some(slot) = self.out.get_mut(start..) {
            let written = crate::b64::ENGINE.encode_slice(value, slot).unwrap_or(0);
            self.out.truncate(start + written);
        }
        self.out.push(b'"');
    }

    fn int(&mut self, value: i64) {
        self.before_value();
        // Writing to a Vec cannot fail.
        let _ = write!(self.out, "{value}");
    }

    fn float(&mut self, value: f64) {
        self.before_value();
        if value.is_finite() {
            let _ = write!(self.out, "{value}");
        } else {
            self.out.extend_from_slice(b"null");
        }
    }

    fn bool(&mut self, value: bool) {
        self.before_value();
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn null(&mut self) {
        self.before_value();
        self.out.extend_from_slice(b"null");
    }

    fn timestamp(&mut self, value: EpochMillis) {
        self.before_value();
        write_epoch_seconds(&mut self.out, value);
    }
}

/// `1700000000.123` for 1700000000123 ms; `1700000000` when whole; trailing zeros trimmed.
pub fn epoch_seconds_text(value: EpochMillis) -> String {
    let mut out = Vec::new();
    write_epoch_seconds(&mut out, value);
    String::from_utf8_lossy(&out).into_owned()
}

fn write_epoch_seconds(out: &mut Vec<u8>, value: EpochMillis) {
    if value.0 < 0 {
        out.push(b'-');
    }
    let magnitude = value.0.unsigned_abs();
    let (seconds, millis) = (magnitude / 1000, magnitude % 1000);
    // itoa, not `write!`: `fmt` showed in GetRecords profiles at one timestamp per record.
    out.extend_from_slice(itoa::Buffer::new().format(seconds).as_bytes());
    if millis != 0 {
        let digits = [
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
        ];
        let significant = if millis % 100 == 0 {
            1
        } else if millis % 10 == 0 {
            2
        } else {
            3
        };
        out.push(b'.');
        out.extend_from_slice(digits.get(..significant).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_to_escape_finds_what_the_table_finds() {
        let naive = |bytes: &[u8]| bytes.iter().position(|&b| NEEDS_ESCAPE[usize::from(b)]);
        // Every byte value at every position of strings around the word size, among bytes
        // that need no escape (ASCII and the high bytes of UTF-8), once and with a second
        // escape later on.
        for len in 1..=19 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    for filler in [b'a', 0xc3, b'~', b' '] {
                        let mut bytes = vec![filler; len];
                        bytes[at] = byte;
                        assert_eq!(first_to_escape(&bytes), naive(&bytes), "{bytes:?}");
                        if let Some(last) = bytes.last_mut() {
                            *last = b'"';
                        }
                        assert_eq!(first_to_escape(&bytes), naive(&bytes), "{bytes:?}");
                    }
                }
            }
        }
        assert_eq!(first_to_escape(b""), None);
    }
    use crate::Format;
    use crate::encode::{Encode, to_vec};
    use bytes::Bytes;

    #[test]
    fn parses_values() {
        let value = parse(
            br#" {"a": [1, -2, 2.5, 18446744073709551615, "s\u00e9\n", true, null], "b": {}} "#,
        );
        let expected = Value::Map(vec![
            (
                "a".to_owned(),
                Value::List(vec![
                    Value::Int(1),
                    Value::Int(-2),
                    Value::Float(2.5),
                    Value::Float(18446744073709551615.0),
                    Value::String("sé\n".to_owned()),
                    Value::Bool(true),
                    Value::Null,
                ]),
            ),
            ("b".to_owned(), Value::Map(vec![])),
        ]);
        assert_eq!(value, Ok(expected));
    }

    #[test]
    fn rejects_malformed() {
        for body in [
            &b""[..],
            b"hello",
            b"{",
            b"{} x",
            b"{\"a\":}",
            b"\xff",
            b"\"\\ud800\"",
            b"[1,]",
        ] {
            assert!(parse(body).is_err(), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn bounds_depth() {
        let ok = format!("{}{}", "[".repeat(DEPTH_MAX), "]".repeat(DEPTH_MAX));
        assert!(parse(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(DEPTH_MAX + 1), "]".repeat(DEPTH_MAX + 1));
        assert!(parse(deep.as_bytes()).is_err());
        let very_deep = "[".repeat(100_000);
        assert!(parse(very_deep.as_bytes()).is_err());
        assert!(is_valid(ok.as_bytes()));
        assert!(!is_valid(deep.as_bytes()));
        assert!(!is_valid(very_deep.as_bytes()));
    }

    #[test]
    fn is_valid_accepts_what_parse_accepts() {
        let bodies: &[&[u8]] = &[
            b"",
            b"hello",
            b"{",
            b"{} x",
            b"{\"a\":}",
            b"\xff",
            b"\"\\ud800\"",
            b"[1,]",
            b"{\"\\ud800\":1}",
            b"{\"a\":\"\xff\"}",
            b"{\"a\":1e400}",
            b"{\"a\":-0,\"a\":18446744073709551616}",
            b" {\"a\": [1, -2, 2.5, \"s\\u00e9\\n\", true, null], \"b\": {}} ",
            b"{\"a\\/b\":\"\\/\"}",
            b"{1:2}",
            b"\"just a string\"",
            b"[[[]]]",
            b"{\"a\":\"\x01\"}",
        ];
        for body in bodies {
            assert_eq!(
                is_valid(body),
                parse(body).is_ok(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn writes_compact_json() {
        let value = Value::Map(vec![
            ("s".to_owned(), Value::String("q\"\\\u{1}\n\tü".to_owned())),
            ("b".to_owned(), Value::Blob(Bytes::from_static(b"hello"))),
            (
                "l".to_owned(),
                Value::List(vec![
                    Value::Int(-3),
                    Value::Float(0.5),
                    Value::Null,
                    Value::Bool(false),
                ]),
            ),
            ("e".to_owned(), Value::List(vec![])),
            ("m".to_owned(), Value::Map(vec![])),
            (
                "t".to_owned(),
                Value::Timestamp(EpochMillis(1_700_000_000_120)),
            ),
        ]);
        let text = String::from_utf8(to_vec(Format::Json, &value)).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"s":"q\"\\\u0001\n\tü","b":"aGVsbG8=","l":[-3,0.5,null,false],"e":[],"m":{},"t":1700000000.12}"#
        );
        // What we write, serde_json reads back.
        assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
    }

    #[test]
    fn timestamps_are_seconds() {
        let cases = [
            (1_700_000_000_123, "1700000000.123"),
            (1_700_000_000_000, "1700000000"),
            (1_700_000_000_500, "1700000000.5"),
            (1_700_000_000_001, "1700000000.001"),
            (0, "0"),
            (-1, "-0.001"),
            (-1500, "-1.5"),
            (i64::MAX, "9223372036854775.807"),
            (i64::MIN, "-9223372036854775.808"),
            (10_000, "10"),
        ];
        for (millis, text) in cases {
            assert_eq!(epoch_seconds_text(EpochMillis(millis)), text);
        }
        let mut w = JsonWriter::new();
        EpochMillis(5).encode(&mut w);
        assert_eq!(w.finish(), b"0.005");
    }
}
