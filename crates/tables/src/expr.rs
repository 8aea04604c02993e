//! DynamoDB's expression languages: condition, filter and key-condition expressions, update
//! expressions and projection expressions, with `#name` and `:value` placeholders.
//!
//! Hand-written (a tokenizer and a recursive-descent parser, about 600 lines) because no
//! maintained crate parses or evaluates DynamoDB expressions, and the grammar is small. The
//! legacy parameters KCL still sends (`Expected`, `AttributeUpdates`, `KeyConditions`,
//! `ScanFilter`, `QueryFilter`, `AttributesToGet`) are translated into the same trees in
//! `legacy_*`, so there is one evaluator. Placeholders are resolved while parsing; the
//! names and values a request used are recorded in [`Placeholders`] so that unused ones are
//! refused as DynamoDB refuses them. Not implemented: the reserved-word check on bare
//! attribute names (DynamoDB's list of 573 words).

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::Error;
use crate::value::{self, Item};

/// An expression's length limit, as DynamoDB's.
pub const EXPRESSION_BYTES_MAX: usize = 4096;
/// Tokens in one expression, a bound on parsing work.
const TOKENS_MAX: usize = 2048;
/// Operands of IN, as DynamoDB's.
const IN_OPERANDS_MAX: usize = 100;
/// Nesting of parentheses and NOT.
const DEPTH_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Name(String),
    Index(usize),
}

pub type Path = Vec<Step>;

#[derive(Debug, Clone)]
pub enum Operand {
    Path(Path),
    Value(Value),
    Size(Path),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Comparator {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone)]
pub enum Condition {
    Compare(Operand, Comparator, Operand),
    Between(Operand, Operand, Operand),
    In(Operand, Vec<Operand>),
    Exists(Path),
    NotExists(Path),
    Type(Path, Operand),
    BeginsWith(Operand, Operand),
    Contains(Operand, Operand),
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
    Not(Box<Condition>),
}

#[derive(Debug, Clone)]
pub enum SetValue {
    Operand(Operand),
    Plus(Box<SetValue>, Box<SetValue>),
    Minus(Box<SetValue>, Box<SetValue>),
    IfNotExists(Path, Box<SetValue>),
    ListAppend(Box<SetValue>, Box<SetValue>),
}

#[derive(Debug, Clone, Default)]
pub struct Update {
    pub set: Vec<(Path, SetValue)>,
    pub remove: Vec<Path>,
    pub add: Vec<(Path, Value)>,
    pub delete: Vec<(Path, Value)>,
}

/// `ExpressionAttributeNames` and `ExpressionAttributeValues`, and which ones were used.
pub struct Placeholders<'a> {
    names: Option<&'a Map<String, Value>>,
    values: Option<&'a Map<String, Value>>,
    used_names: BTreeSet<String>,
    used_values: BTreeSet<String>,
}

impl<'a> Placeholders<'a> {
    pub fn new(request: &'a Map<String, Value>) -> Result<Placeholders<'a>, Error> {
        let names = request
            .get("ExpressionAttributeNames")
            .and_then(Value::as_object);
        let values = request
            .get("ExpressionAttributeValues")
            .and_then(Value::as_object);
        if names.is_some_and(Map::is_empty) {
            return Err(Error::validation(
                "ExpressionAttributeNames must not be empty",
            ));
        }
        if values.is_some_and(Map::is_empty) {
            return Err(Error::validation(
                "ExpressionAttributeValues must not be empty",
            ));
        }
        if let Some(values) = values {
            for (key, v) in values {
                value::validate(v, 1).map_err(|e| match e {
                    Error::Validation(m) => Error::validation(format!(
                        "ExpressionAttributeValues contains invalid value: {m} for key {key}"
                    )),
                    other => other,
                })?;
            }
        }
        Ok(Placeholders {
            names,
            values,
            used_names: BTreeSet::new(),
            used_values: BTreeSet::new(),
        })
    }

    fn name(&mut self, placeholder: &str) -> Result<String, Error> {
        let found = self
            .names
            .and_then(|n| n.get(placeholder))
            .and_then(Value::as_str);
        match found {
            Some(name) => {
                self.used_names.insert(placeholder.to_string());
                Ok(name.to_string())
            }
            None => Err(Error::validation(format!(
                "Value provided in ExpressionAttributeNames unused in expressions: An expression attribute name used in the document path is not defined; attribute name: {placeholder}"
            ))
            .rename_unused_name(placeholder)),
        }
    }

    fn value(&mut self, placeholder: &str) -> Result<Value, Error> {
        match self.values.and_then(|v| v.get(placeholder)) {
            Some(v) => {
                self.used_values.insert(placeholder.to_string());
                Ok(v.clone())
            }
            None => Err(Error::validation(format!(
                "An expression attribute value used in expression is not defined; attribute value: {placeholder}"
            ))),
        }
    }

    /// Refuses names and values no expression used, as DynamoDB does.
    pub fn check_all_used(&self) -> Result<(), Error> {
        if let Some(names) = self.names {
            let unused: Vec<&String> = names
                .keys()
                .filter(|k| !self.used_names.contains(*k))
                .collect();
            if !unused.is_empty() {
                return Err(Error::validation(format!(
                    "Value provided in ExpressionAttributeNames unused in expressions: keys: {{{}}}",
                    unused
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        if let Some(values) = self.values {
            let unused: Vec<&String> = values
                .keys()
                .filter(|k| !self.used_values.contains(*k))
                .collect();
            if !unused.is_empty() {
                return Err(Error::validation(format!(
                    "Value provided in ExpressionAttributeValues unused in expressions: keys: {{{}}}",
                    unused
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(())
    }
}

impl Error {
    fn rename_unused_name(self, placeholder: &str) -> Error {
        Error::validation(format!(
            "An expression attribute name used in the document path is not defined; attribute name: {placeholder}"
        ))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Name(String),
    Value(String),
    Int(usize),
    Sym(&'static str),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    if text.len() > EXPRESSION_BYTES_MAX {
        return Err("Expression size has exceeded the maximum allowed size".into());
    }
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if tokens.len() > TOKENS_MAX {
            return Err("Expression is too complex".into());
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let word = |start: usize| -> (String, usize) {
            let mut j = start;
            while chars
                .get(j)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
            {
                j += 1;
            }
            (
                chars
                    .get(start..j)
                    .map(|s| s.iter().collect())
                    .unwrap_or_default(),
                j,
            )
        };
        if c == '#' || c == ':' {
            let (w, j) = word(i + 1);
            if w.is_empty() {
                return Err(format!("Syntax error; token: \"{c}\", near: \"{c}\""));
            }
            tokens.push(if c == '#' {
                Token::Name(format!("#{w}"))
            } else {
                Token::Value(format!(":{w}"))
            });
            i = j;
        } else if c.is_ascii_digit() {
            let (w, j) = word(i);
            let n = w
                .parse()
                .map_err(|_| format!("Syntax error; token: \"{w}\""))?;
            tokens.push(Token::Int(n));
            i = j;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let (w, j) = word(i);
            tokens.push(Token::Ident(w));
            i = j;
        } else {
            let next = chars.get(i + 1).copied();
            let (sym, len) = match (c, next) {
                ('<', Some('>')) => ("<>", 2),
                ('<', Some('=')) => ("<=", 2),
                ('>', Some('=')) => (">=", 2),
                ('<', _) => ("<", 1),
                ('>', _) => (">", 1),
                ('=', _) => ("=", 1),
                ('(', _) => ("(", 1),
                (')', _) => (")", 1),
                (',', _) => (",", 1),
                ('.', _) => (".", 1),
                ('[', _) => ("[", 1),
                (']', _) => ("]", 1),
                ('+', _) => ("+", 1),
                ('-', _) => ("-", 1),
                _ => return Err(format!("Invalid token; token: \"{c}\"")),
            };
            tokens.push(Token::Sym(sym));
            i += len;
        }
    }
    Ok(tokens)
}

struct Parser<'p, 'a> {
    tokens: Vec<Token>,
    at: usize,
    placeholders: &'p mut Placeholders<'a>,
    kind: &'static str,
    depth: usize,
}

impl<'p, 'a> Parser<'p, 'a> {
    fn new(
        text: &str,
        kind: &'static str,
        placeholders: &'p mut Placeholders<'a>,
    ) -> Result<Self, Error> {
        if text.trim().is_empty() {
            return Err(Error::validation(format!(
                "Invalid {kind}: The expression can not be empty;"
            )));
        }
        let tokens =
            tokenize(text).map_err(|m| Error::validation(format!("Invalid {kind}: {m}")))?;
        Ok(Parser {
            tokens,
            at: 0,
            placeholders,
            kind,
            depth: 0,
        })
    }

    fn syntax(&self) -> Error {
        let near = match self.tokens.get(self.at) {
            Some(Token::Ident(w)) | Some(Token::Name(w)) | Some(Token::Value(w)) => w.clone(),
            Some(Token::Int(n)) => n.to_string(),
            Some(Token::Sym(s)) => (*s).to_string(),
            None => "<EOF>".to_string(),
        };
        Error::validation(format!(
            "Invalid {}: Syntax error; token: \"{near}\"",
            self.kind
        ))
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Ident(w)) if w.eq_ignore_ascii_case(word))
    }

    fn sym(&self, s: &str) -> bool {
        matches!(self.peek(), Some(Token::Sym(t)) if *t == s)
    }

    fn expect_sym(&mut self, s: &str) -> Result<(), Error> {
        if self.sym(s) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.syntax())
        }
    }

    fn done(&self) -> Result<(), Error> {
        if self.at == self.tokens.len() {
            Ok(())
        } else {
            Err(self.syntax())
        }
    }

    fn path(&mut self) -> Result<Path, Error> {
        let mut path = vec![self.element()?];
        loop {
            if self.sym(".") {
                self.at += 1;
                path.push(self.element()?);
            } else if self.sym("[") {
                self.at += 1;
                let Some(Token::Int(n)) = self.peek().cloned() else {
                    return Err(self.syntax());
                };
                self.at += 1;
                self.expect_sym("]")?;
                path.push(Step::Index(n));
            } else {
                return Ok(path);
            }
        }
    }

    fn element(&mut self) -> Result<Step, Error> {
        match self.peek().cloned() {
            Some(Token::Ident(w)) => {
                self.at += 1;
                Ok(Step::Name(w))
            }
            Some(Token::Name(n)) => {
                self.at += 1;
                Ok(Step::Name(self.placeholders.name(&n)?))
            }
            _ => Err(self.syntax()),
        }
    }

    fn operand(&mut self) -> Result<Operand, Error> {
        match self.peek().cloned() {
            Some(Token::Value(v)) => {
                self.at += 1;
                Ok(Operand::Value(self.placeholders.value(&v)?))
            }
            Some(Token::Ident(w))
                if w == "size" && self.tokens.get(self.at + 1) == Some(&Token::Sym("(")) =>
            {
                self.at += 2;
                let path = self.path()?;
                self.expect_sym(")")?;
                Ok(Operand::Size(path))
            }
            _ => Ok(Operand::Path(self.path()?)),
        }
    }

    fn condition(&mut self) -> Result<Condition, Error> {
        self.depth += 1;
        if self.depth > DEPTH_MAX {
            return Err(Error::validation(format!(
                "Invalid {}: The expression is too deeply nested",
                self.kind
            )));
        }
        let mut left = self.and()?;
        while self.keyword("OR") {
            self.at += 1;
            let right = self.and()?;
            left = Condition::Or(Box::new(left), Box::new(right));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn and(&mut self) -> Result<Condition, Error> {
        let mut left = self.not()?;
        while self.keyword("AND") {
            self.at += 1;
            let right = self.not()?;
            left = Condition::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Condition, Error> {
        if self.keyword("NOT") {
            self.at += 1;
            self.depth += 1;
            if self.depth > DEPTH_MAX {
                return Err(self.syntax());
            }
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Condition::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Condition, Error> {
        if self.sym("(") {
            self.at += 1;
            let inner = self.condition()?;
            self.expect_sym(")")?;
            return Ok(inner);
        }
        if let Some(Token::Ident(w)) = self.peek().cloned()
            && self.tokens.get(self.at + 1) == Some(&Token::Sym("("))
            && w != "size"
        {
            self.at += 2;
            let condition = match w.as_str() {
                "attribute_exists" => Condition::Exists(self.path()?),
                "attribute_not_exists" => Condition::NotExists(self.path()?),
                "attribute_type" => {
                    let path = self.path()?;
                    self.expect_sym(",")?;
                    Condition::Type(path, self.operand()?)
                }
                "begins_with" => {
                    let a = self.operand()?;
                    self.expect_sym(",")?;
                    Condition::BeginsWith(a, self.operand()?)
                }
                "contains" => {
                    let a = self.operand()?;
                    self.expect_sym(",")?;
                    Condition::Contains(a, self.operand()?)
                }
                other => {
                    return Err(Error::validation(format!(
                        "Invalid {}: Invalid function name; function: {other}",
                        self.kind
                    )));
                }
            };
            self.expect_sym(")")?;
            return Ok(condition);
        }
        let left = self.operand()?;
        if self.keyword("BETWEEN") {
            self.at += 1;
            let low = self.operand()?;
            if !self.keyword("AND") {
                return Err(self.syntax());
            }
            self.at += 1;
            let high = self.operand()?;
            return Ok(Condition::Between(left, low, high));
        }
        if self.keyword("IN") {
            self.at += 1;
            self.expect_sym("(")?;
            let mut list = vec![self.operand()?];
            while self.sym(",") {
                self.at += 1;
                list.push(self.operand()?);
                if list.len() > IN_OPERANDS_MAX {
                    return Err(Error::validation(format!(
                        "Invalid {}: The IN operator is provided with too many operands; number of operands: {}",
                        self.kind,
                        list.len()
                    )));
                }
            }
            self.expect_sym(")")?;
            return Ok(Condition::In(left, list));
        }
        let comparator = match self.peek() {
            Some(Token::Sym("=")) => Comparator::Eq,
            Some(Token::Sym("<>")) => Comparator::Ne,
            Some(Token::Sym("<")) => Comparator::Lt,
            Some(Token::Sym("<=")) => Comparator::Le,
            Some(Token::Sym(">")) => Comparator::Gt,
            Some(Token::Sym(">=")) => Comparator::Ge,
            _ => return Err(self.syntax()),
        };
        self.at += 1;
        let right = self.operand()?;
        Ok(Condition::Compare(left, comparator, right))
    }

    fn set_value(&mut self) -> Result<SetValue, Error> {
        let left = self.set_operand()?;
        if self.sym("+") {
            self.at += 1;
            return Ok(SetValue::Plus(
                Box::new(left),
                Box::new(self.set_operand()?),
            ));
        }
        if self.sym("-") {
            self.at += 1;
            return Ok(SetValue::Minus(
                Box::new(left),
                Box::new(self.set_operand()?),
            ));
        }
        Ok(left)
    }

    fn set_operand(&mut self) -> Result<SetValue, Error> {
        if let Some(Token::Ident(w)) = self.peek().cloned()
            && self.tokens.get(self.at + 1) == Some(&Token::Sym("("))
        {
            self.at += 2;
            let value = match w.as_str() {
                "if_not_exists" => {
                    let path = self.path()?;
                    self.expect_sym(",")?;
                    SetValue::IfNotExists(path, Box::new(self.set_value()?))
                }
                "list_append" => {
                    let a = self.set_value()?;
                    self.expect_sym(",")?;
                    SetValue::ListAppend(Box::new(a), Box::new(self.set_value()?))
                }
                other => {
                    return Err(Error::validation(format!(
                        "Invalid UpdateExpression: Invalid function name; function: {other}"
                    )));
                }
            };
            self.expect_sym(")")?;
            return Ok(value);
        }
        Ok(SetValue::Operand(self.operand()?))
    }

    fn update(&mut self) -> Result<Update, Error> {
        let mut update = Update::default();
        let mut seen = BTreeSet::new();
        while self.peek().is_some() {
            let Some(Token::Ident(clause)) = self.peek().cloned() else {
                return Err(self.syntax());
            };
            let clause = clause.to_ascii_uppercase();
            if !seen.insert(clause.clone()) {
                return Err(Error::validation(format!(
                    "Invalid UpdateExpression: The \"{clause}\" section can only be used once in an update expression;"
                )));
            }
            self.at += 1;
            loop {
                match clause.as_str() {
                    "SET" => {
                        let path = self.path()?;
                        self.expect_sym("=")?;
                        update.set.push((path, self.set_value()?));
                    }
                    "REMOVE" => update.remove.push(self.path()?),
                    "ADD" | "DELETE" => {
                        let path = self.path()?;
                        let Some(Token::Value(v)) = self.peek().cloned() else {
                            return Err(self.syntax());
                        };
                        self.at += 1;
                        let v = self.placeholders.value(&v)?;
                        if clause == "ADD" {
                            update.add.push((path, v))
                        } else {
                            update.delete.push((path, v))
                        }
                    }
                    _ => {
                        self.at -= 1;
                        return Err(self.syntax());
                    }
                }
                if self.sym(",") {
                    self.at += 1;
                } else {
                    break;
                }
            }
        }
        check_overlaps(&update)?;
        Ok(update)
    }
}

fn check_overlaps(update: &Update) -> Result<(), Error> {
    let mut paths: Vec<&Path> = update.set.iter().map(|(p, _)| p).collect();
    paths.extend(update.remove.iter());
    paths.extend(update.add.iter().map(|(p, _)| p));
    paths.extend(update.delete.iter().map(|(p, _)| p));
    for (i, a) in paths.iter().enumerate() {
        for b in paths.iter().skip(i + 1) {
            let n = a.len().min(b.len());
            if a.get(..n) == b.get(..n) {
                return Err(Error::validation(format!(
                    "Invalid UpdateExpression: Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [{}], path two: [{}]",
                    render_path(a),
                    render_path(b)
                )));
            }
        }
    }
    Ok(())
}

fn render_path(path: &Path) -> String {
    path.iter()
        .map(|s| match s {
            Step::Name(n) => n.clone(),
            Step::Index(i) => format!("[{i}]"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn parse_condition(
    text: &str,
    kind: &'static str,
    placeholders: &mut Placeholders,
) -> Result<Condition, Error> {
    let mut parser = Parser::new(text, kind, placeholders)?;
    let condition = parser.condition()?;
    parser.done()?;
    Ok(condition)
}

pub fn parse_update(text: &str, placeholders: &mut Placeholders) -> Result<Update, Error> {
    let mut parser = Parser::new(text, "UpdateExpression", placeholders)?;
    let update = parser.update()?;
    parser.done()?;
    Ok(update)
}

pub fn parse_projection(text: &str, placeholders: &mut Placeholders) -> Result<Vec<Path>, Error> {
    let mut parser = Parser::new(text, "ProjectionExpression", placeholders)?;
    let mut paths = vec![parser.path()?];
    while parser.sym(",") {
        parser.at += 1;
        paths.push(parser.path()?);
    }
    parser.done()?;
    Ok(paths)
}

// ---- evaluation ----

pub fn get<'v>(item: &'v Item, path: &Path) -> Option<&'v Value> {
    let mut steps = path.iter();
    let Some(Step::Name(first)) = steps.next() else {
        return None;
    };
    let mut current = item.get(first)?;
    for step in steps {
        current = match step {
            Step::Name(n) => current.get("M")?.get(n)?,
            Step::Index(i) => current.get("L")?.get(*i)?,
        };
    }
    Some(current)
}

fn operand_value(item: &Item, operand: &Operand) -> Option<Value> {
    match operand {
        Operand::Value(v) => Some(v.clone()),
        Operand::Path(p) => get(item, p).cloned(),
        Operand::Size(p) => {
            let v = get(item, p)?;
            let kind = value::type_of(v)?;
            let content = v.get(kind)?;
            let n = match kind {
                "S" => content.as_str()?.chars().count(),
                "B" => value::decode_b64(content.as_str()?)?.len(),
                "SS" | "NS" | "BS" | "L" => content.as_array()?.len(),
                "M" => content.as_object()?.len(),
                _ => return None,
            };
            Some(json!({ "N": n.to_string() }))
        }
    }
}

pub fn evaluate(item: &Item, condition: &Condition) -> bool {
    match condition {
        Condition::And(a, b) => evaluate(item, a) && evaluate(item, b),
        Condition::Or(a, b) => evaluate(item, a) || evaluate(item, b),
        Condition::Not(a) => !evaluate(item, a),
        Condition::Exists(p) => get(item, p).is_some(),
        Condition::NotExists(p) => get(item, p).is_none(),
        Condition::Type(p, t) => {
            let (Some(v), Some(t)) = (get(item, p), operand_value(item, t)) else {
                return false;
            };
            value::as_str(&t, "S") == value::type_of(v)
        }
        Condition::Compare(a, op, b) => {
            let (Some(x), Some(y)) = (operand_value(item, a), operand_value(item, b)) else {
                return false;
            };
            match op {
                Comparator::Eq => value::equal(&x, &y),
                Comparator::Ne => !value::equal(&x, &y),
                Comparator::Lt => value::compare(&x, &y) == Some(Ordering::Less),
                Comparator::Le => matches!(
                    value::compare(&x, &y),
                    Some(Ordering::Less | Ordering::Equal)
                ),
                Comparator::Gt => value::compare(&x, &y) == Some(Ordering::Greater),
                Comparator::Ge => matches!(
                    value::compare(&x, &y),
                    Some(Ordering::Greater | Ordering::Equal)
                ),
            }
        }
        Condition::Between(a, low, high) => {
            let (Some(x), Some(l), Some(h)) = (
                operand_value(item, a),
                operand_value(item, low),
                operand_value(item, high),
            ) else {
                return false;
            };
            matches!(
                value::compare(&x, &l),
                Some(Ordering::Greater | Ordering::Equal)
            ) && matches!(
                value::compare(&x, &h),
                Some(Ordering::Less | Ordering::Equal)
            )
        }
        Condition::In(a, list) => {
            let Some(x) = operand_value(item, a) else {
                return false;
            };
            list.iter()
                .any(|o| operand_value(item, o).is_some_and(|y| value::equal(&x, &y)))
        }
        Condition::BeginsWith(a, b) => {
            let (Some(x), Some(y)) = (operand_value(item, a), operand_value(item, b)) else {
                return false;
            };
            match (value::as_str(&x, "S"), value::as_str(&y, "S")) {
                (Some(s), Some(prefix)) => s.starts_with(prefix),
                _ => match (
                    value::as_str(&x, "B").and_then(value::decode_b64),
                    value::as_str(&y, "B").and_then(value::decode_b64),
                ) {
                    (Some(s), Some(prefix)) => s.starts_with(&prefix),
                    _ => false,
                },
            }
        }
        Condition::Contains(a, b) => {
            let (Some(x), Some(y)) = (operand_value(item, a), operand_value(item, b)) else {
                return false;
            };
            contains(&x, &y)
        }
    }
}

fn contains(haystack: &Value, needle: &Value) -> bool {
    let Some(kind) = value::type_of(haystack) else {
        return false;
    };
    let Some(content) = haystack.get(kind) else {
        return false;
    };
    match kind {
        "S" => match (content.as_str(), value::as_str(needle, "S")) {
            (Some(s), Some(n)) => s.contains(n),
            _ => false,
        },
        "SS" | "NS" | "BS" => {
            let element_kind = &kind[..1];
            content.as_array().is_some_and(|list| {
                list.iter()
                    .any(|e| value::equal(&json!({ element_kind: e.clone() }), needle))
            })
        }
        "L" => content
            .as_array()
            .is_some_and(|list| list.iter().any(|e| value::equal(e, needle))),
        _ => false,
    }
}

/// Applies an update expression to `item` (a copy of the stored item, or a new one holding
/// only the key). Returns the top-level attribute names it touched.
pub fn apply_update(item: &mut Item, update: &Update) -> Result<BTreeSet<String>, Error> {
    let before = item.clone();
    let mut touched = BTreeSet::new();
    for (path, set_value) in &update.set {
        let v = resolve(&before, set_value)?;
        put(item, path, v)?;
        touch(&mut touched, path);
    }
    for path in &update.remove {
        remove(item, path);
        touch(&mut touched, path);
    }
    for (path, v) in &update.add {
        let current = get(item, path).cloned();
        let new = match (current, value::type_of(v)) {
            (None, Some(_)) => v.clone(),
            (Some(cur), Some("N")) => match (value::as_str(&cur, "N"), value::as_str(v, "N")) {
                (Some(a), Some(b)) => match (value::parse_number(a), value::parse_number(b)) {
                    (Some(a), Some(b)) => value::number_value(a.plus(b)),
                    _ => return Err(type_mismatch("ADD")),
                },
                _ => return Err(type_mismatch("ADD")),
            },
            (Some(cur), Some(kind @ ("SS" | "NS" | "BS"))) => {
                if value::type_of(&cur) != Some(kind) {
                    return Err(type_mismatch("ADD"));
                }
                let mut list = cur
                    .get(kind)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for e in v.get(kind).and_then(Value::as_array).into_iter().flatten() {
                    if !list.contains(e) {
                        list.push(e.clone());
                    }
                }
                json!({ kind: list })
            }
            _ => {
                return Err(Error::validation(
                    "Invalid UpdateExpression: Incorrect operand type for operator or function; operator: ADD, operand type: not a number or set",
                ));
            }
        };
        put(item, path, new)?;
        touch(&mut touched, path);
    }
    for (path, v) in &update.delete {
        let Some(kind @ ("SS" | "NS" | "BS")) = value::type_of(v) else {
            return Err(Error::validation(
                "Invalid UpdateExpression: Incorrect operand type for operator or function; operator: DELETE, operand type: not a set",
            ));
        };
        if let Some(cur) = get(item, path).cloned() {
            if value::type_of(&cur) != Some(kind) {
                return Err(type_mismatch("DELETE"));
            }
            let remove_list = v
                .get(kind)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let list: Vec<Value> = cur
                .get(kind)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|e| !remove_list.contains(e))
                .cloned()
                .collect();
            if list.is_empty() {
                remove(item, path);
            } else {
                put(item, path, json!({ kind: list }))?;
            }
        }
        touch(&mut touched, path);
    }
    Ok(touched)
}

fn touch(touched: &mut BTreeSet<String>, path: &Path) {
    if let Some(Step::Name(n)) = path.first() {
        touched.insert(n.clone());
    }
}

fn type_mismatch(op: &str) -> Error {
    Error::validation(format!(
        "An operand in the update expression has an incorrect data type; operator: {op}"
    ))
}

fn resolve(item: &Item, set_value: &SetValue) -> Result<Value, Error> {
    match set_value {
        SetValue::Operand(o) => operand_value(item, o).ok_or_else(|| {
            Error::validation(
                "The provided expression refers to an attribute that does not exist in the item",
            )
        }),
        SetValue::IfNotExists(path, default) => match get(item, path) {
            Some(v) => Ok(v.clone()),
            None => resolve(item, default),
        },
        SetValue::Plus(a, b) | SetValue::Minus(a, b) => {
            let x = resolve(item, a)?;
            let y = resolve(item, b)?;
            let (Some(x), Some(y)) = (
                value::as_str(&x, "N").and_then(value::parse_number),
                value::as_str(&y, "N").and_then(value::parse_number),
            ) else {
                let op = if matches!(set_value, SetValue::Plus(..)) {
                    "+"
                } else {
                    "-"
                };
                return Err(Error::validation(format!(
                    "An operand in the update expression has an incorrect data type; operator: {op}"
                )));
            };
            let y = if matches!(set_value, SetValue::Minus(..)) {
                y.negate()
            } else {
                y
            };
            Ok(value::number_value(x.plus(y)))
        }
        SetValue::ListAppend(a, b) => {
            let x = resolve(item, a)?;
            let y = resolve(item, b)?;
            let (Some(x), Some(y)) = (
                x.get("L").and_then(Value::as_array),
                y.get("L").and_then(Value::as_array),
            ) else {
                return Err(Error::validation(
                    "Invalid UpdateExpression: Incorrect operand type for operator or function; operator or function: list_append, operand type: not a list",
                ));
            };
            let mut list = x.clone();
            list.extend(y.iter().cloned());
            Ok(json!({ "L": list }))
        }
    }
}

fn put(item: &mut Item, path: &Path, v: Value) -> Result<(), Error> {
    let invalid = || {
        Error::validation(
            "The document path provided in the update expression is invalid for update",
        )
    };
    let Some((last, parents)) = path.split_last() else {
        return Err(invalid());
    };
    let Some(Step::Name(first)) = path.first() else {
        return Err(invalid());
    };
    if parents.is_empty() {
        item.insert(first.clone(), v);
        return Ok(());
    }
    let mut current = item.get_mut(first).ok_or_else(invalid)?;
    for step in parents.iter().skip(1) {
        current = match step {
            Step::Name(n) => current
                .get_mut("M")
                .and_then(|m| m.get_mut(n))
                .ok_or_else(invalid)?,
            Step::Index(i) => current
                .get_mut("L")
                .and_then(|l| l.get_mut(*i))
                .ok_or_else(invalid)?,
        };
    }
    match last {
        Step::Name(n) => {
            let map = current
                .get_mut("M")
                .and_then(Value::as_object_mut)
                .ok_or_else(invalid)?;
            map.insert(n.clone(), v);
        }
        Step::Index(i) => {
            let list = current
                .get_mut("L")
                .and_then(Value::as_array_mut)
                .ok_or_else(invalid)?;
            if *i < list.len() {
                if let Some(slot) = list.get_mut(*i) {
                    *slot = v;
                }
            } else {
                list.push(v);
            }
        }
    }
    Ok(())
}

fn remove(item: &mut Item, path: &Path) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if parents.is_empty() {
        if let Step::Name(n) = last {
            item.remove(n);
        }
        return;
    }
    let Some(Step::Name(first)) = path.first() else {
        return;
    };
    let Some(mut current) = item.get_mut(first) else {
        return;
    };
    for step in parents.iter().skip(1) {
        let next = match step {
            Step::Name(n) => current.get_mut("M").and_then(|m| m.get_mut(n)),
            Step::Index(i) => current.get_mut("L").and_then(|l| l.get_mut(*i)),
        };
        let Some(next) = next else {
            return;
        };
        current = next;
    }
    match last {
        Step::Name(n) => {
            if let Some(map) = current.get_mut("M").and_then(Value::as_object_mut) {
                map.remove(n);
            }
        }
        Step::Index(i) => {
            if let Some(list) = current.get_mut("L").and_then(Value::as_array_mut)
                && *i < list.len()
            {
                list.remove(*i);
            }
        }
    }
}

/// The attributes of `item` the projection names (top-level and nested map members; a list
/// element keeps its list position compacted, as DynamoDB does).
pub fn project(item: &Item, paths: &[Path]) -> Item {
    let mut out = Item::new();
    for path in paths {
        let Some(v) = get(item, path) else {
            continue;
        };
        let Some(Step::Name(first)) = path.first() else {
            continue;
        };
        if path.len() == 1 {
            out.insert(first.clone(), v.clone());
            continue;
        }
        // Build the nested container chain.
        let mut wrapped = v.clone();
        for step in path.iter().skip(1).rev() {
            wrapped = match step {
                Step::Name(n) => json!({ "M": { n.clone(): wrapped } }),
                Step::Index(_) => json!({ "L": [wrapped] }),
            };
        }
        match out.get_mut(first) {
            Some(existing) => merge(existing, wrapped),
            None => {
                out.insert(first.clone(), wrapped);
            }
        }
    }
    out
}

fn merge(into: &mut Value, from: Value) {
    match (
        into.get_mut("M").and_then(Value::as_object_mut),
        from.get("M").and_then(Value::as_object),
    ) {
        (Some(a), Some(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(existing) => merge(existing, v.clone()),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => {
            if let (Some(a), Some(b)) = (
                into.get_mut("L").and_then(Value::as_array_mut),
                from.get("L").and_then(Value::as_array),
            ) {
                a.extend(b.iter().cloned());
            }
        }
    }
}

// ---- the legacy parameters ----

/// `Expected` (and `ScanFilter`, `QueryFilter`, `KeyConditions`) as one condition.
pub fn legacy_conditions(
    map: &Map<String, Value>,
    conditional_or: bool,
    expected: bool,
) -> Result<Option<Condition>, Error> {
    let mut all: Option<Condition> = None;
    for (name, spec) in map {
        let path = vec![Step::Name(name.clone())];
        let attr = Operand::Path(path.clone());
        let values: Vec<Value> = spec
            .get("AttributeValueList")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for v in &values {
            value::validate(v, 1)?;
        }
        let operator = spec.get("ComparisonOperator").and_then(Value::as_str);
        let one = |i: usize| -> Result<Operand, Error> {
            values.get(i).cloned().map(Operand::Value).ok_or_else(|| {
                Error::validation(format!(
                    "One or more parameter values were invalid: Invalid number of argument(s) for the {} ComparisonOperator",
                    operator.unwrap_or("")
                ))
            })
        };
        let condition = match operator {
            None if expected => {
                let exists = spec.get("Exists").and_then(Value::as_bool);
                match (exists, spec.get("Value")) {
                    (Some(false), None) => Condition::NotExists(path),
                    (Some(false), Some(_)) => {
                        return Err(Error::validation(
                            "One or more parameter values were invalid: Value cannot be used when Exists is false",
                        ));
                    }
                    (_, Some(v)) => {
                        value::validate(v, 1)?;
                        Condition::Compare(attr, Comparator::Eq, Operand::Value(v.clone()))
                    }
                    (_, None) => {
                        return Err(Error::validation(
                            "One or more parameter values were invalid: Value must be provided when Exists is true",
                        ));
                    }
                }
            }
            None => return Err(Error::validation("ComparisonOperator is required")),
            Some(op) => match op {
                "EQ" => Condition::Compare(attr, Comparator::Eq, one(0)?),
                "NE" => Condition::Compare(attr, Comparator::Ne, one(0)?),
                "LT" => Condition::Compare(attr, Comparator::Lt, one(0)?),
                "LE" => Condition::Compare(attr, Comparator::Le, one(0)?),
                "GT" => Condition::Compare(attr, Comparator::Gt, one(0)?),
                "GE" => Condition::Compare(attr, Comparator::Ge, one(0)?),
                "NOT_NULL" => Condition::Exists(path),
                "NULL" => Condition::NotExists(path),
                "CONTAINS" => Condition::Contains(attr, one(0)?),
                "NOT_CONTAINS" => Condition::Not(Box::new(Condition::Contains(attr, one(0)?))),
                "BEGINS_WITH" => Condition::BeginsWith(attr, one(0)?),
                "IN" => Condition::In(attr, values.iter().cloned().map(Operand::Value).collect()),
                "BETWEEN" => Condition::Between(attr, one(0)?, one(1)?),
                other => {
                    return Err(Error::validation(format!(
                        "1 validation error detected: Value '{other}' at 'comparisonOperator' failed to satisfy constraint: Member must satisfy enum value set: [IN, NULL, BETWEEN, LT, NOT_CONTAINS, EQ, GT, NOT_NULL, NE, LE, BEGINS_WITH, GE, CONTAINS]"
                    )));
                }
            },
        };
        all = Some(match all {
            None => condition,
            Some(prev) if conditional_or => Condition::Or(Box::new(prev), Box::new(condition)),
            Some(prev) => Condition::And(Box::new(prev), Box::new(condition)),
        });
    }
    Ok(all)
}

/// `AttributeUpdates` as an update.
pub fn legacy_update(map: &Map<String, Value>) -> Result<Update, Error> {
    let mut update = Update::default();
    for (name, spec) in map {
        let path = vec![Step::Name(name.clone())];
        let v = spec.get("Value");
        if let Some(v) = v {
            value::validate(v, 1)?;
        }
        match (
            spec.get("Action").and_then(Value::as_str).unwrap_or("PUT"),
            v,
        ) {
            ("PUT", Some(v)) => update
                .set
                .push((path, SetValue::Operand(Operand::Value(v.clone())))),
            ("DELETE", None) => update.remove.push(path),
            ("DELETE", Some(v)) => update.delete.push((path, v.clone())),
            ("ADD", Some(v)) => update.add.push((path, v.clone())),
            (action, None) => {
                return Err(Error::validation(format!(
                    "One or more parameter values were invalid: Only DELETE action is allowed when no attribute value is specified; action: {action}"
                )));
            }
            (other, _) => {
                return Err(Error::validation(format!("Unknown Action {other}")));
            }
        }
    }
    Ok(update)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(v: Value) -> Item {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn conditions_and_updates() {
        let request = item(json!({
            "ExpressionAttributeNames": {"#c": "count", "#o": "owner"},
            "ExpressionAttributeValues": {":one": {"N": "1"}, ":w": {"S": "w1"}, ":p": {"S": "w"}},
        }));
        let mut ph = Placeholders::new(&request).unwrap_or_else(|_| panic!("placeholders"));
        let cond = parse_condition(
            "attribute_not_exists(#o) OR (#o = :w AND begins_with(#o, :p)) AND NOT #c > :one",
            "ConditionExpression",
            &mut ph,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let mut it = item(json!({"id": {"S": "a"}, "owner": {"S": "w1"}, "count": {"N": "1"}}));
        assert!(evaluate(&it, &cond));
        let update = parse_update(
            "SET #c = #c + :one, #o = if_not_exists(missing, :w) REMOVE gone",
            &mut ph,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        apply_update(&mut it, &update).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(it.get("count"), Some(&json!({"N": "2"})));
        assert!(!evaluate(&it, &cond));
        assert!(ph.check_all_used().is_ok());
    }

    #[test]
    fn syntax_errors_name_the_token() {
        let request = item(json!({}));
        let mut ph = Placeholders::new(&request).unwrap_or_else(|_| panic!("placeholders"));
        let error = parse_condition("a = = b", "ConditionExpression", &mut ph).err();
        assert!(
            matches!(error, Some(Error::Validation(m)) if m.contains("Syntax error; token: \"=\""))
        );
    }
}
