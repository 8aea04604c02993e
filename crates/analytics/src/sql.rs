//! The Kinesis Data Analytics SQL dialect (SQLstream-derived): tokenizer, AST and a
//! recursive-descent parser for the subset the engine runs.
//!
//! Why not the `sqlparser` crate: none of its dialects accepts `CREATE OR REPLACE STREAM`,
//! `CREATE OR REPLACE PUMP`, `STEP(x BY INTERVAL ...)` or `WINDOWED BY STAGGER`, and it parses
//! `SELECT STREAM a` silently wrong (a column `STREAM` aliased `a`); see services.md 2.7. A
//! front end over it would still need its own lowering of sqlparser's very large AST, so for
//! the subset we run a small parser of our own is less code and no extra compile time.
//!
//! What it parses: `CREATE [OR REPLACE] STREAM name (col type [NOT NULL], ...) [DESCRIPTION
//! '...']`, `CREATE [OR REPLACE] PUMP name AS INSERT INTO name [(cols)] SELECT STREAM ...`
//! with `FROM` one stream or `TABLE(f(CURSOR(SELECT STREAM ...), args...))`, an optional
//! `[LEFT [OUTER] | INNER] JOIN table [AS alias] ON ...`, `WHERE`, `WINDOWED BY STAGGER
//! (PARTITION BY ... RANGE INTERVAL ...)`, `GROUP BY` (with `STEP(x BY INTERVAL ...)` and
//! `FLOOR(x TO unit)`), `HAVING`, `WINDOW w AS (PARTITION BY ... RANGE INTERVAL ... PRECEDING
//! | ROWS n PRECEDING)` and inline `OVER (...)`, `ORDER BY expr [ASC | DESC], ...`;
//! expressions with the usual operators, `CASE`, `CAST`, `IS [NOT] NULL`, `[NOT] LIKE`,
//! `[NOT] BETWEEN`, `[NOT] IN (...)`, function calls. Comments: `--`, `//` (the CREATE PUMP
//! reference page uses them) and `/* */`. What it does not parse (several joins, RIGHT/FULL
//! joins, `UNION`) is a `SqlError` naming the position, which the API turns into a
//! `CodeValidationException`. Meaning (which stream, which function) is engine.rs's.

use std::fmt;

/// Longest application code (the model's `ApplicationCode` limit).
pub const CODE_CHARS_MAX: usize = 102_400;
/// Deepest expression nesting accepted (bounds the parser's recursion).
const EXPRESSION_DEPTH_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct SqlError {
    pub message: String,
    /// 1-based line and column of the offending token.
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (line {}, column {})",
            self.message, self.line, self.column
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A bare identifier or keyword, upper-cased.
    Word(String),
    /// A `"quoted"` identifier, case kept.
    Quoted(String),
    Number(String),
    Str(String),
    Sym(&'static str),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
    column: usize,
}

fn tokenize(code: &str) -> Result<Vec<Token>, SqlError> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line, mut line_start) = (0usize, 1usize, 0usize);
    let err = |message: String, line: usize, column: usize| SqlError {
        message,
        line,
        column,
    };
    while let Some(&c) = chars.get(i) {
        let column = i - line_start + 1;
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
            line_start = i;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if (c == '-' && next == Some('-')) || (c == '/' && next == Some('/')) {
            while chars.get(i).is_some_and(|&c| c != '\n') {
                i += 1;
            }
            continue;
        }
        if c == '/' && next == Some('*') {
            i += 2;
            loop {
                match chars.get(i) {
                    None => return Err(err("unterminated comment".into(), line, column)),
                    Some('*') if chars.get(i + 1) == Some(&'/') => {
                        i += 2;
                        break;
                    }
                    Some('\n') => {
                        line += 1;
                        i += 1;
                        line_start = i;
                    }
                    Some(_) => i += 1,
                }
            }
            continue;
        }
        let tok = if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while chars
                .get(i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '$')
            {
                i += 1;
            }
            Tok::Word(chars[start..i].iter().collect::<String>().to_uppercase())
        } else if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) {
            let start = i;
            while chars
                .get(i)
                .is_some_and(|c| c.is_ascii_digit() || *c == '.')
            {
                i += 1;
            }
            if chars.get(i).is_some_and(|c| *c == 'e' || *c == 'E') {
                i += 1;
                if chars.get(i).is_some_and(|c| *c == '-' || *c == '+') {
                    i += 1;
                }
                while chars.get(i).is_some_and(|c| c.is_ascii_digit()) {
                    i += 1;
                }
            }
            Tok::Number(chars[start..i].iter().collect())
        } else if c == '\'' || c == '"' {
            let mut text = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(err(
                            format!(
                                "unterminated {}",
                                if c == '"' { "identifier" } else { "string" }
                            ),
                            line,
                            column,
                        ));
                    }
                    Some(&q) if q == c => {
                        if chars.get(i + 1) == Some(&c) {
                            text.push(c);
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    }
                    Some(&other) => {
                        if other == '\n' {
                            line += 1;
                            line_start = i + 1;
                        }
                        text.push(other);
                        i += 1;
                    }
                }
            }
            if c == '"' {
                Tok::Quoted(text)
            } else {
                Tok::Str(text)
            }
        } else {
            const TWO: [&str; 6] = ["<>", "!=", "<=", ">=", "||", "=>"];
            const ONE: [&str; 12] = ["(", ")", ",", ".", ";", "*", "+", "-", "/", "=", "<", ">"];
            let pair: String = [Some(c), next].iter().flatten().collect();
            if let Some(sym) = TWO.iter().find(|s| **s == pair) {
                i += 2;
                Tok::Sym(sym)
            } else if let Some(sym) = ONE.iter().find(|s| s.starts_with(c)) {
                i += 1;
                Tok::Sym(sym)
            } else if c == '%' {
                i += 1;
                Tok::Sym("%")
            } else {
                return Err(err(format!("unexpected character '{c}'"), line, column));
            }
        };
        out.push(Token { tok, line, column });
    }
    Ok(out)
}

/// A SQL type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SqlType {
    /// VARCHAR/CHAR with a length (characters).
    Varchar(u32),
    Integer,
    /// REAL, DOUBLE, FLOAT, DECIMAL, NUMERIC (DECIMAL is approximated by a double).
    Double,
    Boolean,
    Timestamp,
}

/// One column of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub sql_type: SqlType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Second,
    Minute,
    Hour,
    Day,
}

impl TimeUnit {
    pub fn millis(self) -> i64 {
        match self {
            TimeUnit::Second => 1_000,
            TimeUnit::Minute => 60_000,
            TimeUnit::Hour => 3_600_000,
            TimeUnit::Day => 86_400_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Concat,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    And,
    Or,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// An interval in milliseconds.
    Interval(i64),
    /// A timestamp in milliseconds since the epoch.
    Timestamp(i64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum WindowFrame {
    /// `RANGE INTERVAL ... PRECEDING`, in milliseconds.
    Range(i64),
    /// `ROWS n PRECEDING`.
    Rows(u64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct WindowSpec {
    pub partition_by: Vec<Expr>,
    pub frame: WindowFrame,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Over {
    Named(String),
    Inline(WindowSpec),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Literal(Literal),
    /// A column, with its qualifier (stream name or alias) if one was written.
    Column {
        qualifier: Option<String>,
        name: String,
    },
    Unary {
        negate: bool,
        expr: Box<Expr>,
    },
    Not(Box<Expr>),
    Binary {
        op: BinaryOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        negated: bool,
    },
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Case {
        operand: Option<Box<Expr>>,
        branches: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    Cast {
        expr: Box<Expr>,
        sql_type: SqlType,
    },
    /// `STEP(expr BY INTERVAL ...)`: the start of the interval-wide bucket of `expr`.
    Step {
        expr: Box<Expr>,
        width_ms: i64,
    },
    /// `FLOOR(expr TO unit)` / `CEIL(expr TO unit)`.
    FloorTo {
        expr: Box<Expr>,
        unit: TimeUnit,
        ceil: bool,
    },
    Function {
        name: String,
        args: Vec<Expr>,
        /// `COUNT(*)`.
        star: bool,
        over: Option<Over>,
    },
}

impl Expr {
    /// Whether any node satisfies `f`.
    pub fn any(&self, f: &dyn Fn(&Expr) -> bool) -> bool {
        if f(self) {
            return true;
        }
        match self {
            Expr::Literal(_) | Expr::Column { .. } => false,
            Expr::Unary { expr, .. }
            | Expr::Not(expr)
            | Expr::IsNull { expr, .. }
            | Expr::Cast { expr, .. }
            | Expr::Step { expr, .. }
            | Expr::FloorTo { expr, .. } => expr.any(f),
            Expr::Binary { left, right, .. } => left.any(f) || right.any(f),
            Expr::Like { expr, pattern, .. } => expr.any(f) || pattern.any(f),
            Expr::Between {
                expr, low, high, ..
            } => expr.any(f) || low.any(f) || high.any(f),
            Expr::InList { expr, list, .. } => expr.any(f) || list.iter().any(|e| e.any(f)),
            Expr::Case {
                operand,
                branches,
                otherwise,
            } => {
                operand.as_ref().is_some_and(|e| e.any(f))
                    || branches.iter().any(|(a, b)| a.any(f) || b.any(f))
                    || otherwise.as_ref().is_some_and(|e| e.any(f))
            }
            Expr::Function { args, .. } => args.iter().any(|e| e.any(f)),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SelectItem {
    /// `*` or `alias.*`.
    Wildcard,
    Expr {
        expr: Expr,
        alias: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    /// `SELECT STREAM` (continuous); plain `SELECT` is refused in a pump.
    pub stream: bool,
    pub items: Vec<SelectItem>,
    pub from: String,
    pub from_alias: Option<String>,
    pub filter: Option<Expr>,
    pub group_by: Vec<Expr>,
    pub having: Option<Expr>,
    pub windows: Vec<(String, WindowSpec)>,
    /// `WINDOWED BY STAGGER (PARTITION BY ... RANGE INTERVAL ...)`.
    pub stagger: Option<StaggerSpec>,
    /// `[LEFT [OUTER] | INNER] JOIN table [AS alias] ON ...`: a reference-table join.
    pub join: Option<Join>,
    /// `FROM TABLE(f(CURSOR(SELECT STREAM ...), args...))`; `from` is then empty.
    pub table_function: Option<TableFunction>,
    /// `ORDER BY <ROWTIME bucket>, expr [ASC | DESC], ...`: (expression, descending).
    pub order_by: Vec<(Expr, bool)>,
}

/// A table function over a cursor: `RANDOM_CUT_FOREST`, `TOP_K_ITEMS_TUMBLING`, ...
#[derive(Debug, Clone, PartialEq)]
pub struct TableFunction {
    pub name: String,
    pub cursor: Box<Select>,
    /// The arguments after the cursor (literals).
    pub args: Vec<Expr>,
    /// 1-based line and column of the function name, for errors.
    pub line: usize,
    pub column: usize,
}

/// A stagger window: one window per partition key, opened by the key's first row and
/// closed `range_ms` later.
#[derive(Debug, Clone, PartialEq)]
pub struct StaggerSpec {
    pub partition_by: Vec<Expr>,
    pub range_ms: i64,
}

/// A join of the FROM stream with an in-application (reference) table.
#[derive(Debug, Clone, PartialEq)]
pub struct Join {
    /// `LEFT [OUTER] JOIN`: stream rows without a match are kept, with NULL table columns.
    pub left_outer: bool,
    pub table: String,
    pub alias: Option<String>,
    pub on: Expr,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    CreateStream {
        name: String,
        columns: Vec<Column>,
    },
    CreatePump {
        name: String,
        target: String,
        columns: Option<Vec<String>>,
        select: Box<Select>,
    },
}

/// Parses application code into statements.
pub fn parse(code: &str) -> Result<Vec<Statement>, SqlError> {
    if code.chars().count() > CODE_CHARS_MAX {
        return Err(SqlError {
            message: format!("application code is longer than {CODE_CHARS_MAX} characters"),
            line: 1,
            column: 1,
        });
    }
    let tokens = tokenize(code)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let mut out = Vec::new();
    loop {
        while p.eat_sym(";") {}
        if p.peek().is_none() {
            break;
        }
        out.push(p.statement()?);
        if p.peek().is_some() && !p.eat_sym(";") {
            return Err(p.error("expected ';' after the statement"));
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

/// Words that end an expression or an alias.
const RESERVED: &[&str] = &[
    "FROM",
    "WHERE",
    "GROUP",
    "HAVING",
    "WINDOW",
    "WINDOWED",
    "ORDER",
    "AS",
    "AND",
    "OR",
    "NOT",
    "ON",
    "JOIN",
    "LEFT",
    "RIGHT",
    "INNER",
    "FULL",
    "CROSS",
    "UNION",
    "BY",
    "OVER",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "IS",
    "LIKE",
    "BETWEEN",
    "IN",
    "SELECT",
    "PARTITION",
    "RANGE",
    "ROWS",
    "PRECEDING",
    "LIMIT",
    "SIMILAR",
    "OUTER",
    "ASC",
    "DESC",
];

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.tokens.get(self.pos + n).map(|t| &t.tok)
    }

    fn error(&self, message: &str) -> SqlError {
        let (line, column, found) = match self.tokens.get(self.pos) {
            Some(t) => (t.line, t.column, describe(&t.tok)),
            None => (
                self.tokens.last().map_or(1, |t| t.line),
                self.tokens.last().map_or(1, |t| t.column),
                "end of input".to_string(),
            ),
        };
        SqlError {
            message: format!("{message}, found {found}"),
            line,
            column,
        }
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w == word)
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if self.is_word(word) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_word(&mut self, word: &str) -> Result<(), SqlError> {
        if self.eat_word(word) {
            Ok(())
        } else {
            Err(self.error(&format!("expected {word}")))
        }
    }

    fn eat_sym(&mut self, sym: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(s)) if *s == sym) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_sym(&mut self, sym: &str) -> Result<(), SqlError> {
        if self.eat_sym(sym) {
            Ok(())
        } else {
            Err(self.error(&format!("expected '{sym}'")))
        }
    }

    /// An identifier: a quoted one keeps its case, a bare one is upper-cased.
    fn identifier(&mut self) -> Result<String, SqlError> {
        match self.peek().cloned() {
            Some(Tok::Quoted(name)) => {
                self.pos += 1;
                Ok(name)
            }
            Some(Tok::Word(name)) if !RESERVED.contains(&name.as_str()) => {
                self.pos += 1;
                Ok(name)
            }
            _ => Err(self.error("expected an identifier")),
        }
    }

    fn statement(&mut self) -> Result<Statement, SqlError> {
        self.expect_word("CREATE")?;
        if self.eat_word("OR") {
            self.expect_word("REPLACE")?;
        }
        if self.eat_word("STREAM") {
            let name = self.identifier()?;
            self.expect_sym("(")?;
            let mut columns = Vec::new();
            loop {
                let name = self.identifier()?;
                let sql_type = self.sql_type()?;
                if self.eat_word("NOT") {
                    self.expect_word("NULL")?;
                }
                columns.push(Column { name, sql_type });
                if !self.eat_sym(",") {
                    break;
                }
            }
            self.expect_sym(")")?;
            if self.eat_word("DESCRIPTION") {
                match self.peek() {
                    Some(Tok::Str(_)) => self.pos += 1,
                    _ => return Err(self.error("expected a string after DESCRIPTION")),
                }
            }
            return Ok(Statement::CreateStream { name, columns });
        }
        if self.eat_word("PUMP") {
            let name = self.identifier()?;
            self.expect_word("AS")?;
            self.expect_word("INSERT")?;
            self.expect_word("INTO")?;
            let target = self.identifier()?;
            let columns = if self.eat_sym("(") {
                let mut names = vec![self.identifier()?];
                while self.eat_sym(",") {
                    names.push(self.identifier()?);
                }
                self.expect_sym(")")?;
                Some(names)
            } else {
                None
            };
            let select = Box::new(self.select()?);
            return Ok(Statement::CreatePump {
                name,
                target,
                columns,
                select,
            });
        }
        Err(self.error("expected STREAM or PUMP after CREATE [OR REPLACE]"))
    }

    fn sql_type(&mut self) -> Result<SqlType, SqlError> {
        let Some(Tok::Word(word)) = self.peek().cloned() else {
            return Err(self.error("expected a SQL type"));
        };
        self.pos += 1;
        let args = |p: &mut Parser| -> Result<Vec<i64>, SqlError> {
            let mut out = Vec::new();
            if p.eat_sym("(") {
                loop {
                    match p.peek().cloned() {
                        Some(Tok::Number(n)) => {
                            p.pos += 1;
                            out.push(n.parse().map_err(|_| p.error("expected a length"))?);
                        }
                        _ => return Err(p.error("expected a length")),
                    }
                    if !p.eat_sym(",") {
                        break;
                    }
                }
                p.expect_sym(")")?;
            }
            Ok(out)
        };
        Ok(match word.as_str() {
            "VARCHAR" | "CHAR" | "CHARACTER" => {
                self.eat_word("VARYING");
                let a = args(self)?;
                let n = a.first().copied().unwrap_or(1);
                if !(1..=65_535).contains(&n) {
                    return Err(self.error("a VARCHAR length must be from 1 to 65535"));
                }
                SqlType::Varchar(u32::try_from(n).unwrap_or(1))
            }
            "INTEGER" | "INT" | "BIGINT" | "SMALLINT" | "TINYINT" => SqlType::Integer,
            "REAL" | "FLOAT" | "DECIMAL" | "NUMERIC" | "DEC" => {
                args(self)?;
                SqlType::Double
            }
            "DOUBLE" => {
                self.eat_word("PRECISION");
                SqlType::Double
            }
            "BOOLEAN" => SqlType::Boolean,
            "TIMESTAMP" | "DATE" => SqlType::Timestamp,
            other => {
                self.pos -= 1;
                return Err(self.error(&format!("unsupported SQL type {other}")));
            }
        })
    }

    fn select(&mut self) -> Result<Select, SqlError> {
        self.expect_word("SELECT")?;
        let stream = self.eat_word("STREAM");
        let mut items = Vec::new();
        loop {
            if self.eat_sym("*") {
                items.push(SelectItem::Wildcard);
            } else if matches!(self.peek_at(1), Some(Tok::Sym(".")))
                && matches!(self.peek_at(2), Some(Tok::Sym("*")))
            {
                self.pos += 3;
                items.push(SelectItem::Wildcard);
            } else {
                let expr = self.expr()?;
                let alias = if self.eat_word("AS")
                    || matches!(self.peek(), Some(Tok::Quoted(_)))
                    || matches!(self.peek(), Some(Tok::Word(w)) if !RESERVED.contains(&w.as_str()))
                {
                    Some(self.identifier()?)
                } else {
                    None
                };
                items.push(SelectItem::Expr { expr, alias });
            }
            if !self.eat_sym(",") {
                break;
            }
        }
        self.expect_word("FROM")?;
        let mut table_function = None;
        let from = if self.eat_word("TABLE") {
            self.expect_sym("(")?;
            let (line, column) = self
                .tokens
                .get(self.pos)
                .map_or((1, 1), |t| (t.line, t.column));
            let Some(Tok::Word(name)) = self.peek().cloned() else {
                return Err(self.error("expected a table function name"));
            };
            self.pos += 1;
            self.expect_sym("(")?;
            self.expect_word("CURSOR")?;
            self.expect_sym("(")?;
            self.depth += 1;
            if self.depth > EXPRESSION_DEPTH_MAX {
                return Err(self.error("cursors are nested too deeply"));
            }
            let cursor = Box::new(self.select()?);
            self.depth -= 1;
            self.expect_sym(")")?;
            let mut args = Vec::new();
            while self.eat_sym(",") {
                args.push(self.expr()?);
            }
            self.expect_sym(")")?;
            self.expect_sym(")")?;
            table_function = Some(TableFunction {
                name,
                cursor,
                args,
                line,
                column,
            });
            String::new()
        } else {
            self.identifier()?
        };
        let from_alias = if self.eat_word("AS")
            || matches!(self.peek(), Some(Tok::Quoted(_)))
            || matches!(self.peek(), Some(Tok::Word(w)) if !RESERVED.contains(&w.as_str()))
        {
            Some(self.identifier()?)
        } else {
            None
        };
        let join = if self.is_word("JOIN") || self.is_word("INNER") || self.is_word("LEFT") {
            let left_outer = self.eat_word("LEFT");
            if left_outer {
                self.eat_word("OUTER");
            } else {
                self.eat_word("INNER");
            }
            self.expect_word("JOIN")?;
            let table = self.identifier()?;
            let alias = if self.eat_word("AS")
                || matches!(self.peek(), Some(Tok::Quoted(_)))
                || matches!(self.peek(), Some(Tok::Word(w)) if !RESERVED.contains(&w.as_str()))
            {
                Some(self.identifier()?)
            } else {
                None
            };
            self.expect_word("ON")?;
            let on = self.expr()?;
            Some(Join {
                left_outer,
                table,
                alias,
                on,
            })
        } else {
            None
        };
        if ["JOIN", "LEFT", "RIGHT", "INNER", "FULL", "CROSS"]
            .iter()
            .any(|w| self.is_word(w))
            || self.eat_sym(",")
        {
            return Err(self.error(
                "only one join, of the stream with a reference table ([LEFT [OUTER] | INNER] JOIN ... ON ...), is supported",
            ));
        }
        let filter = if self.eat_word("WHERE") {
            Some(self.expr()?)
        } else {
            None
        };
        let stagger = if self.eat_word("WINDOWED") {
            self.expect_word("BY")?;
            self.expect_word("STAGGER")?;
            self.expect_sym("(")?;
            self.expect_word("PARTITION")?;
            self.expect_word("BY")?;
            let mut partition_by = Vec::new();
            loop {
                partition_by.push(self.expr()?);
                if !self.eat_sym(",") {
                    break;
                }
            }
            self.expect_word("RANGE")?;
            let Expr::Literal(Literal::Interval(range_ms)) = self.primary()? else {
                return Err(self.error("expected INTERVAL '...' unit after RANGE"));
            };
            if range_ms <= 0 {
                return Err(self.error("the STAGGER range must be positive"));
            }
            self.expect_sym(")")?;
            Some(StaggerSpec {
                partition_by,
                range_ms,
            })
        } else {
            None
        };
        let mut group_by = Vec::new();
        if self.eat_word("GROUP") {
            self.expect_word("BY")?;
            loop {
                group_by.push(self.expr()?);
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        let having = if self.eat_word("HAVING") {
            Some(self.expr()?)
        } else {
            None
        };
        let mut windows = Vec::new();
        if self.eat_word("WINDOW") {
            loop {
                let name = self.identifier()?;
                self.expect_word("AS")?;
                windows.push((name, self.window_spec()?));
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        if self.is_word("WINDOWED") {
            return Err(self.error("WINDOWED BY STAGGER goes after FROM and WHERE"));
        }
        let mut order_by = Vec::new();
        if self.eat_word("ORDER") {
            self.expect_word("BY")?;
            loop {
                let e = self.expr()?;
                let descending = if self.eat_word("DESC") {
                    true
                } else {
                    self.eat_word("ASC");
                    false
                };
                order_by.push((e, descending));
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        Ok(Select {
            stream,
            items,
            from,
            from_alias,
            filter,
            group_by,
            having,
            windows,
            stagger,
            join,
            table_function,
            order_by,
        })
    }

    fn window_spec(&mut self) -> Result<WindowSpec, SqlError> {
        self.expect_sym("(")?;
        let mut partition_by = Vec::new();
        if self.eat_word("PARTITION") {
            self.expect_word("BY")?;
            loop {
                partition_by.push(self.expr()?);
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        let frame = if self.eat_word("RANGE") {
            let Expr::Literal(Literal::Interval(ms)) = self.primary()? else {
                return Err(self.error("expected INTERVAL '...' unit after RANGE"));
            };
            WindowFrame::Range(ms)
        } else if self.eat_word("ROWS") {
            match self.peek().cloned() {
                Some(Tok::Number(n)) => {
                    self.pos += 1;
                    WindowFrame::Rows(n.parse().map_err(|_| self.error("expected a row count"))?)
                }
                _ => return Err(self.error("expected a row count after ROWS")),
            }
        } else {
            return Err(self.error("expected RANGE or ROWS in the window"));
        };
        self.expect_word("PRECEDING")?;
        self.expect_sym(")")?;
        Ok(WindowSpec {
            partition_by,
            frame,
        })
    }

    fn expr(&mut self) -> Result<Expr, SqlError> {
        self.depth += 1;
        if self.depth > EXPRESSION_DEPTH_MAX {
            return Err(self.error("expression nested too deeply"));
        }
        let result = self.or();
        self.depth -= 1;
        result
    }

    fn or(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.and()?;
        while self.eat_word("OR") {
            let right = self.and()?;
            left = binary(BinaryOp::Or, left, right);
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.not()?;
        while self.eat_word("AND") {
            let right = self.not()?;
            left = binary(BinaryOp::And, left, right);
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, SqlError> {
        if self.eat_word("NOT") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, SqlError> {
        let left = self.concat()?;
        let op = match self.peek() {
            Some(Tok::Sym("=")) => Some(BinaryOp::Eq),
            Some(Tok::Sym("<>")) | Some(Tok::Sym("!=")) => Some(BinaryOp::NotEq),
            Some(Tok::Sym("<")) => Some(BinaryOp::Lt),
            Some(Tok::Sym("<=")) => Some(BinaryOp::LtEq),
            Some(Tok::Sym(">")) => Some(BinaryOp::Gt),
            Some(Tok::Sym(">=")) => Some(BinaryOp::GtEq),
            _ => None,
        };
        if let Some(op) = op {
            self.pos += 1;
            let right = self.concat()?;
            return Ok(binary(op, left, right));
        }
        if self.eat_word("IS") {
            let negated = self.eat_word("NOT");
            self.expect_word("NULL")?;
            return Ok(Expr::IsNull {
                expr: Box::new(left),
                negated,
            });
        }
        let negated = self.is_word("NOT")
            && matches!(self.peek_at(1), Some(Tok::Word(w)) if w == "LIKE" || w == "BETWEEN" || w == "IN");
        if negated {
            self.pos += 1;
        }
        if self.eat_word("LIKE") {
            let pattern = self.concat()?;
            return Ok(Expr::Like {
                expr: Box::new(left),
                pattern: Box::new(pattern),
                negated,
            });
        }
        if self.eat_word("BETWEEN") {
            let low = self.concat()?;
            self.expect_word("AND")?;
            let high = self.concat()?;
            return Ok(Expr::Between {
                expr: Box::new(left),
                low: Box::new(low),
                high: Box::new(high),
                negated,
            });
        }
        if self.eat_word("IN") {
            self.expect_sym("(")?;
            let mut list = vec![self.expr()?];
            while self.eat_sym(",") {
                list.push(self.expr()?);
            }
            self.expect_sym(")")?;
            return Ok(Expr::InList {
                expr: Box::new(left),
                list,
                negated,
            });
        }
        if negated {
            return Err(self.error("expected LIKE, BETWEEN or IN after NOT"));
        }
        Ok(left)
    }

    fn concat(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.additive()?;
        while self.eat_sym("||") {
            let right = self.additive()?;
            left = binary(BinaryOp::Concat, left, right);
        }
        Ok(left)
    }

    fn additive(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = if self.eat_sym("+") {
                BinaryOp::Add
            } else if self.eat_sym("-") {
                BinaryOp::Sub
            } else {
                return Ok(left);
            };
            let right = self.multiplicative()?;
            left = binary(op, left, right);
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.unary()?;
        loop {
            let op = if self.eat_sym("*") {
                BinaryOp::Mul
            } else if self.eat_sym("/") {
                BinaryOp::Div
            } else if self.eat_sym("%") {
                BinaryOp::Mod
            } else {
                return Ok(left);
            };
            let right = self.unary()?;
            left = binary(op, left, right);
        }
    }

    fn unary(&mut self) -> Result<Expr, SqlError> {
        if self.eat_sym("-") {
            return Ok(Expr::Unary {
                negate: true,
                expr: Box::new(self.unary()?),
            });
        }
        if self.eat_sym("+") {
            return self.unary();
        }
        self.primary()
    }

    fn time_unit(&mut self) -> Result<TimeUnit, SqlError> {
        let unit = match self.peek() {
            Some(Tok::Word(w)) => match w.as_str() {
                "SECOND" | "SECONDS" => TimeUnit::Second,
                "MINUTE" | "MINUTES" => TimeUnit::Minute,
                "HOUR" | "HOURS" => TimeUnit::Hour,
                "DAY" | "DAYS" => TimeUnit::Day,
                _ => return Err(self.error("expected SECOND, MINUTE, HOUR or DAY")),
            },
            _ => return Err(self.error("expected SECOND, MINUTE, HOUR or DAY")),
        };
        self.pos += 1;
        Ok(unit)
    }

    fn primary(&mut self) -> Result<Expr, SqlError> {
        let Some(token) = self.peek().cloned() else {
            return Err(self.error("expected an expression"));
        };
        match token {
            Tok::Number(n) => {
                self.pos += 1;
                if let Ok(i) = n.parse::<i64>() {
                    return Ok(Expr::Literal(Literal::Int(i)));
                }
                match n.parse::<f64>() {
                    Ok(f) => Ok(Expr::Literal(Literal::Float(f))),
                    Err(_) => {
                        self.pos -= 1;
                        Err(self.error("invalid number"))
                    }
                }
            }
            Tok::Str(s) => {
                self.pos += 1;
                Ok(Expr::Literal(Literal::Str(s)))
            }
            Tok::Sym("(") => {
                self.pos += 1;
                let e = self.expr()?;
                self.expect_sym(")")?;
                Ok(e)
            }
            Tok::Quoted(_) => self.column_or_call(),
            Tok::Word(w) => match w.as_str() {
                "NULL" => {
                    self.pos += 1;
                    Ok(Expr::Literal(Literal::Null))
                }
                "TRUE" | "FALSE" => {
                    self.pos += 1;
                    Ok(Expr::Literal(Literal::Bool(w == "TRUE")))
                }
                "INTERVAL" => {
                    self.pos += 1;
                    let n = match self.peek().cloned() {
                        Some(Tok::Str(s)) => s.trim().parse::<i64>().ok(),
                        Some(Tok::Number(s)) => s.parse::<i64>().ok(),
                        _ => None,
                    };
                    let Some(n) = n else {
                        return Err(self.error("expected a whole number of units after INTERVAL"));
                    };
                    self.pos += 1;
                    let unit = self.time_unit()?;
                    Ok(Expr::Literal(Literal::Interval(
                        n.saturating_mul(unit.millis()),
                    )))
                }
                "TIMESTAMP" if matches!(self.peek_at(1), Some(Tok::Str(_))) => {
                    self.pos += 1;
                    let Some(Tok::Str(text)) = self.peek().cloned() else {
                        return Err(self.error("expected a timestamp"));
                    };
                    let Some(ms) = crate::value::parse_timestamp(&text) else {
                        return Err(self.error("invalid timestamp literal"));
                    };
                    self.pos += 1;
                    Ok(Expr::Literal(Literal::Timestamp(ms)))
                }
                "CASE" => {
                    self.pos += 1;
                    let operand = if self.is_word("WHEN") {
                        None
                    } else {
                        Some(Box::new(self.expr()?))
                    };
                    let mut branches = Vec::new();
                    while self.eat_word("WHEN") {
                        let when = self.expr()?;
                        self.expect_word("THEN")?;
                        branches.push((when, self.expr()?));
                    }
                    if branches.is_empty() {
                        return Err(self.error("expected WHEN"));
                    }
                    let otherwise = if self.eat_word("ELSE") {
                        Some(Box::new(self.expr()?))
                    } else {
                        None
                    };
                    self.expect_word("END")?;
                    Ok(Expr::Case {
                        operand,
                        branches,
                        otherwise,
                    })
                }
                "CAST" => {
                    self.pos += 1;
                    self.expect_sym("(")?;
                    let expr = self.expr()?;
                    self.expect_word("AS")?;
                    let sql_type = self.sql_type()?;
                    self.expect_sym(")")?;
                    Ok(Expr::Cast {
                        expr: Box::new(expr),
                        sql_type,
                    })
                }
                "STEP" if matches!(self.peek_at(1), Some(Tok::Sym("("))) => {
                    self.pos += 2;
                    let expr = self.expr()?;
                    self.expect_word("BY")?;
                    let Expr::Literal(Literal::Interval(width_ms)) = self.primary()? else {
                        return Err(self.error("expected INTERVAL '...' unit in STEP"));
                    };
                    if width_ms <= 0 {
                        return Err(self.error("the STEP interval must be positive"));
                    }
                    self.expect_sym(")")?;
                    Ok(Expr::Step {
                        expr: Box::new(expr),
                        width_ms,
                    })
                }
                "FLOOR" | "CEIL" | "CEILING" if matches!(self.peek_at(1), Some(Tok::Sym("("))) => {
                    self.pos += 2;
                    let expr = self.expr()?;
                    if self.eat_word("TO") {
                        let unit = self.time_unit()?;
                        self.expect_sym(")")?;
                        return Ok(Expr::FloorTo {
                            expr: Box::new(expr),
                            unit,
                            ceil: w != "FLOOR",
                        });
                    }
                    self.expect_sym(")")?;
                    Ok(Expr::Function {
                        name: if w == "FLOOR" {
                            "FLOOR".into()
                        } else {
                            "CEIL".into()
                        },
                        args: vec![expr],
                        star: false,
                        over: None,
                    })
                }
                "CURRENT_ROW_TIMESTAMP" | "CURRENT_TIMESTAMP" | "LOCALTIMESTAMP" | "ROWTIME"
                    if !matches!(self.peek_at(1), Some(Tok::Sym("("))) =>
                {
                    self.pos += 1;
                    if w == "ROWTIME" {
                        return Ok(Expr::Column {
                            qualifier: None,
                            name: w.clone(),
                        });
                    }
                    Ok(Expr::Function {
                        name: w.clone(),
                        args: Vec::new(),
                        star: false,
                        over: None,
                    })
                }
                _ => self.column_or_call(),
            },
            _ => Err(self.error("expected an expression")),
        }
    }

    fn column_or_call(&mut self) -> Result<Expr, SqlError> {
        let first = self.identifier()?;
        if self.eat_sym("(") {
            let name = first.to_uppercase();
            let mut args = Vec::new();
            let mut star = false;
            if self.eat_sym("*") {
                star = true;
            } else if !matches!(self.peek(), Some(Tok::Sym(")"))) {
                if self.eat_word("DISTINCT") {
                    return Err(
                        self.error("DISTINCT aggregates are not allowed in streaming queries")
                    );
                }
                self.eat_word("ALL");
                loop {
                    args.push(self.expr()?);
                    if !self.eat_sym(",") {
                        break;
                    }
                }
            }
            self.expect_sym(")")?;
            let over = if self.eat_word("OVER") {
                if matches!(self.peek(), Some(Tok::Sym("("))) {
                    Some(Over::Inline(self.window_spec()?))
                } else {
                    Some(Over::Named(self.identifier()?))
                }
            } else {
                None
            };
            return Ok(Expr::Function {
                name,
                args,
                star,
                over,
            });
        }
        if self.eat_sym(".") {
            let name = self.identifier_or_rowtime()?;
            return Ok(Expr::Column {
                qualifier: Some(first),
                name,
            });
        }
        Ok(Expr::Column {
            qualifier: None,
            name: first,
        })
    }

    fn identifier_or_rowtime(&mut self) -> Result<String, SqlError> {
        if self.eat_word("ROWTIME") {
            return Ok("ROWTIME".into());
        }
        self.identifier()
    }
}

fn binary(op: BinaryOp, left: Expr, right: Expr) -> Expr {
    Expr::Binary {
        op,
        left: Box::new(left),
        right: Box::new(right),
    }
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Word(w) => w.clone(),
        Tok::Quoted(q) => format!("\"{q}\""),
        Tok::Number(n) => n.clone(),
        Tok::Str(s) => format!("'{s}'"),
        Tok::Sym(s) => format!("'{s}'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_tumbling_example() {
        let code = r#"CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (TICKER VARCHAR(4), MIN_PRICE REAL, MAX_PRICE REAL);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM TICKER, MIN(PRICE), MAX(PRICE)
        FROM "SOURCE_SQL_STREAM_001"
        GROUP BY TICKER,
            STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '60' SECOND);"#;
        let statements = parse(code).expect("parses");
        assert_eq!(statements.len(), 2);
        let Statement::CreatePump { select, target, .. } = &statements[1] else {
            panic!("expected a pump");
        };
        assert_eq!(target, "DESTINATION_SQL_STREAM");
        assert!(select.stream);
        assert_eq!(select.group_by.len(), 2);
        assert!(matches!(
            select.group_by[1],
            Expr::Step {
                width_ms: 60_000,
                ..
            }
        ));
    }

    #[test]
    fn parses_the_documented_sliding_example() {
        let code = r#"CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
                         ticker_symbol VARCHAR(10), Min_Price double, Max_Price double, Avg_Price double);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS
   INSERT INTO "DESTINATION_SQL_STREAM"
     SELECT STREAM ticker_symbol,
                   MIN(Price) OVER W1 AS Min_Price,
                   AVG(Price) OVER W1 AS Avg_Price
     FROM   "SOURCE_SQL_STREAM_001"
     WINDOW W1 AS (
        PARTITION BY ticker_symbol
        RANGE INTERVAL '1' MINUTE PRECEDING);"#;
        let statements = parse(code).expect("parses");
        let Statement::CreatePump { select, .. } = &statements[1] else {
            panic!("expected a pump");
        };
        assert_eq!(select.windows.len(), 1);
        assert_eq!(select.windows[0].1.frame, WindowFrame::Range(60_000));
    }

    #[test]
    fn reports_the_position_of_an_error() {
        let error = parse("CREATE OR REPLACE STREAM \"S\" (a INTEGER);\nCREATE PUMP p AS INSERT INTO \"S\" SELEC STREAM a FROM x;")
            .expect_err("bad SQL");
        assert_eq!(error.line, 2);
        assert!(error.message.contains("expected SELECT"), "{error}");
    }
}
