//! Constraint validation of a type-checked request, producing AWS's `ValidationException`
//! message (`2 validation errors detected: Value '' at 'streamName' failed to satisfy
//! constraint: ...; ...`).
//!
//! Order, as AWS and kinesalite report: structure members by name; for each member `required`,
//! then (strings) enum, pattern, minimum and maximum length, (blobs, lists, maps) minimum and
//! maximum length, (numbers) minimum and maximum value, then the contents. Elements of a list of
//! structures are checked one by one at `records.1.member.partitionKey` (1-based); a list of
//! scalars gets one error for the whole list (`Member must satisfy constraint: [...]`), a map
//! one for its keys and one for its values. At most [`ERRORS_MAX`] errors are reported. Paths
//! are only rendered when an error is found, so the common valid request allocates nothing
//! here. Deliberately not here: type errors ([`crate::typecheck`]) and semantic checks that need
//! state (those are the service's).

use crate::WireError;
use crate::shape::{
    LengthRange, Member, Shape, ShapeKind, StringShape, StructureShape, bound_text,
};
use crate::value::Value;
use std::fmt::{self, Write as _};

/// AWS stops after this many violations.
pub const ERRORS_MAX: usize = 10;

/// Validate a type-checked request against its input structure shape.
pub fn validate_request(value: &Value, input: &'static Shape) -> Result<(), WireError> {
    let mut errors = Errors {
        messages: Vec::new(),
    };
    match (value, &input.kind) {
        (Value::Map(entries), ShapeKind::Structure(structure)) => {
            structure_members(&Path::Root, entries, structure, &mut errors)
        }
        _ => return Err(WireError::serialization(None)),
    }
    if errors.messages.is_empty() {
        return Ok(());
    }
    let n = errors.messages.len();
    let plural = if n == 1 { "" } else { "s" };
    Err(WireError::validation(format!(
        "{n} validation error{plural} detected: {}",
        errors.messages.join("; ")
    )))
}

/// A location in the request, rendered lazily.
enum Path<'a> {
    Root,
    Member(&'a Path<'a>, &'static str),
    Index(&'a Path<'a>, usize),
    Key(&'a Path<'a>, &'a str),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Member(parent, name) => {
                if !matches!(parent, Path::Root) {
                    write!(f, "{parent}.")?;
                }
                f.write_str(name)
            }
            // `records.1.member`: the element itself is called `member`.
            Path::Index(parent, index) => write!(f, "{parent}.{index}.member"),
            Path::Key(parent, key) => write!(f, "{parent}.{key}.member"),
        }
    }
}

struct Errors {
    messages: Vec<String>,
}

impl Errors {
    fn full(&self) -> bool {
        self.messages.len() >= ERRORS_MAX
    }

    /// Record a violation by `value` (rendered per `shape`) at `path`.
    fn push(&mut self, path: &Path<'_>, value: Option<(&Value, &Shape)>, constraint: &str) {
        if self.full() {
            return;
        }
        let mut message = String::from("Value ");
        match value {
            None | Some((Value::Null, _)) => message.push_str("null"),
            Some((value, shape)) => {
                message.push('\'');
                render(&mut message, value, shape);
                message.push('\'');
            }
        }
        let _ = write!(
            message,
            " at '{path}' failed to satisfy constraint: {constraint}"
        );
        self.messages.push(message);
    }
}

/// How AWS prints a value in a validation message (Java `toString` of the unmarshalled value).
fn render(out: &mut String, value: &Value, shape: &Shape) {
    match (value, &shape.kind) {
        (Value::Map(_), ShapeKind::Structure(structure)) => {
            // An object without a useful toString: class name and a hash AWS happens to print.
            out.push_str(structure.java_class);
            out.push_str("@2");
        }
        (Value::List(items), ShapeKind::List(list)) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render(out, item, list.member);
            }
            out.push(']');
        }
        (Value::Map(entries), ShapeKind::Map(map)) => {
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(key);
                out.push('=');
                render(out, item, map.value);
            }
            out.push('}');
        }
        (Value::Float(x), ShapeKind::Integer(_) | ShapeKind::Long(_)) => {
            out.push_str(&bound_text(x.floor()))
        }
        _ => {
            let _ = write!(out, "{value}");
        }
    }
}

fn structure_members(
    path: &Path<'_>,
    entries: &[(String, Value)],
    shape: &StructureShape,
    errors: &mut Errors,
) {
    // Type checking left the entries in member order, so one forward scan finds them all.
    let mut rest = entries;
    for member in shape.members {
        if errors.full() {
            return;
        }
        let found = match rest.iter().position(|(key, _)| key == member.name) {
            Some(i) => {
                let value = rest.get(i).map(|(_, v)| v);
                rest = rest.get(i + 1..).unwrap_or_default();
                value
            }
            None => entries
                .iter()
                .find(|(key, _)| key == member.name)
                .map(|(_, v)| v),
        };
        check_member(path, member, found, errors);
    }
}

fn check_member(parent: &Path<'_>, member: &Member, value: Option<&Value>, errors: &mut Errors) {
    let path = Path::Member(parent, member.path_name);
    match value {
        None | Some(Value::Null) => {
            if member.required {
                errors.push(&path, None, "Member must not be null");
            }
        }
        Some(value) => check_value(&path, value, member.shape, errors),
    }
}

/// Check `value` (present, not null) against `shape`, at `path`.
fn check_value(path: &Path<'_>, value: &Value, shape: &'static Shape, errors: &mut Errors) {
    for constraint in own_violations(value, shape) {
        errors.push(path, Some((value, shape)), &constraint);
    }
    match (&shape.kind, value) {
        (ShapeKind::Structure(structure), Value::Map(entries)) => {
            structure_members(path, entries, structure, errors)
        }
        (ShapeKind::List(list), Value::List(items)) => {
            if list.member.is_scalar() {
                if items
                    .iter()
                    .any(|item| !item.is_null() && !own_violations(item, list.member).is_empty())
                {
                    let phrases = list.member.constraint_phrases().join(", ");
                    errors.push(
                        path,
                        Some((value, shape)),
                        &format!("Member must satisfy constraint: [{phrases}]"),
                    );
                }
                for (i, item) in items.iter().enumerate() {
                    if item.is_null() {
                        errors.push(&Path::Index(path, i + 1), None, "Member must not be null");
                    }
                }
            } else {
                for (i, item) in items.iter().enumerate() {
                    if errors.full() {
                        return;
                    }
                    let item_path = Path::Index(path, i + 1);
                    if item.is_null() {
                        errors.push(&item_path, None, "Member must not be null");
                    } else {
                        check_value(&item_path, item, list.member, errors);
                    }
                }
            }
        }
        (ShapeKind::Map(map), Value::Map(entries)) => {
            let bad_key = entries
                .iter()
                .any(|(key, _)| !own_violations(&Value::String(key.clone()), map.key).is_empty());
            if bad_key {
                let phrases = map.key.constraint_phrases().join(", ");
                errors.push(
                    path,
                    Some((value, shape)),
                    &format!("Map keys must satisfy constraint: [{phrases}]"),
                );
            }
            if map.value.is_scalar() {
                if entries
                    .iter()
                    .any(|(_, item)| !item.is_null() && !own_violations(item, map.value).is_empty())
                {
                    let phrases = map.value.constraint_phrases().join(", ");
                    errors.push(
                        path,
                        Some((value, shape)),
                        &format!("Map value must satisfy constraint: [{phrases}]"),
                    );
                }
                for (key, item) in entries {
                    if item.is_null() {
                        errors.push(&Path::Key(path, key), None, "Member must not be null");
                    }
                }
            } else {
                for (key, item) in entries {
                    if errors.full() {
                        return;
                    }
                    let item_path = Path::Key(path, key);
                    if item.is_null() {
                        errors.push(&item_path, None, "Member must not be null");
                    } else {
                        check_value(&item_path, item, map.value, errors);
                    }
                }
            }
        }
        _ => {}
    }
}

/// The constraints of `shape` itself (not of its contents) that `value` violates, in AWS order.
fn own_violations(value: &Value, shape: &Shape) -> Vec<String> {
    let mut violations = Vec::new();
    match (&shape.kind, value) {
        (ShapeKind::String(s), Value::String(text)) => string_violations(text, s, &mut violations),
        (ShapeKind::Blob(range), Value::Blob(bytes)) => {
            length_violations(bytes.len(), range, &mut violations)
        }
        (ShapeKind::List(list), Value::List(items)) => {
            length_violations(items.len(), &list.length, &mut violations)
        }
        (ShapeKind::Map(map), Value::Map(entries)) => {
            length_violations(entries.len(), &map.length, &mut violations)
        }
        (
            ShapeKind::Integer(n) | ShapeKind::Long(n) | ShapeKind::Float(n) | ShapeKind::Double(n),
            value,
        ) => {
            let x = match value {
                Value::Int(i) => *i as f64,
                Value::Float(x) => *x,
                _ => return violations,
            };
            if let Some(min) = n.min.filter(|min| x < *min) {
                violations.push(format!(
                    "Member must have value greater than or equal to {}",
                    bound_text(min)
                ));
            }
            if let Some(max) = n.max.filter(|max| x > *max) {
                violations.push(format!(
                    "Member must have value less than or equal to {}",
                    bound_text(max)
                ));
            }
        }
        _ => {}
    }
    violations
}

fn string_violations(text: &str, s: &StringShape, violations: &mut Vec<String>) {
    if !s.enum_values.is_empty() && !s.enum_values.contains(&text) {
        violations.push(s.enum_message.to_owned());
    }
    if let Some(pattern) = s.pattern.filter(|pattern| !pattern.is_match(text)) {
        violations.push(format!(
            "Member must satisfy regular expression pattern: {}",
            pattern.source
        ));
    }
    if s.length.min.is_some() || s.length.max.is_some() {
        let chars = if text.is_ascii() {
            text.len()
        } else {
            text.chars().count()
        };
        length_violations(chars, &s.length, violations);
    }
}

/// Whether a string satisfies the constraints of a string `shape` (enum, pattern, length):
/// the checks [`validate_request`] makes, for decoders that do not build a tree
/// (`kinesis::fast`). Allocates nothing when it does. False for a shape of another kind.
pub(crate) fn string_satisfies(text: &str, shape: &Shape) -> bool {
    let ShapeKind::String(s) = &shape.kind else {
        return false;
    };
    let mut violations = Vec::new();
    string_violations(text, s, &mut violations);
    violations.is_empty()
}

/// Whether `len` (bytes of a blob, entries of a list or map) satisfies the length range of
/// `shape`, as [`validate_request`] checks it. False for a shape without one.
pub(crate) fn length_satisfies(len: usize, shape: &Shape) -> bool {
    let range = match &shape.kind {
        ShapeKind::Blob(range) => range,
        ShapeKind::List(list) => &list.length,
        ShapeKind::Map(map) => &map.length,
        _ => return false,
    };
    let mut violations = Vec::new();
    length_violations(len, range, &mut violations);
    violations.is_empty()
}

fn length_violations(len: usize, range: &LengthRange, violations: &mut Vec<String>) {
    let len = len as u64;
    if let Some(min) = range.min.filter(|min| len < *min) {
        violations.push(format!(
            "Member must have length greater than or equal to {min}"
        ));
    }
    if let Some(max) = range.max.filter(|max| len > *max) {
        violations.push(format!(
            "Member must have length less than or equal to {max}"
        ));
    }
}
