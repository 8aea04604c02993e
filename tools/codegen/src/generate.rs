//! The generated Rust of one service and its operations table.
//!
//! Everything the generated code names from `millrace-wire` or std is written with a full path,
//! so no model shape name can shadow it; shape names that would collide with the generated
//! items (`Operation`, `Request`, `Response`, `shapes`) are refused.

use crate::Service;
use crate::model::{Kind, Model, Shape, Structure};
use crate::names::{
    aws_enum_order, java_package, lower_first, rust_regex, snake_case, variant_name,
};
use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

const RESERVED: &[&str] = &[
    "Operation",
    "Request",
    "Response",
    "shapes",
    "ERRORS",
    "TARGET_PREFIX",
];

/// Full paths of what the generated code uses.
const VALUE: &str = "crate::value::Value";
const WIRE_ERROR: &str = "crate::WireError";
const RESULT: &str = "::core::result::Result";
const OPTION: &str = "::core::option::Option";

/// `writeln!` into a `String` cannot fail.
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{ let _ = writeln!($out, $($arg)*); }};
}

pub fn rust(model: &Model, service: &Service, version: &str) -> Result<String> {
    for name in RESERVED {
        if model.shapes.contains_key(*name) {
            bail!("shape name {name} collides with a generated item");
        }
    }
    let generator = Generator::new(model)?;
    let mut out = String::new();
    generator.header(&mut out, service, version);
    generator.enums(&mut out)?;
    generator.structures(&mut out)?;
    generator.operations(&mut out)?;
    generator.shape_table(&mut out)?;
    Ok(out)
}

struct Generator<'a> {
    model: &'a Model,
    /// Structures that become Rust structs, by name.
    structures: BTreeMap<&'a str, &'a Structure>,
    /// Which of them can derive `Default`.
    defaultable: BTreeSet<&'a str>,
    /// Shapes reachable from operations and events, which get a static descriptor.
    described: BTreeSet<&'a str>,
}

impl<'a> Generator<'a> {
    fn new(model: &'a Model) -> Result<Generator<'a>> {
        let structures: BTreeMap<&str, &Structure> = model
            .shapes
            .values()
            .filter_map(|shape| match &shape.kind {
                Kind::Structure(s) if !s.exception && !s.event_stream => {
                    Some((shape.name.as_str(), s))
                }
                _ => None,
            })
            .collect();
        let mut generator = Generator {
            model,
            structures,
            defaultable: BTreeSet::new(),
            described: BTreeSet::new(),
        };
        generator.defaultable = generator.compute_defaultable()?;
        generator.described = generator.compute_described()?;
        Ok(generator)
    }

    /// Members that are part of the struct: event-stream members are streamed, not encoded.
    fn members(&self, structure: &'a Structure) -> Result<Vec<&'a crate::model::Member>> {
        let mut members = Vec::new();
        for member in &structure.members {
            if let Kind::Structure(target) = &self.model.shape(&member.shape)?.kind {
                if target.event_stream {
                    continue;
                }
                if target.exception {
                    bail!("member {} targets exception {}", member.name, member.shape);
                }
            }
            members.push(member);
        }
        Ok(members)
    }

    fn compute_defaultable(&self) -> Result<BTreeSet<&'a str>> {
        let mut defaultable: BTreeSet<&str> = BTreeSet::new();
        loop {
            let mut changed = false;
            for (name, structure) in &self.structures {
                if defaultable.contains(name) {
                    continue;
                }
                let mut ok = true;
                for member in self.members(structure)? {
                    if !member.required {
                        continue;
                    }
                    ok &= match &self.model.shape(&member.shape)?.kind {
                        Kind::String { enum_values, .. } => enum_values.is_empty(),
                        Kind::Structure(_) => defaultable.contains(member.shape.as_str()),
                        _ => true,
                    };
                }
                if ok {
                    defaultable.insert(name);
                    changed = true;
                }
            }
            if !changed {
                return Ok(defaultable);
            }
        }
    }

    fn compute_described(&self) -> Result<BTreeSet<&'a str>> {
        let mut stack: Vec<&str> = Vec::new();
        for op in &self.model.operations {
            stack.extend(op.input.iter().chain(&op.output).map(String::as_str));
        }
        // The events of event streams are encoded too.
        for shape in self.model.shapes.values() {
            let Kind::Structure(stream) = &shape.kind else {
                continue;
            };
            if !stream.event_stream {
                continue;
            }
            for member in &stream.members {
                if let Kind::Structure(target) = &self.model.shape(&member.shape)?.kind
                    && !target.exception
                {
                    stack.push(member.shape.as_str());
                }
            }
        }
        let mut seen = BTreeSet::new();
        while let Some(name) = stack.pop() {
            if !seen.insert(name) {
                continue;
            }
            match &self.model.shape(name)?.kind {
                Kind::Structure(s) => {
                    for member in self.members(s)? {
                        stack.push(&member.shape);
                    }
                }
                Kind::List { member, .. } => stack.push(member),
                Kind::Map { key, value, .. } => {
                    stack.push(key);
                    stack.push(value);
                }
                _ => {}
            }
        }
        Ok(seen)
    }

    /// The Rust type of a value of shape `name`.
    fn rust_type(&self, name: &str) -> Result<String> {
        let shape = self.model.shape(name)?;
        Ok(match &shape.kind {
            Kind::Structure(_) => {
                if !self.structures.contains_key(name) {
                    bail!("no struct for {name}");
                }
                name.to_owned()
            }
            Kind::List { member, .. } => format!("::std::vec::Vec<{}>", self.rust_type(member)?),
            Kind::Map { value, .. } => {
                format!(
                    "::std::collections::BTreeMap<::std::string::String, {}>",
                    self.rust_type(value)?
                )
            }
            Kind::String { enum_values, .. } if !enum_values.is_empty() => name.to_owned(),
            Kind::String { .. } => "::std::string::String".to_owned(),
            Kind::Integer { .. } => "i32".to_owned(),
            Kind::Long { .. } => "i64".to_owned(),
            Kind::Float { .. } | Kind::Double { .. } => "f64".to_owned(),
            Kind::Boolean => "bool".to_owned(),
            Kind::Blob { .. } => "::bytes::Bytes".to_owned(),
            Kind::Timestamp => "crate::EpochMillis".to_owned(),
        })
    }

    fn header(&self, out: &mut String, service: &Service, version: &str) {
        w!(
            out,
            "//! Generated by `tools/codegen` from `{}` ({version}); do not edit.",
            service.model_path
        );
        w!(
            out,
            "//! Regenerate with `cargo run -p millrace-codegen`; CI runs it with `--check`."
        );
        w!(out, "//!");
        w!(
            out,
            "//! The typed structs and enums of the {} model, the static shape table",
            self.model.service_id
        );
        w!(
            out,
            "//! (`shapes`) that type checking and validation walk, `Operation`, `Request`, `Response`,"
        );
        w!(
            out,
            "//! `decode_request` and `encode_response`. Behaviour lives in the hand-written modules of"
        );
        w!(
            out,
            "//! `millrace-wire`; this file is only the model written as Rust."
        );
        w!(out, "");
        w!(
            out,
            "#![allow(clippy::large_enum_variant, clippy::too_many_lines)]"
        );
        w!(out, "");
        w!(
            out,
            "/// The `X-Amz-Target` prefix of the service (`<prefix>.<Operation>`)."
        );
        w!(
            out,
            "pub const TARGET_PREFIX: &str = {:?};",
            self.model.target_prefix
        );
        w!(out, "");
    }

    fn enums(&self, out: &mut String) -> Result<()> {
        for shape in self.model.shapes.values() {
            let Kind::String { enum_values, .. } = &shape.kind else {
                continue;
            };
            if enum_values.is_empty() {
                continue;
            }
            let name = &shape.name;
            let variants: Vec<(String, &String)> =
                enum_values.iter().map(|v| (variant_name(v), v)).collect();
            let unique: BTreeSet<&String> = variants.iter().map(|(v, _)| v).collect();
            if unique.len() != variants.len() {
                bail!("enum {name} has values that map to the same variant");
            }
            w!(out, "/// The `{name}` enum of the model.");
            w!(
                out,
                "#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]"
            );
            w!(out, "pub enum {name} {{");
            for (variant, value) in &variants {
                w!(out, "    /// `{value}`");
                w!(out, "    {variant},");
            }
            w!(out, "}}");
            w!(out, "");
            w!(out, "impl {name} {{");
            w!(out, "    /// Every value, in model order.");
            let all: Vec<String> = variants
                .iter()
                .map(|(v, _)| format!("{name}::{v}"))
                .collect();
            w!(
                out,
                "    pub const ALL: &'static [{name}] = &[{}];",
                all.join(", ")
            );
            w!(out, "");
            w!(out, "    /// The value on the wire.");
            w!(out, "    pub fn as_str(&self) -> &'static str {{");
            w!(out, "        match self {{");
            for (variant, value) in &variants {
                w!(out, "            {name}::{variant} => {value:?},");
            }
            w!(out, "        }}");
            w!(out, "    }}");
            w!(out, "");
            w!(out, "    /// The variant of a wire value, if it is one.");
            w!(
                out,
                "    pub fn from_str_opt(value: &str) -> {OPTION}<{name}> {{"
            );
            w!(out, "        match value {{");
            for (variant, value) in &variants {
                w!(
                    out,
                    "            {value:?} => {OPTION}::Some({name}::{variant}),"
                );
            }
            w!(out, "            _ => {OPTION}::None,");
            w!(out, "        }}");
            w!(out, "    }}");
            w!(out, "}}");
            w!(out, "");
            w!(out, "impl ::std::fmt::Display for {name} {{");
            w!(
                out,
                "    fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {{"
            );
            w!(out, "        f.write_str(self.as_str())");
            w!(out, "    }}");
            w!(out, "}}");
            w!(out, "");
            w!(out, "impl crate::encode::Encode for {name} {{");
            w!(
                out,
                "    fn encode<W: crate::encode::Writer>(&self, w: &mut W) {{"
            );
            w!(out, "        w.string(self.as_str())");
            w!(out, "    }}");
            w!(out, "}}");
            w!(out, "");
            w!(out, "impl crate::convert::FromValue for {name} {{");
            w!(
                out,
                "    fn from_value(value: {VALUE}) -> {RESULT}<Self, {WIRE_ERROR}> {{"
            );
            w!(
                out,
                "        crate::convert::enum_value(value, {name:?}, {name}::from_str_opt)"
            );
            w!(out, "    }}");
            w!(out, "}}");
            w!(out, "");
        }
        Ok(())
    }

    fn structures(&self, out: &mut String) -> Result<()> {
        for (name, structure) in &self.structures {
            let members = self.members(structure)?;
            let fields: Vec<(String, String, &crate::model::Member)> = members
                .iter()
                .map(|m| Ok((snake_case(&m.name), self.rust_type(&m.shape)?, *m)))
                .collect::<Result<_>>()?;
            let unique: BTreeSet<&String> = fields.iter().map(|(f, _, _)| f).collect();
            if unique.len() != fields.len() {
                bail!("structure {name} has members that map to the same field");
            }
            let derive_default = if self.defaultable.contains(name) {
                ", Default"
            } else {
                ""
            };
            w!(out, "/// The `{name}` structure of the model.");
            w!(out, "#[derive(Debug, Clone, PartialEq{derive_default})]");
            w!(out, "pub struct {name} {{");
            for (field, ty, member) in &fields {
                let required = if member.required { ", required" } else { "" };
                w!(out, "    /// `{}`{required}.", member.name);
                if member.required {
                    w!(out, "    pub {field}: {ty},");
                } else {
                    w!(out, "    pub {field}: {OPTION}<{ty}>,");
                }
            }
            w!(out, "}}");
            w!(out, "");
            // Encode.
            w!(out, "impl crate::encode::Encode for {name} {{");
            w!(
                out,
                "    fn encode<W: crate::encode::Writer>(&self, w: &mut W) {{"
            );
            let required_count = fields.iter().filter(|(_, _, m)| m.required).count();
            let mut terms: Vec<String> = Vec::new();
            if required_count > 0 {
                terms.push(required_count.to_string());
            }
            for (field, _, member) in &fields {
                if !member.required {
                    terms.push(format!("usize::from(self.{field}.is_some())"));
                }
            }
            if terms.is_empty() {
                terms.push("0".to_owned());
            }
            w!(out, "        w.begin_map({});", terms.join(" + "));
            for (field, _, member) in &fields {
                if member.required {
                    w!(out, "        w.key({:?});", member.name);
                    w!(out, "        self.{field}.encode(w);");
                } else {
                    w!(
                        out,
                        "        if let {OPTION}::Some(value) = &self.{field} {{"
                    );
                    w!(out, "            w.key({:?});", member.name);
                    w!(out, "            value.encode(w);");
                    w!(out, "        }}");
                }
            }
            w!(out, "        w.end_map();");
            w!(out, "    }}");
            w!(out, "}}");
            w!(out, "");
            // FromValue. Locals are prefixed so no member name can shadow them.
            w!(out, "impl crate::convert::FromValue for {name} {{");
            w!(
                out,
                "    fn from_value(wire_input: {VALUE}) -> {RESULT}<Self, {WIRE_ERROR}> {{"
            );
            if fields.is_empty() {
                w!(out, "        crate::convert::entries(wire_input)?;");
                w!(out, "        {RESULT}::Ok({name} {{}})");
            } else {
                for (field, _, _) in &fields {
                    w!(out, "        let mut field_{field} = {OPTION}::None;");
                }
                w!(
                    out,
                    "        for (wire_key, wire_value) in crate::convert::entries(wire_input)? {{"
                );
                w!(out, "            if wire_value.is_null() {{");
                w!(out, "                continue;");
                w!(out, "            }}");
                if let [(field, _, member)] = fields.as_slice() {
                    w!(out, "            if wire_key == {:?} {{", member.name);
                    w!(
                        out,
                        "                field_{field} = {OPTION}::Some(crate::convert::FromValue::from_value(wire_value)?);"
                    );
                    w!(out, "            }}");
                } else {
                    w!(out, "            match wire_key.as_str() {{");
                    for (field, _, member) in &fields {
                        w!(
                            out,
                            "                {:?} => field_{field} = {OPTION}::Some(crate::convert::FromValue::from_value(wire_value)?),",
                            member.name
                        );
                    }
                    w!(out, "                _ => {{}}");
                    w!(out, "            }}");
                }
                w!(out, "        }}");
                w!(out, "        {RESULT}::Ok({name} {{");
                for (field, _, member) in &fields {
                    if member.required {
                        w!(
                            out,
                            "            {field}: crate::convert::required(field_{field}, {:?})?,",
                            member.name
                        );
                    } else {
                        w!(out, "            {field}: field_{field},");
                    }
                }
                w!(out, "        }})");
            }
            w!(out, "    }}");
            w!(out, "}}");
            w!(out, "");
        }
        Ok(())
    }

    fn operations(&self, out: &mut String) -> Result<()> {
        let ops = &self.model.operations;
        // Exceptions of the model, checked against ErrorKind at compile time.
        let mut exceptions: Vec<&str> = self
            .model
            .shapes
            .values()
            .filter(|s| matches!(&s.kind, Kind::Structure(st) if st.exception))
            .map(|s| s.name.as_str())
            .collect();
        exceptions.sort_unstable();
        w!(
            out,
            "/// Every exception of the model, as the `ErrorKind` answering it."
        );
        let kinds: Vec<String> = exceptions
            .iter()
            .map(|e| format!("crate::ErrorKind::{e}"))
            .collect();
        w!(
            out,
            "pub const ERRORS: &[crate::ErrorKind] = &[{}];",
            kinds.join(", ")
        );
        w!(out, "");

        w!(out, "/// An operation of the service.");
        w!(
            out,
            "#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]"
        );
        w!(out, "pub enum Operation {{");
        for op in ops {
            w!(out, "    {},", op.name);
        }
        w!(out, "}}");
        w!(out, "");
        w!(out, "impl Operation {{");
        w!(out, "    /// Every operation, sorted by name.");
        let all: Vec<String> = ops
            .iter()
            .map(|op| format!("Operation::{}", op.name))
            .collect();
        w!(
            out,
            "    pub const ALL: &'static [Operation] = &[{}];",
            all.join(", ")
        );
        w!(out, "");
        w!(out, "    /// The operation's name, as in `X-Amz-Target`.");
        w!(out, "    pub fn name(&self) -> &'static str {{");
        w!(out, "        match self {{");
        for op in ops {
            w!(out, "            Operation::{0} => {0:?},", op.name);
        }
        w!(out, "        }}");
        w!(out, "    }}");
        w!(out, "");
        w!(out, "    /// The operation called `name`, if any.");
        w!(
            out,
            "    pub fn from_name(name: &str) -> {OPTION}<Operation> {{"
        );
        w!(out, "        match name {{");
        for op in ops {
            w!(
                out,
                "            {0:?} => {OPTION}::Some(Operation::{0}),",
                op.name
            );
        }
        w!(out, "            _ => {OPTION}::None,");
        w!(out, "        }}");
        w!(out, "    }}");
        w!(out, "");
        w!(out, "    /// The shape of the request body.");
        w!(
            out,
            "    pub fn input_shape(&self) -> {OPTION}<&'static crate::shape::Shape> {{"
        );
        w!(out, "        match self {{");
        for op in ops {
            match &op.input {
                Some(input) => w!(
                    out,
                    "            Operation::{} => {OPTION}::Some(&shapes::{input}),",
                    op.name
                ),
                None => w!(out, "            Operation::{} => {OPTION}::None,", op.name),
            }
        }
        w!(out, "        }}");
        w!(out, "    }}");
        w!(out, "");
        w!(
            out,
            "    /// The shape of the response body; `None` for operations answered with an empty body."
        );
        w!(
            out,
            "    pub fn output_shape(&self) -> {OPTION}<&'static crate::shape::Shape> {{"
        );
        w!(out, "        match self {{");
        for op in ops {
            match &op.output {
                Some(output) => w!(
                    out,
                    "            Operation::{} => {OPTION}::Some(&shapes::{output}),",
                    op.name
                ),
                None => w!(out, "            Operation::{} => {OPTION}::None,", op.name),
            }
        }
        w!(out, "        }}");
        w!(out, "    }}");
        w!(out, "");
        w!(out, "    /// The errors the model lists for the operation.");
        w!(
            out,
            "    pub fn errors(&self) -> &'static [crate::ErrorKind] {{"
        );
        w!(out, "        match self {{");
        for op in ops {
            let mut errors = op.errors.clone();
            errors.sort();
            errors.dedup();
            let kinds: Vec<String> = errors
                .iter()
                .map(|e| format!("crate::ErrorKind::{e}"))
                .collect();
            w!(
                out,
                "            Operation::{} => &[{}],",
                op.name,
                kinds.join(", ")
            );
        }
        w!(out, "        }}");
        w!(out, "    }}");
        w!(out, "}}");
        w!(out, "");
        w!(out, "impl ::std::fmt::Display for Operation {{");
        w!(
            out,
            "    fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {{"
        );
        w!(out, "        f.write_str(self.name())");
        w!(out, "    }}");
        w!(out, "}}");
        w!(out, "");

        // Request.
        w!(out, "/// A decoded, validated request.");
        w!(out, "#[derive(Debug, Clone, PartialEq)]");
        w!(out, "pub enum Request {{");
        for op in ops {
            match &op.input {
                Some(input) => w!(out, "    {}({input}),", op.name),
                None => w!(out, "    {},", op.name),
            }
        }
        w!(out, "}}");
        w!(out, "");
        w!(out, "impl Request {{");
        w!(out, "    pub fn operation(&self) -> Operation {{");
        w!(out, "        match self {{");
        for op in ops {
            let pattern = if op.input.is_some() { "(_)" } else { "" };
            w!(
                out,
                "            Request::{0}{pattern} => Operation::{0},",
                op.name
            );
        }
        w!(out, "        }}");
        w!(out, "    }}");
        w!(out, "}}");
        w!(out, "");

        // Response.
        w!(
            out,
            "/// A response to encode: operations without an output shape answer with an empty body."
        );
        w!(out, "#[derive(Debug, Clone, PartialEq)]");
        w!(out, "pub enum Response {{");
        for op in ops {
            match &op.output {
                Some(output) => w!(out, "    {}({output}),", op.name),
                None => w!(out, "    {},", op.name),
            }
        }
        w!(out, "}}");
        w!(out, "");
        w!(out, "impl Response {{");
        w!(out, "    pub fn operation(&self) -> Operation {{");
        w!(out, "        match self {{");
        for op in ops {
            let pattern = if op.output.is_some() { "(_)" } else { "" };
            w!(
                out,
                "            Response::{0}{pattern} => Operation::{0},",
                op.name
            );
        }
        w!(out, "        }}");
        w!(out, "    }}");
        w!(out, "}}");
        w!(out, "");

        // decode_request.
        w!(
            out,
            "/// Parse, type-check and validate a request body of `op`, exactly as AWS does."
        );
        w!(out, "pub fn decode_request(");
        w!(out, "    op: Operation,");
        w!(out, "    format: crate::Format,");
        w!(out, "    body: &[u8],");
        w!(out, ") -> {RESULT}<Request, {WIRE_ERROR}> {{");
        w!(out, "    {RESULT}::Ok(match op {{");
        for op in ops {
            match &op.input {
                Some(input) => {
                    w!(
                        out,
                        "        Operation::{} => Request::{}(crate::convert::FromValue::from_value(",
                        op.name,
                        op.name
                    );
                    w!(
                        out,
                        "            crate::decode_checked(format, body, &shapes::{input})?,"
                    );
                    w!(out, "        )?),");
                }
                None => {
                    w!(out, "        Operation::{} => {{", op.name);
                    w!(out, "            crate::decode_object(format, body)?;");
                    w!(out, "            Request::{}", op.name);
                    w!(out, "        }}");
                }
            }
        }
        w!(out, "    }})");
        w!(out, "}}");
        w!(out, "");
        w!(
            out,
            "/// The body of a response: empty for operations without output, else JSON or CBOR."
        );
        w!(
            out,
            "pub fn encode_response(format: crate::Format, response: &Response) -> ::std::vec::Vec<u8> {{"
        );
        w!(out, "    match response {{");
        for op in ops {
            match &op.output {
                Some(_) => w!(
                    out,
                    "        Response::{}(output) => crate::encode::to_vec(format, output),",
                    op.name
                ),
                None => w!(
                    out,
                    "        Response::{} => ::std::vec::Vec::new(),",
                    op.name
                ),
            }
        }
        w!(out, "    }}");
        w!(out, "}}");
        w!(out, "");
        w!(
            out,
            "/// The body of a request, as a client would send it (for tests and tools)."
        );
        w!(
            out,
            "pub fn encode_request(format: crate::Format, request: &Request) -> ::std::vec::Vec<u8> {{"
        );
        w!(out, "    match request {{");
        for op in ops {
            match &op.input {
                Some(_) => w!(
                    out,
                    "        Request::{}(input) => crate::encode::to_vec(format, input),",
                    op.name
                ),
                None => w!(
                    out,
                    "        Request::{} => crate::encode::to_vec(format, &crate::value::Value::Map(::std::vec::Vec::new())),",
                    op.name
                ),
            }
        }
        w!(out, "    }}");
        w!(out, "}}");
        w!(out, "");
        Ok(())
    }

    fn shape_table(&self, out: &mut String) -> Result<()> {
        let java = java_package(&self.model.target_prefix);
        // Patterns, deduplicated.
        let mut patterns: BTreeMap<&str, usize> = BTreeMap::new();
        for name in &self.described {
            if let Kind::String {
                pattern: Some(pattern),
                ..
            } = &self.model.shape(name)?.kind
            {
                let next = patterns.len();
                patterns.entry(pattern.as_str()).or_insert(next);
            }
        }
        w!(
            out,
            "/// The static descriptor of every shape requests, responses and events use."
        );
        w!(out, "#[allow(non_upper_case_globals)]");
        w!(out, "pub mod shapes {{");
        w!(out, "    use crate::shape as s;");
        w!(out, "");
        let mut by_index: Vec<(&usize, &&str)> = patterns.iter().map(|(p, i)| (i, p)).collect();
        by_index.sort();
        for (index, pattern) in by_index {
            let rust = rust_regex(pattern);
            regex::Regex::new(&format!("^(?:{rust})$")).with_context(|| {
                format!("model pattern {pattern:?} does not compile as {rust:?}")
            })?;
            w!(
                out,
                "    static PATTERN_{index}: s::Pattern = s::Pattern::new({pattern:?}, {rust:?});"
            );
        }
        w!(out, "");
        for name in &self.described {
            let shape = self.model.shape(name)?;
            w!(out, "    pub static {name}: s::Shape = s::Shape {{");
            w!(out, "        name: {name:?},");
            w!(
                out,
                "        kind: {},",
                self.shape_kind(shape, &java, &patterns)?
            );
            w!(out, "    }};");
        }
        w!(out, "}}");
        Ok(())
    }

    fn shape_kind(
        &self,
        shape: &Shape,
        java: &str,
        patterns: &BTreeMap<&str, usize>,
    ) -> Result<String> {
        let range = |min: &Option<u64>, max: &Option<u64>| {
            format!(
                "s::LengthRange {{ min: {}, max: {} }}",
                opt_u64(min),
                opt_u64(max)
            )
        };
        let number = |kind: &str, min: &Option<f64>, max: &Option<f64>| {
            format!(
                "s::ShapeKind::{kind}(s::NumberShape {{ min: {}, max: {} }})",
                opt_f64(min),
                opt_f64(max)
            )
        };
        Ok(match &shape.kind {
            Kind::Structure(structure) => {
                let mut members = String::new();
                for member in self.members(structure)? {
                    let _ = write!(
                        members,
                        "s::Member {{ name: {:?}, path_name: {:?}, shape: &{}, required: {} }}, ",
                        member.name,
                        lower_first(&member.name),
                        member.shape,
                        member.required
                    );
                }
                format!(
                    "s::ShapeKind::Structure(s::StructureShape {{ members: &[{members}], java_class: {:?} }})",
                    format!("{java}.{}", shape.name)
                )
            }
            Kind::List { member, min, max } => {
                format!(
                    "s::ShapeKind::List(s::ListShape {{ member: &{member}, length: {} }})",
                    range(min, max)
                )
            }
            Kind::Map {
                key,
                value,
                min,
                max,
            } => format!(
                "s::ShapeKind::Map(s::MapShape {{ key: &{key}, value: &{value}, length: {} }})",
                range(min, max)
            ),
            Kind::String {
                min,
                max,
                pattern,
                enum_values,
            } => {
                let pattern = match pattern {
                    Some(p) => format!(
                        "Some(&PATTERN_{})",
                        patterns.get(p.as_str()).context("pattern index")?
                    ),
                    None => "None".to_owned(),
                };
                let values: Vec<String> = enum_values.iter().map(|v| format!("{v:?}")).collect();
                let message = if enum_values.is_empty() {
                    String::new()
                } else {
                    format!(
                        "Member must satisfy enum value set: [{}]",
                        aws_enum_order(enum_values).join(", ")
                    )
                };
                format!(
                    "s::ShapeKind::String(s::StringShape {{ length: {}, pattern: {pattern}, enum_values: &[{}], enum_message: {message:?} }})",
                    range(min, max),
                    values.join(", ")
                )
            }
            Kind::Integer { min, max } => number("Integer", min, max),
            Kind::Long { min, max } => number("Long", min, max),
            Kind::Float { min, max } => number("Float", min, max),
            Kind::Double { min, max } => number("Double", min, max),
            Kind::Boolean => "s::ShapeKind::Boolean".to_owned(),
            Kind::Blob { min, max } => format!("s::ShapeKind::Blob({})", range(min, max)),
            Kind::Timestamp => "s::ShapeKind::Timestamp".to_owned(),
        })
    }
}

fn opt_u64(value: &Option<u64>) -> String {
    match value {
        Some(v) => format!("Some({v})"),
        None => "None".to_owned(),
    }
}

fn opt_f64(value: &Option<f64>) -> String {
    match value {
        Some(v) => format!("Some({v:?})"),
        None => "None".to_owned(),
    }
}

/// A Markdown table of the operations: input, output and modelled errors.
pub fn operations_markdown(model: &Model, service: &Service) -> String {
    let mut out = String::new();
    w!(out, "# {} operations", model.service_id);
    w!(out, "");
    w!(
        out,
        "Generated by `tools/codegen` from `{}`; do not edit.",
        service.model_path
    );
    w!(
        out,
        "Every operation below decodes and validates in `millrace-wire`; whether a service implements it is"
    );
    w!(out, "the service crate's business.");
    w!(out, "");
    w!(out, "| Operation | Input | Output | Errors |");
    w!(out, "| --- | --- | --- | --- |");
    for op in &model.operations {
        let mut errors = op.errors.clone();
        errors.sort();
        errors.dedup();
        w!(
            out,
            "| {} | {} | {} | {} |",
            op.name,
            op.input.as_deref().unwrap_or("-"),
            op.output.as_deref().unwrap_or("(empty body)"),
            errors.join(", ")
        );
    }
    out
}
