//! PostgreSQL standing in for Amazon Redshift.
//!
//! Firehose stages each batch as an object in S3 and then runs the `COPY` its `CopyCommand`
//! describes (`COPY <DataTableName> (<DataTableColumns>) FROM 's3://...' <CopyOptions>`). A
//! PostgreSQL server cannot read S3, so Millrace sends the same batch with
//! `COPY ... FROM STDIN`, translating the Redshift options it understands:
//!
//! | CopyOptions | PostgreSQL |
//! | --- | --- |
//! | `JSON 'auto'` / `FORMAT AS JSON 'auto'` (optionally `'auto ignorecase'`) | each record is a JSON object; its keys fill the columns of the same name (case-insensitive), sent as CSV |
//! | `CSV` [`QUOTE AS 'c'`] [`IGNOREHEADER n`] | `FORMAT csv` [`QUOTE`] [`HEADER`] |
//! | `DELIMITER [AS] 'c'` | `DELIMITER 'c'` |
//! | none of these | Redshift's default: text, delimited by `|` |
//!
//! `GZIP`, `TIMEFORMAT`, `DATEFORMAT`, `EMPTYASNULL`, `BLANKSASNULL`, `TRUNCATECOLUMNS`,
//! `ACCEPTINVCHARS`, `MAXERROR` and `MANIFEST` are accepted and ignored (the batch arrives
//! uncompressed; PostgreSQL parses dates itself). One batch is one transaction: all rows or
//! none. Connections are plain TCP (no TLS).

use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt as _;

use crate::error::DeliveryError;
use crate::plan::PostgresTarget;

const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// One COPY gets this long.
const COPY_TIMEOUT_MS: u64 = 300_000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum CopyFormat {
    JsonAuto,
    Csv {
        delimiter: Option<char>,
        quote: Option<char>,
        header: bool,
    },
    Text {
        delimiter: char,
    },
}

/// Reads the Redshift options that decide the format.
fn copy_format(options: &str) -> CopyFormat {
    let lower = options.to_lowercase();
    let tokens = tokenize(&lower);
    let quoted_after = |keyword: &str| -> Option<String> {
        let idx = tokens.iter().position(|t| t == keyword)?;
        let mut rest = tokens.iter().skip(idx + 1);
        let mut next = rest.next()?;
        if next == "as" {
            next = rest.next()?;
        }
        next.strip_prefix('\'')
            .and_then(|t| t.strip_suffix('\''))
            .map(str::to_string)
    };
    let delimiter = quoted_after("delimiter").and_then(|d| d.chars().next());
    if tokens.iter().any(|t| t == "json") {
        return CopyFormat::JsonAuto;
    }
    if tokens.iter().any(|t| t == "csv") {
        return CopyFormat::Csv {
            delimiter,
            quote: quoted_after("quote").and_then(|q| q.chars().next()),
            header: tokens.iter().any(|t| t == "ignoreheader"),
        };
    }
    CopyFormat::Text {
        delimiter: delimiter.unwrap_or('|'),
    }
}

/// Words and single-quoted strings (quotes kept).
fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' {
            let mut token = String::from('\'');
            chars.next();
            for next in chars.by_ref() {
                token.push(next);
                if next == '\'' {
                    break;
                }
            }
            tokens.push(token);
        } else {
            let mut token = String::new();
            while let Some(&next) = chars.peek() {
                if next.is_whitespace() || next == '\'' {
                    break;
                }
                token.push(next);
                chars.next();
            }
            tokens.push(token);
        }
    }
    tokens
}

/// `schema.table` → `"schema"."table"`.
fn quote_name(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{}\"", part.trim().trim_matches('"').replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

fn sql_literal(c: char) -> String {
    if c == '\'' {
        "''''".to_string()
    } else {
        format!("'{c}'")
    }
}

/// CSV of the JSON records' values for `columns`.
fn json_to_csv(records: &[Bytes], columns: &[String]) -> Result<Vec<u8>, DeliveryError> {
    let mut out = Vec::new();
    for record in records {
        let stream = serde_json::Deserializer::from_slice(record).into_iter::<serde_json::Value>();
        for value in stream {
            let value = value.map_err(|e| {
                DeliveryError::Postgres(format!("a record is not JSON (JSON 'auto'): {e}"))
            })?;
            let serde_json::Value::Object(object) = value else {
                return Err(DeliveryError::Postgres(
                    "a record is not a JSON object (JSON 'auto')".into(),
                ));
            };
            for (column_idx, column) in columns.iter().enumerate() {
                if column_idx > 0 {
                    out.push(b',');
                }
                let value = object
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(column))
                    .map(|(_, v)| v);
                match value {
                    None | Some(serde_json::Value::Null) => {}
                    Some(serde_json::Value::String(s)) => csv_field(&mut out, s),
                    Some(other) => csv_field(&mut out, &other.to_string()),
                }
            }
            out.push(b'\n');
        }
    }
    Ok(out)
}

fn csv_field(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    out.extend_from_slice(text.replace('"', "\"\"").as_bytes());
    out.push(b'"');
}

/// Loads one batch; returns the number of rows.
pub async fn load(target: &PostgresTarget, records: &[Bytes]) -> Result<u64, DeliveryError> {
    let pg = |e: tokio_postgres::Error| DeliveryError::Postgres(e.to_string());
    let mut config = tokio_postgres::Config::new();
    config
        .host(&target.host)
        .port(target.port)
        .dbname(&target.database)
        .user(&target.username)
        .password(&target.password)
        .application_name("millrace-firehose")
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS));
    let (mut client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(pg)?;
    let connection = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "PostgreSQL connection ended");
        }
    });
    let result = tokio::time::timeout(
        Duration::from_millis(COPY_TIMEOUT_MS),
        copy(&mut client, target, records),
    )
    .await
    .unwrap_or_else(|_| Err(DeliveryError::Postgres("COPY timed out".into())));
    drop(client);
    let _ = connection.await;
    result
}

async fn copy(
    client: &mut tokio_postgres::Client,
    target: &PostgresTarget,
    records: &[Bytes],
) -> Result<u64, DeliveryError> {
    let pg = |e: tokio_postgres::Error| DeliveryError::Postgres(e.to_string());
    let format = copy_format(&target.copy_options);
    let table = quote_name(&target.table);
    let mut columns: Vec<String> = target
        .columns
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if columns.is_empty() && format == CopyFormat::JsonAuto {
        // JSON 'auto' without a column list fills every column of the table.
        let rows = match target.table.rsplit_once('.') {
            Some((schema, name)) => {
                client
                    .query(
                        "SELECT column_name::text FROM information_schema.columns \
                         WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                        &[&schema.trim_matches('"'), &name.trim_matches('"')],
                    )
                    .await
            }
            None => {
                client
                    .query(
                        "SELECT column_name::text FROM information_schema.columns \
                         WHERE table_schema = current_schema() AND table_name = $1 \
                         ORDER BY ordinal_position",
                        &[&target.table.trim_matches('"')],
                    )
                    .await
            }
        }
        .map_err(pg)?;
        columns = rows.iter().map(|r| r.get::<_, String>(0)).collect();
        if columns.is_empty() {
            return Err(DeliveryError::Postgres(format!(
                "table {} has no columns or does not exist",
                target.table
            )));
        }
    }
    let column_list = if columns.is_empty() {
        String::new()
    } else {
        format!(
            " ({})",
            columns
                .iter()
                .map(|c| quote_name(c))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let (options, data) = match &format {
        CopyFormat::JsonAuto => ("FORMAT csv".to_string(), json_to_csv(records, &columns)?),
        CopyFormat::Csv {
            delimiter,
            quote,
            header,
        } => {
            let mut options = "FORMAT csv".to_string();
            if let Some(d) = delimiter {
                options.push_str(&format!(", DELIMITER {}", sql_literal(*d)));
            }
            if let Some(q) = quote {
                options.push_str(&format!(", QUOTE {}", sql_literal(*q)));
            }
            if *header {
                options.push_str(", HEADER true");
            }
            (options, lines(records))
        }
        CopyFormat::Text { delimiter } => (
            format!("FORMAT text, DELIMITER {}", sql_literal(*delimiter)),
            lines(records),
        ),
    };
    let transaction = client.transaction().await.map_err(pg)?;
    let statement = format!("COPY {table}{column_list} FROM STDIN WITH ({options})");
    let sink = transaction
        .copy_in::<_, Bytes>(&statement)
        .await
        .map_err(pg)?;
    futures::pin_mut!(sink);
    sink.send(Bytes::from(data)).await.map_err(pg)?;
    let rows = sink.finish().await.map_err(pg)?;
    transaction.commit().await.map_err(pg)?;
    Ok(rows)
}

/// The records as lines (a newline added where a record lacks one).
fn lines(records: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::new();
    for record in records {
        out.extend_from_slice(record);
        if !record.ends_with(b"\n") && !record.is_empty() {
            out.push(b'\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_copy_options() {
        assert_eq!(copy_format("json 'auto'"), CopyFormat::JsonAuto);
        assert_eq!(
            copy_format("FORMAT AS JSON 'auto ignorecase' GZIP"),
            CopyFormat::JsonAuto
        );
        assert_eq!(
            copy_format("CSV DELIMITER AS ';' IGNOREHEADER 1"),
            CopyFormat::Csv {
                delimiter: Some(';'),
                quote: None,
                header: true
            }
        );
        assert_eq!(copy_format(""), CopyFormat::Text { delimiter: '|' });
        assert_eq!(
            copy_format("delimiter ','  timeformat 'auto'"),
            CopyFormat::Text { delimiter: ',' }
        );
    }

    #[test]
    fn json_rows() -> Result<(), DeliveryError> {
        let records = [
            Bytes::from_static(br#"{"ID":1,"name":"a \"q\"","tags":[1]}{"id":2}"#),
            Bytes::from_static(b"{\"id\":3,\"name\":null}\n"),
        ];
        let csv = json_to_csv(
            &records,
            &["id".to_string(), "name".to_string(), "tags".to_string()],
        )?;
        assert_eq!(
            String::from_utf8_lossy(&csv),
            "\"1\",\"a \"\"q\"\"\",\"[1]\"\n\"2\",,\n\"3\",,\n"
        );
        assert!(json_to_csv(&[Bytes::from_static(b"[1]")], &["a".to_string()]).is_err());
        assert_eq!(quote_name("public.events"), "\"public\".\"events\"");
        assert_eq!(
            lines(&[Bytes::from_static(b"a|b"), Bytes::from_static(b"c|d\n")]),
            b"a|b\nc|d\n"
        );
        Ok(())
    }
}
