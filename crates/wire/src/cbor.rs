//! CBOR bytes to [`Value`] and typed values to CBOR, as AWS CBOR 1.1 (the AWS SDK for Java's
//! default for Kinesis) uses it.
//!
//! Hand-written rather than ciborium because the mapping is AWS-specific and small: tag 1 is a
//! timestamp in epoch *milliseconds* when it wraps an integer (what the SDKs write and read, in
//! breach of RFC 8949) and in seconds when it wraps a float (RFC 8949, accepted on input only);
//! byte strings become [`Value::Blob`] directly; other tags are ignored as Jackson ignores them.
//! The decoder builds the tree in one pass, bounds nesting at [`DEPTH_MAX`], never trusts a
//! declared length beyond the bytes present, and rejects trailing bytes, non-string map keys,
//! invalid UTF-8 and reserved encodings. The writer emits definite lengths and shortest integer
//! heads. Deliberately not here: knowledge of shapes (untagged numbers become timestamps only in
//! the type checker).

use crate::EpochMillis;
use crate::encode::Writer;
use crate::error::SyntaxError;
use crate::value::Value;
use bytes::Bytes;

/// The deepest nesting of maps, arrays and tags a request may have.
pub const DEPTH_MAX: usize = 64;

/// The CBOR tag of an epoch-based date.
const TAG_EPOCH: u64 = 1;

/// Parse one CBOR data item that spans all of `body`.
pub fn parse(body: &[u8]) -> Result<Value, SyntaxError> {
    let mut decoder = Decoder {
        input: body,
        pos: 0,
    };
    let value = decoder.item(0)?;
    if decoder.pos != body.len() {
        return Err(decoder.error("trailing bytes after the data item"));
    }
    Ok(value)
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
}

/// The initial byte of a data item, split up.
struct Head {
    major: u8,
    /// The argument; `None` for indefinite length (additional information 31).
    arg: Option<u64>,
    /// The additional-information bits (for floats and simple values).
    info: u8,
}

impl<'a> Decoder<'a> {
    fn error(&self, reason: &str) -> SyntaxError {
        SyntaxError {
            offset: self.pos,
            reason: reason.to_owned(),
        }
    }

    fn remaining(&self) -> usize {
        self.input.len().saturating_sub(self.pos)
    }

    fn byte(&mut self) -> Result<u8, SyntaxError> {
        let b = *self
            .input
            .get(self.pos)
            .ok_or_else(|| self.error("unexpected end of input"))?;
        self.pos += 1;
        Ok(b)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], SyntaxError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or_else(|| self.error("length overflow"))?;
        let slice = self
            .input
            .get(self.pos..end)
            .ok_or_else(|| self.error("unexpected end of input"))?;
        self.pos = end;
        Ok(slice)
    }

    fn uint(&mut self, n: usize) -> Result<u64, SyntaxError> {
        let mut value = 0u64;
        for &b in self.bytes(n)? {
            value = (value << 8) | u64::from(b);
        }
        Ok(value)
    }

    fn head(&mut self) -> Result<Head, SyntaxError> {
        let initial = self.byte()?;
        let major = initial >> 5;
        let info = initial & 0x1f;
        let arg = match info {
            0..=23 => Some(u64::from(info)),
            24 => Some(self.uint(1)?),
            25 => Some(self.uint(2)?),
            26 => Some(self.uint(4)?),
            27 => Some(self.uint(8)?),
            31 => None,
            _ => return Err(self.error("reserved additional information")),
        };
        Ok(Head { major, arg, info })
    }

    /// A declared element count, refused when the input cannot possibly hold that many items
    /// of at least `min_item_bytes` each (so a hostile header cannot make us allocate).
    fn count(&self, declared: u64, min_item_bytes: usize) -> Result<usize, SyntaxError> {
        let count = usize::try_from(declared).map_err(|_| self.error("length overflow"))?;
        if count.saturating_mul(min_item_bytes) > self.remaining() {
            return Err(self.error("declared length exceeds the input"));
        }
        Ok(count)
    }

    fn is_break(&self) -> bool {
        self.input.get(self.pos) == Some(&0xff)
    }

    /// The payload of a byte or text string (major 2 or 3), joining indefinite-length chunks.
    fn string_bytes(&mut self, major: u8, arg: Option<u64>) -> Result<Vec<u8>, SyntaxError> {
        match arg {
            Some(len) => {
                let len = self.count(len, 1)?;
                Ok(self.bytes(len)?.to_vec())
            }
            None => {
                let mut out = Vec::new();
                loop {
                    if self.is_break() {
                        self.pos += 1;
                        return Ok(out);
                    }
                    let chunk = self.head()?;
                    let Some(len) = chunk.arg.filter(|_| chunk.major == major) else {
                        return Err(self.error("bad chunk in an indefinite-length string"));
                    };
                    let len = self.count(len, 1)?;
                    out.extend_from_slice(self.bytes(len)?);
                }
            }
        }
    }

    fn item(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        let start = self.pos;
        let head = self.head()?;
        match head.major {
            0 => {
                let n = head.arg.ok_or_else(|| self.error("indefinite integer"))?;
                Ok(i64::try_from(n).map_or(Value::Float(n as f64), Value::Int))
            }
            1 => {
                let n = head.arg.ok_or_else(|| self.error("indefinite integer"))?;
                // The value is -1 - n.
                Ok(i64::try_from(n).map_or(Value::Float(-1.0 - n as f64), |n| Value::Int(-1 - n)))
            }
            2 => Ok(Value::Blob(Bytes::from(self.string_bytes(2, head.arg)?))),
            3 => {
                let raw = self.string_bytes(3, head.arg)?;
                String::from_utf8(raw)
                    .map(Value::String)
                    .map_err(|_| SyntaxError {
                        offset: start,
                        reason: "text string is not UTF-8".to_owned(),
                    })
            }
            4 => {
                let depth = self.nested(depth)?;
                let mut items = Vec::new();
                match head.arg {
                    Some(len) => {
                        let len = self.count(len, 1)?;
                        items.reserve(len);
                        for _ in 0..len {
                            items.push(self.item(depth)?);
                        }
                    }
                    None => {
                        while !self.is_break() {
                            items.push(self.item(depth)?);
                        }
                        self.pos += 1;
                    }
                }
                Ok(Value::List(items))
            }
            5 => {
                let depth = self.nested(depth)?;
                let mut entries = Vec::new();
                match head.arg {
                    Some(len) => {
                        let len = self.count(len, 2)?;
                        entries.reserve(len);
                        for _ in 0..len {
                            entries.push(self.entry(depth)?);
                        }
                    }
                    None => {
                        while !self.is_break() {
                            entries.push(self.entry(depth)?);
                        }
                        self.pos += 1;
                    }
                }
                Ok(Value::Map(entries))
            }
            6 => {
                let tag = head.arg.ok_or_else(|| self.error("indefinite tag"))?;
                let depth = self.nested(depth)?;
                let inner = self.item(depth)?;
                if tag != TAG_EPOCH {
                    return Ok(inner);
                }
                match inner {
                    Value::Int(millis) => Ok(Value::Timestamp(EpochMillis(millis))),
                    Value::Float(seconds) if seconds.is_finite() => Ok(Value::Timestamp(
                        EpochMillis(float_to_i64((seconds * 1000.0).round())),
                    )),
                    _ => Err(SyntaxError {
                        offset: start,
                        reason: "tag 1 without a number".to_owned(),
                    }),
                }
            }
            _ => self.simple(head),
        }
    }

    fn entry(&mut self, depth: usize) -> Result<(String, Value), SyntaxError> {
        let key_pos = self.pos;
        let key = match self.item(depth)? {
            Value::String(key) => key,
            _ => {
                return Err(SyntaxError {
                    offset: key_pos,
                    reason: "map key is not a text string".to_owned(),
                });
            }
        };
        Ok((key, self.item(depth)?))
    }

    fn nested(&self, depth: usize) -> Result<usize, SyntaxError> {
        let depth = depth + 1;
        if depth > DEPTH_MAX {
            return Err(self.error("nesting too deep"));
        }
        Ok(depth)
    }

    /// Major type 7: simple values and floats.
    fn simple(&mut self, head: Head) -> Result<Value, SyntaxError> {
        match (head.info, head.arg) {
            (20, _) => Ok(Value::Bool(false)),
            (21, _) => Ok(Value::Bool(true)),
            (22, _) | (23, _) => Ok(Value::Null),
            (25, Some(bits)) => Ok(Value::Float(f16_to_f64(bits as u16))),
            (26, Some(bits)) => Ok(Value::Float(f64::from(f32::from_bits(bits as u32)))),
            (27, Some(bits)) => Ok(Value::Float(f64::from_bits(bits))),
            (31, None) => Err(self.error("unexpected break")),
            _ => Err(self.error("unsupported simple value")),
        }
    }
}

/// Saturating float to integer conversion (NaN gives 0), as Java's `(long)` cast does.
pub(crate) fn float_to_i64(x: f64) -> i64 {
    // `as` saturates and maps NaN to 0.
    x as i64
}

fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let mantissa = f64::from(bits & 0x3ff);
    let magnitude = match exponent {
        0 => mantissa * 2f64.powi(-24),
        31 if mantissa == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1.0 + mantissa / 1024.0) * 2f64.powi(exponent - 15),
    };
    sign * magnitude
}

/// A [`Writer`] producing CBOR with definite lengths.
#[derive(Debug, Default)]
pub struct CborWriter {
    out: Vec<u8>,
}

impl CborWriter {
    pub fn new() -> CborWriter {
        CborWriter::default()
    }

    pub fn with_capacity(capacity: usize) -> CborWriter {
        CborWriter {
            out: Vec::with_capacity(capacity),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        self.out
    }

    fn head(&mut self, major: u8, arg: u64) {
        let major = major << 5;
        if arg < 24 {
            self.out.push(major | arg as u8);
        } else if arg <= u64::from(u8::MAX) {
            self.out.push(major | 24);
            self.out.push(arg as u8);
        } else if arg <= u64::from(u16::MAX) {
            self.out.push(major | 25);
            self.out.extend_from_slice(&(arg as u16).to_be_bytes());
        } else if arg <= u64::from(u32::MAX) {
            self.out.push(major | 26);
            self.out.extend_from_slice(&(arg as u32).to_be_bytes());
        } else {
            self.out.push(major | 27);
            self.out.extend_from_slice(&arg.to_be_bytes());
        }
    }

    fn integer(&mut self, value: i64) {
        if value >= 0 {
            self.head(0, value.unsigned_abs());
        } else {
            // -1 - n = value, so n = -1 - value, which cannot overflow for negative values.
            self.head(1, (-1 - value).unsigned_abs());
        }
    }
}

impl Writer for CborWriter {
    fn begin_map(&mut self, len: usize) {
        self.head(5, len as u64);
    }

    fn key(&mut self, key: &str) {
        self.string(key);
    }

    fn end_map(&mut self) {}

    fn begin_list(&mut self, len: usize) {
        self.head(4, len as u64);
    }

    fn end_list(&mut self) {}

    fn string(&mut self, value: &str) {
        self.head(3, value.len() as u64);
        self.out.extend_from_slice(value.as_bytes());
    }

    fn blob(&mut self, value: &[u8]) {
        self.head(2, value.len() as u64);
        self.out.extend_from_slice(value);
    }

    fn int(&mut self, value: i64) {
        self.integer(value);
    }

    fn float(&mut self, value: f64) {
        self.out.push(0xfb);
        self.out.extend_from_slice(&value.to_bits().to_be_bytes());
    }

    fn bool(&mut self, value: bool) {
        self.out.push(if value { 0xf5 } else { 0xf4 });
    }

    fn null(&mut self) {
        self.out.push(0xf6);
    }

    fn timestamp(&mut self, value: EpochMillis) {
        self.head(6, TAG_EPOCH);
        self.integer(value.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Format;
    use crate::encode::to_vec;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2).unwrap_or("zz"), 16).unwrap_or(0))
            .collect()
    }

    #[test]
    fn decodes_rfc8949_examples() {
        let cases: &[(&str, Value)] = &[
            ("00", Value::Int(0)),
            ("17", Value::Int(23)),
            ("1818", Value::Int(24)),
            ("1903e8", Value::Int(1000)),
            ("1b000000e8d4a51000", Value::Int(1_000_000_000_000)),
            ("1bffffffffffffffff", Value::Float(18446744073709551615.0)),
            ("20", Value::Int(-1)),
            ("3903e7", Value::Int(-1000)),
            ("3b7fffffffffffffff", Value::Int(i64::MIN)),
            ("f93c00", Value::Float(1.0)),
            ("f97bff", Value::Float(65504.0)),
            ("fa47c35000", Value::Float(100000.0)),
            ("fb3ff199999999999a", Value::Float(1.1)),
            ("f4", Value::Bool(false)),
            ("f5", Value::Bool(true)),
            ("f6", Value::Null),
            ("f7", Value::Null),
            ("4401020304", Value::Blob(Bytes::from_static(&[1, 2, 3, 4]))),
            (
                "5f42010243030405ff",
                Value::Blob(Bytes::from_static(&[1, 2, 3, 4, 5])),
            ),
            ("6449455446", Value::String("IETF".to_owned())),
            (
                "7f657374726561646d696e67ff",
                Value::String("streaming".to_owned()),
            ),
            (
                "83010203",
                Value::List(vec![Value::Int(1), Value::Int(2), Value::Int(3)]),
            ),
            ("9f0102ff", Value::List(vec![Value::Int(1), Value::Int(2)])),
            (
                "a26161016162820203",
                Value::Map(vec![
                    ("a".to_owned(), Value::Int(1)),
                    (
                        "b".to_owned(),
                        Value::List(vec![Value::Int(2), Value::Int(3)]),
                    ),
                ]),
            ),
            (
                "bf61610161629f0203ffff",
                Value::Map(vec![
                    ("a".to_owned(), Value::Int(1)),
                    (
                        "b".to_owned(),
                        Value::List(vec![Value::Int(2), Value::Int(3)]),
                    ),
                ]),
            ),
            // Tag 1 + integer: epoch milliseconds, as the AWS SDK for Java writes.
            (
                "c11b0000018bcfe56800",
                Value::Timestamp(EpochMillis(1_700_000_000_000)),
            ),
            // Tag 1 + float: epoch seconds, per RFC 8949.
            (
                "c1fb41d954fc6c07df3b",
                Value::Timestamp(EpochMillis(1_700_000_176_123)),
            ),
            // Other tags are transparent.
            (
                "d82076687474703a2f2f7777772e6578616d706c652e636f6d",
                Value::String("http://www.example.com".to_owned()),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(&hex(input)).as_ref(), Ok(expected), "{input}");
        }
    }

    #[test]
    fn rejects_malformed() {
        let cases = [
            "",                   // empty
            "18",                 // truncated argument
            "6261",               // text shorter than declared
            "a1016161",           // integer map key
            "62c328",             // invalid UTF-8
            "ff",                 // break outside indefinite item
            "1c",                 // reserved additional information
            "0000",               // trailing bytes
            "5f6161ff",           // text chunk in a byte string
            "c16161",             // tag 1 around text
            "9b7fffffffffffffff", // absurd declared length
            "f820",               // simple value 32
        ];
        for input in cases {
            assert!(parse(&hex(input)).is_err(), "{input}");
        }
    }

    #[test]
    fn bounds_depth() {
        let mut ok = vec![0x81; DEPTH_MAX - 1];
        ok.push(0x80);
        assert!(parse(&ok).is_ok());
        let mut deep = vec![0x81; DEPTH_MAX];
        deep.push(0x80);
        assert!(parse(&deep).is_err());
        assert!(parse(&vec![0x9f; 100_000]).is_err());
        assert!(parse(&vec![0xc1; 100_000]).is_err());
    }

    #[test]
    fn writes_and_reads_back() {
        let value = Value::Map(vec![
            ("s".to_owned(), Value::String("hé".to_owned())),
            ("b".to_owned(), Value::Blob(Bytes::from(vec![7u8; 300]))),
            (
                "i".to_owned(),
                Value::List(vec![
                    Value::Int(0),
                    Value::Int(23),
                    Value::Int(24),
                    Value::Int(255),
                    Value::Int(256),
                    Value::Int(65535),
                    Value::Int(65536),
                    Value::Int(4_294_967_296),
                    Value::Int(-1),
                    Value::Int(-25),
                    Value::Int(i64::MIN),
                    Value::Int(i64::MAX),
                ]),
            ),
            ("f".to_owned(), Value::Float(-2.5)),
            ("n".to_owned(), Value::Null),
            (
                "t".to_owned(),
                Value::Timestamp(EpochMillis(1_700_000_000_123)),
            ),
            ("z".to_owned(), Value::Bool(true)),
        ]);
        let bytes = to_vec(Format::Cbor, &value);
        assert_eq!(parse(&bytes), Ok(value));
        // Timestamps are tag 1 + integer milliseconds.
        assert_eq!(
            to_vec(Format::Cbor, &EpochMillis(1_700_000_000_000)),
            hex("c11b0000018bcfe56800")
        );
        assert_eq!(to_vec(Format::Cbor, &Value::Int(1000)), hex("1903e8"));
        assert_eq!(to_vec(Format::Cbor, &Value::Int(-1000)), hex("3903e7"));
    }
}
