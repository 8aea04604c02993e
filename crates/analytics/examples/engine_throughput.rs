//! Rows per second through the SQL engine alone (no streams, no HTTP) over a 10-ticker stream
//! with a row every millisecond: a tumbling-window and a sliding-window aggregation, a stagger
//! window, a LEFT JOIN with a 10-row reference table, and RANDOM_CUT_FOREST with its defaults
//! (100 trees of 256 samples; run on a twentieth of the rows, it is far slower).
//!
//! `cargo run --release -p millrace-analytics --example engine_throughput [ROWS]`

use std::time::Instant;

use millrace_analytics::engine::{Engine, Program};
use millrace_analytics::sql::{Column, SqlType};
use millrace_analytics::value::Value;

const TUMBLING: &str = r#"CREATE OR REPLACE STREAM "DEST" (TICKER VARCHAR(4), N INTEGER, LO DOUBLE, HI DOUBLE, AVG_PRICE DOUBLE);
CREATE OR REPLACE PUMP "P" AS INSERT INTO "DEST"
  SELECT STREAM TICKER, COUNT(*), MIN(PRICE), MAX(PRICE), AVG(PRICE) FROM "SOURCE_SQL_STREAM_001"
  WHERE PRICE > 1
  GROUP BY TICKER, STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '60' SECOND);"#;

const SLIDING: &str = r#"CREATE OR REPLACE STREAM "DEST" (TICKER VARCHAR(4), AVG_PRICE DOUBLE, HI DOUBLE);
CREATE OR REPLACE PUMP "P" AS INSERT INTO "DEST"
  SELECT STREAM TICKER, AVG(PRICE) OVER W, MAX(PRICE) OVER W FROM "SOURCE_SQL_STREAM_001"
  WINDOW W AS (PARTITION BY TICKER ROWS 10 PRECEDING);"#;

const STAGGER: &str = r#"CREATE OR REPLACE STREAM "DEST" (TICKER VARCHAR(4), N INTEGER, AVG_PRICE DOUBLE);
CREATE OR REPLACE PUMP "P" AS INSERT INTO "DEST"
  SELECT STREAM TICKER, COUNT(*), AVG(PRICE) FROM "SOURCE_SQL_STREAM_001"
  WINDOWED BY STAGGER (PARTITION BY TICKER RANGE INTERVAL '1' MINUTE);"#;

const JOIN: &str = r#"CREATE OR REPLACE STREAM "DEST" (TICKER VARCHAR(4), COMPANY VARCHAR(20), PRICE DOUBLE);
CREATE OR REPLACE PUMP "P" AS INSERT INTO "DEST"
  SELECT STREAM TICKER, "c".COMPANY, PRICE FROM "SOURCE_SQL_STREAM_001"
  LEFT JOIN "Companies" AS "c" ON "SOURCE_SQL_STREAM_001".TICKER = "c".TICKER;"#;

const RCF: &str = r#"CREATE OR REPLACE STREAM "DEST" (TICKER VARCHAR(4), PRICE DOUBLE, ANOMALY_SCORE DOUBLE);
CREATE OR REPLACE PUMP "P" AS INSERT INTO "DEST"
  SELECT STREAM TICKER, PRICE, ANOMALY_SCORE
  FROM TABLE(RANDOM_CUT_FOREST(CURSOR(SELECT STREAM * FROM "SOURCE_SQL_STREAM_001")));"#;

fn run(name: &str, code: &str, rows: usize) -> Result<(), String> {
    let sources = vec![(
        "SOURCE_SQL_STREAM_001".to_string(),
        vec![
            Column {
                name: "TICKER".into(),
                sql_type: SqlType::Varchar(4),
            },
            Column {
                name: "PRICE".into(),
                sql_type: SqlType::Double,
            },
        ],
    )];
    let table = vec![
        Column {
            name: "TICKER".into(),
            sql_type: SqlType::Varchar(4),
        },
        Column {
            name: "COMPANY".into(),
            sql_type: SqlType::Varchar(20),
        },
    ];
    let tables = vec![("Companies".to_string(), table)];
    let mut engine = Engine::new(Program::compile_with_tables(code, &sources, &tables)?);
    let tickers: Vec<String> = (0..10).map(|i| format!("T{i}")).collect();
    engine.load_table(
        "Companies",
        tickers
            .iter()
            .map(|t| vec![Value::Str(t.clone()), Value::Str(format!("{t} Inc."))])
            .collect(),
    )?;
    let started = Instant::now();
    let mut emitted = 0usize;
    let mut out = Vec::new();
    for i in 0..rows {
        let values = vec![
            Value::Str(tickers[i % tickers.len()].clone()),
            Value::Float((i % 1000) as f64 / 10.0),
        ];
        engine.insert_source(0, i as i64, values, &mut out);
        emitted += out.len();
        out.clear();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{name}: {rows} rows in {seconds:.3} s = {:.0} rows/s ({emitted} rows emitted)",
        rows as f64 / seconds
    );
    Ok(())
}

fn main() -> Result<(), String> {
    let rows = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    run("tumbling (GROUP BY STEP 60 s)", TUMBLING, rows)?;
    run("sliding (OVER ROWS 10 PRECEDING)", SLIDING, rows)?;
    run("stagger (PARTITION BY TICKER RANGE 1 min)", STAGGER, rows)?;
    run("reference LEFT JOIN (10-row table)", JOIN, rows)?;
    run("RANDOM_CUT_FOREST (100 trees, 256 samples)", RCF, rows / 20)?;
    Ok(())
}
