//! jq queries of the `MetadataExtraction` processor (dynamic partitioning), run with jaq.
//!
//! AWS documents the engine as JQ 1.6; jaq implements that language (with `strftime` and the
//! rest of the standard library) in Rust. A query such as
//! `{customer_id: .customer_id, year: .ts | strftime("%Y")}` runs on each record parsed as
//! JSON and must yield one object whose values become the `!{partitionKeyFromQuery:...}`
//! keys: strings as they are, other scalars as JSON text.
//!
//! Deliberately not here: where the keys are used (the prefix module).

use std::collections::BTreeMap;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data};
use jaq_json::Val;

type Data = data::JustLut<Val>;

/// Partition keys one record yields, at most this many (AWS allows 50 keys per query).
pub const PARTITION_KEYS_MAX: usize = 50;
/// A key value longer than this is refused (AWS: 1024 bytes per key value).
pub const PARTITION_KEY_VALUE_BYTES_MAX: usize = 1024;

/// A compiled query.
pub struct JqQuery {
    filter: jaq_core::compile::Filter<jaq_core::Native<Data>>,
}

impl std::fmt::Debug for JqQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JqQuery")
    }
}

impl JqQuery {
    /// Compiles `code`; the error is a message for an `InvalidArgumentException`.
    pub fn compile(code: &str) -> Result<JqQuery, String> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader
            .load(&arena, File { code, path: () })
            .map_err(|errors| format!("the query does not parse ({} errors)", errors.len()))?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errors| format!("the query does not compile ({} errors)", errors.len()))?;
        Ok(JqQuery { filter })
    }

    /// Runs the query on one record; the keys it extracts, or why it could not.
    pub fn partition_keys(&self, record: &[u8]) -> Result<BTreeMap<String, String>, String> {
        let input = jaq_json::read::parse_single(record)
            .map_err(|_| "Non JSON record provided".to_string())?;
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([]));
        let mut outputs = self.filter.id.run((ctx, input)).map(jaq_core::unwrap_valr);
        let first = match outputs.next() {
            Some(Ok(value)) => value,
            Some(Err(error)) => return Err(format!("the query failed: {error}")),
            None => return Err("the query produced no output".to_string()),
        };
        let Val::Obj(entries) = first else {
            return Err("the query must produce an object".to_string());
        };
        if entries.len() > PARTITION_KEYS_MAX {
            return Err(format!(
                "the query produced {} keys, more than {PARTITION_KEYS_MAX}",
                entries.len()
            ));
        }
        let mut keys = BTreeMap::new();
        for (key, value) in entries.iter() {
            let key = scalar_text(key).ok_or("partition key names must be strings")?;
            let value = match value {
                Val::Null => return Err(format!("partition key {key} is null")),
                Val::Arr(_) | Val::Obj(_) => {
                    return Err(format!("partition key {key} is not a scalar"));
                }
                other => scalar_text(other).unwrap_or_else(|| other.to_string()),
            };
            if value.len() > PARTITION_KEY_VALUE_BYTES_MAX {
                return Err(format!("partition key {key} is too long"));
            }
            keys.insert(key, value);
        }
        Ok(keys)
    }
}

fn scalar_text(value: &Val) -> Option<String> {
    match value {
        Val::TStr(text) | Val::BStr(text) => Some(String::from_utf8_lossy(text).into_owned()),
        Val::Num(_) | Val::Bool(_) => Some(value.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_keys() {
        let query = JqQuery::compile(
            r#"{customer_id: .customer_id, device: .type.device, n: .n, year: .ts | strftime("%Y")}"#,
        )
        .expect("compiles");
        let keys = query
            .partition_keys(
                br#"{"customer_id":"c1","type":{"device":"phone"},"n":7,"ts":1700000000}"#,
            )
            .expect("runs");
        let expected: BTreeMap<String, String> = [
            ("customer_id", "c1"),
            ("device", "phone"),
            ("n", "7"),
            ("year", "2023"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(keys, expected);
        assert!(query.partition_keys(b"not json").is_err());
        assert!(query.partition_keys(br#"{"type":{}}"#).is_err());
        assert!(JqQuery::compile("{a: .a").is_err());
        let not_object = JqQuery::compile(".a").expect("compiles");
        assert!(not_object.partition_keys(br#"{"a":1}"#).is_err());
    }
}
