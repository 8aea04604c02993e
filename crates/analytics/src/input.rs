//! Input records to rows: the `InputSchema` (JSON with `RecordRowPath` and column
//! `Mapping`s, or CSV with delimiters and positional columns) and schema discovery.
//!
//! JSON paths are the subset KDA's schema editor writes: `$`, `.name`, `['name']`, `[n]` and,
//! in a row path only, `[0:]` (every element of an array is a row).

use serde_json::{Value as Json, json};

use crate::sql::{Column, SqlType};
use crate::value::{self, Value};

/// Columns per input schema (the model's limit).
pub const COLUMNS_MAX: usize = 1000;

#[derive(Debug, Clone)]
pub enum Format {
    Json {
        row_path: Vec<Segment>,
    },
    Csv {
        column_delimiter: String,
        row_delimiter: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Key(String),
    Index(usize),
    /// `[0:]`: every element.
    All,
}

#[derive(Debug, Clone)]
pub struct InputColumn {
    pub column: Column,
    pub mapping: Option<Vec<Segment>>,
}

#[derive(Debug, Clone)]
pub struct Schema {
    pub format: Format,
    pub columns: Vec<InputColumn>,
}

pub fn parse_path(path: &str) -> Result<Vec<Segment>, String> {
    let rest = path
        .trim()
        .strip_prefix('$')
        .ok_or_else(|| format!("JSON path {path} must start with $"))?;
    let chars: Vec<char> = rest.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                let start = i + 1;
                i = start;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                if i == start {
                    return Err(format!("JSON path {path} has an empty member name"));
                }
                out.push(Segment::Key(chars[start..i].iter().collect()));
            }
            '[' => {
                let end = chars[i..]
                    .iter()
                    .position(|c| *c == ']')
                    .map(|p| p + i)
                    .ok_or_else(|| format!("JSON path {path} has an unclosed ["))?;
                let inner: String = chars[i + 1..end].iter().collect();
                let inner = inner.trim();
                if let Some(q) = inner
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                {
                    out.push(Segment::Key(q.to_string()));
                } else if inner == "0:" || inner == "*" {
                    out.push(Segment::All);
                } else {
                    out.push(Segment::Index(
                        inner
                            .parse()
                            .map_err(|_| format!("JSON path {path}: bad index [{inner}]"))?,
                    ));
                }
                i = end + 1;
            }
            _ => return Err(format!("JSON path {path}: unexpected '{}'", chars[i])),
        }
    }
    Ok(out)
}

fn select<'a>(value: &'a Json, path: &[Segment]) -> Option<&'a Json> {
    let mut v = value;
    for s in path {
        v = match s {
            Segment::Key(k) => v.get(k)?,
            Segment::Index(i) => v.get(*i)?,
            Segment::All => return None,
        };
    }
    Some(v)
}

fn select_rows<'a>(value: &'a Json, path: &[Segment], out: &mut Vec<&'a Json>) {
    match path.split_first() {
        None => out.push(value),
        Some((Segment::All, rest)) => {
            if let Some(items) = value.as_array() {
                for item in items {
                    select_rows(item, rest, out);
                }
            }
        }
        Some((Segment::Key(k), rest)) => {
            if let Some(v) = value.get(k) {
                select_rows(v, rest, out);
            }
        }
        Some((Segment::Index(i), rest)) => {
            if let Some(v) = value.get(*i) {
                select_rows(v, rest, out);
            }
        }
    }
}

/// Parses a SQL type as written in `SqlType` of a record column.
pub fn parse_sql_type(text: &str) -> Result<SqlType, String> {
    let code = format!("CREATE STREAM \"X\" (C {text});");
    match crate::sql::parse(&code) {
        Ok(mut statements) => match statements.pop() {
            Some(crate::sql::Statement::CreateStream { mut columns, .. }) => columns
                .pop()
                .map(|c| c.sql_type)
                .ok_or_else(|| format!("unsupported SQL type {text}")),
            _ => Err(format!("unsupported SQL type {text}")),
        },
        Err(_) => Err(format!("unsupported SQL type {text}")),
    }
}

impl Schema {
    /// Reads the `InputSchema` of an input (already checked for shape by the API).
    pub fn from_json(schema: &Json) -> Result<Schema, String> {
        let format_type = schema
            .pointer("/RecordFormat/RecordFormatType")
            .and_then(Json::as_str)
            .unwrap_or("JSON");
        let mapping = schema.pointer("/RecordFormat/MappingParameters");
        let format = match format_type {
            "CSV" => {
                let csv = mapping.and_then(|m| m.get("CSVMappingParameters"));
                let get = |k: &str, d: &str| {
                    csv.and_then(|c| c.get(k))
                        .and_then(Json::as_str)
                        .filter(|s| !s.is_empty())
                        .unwrap_or(d)
                        .to_string()
                };
                Format::Csv {
                    column_delimiter: get("RecordColumnDelimiter", ","),
                    row_delimiter: get("RecordRowDelimiter", "\n"),
                }
            }
            _ => {
                let path = mapping
                    .and_then(|m| m.pointer("/JSONMappingParameters/RecordRowPath"))
                    .and_then(Json::as_str)
                    .unwrap_or("$");
                Format::Json {
                    row_path: parse_path(path)?,
                }
            }
        };
        let mut columns = Vec::new();
        for c in schema
            .get("RecordColumns")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let name = c.get("Name").and_then(Json::as_str).unwrap_or_default();
            let sql_type = c.get("SqlType").and_then(Json::as_str).unwrap_or_default();
            let mapping = match (c.get("Mapping").and_then(Json::as_str), &format) {
                (Some(m), Format::Json { .. }) if !m.is_empty() => Some(parse_path(m)?),
                (None, Format::Json { .. }) => Some(vec![Segment::Key(name.to_string())]),
                _ => None,
            };
            columns.push(InputColumn {
                column: Column {
                    name: name.to_string(),
                    sql_type: parse_sql_type(sql_type)
                        .map_err(|e| format!("column {name}: {e}"))?,
                },
                mapping,
            });
        }
        if columns.is_empty() || columns.len() > COLUMNS_MAX {
            return Err(format!(
                "an input schema has 1 to {COLUMNS_MAX} record columns"
            ));
        }
        Ok(Schema { format, columns })
    }

    pub fn columns(&self) -> Vec<Column> {
        self.columns.iter().map(|c| c.column.clone()).collect()
    }

    /// The rows of one record, each a row of values or the reason it failed.
    pub fn decode(&self, data: &[u8]) -> Vec<Result<Vec<Value>, String>> {
        match &self.format {
            Format::Json { row_path } => {
                let parsed: Json = match serde_json::from_slice(data) {
                    Ok(v) => v,
                    Err(e) => return vec![Err(format!("record is not JSON: {e}"))],
                };
                let mut rows = Vec::new();
                select_rows(&parsed, row_path, &mut rows);
                rows.into_iter()
                    .map(|row| {
                        self.columns
                            .iter()
                            .map(|c| {
                                let v = c
                                    .mapping
                                    .as_ref()
                                    .and_then(|p| select(row, p))
                                    .map_or(Value::Null, value::from_json);
                                value::coerce(v, c.column.sql_type)
                                    .map_err(|e| format!("column {}: {e}", c.column.name))
                            })
                            .collect()
                    })
                    .collect()
            }
            Format::Csv {
                column_delimiter,
                row_delimiter,
            } => {
                let text = String::from_utf8_lossy(data);
                text.split(row_delimiter.as_str())
                    .filter(|line| !line.trim().is_empty())
                    .map(|line| {
                        let fields: Vec<&str> = line.split(column_delimiter.as_str()).collect();
                        self.columns
                            .iter()
                            .enumerate()
                            .map(|(i, c)| {
                                let v = fields.get(i).map_or(Value::Null, |f| {
                                    Value::Str(f.trim_end_matches('\r').to_string())
                                });
                                value::coerce(v, c.column.sql_type)
                                    .map_err(|e| format!("column {}: {e}", c.column.name))
                            })
                            .collect()
                    })
                    .collect()
            }
        }
    }
}

fn sql_type_of(v: &Json) -> &'static str {
    match v {
        Json::Bool(_) => "BOOLEAN",
        Json::Number(n) if n.is_i64() || n.is_u64() => {
            if n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()) {
                "INTEGER"
            } else {
                "BIGINT"
            }
        }
        Json::Number(_) => "DOUBLE",
        Json::String(s) if value::parse_timestamp(s).is_some() && s.len() >= 10 => "TIMESTAMP",
        _ => "VARCHAR(64)",
    }
}

/// Infers an input schema from sample records (DiscoverInputSchema): JSON objects (their
/// top-level members, flattened one level) or CSV lines. Returns the schema and each
/// record's parsed fields, or `None` when nothing can be inferred.
pub fn discover(records: &[Vec<u8>]) -> Option<(Json, Vec<Vec<String>>)> {
    let mut objects = Vec::new();
    for r in records {
        if let Ok(v @ Json::Object(_)) = serde_json::from_slice::<Json>(r) {
            objects.push(v);
        }
    }
    if !objects.is_empty() && objects.len() * 2 >= records.len() {
        let mut columns: Vec<(String, String, &'static str)> = Vec::new();
        for o in &objects {
            let Some(map) = o.as_object() else { continue };
            for (k, v) in map {
                let entries: Vec<(String, String, &Json)> = match v {
                    Json::Object(inner) => inner
                        .iter()
                        .map(|(ik, iv)| (format!("{k}_{ik}"), format!("$.{k}.{ik}"), iv))
                        .collect(),
                    other => vec![(k.clone(), format!("$.{k}"), other)],
                };
                for (name, path, v) in entries {
                    let ty = sql_type_of(v);
                    let full = columns.len() >= COLUMNS_MAX;
                    match columns.iter_mut().find(|c| c.1 == path) {
                        Some(c) if c.2 != ty => {
                            c.2 = if (c.2 == "INTEGER" || c.2 == "BIGINT") && ty == "DOUBLE" {
                                "DOUBLE"
                            } else if c.2 == "INTEGER" && ty == "BIGINT" {
                                "BIGINT"
                            } else if c.2 == "DOUBLE" && (ty == "INTEGER" || ty == "BIGINT") {
                                "DOUBLE"
                            } else {
                                "VARCHAR(64)"
                            };
                        }
                        Some(_) => {}
                        None if !full => columns.push((name, path, ty)),
                        None => {}
                    }
                }
            }
        }
        if columns.is_empty() {
            return None;
        }
        let parsed = objects
            .iter()
            .map(|o| {
                columns
                    .iter()
                    .map(|(_, path, _)| {
                        parse_path(path)
                            .ok()
                            .and_then(|p| select(o, &p).map(|v| value::from_json(v).to_text()))
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .collect();
        let schema = json!({
            "RecordFormat": {
                "RecordFormatType": "JSON",
                "MappingParameters": {"JSONMappingParameters": {"RecordRowPath": "$"}}
            },
            "RecordEncoding": "UTF-8",
            "RecordColumns": columns.iter().map(|(name, path, ty)| json!({
                "Name": name.to_uppercase().replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_"),
                "Mapping": path,
                "SqlType": ty
            })).collect::<Vec<_>>()
        });
        return Some((schema, parsed));
    }
    // CSV: lines split on commas, the widest line gives the column count.
    let lines: Vec<Vec<String>> = records
        .iter()
        .flat_map(|r| {
            String::from_utf8_lossy(r)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    l.split(',')
                        .map(|f| f.trim().to_string())
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let width = lines.iter().map(Vec::len).max()?;
    if width < 2 {
        return None;
    }
    let columns: Vec<Json> = (0..width.min(COLUMNS_MAX))
        .map(|i| {
            let samples: Vec<&str> = lines
                .iter()
                .filter_map(|l| l.get(i).map(String::as_str))
                .collect();
            let ty = if samples.iter().all(|s| s.parse::<i64>().is_ok()) {
                "INTEGER"
            } else if samples.iter().all(|s| s.parse::<f64>().is_ok()) {
                "DOUBLE"
            } else {
                "VARCHAR(64)"
            };
            json!({"Name": format!("COL{}", i + 1), "SqlType": ty})
        })
        .collect();
    let schema = json!({
        "RecordFormat": {
            "RecordFormatType": "CSV",
            "MappingParameters": {"CSVMappingParameters": {"RecordRowDelimiter": "\n", "RecordColumnDelimiter": ","}}
        },
        "RecordEncoding": "UTF-8",
        "RecordColumns": columns
    });
    Some((schema, lines))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_rows_follow_the_mappings() {
        let schema = Schema::from_json(&json!({
            "RecordFormat": {"RecordFormatType": "JSON", "MappingParameters": {"JSONMappingParameters": {"RecordRowPath": "$"}}},
            "RecordColumns": [
                {"Name": "TICKER", "SqlType": "VARCHAR(4)", "Mapping": "$.ticker"},
                {"Name": "PRICE", "SqlType": "DECIMAL(5,2)", "Mapping": "$.quote['price']"}
            ]
        }))
        .expect("schema");
        let rows = schema.decode(br#"{"ticker": "AMZNX", "quote": {"price": "12.5"}}"#);
        assert_eq!(
            rows,
            vec![Ok(vec![Value::Str("AMZN".into()), Value::Float(12.5)])]
        );
        let rows = schema.decode(br#"{"ticker": "A", "quote": {"price": "x"}}"#);
        assert!(rows[0].is_err());
        assert!(schema.decode(b"not json")[0].is_err());
    }

    #[test]
    fn discovers_json_and_csv() {
        let (schema, parsed) = discover(&[
            br#"{"a": 1, "b": "x"}"#.to_vec(),
            br#"{"a": 2.5, "b": "y"}"#.to_vec(),
        ])
        .expect("json");
        assert_eq!(schema["RecordColumns"][0]["SqlType"], "DOUBLE");
        assert_eq!(parsed[1], vec!["2.5".to_string(), "y".to_string()]);
        let (schema, _) = discover(&[b"1,abc\n2,def".to_vec()]).expect("csv");
        assert_eq!(schema["RecordFormat"]["RecordFormatType"], "CSV");
        assert_eq!(schema["RecordColumns"][0]["SqlType"], "INTEGER");
    }
}
