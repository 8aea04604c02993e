//! Streaming encoding of typed values into JSON or CBOR, without an intermediate tree.
//!
//! [`Writer`] is the sink (implemented by [`crate::json::JsonWriter`] and
//! [`crate::cbor::CborWriter`]); [`Encode`] is implemented by the generated structs and enums and
//! by the Rust types they are made of. Callers must announce the exact number of map entries and
//! list items (CBOR writes definite lengths); the generated code counts present members first.
//! Deliberately not here: decoding, which goes through [`crate::value::Value`] so that AWS's
//! type and validation messages can be produced.

use crate::value::Value;
use crate::{EpochMillis, Format};
use bytes::Bytes;
use std::collections::BTreeMap;

/// A sink for one JSON or CBOR document.
pub trait Writer {
    /// Start a map of exactly `len` entries; each entry is [`Writer::key`] then one value.
    fn begin_map(&mut self, len: usize);
    fn key(&mut self, key: &str);
    fn end_map(&mut self);
    /// Start a list of exactly `len` items.
    fn begin_list(&mut self, len: usize);
    fn end_list(&mut self);
    fn string(&mut self, value: &str);
    /// Base64 text in JSON, a byte string in CBOR.
    fn blob(&mut self, value: &[u8]);
    fn int(&mut self, value: i64);
    fn float(&mut self, value: f64);
    fn bool(&mut self, value: bool);
    fn null(&mut self);
    /// Epoch seconds with millisecond precision in JSON; tag 1 with epoch milliseconds in CBOR.
    fn timestamp(&mut self, value: EpochMillis);
}

/// A value that can be written to a [`Writer`].
pub trait Encode {
    fn encode<W: Writer>(&self, w: &mut W);
}

/// The JSON or CBOR bytes of `value`.
pub fn to_vec<T: Encode + ?Sized>(format: Format, value: &T) -> Vec<u8> {
    to_vec_with_capacity(format, value, 0)
}

/// [`to_vec`] into a buffer that starts with `capacity` bytes reserved: a large response
/// (a GetRecords of 10 MB) is then written once instead of being copied as it grows.
pub fn to_vec_with_capacity<T: Encode + ?Sized>(
    format: Format,
    value: &T,
    capacity: usize,
) -> Vec<u8> {
    match format {
        Format::Json => {
            let mut w = crate::json::JsonWriter::with_capacity(capacity);
            value.encode(&mut w);
            w.finish()
        }
        Format::Cbor => {
            let mut w = crate::cbor::CborWriter::with_capacity(capacity);
            value.encode(&mut w);
            w.finish()
        }
    }
}

impl<T: Encode + ?Sized> Encode for &T {
    fn encode<W: Writer>(&self, w: &mut W) {
        (**self).encode(w)
    }
}

impl Encode for str {
    fn encode<W: Writer>(&self, w: &mut W) {
        w.string(self)
    }
}

impl Encode for String {
    fn encode<W: Writer>(&self, w: &mut W) {
        w.string(self)
    }
}

impl Encode for bool {
    fn encode<W: Writer>(&self, w: &mut W) {
        w.bool(*self)
    }
}

impl Encode for i32 {
    fn encode<W: Writer>(&self, w: &mut W) {
        w.int(i64::from(*self))
    }
}

impl Encode for i64 {
    fn encode<W: Writer>(&self, w: &mut W) {
        w.int(*self)
    }
}

impl Encode for f64 {
    fn encode<W: Writer>(&self, w: &mut W) {
        w.float(*self)
    }
}

impl Encode for EpochMillis {
    fn encode<W: Writer>(&self, w: &mut W) {
        w.timestamp(*self)
    }
}

impl Encode for Bytes {
    fn encode<W: Writer>(&self, w: &mut W) {
        w.blob(self)
    }
}

impl<T: Encode> Encode for [T] {
    fn encode<W: Writer>(&self, w: &mut W) {
        w.begin_list(self.len());
        for item in self {
            item.encode(w);
        }
        w.end_list();
    }
}

impl<T: Encode> Encode for Vec<T> {
    fn encode<W: Writer>(&self, w: &mut W) {
        self.as_slice().encode(w)
    }
}

impl<T: Encode> Encode for BTreeMap<String, T> {
    fn encode<W: Writer>(&self, w: &mut W) {
        w.begin_map(self.len());
        for (k, v) in self {
            w.key(k);
            v.encode(w);
        }
        w.end_map();
    }
}

impl<T: Encode> Encode for Option<T> {
    fn encode<W: Writer>(&self, w: &mut W) {
        match self {
            Some(v) => v.encode(w),
            None => w.null(),
        }
    }
}

impl Encode for Value {
    fn encode<W: Writer>(&self, w: &mut W) {
        match self {
            Value::Null => w.null(),
            Value::Bool(b) => w.bool(*b),
            Value::Int(i) => w.int(*i),
            Value::Float(x) => w.float(*x),
            Value::String(s) => w.string(s),
            Value::Blob(b) => w.blob(b),
            Value::Timestamp(t) => w.timestamp(*t),
            Value::List(items) => items.encode(w),
            Value::Map(entries) => {
                w.begin_map(entries.len());
                for (k, v) in entries {
                    w.key(k);
                    v.encode(w);
                }
                w.end_map();
            }
        }
    }
}
