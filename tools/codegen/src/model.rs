//! The parts of a botocore service model (`service-2.json`) the generator uses.
//!
//! Shapes keep their model order in a `BTreeMap` (sorted by name, which is deterministic);
//! structure members are sorted by name too. Unknown keys (documentation, endpoint and context
//! parameters) are ignored.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::collections::BTreeMap;

pub struct Model {
    pub target_prefix: String,
    pub service_id: String,
    pub operations: Vec<Operation>,
    pub shapes: BTreeMap<String, Shape>,
}

pub struct Operation {
    pub name: String,
    pub input: Option<String>,
    pub output: Option<String>,
    pub errors: Vec<String>,
}

pub struct Shape {
    pub name: String,
    pub kind: Kind,
}

pub enum Kind {
    Structure(Structure),
    List {
        member: String,
        min: Option<u64>,
        max: Option<u64>,
    },
    Map {
        key: String,
        value: String,
        min: Option<u64>,
        max: Option<u64>,
    },
    String {
        min: Option<u64>,
        max: Option<u64>,
        pattern: Option<String>,
        enum_values: Vec<String>,
    },
    Integer {
        min: Option<f64>,
        max: Option<f64>,
    },
    Long {
        min: Option<f64>,
        max: Option<f64>,
    },
    Float {
        min: Option<f64>,
        max: Option<f64>,
    },
    Double {
        min: Option<f64>,
        max: Option<f64>,
    },
    Boolean,
    Blob {
        min: Option<u64>,
        max: Option<u64>,
    },
    Timestamp,
}

pub struct Structure {
    pub members: Vec<Member>,
    pub exception: bool,
    pub event_stream: bool,
}

pub struct Member {
    pub name: String,
    pub shape: String,
    pub required: bool,
}

impl Model {
    pub fn parse(text: &str) -> Result<Model> {
        let json: Value = serde_json::from_str(text)?;
        let metadata = json.get("metadata").context("no metadata")?;
        let target_prefix = str_field(metadata, "targetPrefix")?;
        let service_id = str_field(metadata, "serviceId")?;
        let mut operations = Vec::new();
        for (name, op) in json
            .get("operations")
            .and_then(Value::as_object)
            .context("no operations")?
        {
            let shape_ref = |key: &str| {
                op.get(key)
                    .and_then(|v| v.get("shape"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            let errors = op
                .get("errors")
                .and_then(Value::as_array)
                .map(|errors| {
                    errors
                        .iter()
                        .filter_map(|e| e.get("shape")?.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            operations.push(Operation {
                name: name.clone(),
                input: shape_ref("input"),
                output: shape_ref("output"),
                errors,
            });
        }
        operations.sort_by(|a, b| a.name.cmp(&b.name));
        let mut shapes = BTreeMap::new();
        for (name, shape) in json
            .get("shapes")
            .and_then(Value::as_object)
            .context("no shapes")?
        {
            let kind = parse_kind(shape).with_context(|| format!("shape {name}"))?;
            shapes.insert(
                name.clone(),
                Shape {
                    name: name.clone(),
                    kind,
                },
            );
        }
        let model = Model {
            target_prefix,
            service_id,
            operations,
            shapes,
        };
        model.check_references()?;
        Ok(model)
    }

    /// Replaces the pattern of each named string shape (see `Service::pattern_overrides`).
    pub fn override_patterns(&mut self, overrides: &[(&str, &str)]) -> Result<()> {
        for (name, replacement) in overrides {
            match self.shapes.get_mut(*name).map(|s| &mut s.kind) {
                Some(Kind::String { pattern, .. }) => *pattern = Some((*replacement).to_owned()),
                _ => bail!("pattern override for {name}, which is not a string shape"),
            }
        }
        Ok(())
    }

    pub fn shape(&self, name: &str) -> Result<&Shape> {
        self.shapes
            .get(name)
            .with_context(|| format!("unknown shape {name}"))
    }

    fn check_references(&self) -> Result<()> {
        for shape in self.shapes.values() {
            let refs: Vec<&String> = match &shape.kind {
                Kind::Structure(s) => s.members.iter().map(|m| &m.shape).collect(),
                Kind::List { member, .. } => vec![member],
                Kind::Map { key, value, .. } => vec![key, value],
                _ => vec![],
            };
            for r in refs {
                self.shape(r)
                    .with_context(|| format!("referenced from {}", shape.name))?;
            }
        }
        for op in &self.operations {
            for r in op.input.iter().chain(&op.output).chain(&op.errors) {
                self.shape(r)
                    .with_context(|| format!("referenced from operation {}", op.name))?;
            }
        }
        Ok(())
    }
}

fn str_field(value: &Value, key: &str) -> Result<String> {
    value
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("no {key}"))
}

fn uint(shape: &Value, key: &str) -> Result<Option<u64>> {
    match shape.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) => Ok(Some(n)),
            None => bail!("{key} is not a non-negative integer: {v}"),
        },
    }
}

fn number(shape: &Value, key: &str) -> Result<Option<f64>> {
    match shape.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .with_context(|| format!("{key} is not a number: {v}")),
    }
}

fn parse_kind(shape: &Value) -> Result<Kind> {
    let shape_type = str_field(shape, "type")?;
    let target = |key: &str| -> Result<String> {
        shape
            .get(key)
            .and_then(|v| v.get("shape"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("no {key}"))
    };
    Ok(match shape_type.as_str() {
        "structure" => {
            let required: Vec<&str> = shape
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut members: Vec<Member> = shape
                .get("members")
                .and_then(Value::as_object)
                .map(|members| {
                    members
                        .iter()
                        .map(|(name, m)| {
                            let shape = m
                                .get("shape")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned();
                            Member {
                                name: name.clone(),
                                shape,
                                required: required.contains(&name.as_str()),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            members.sort_by(|a, b| a.name.cmp(&b.name));
            if let Some(missing) = required
                .iter()
                .find(|r| !members.iter().any(|m| m.name == **r))
            {
                bail!("required member {missing} does not exist");
            }
            Kind::Structure(Structure {
                members,
                exception: shape
                    .get("exception")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                event_stream: shape
                    .get("eventstream")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            })
        }
        "list" => Kind::List {
            member: target("member")?,
            min: uint(shape, "min")?,
            max: uint(shape, "max")?,
        },
        "map" => Kind::Map {
            key: target("key")?,
            value: target("value")?,
            min: uint(shape, "min")?,
            max: uint(shape, "max")?,
        },
        "string" => Kind::String {
            min: uint(shape, "min")?,
            max: uint(shape, "max")?,
            pattern: shape
                .get("pattern")
                .and_then(Value::as_str)
                .map(str::to_owned),
            enum_values: shape
                .get("enum")
                .and_then(Value::as_array)
                .map(|values| {
                    values
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        },
        "integer" => Kind::Integer {
            min: number(shape, "min")?,
            max: number(shape, "max")?,
        },
        "long" => Kind::Long {
            min: number(shape, "min")?,
            max: number(shape, "max")?,
        },
        "float" => Kind::Float {
            min: number(shape, "min")?,
            max: number(shape, "max")?,
        },
        "double" => Kind::Double {
            min: number(shape, "min")?,
            max: number(shape, "max")?,
        },
        "boolean" => Kind::Boolean,
        "blob" => Kind::Blob {
            min: uint(shape, "min")?,
            max: uint(shape, "max")?,
        },
        "timestamp" => Kind::Timestamp,
        other => bail!("unsupported shape type {other}"),
    })
}
