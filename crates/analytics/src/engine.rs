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
//!   inside the frame.
//!
//! ROWTIME is monotonic: a row older than the newest one seen takes the newest ROWTIME, as
//! KDA assigns ROWTIME on insertion. Rows that fail (coercion, a row for a window already
//! emitted) go to `error_stream`. All state ([`EngineState`]) is plain data that the runner
//! checkpoints with the source positions, so a restart resumes inside an open window.
//! Bounds: `GROUPS_PER_WINDOW_MAX`, `OPEN_WINDOWS_MAX`, `PARTITION_ROWS_MAX`, `PARTITIONS_MAX`.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

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
}

/// A compiled application.
#[derive(Debug, Clone)]
pub struct Program {
    pub streams: Vec<StreamDef>,
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
}

impl Program {
    /// Compiles `code` with the application's source streams (in-app name, columns).
    pub fn compile(code: &str, sources: &[(String, Vec<Column>)]) -> Result<Program, CompileError> {
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
                    if pumps.len() >= PUMPS_MAX {
                        return Err(format!("an application has at most {PUMPS_MAX} pumps"));
                    }
                    let Some(target_idx) = find(&streams, &target) else {
                        return Err(format!(
                            "pump \"{name}\": target stream \"{target}\" is not defined (create it with CREATE OR REPLACE STREAM before the pump)"
                        ));
                    };
                    if streams[target_idx].is_source || target == ERROR_STREAM {
                        return Err(format!("pump \"{name}\": cannot insert into \"{target}\""));
                    }
                    let Some(source_idx) = find(&streams, &select.from) else {
                        let known: Vec<&str> = streams
                            .iter()
                            .filter(|s| s.name != ERROR_STREAM)
                            .map(|s| s.name.as_str())
                            .collect();
                        return Err(format!(
                            "pump \"{name}\": stream \"{}\" is not defined (known streams: {})",
                            select.from,
                            known.join(", ")
                        ));
                    };
                    if select.from == ERROR_STREAM {
                        return Err(format!(
                            "pump \"{name}\": error_stream cannot be read by SQL"
                        ));
                    }
                    if !select.stream {
                        return Err(format!("pump \"{name}\": a pump must SELECT STREAM"));
                    }
                    let pump = compile_pump(
                        &name,
                        &streams,
                        source_idx,
                        target_idx,
                        columns.as_deref(),
                        &select,
                    )?;
                    if let Some(i) = pump_names.iter().position(|n| *n == name) {
                        pumps[i] = pump;
                    } else {
                        pump_names.push(name);
                        pumps.push(pump);
                    }
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
            .filter(|s| !s.is_source)
            .map(|s| s.name.clone())
            .collect()
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

fn compile_pump(
    name: &str,
    streams: &[StreamDef],
    source: usize,
    target: usize,
    target_columns: Option<&[String]>,
    select: &sql::Select,
) -> Result<Pump, CompileError> {
    let scope = Scope {
        stream: &streams[source],
        alias: select.from_alias.as_deref(),
        windows: &select.windows,
    };
    let mut aggs = Vec::new();
    let mut sliding = Vec::new();
    let ctx = |m: String| format!("pump \"{name}\": {m}");
    // The select list, with `*` expanded.
    let mut items: Vec<(Expr, Option<String>)> = Vec::new();
    for item in &select.items {
        match item {
            SelectItem::Wildcard => {
                for c in &scope.stream.columns {
                    items.push((
                        Expr::Column {
                            qualifier: None,
                            name: c.name.clone(),
                        },
                        Some(c.name.clone()),
                    ));
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
    let kind = if !select.group_by.is_empty() {
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
        // Non-aggregated select items must be group keys (compared as written).
        for (expr, _) in &items {
            if !contains_agg(expr) && !is_constant(expr) && !select.group_by.contains(expr) {
                let ok = match expr {
                    Expr::Column { name, .. } => select
                        .group_by
                        .iter()
                        .any(|g| matches!(g, Expr::Column { name: n, .. } if n == name)),
                    _ => false,
                };
                if !ok
                    && !expr.any(&|e| matches!(e, Expr::Column { name, .. } if name == "ROWTIME"))
                {
                    return Err(ctx(format!(
                        "expression {} is neither aggregated nor in GROUP BY",
                        describe_expr(expr)
                    )));
                }
            }
        }
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
    })
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
            if let Some(q) = qualifier
                && *q != scope.stream.name
                && Some(q.as_str()) != scope.alias
            {
                return Err(ctx(format!("\"{q}\" is not the stream or alias in FROM")));
            }
            if name == "ROWTIME" {
                return Ok(CExpr::RowTime);
            }
            let columns = &scope.stream.columns;
            let idx = columns.iter().position(|c| c.name == *name).or_else(|| {
                columns
                    .iter()
                    .position(|c| c.name.eq_ignore_ascii_case(name))
            });
            match idx {
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
    },
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
}

impl Engine {
    pub fn new(program: Program) -> Engine {
        let pumps = program
            .pumps
            .iter()
            .map(|p| match &p.kind {
                PumpKind::Plain => PumpState::Plain,
                PumpKind::Tumbling { .. } => PumpState::Tumbling {
                    windows: BTreeMap::new(),
                },
                PumpKind::Sliding { windows } => PumpState::Sliding {
                    partitions: vec![HashMap::new(); windows.len()],
                },
            })
            .collect();
        Engine {
            program,
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

    fn emit_window(&mut self, idx: usize, end: i64, window: Window, out: &mut Vec<Emitted>) {
        let pump = &self.program.pumps[idx];
        let mut rows = Vec::new();
        let mut errors = Vec::new();
        for group in window.groups {
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
            match project(pump, &self.program.streams[pump.target], &env) {
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

    /// One row through one pump: the rows it produces now and the rows that failed.
    fn process(&mut self, idx: usize, row: &Row) -> (Vec<Row>, Vec<Row>) {
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
            (PumpKind::Sliding { windows }, PumpState::Sliding { partitions }) => {
                let mut results = vec![Value::Null; pump.aggs.len()];
                for (wi, window) in windows.iter().enumerate() {
                    let key: String = window
                        .partition_by
                        .iter()
                        .map(|k| eval(k, &env).key())
                        .collect::<Vec<_>>()
                        .join("\u{1}");
                    let Some(parts) = partitions.get_mut(wi) else {
                        continue;
                    };
                    if !parts.contains_key(&key) && parts.len() >= PARTITIONS_MAX {
                        return (
                            Vec::new(),
                            vec![fail("too many partitions", "LIMIT_EXCEEDED")],
                        );
                    }
                    let buffer = parts.entry(key).or_default();
                    buffer.push_back(row.clone());
                    match window.frame {
                        WindowFrame::Range(range_ms) => {
                            while buffer
                                .front()
                                .is_some_and(|r| r.rowtime < row.rowtime.saturating_sub(range_ms))
                            {
                                buffer.pop_front();
                            }
                        }
                        WindowFrame::Rows(n) => {
                            while buffer.len() as u64 > n.saturating_add(1) {
                                buffer.pop_front();
                            }
                        }
                    }
                    while buffer.len() > PARTITION_ROWS_MAX {
                        buffer.pop_front();
                    }
                    for (ai, spec) in pump.aggs.iter().enumerate() {
                        if spec.window != Some(wi) {
                            continue;
                        }
                        let mut acc = Acc::new(spec.func);
                        for r in buffer.iter() {
                            let renv = Env {
                                row: r,
                                aggs: &no_aggs,
                            };
                            let v = spec.arg.as_ref().map(|a| eval(a, &renv));
                            acc.add(v.as_ref());
                        }
                        results[ai] = acc.result();
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
