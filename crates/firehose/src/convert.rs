//! Record format conversion: JSON records to one Apache Parquet object.
//!
//! AWS takes the schema from an AWS Glue table (`SchemaConfiguration.DatabaseName` and
//! `TableName`). There is no Glue here: the operator declares the tables in the config file
//! (`[[firehose.table]]`, a database, a name and Hive-typed columns, as a Glue table lists
//! them), and a delivery stream refers to one by the same two names. Column types are Hive's:
//! `boolean tinyint smallint int bigint float double string varchar(n) char(n) binary date
//! timestamp decimal(p,s) array<T> map<K,V> struct<a:T,...>`.
//!
//! Input is one JSON object per record, read as the OpenX JSON SerDe does: keys match columns
//! case-insensitively (unless `CaseInsensitive` is false), `ConvertDotsInJsonKeysToUnderscores`
//! and `ColumnToJsonKeyMappings` rename keys, unknown keys are ignored and missing columns are
//! null. A record that does not convert goes to the error output (`format-conversion-failed`);
//! the others make the object. The Parquet writer follows `ParquetSerDe` (compression SNAPPY by
//! default, dictionary encoding, page and row-group sizes, writer version).
//!
//! Deliberately not here: ORC (refused when a delivery stream is created) and buffering.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use millrace_wire::firehose::{
    DataFormatConversionConfiguration, ParquetCompression, ParquetSerDe, ParquetWriterVersion,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{WriterProperties, WriterVersion};
use serde::Deserialize;

/// A table the operator declares for format conversion (`[[firehose.table]]`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TableDefinition {
    /// The Glue database name delivery streams refer to (`SchemaConfiguration.DatabaseName`).
    pub database: String,
    /// The table name (`SchemaConfiguration.TableName`).
    pub name: String,
    pub columns: Vec<ColumnDefinition>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ColumnDefinition {
    pub name: String,
    /// A Hive type: `string`, `bigint`, `array<int>`, `struct<a:string,b:double>`...
    #[serde(rename = "type")]
    pub column_type: String,
}

impl TableDefinition {
    /// The Arrow schema of the table (every column nullable, names lower-cased as Hive does).
    pub fn schema(&self) -> Result<SchemaRef, String> {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| {
                hive_type(&c.column_type)
                    .map(|t| Field::new(c.name.to_lowercase(), t, true))
                    .map_err(|e| {
                        format!(
                            "table {}.{} column {}: {e}",
                            self.database, self.name, c.name
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Arc::new(Schema::new(fields)))
    }
}

/// Parses a Hive column type into an Arrow type.
pub fn hive_type(text: &str) -> Result<DataType, String> {
    let mut parser = TypeParser {
        text: text.trim(),
        pos: 0,
    };
    let parsed = parser.parse()?;
    parser.skip_spaces();
    if parser.pos != parser.text.len() {
        return Err(format!("unexpected text after the type in {text:?}"));
    }
    Ok(parsed)
}

struct TypeParser<'a> {
    text: &'a str,
    pos: usize,
}

impl TypeParser<'_> {
    fn skip_spaces(&mut self) {
        while self
            .text
            .get(self.pos..)
            .is_some_and(|r| r.starts_with(' '))
        {
            self.pos += 1;
        }
    }

    fn word(&mut self) -> String {
        self.skip_spaces();
        let rest = self.text.get(self.pos..).unwrap_or("");
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        self.pos += len;
        rest.get(..len).unwrap_or("").to_ascii_lowercase()
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        self.skip_spaces();
        if self.text.get(self.pos..).is_some_and(|r| r.starts_with(c)) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!(
                "expected {c:?} at position {} of {:?}",
                self.pos, self.text
            ))
        }
    }

    fn peek(&mut self, c: char) -> bool {
        self.skip_spaces();
        self.text.get(self.pos..).is_some_and(|r| r.starts_with(c))
    }

    fn number(&mut self) -> Result<u32, String> {
        let word = self.word();
        word.parse()
            .map_err(|_| format!("expected a number, found {word:?}"))
    }

    fn parse(&mut self) -> Result<DataType, String> {
        let name = self.word();
        Ok(match name.as_str() {
            "boolean" => DataType::Boolean,
            "tinyint" => DataType::Int8,
            "smallint" => DataType::Int16,
            "int" | "integer" => DataType::Int32,
            "bigint" => DataType::Int64,
            "float" => DataType::Float32,
            "double" => DataType::Float64,
            "string" => DataType::Utf8,
            "varchar" | "char" => {
                self.expect('(')?;
                self.number()?;
                self.expect(')')?;
                DataType::Utf8
            }
            "binary" => DataType::Binary,
            "date" => DataType::Date32,
            "timestamp" => DataType::Timestamp(TimeUnit::Millisecond, None),
            "decimal" => {
                let (precision, scale) = if self.peek('(') {
                    self.expect('(')?;
                    let p = self.number()?;
                    self.expect(',')?;
                    let s = self.number()?;
                    self.expect(')')?;
                    (p, s)
                } else {
                    (10, 0)
                };
                let precision = u8::try_from(precision)
                    .ok()
                    .filter(|p| (1..=38).contains(p));
                let scale = i8::try_from(scale).ok();
                match (precision, scale) {
                    (Some(p), Some(s)) if i16::from(s) <= i16::from(p) => {
                        DataType::Decimal128(p, s)
                    }
                    _ => {
                        return Err(
                            "decimal precision must be 1 to 38, scale at most the precision".into(),
                        );
                    }
                }
            }
            "array" => {
                self.expect('<')?;
                let item = self.parse()?;
                self.expect('>')?;
                DataType::List(Arc::new(Field::new("element", item, true)))
            }
            "map" => {
                self.expect('<')?;
                let key = self.parse()?;
                self.expect(',')?;
                let value = self.parse()?;
                self.expect('>')?;
                let entries = Field::new(
                    "key_value",
                    DataType::Struct(Fields::from(vec![
                        Field::new("key", key, false),
                        Field::new("value", value, true),
                    ])),
                    false,
                );
                DataType::Map(Arc::new(entries), false)
            }
            "struct" => {
                self.expect('<')?;
                let mut fields = Vec::new();
                loop {
                    let field_name = self.word();
                    if field_name.is_empty() {
                        return Err("expected a struct field name".into());
                    }
                    self.expect(':')?;
                    fields.push(Field::new(field_name, self.parse()?, true));
                    if self.peek(',') {
                        self.expect(',')?;
                    } else {
                        break;
                    }
                }
                self.expect('>')?;
                DataType::Struct(Fields::from(fields))
            }
            "" => return Err(format!("expected a type in {:?}", self.text)),
            other => return Err(format!("unsupported type {other}")),
        })
    }
}

/// How records of one delivery stream are converted.
#[derive(Clone, Debug)]
pub struct Converter {
    schema: SchemaRef,
    case_insensitive: bool,
    dots_to_underscores: bool,
    /// JSON key (as it appears, after case folding) → column.
    key_to_column: BTreeMap<String, String>,
    properties: WriterProperties,
}

/// One record that could not be converted, and why.
#[derive(Debug)]
pub struct ConversionFailure {
    pub record_idx: usize,
    pub message: String,
}

impl Converter {
    pub fn new(
        table: &TableDefinition,
        config: &DataFormatConversionConfiguration,
    ) -> Result<Converter, String> {
        let schema = table.schema()?;
        let openx = config
            .input_format_configuration
            .as_ref()
            .and_then(|i| i.deserializer.as_ref())
            .and_then(|d| d.open_x_json_ser_de.as_ref());
        let case_insensitive = openx.and_then(|o| o.case_insensitive).unwrap_or(true);
        let dots_to_underscores = openx
            .and_then(|o| o.convert_dots_in_json_keys_to_underscores)
            .unwrap_or(false);
        let key_to_column = openx
            .and_then(|o| o.column_to_json_key_mappings.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|(column, key)| {
                let key = if case_insensitive {
                    key.to_lowercase()
                } else {
                    key
                };
                (key, column.to_lowercase())
            })
            .collect();
        let serde = config
            .output_format_configuration
            .as_ref()
            .and_then(|o| o.serializer.as_ref())
            .and_then(|s| s.parquet_ser_de.clone())
            .unwrap_or_default();
        Ok(Converter {
            schema,
            case_insensitive,
            dots_to_underscores,
            key_to_column,
            properties: writer_properties(&serde),
        })
    }

    /// One record's JSON with its keys renamed to column names, or why it is not an object.
    fn normalize(&self, record: &[u8]) -> Result<Vec<u8>, String> {
        let value: serde_json::Value = serde_json::from_slice(record)
            .map_err(|e| format!("The record is not valid JSON: {e}"))?;
        let serde_json::Value::Object(entries) = value else {
            return Err("The record is not a JSON object.".to_string());
        };
        let mut out = serde_json::Map::new();
        for (key, value) in entries {
            let mut key = if self.case_insensitive {
                key.to_lowercase()
            } else {
                key
            };
            if self.dots_to_underscores {
                key = key.replace('.', "_");
            }
            let column = self.key_to_column.get(&key).cloned().unwrap_or(key);
            out.insert(column, self.normalize_nested(value));
        }
        serde_json::to_vec(&serde_json::Value::Object(out)).map_err(|e| e.to_string())
    }

    fn normalize_nested(&self, value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(entries) if self.case_insensitive => {
                serde_json::Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.to_lowercase(), self.normalize_nested(v)))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => serde_json::Value::Array(
                items
                    .into_iter()
                    .map(|v| self.normalize_nested(v))
                    .collect(),
            ),
            other => other,
        }
    }

    fn decode(&self, records: &[&[u8]]) -> Result<Vec<arrow_array::RecordBatch>, String> {
        let mut decoder = arrow_json::ReaderBuilder::new(self.schema.clone())
            .with_batch_size(8192)
            .with_coerce_primitive(true)
            .build_decoder()
            .map_err(|e| e.to_string())?;
        let mut batches = Vec::new();
        for record in records {
            let mut rest: &[u8] = record;
            while !rest.is_empty() {
                let consumed = decoder.decode(rest).map_err(|e| e.to_string())?;
                rest = rest.get(consumed..).unwrap_or_default();
                if !rest.is_empty()
                    && let Some(batch) = decoder.flush().map_err(|e| e.to_string())?
                {
                    batches.push(batch);
                }
            }
            decoder.decode(b"\n").map_err(|e| e.to_string())?;
        }
        if let Some(batch) = decoder.flush().map_err(|e| e.to_string())? {
            batches.push(batch);
        }
        Ok(batches)
    }

    /// Converts records into one Parquet file; records that fail are reported, not written.
    /// `Ok((None, failures))` when no record converted.
    pub fn convert(
        &self,
        records: &[&[u8]],
    ) -> (Result<Option<Vec<u8>>, String>, Vec<ConversionFailure>) {
        let mut failures = Vec::new();
        let mut normalized = Vec::with_capacity(records.len());
        for (record_idx, record) in records.iter().enumerate() {
            match self.normalize(record) {
                Ok(json) => normalized.push((record_idx, json)),
                Err(message) => failures.push(ConversionFailure {
                    record_idx,
                    message,
                }),
            }
        }
        let all: Vec<&[u8]> = normalized.iter().map(|(_, j)| j.as_slice()).collect();
        let batches = match self.decode(&all) {
            Ok(batches) => batches,
            Err(_) => {
                // Find the records that do not fit the schema, then convert the rest.
                let mut good = Vec::new();
                for (record_idx, json) in &normalized {
                    match self.decode(&[json.as_slice()]) {
                        Ok(_) => good.push(json.as_slice()),
                        Err(message) => failures.push(ConversionFailure {
                            record_idx: *record_idx,
                            message,
                        }),
                    }
                }
                match self.decode(&good) {
                    Ok(batches) => batches,
                    Err(message) => return (Err(message), failures),
                }
            }
        };
        failures.sort_by_key(|f| f.record_idx);
        if batches.iter().all(|b| b.num_rows() == 0) {
            return (Ok(None), failures);
        }
        (self.write(&batches).map(Some), failures)
    }

    fn write(&self, batches: &[arrow_array::RecordBatch]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let mut writer =
            ArrowWriter::try_new(&mut out, self.schema.clone(), Some(self.properties.clone()))
                .map_err(|e| e.to_string())?;
        for batch in batches {
            writer.write(batch).map_err(|e| e.to_string())?;
        }
        writer.close().map_err(|e| e.to_string())?;
        Ok(out)
    }
}

fn writer_properties(serde: &ParquetSerDe) -> WriterProperties {
    let compression = match serde.compression {
        Some(ParquetCompression::Uncompressed) => Compression::UNCOMPRESSED,
        Some(ParquetCompression::Gzip) => Compression::GZIP(Default::default()),
        Some(ParquetCompression::Snappy) | None => Compression::SNAPPY,
    };
    let version = match serde.writer_version {
        Some(ParquetWriterVersion::V2) => WriterVersion::PARQUET_2_0,
        _ => WriterVersion::PARQUET_1_0,
    };
    let mut builder = WriterProperties::builder()
        .set_compression(compression)
        .set_writer_version(version)
        .set_dictionary_enabled(serde.enable_dictionary_compression.unwrap_or(true))
        .set_created_by("Millrace Firehose".to_string());
    if let Some(page) = serde.page_size_bytes.and_then(|p| usize::try_from(p).ok()) {
        builder = builder.set_data_page_size_limit(page);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn table() -> TableDefinition {
        let column = |name: &str, column_type: &str| ColumnDefinition {
            name: name.into(),
            column_type: column_type.into(),
        };
        TableDefinition {
            database: "db".into(),
            name: "events".into(),
            columns: vec![
                column("id", "bigint"),
                column("Name", "string"),
                column("price", "decimal(10,2)"),
                column("tags", "array<string>"),
                column("geo", "struct<lat:double,lon:double>"),
                column("ok", "boolean"),
            ],
        }
    }

    #[test]
    fn hive_types() {
        assert_eq!(hive_type("BIGINT"), Ok(DataType::Int64));
        assert_eq!(hive_type("varchar(20)"), Ok(DataType::Utf8));
        assert_eq!(hive_type("decimal(10, 2)"), Ok(DataType::Decimal128(10, 2)));
        assert!(matches!(
            hive_type("map<string,int>"),
            Ok(DataType::Map(..))
        ));
        assert!(
            matches!(hive_type("struct<a:int, b:array<string>>"), Ok(DataType::Struct(f)) if f.len() == 2)
        );
        assert!(hive_type("uniontype<int>").is_err());
        assert!(hive_type("array<int").is_err());
        assert!(hive_type("decimal(40,2)").is_err());
    }

    #[test]
    fn converts_and_separates_failures() -> Result<(), Box<dyn std::error::Error>> {
        let converter = Converter::new(&table(), &DataFormatConversionConfiguration::default())?;
        let records: Vec<&[u8]> = vec![
            br#"{"ID": 1, "name": "a", "price": 9.99, "tags": ["x"], "geo": {"Lat": 1.5, "lon": 2}, "ok": true, "extra": 1}"#,
            b"not json",
            br#"{"id": "not a number"}"#,
            br#"{"id": 3}"#,
            b"[1,2]",
        ];
        let (result, failures) = converter.convert(&records);
        let parquet = result?.ok_or("no object")?;
        let failed: Vec<usize> = failures.iter().map(|f| f.record_idx).collect();
        assert_eq!(failed, vec![1, 2, 4]);
        let reader = SerializedFileReader::new(Bytes::from(parquet))?;
        assert_eq!(reader.metadata().file_metadata().num_rows(), 2);
        let rows: Vec<String> = reader
            .get_row_iter(None)?
            .map(|row| row.map(|r| r.to_string()))
            .collect::<Result<_, _>>()?;
        assert!(
            rows.first()
                .is_some_and(|r| r.contains("id: 1") && r.contains("name: \"a\"")),
            "{rows:?}"
        );
        assert!(
            rows.get(1)
                .is_some_and(|r| r.contains("id: 3") && r.contains("name: null")),
            "{rows:?}"
        );
        Ok(())
    }
}
