//! Just enough Apache Avro to write Iceberg manifests and manifest lists: the binary
//! encoding of longs (zig-zag varints), strings, bytes, unions and arrays, and the object
//! container file (magic, metadata map, sync marker, one block, no codec).
//!
//! Written by hand rather than with the `apache-avro` crate: Iceberg needs two fixed record
//! layouts, written once per flush, and the crate (with its schema machinery and its own
//! dependency tree) would be the largest part of the channel delivery for a hundred lines
//! of encoding. Nothing here reads Avro; the tests read files back with pyiceberg.

/// An Avro value being encoded: the caller writes fields in the order of its schema.
#[derive(Default)]
pub struct Encoder {
    pub buf: Vec<u8>,
}

impl Encoder {
    pub fn long(&mut self, value: i64) {
        let mut n = ((value << 1) ^ (value >> 63)) as u64;
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                self.buf.push(byte);
                return;
            }
            self.buf.push(byte | 0x80);
        }
    }

    pub fn int(&mut self, value: i32) {
        self.long(i64::from(value));
    }

    pub fn bytes(&mut self, value: &[u8]) {
        self.long(value.len() as i64);
        self.buf.extend_from_slice(value);
    }

    pub fn string(&mut self, value: &str) {
        self.bytes(value.as_bytes());
    }

    pub fn boolean(&mut self, value: bool) {
        self.buf.push(u8::from(value));
    }

    /// The branch of a union (`["null", T]`: 0 is null, 1 is the value that follows).
    pub fn union_branch(&mut self, branch: i64) {
        self.long(branch);
    }

    /// An array of `n` items: the count, then the caller writes the items, then `end_array`.
    pub fn array_start(&mut self, n: usize) {
        if n > 0 {
            self.long(n as i64);
        }
    }

    pub fn array_end(&mut self) {
        self.long(0);
    }
}

/// An object container file holding `records` (each already encoded) under `schema_json`,
/// with extra header metadata (Iceberg puts its schema and partition spec there).
pub fn container_file(
    schema_json: &str,
    metadata: &[(&str, String)],
    records: &[Vec<u8>],
    sync: [u8; 16],
) -> Vec<u8> {
    let mut out = Encoder::default();
    out.buf.extend_from_slice(b"Obj\x01");
    out.long(metadata.len() as i64 + 2);
    out.string("avro.schema");
    out.bytes(schema_json.as_bytes());
    out.string("avro.codec");
    out.bytes(b"null");
    for (key, value) in metadata {
        out.string(key);
        out.bytes(value.as_bytes());
    }
    out.long(0);
    out.buf.extend_from_slice(&sync);
    if !records.is_empty() {
        let size: usize = records.iter().map(Vec::len).sum();
        out.long(records.len() as i64);
        out.long(size as i64);
        for record in records {
            out.buf.extend_from_slice(record);
        }
        out.buf.extend_from_slice(&sync);
    }
    out.buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_varints_as_the_spec_shows() {
        let encode = |v: i64| {
            let mut e = Encoder::default();
            e.long(v);
            e.buf
        };
        assert_eq!(encode(0), vec![0x00]);
        assert_eq!(encode(-1), vec![0x01]);
        assert_eq!(encode(1), vec![0x02]);
        assert_eq!(encode(-64), vec![0x7f]);
        assert_eq!(encode(64), vec![0x80, 0x01]);
        assert_eq!(encode(i64::MIN).len(), 10);
    }

    #[test]
    fn container_header_and_block() {
        let mut record = Encoder::default();
        record.string("a");
        let file = container_file(r#""string""#, &[], &[record.buf], [7; 16]);
        assert!(file.starts_with(b"Obj\x01"));
        assert!(file.ends_with(&[7; 16]));
    }
}
