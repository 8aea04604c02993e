//! The streaming SQL runtime: in-application streams, pumps, windows and their state.
//!
//! An application's code compiles ([`Program::compile`]) into numbered streams and pumps
//! with resolved column references. At run time an [`Engine`] takes input rows (with their
//! ROWTIME) into a source stream; every pump reading a stream processes each row it gets and
//! inserts what it produces into its target stream, and so on down the chain (pumps run in
//! dependency order; cycles are refused at compile time). Rows inserted into any stream are
//! also returned to the caller, who sends the ones of streams that are outputs.
//!
//! Pumps come in three kinds:
//! * plain: `WHERE` then the projection, one output row per input row, ROWTIME kept;
//! * tumbling: `GROUP BY` with one ROWTIME bucket (`STEP(... ROWTIME BY INTERVAL ...)` or
//!   `FLOOR(... ROWTIME TO unit)`) and any other keys; a window's groups are emitted when the
//!   watermark (the newest ROWTIME, or the runner's periodic tick) reaches the window's end;
//!   output ROWTIME is the window end;
//! * sliding: aggregates `OVER` a window (`PARTITION BY ... RANGE INTERVAL ... PRECEDING` or
//!   `ROWS n PRECEDING`), one output row per input row over the rows of its partition still
//!   inside the frame;
//! * stagger: `WINDOWED BY STAGGER (PARTITION BY ... RANGE ...)`, a window per key opened by
//!   the key's first row and emitted `RANGE` later (ROWTIME: the closing time);
//! * ordered: `ORDER BY <ROWTIME bucket>, keys`, rows held until the bucket ends, then sorted;
//! * table functions: `TABLE(RANDOM_CUT_FOREST(CURSOR(...), ...))` and
//!   `TABLE(TOP_K_ITEMS_TUMBLING(CURSOR(...), 'col', k, seconds))` compile into a hidden pump
//!   for the cursor's query (into stream `<pump>$cursor`) and one for the function (into
//!   `<pump>$fn`, the cursor's columns plus the function's), which the pump then reads.
//!
//! Any pump may join its stream with a reference table (`JOIN ... ON`): each stream row
//! becomes the rows (stream values, then table values) the ON condition matches, or one with
//! NULL table values for a LEFT OUTER JOIN without a match; tables are loaded by the runner
//! ([`Engine::load_table`], reference.rs) and are not part of the checkpoint.
//!
//! ROWTIME is monotonic: a row older than the newest one seen takes the newest ROWTIME, as
//! KDA assigns ROWTIME on insertion. Rows that fail (coercion, a row for a window already
//! emitted) go to `error_stream`. All state ([`EngineState`]) is plain data that the runner
//! checkpoints with the source positions, so a restart resumes inside an open window.
//! Bounds: `GROUPS_PER_WINDOW_MAX`, `OPEN_WINDOWS_MAX`, `PARTITION_ROWS_MAX`, `PARTITIONS_MAX`,
//! `STAGGER_WINDOWS_MAX`, `ORDER_BUFFER_ROWS_MAX`, `TOP_K_DISTINCT_MAX`, `TABLE_ROWS_MAX`,
//! `JOIN_MATCHES_MAX` (and rcf.rs's). The random cut forests live outside `EngineState`.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::rcf;
use crate::sql::{
    self, BinaryOp, Column, Expr, Literal, Over, SelectItem, SqlType, Statement, WindowFrame,
    WindowSpec,
};
use crate::value::{Value, coerce, format_timestamp};

/// Groups kept per open tumbling window; rows for more groups go to `error_stream`.
pub const GROUPS_PER_WINDOW_MAX: usize = 100_000;
/// Tumbling windows open at once per pump.
pub const OPEN_WINDOWS_MAX: usize = 1_000;
/// Rows kept per sliding-window partition (the oldest are dropped beyond it).
pub const PARTITION_ROWS_MAX: usize = 100_000;
/// Partitions per sliding window (rows of new partitions beyond it go to `error_stream`).
pub const PARTITIONS_MAX: usize = 100_000;
/// Streams and pumps per application.
pub const STREAMS_MAX: usize = 64;
pub const PUMPS_MAX: usize = 64;
/// Open stagger windows (partition keys) per pump; rows of new keys beyond it go to
/// `error_stream`.
pub const STAGGER_WINDOWS_MAX: usize = 100_000;
/// Reference tables per application (AWS allows one reference data source).
pub const TABLES_MAX: usize = 8;
/// Rows of one reference table.
pub const TABLE_ROWS_MAX: usize = 1_000_000;
/// Table rows one stream row joins with (more matches are dropped, with an error row).
pub const JOIN_MATCHES_MAX: usize = 10_000;
/// Rows held per ORDER BY bucket; rows beyond it go to `error_stream`.
pub const ORDER_BUFFER_ROWS_MAX: usize = 100_000;
/// TOP_K_ITEMS_TUMBLING's largest K (AWS documents 100000).
pub const TOP_K_MAX: usize = 100_000;
/// Distinct values counted per TOP_K_ITEMS_TUMBLING window; rows with further new values
/// go to `error_stream`.
pub const TOP_K_DISTINCT_MAX: usize = 1_000_000;
/// The system stream of rows that failed.
pub const ERROR_STREAM: &str = "error_stream";

#[derive(Debug, Clone)]
pub struct StreamDef {
    pub name: String,
    pub columns: Vec<Column>,
    pub is_source: bool,
}

/// A row of an in-application stream: its ROWTIME and one value per column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub rowtime: i64,
    pub values: Vec<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AggFunc {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    First,
    Last,
}

#[derive(Debug, Clone)]
struct AggSpec {
    func: AggFunc,
    /// `None` for `COUNT(*)`.
    arg: Option<CExpr>,
    /// The sliding window (index into the pump's windows), for `OVER`.
    window: Option<usize>,
}

#[derive(Debug, Clone)]
enum CExpr {
    Lit(Value),
    Col(usize),
    RowTime,
    Neg(Box<CExpr>),
    Not(Box<CExpr>),
    Bin(BinaryOp, Box<CExpr>, Box<CExpr>),
    IsNull(Box<CExpr>, bool),
    Like(Box<CExpr>, Box<CExpr>, bool),
    Between(Box<CExpr>, Box<CExpr>, Box<CExpr>, bool),
    In(Box<CExpr>, Vec<CExpr>, bool),
    Case(Option<Box<CExpr>>, Vec<(CExpr, CExpr)>, Option<Box<CExpr>>),
    Cast(Box<CExpr>, SqlType),
    Step(Box<CExpr>, i64),
    FloorTo(Box<CExpr>, i64, bool),
    Call(String, Vec<CExpr>),
    Agg(usize),
}

/// An in-application table (reference data): a name and its columns.
#[derive(Debug, Clone)]
pub struct TableDef {
    pub name: String,
    pub columns: Vec<Column>,
}

/// A compiled reference-table join. Joined rows are the stream row's values followed by
/// the table row's (NULLs for a LEFT OUTER JOIN without a match).
#[derive(Debug, Clone)]
struct CJoin {
    table: usize,
    left_outer: bool,
    on: CExpr,
    /// Equality conjuncts of ON: (expression on the stream row, table column). Used to look
    /// matches up in a hash index; ON is still evaluated on every candidate.
    stream_keys: Vec<CExpr>,
    table_key_columns: Vec<usize>,
}

#[derive(Debug, Clone)]
struct SlidingWindow {
    partition_by: Vec<CExpr>,
    frame: WindowFrame,
}

#[derive(Debug, Clone)]
enum PumpKind {
    Plain,
    Tumbling {
        keys: Vec<CExpr>,
        /// The ROWTIME bucket's width.
        width_ms: i64,
    },
    Sliding {
        windows: Vec<SlidingWindow>,
    },
    /// `WINDOWED BY STAGGER`: one window per partition key, opened by its first row.
    Stagger {
        keys: Vec<CExpr>,
        range_ms: i64,
    },
    /// `ORDER BY <ROWTIME bucket>, keys...`: a plain pump whose projected rows are held
    /// until their bucket ends, then emitted sorted by `keys` (expression, descending).
    Ordered {
        width_ms: i64,
        keys: Vec<(CExpr, bool)>,
    },
    /// `RANDOM_CUT_FOREST`: the row plus ANOMALY_SCORE over its numeric columns `inputs`.
    Rcf {
        inputs: Vec<usize>,
        params: rcf::Params,
    },
    /// `TOP_K_ITEMS_TUMBLING`: per tumbling window, the K most frequent values of `column`
    /// with their counts (exact counts over at most `TOP_K_DISTINCT_MAX` distinct values).
    TopK {
        column: usize,
        k: usize,
        width_ms: i64,
    },
}

#[derive(Debug, Clone)]
struct Pump {
    name: String,
    source: usize,
    target: usize,
    filter: Option<CExpr>,
    having: Option<CExpr>,
    /// One expression per target column (in target column order); `None` leaves it NULL.
    projection: Vec<Option<CExpr>>,
    aggs: Vec<AggSpec>,
    kind: PumpKind,
    join: Option<CJoin>,
}

/// A compiled application.
#[derive(Debug, Clone)]
pub struct Program {
    pub streams: Vec<StreamDef>,
    pub tables: Vec<TableDef>,
    pumps: Vec<Pump>,
    /// Pumps reading each stream.
    readers: Vec<Vec<usize>>,
    /// Pumps in dependency order (for window emission).
    order: Vec<usize>,
}

/// A compile error: the message of the `CodeValidationException`.
pub type CompileError = String;

struct Scope<'a> {
    stream: &'a StreamDef,
    alias: Option<&'a str>,
    windows: &'a [(String, WindowSpec)],
    /// The joined reference table and its alias; its columns follow the stream's.
    table: Option<(&'a TableDef, Option<&'a str>)>,
}

impl Program {
    /// Compiles `code` with the application's source streams (in-app name, columns).
    pub fn compile(code: &str, sources: &[(String, Vec<Column>)]) -> Result<Program, CompileError> {
        Program::compile_with_tables(code, sources, &[])
    }

    /// Compiles `code` with the source streams and the reference tables (name, columns).
    pub fn compile_with_tables(
        code: &str,
        sources: &[(String, Vec<Column>)],
        tables: &[(String, Vec<Column>)],
    ) -> Result<Program, CompileError> {
        if tables.len() > TABLES_MAX {
            return Err(format!(
                "an application has at most {TABLES_MAX} reference tables"
            ));
        }
        let tables: Vec<TableDef> = tables
            .iter()
            .map(|(name, columns)| TableDef {
                name: name.clone(),
                columns: columns.clone(),
            })
            .collect();
        let statements = sql::parse(code).map_err(|e| format!("SQL error: {e}"))?;
        let mut streams: Vec<StreamDef> = sources
            .iter()
            .map(|(name, columns)| StreamDef {
                name: name.clone(),
                columns: columns.clone(),
                is_source: true,
            })
            .collect();
        streams.push(StreamDef {
            name: ERROR_STREAM.into(),
            columns: error_columns(),
            is_source: false,
        });
        let find = |streams: &[StreamDef], name: &str| streams.iter().position(|s| s.name == name);
        let mut pumps = Vec::new();
        let mut pump_names: Vec<String> = Vec::new();
        for statement in statements {
            match statement {
                Statement::CreateStream { name, columns } => {
                    if tables.iter().any(|t| t.name == name) {
                        return Err(format!(
                            "\"{name}\" is a reference table and cannot be a stream"
                        ));
                    }
                    if let Some(i) = find(&streams, &name) {
                        if streams[i].is_source || name == ERROR_STREAM {
                            return Err(format!(
                                "stream \"{name}\" is a system or input stream and cannot be replaced"
                            ));
                        }
                        streams[i].columns = columns;
                    } else {
                        if streams.len() >= STREAMS_MAX {
                            return Err(format!(
                                "an application has at most {STREAMS_MAX} streams"
                            ));
                        }
                        let mut seen = std::collections::HashSet::new();
                        for c in &columns {
                            if !seen.insert(c.name.clone()) {
                                return Err(format!(
                                    "stream \"{name}\" declares column \"{}\" twice",
                                    c.name
                                ));
                            }
                        }
                        streams.push(StreamDef {
                            name,
                            columns,
                            is_source: false,
                        });
                    }
                }
                Statement::CreatePump {
                    name,
                    target,
                    columns,
                    select,
                } => {
                    let Some(target_idx) = find(&streams, &target) else {
                        return Err(format!(
                            "pump \"{name}\": target stream \"{target}\" is not defined (create it with CREATE OR REPLACE STREAM before the pump)"
                        ));
                    };
                    if streams[target_idx].is_source || target == ERROR_STREAM {
                        return Err(format!("pump \"{name}\": cannot insert into \"{target}\""));
                    }
                    if !select.stream {
                        return Err(format!("pump \"{name}\": a pump must SELECT STREAM"));
                    }
                    // A table function becomes two hidden pumps (the cursor's query, then the
                    // function) writing hidden streams; the pump reads the function's stream.
                    let select = match &select.table_function {
                        None => select,
                        Some(tf) => {
                            let cursor = &tf.cursor;
                            let at = |m: String| {
                                format!(
                                    "pump \"{name}\": {m} (line {}, column {})",
                                    tf.line, tf.column
                                )
                            };
                            if cursor.table_function.is_some() || !cursor.stream {
                                return Err(at(
                                    "a CURSOR must be SELECT STREAM ... FROM a stream".into()
                                ));
                            }
                            let cursor_source =
                                resolve_source(&streams, &tables, &name, &cursor.from)?;
                            let cursor_columns =
                                cursor_columns(cursor, &streams[cursor_source]).map_err(&at)?;
                            let cursor_name = format!("{name}$cursor");
                            let cursor_stream =
                                upsert_stream(&mut streams, &cursor_name, cursor_columns.clone())?;
                            let cursor_pump = compile_pump(
                                &cursor_name,
                                &streams,
                                &tables,
                                cursor_source,
                                cursor_stream,
                                None,
                                cursor,
                            )?;
                            upsert_pump(&mut pumps, &mut pump_names, &cursor_name, cursor_pump)?;
                            let (kind, fn_columns) =
                                compile_table_function(tf, &cursor_columns).map_err(&at)?;
                            let fn_name = format!("{name}$fn");
                            let fn_stream = upsert_stream(&mut streams, &fn_name, fn_columns)?;
                            let fn_pump = Pump {
                                name: name.clone(),
                                source: cursor_stream,
                                target: fn_stream,
                                filter: None,
                                having: None,
                                projection: Vec::new(),
                                aggs: Vec::new(),
                                kind,
                                join: None,
                            };
                            upsert_pump(&mut pumps, &mut pump_names, &fn_name, fn_pump)?;
                            let mut outer = (*select).clone();
                            outer.from = fn_name;
                            outer.table_function = None;
                            Box::new(outer)
                        }
                    };
                    let source_idx = resolve_source(&streams, &tables, &name, &select.from)?;
                    let pump = compile_pump(
                        &name,
                        &streams,
                        &tables,
                        source_idx,
                        target_idx,
                        columns.as_deref(),
                        &select,
                    )?;
                    upsert_pump(&mut pumps, &mut pump_names, &name, pump)?;
                }
            }
        }
        let mut readers = vec![Vec::new(); streams.len()];
        for (i, pump) in pumps.iter().enumerate() {
            readers[pump.source].push(i);
        }
        // Dependency order: a pump comes after every pump writing its source.
        let mut order = Vec::new();
        let mut placed = vec![false; pumps.len()];
        for _ in 0..pumps.len() {
            for (i, pump) in pumps.iter().enumerate() {
                if placed[i] {
                    continue;
                }
                let ready = pumps
                    .iter()
                    .enumerate()
                    .all(|(j, other)| other.target != pump.source || placed[j]);
                if ready {
                    placed[i] = true;
                    order.push(i);
                }
            }
        }
        if order.len() != pumps.len() {
            return Err(
                "pumps form a cycle (a pump reads, directly or not, the stream it writes)".into(),
            );
        }
        Ok(Program {
            streams,
            tables,
            pumps,
            readers,
            order,
        })
    }

    pub fn stream_index(&self, name: &str) -> Option<usize> {
        self.streams.iter().position(|s| s.name == name)
    }

    /// The names of the streams pumps write (candidates for outputs).
    pub fn writable_streams(&self) -> Vec<String> {
        self.streams
            .iter()
            .filter(|s| !s.is_source && !s.name.contains('$'))
            .map(|s| s.name.clone())
            .collect()
    }
}

/// Adds a pump, or replaces the one of the same name (CREATE OR REPLACE PUMP).
fn upsert_pump(
    pumps: &mut Vec<Pump>,
    names: &mut Vec<String>,
    name: &str,
    pump: Pump,
) -> Result<(), CompileError> {
    if let Some(i) = names.iter().position(|n| n == name) {
        pumps[i] = pump;
    } else {
        if pumps.len() >= PUMPS_MAX {
            return Err(format!(
                "an application has at most {PUMPS_MAX} pumps (a table function takes two)"
            ));
        }
        names.push(name.to_string());
        pumps.push(pump);
    }
    Ok(())
}

/// Adds a hidden stream, or replaces the columns of the one of the same name.
fn upsert_stream(
    streams: &mut Vec<StreamDef>,
    name: &str,
    columns: Vec<Column>,
) -> Result<usize, CompileError> {
    if let Some(i) = streams.iter().position(|s| s.name == name) {
        streams[i].columns = columns;
        return Ok(i);
    }
    if streams.len() >= STREAMS_MAX {
        return Err(format!(
            "an application has at most {STREAMS_MAX} streams (a table function takes two)"
        ));
    }
    streams.push(StreamDef {
        name: name.to_string(),
        columns,
        is_source: false,
    });
    Ok(streams.len() - 1)
}

/// The stream a pump (or cursor) reads.
fn resolve_source(
    streams: &[StreamDef],
    tables: &[TableDef],
    pump: &str,
    from: &str,
) -> Result<usize, CompileError> {
    if tables.iter().any(|t| t.name == from) {
        return Err(format!(
            "pump \"{pump}\": \"{from}\" is a reference table; a pump reads a stream and joins the table (FROM stream JOIN table ON ...)"
        ));
    }
    if from == ERROR_STREAM {
        return Err(format!(
            "pump \"{pump}\": error_stream cannot be read by SQL"
        ));
    }
    streams.iter().position(|s| s.name == from).ok_or_else(|| {
        let known: Vec<&str> = streams
            .iter()
            .filter(|s| s.name != ERROR_STREAM && !s.name.contains('$'))
            .map(|s| s.name.as_str())
            .collect();
        format!(
            "pump \"{pump}\": stream \"{from}\" is not defined (known streams: {})",
            known.join(", ")
        )
    })
}

/// The columns a CURSOR's query produces: `*` gives the stream's columns, a column keeps
/// its type, `CAST(... AS t)` gives `t`; other expressions are DOUBLE unless they are
/// plainly text (a string literal or `||`).
fn cursor_columns(select: &sql::Select, stream: &StreamDef) -> Result<Vec<Column>, String> {
    let mut out: Vec<Column> = Vec::new();
    for (i, item) in select.items.iter().enumerate() {
        match item {
            SelectItem::Wildcard => out.extend(stream.columns.iter().cloned()),
            SelectItem::Expr { expr, alias } => {
                let source_column = match expr {
                    Expr::Column { name, .. } => stream
                        .columns
                        .iter()
                        .find(|c| c.name == *name || c.name.eq_ignore_ascii_case(name)),
                    _ => None,
                };
                let sql_type = match (expr, source_column) {
                    (_, Some(c)) => c.sql_type,
                    (Expr::Cast { sql_type, .. }, _) => *sql_type,
                    (Expr::Literal(Literal::Str(_)), _)
                    | (
                        Expr::Binary {
                            op: BinaryOp::Concat,
                            ..
                        },
                        _,
                    ) => SqlType::Varchar(65_535),
                    (Expr::Column { name, .. }, None) if name == "ROWTIME" => SqlType::Timestamp,
                    _ => SqlType::Double,
                };
                let name = alias
                    .clone()
                    .or_else(|| source_column.map(|c| c.name.clone()))
                    .unwrap_or_else(|| format!("EXPR${i}"));
                out.push(Column { name, sql_type });
            }
        }
    }
    Ok(out)
}

/// A literal argument of a table function as a number.
fn literal_number(e: &Expr) -> Option<f64> {
    match e {
        Expr::Literal(Literal::Int(i)) => Some(*i as f64),
        Expr::Literal(Literal::Float(f)) => Some(*f),
        Expr::Unary { negate: true, expr } => literal_number(expr).map(|f| -f),
        _ => None,
    }
}

/// The function pump's kind and its output columns (the cursor's, then the function's).
fn compile_table_function(
    tf: &sql::TableFunction,
    cursor: &[Column],
) -> Result<(PumpKind, Vec<Column>), String> {
    let number = |i: usize, what: &str, default: f64| -> Result<f64, String> {
        match tf.args.get(i) {
            None => Ok(default),
            Some(e) => {
                literal_number(e).ok_or_else(|| format!("{}: {what} must be a number", tf.name))
            }
        }
    };
    match tf.name.as_str() {
        "RANDOM_CUT_FOREST" => {
            if tf.args.len() > 4 {
                return Err("RANDOM_CUT_FOREST takes a cursor and at most 4 numbers (numberOfTrees, subSampleSize, timeDecay, shingleSize)".into());
            }
            let params = rcf::Params {
                n_trees: number(0, "numberOfTrees", rcf::N_TREES_DEFAULT as f64)? as usize,
                sample_size: number(1, "subSampleSize", rcf::SAMPLE_SIZE_DEFAULT as f64)? as usize,
                time_decay: number(2, "timeDecay", rcf::TIME_DECAY_DEFAULT)?,
                shingle_size: number(3, "shingleSize", rcf::SHINGLE_SIZE_DEFAULT as f64)? as usize,
            };
            params
                .validate()
                .map_err(|e| format!("RANDOM_CUT_FOREST: {e}"))?;
            let inputs: Vec<usize> = cursor
                .iter()
                .enumerate()
                .filter(|(_, c)| matches!(c.sql_type, SqlType::Integer | SqlType::Double))
                .map(|(i, _)| i)
                .collect();
            if inputs.is_empty() {
                return Err(
                    "RANDOM_CUT_FOREST needs at least one numeric column in its cursor".into(),
                );
            }
            if inputs.len() * params.shingle_size > rcf::DIMENSIONS_MAX {
                return Err(format!(
                    "RANDOM_CUT_FOREST: numeric columns times shingleSize is above {}",
                    rcf::DIMENSIONS_MAX
                ));
            }
            let mut columns = cursor.to_vec();
            columns.push(Column {
                name: "ANOMALY_SCORE".into(),
                sql_type: SqlType::Double,
            });
            Ok((PumpKind::Rcf { inputs, params }, columns))
        }
        "TOP_K_ITEMS_TUMBLING" => {
            let Some(Expr::Literal(Literal::Str(column_name))) = tf.args.first() else {
                return Err(
                    "TOP_K_ITEMS_TUMBLING takes a cursor, 'columnName', K and windowSize".into(),
                );
            };
            if tf.args.len() != 3 {
                return Err(
                    "TOP_K_ITEMS_TUMBLING takes a cursor, 'columnName', K and windowSize".into(),
                );
            }
            let Some(column) = cursor
                .iter()
                .position(|c| c.name == *column_name || c.name.eq_ignore_ascii_case(column_name))
            else {
                return Err(format!(
                    "TOP_K_ITEMS_TUMBLING: the cursor has no column '{column_name}'"
                ));
            };
            let k = number(1, "K", 0.0)?;
            if !(1.0..=TOP_K_MAX as f64).contains(&k) || k.fract() != 0.0 {
                return Err(format!(
                    "TOP_K_ITEMS_TUMBLING: K must be from 1 to {TOP_K_MAX}"
                ));
            }
            let window_s = number(2, "windowSize", 0.0)?;
            if !(1.0..=3600.0).contains(&window_s) || window_s.fract() != 0.0 {
                return Err(
                    "TOP_K_ITEMS_TUMBLING: windowSize must be from 1 to 3600 seconds".into(),
                );
            }
            let columns = vec![
                cursor[column].clone(),
                Column {
                    name: "MOST_FREQUENT_VALUES".into(),
                    sql_type: SqlType::Integer,
                },
            ];
            Ok((
                PumpKind::TopK {
                    column,
                    k: k as usize,
                    width_ms: window_s as i64 * 1_000,
                },
                columns,
            ))
        }
        other => Err(format!(
            "table function {other} is not supported (RANDOM_CUT_FOREST, TOP_K_ITEMS_TUMBLING are)"
        )),
    }
}

fn error_columns() -> Vec<Column> {
    let c = |name: &str, sql_type| Column {
        name: name.into(),
        sql_type,
    };
    vec![
        c("ERROR_TIME", SqlType::Timestamp),
        c("ERROR_LEVEL", SqlType::Varchar(10)),
        c("ERROR_NAME", SqlType::Varchar(32)),
        c("MESSAGE", SqlType::Varchar(4096)),
        c("DATA_ROWTIME", SqlType::Timestamp),
        c("DATA_ROW", SqlType::Varchar(49152)),
        c("PUMP_NAME", SqlType::Varchar(128)),
    ]
}

#[allow(clippy::too_many_arguments)]
fn compile_pump(
    name: &str,
    streams: &[StreamDef],
    tables: &[TableDef],
    source: usize,
    target: usize,
    target_columns: Option<&[String]>,
    select: &sql::Select,
) -> Result<Pump, CompileError> {
    let ctx = |m: String| format!("pump \"{name}\": {m}");
    let table_idx = match &select.join {
        None => None,
        Some(join) => Some(
            tables
                .iter()
                .position(|t| t.name == join.table)
                .ok_or_else(|| {
                    ctx(format!(
                        "\"{}\" is not a reference table of the application (add it with AddApplicationReferenceDataSource)",
                        join.table
                    ))
                })?,
        ),
    };
    let scope = Scope {
        stream: &streams[source],
        alias: select.from_alias.as_deref(),
        windows: &select.windows,
        table: match (&select.join, table_idx) {
            (Some(join), Some(t)) => Some((&tables[t], join.alias.as_deref())),
            _ => None,
        },
    };
    let mut aggs = Vec::new();
    let mut sliding = Vec::new();
    // The select list, with `*` expanded.
    let mut items: Vec<(Expr, Option<String>)> = Vec::new();
    for item in &select.items {
        match item {
            SelectItem::Wildcard => {
                for c in &scope.stream.columns {
                    items.push((
                        Expr::Column {
                            qualifier: Some(scope.stream.name.clone()),
                            name: c.name.clone(),
                        },
                        Some(c.name.clone()),
                    ));
                }
                if let Some((table, _)) = scope.table {
                    for c in &table.columns {
                        items.push((
                            Expr::Column {
                                qualifier: Some(table.name.clone()),
                                name: c.name.clone(),
                            },
                            Some(c.name.clone()),
                        ));
                    }
                }
            }
            SelectItem::Expr { expr, alias } => items.push((expr.clone(), alias.clone())),
        }
    }
    let target_def = &streams[target];
    let slots: Vec<usize> = match target_columns {
        Some(names) => {
            if names.len() != items.len() {
                return Err(ctx(format!(
                    "INSERT INTO \"{}\" names {} columns but the SELECT has {}",
                    target_def.name,
                    names.len(),
                    items.len()
                )));
            }
            names
                .iter()
                .map(|n| {
                    target_def
                        .columns
                        .iter()
                        .position(|c| c.name == *n)
                        .ok_or_else(|| {
                            ctx(format!(
                                "stream \"{}\" has no column \"{n}\"",
                                target_def.name
                            ))
                        })
                })
                .collect::<Result<_, _>>()?
        }
        None => {
            if target_def.columns.len() != items.len() {
                return Err(ctx(format!(
                    "stream \"{}\" has {} columns but the SELECT has {}",
                    target_def.name,
                    target_def.columns.len(),
                    items.len()
                )));
            }
            (0..items.len()).collect()
        }
    };
    let mut projection: Vec<Option<CExpr>> = vec![None; target_def.columns.len()];
    for ((expr, _), slot) in items.iter().zip(slots) {
        let compiled = compile_expr(expr, &scope, Some((&mut aggs, &mut sliding)), &ctx)?;
        projection[slot] = Some(compiled);
    }
    let filter = match &select.filter {
        Some(e) => {
            if e.any(&|e| matches!(e, Expr::Function { name, .. } if agg_func(name).is_some())) {
                return Err(ctx("aggregate functions are not allowed in WHERE".into()));
            }
            Some(compile_expr(e, &scope, None, &ctx)?)
        }
        None => None,
    };
    let having = match &select.having {
        Some(e) => Some(compile_expr(
            e,
            &scope,
            Some((&mut aggs, &mut sliding)),
            &ctx,
        )?),
        None => None,
    };
    let join = match (&select.join, table_idx) {
        (Some(join), Some(table)) => {
            if contains_agg(&join.on) {
                return Err(ctx("aggregate functions are not allowed in ON".into()));
            }
            let on = compile_expr(&join.on, &scope, None, &ctx)?;
            let n_stream = scope.stream.columns.len();
            let mut stream_keys = Vec::new();
            let mut table_key_columns = Vec::new();
            let mut conjuncts = Vec::new();
            flatten_and(&on, &mut conjuncts);
            for c in conjuncts {
                let CExpr::Bin(BinaryOp::Eq, l, r) = c else {
                    continue;
                };
                for (a, b) in [(l, r), (r, l)] {
                    if let CExpr::Col(j) = **b
                        && j >= n_stream
                        && !refers_beyond(a, n_stream)
                    {
                        stream_keys.push((**a).clone());
                        table_key_columns.push(j - n_stream);
                        break;
                    }
                }
            }
            Some(CJoin {
                table,
                left_outer: join.left_outer,
                on,
                stream_keys,
                table_key_columns,
            })
        }
        _ => None,
    };
    let kind = if !select.order_by.is_empty() {
        if !sliding.is_empty()
            || !select.group_by.is_empty()
            || select.stagger.is_some()
            || !aggs.is_empty()
        {
            return Err(ctx(
                "ORDER BY is supported on pumps without aggregates, GROUP BY or windows".into(),
            ));
        }
        let mut width_ms = None;
        let mut keys = Vec::new();
        for (i, (e, descending)) in select.order_by.iter().enumerate() {
            let on_rowtime =
                e.any(&|e| matches!(e, Expr::Column { name, .. } if name == "ROWTIME"));
            if i == 0 {
                match e {
                    Expr::Step { width_ms: w, .. } if on_rowtime => width_ms = Some(*w),
                    Expr::FloorTo {
                        unit, ceil: false, ..
                    } if on_rowtime => width_ms = Some(unit.millis()),
                    _ => {}
                }
                continue;
            }
            keys.push((compile_expr(e, &scope, None, &ctx)?, *descending));
        }
        let Some(width_ms) = width_ms else {
            return Err(ctx("a streaming ORDER BY must start with a ROWTIME bucket such as FLOOR(\"S\".ROWTIME TO SECOND)".into()));
        };
        PumpKind::Ordered { width_ms, keys }
    } else if let Some(stagger) = &select.stagger {
        if !sliding.is_empty() || !select.group_by.is_empty() {
            return Err(ctx(
                "WINDOWED BY STAGGER cannot be combined with GROUP BY or OVER".into(),
            ));
        }
        let mut keys = Vec::new();
        for e in &stagger.partition_by {
            keys.push(compile_expr(e, &scope, None, &ctx)?);
        }
        check_grouped_items(&items, &stagger.partition_by, &ctx)?;
        PumpKind::Stagger {
            keys,
            range_ms: stagger.range_ms,
        }
    } else if !select.group_by.is_empty() {
        if !sliding.is_empty() {
            return Err(ctx("OVER windows cannot be combined with GROUP BY".into()));
        }
        let mut width_ms = None;
        let mut keys = Vec::new();
        for e in &select.group_by {
            let on_rowtime =
                e.any(&|e| matches!(e, Expr::Column { name, .. } if name == "ROWTIME"));
            match e {
                Expr::Step { width_ms: w, .. } if on_rowtime => width_ms = Some(*w),
                Expr::FloorTo {
                    unit, ceil: false, ..
                } if on_rowtime => width_ms = Some(unit.millis()),
                _ => {}
            }
            keys.push(compile_expr(e, &scope, None, &ctx)?);
        }
        let Some(width_ms) = width_ms else {
            return Err(ctx("a streaming GROUP BY must include a ROWTIME bucket such as STEP(\"SOURCE_SQL_STREAM_001\".ROWTIME BY INTERVAL '60' SECOND) or FLOOR(\"SOURCE_SQL_STREAM_001\".ROWTIME TO MINUTE)".into()));
        };
        check_grouped_items(&items, &select.group_by, &ctx)?;
        PumpKind::Tumbling { keys, width_ms }
    } else if !sliding.is_empty() {
        if aggs.iter().any(|a| a.window.is_none()) {
            return Err(ctx(
                "every aggregate needs OVER when any has one and there is no GROUP BY".into(),
            ));
        }
        PumpKind::Sliding { windows: sliding }
    } else {
        if !aggs.is_empty() {
            return Err(ctx("an aggregate needs GROUP BY with a ROWTIME bucket (tumbling window) or OVER a window (sliding window)".into()));
        }
        PumpKind::Plain
    };
    Ok(Pump {
        name: name.to_string(),
        source,
        target,
        filter,
        having,
        projection,
        aggs,
        kind,
        join,
    })
}

/// Non-aggregated select items must be group (or stagger partition) keys, compared as
/// written.
fn check_grouped_items(
    items: &[(Expr, Option<String>)],
    keys: &[Expr],
    ctx: &dyn Fn(String) -> CompileError,
) -> Result<(), CompileError> {
    for (expr, _) in items {
        if !contains_agg(expr) && !is_constant(expr) && !keys.contains(expr) {
            let ok = match expr {
                Expr::Column { name, .. } => keys
                    .iter()
                    .any(|g| matches!(g, Expr::Column { name: n, .. } if n == name)),
                _ => false,
            };
            if !ok && !expr.any(&|e| matches!(e, Expr::Column { name, .. } if name == "ROWTIME")) {
                return Err(ctx(format!(
                    "expression {} is neither aggregated nor a grouping key",
                    describe_expr(expr)
                )));
            }
        }
    }
    Ok(())
}

fn flatten_and<'a>(e: &'a CExpr, out: &mut Vec<&'a CExpr>) {
    match e {
        CExpr::Bin(BinaryOp::And, l, r) => {
            flatten_and(l, out);
            flatten_and(r, out);
        }
        other => out.push(other),
    }
}

/// Whether `e` reads a column at index `n` or beyond (a joined table's column).
fn refers_beyond(e: &CExpr, n: usize) -> bool {
    match e {
        CExpr::Col(i) => *i >= n,
        CExpr::Lit(_) | CExpr::RowTime | CExpr::Agg(_) => false,
        CExpr::Neg(x)
        | CExpr::Not(x)
        | CExpr::IsNull(x, _)
        | CExpr::Cast(x, _)
        | CExpr::Step(x, _)
        | CExpr::FloorTo(x, _, _) => refers_beyond(x, n),
        CExpr::Bin(_, a, b) | CExpr::Like(a, b, _) => refers_beyond(a, n) || refers_beyond(b, n),
        CExpr::Between(a, b, c, _) => {
            refers_beyond(a, n) || refers_beyond(b, n) || refers_beyond(c, n)
        }
        CExpr::In(x, list, _) => refers_beyond(x, n) || list.iter().any(|e| refers_beyond(e, n)),
        CExpr::Case(o, branches, other) => {
            o.as_ref().is_some_and(|e| refers_beyond(e, n))
                || branches
                    .iter()
                    .any(|(a, b)| refers_beyond(a, n) || refers_beyond(b, n))
                || other.as_ref().is_some_and(|e| refers_beyond(e, n))
        }
        CExpr::Call(_, args) => args.iter().any(|e| refers_beyond(e, n)),
    }
}

fn is_constant(e: &Expr) -> bool {
    !e.any(&|e| matches!(e, Expr::Column { .. }))
}

fn contains_agg(e: &Expr) -> bool {
    e.any(&|e| matches!(e, Expr::Function { name, .. } if agg_func(name).is_some()))
}

fn describe_expr(e: &Expr) -> String {
    match e {
        Expr::Column { name, .. } => name.clone(),
        Expr::Function { name, .. } => format!("{name}(...)"),
        _ => "in the select list".into(),
    }
}

fn agg_func(name: &str) -> Option<AggFunc> {
    Some(match name {
        "COUNT" => AggFunc::Count,
        "SUM" => AggFunc::Sum,
        "AVG" => AggFunc::Avg,
        "MIN" => AggFunc::Min,
        "MAX" => AggFunc::Max,
        "FIRST_VALUE" => AggFunc::First,
        "LAST_VALUE" => AggFunc::Last,
        _ => return None,
    })
}

const SCALAR_FUNCTIONS: &[(&str, usize, usize)] = &[
    ("UPPER", 1, 1),
    ("LOWER", 1, 1),
    ("INITCAP", 1, 1),
    ("CHAR_LENGTH", 1, 1),
    ("CHARACTER_LENGTH", 1, 1),
    ("TRIM", 1, 1),
    ("LTRIM", 1, 1),
    ("RTRIM", 1, 1),
    ("SUBSTRING", 2, 3),
    ("POSITION", 2, 2),
    ("ABS", 1, 1),
    ("MOD", 2, 2),
    ("POWER", 2, 2),
    ("SQRT", 1, 1),
    ("LN", 1, 1),
    ("LOG10", 1, 1),
    ("EXP", 1, 1),
    ("FLOOR", 1, 1),
    ("CEIL", 1, 1),
    ("ROUND", 1, 2),
    ("COALESCE", 1, 16),
    ("NULLIF", 2, 2),
    ("CURRENT_ROW_TIMESTAMP", 0, 0),
    ("CURRENT_TIMESTAMP", 0, 0),
    ("LOCALTIMESTAMP", 0, 0),
    ("TSDIFF", 2, 2),
    ("UNIX_TIMESTAMP", 1, 1),
    ("TO_TIMESTAMP", 1, 1),
];

type AggSink<'a> = Option<(&'a mut Vec<AggSpec>, &'a mut Vec<SlidingWindow>)>;

fn compile_expr(
    e: &Expr,
    scope: &Scope<'_>,
    mut aggs: AggSink<'_>,
    ctx: &dyn Fn(String) -> CompileError,
) -> Result<CExpr, CompileError> {
    let sub = |e: &Expr, aggs: &mut AggSink<'_>| -> Result<Box<CExpr>, CompileError> {
        let reborrow: AggSink<'_> = aggs.as_mut().map(|(a, s)| (&mut **a, &mut **s));
        compile_expr(e, scope, reborrow, ctx).map(Box::new)
    };
    Ok(match e {
        Expr::Literal(l) => CExpr::Lit(match l {
            Literal::Null => Value::Null,
            Literal::Bool(b) => Value::Bool(*b),
            Literal::Int(i) => Value::Int(*i),
            Literal::Float(f) => Value::Float(*f),
            Literal::Str(s) => Value::Str(s.clone()),
            Literal::Interval(ms) => Value::Int(*ms),
            Literal::Timestamp(ms) => Value::Timestamp(*ms),
        }),
        Expr::Column { qualifier, name } => {
            let find = |columns: &[Column]| {
                columns.iter().position(|c| c.name == *name).or_else(|| {
                    columns
                        .iter()
                        .position(|c| c.name.eq_ignore_ascii_case(name))
                })
            };
            let n_stream = scope.stream.columns.len();
            let on_stream = |q: &str| q == scope.stream.name || Some(q) == scope.alias;
            if let Some((table, alias)) = scope.table {
                let on_table = |q: &str| q == table.name || Some(q) == alias;
                let table_column = |name: &str| match find(&table.columns) {
                    Some(j) => Ok(CExpr::Col(n_stream + j)),
                    None => Err(ctx(format!(
                        "column \"{name}\" not found in table \"{}\"",
                        table.name
                    ))),
                };
                match qualifier.as_deref() {
                    Some(q) if on_table(q) && !on_stream(q) => return table_column(name),
                    None if name != "ROWTIME"
                        && find(&scope.stream.columns).is_none()
                        && find(&table.columns).is_some() =>
                    {
                        return table_column(name);
                    }
                    _ => {}
                }
            }
            if let Some(q) = qualifier
                && !on_stream(q)
            {
                return Err(ctx(format!(
                    "\"{q}\" is not the stream, table or alias in FROM"
                )));
            }
            if name == "ROWTIME" {
                return Ok(CExpr::RowTime);
            }
            let columns = &scope.stream.columns;
            match find(columns) {
                Some(i) => CExpr::Col(i),
                None => {
                    let known: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
                    return Err(ctx(format!(
                        "column \"{name}\" not found in stream \"{}\" (columns: {})",
                        scope.stream.name,
                        known.join(", ")
                    )));
                }
            }
        }
        Expr::Unary { negate, expr } => {
            let inner = sub(expr, &mut aggs)?;
            if *negate { CExpr::Neg(inner) } else { *inner }
        }
        Expr::Not(expr) => CExpr::Not(sub(expr, &mut aggs)?),
        Expr::Binary { op, left, right } => {
            CExpr::Bin(*op, sub(left, &mut aggs)?, sub(right, &mut aggs)?)
        }
        Expr::IsNull { expr, negated } => CExpr::IsNull(sub(expr, &mut aggs)?, *negated),
        Expr::Like {
            expr,
            pattern,
            negated,
        } => CExpr::Like(sub(expr, &mut aggs)?, sub(pattern, &mut aggs)?, *negated),
        Expr::Between {
            expr,
            low,
            high,
            negated,
        } => CExpr::Between(
            sub(expr, &mut aggs)?,
            sub(low, &mut aggs)?,
            sub(high, &mut aggs)?,
            *negated,
        ),
        Expr::InList {
            expr,
            list,
            negated,
        } => {
            let head = sub(expr, &mut aggs)?;
            let mut items = Vec::new();
            for item in list {
                items.push(*sub(item, &mut aggs)?);
            }
            CExpr::In(head, items, *negated)
        }
        Expr::Case {
            operand,
            branches,
            otherwise,
        } => {
            let operand = match operand {
                Some(o) => Some(sub(o, &mut aggs)?),
                None => None,
            };
            let mut out = Vec::new();
            for (w, t) in branches {
                out.push((*sub(w, &mut aggs)?, *sub(t, &mut aggs)?));
            }
            let otherwise = match otherwise {
                Some(o) => Some(sub(o, &mut aggs)?),
                None => None,
            };
            CExpr::Case(operand, out, otherwise)
        }
        Expr::Cast { expr, sql_type } => CExpr::Cast(sub(expr, &mut aggs)?, *sql_type),
        Expr::Step { expr, width_ms } => CExpr::Step(sub(expr, &mut aggs)?, *width_ms),
        Expr::FloorTo { expr, unit, ceil } => {
            CExpr::FloorTo(sub(expr, &mut aggs)?, unit.millis(), *ceil)
        }
        Expr::Function {
            name,
            args,
            star,
            over,
        } => {
            if let Some(func) = agg_func(name) {
                let Some((sink, windows)) = aggs.as_mut() else {
                    return Err(ctx(format!("aggregate {name} is not allowed here")));
                };
                if args.len() > 1 || (args.is_empty() && !(*star && func == AggFunc::Count)) {
                    return Err(ctx(format!("{name} takes one argument")));
                }
                let arg = match args.first() {
                    Some(a) => {
                        if contains_agg(a) {
                            return Err(ctx("aggregates cannot be nested".into()));
                        }
                        Some(compile_expr(a, scope, None, ctx)?)
                    }
                    None => None,
                };
                let window = match over {
                    None => None,
                    Some(over) => {
                        let spec = match over {
                            Over::Inline(spec) => spec.clone(),
                            Over::Named(w) => scope
                                .windows
                                .iter()
                                .find(|(n, _)| n == w)
                                .map(|(_, s)| s.clone())
                                .ok_or_else(|| {
                                    ctx(format!("window {w} is not defined in WINDOW"))
                                })?,
                        };
                        let mut partition_by = Vec::new();
                        for p in &spec.partition_by {
                            partition_by.push(compile_expr(p, scope, None, ctx)?);
                        }
                        windows.push(SlidingWindow {
                            partition_by,
                            frame: spec.frame,
                        });
                        Some(windows.len() - 1)
                    }
                };
                sink.push(AggSpec { func, arg, window });
                return Ok(CExpr::Agg(sink.len() - 1));
            }
            if over.is_some() {
                return Err(ctx(format!("{name} is not an aggregate function")));
            }
            let Some((_, min, max)) = SCALAR_FUNCTIONS.iter().find(|(n, _, _)| n == name) else {
                return Err(ctx(format!("function {name} is not supported")));
            };
            if args.len() < *min || args.len() > *max {
                return Err(ctx(format!(
                    "{name} takes {min} to {max} arguments, not {}",
                    args.len()
                )));
            }
            let mut out = Vec::new();
            for a in args {
                out.push(*sub(a, &mut aggs)?);
            }
            CExpr::Call(name.clone(), out)
        }
    })
}

/// A running aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Acc {
    Count(i64),
    Sum(Value),
    Avg { sum: f64, n: i64 },
    Min(Value),
    Max(Value),
    First(Option<Value>),
    Last(Value),
}

impl Acc {
    fn new(func: AggFunc) -> Acc {
        match func {
            AggFunc::Count => Acc::Count(0),
            AggFunc::Sum => Acc::Sum(Value::Null),
            AggFunc::Avg => Acc::Avg { sum: 0.0, n: 0 },
            AggFunc::Min => Acc::Min(Value::Null),
            AggFunc::Max => Acc::Max(Value::Null),
            AggFunc::First => Acc::First(None),
            AggFunc::Last => Acc::Last(Value::Null),
        }
    }

    /// Adds a value (`None`: COUNT(*)'s row without argument).
    fn add(&mut self, v: Option<&Value>) {
        match self {
            Acc::Count(n) => {
                if v.is_none_or(|v| !v.is_null()) {
                    *n += 1;
                }
            }
            Acc::Sum(s) => {
                if let Some(v) = v.filter(|v| !v.is_null()) {
                    *s = match (&*s, v) {
                        (Value::Null, Value::Int(i)) => Value::Int(*i),
                        (Value::Int(a), Value::Int(b)) => Value::Int(a.wrapping_add(*b)),
                        (Value::Null, other) => Value::Float(other.as_f64().unwrap_or(0.0)),
                        (a, b) => {
                            Value::Float(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0))
                        }
                    };
                }
            }
            Acc::Avg { sum, n } => {
                if let Some(f) = v.and_then(Value::as_f64) {
                    *sum += f;
                    *n += 1;
                }
            }
            Acc::Min(m) => {
                if let Some(v) = v.filter(|v| !v.is_null())
                    && (m.is_null() || v.compare(m) == Some(std::cmp::Ordering::Less))
                {
                    *m = v.clone();
                }
            }
            Acc::Max(m) => {
                if let Some(v) = v.filter(|v| !v.is_null())
                    && (m.is_null() || v.compare(m) == Some(std::cmp::Ordering::Greater))
                {
                    *m = v.clone();
                }
            }
            Acc::First(f) => {
                if f.is_none() {
                    *f = Some(v.cloned().unwrap_or(Value::Null));
                }
            }
            Acc::Last(l) => *l = v.cloned().unwrap_or(Value::Null),
        }
    }

    fn result(&self) -> Value {
        match self {
            Acc::Count(n) => Value::Int(*n),
            Acc::Sum(s) => s.clone(),
            Acc::Avg { sum, n } => {
                if *n == 0 {
                    Value::Null
                } else {
                    Value::Float(sum / *n as f64)
                }
            }
            Acc::Min(v) | Acc::Max(v) | Acc::Last(v) => v.clone(),
            Acc::First(v) => v.clone().unwrap_or(Value::Null),
        }
    }
}

/// The aggregates of one sliding-window partition, updated as rows enter and leave its
/// buffer, so a row costs O(1) amortized instead of a pass over the whole range (a 1-second
/// RANGE at 58k rows/s over 16 keys held 3,600 rows per key, and recomputing them for every
/// row capped the engine at about 1,000 rows/s).
#[derive(Debug, Clone, PartialEq, Default)]
struct SlideState {
    /// Rows of the buffer it accounts for; any other count (after a restore) rebuilds it.
    rows: usize,
    /// The sequence number of the buffer's front row.
    front_seq: u64,
    /// One per aggregate of the pump (`Other` for those of other windows).
    accs: Vec<SlideAcc>,
}

#[derive(Debug, Clone, PartialEq)]
enum SlideAcc {
    Other,
    Count(i64),
    /// Integers exactly (wrapping, as `Acc::Sum`), other numbers as floats; `n` non-nulls,
    /// `n_float` of them not integers (then the sum is a float).
    Sum {
        int: i64,
        float: f64,
        n: i64,
        n_float: i64,
    },
    Avg {
        sum: f64,
        n: i64,
    },
    /// MIN or MAX: a monotonic queue of (sequence number, value); its front is the answer,
    /// the earliest of equal extremes, as `Acc` keeps.
    Extreme {
        max: bool,
        queue: VecDeque<(u64, Value)>,
    },
    /// FIRST_VALUE and LAST_VALUE read the buffer's ends.
    First,
    Last,
}

impl SlideState {
    fn build(specs: &[AggSpec], window: usize, buffer: &VecDeque<Row>) -> SlideState {
        let mut state = SlideState {
            rows: 0,
            front_seq: 0,
            accs: specs
                .iter()
                .map(|spec| {
                    if spec.window != Some(window) {
                        return SlideAcc::Other;
                    }
                    match spec.func {
                        AggFunc::Count => SlideAcc::Count(0),
                        AggFunc::Sum => SlideAcc::Sum {
                            int: 0,
                            float: 0.0,
                            n: 0,
                            n_float: 0,
                        },
                        AggFunc::Avg => SlideAcc::Avg { sum: 0.0, n: 0 },
                        AggFunc::Min | AggFunc::Max => SlideAcc::Extreme {
                            max: spec.func == AggFunc::Max,
                            queue: VecDeque::new(),
                        },
                        AggFunc::First => SlideAcc::First,
                        AggFunc::Last => SlideAcc::Last,
                    }
                })
                .collect(),
        };
        for row in buffer {
            state.push(specs, window, row);
        }
        state
    }

    fn push(&mut self, specs: &[AggSpec], window: usize, row: &Row) {
        let seq = self.front_seq + self.rows as u64;
        self.rows += 1;
        for (acc, spec) in self.accs.iter_mut().zip(specs) {
            if spec.window != Some(window) {
                continue;
            }
            let v = arg_of(spec, row);
            match acc {
                SlideAcc::Count(n) => {
                    if v.as_ref().is_none_or(|v| !v.is_null()) {
                        *n += 1;
                    }
                }
                SlideAcc::Sum {
                    int,
                    float,
                    n,
                    n_float,
                } => match v {
                    None | Some(Value::Null) => {}
                    Some(Value::Int(i)) => {
                        *int = int.wrapping_add(i);
                        *n += 1;
                    }
                    Some(other) => {
                        *float += other.as_f64().unwrap_or(0.0);
                        *n += 1;
                        *n_float += 1;
                    }
                },
                SlideAcc::Avg { sum, n } => {
                    if let Some(f) = v.as_ref().and_then(Value::as_f64) {
                        *sum += f;
                        *n += 1;
                    }
                }
                SlideAcc::Extreme { max, queue } => {
                    if let Some(v) = v.filter(|v| !v.is_null()) {
                        let beats = if *max {
                            std::cmp::Ordering::Greater
                        } else {
                            std::cmp::Ordering::Less
                        };
                        while queue
                            .back()
                            .is_some_and(|(_, back)| v.compare(back) == Some(beats))
                        {
                            queue.pop_back();
                        }
                        queue.push_back((seq, v));
                    }
                }
                SlideAcc::Other | SlideAcc::First | SlideAcc::Last => {}
            }
        }
    }

    /// `row` has just left the front of the buffer.
    fn pop(&mut self, specs: &[AggSpec], window: usize, row: &Row) {
        let seq = self.front_seq;
        self.front_seq += 1;
        self.rows = self.rows.saturating_sub(1);
        for (acc, spec) in self.accs.iter_mut().zip(specs) {
            if spec.window != Some(window) {
                continue;
            }
            match acc {
                SlideAcc::Count(n) => {
                    if arg_of(spec, row).as_ref().is_none_or(|v| !v.is_null()) {
                        *n -= 1;
                    }
                }
                SlideAcc::Sum {
                    int,
                    float,
                    n,
                    n_float,
                } => match arg_of(spec, row) {
                    None | Some(Value::Null) => {}
                    Some(Value::Int(i)) => {
                        *int = int.wrapping_sub(i);
                        *n -= 1;
                    }
                    Some(other) => {
                        *float -= other.as_f64().unwrap_or(0.0);
                        *n -= 1;
                        *n_float -= 1;
                        if *n_float == 0 {
                            // No float left: drop the rounding the removals left behind.
                            *float = 0.0;
                        }
                    }
                },
                SlideAcc::Avg { sum, n } => {
                    if let Some(f) = arg_of(spec, row).as_ref().and_then(Value::as_f64) {
                        *sum -= f;
                        *n -= 1;
                        if *n == 0 {
                            *sum = 0.0;
                        }
                    }
                }
                SlideAcc::Extreme { queue, .. } => {
                    if queue.front().is_some_and(|(front, _)| *front == seq) {
                        queue.pop_front();
                    }
                }
                SlideAcc::Other | SlideAcc::First | SlideAcc::Last => {}
            }
        }
    }
}

impl SlideAcc {
    fn result(&self, spec: &AggSpec, buffer: &VecDeque<Row>) -> Value {
        match self {
            SlideAcc::Other => Value::Null,
            SlideAcc::Count(n) => Value::Int(*n),
            SlideAcc::Sum {
                int,
                float,
                n,
                n_float,
            } => {
                if *n == 0 {
                    Value::Null
                } else if *n_float == 0 {
                    Value::Int(*int)
                } else {
                    Value::Float(*int as f64 + float)
                }
            }
            SlideAcc::Avg { sum, n } => {
                if *n == 0 {
                    Value::Null
                } else {
                    Value::Float(sum / *n as f64)
                }
            }
            SlideAcc::Extreme { queue, .. } => {
                queue.front().map_or(Value::Null, |(_, v)| v.clone())
            }
            SlideAcc::First => buffer
                .front()
                .and_then(|row| arg_of(spec, row))
                .unwrap_or(Value::Null),
            SlideAcc::Last => buffer
                .back()
                .and_then(|row| arg_of(spec, row))
                .unwrap_or(Value::Null),
        }
    }
}

/// An aggregate's argument evaluated on `row` (`None` for `COUNT(*)`).
fn arg_of(spec: &AggSpec, row: &Row) -> Option<Value> {
    let no_aggs: [Value; 0] = [];
    let env = Env {
        row,
        aggs: &no_aggs,
    };
    spec.arg.as_ref().map(|a| eval(a, &env))
}

/// One group of an open tumbling window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Group {
    key: String,
    /// The first row of the group: non-aggregated expressions are evaluated on it.
    first: Row,
    accs: Vec<Acc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Window {
    groups: Vec<Group>,
    #[serde(skip)]
    index: HashMap<String, usize>,
}

/// A pump's state, checkpointed with the source positions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum PumpState {
    Plain,
    Tumbling {
        windows: BTreeMap<i64, Window>,
    },
    Sliding {
        partitions: Vec<HashMap<String, VecDeque<Row>>>,
        /// Per window and partition: the aggregates of the partition's buffer, kept up to
        /// date row by row. Derived from `partitions`, so not checkpointed: after a restore
        /// each is rebuilt from its buffer on the partition's next row.
        #[serde(skip)]
        aggregates: Vec<HashMap<String, SlideState>>,
    },
    /// Open stagger windows in opening order, which is closing order (one range for all).
    Stagger {
        windows: VecDeque<StaggerWindow>,
        /// The sequence number of `windows[0]`.
        first_seq: u64,
        /// Partition key to the sequence number of its open window.
        #[serde(skip)]
        open: HashMap<String, u64>,
    },
    /// The open ORDER BY bucket (start) and its rows with their sort keys.
    Ordered {
        bucket: Option<i64>,
        rows: Vec<(Vec<Value>, Row)>,
    },
    /// The open TOP_K_ITEMS_TUMBLING window (start) and its counts by value key.
    TopK {
        window_start: Option<i64>,
        counts: BTreeMap<String, ValueCount>,
    },
}

/// Counts of one value in the open TOP_K_ITEMS_TUMBLING window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ValueCount {
    value: Value,
    count: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StaggerWindow {
    close_ms: i64,
    group: Group,
}

/// Everything an engine remembers between rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    /// The newest ROWTIME given to a row.
    last_rowtime: i64,
    /// Windows ending at or before this are emitted.
    watermark: i64,
    pumps: Vec<PumpState>,
}

/// A row some stream received; the runner sends those of output streams.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    pub stream: usize,
    pub row: Row,
}

pub struct Engine {
    pub program: Program,
    state: EngineState,
    /// Reference tables' rows (loaded at start, not checkpointed).
    tables: Vec<Table>,
    /// Per pump with a join: table key to the matching table rows.
    join_indexes: Vec<HashMap<String, Vec<usize>>>,
    /// Per RANDOM_CUT_FOREST pump: its model (not checkpointed).
    forests: Vec<Option<rcf::Forest>>,
}

#[derive(Debug, Clone, Default)]
struct Table {
    rows: Vec<Vec<Value>>,
}

impl Engine {
    pub fn new(program: Program) -> Engine {
        let pumps = program
            .pumps
            .iter()
            .map(|p| match &p.kind {
                // The forest is not checkpointed (it starts fresh, as on AWS).
                PumpKind::Plain | PumpKind::Rcf { .. } => PumpState::Plain,
                PumpKind::Ordered { .. } => PumpState::Ordered {
                    bucket: None,
                    rows: Vec::new(),
                },
                PumpKind::TopK { .. } => PumpState::TopK {
                    window_start: None,
                    counts: BTreeMap::new(),
                },
                PumpKind::Tumbling { .. } => PumpState::Tumbling {
                    windows: BTreeMap::new(),
                },
                PumpKind::Sliding { windows } => PumpState::Sliding {
                    partitions: vec![HashMap::new(); windows.len()],
                    aggregates: vec![HashMap::new(); windows.len()],
                },
                PumpKind::Stagger { .. } => PumpState::Stagger {
                    windows: VecDeque::new(),
                    first_seq: 0,
                    open: HashMap::new(),
                },
            })
            .collect();
        let tables = program.tables.iter().map(|_| Table::default()).collect();
        let forests = program
            .pumps
            .iter()
            .enumerate()
            .map(|(i, p)| match &p.kind {
                // A fixed seed per pump: the same rows give the same scores.
                PumpKind::Rcf { params, .. } => {
                    Some(rcf::Forest::new(*params, 0x5EED_0000 + i as u64))
                }
                _ => None,
            })
            .collect();
        let join_indexes = vec![HashMap::new(); program.pumps.len()];
        Engine {
            program,
            tables,
            join_indexes,
            forests,
            state: EngineState {
                last_rowtime: i64::MIN,
                watermark: i64::MIN,
                pumps,
            },
        }
    }

    /// Restores checkpointed state; state of another program shape is ignored (the code
    /// changed), which starts the windows afresh.
    pub fn restore(&mut self, state: EngineState) -> bool {
        let fits = state.pumps.len() == self.state.pumps.len()
            && state
                .pumps
                .iter()
                .zip(&self.state.pumps)
                .all(|(a, b)| std::mem::discriminant(a) == std::mem::discriminant(b));
        if fits {
            self.state = state;
            for pump in &mut self.state.pumps {
                if let PumpState::Stagger {
                    windows,
                    first_seq,
                    open,
                } = pump
                {
                    *open = windows
                        .iter()
                        .zip(*first_seq..)
                        .map(|(w, seq)| (w.group.key.clone(), seq))
                        .collect();
                }
                if let PumpState::Tumbling { windows } = pump {
                    for window in windows.values_mut() {
                        window.index = window
                            .groups
                            .iter()
                            .enumerate()
                            .map(|(i, g)| (g.key.clone(), i))
                            .collect();
                    }
                }
            }
        }
        fits
    }

    pub fn state(&self) -> &EngineState {
        &self.state
    }

    /// Loads the rows of reference table `name` (replacing earlier rows); rows beyond
    /// `TABLE_ROWS_MAX` are refused. Rows must have the table's columns, in order.
    pub fn load_table(&mut self, name: &str, rows: Vec<Vec<Value>>) -> Result<(), String> {
        let Some(t) = self.program.tables.iter().position(|t| t.name == name) else {
            return Err(format!("no reference table {name}"));
        };
        if rows.len() > TABLE_ROWS_MAX {
            return Err(format!(
                "reference table {name} has {} rows, more than {TABLE_ROWS_MAX}",
                rows.len()
            ));
        }
        for (idx, pump) in self.program.pumps.iter().enumerate() {
            let Some(join) = pump.join.as_ref().filter(|j| j.table == t) else {
                continue;
            };
            let mut index: HashMap<String, Vec<usize>> = HashMap::new();
            if !join.table_key_columns.is_empty() {
                for (ri, row) in rows.iter().enumerate() {
                    let key = join_key(
                        join.table_key_columns
                            .iter()
                            .map(|&c| row.get(c).cloned().unwrap_or(Value::Null)),
                    );
                    if let Some(key) = key {
                        index.entry(key).or_default().push(ri);
                    }
                }
            }
            if let Some(slot) = self.join_indexes.get_mut(idx) {
                *slot = index;
            }
        }
        if let Some(table) = self.tables.get_mut(t) {
            table.rows = rows;
        }
        Ok(())
    }

    /// The rows a stream row makes through a pump's join (the row itself without a join).
    fn joined(&self, idx: usize, row: &Row) -> (Vec<Row>, Vec<Row>) {
        let pump = &self.program.pumps[idx];
        let Some(join) = &pump.join else {
            return (vec![row.clone()], Vec::new());
        };
        let Some(table) = self.tables.get(join.table) else {
            return (Vec::new(), Vec::new());
        };
        let width = self.program.tables[join.table].columns.len();
        let no_aggs: [Value; 0] = [];
        let env = Env {
            row,
            aggs: &no_aggs,
        };
        let candidates: Box<dyn Iterator<Item = usize> + '_> = if join.stream_keys.is_empty() {
            Box::new(0..table.rows.len())
        } else {
            let key = join_key(join.stream_keys.iter().map(|k| eval(k, &env)));
            match key.and_then(|k| self.join_indexes.get(idx).and_then(|i| i.get(&k))) {
                Some(rows) => Box::new(rows.iter().copied()),
                None => Box::new(std::iter::empty()),
            }
        };
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for ri in candidates {
            let Some(trow) = table.rows.get(ri) else {
                continue;
            };
            let mut values = row.values.clone();
            values.extend(trow.iter().cloned());
            let joined = Row {
                rowtime: row.rowtime,
                values,
            };
            let env = Env {
                row: &joined,
                aggs: &no_aggs,
            };
            if eval(&join.on, &env).truthy() {
                if out.len() >= JOIN_MATCHES_MAX {
                    errors.push(error_row(
                        row.rowtime,
                        "Error",
                        "LIMIT_EXCEEDED",
                        &format!("a row matches more than {JOIN_MATCHES_MAX} reference rows; the rest are dropped"),
                        row.rowtime,
                        &[],
                        &pump.name,
                    ));
                    break;
                }
                out.push(joined);
            }
        }
        if out.is_empty() && join.left_outer {
            let mut values = row.values.clone();
            values.extend(std::iter::repeat_n(Value::Null, width));
            out.push(Row {
                rowtime: row.rowtime,
                values,
            });
        }
        (out, errors)
    }

    /// Takes one row into a source stream. `arrival_ms` becomes its ROWTIME (made monotonic).
    pub fn insert_source(
        &mut self,
        stream: usize,
        arrival_ms: i64,
        values: Vec<Value>,
        out: &mut Vec<Emitted>,
    ) {
        // ROWTIME is the insertion time: never behind a row already taken nor the watermark.
        let rowtime = arrival_ms
            .max(self.state.last_rowtime)
            .max(self.state.watermark);
        self.state.last_rowtime = rowtime;
        self.insert(stream, Row { rowtime, values }, out);
        self.advance(rowtime, out);
    }

    /// A source row that could not be read (bad JSON, coercion): to `error_stream`.
    pub fn reject_source(
        &mut self,
        arrival_ms: i64,
        data: &[u8],
        message: &str,
        out: &mut Vec<Emitted>,
    ) {
        let row = error_row(
            arrival_ms,
            "Error",
            "SOURCE_DATA_ERROR",
            message,
            arrival_ms,
            data,
            "",
        );
        if let Some(idx) = self.program.stream_index(ERROR_STREAM) {
            out.push(Emitted { stream: idx, row });
        }
    }

    /// Moves the watermark to `now_ms` (the runner's tick): windows ending by then emit.
    pub fn advance(&mut self, now_ms: i64, out: &mut Vec<Emitted>) {
        if now_ms <= self.state.watermark {
            return;
        }
        self.state.watermark = now_ms;
        for idx in self.program.order.clone() {
            let (mut rows, mut errors) = self.close_stagger(idx, now_ms);
            let (top_rows, top_errors) = self.close_top_k(idx, now_ms);
            rows.extend(top_rows);
            errors.extend(top_errors);
            rows.extend(self.close_ordered(idx, now_ms));
            self.push_errors(errors, out);
            let target = self.program.pumps[idx].target;
            for row in rows {
                self.insert(target, row, out);
            }
            let closed = {
                let PumpState::Tumbling { windows } = &mut self.state.pumps[idx] else {
                    continue;
                };
                let PumpKind::Tumbling { width_ms, .. } = self.program.pumps[idx].kind else {
                    continue;
                };
                let mut closed = Vec::new();
                while let Some((&start, _)) = windows.first_key_value() {
                    if start.saturating_add(width_ms) > now_ms {
                        break;
                    }
                    if let Some((start, window)) = windows.pop_first() {
                        closed.push((start.saturating_add(width_ms), window));
                    }
                }
                closed
            };
            for (end, window) in closed {
                self.emit_window(idx, end, window, out);
            }
        }
    }

    /// Closes the stagger windows of pump `idx` that close by `now_ms`: their output rows.
    fn close_stagger(&mut self, idx: usize, now_ms: i64) -> (Vec<Row>, Vec<Row>) {
        let PumpState::Stagger {
            windows,
            first_seq,
            open,
        } = &mut self.state.pumps[idx]
        else {
            return (Vec::new(), Vec::new());
        };
        let pump = &self.program.pumps[idx];
        let target = &self.program.streams[pump.target];
        let (mut rows, mut errors) = (Vec::new(), Vec::new());
        while windows.front().is_some_and(|w| w.close_ms <= now_ms) {
            let Some(window) = windows.pop_front() else {
                break;
            };
            if open.get(&window.group.key) == Some(first_seq) {
                open.remove(&window.group.key);
            }
            *first_seq += 1;
            group_rows(
                pump,
                target,
                window.close_ms,
                vec![window.group],
                &mut rows,
                &mut errors,
            );
        }
        (rows, errors)
    }

    fn emit_window(&mut self, idx: usize, end: i64, window: Window, out: &mut Vec<Emitted>) {
        let pump = &self.program.pumps[idx];
        let mut rows = Vec::new();
        let mut errors = Vec::new();
        group_rows(
            pump,
            &self.program.streams[pump.target],
            end,
            window.groups,
            &mut rows,
            &mut errors,
        );
        let target = pump.target;
        self.push_errors(errors, out);
        for row in rows {
            self.insert(target, row, out);
        }
    }

    fn push_errors(&self, errors: Vec<Row>, out: &mut Vec<Emitted>) {
        if let Some(idx) = self.program.stream_index(ERROR_STREAM) {
            out.extend(errors.into_iter().map(|row| Emitted { stream: idx, row }));
        }
    }

    fn insert(&mut self, stream: usize, row: Row, out: &mut Vec<Emitted>) {
        out.push(Emitted {
            stream,
            row: row.clone(),
        });
        let readers = self.program.readers[stream].clone();
        for idx in readers {
            let (produced, errors) = self.process(idx, &row);
            self.push_errors(errors, out);
            let target = self.program.pumps[idx].target;
            for r in produced {
                self.insert(target, r, out);
            }
        }
    }

    /// One row through one pump (through its join first, if it has one): the rows it
    /// produces now and the rows that failed.
    fn process(&mut self, idx: usize, row: &Row) -> (Vec<Row>, Vec<Row>) {
        if self.program.pumps[idx].join.is_none() {
            return self.process_one(idx, row);
        }
        let (joined, mut errors) = self.joined(idx, row);
        let mut produced = Vec::new();
        for r in &joined {
            let (p, e) = self.process_one(idx, r);
            produced.extend(p);
            errors.extend(e);
        }
        (produced, errors)
    }

    fn process_one(&mut self, idx: usize, row: &Row) -> (Vec<Row>, Vec<Row>) {
        match self.program.pumps[idx].kind {
            PumpKind::Stagger { .. } => return self.process_stagger(idx, row),
            PumpKind::Rcf { .. } => return self.process_rcf(idx, row),
            PumpKind::TopK { .. } => return self.process_top_k(idx, row),
            PumpKind::Ordered { .. } => return self.process_ordered(idx, row),
            _ => {}
        }
        let pump = &self.program.pumps[idx];
        let no_aggs: [Value; 0] = [];
        let env = Env {
            row,
            aggs: &no_aggs,
        };
        if let Some(f) = &pump.filter
            && !eval(f, &env).truthy()
        {
            return (Vec::new(), Vec::new());
        }
        let fail = |message: &str, name: &str| {
            error_row(
                row.rowtime,
                "Error",
                name,
                message,
                row.rowtime,
                &[],
                &pump.name,
            )
        };
        match (&pump.kind, &mut self.state.pumps[idx]) {
            (PumpKind::Plain, _) => match project(pump, &self.program.streams[pump.target], &env) {
                Ok(values) => (
                    vec![Row {
                        rowtime: row.rowtime,
                        values,
                    }],
                    Vec::new(),
                ),
                Err(m) => (Vec::new(), vec![fail(&m, "COERCION_ERROR")]),
            },
            (PumpKind::Tumbling { keys, width_ms }, PumpState::Tumbling { windows }) => {
                let start = row.rowtime.div_euclid(*width_ms).saturating_mul(*width_ms);
                if start.saturating_add(*width_ms) <= self.state.watermark {
                    return (
                        Vec::new(),
                        vec![fail("row arrived after its window was emitted", "LATE_ROW")],
                    );
                }
                if !windows.contains_key(&start) && windows.len() >= OPEN_WINDOWS_MAX {
                    return (
                        Vec::new(),
                        vec![fail("too many open windows", "LIMIT_EXCEEDED")],
                    );
                }
                let window = windows.entry(start).or_default();
                let key: String = keys
                    .iter()
                    .map(|k| eval(k, &env).key())
                    .collect::<Vec<_>>()
                    .join("\u{1}");
                let gi = match window.index.get(&key) {
                    Some(&gi) => gi,
                    None => {
                        if window.groups.len() >= GROUPS_PER_WINDOW_MAX {
                            return (
                                Vec::new(),
                                vec![fail("too many groups in one window", "LIMIT_EXCEEDED")],
                            );
                        }
                        window.groups.push(Group {
                            key: key.clone(),
                            first: row.clone(),
                            accs: pump.aggs.iter().map(|a| Acc::new(a.func)).collect(),
                        });
                        window.index.insert(key, window.groups.len() - 1);
                        window.groups.len() - 1
                    }
                };
                if let Some(group) = window.groups.get_mut(gi) {
                    for (acc, spec) in group.accs.iter_mut().zip(&pump.aggs) {
                        let v = spec.arg.as_ref().map(|a| eval(a, &env));
                        acc.add(v.as_ref());
                    }
                }
                (Vec::new(), Vec::new())
            }
            (
                PumpKind::Sliding { windows },
                PumpState::Sliding {
                    partitions,
                    aggregates,
                },
            ) => {
                let mut results = vec![Value::Null; pump.aggs.len()];
                if aggregates.len() < windows.len() {
                    aggregates.resize_with(windows.len(), HashMap::new);
                }
                for (wi, window) in windows.iter().enumerate() {
                    let key: String = window
                        .partition_by
                        .iter()
                        .map(|k| eval(k, &env).key())
                        .collect::<Vec<_>>()
                        .join("\u{1}");
                    let (Some(parts), Some(cached)) =
                        (partitions.get_mut(wi), aggregates.get_mut(wi))
                    else {
                        continue;
                    };
                    if !parts.contains_key(&key) && parts.len() >= PARTITIONS_MAX {
                        return (
                            Vec::new(),
                            vec![fail("too many partitions", "LIMIT_EXCEEDED")],
                        );
                    }
                    let buffer = parts.entry(key.clone()).or_default();
                    let slide = cached.entry(key).or_default();
                    if slide.rows != buffer.len() || slide.accs.len() != pump.aggs.len() {
                        *slide = SlideState::build(&pump.aggs, wi, buffer);
                    }
                    buffer.push_back(row.clone());
                    slide.push(&pump.aggs, wi, row);
                    let mut pop = |buffer: &mut VecDeque<Row>| {
                        if let Some(old) = buffer.pop_front() {
                            slide.pop(&pump.aggs, wi, &old);
                        }
                    };
                    match window.frame {
                        WindowFrame::Range(range_ms) => {
                            while buffer
                                .front()
                                .is_some_and(|r| r.rowtime < row.rowtime.saturating_sub(range_ms))
                            {
                                pop(buffer);
                            }
                        }
                        WindowFrame::Rows(n) => {
                            while buffer.len() as u64 > n.saturating_add(1) {
                                pop(buffer);
                            }
                        }
                    }
                    while buffer.len() > PARTITION_ROWS_MAX {
                        pop(buffer);
                    }
                    for (ai, spec) in pump.aggs.iter().enumerate() {
                        if spec.window != Some(wi) {
                            continue;
                        }
                        if let (Some(result), Some(acc)) = (results.get_mut(ai), slide.accs.get(ai))
                        {
                            *result = acc.result(spec, buffer);
                        }
                    }
                }
                let env = Env {
                    row,
                    aggs: &results,
                };
                if let Some(h) = &pump.having
                    && !eval(h, &env).truthy()
                {
                    return (Vec::new(), Vec::new());
                }
                match project(pump, &self.program.streams[pump.target], &env) {
                    Ok(values) => (
                        vec![Row {
                            rowtime: row.rowtime,
                            values,
                        }],
                        Vec::new(),
                    ),
                    Err(m) => (Vec::new(), vec![fail(&m, "COERCION_ERROR")]),
                }
            }
            _ => (Vec::new(), Vec::new()),
        }
    }
}

/// The output rows of closed window groups (HAVING applied), and the rows that failed.
fn group_rows(
    pump: &Pump,
    target: &StreamDef,
    end: i64,
    groups: Vec<Group>,
    rows: &mut Vec<Row>,
    errors: &mut Vec<Row>,
) {
    for group in groups {
        let results: Vec<Value> = group.accs.iter().map(Acc::result).collect();
        let env = Env {
            row: &group.first,
            aggs: &results,
        };
        if let Some(h) = &pump.having
            && !eval(h, &env).truthy()
        {
            continue;
        }
        match project(pump, target, &env) {
            Ok(values) => rows.push(Row {
                rowtime: end,
                values,
            }),
            Err(message) => errors.push(error_row(
                end,
                "Error",
                "COERCION_ERROR",
                &message,
                group.first.rowtime,
                &[],
                &pump.name,
            )),
        }
    }
}

/// A hash key of join values; `None` when one is NULL (NULL never equals anything).
fn join_key(values: impl Iterator<Item = Value>) -> Option<String> {
    let mut key = String::new();
    for v in values {
        if v.is_null() {
            return None;
        }
        // Numbers compare by value across INTEGER and DOUBLE.
        match v.as_f64() {
            Some(f) if !matches!(v, Value::Str(_)) => key.push_str(&f.to_string()),
            _ => key.push_str(&v.key()),
        }
        key.push('\u{1}');
    }
    Some(key)
}

impl Engine {
    /// ORDER BY: the row, projected, joins its ROWTIME bucket's buffer; a row of a later
    /// bucket first emits the buffered one.
    fn process_ordered(&mut self, idx: usize, row: &Row) -> (Vec<Row>, Vec<Row>) {
        let no_aggs: [Value; 0] = [];
        let env = Env {
            row,
            aggs: &no_aggs,
        };
        let pump = &self.program.pumps[idx];
        if let Some(f) = &pump.filter
            && !eval(f, &env).truthy()
        {
            return (Vec::new(), Vec::new());
        }
        let PumpKind::Ordered { width_ms, .. } = pump.kind else {
            return (Vec::new(), Vec::new());
        };
        let start = row.rowtime.div_euclid(width_ms).saturating_mul(width_ms);
        let needs_flush = matches!(
            &self.state.pumps[idx],
            PumpState::Ordered { bucket: Some(b), .. } if *b != start
        );
        let flushed = if needs_flush {
            self.close_ordered(idx, i64::MAX)
        } else {
            Vec::new()
        };
        let pump = &self.program.pumps[idx];
        let PumpKind::Ordered { keys, .. } = &pump.kind else {
            return (flushed, Vec::new());
        };
        let fail = |message: &str, name: &str| {
            error_row(
                row.rowtime,
                "Error",
                name,
                message,
                row.rowtime,
                &[],
                &pump.name,
            )
        };
        let values = match project(pump, &self.program.streams[pump.target], &env) {
            Ok(values) => values,
            Err(m) => return (flushed, vec![fail(&m, "COERCION_ERROR")]),
        };
        let sort_keys: Vec<Value> = keys.iter().map(|(k, _)| eval(k, &env)).collect();
        let PumpState::Ordered { bucket, rows } = &mut self.state.pumps[idx] else {
            return (flushed, Vec::new());
        };
        if rows.len() >= ORDER_BUFFER_ROWS_MAX {
            return (
                flushed,
                vec![fail(
                    "too many rows in one ORDER BY bucket",
                    "LIMIT_EXCEEDED",
                )],
            );
        }
        *bucket = Some(start);
        rows.push((
            sort_keys,
            Row {
                rowtime: row.rowtime,
                values,
            },
        ));
        (flushed, Vec::new())
    }

    /// Emits the ORDER BY buffer if its bucket ends by `now_ms`, sorted (stable, so ties
    /// keep arrival order); every row takes the bucket's newest ROWTIME, which keeps the
    /// output's ROWTIME monotonic.
    fn close_ordered(&mut self, idx: usize, now_ms: i64) -> Vec<Row> {
        let PumpKind::Ordered { width_ms, keys } = &self.program.pumps[idx].kind else {
            return Vec::new();
        };
        let PumpState::Ordered { bucket, rows } = &mut self.state.pumps[idx] else {
            return Vec::new();
        };
        let Some(start) = *bucket else {
            return Vec::new();
        };
        if start.saturating_add(*width_ms) > now_ms && now_ms != i64::MAX {
            return Vec::new();
        }
        *bucket = None;
        let mut taken = std::mem::take(rows);
        taken.sort_by(|(a, _), (b, _)| {
            for ((x, y), (_, descending)) in a.iter().zip(b).zip(keys) {
                let o = x.compare(y).unwrap_or(std::cmp::Ordering::Equal);
                let o = if *descending { o.reverse() } else { o };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            std::cmp::Ordering::Equal
        });
        let newest = taken.iter().map(|(_, r)| r.rowtime).max().unwrap_or(start);
        taken
            .into_iter()
            .map(|(_, mut r)| {
                r.rowtime = newest;
                r
            })
            .collect()
    }

    /// RANDOM_CUT_FOREST: the row with its anomaly score, then the model learns the row.
    fn process_rcf(&mut self, idx: usize, row: &Row) -> (Vec<Row>, Vec<Row>) {
        let PumpKind::Rcf { inputs, .. } = &self.program.pumps[idx].kind else {
            return (Vec::new(), Vec::new());
        };
        // NULL counts as 0 (a point needs every dimension).
        let point: Vec<f64> = inputs
            .iter()
            .map(|&i| row.values.get(i).and_then(Value::as_f64).unwrap_or(0.0))
            .collect();
        let score = match self.forests.get_mut(idx).and_then(Option::as_mut) {
            Some(forest) => forest.score_and_update(&point),
            None => 0.0,
        };
        let mut values = row.values.clone();
        values.push(Value::Float(score));
        (
            vec![Row {
                rowtime: row.rowtime,
                values,
            }],
            Vec::new(),
        )
    }

    /// TOP_K_ITEMS_TUMBLING: counts the row's value in its window; a row of a later window
    /// first closes the open one.
    fn process_top_k(&mut self, idx: usize, row: &Row) -> (Vec<Row>, Vec<Row>) {
        let (rows, mut errors) = self.close_top_k(idx, row.rowtime);
        let pump = &self.program.pumps[idx];
        let PumpKind::TopK {
            column, width_ms, ..
        } = &pump.kind
        else {
            return (rows, errors);
        };
        let PumpState::TopK {
            window_start,
            counts,
        } = &mut self.state.pumps[idx]
        else {
            return (rows, errors);
        };
        let start = row.rowtime.div_euclid(*width_ms).saturating_mul(*width_ms);
        *window_start = Some(start);
        let value = row.values.get(*column).cloned().unwrap_or(Value::Null);
        let key = value.key();
        let n_distinct = counts.len();
        match counts.get_mut(&key) {
            Some(c) => c.count += 1,
            None if n_distinct >= TOP_K_DISTINCT_MAX => errors.push(error_row(
                row.rowtime,
                "Error",
                "LIMIT_EXCEEDED",
                "too many distinct values in one TOP_K_ITEMS_TUMBLING window",
                row.rowtime,
                &[],
                &pump.name,
            )),
            None => {
                counts.insert(key, ValueCount { value, count: 1 });
            }
        }
        (rows, errors)
    }

    /// Emits the open TOP_K_ITEMS_TUMBLING window if it ends by `now_ms`: its K most
    /// frequent values, most frequent first (ties in value order), ROWTIME the window end.
    fn close_top_k(&mut self, idx: usize, now_ms: i64) -> (Vec<Row>, Vec<Row>) {
        let PumpKind::TopK { k, width_ms, .. } = self.program.pumps[idx].kind else {
            return (Vec::new(), Vec::new());
        };
        let PumpState::TopK {
            window_start,
            counts,
        } = &mut self.state.pumps[idx]
        else {
            return (Vec::new(), Vec::new());
        };
        let Some(start) = *window_start else {
            return (Vec::new(), Vec::new());
        };
        let end = start.saturating_add(width_ms);
        if end > now_ms {
            return (Vec::new(), Vec::new());
        }
        *window_start = None;
        let mut all: Vec<ValueCount> = std::mem::take(counts).into_values().collect();
        // BTreeMap order is the value key order, so a stable sort keeps ties in it.
        all.sort_by_key(|c| std::cmp::Reverse(c.count));
        let rows = all
            .into_iter()
            .take(k)
            .map(|c| Row {
                rowtime: end,
                values: vec![c.value, Value::Int(c.count)],
            })
            .collect();
        (rows, Vec::new())
    }

    /// A row into a stagger window: windows closed by its ROWTIME are emitted first, then
    /// the row joins its key's open window or opens one that closes `range_ms` later.
    fn process_stagger(&mut self, idx: usize, row: &Row) -> (Vec<Row>, Vec<Row>) {
        let no_aggs: [Value; 0] = [];
        let env = Env {
            row,
            aggs: &no_aggs,
        };
        {
            let pump = &self.program.pumps[idx];
            if let Some(f) = &pump.filter
                && !eval(f, &env).truthy()
            {
                return (Vec::new(), Vec::new());
            }
        }
        let (rows, mut errors) = self.close_stagger(idx, row.rowtime);
        let pump = &self.program.pumps[idx];
        let PumpKind::Stagger { keys, range_ms } = &pump.kind else {
            return (rows, errors);
        };
        let PumpState::Stagger {
            windows,
            first_seq,
            open,
        } = &mut self.state.pumps[idx]
        else {
            return (rows, errors);
        };
        let key: String = keys
            .iter()
            .map(|k| eval(k, &env).key())
            .collect::<Vec<_>>()
            .join("\u{1}");
        let position = open
            .get(&key)
            .and_then(|seq| usize::try_from(seq.checked_sub(*first_seq)?).ok());
        let position = match position.filter(|p| *p < windows.len()) {
            Some(p) => p,
            None => {
                if windows.len() >= STAGGER_WINDOWS_MAX {
                    errors.push(error_row(
                        row.rowtime,
                        "Error",
                        "LIMIT_EXCEEDED",
                        "too many open stagger windows",
                        row.rowtime,
                        &[],
                        &pump.name,
                    ));
                    return (rows, errors);
                }
                let seq = *first_seq + windows.len() as u64;
                open.insert(key.clone(), seq);
                windows.push_back(StaggerWindow {
                    close_ms: row.rowtime.saturating_add(*range_ms),
                    group: Group {
                        key,
                        first: row.clone(),
                        accs: pump.aggs.iter().map(|a| Acc::new(a.func)).collect(),
                    },
                });
                windows.len() - 1
            }
        };
        let Some(window) = windows.get_mut(position) else {
            return (rows, errors);
        };
        for (acc, spec) in window.group.accs.iter_mut().zip(&pump.aggs) {
            let v = spec.arg.as_ref().map(|a| eval(a, &env));
            acc.add(v.as_ref());
        }
        (rows, errors)
    }
}

fn error_row(
    time: i64,
    level: &str,
    name: &str,
    message: &str,
    data_rowtime: i64,
    data: &[u8],
    pump: &str,
) -> Row {
    let hex: String = data
        .iter()
        .take(24_576)
        .map(|b| format!("{b:02x}"))
        .collect();
    Row {
        rowtime: time,
        values: vec![
            Value::Timestamp(time),
            Value::Str(level.into()),
            Value::Str(name.into()),
            Value::Str(message.chars().take(4096).collect()),
            Value::Timestamp(data_rowtime),
            Value::Str(hex),
            Value::Str(pump.into()),
        ],
    }
}

fn project(pump: &Pump, target: &StreamDef, env: &Env<'_>) -> Result<Vec<Value>, String> {
    let mut values = Vec::with_capacity(pump.projection.len());
    for (expr, column) in pump.projection.iter().zip(&target.columns) {
        let v = expr.as_ref().map_or(Value::Null, |e| eval(e, env));
        values
            .push(coerce(v, column.sql_type).map_err(|e| format!("column {}: {e}", column.name))?);
    }
    Ok(values)
}

struct Env<'a> {
    row: &'a Row,
    aggs: &'a [Value],
}

fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // Iterative matching with backtracking on the last `%` (linear in practice).
    let (mut ti, mut pi) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '_' || p[pi] == t[ti]) && p[pi] != '%' {
            ti += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '%' {
        pi += 1;
    }
    pi == p.len()
}

fn arith(op: BinaryOp, a: Value, b: Value) -> Value {
    if a.is_null() || b.is_null() {
        return Value::Null;
    }
    match (op, &a, &b) {
        (BinaryOp::Add, Value::Timestamp(t), Value::Int(i))
        | (BinaryOp::Add, Value::Int(i), Value::Timestamp(t)) => {
            return Value::Timestamp(t.saturating_add(*i));
        }
        (BinaryOp::Sub, Value::Timestamp(t), Value::Int(i)) => {
            return Value::Timestamp(t.saturating_sub(*i));
        }
        (BinaryOp::Sub, Value::Timestamp(x), Value::Timestamp(y)) => {
            return Value::Int(x.saturating_sub(*y));
        }
        (_, Value::Int(x), Value::Int(y)) => {
            let (x, y) = (*x, *y);
            return match op {
                BinaryOp::Add => x.checked_add(y).map_or(Value::Null, Value::Int),
                BinaryOp::Sub => x.checked_sub(y).map_or(Value::Null, Value::Int),
                BinaryOp::Mul => x.checked_mul(y).map_or(Value::Null, Value::Int),
                BinaryOp::Div => x.checked_div(y).map_or(Value::Null, Value::Int),
                BinaryOp::Mod => x.checked_rem(y).map_or(Value::Null, Value::Int),
                _ => Value::Null,
            };
        }
        _ => {}
    }
    let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) else {
        return Value::Null;
    };
    let r = match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => {
            if y == 0.0 {
                return Value::Null;
            }
            x / y
        }
        BinaryOp::Mod => {
            if y == 0.0 {
                return Value::Null;
            }
            x % y
        }
        _ => return Value::Null,
    };
    Value::Float(r)
}

fn eval(e: &CExpr, env: &Env<'_>) -> Value {
    match e {
        CExpr::Lit(v) => v.clone(),
        CExpr::Col(i) => env.row.values.get(*i).cloned().unwrap_or(Value::Null),
        CExpr::RowTime => Value::Timestamp(env.row.rowtime),
        CExpr::Agg(i) => env.aggs.get(*i).cloned().unwrap_or(Value::Null),
        CExpr::Neg(x) => match eval(x, env) {
            Value::Int(i) => Value::Int(i.wrapping_neg()),
            v => v.as_f64().map_or(Value::Null, |f| Value::Float(-f)),
        },
        CExpr::Not(x) => match eval(x, env) {
            Value::Bool(b) => Value::Bool(!b),
            _ => Value::Null,
        },
        CExpr::Bin(op, l, r) => {
            let (a, b) = (eval(l, env), eval(r, env));
            match op {
                BinaryOp::And => match (a, b) {
                    (Value::Bool(false), _) | (_, Value::Bool(false)) => Value::Bool(false),
                    (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
                    _ => Value::Null,
                },
                BinaryOp::Or => match (a, b) {
                    (Value::Bool(true), _) | (_, Value::Bool(true)) => Value::Bool(true),
                    (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
                    _ => Value::Null,
                },
                BinaryOp::Concat => {
                    if a.is_null() || b.is_null() {
                        Value::Null
                    } else {
                        Value::Str(a.to_text() + &b.to_text())
                    }
                }
                BinaryOp::Eq
                | BinaryOp::NotEq
                | BinaryOp::Lt
                | BinaryOp::LtEq
                | BinaryOp::Gt
                | BinaryOp::GtEq => {
                    use std::cmp::Ordering::*;
                    match a.compare(&b) {
                        None => Value::Null,
                        Some(o) => Value::Bool(match op {
                            BinaryOp::Eq => o == Equal,
                            BinaryOp::NotEq => o != Equal,
                            BinaryOp::Lt => o == Less,
                            BinaryOp::LtEq => o != Greater,
                            BinaryOp::Gt => o == Greater,
                            _ => o != Less,
                        }),
                    }
                }
                _ => arith(*op, a, b),
            }
        }
        CExpr::IsNull(x, negated) => Value::Bool(eval(x, env).is_null() != *negated),
        CExpr::Like(x, p, negated) => match (eval(x, env), eval(p, env)) {
            (Value::Null, _) | (_, Value::Null) => Value::Null,
            (a, b) => Value::Bool(like(&a.to_text(), &b.to_text()) != *negated),
        },
        CExpr::Between(x, lo, hi, negated) => {
            let v = eval(x, env);
            match (v.compare(&eval(lo, env)), v.compare(&eval(hi, env))) {
                (Some(a), Some(b)) => Value::Bool(
                    (a != std::cmp::Ordering::Less && b != std::cmp::Ordering::Greater) != *negated,
                ),
                _ => Value::Null,
            }
        }
        CExpr::In(x, list, negated) => {
            let v = eval(x, env);
            if v.is_null() {
                return Value::Null;
            }
            let found = list
                .iter()
                .any(|i| v.compare(&eval(i, env)) == Some(std::cmp::Ordering::Equal));
            Value::Bool(found != *negated)
        }
        CExpr::Case(operand, branches, otherwise) => {
            let op = operand.as_ref().map(|o| eval(o, env));
            for (w, t) in branches {
                let hit = match &op {
                    Some(o) => o.compare(&eval(w, env)) == Some(std::cmp::Ordering::Equal),
                    None => eval(w, env).truthy(),
                };
                if hit {
                    return eval(t, env);
                }
            }
            otherwise.as_ref().map_or(Value::Null, |o| eval(o, env))
        }
        CExpr::Cast(x, t) => coerce(eval(x, env), *t).unwrap_or(Value::Null),
        CExpr::Step(x, width) | CExpr::FloorTo(x, width, false) => match eval(x, env) {
            Value::Timestamp(t) => Value::Timestamp(t.div_euclid(*width).saturating_mul(*width)),
            Value::Int(i) => Value::Int(i.div_euclid(*width).saturating_mul(*width)),
            _ => Value::Null,
        },
        CExpr::FloorTo(x, width, true) => match eval(x, env) {
            Value::Timestamp(t) => {
                let floor = t.div_euclid(*width).saturating_mul(*width);
                Value::Timestamp(if floor == t {
                    t
                } else {
                    floor.saturating_add(*width)
                })
            }
            _ => Value::Null,
        },
        CExpr::Call(name, args) => call(name, args, env),
    }
}

fn call(name: &str, args: &[CExpr], env: &Env<'_>) -> Value {
    let vals: Vec<Value> = args.iter().map(|a| eval(a, env)).collect();
    let arg = |i: usize| vals.get(i).cloned().unwrap_or(Value::Null);
    if !matches!(
        name,
        "COALESCE" | "NULLIF" | "CURRENT_ROW_TIMESTAMP" | "CURRENT_TIMESTAMP" | "LOCALTIMESTAMP"
    ) && vals.iter().any(Value::is_null)
    {
        return Value::Null;
    }
    let num = |i: usize| arg(i).as_f64().unwrap_or(0.0);
    let float = |f: f64| {
        if f.is_finite() {
            Value::Float(f)
        } else {
            Value::Null
        }
    };
    match name {
        "UPPER" => Value::Str(arg(0).to_text().to_uppercase()),
        "LOWER" => Value::Str(arg(0).to_text().to_lowercase()),
        "INITCAP" => {
            let mut out = String::new();
            let mut start = true;
            for c in arg(0).to_text().chars() {
                if c.is_alphanumeric() {
                    if start {
                        out.extend(c.to_uppercase());
                    } else {
                        out.extend(c.to_lowercase());
                    }
                    start = false;
                } else {
                    out.push(c);
                    start = true;
                }
            }
            Value::Str(out)
        }
        "CHAR_LENGTH" | "CHARACTER_LENGTH" => Value::Int(arg(0).to_text().chars().count() as i64),
        "TRIM" => Value::Str(arg(0).to_text().trim().to_string()),
        "LTRIM" => Value::Str(arg(0).to_text().trim_start().to_string()),
        "RTRIM" => Value::Str(arg(0).to_text().trim_end().to_string()),
        "SUBSTRING" => {
            let text: Vec<char> = arg(0).to_text().chars().collect();
            let start = (num(1) as i64).max(1) as usize - 1;
            let len = if vals.len() > 2 {
                num(2).max(0.0) as usize
            } else {
                usize::MAX
            };
            Value::Str(text.iter().skip(start).take(len).collect())
        }
        "POSITION" => {
            let (needle, hay) = (arg(0).to_text(), arg(1).to_text());
            Value::Int(
                hay.find(&needle)
                    .map_or(0, |b| hay[..b].chars().count() as i64 + 1),
            )
        }
        "ABS" => match arg(0) {
            Value::Int(i) => Value::Int(i.wrapping_abs()),
            v => float(v.as_f64().unwrap_or(0.0).abs()),
        },
        "MOD" => arith(BinaryOp::Mod, arg(0), arg(1)),
        "POWER" => float(num(0).powf(num(1))),
        "SQRT" => float(num(0).sqrt()),
        "LN" => float(num(0).ln()),
        "LOG10" => float(num(0).log10()),
        "EXP" => float(num(0).exp()),
        "FLOOR" => match arg(0) {
            Value::Int(i) => Value::Int(i),
            v => float(v.as_f64().unwrap_or(0.0).floor()),
        },
        "CEIL" => match arg(0) {
            Value::Int(i) => Value::Int(i),
            v => float(v.as_f64().unwrap_or(0.0).ceil()),
        },
        "ROUND" => {
            let digits = if vals.len() > 1 { num(1) as i32 } else { 0 };
            let scale = 10f64.powi(digits.clamp(-15, 15));
            match arg(0) {
                Value::Int(i) if digits >= 0 => Value::Int(i),
                v => float((v.as_f64().unwrap_or(0.0) * scale).round() / scale),
            }
        }
        "COALESCE" => vals
            .into_iter()
            .find(|v| !v.is_null())
            .unwrap_or(Value::Null),
        "NULLIF" => {
            if arg(0).compare(&arg(1)) == Some(std::cmp::Ordering::Equal) {
                Value::Null
            } else {
                arg(0)
            }
        }
        "CURRENT_ROW_TIMESTAMP" | "CURRENT_TIMESTAMP" | "LOCALTIMESTAMP" => {
            Value::Timestamp(env.row.rowtime)
        }
        "TSDIFF" => match (arg(0), arg(1)) {
            (Value::Timestamp(a), Value::Timestamp(b)) => Value::Int(a.saturating_sub(b)),
            _ => Value::Null,
        },
        "UNIX_TIMESTAMP" => match arg(0) {
            Value::Timestamp(t) => Value::Int(t),
            _ => Value::Null,
        },
        "TO_TIMESTAMP" => match arg(0) {
            Value::Int(i) => Value::Timestamp(i),
            v => v
                .as_f64()
                .map_or(Value::Null, |f| Value::Timestamp(f as i64)),
        },
        _ => Value::Null,
    }
}

/// A row as a JSON output record (`{"COLUMN": value, ...}`, in column order as KDA writes it;
/// written by hand because serde_json's map sorts its keys).
pub fn row_to_json(stream: &StreamDef, row: &Row) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * row.values.len() + 2);
    out.push(b'{');
    for (i, (c, v)) in stream.columns.iter().zip(&row.values).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let key = serde_json::to_vec(&c.name).unwrap_or_default();
        out.extend_from_slice(&key);
        out.push(b':');
        let value = serde_json::to_vec(&v.to_json()).unwrap_or_else(|_| b"null".to_vec());
        out.extend_from_slice(&value);
    }
    out.push(b'}');
    out
}

/// A row as a CSV output record (comma-separated, quoted when needed, newline-terminated).
pub fn row_to_csv(row: &Row) -> Vec<u8> {
    let fields: Vec<String> = row
        .values
        .iter()
        .map(|v| {
            let t = match v {
                Value::Timestamp(t) => format_timestamp(*t),
                v => v.to_text(),
            };
            if t.contains([',', '"', '\n']) {
                format!("\"{}\"", t.replace('"', "\"\""))
            } else {
                t
            }
        })
        .collect();
    let mut out = fields.join(",").into_bytes();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Vec<(String, Vec<Column>)> {
        vec![(
            "SOURCE_SQL_STREAM_001".into(),
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
        )]
    }

    fn row(t: &str, p: f64) -> Vec<Value> {
        vec![Value::Str(t.into()), Value::Float(p)]
    }

    #[test]
    fn tumbling_window_emits_when_rowtime_passes_its_end() {
        let code = r#"CREATE OR REPLACE STREAM "DEST" (TICKER VARCHAR(4), MIN_PRICE REAL, MAX_PRICE REAL, N INTEGER);
CREATE OR REPLACE PUMP "P" AS INSERT INTO "DEST"
  SELECT STREAM TICKER, MIN(PRICE), MAX(PRICE), COUNT(*) FROM "SOURCE_SQL_STREAM_001"
  GROUP BY TICKER, STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '60' SECOND);"#;
        let program = Program::compile(code, &source()).expect("compiles");
        let dest = program.stream_index("DEST").expect("dest");
        let mut engine = Engine::new(program);
        let mut out = Vec::new();
        engine.insert_source(0, 1_000, row("A", 5.0), &mut out);
        engine.insert_source(0, 2_000, row("A", 7.0), &mut out);
        engine.insert_source(0, 3_000, row("B", 1.0), &mut out);
        let emitted = |out: &[Emitted]| out.iter().filter(|e| e.stream == dest).count();
        assert_eq!(emitted(&out), 0);
        // Restart in the middle of the window: the state carries over.
        let state = engine.state().clone();
        let mut engine = Engine::new(Program::compile(code, &source()).expect("compiles"));
        assert!(engine.restore(state));
        engine.insert_source(0, 59_999, row("A", 1.0), &mut out);
        engine.advance(60_000, &mut out);
        let rows: Vec<&Row> = out
            .iter()
            .filter(|e| e.stream == dest)
            .map(|e| &e.row)
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].values,
            vec![
                Value::Str("A".into()),
                Value::Float(1.0),
                Value::Float(7.0),
                Value::Int(3)
            ]
        );
        assert_eq!(
            rows[1].values,
            vec![
                Value::Str("B".into()),
                Value::Float(1.0),
                Value::Float(1.0),
                Value::Int(1)
            ]
        );
        assert_eq!(rows[0].rowtime, 60_000);
    }

    #[test]
    fn sliding_window_aggregates_over_the_range() {
        let code = r#"CREATE OR REPLACE STREAM "DEST" (TICKER VARCHAR(4), AVG_PRICE DOUBLE, N INTEGER);
CREATE OR REPLACE PUMP "P" AS INSERT INTO "DEST"
  SELECT STREAM TICKER, AVG(PRICE) OVER W1, COUNT(*) OVER W1 FROM "SOURCE_SQL_STREAM_001"
  WINDOW W1 AS (PARTITION BY TICKER RANGE INTERVAL '1' MINUTE PRECEDING);"#;
        let program = Program::compile(code, &source()).expect("compiles");
        let mut engine = Engine::new(program);
        let mut out = Vec::new();
        engine.insert_source(0, 0, row("A", 2.0), &mut out);
        engine.insert_source(0, 30_000, row("A", 4.0), &mut out);
        engine.insert_source(0, 30_001, row("B", 9.0), &mut out);
        engine.insert_source(0, 61_000, row("A", 6.0), &mut out);
        let rows: Vec<&Vec<Value>> = out
            .iter()
            .filter(|e| e.stream == 2)
            .map(|e| &e.row.values)
            .collect();
        assert_eq!(rows.len(), 4);
        assert_eq!(
            rows[1],
            &vec![Value::Str("A".into()), Value::Float(3.0), Value::Int(2)]
        );
        assert_eq!(
            rows[3],
            &vec![Value::Str("A".into()), Value::Float(5.0), Value::Int(2)]
        );
    }

    /// The incremental sliding aggregates against a recomputation over each row's frame,
    /// on a RANGE and a ROWS window at once, across a checkpoint and restore.
    #[test]
    fn sliding_aggregates_match_a_recomputation_of_every_frame() {
        let code = r#"CREATE OR REPLACE STREAM "DEST" (TICKER VARCHAR(4), S DOUBLE, A DOUBLE, LO DOUBLE, HI DOUBLE, N INTEGER, F DOUBLE, L DOUBLE, HI5 DOUBLE, S5 DOUBLE);
CREATE OR REPLACE PUMP "P" AS INSERT INTO "DEST"
  SELECT STREAM TICKER, SUM(PRICE) OVER W1, AVG(PRICE) OVER W1, MIN(PRICE) OVER W1,
    MAX(PRICE) OVER W1, COUNT(*) OVER W1, FIRST_VALUE(PRICE) OVER W1, LAST_VALUE(PRICE) OVER W1,
    MAX(PRICE) OVER W2, SUM(PRICE) OVER W2
  FROM "SOURCE_SQL_STREAM_001"
  WINDOW W1 AS (PARTITION BY TICKER RANGE INTERVAL '1' SECOND PRECEDING),
         W2 AS (PARTITION BY TICKER ROWS 5 PRECEDING);"#;
        let program = Program::compile(code, &source()).expect("compiles");
        let mut engine = Engine::new(program.clone());
        let mut out = Vec::new();
        // A deterministic walk: three tickers, rows 0-300 ms apart, prices with ties.
        let mut seed: u64 = 7;
        let mut next = |m: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % m
        };
        let mut inputs: Vec<(i64, &str, f64)> = Vec::new();
        let mut t = 0i64;
        for _ in 0..2_000 {
            t += next(300) as i64;
            let ticker = ["A", "B", "C"][next(3) as usize];
            inputs.push((t, ticker, next(20) as f64 / 4.0));
        }
        for (i, (t, ticker, price)) in inputs.iter().enumerate() {
            if i == 1_000 {
                // Restart: the aggregates are rebuilt from the restored buffers.
                let saved = serde_json::to_vec(engine.state()).expect("serializes");
                let state: EngineState = serde_json::from_slice(&saved).expect("deserializes");
                engine = Engine::new(program.clone());
                assert!(engine.restore(state));
            }
            engine.insert_source(0, *t, row(ticker, *price), &mut out);
        }
        let rows: Vec<&Vec<Value>> = out
            .iter()
            .filter(|e| e.stream == 2)
            .map(|e| &e.row.values)
            .collect();
        assert_eq!(rows.len(), inputs.len());
        for (i, ((t, ticker, _), got)) in inputs.iter().zip(rows).enumerate() {
            let same: Vec<(i64, f64)> = inputs[..=i]
                .iter()
                .filter(|(_, k, _)| k == ticker)
                .map(|(t, _, p)| (*t, *p))
                .collect();
            let range: Vec<f64> = same
                .iter()
                .filter(|(rt, _)| *rt >= t - 1_000)
                .map(|(_, p)| *p)
                .collect();
            let last6: Vec<f64> = same.iter().rev().take(6).map(|(_, p)| *p).collect();
            let sum: f64 = range.iter().sum();
            let max = |v: &[f64]| v.iter().cloned().fold(f64::MIN, f64::max);
            let expected = [
                sum,
                sum / range.len() as f64,
                range.iter().cloned().fold(f64::MAX, f64::min),
                max(&range),
                range.len() as f64,
                range[0],
                range[range.len() - 1],
                max(&last6),
                last6.iter().sum(),
            ];
            assert_eq!(got[0], Value::Str((*ticker).into()), "row {i}");
            for (k, want) in expected.iter().enumerate() {
                let have = got[k + 1].as_f64().expect("a number");
                assert!(
                    (have - want).abs() <= 1e-9 * want.abs().max(1.0),
                    "row {i}, column {}: {have} != {want}",
                    k + 1
                );
            }
        }
    }

    #[test]
    fn stagger_window_opens_at_the_first_row_of_a_key_and_closes_a_range_later() {
        let code = r#"CREATE OR REPLACE STREAM "DEST" (TICKER VARCHAR(4), N INTEGER, TOTAL DOUBLE);
CREATE OR REPLACE PUMP "P" AS INSERT INTO "DEST"
  SELECT STREAM TICKER, COUNT(*) AS N, SUM(PRICE) FROM "SOURCE_SQL_STREAM_001"
  WINDOWED BY STAGGER (PARTITION BY TICKER RANGE INTERVAL '1' MINUTE);"#;
        let program = Program::compile(code, &source()).expect("compiles");
        let dest = program.stream_index("DEST").expect("dest");
        let mut engine = Engine::new(program);
        let mut out = Vec::new();
        engine.insert_source(0, 10_000, row("A", 1.0), &mut out);
        engine.insert_source(0, 40_000, row("B", 2.0), &mut out);
        engine.insert_source(0, 69_999, row("A", 3.0), &mut out);
        // A restart keeps the open windows.
        let state = engine.state().clone();
        let mut engine = Engine::new(Program::compile(code, &source()).expect("compiles"));
        assert!(engine.restore(state));
        engine.insert_source(0, 80_000, row("B", 4.0), &mut out);
        // A's window [10 s, 70 s) closed at 70 s: emitted when the 80 s row arrived.
        // A row of A at 85 s opens a new window.
        engine.insert_source(0, 85_000, row("A", 5.0), &mut out);
        engine.advance(100_000, &mut out);
        let rows: Vec<&Row> = out
            .iter()
            .filter(|e| e.stream == dest)
            .map(|e| &e.row)
            .collect();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].rowtime, 70_000);
        assert_eq!(
            rows[0].values,
            vec![Value::Str("A".into()), Value::Int(2), Value::Float(4.0)]
        );
        assert_eq!(rows[1].rowtime, 100_000);
        assert_eq!(
            rows[1].values,
            vec![Value::Str("B".into()), Value::Int(2), Value::Float(6.0)]
        );
        engine.advance(145_000, &mut out);
        let last = out.iter().rfind(|e| e.stream == dest).expect("a row");
        assert_eq!(last.row.rowtime, 145_000);
        assert_eq!(
            last.row.values,
            vec![Value::Str("A".into()), Value::Int(1), Value::Float(5.0)]
        );
    }

    #[test]
    fn joins_a_reference_table_inner_and_left_outer() {
        let tables = vec![(
            "CompanyName".to_string(),
            vec![
                Column {
                    name: "Ticker".into(),
                    sql_type: SqlType::Varchar(4),
                },
                Column {
                    name: "Company".into(),
                    sql_type: SqlType::Varchar(20),
                },
            ],
        )];
        let code = r#"CREATE OR REPLACE STREAM "DEST" (TICKER VARCHAR(4), "Company" VARCHAR(20), PRICE DOUBLE);
CREATE OR REPLACE STREAM "INNER_DEST" (TICKER VARCHAR(4), "Company" VARCHAR(20));
CREATE OR REPLACE PUMP "P" AS INSERT INTO "DEST"
  SELECT STREAM TICKER, "c"."Company", PRICE
  FROM "SOURCE_SQL_STREAM_001" LEFT JOIN "CompanyName" AS "c"
  ON "SOURCE_SQL_STREAM_001".TICKER = "c"."Ticker";
CREATE OR REPLACE PUMP "Q" AS INSERT INTO "INNER_DEST"
  SELECT STREAM s.TICKER, "Company" FROM "SOURCE_SQL_STREAM_001" AS s
  JOIN "CompanyName" ON s.TICKER = "CompanyName"."Ticker" WHERE PRICE > 1;"#;
        let program = Program::compile_with_tables(code, &source(), &tables).expect("compiles");
        let dest = program.stream_index("DEST").expect("dest");
        let inner = program.stream_index("INNER_DEST").expect("inner");
        let mut engine = Engine::new(program);
        engine
            .load_table(
                "CompanyName",
                vec![
                    vec![Value::Str("AMZN".into()), Value::Str("Amazon".into())],
                    vec![Value::Str("MSFT".into()), Value::Str("Microsoft".into())],
                ],
            )
            .expect("loads");
        let mut out = Vec::new();
        engine.insert_source(0, 1, row("AMZN", 2.0), &mut out);
        engine.insert_source(0, 2, row("XYZ", 3.0), &mut out);
        engine.insert_source(0, 3, row("MSFT", 1.0), &mut out);
        let of = |s: usize| -> Vec<Vec<Value>> {
            out.iter()
                .filter(|e| e.stream == s)
                .map(|e| e.row.values.clone())
                .collect()
        };
        assert_eq!(
            of(dest),
            vec![
                vec![
                    Value::Str("AMZN".into()),
                    Value::Str("Amazon".into()),
                    Value::Float(2.0)
                ],
                vec![Value::Str("XYZ".into()), Value::Null, Value::Float(3.0)],
                vec![
                    Value::Str("MSFT".into()),
                    Value::Str("Microsoft".into()),
                    Value::Float(1.0)
                ],
            ]
        );
        assert_eq!(
            of(inner),
            vec![vec![Value::Str("AMZN".into()), Value::Str("Amazon".into())]]
        );
        let error = Program::compile(code, &source()).expect_err("no table");
        assert!(error.contains("is not a reference table"), "{error}");
    }

    #[test]
    fn top_k_items_tumbling_emits_the_k_most_frequent_values_per_window() {
        let code = r#"CREATE OR REPLACE STREAM "DEST" ("TICKER" VARCHAR(4), "MOST_FREQUENT_VALUES" BIGINT);
CREATE OR REPLACE PUMP "P" AS INSERT INTO "DEST"
  SELECT STREAM * FROM TABLE(TOP_K_ITEMS_TUMBLING(
      CURSOR(SELECT STREAM * FROM "SOURCE_SQL_STREAM_001"), 'TICKER', 2, 60));"#;
        let program = Program::compile(code, &source()).expect("compiles");
        let dest = program.stream_index("DEST").expect("dest");
        assert_eq!(
            program.writable_streams(),
            vec!["error_stream".to_string(), "DEST".to_string()]
        );
        let mut engine = Engine::new(program);
        let mut out = Vec::new();
        for (t, ticker) in [(1, "A"), (2, "B"), (3, "C"), (4, "A"), (5, "C"), (6, "A")] {
            engine.insert_source(0, t * 1_000, row(ticker, 1.0), &mut out);
        }
        engine.insert_source(0, 61_000, row("B", 1.0), &mut out);
        engine.advance(120_000, &mut out);
        let rows: Vec<(i64, Vec<Value>)> = out
            .iter()
            .filter(|e| e.stream == dest)
            .map(|e| (e.row.rowtime, e.row.values.clone()))
            .collect();
        assert_eq!(
            rows,
            vec![
                (60_000, vec![Value::Str("A".into()), Value::Int(3)]),
                (60_000, vec![Value::Str("C".into()), Value::Int(2)]),
                (120_000, vec![Value::Str("B".into()), Value::Int(1)]),
            ]
        );
    }

    #[test]
    fn random_cut_forest_scores_an_outlier_highest() {
        let code = r#"CREATE OR REPLACE STREAM "DEST" (TICKER VARCHAR(4), PRICE DOUBLE, ANOMALY_SCORE DOUBLE);
CREATE OR REPLACE PUMP "P" AS INSERT INTO "DEST"
  SELECT STREAM TICKER, PRICE, ANOMALY_SCORE
  FROM TABLE(RANDOM_CUT_FOREST(CURSOR(SELECT STREAM * FROM "SOURCE_SQL_STREAM_001"), 50, 128));"#;
        let program = Program::compile(code, &source()).expect("compiles");
        let dest = program.stream_index("DEST").expect("dest");
        let mut engine = Engine::new(program);
        let mut out = Vec::new();
        for i in 0..400i64 {
            let price = 10.0 + ((i * 7919) % 100) as f64 / 100.0;
            engine.insert_source(0, i, row("A", price), &mut out);
        }
        engine.insert_source(0, 400, row("A", 50.0), &mut out);
        let scores: Vec<f64> = out
            .iter()
            .filter(|e| e.stream == dest)
            .filter_map(|e| e.row.values.get(2).and_then(Value::as_f64))
            .collect();
        assert_eq!(scores.len(), 401);
        let outlier = scores[400];
        let max_normal = scores[300..400].iter().copied().fold(0.0, f64::max);
        assert!(
            outlier > 3.0 * max_normal,
            "outlier {outlier}, max normal {max_normal}"
        );
        let bad = code.replace(", 50, 128", ", 50, 5");
        let error = Program::compile(&bad, &source()).expect_err("subSampleSize too small");
        assert!(error.contains("subSampleSize"), "{error}");
    }

    #[test]
    fn the_documented_anomaly_example_orders_each_second_by_score() {
        let code = r#"CREATE OR REPLACE STREAM "TEMP_STREAM" ("heartRate" INTEGER, "rateType" varchar(20), "ANOMALY_SCORE" DOUBLE);
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" ("heartRate" INTEGER, "rateType" varchar(20), "ANOMALY_SCORE" DOUBLE);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS
   INSERT INTO "TEMP_STREAM"
      SELECT STREAM "heartRate", "rateType", ANOMALY_SCORE
      FROM TABLE(RANDOM_CUT_FOREST(
              CURSOR(SELECT STREAM * FROM "SOURCE_SQL_STREAM_001")));
CREATE OR REPLACE PUMP "OUTPUT_PUMP" AS
   INSERT INTO "DESTINATION_SQL_STREAM"
      SELECT STREAM * FROM "TEMP_STREAM"
      ORDER BY FLOOR("TEMP_STREAM".ROWTIME TO SECOND), ANOMALY_SCORE DESC;"#;
        let sources = vec![(
            "SOURCE_SQL_STREAM_001".to_string(),
            vec![
                Column {
                    name: "heartRate".into(),
                    sql_type: SqlType::Integer,
                },
                Column {
                    name: "rateType".into(),
                    sql_type: SqlType::Varchar(20),
                },
            ],
        )];
        let program = Program::compile(code, &sources).expect("compiles");
        let dest = program
            .stream_index("DESTINATION_SQL_STREAM")
            .expect("dest");
        let mut engine = Engine::new(program);
        let mut out = Vec::new();
        for i in 0..200i64 {
            let rate = 60 + (i * 7) % 21;
            let values = vec![Value::Int(rate), Value::Str("NORMAL".into())];
            // Ten rows per second.
            engine.insert_source(0, i * 100, values, &mut out);
        }
        engine.insert_source(
            0,
            20_000,
            vec![Value::Int(150), Value::Str("HIGH".into())],
            &mut out,
        );
        engine.advance(21_000, &mut out);
        let rows: Vec<&Row> = out
            .iter()
            .filter(|e| e.stream == dest)
            .map(|e| &e.row)
            .collect();
        assert_eq!(rows.len(), 201);
        for second in rows.chunks(10) {
            let scores: Vec<f64> = second
                .iter()
                .filter_map(|r| r.values.get(2).and_then(Value::as_f64))
                .collect();
            assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
            assert!(second.windows(2).all(|w| w[0].rowtime <= w[1].rowtime));
        }
        let last = rows[200];
        assert_eq!(last.values[0], Value::Int(150));
        let outlier = last.values[2].as_f64().expect("a score");
        let max_normal = rows[100..200]
            .iter()
            .filter_map(|r| r.values.get(2).and_then(Value::as_f64))
            .fold(0.0, f64::max);
        assert!(outlier > 3.0 * max_normal, "{outlier} vs {max_normal}");
    }

    #[test]
    fn compile_errors_name_the_problem() {
        let bad = r#"CREATE OR REPLACE STREAM "DEST" (N INTEGER);
CREATE OR REPLACE PUMP "P" AS INSERT INTO "DEST" SELECT STREAM COUNT(*) FROM "SOURCE_SQL_STREAM_001" GROUP BY TICKER;"#;
        let error = Program::compile(bad, &source()).expect_err("no ROWTIME bucket");
        assert!(error.contains("ROWTIME bucket"), "{error}");
        let bad = r#"CREATE OR REPLACE STREAM "DEST" (N INTEGER);
CREATE OR REPLACE PUMP "P" AS INSERT INTO "DEST" SELECT STREAM NOPE FROM "SOURCE_SQL_STREAM_001";"#;
        let error = Program::compile(bad, &source()).expect_err("unknown column");
        assert!(error.contains("column \"NOPE\" not found"), "{error}");
    }

    #[test]
    fn json_output_keeps_column_order() {
        let stream = StreamDef {
            name: "D".into(),
            columns: vec![
                Column {
                    name: "Z".into(),
                    sql_type: SqlType::Integer,
                },
                Column {
                    name: "A".into(),
                    sql_type: SqlType::Timestamp,
                },
            ],
            is_source: false,
        };
        let row = Row {
            rowtime: 0,
            values: vec![Value::Int(1), Value::Timestamp(60_000)],
        };
        assert_eq!(
            row_to_json(&stream, &row),
            br#"{"Z":1,"A":"1970-01-01 00:01:00.000"}"#.to_vec()
        );
    }

    #[test]
    fn like_matches_wildcards() {
        assert!(like("AMZN", "AM%"));
        assert!(like("AMZN", "_MZ_"));
        assert!(!like("AMZN", "B%"));
        assert!(like("abcabc", "%bc"));
    }
}
