//! Static descriptors of a service model's shapes, generated per service, that drive type
//! checking ([`crate::typecheck`]) and constraint validation ([`crate::validate`]).
//!
//! A [`Shape`] mirrors one shape of the official model with its constraints (`required`,
//! `enum`, `pattern`, `min`/`max` length or value). Structure members are sorted by name, the
//! order validation errors are reported in. Patterns are compiled once, on first use.
//! Deliberately not here: typed structs (generated next to the shapes) and anything about HTTP.

use regex::Regex;
use std::sync::OnceLock;

/// One shape of a service model.
#[derive(Debug)]
pub struct Shape {
    /// The shape's name in the model.
    pub name: &'static str,
    pub kind: ShapeKind,
}

#[derive(Debug)]
pub enum ShapeKind {
    Structure(StructureShape),
    List(ListShape),
    Map(MapShape),
    String(StringShape),
    Integer(NumberShape),
    Long(NumberShape),
    Float(NumberShape),
    Double(NumberShape),
    Boolean,
    Blob(LengthRange),
    Timestamp,
}

#[derive(Debug)]
pub struct StructureShape {
    /// Members sorted by name; event-stream members are left out.
    pub members: &'static [Member],
    /// The Java class AWS names when it prints such a value inside a list
    /// (`com.amazonaws.kinesis.v20131202.PutRecordsRequestEntry`).
    pub java_class: &'static str,
}

#[derive(Debug)]
pub struct Member {
    /// The member name on the wire (`StreamName`).
    pub name: &'static str,
    /// The name in validation paths: lower-first (`streamName`).
    pub path_name: &'static str,
    pub shape: &'static Shape,
    pub required: bool,
}

#[derive(Debug)]
pub struct ListShape {
    pub member: &'static Shape,
    pub length: LengthRange,
}

#[derive(Debug)]
pub struct MapShape {
    pub key: &'static Shape,
    pub value: &'static Shape,
    pub length: LengthRange,
}

#[derive(Debug)]
pub struct StringShape {
    /// Length in characters (Unicode scalar values).
    pub length: LengthRange,
    pub pattern: Option<&'static Pattern>,
    /// The allowed values; empty when the string is not an enum.
    pub enum_values: &'static [&'static str],
    /// `Member must satisfy enum value set: [...]`, with the values in the order AWS prints
    /// them (computed by the generator); empty when the string is not an enum.
    pub enum_message: &'static str,
}

/// Inclusive bounds on a length (characters, bytes or entries).
#[derive(Debug, Clone, Copy, Default)]
pub struct LengthRange {
    pub min: Option<u64>,
    pub max: Option<u64>,
}

/// Inclusive bounds on a number.
#[derive(Debug, Clone, Copy, Default)]
pub struct NumberShape {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// A model `pattern`, matched against the whole value.
#[derive(Debug)]
pub struct Pattern {
    /// The pattern exactly as the model spells it (used in messages).
    pub source: &'static str,
    /// The same pattern in `regex` crate syntax (Java's ASCII `\d` spelled `[0-9]`), checked to
    /// compile by the generator.
    pub regex_source: &'static str,
    compiled: OnceLock<Option<Regex>>,
}

impl Pattern {
    pub const fn new(source: &'static str, regex_source: &'static str) -> Pattern {
        Pattern {
            source,
            regex_source,
            compiled: OnceLock::new(),
        }
    }

    /// Whether all of `value` matches. A pattern that does not compile (the generator refuses
    /// such models, so this cannot happen) matches everything rather than refusing requests.
    pub fn is_match(&self, value: &str) -> bool {
        let compiled = self
            .compiled
            .get_or_init(|| Regex::new(&format!("^(?:{})$", self.regex_source)).ok());
        compiled.as_ref().is_none_or(|regex| regex.is_match(value))
    }
}

impl Shape {
    /// True for shapes without members: strings, numbers, booleans, blobs, timestamps.
    pub fn is_scalar(&self) -> bool {
        !matches!(
            self.kind,
            ShapeKind::Structure(_) | ShapeKind::List(_) | ShapeKind::Map(_)
        )
    }

    /// The constraint phrases of a scalar shape, in the order AWS lists them inside
    /// `Member must satisfy constraint: [...]` for list members and map keys/values.
    pub fn constraint_phrases(&self) -> Vec<String> {
        let mut phrases = Vec::new();
        let mut lengths = |range: &LengthRange| {
            if let Some(max) = range.max {
                phrases.push(format!(
                    "Member must have length less than or equal to {max}"
                ));
            }
            if let Some(min) = range.min {
                phrases.push(format!(
                    "Member must have length greater than or equal to {min}"
                ));
            }
        };
        match &self.kind {
            ShapeKind::String(s) => {
                lengths(&s.length);
                if let Some(pattern) = s.pattern {
                    phrases.push(format!(
                        "Member must satisfy regular expression pattern: {}",
                        pattern.source
                    ));
                }
                if !s.enum_message.is_empty() {
                    phrases.push(s.enum_message.to_owned());
                }
            }
            ShapeKind::Blob(range) => lengths(range),
            ShapeKind::Integer(n)
            | ShapeKind::Long(n)
            | ShapeKind::Float(n)
            | ShapeKind::Double(n) => {
                if let Some(max) = n.max {
                    phrases.push(format!(
                        "Member must have value less than or equal to {}",
                        bound_text(max)
                    ));
                }
                if let Some(min) = n.min {
                    phrases.push(format!(
                        "Member must have value greater than or equal to {}",
                        bound_text(min)
                    ));
                }
            }
            _ => {}
        }
        phrases
    }
}

/// A bound as AWS prints it: integral bounds without a fraction.
pub fn bound_text(bound: f64) -> String {
    if bound.fract() == 0.0 && bound.abs() < 1e15 {
        format!("{}", bound as i64)
    } else {
        format!("{bound}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static DIGITS: Pattern = Pattern::new("0|([1-9]\\d{0,38})", "0|([1-9][0-9]{0,38})");
    static ANCHORED: Pattern = Pattern::new("^(0|([1-9]\\d{0,38}))$", "^(0|([1-9][0-9]{0,38}))$");

    #[test]
    fn patterns_match_whole_values() {
        assert!(DIGITS.is_match("0"));
        assert!(DIGITS.is_match("340282366920938463463374607431768211455"));
        assert!(!DIGITS.is_match("01"), "alternation is anchored as a whole");
        assert!(!DIGITS.is_match(""));
        assert!(!DIGITS.is_match("1a"));
        assert!(
            !DIGITS.is_match("١٢"),
            "Arabic-Indic digits are not Java \\d"
        );
        assert!(ANCHORED.is_match("12"));
        assert!(!ANCHORED.is_match("x12"));
    }

    #[test]
    fn bounds_print_like_aws() {
        assert_eq!(bound_text(1.0), "1");
        assert_eq!(bound_text(10485760.0), "10485760");
        assert_eq!(bound_text(-5.0), "-5");
        assert_eq!(bound_text(0.5), "0.5");
    }
}
