//! Naming rules: model names to Rust identifiers, validation paths and Java names, and the
//! order AWS prints enum value sets in.

/// `StreamARN` -> `stream_arn`, `MaxRecordSizeInKiB` -> `max_record_size_in_ki_b`; Rust
/// keywords get a trailing underscore (`Type` -> `type_`).
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
            continue;
        }
        if c.is_uppercase() && i > 0 {
            let prev = chars.get(i - 1).copied().unwrap_or('_');
            let next = chars.get(i + 1).copied();
            let starts_word = prev.is_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_uppercase() && next.is_some_and(char::is_lowercase));
            if starts_word && !out.ends_with('_') {
                out.push('_');
            }
        }
        out.extend(c.to_lowercase());
    }
    if is_keyword(&out) {
        out.push('_');
    }
    out
}

/// `AT_SEQUENCE_NUMBER` -> `AtSequenceNumber`, `KMS` -> `Kms`, `IncomingBytes` stays.
pub fn variant_name(value: &str) -> String {
    let mut out = String::new();
    for word in value
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let all_upper = !word.chars().any(char::is_lowercase);
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            if all_upper {
                out.extend(chars.flat_map(char::to_lowercase));
            } else {
                out.extend(chars);
            }
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'V');
    }
    if out == "Self" {
        out.push('_');
    }
    out
}

/// The name of a member in validation paths: first character lower-cased.
pub fn lower_first(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `Kinesis_20131202` -> `com.amazonaws.kinesis.v20131202`, the package of AWS's Java model.
pub fn java_package(target_prefix: &str) -> String {
    let (service, version) = target_prefix.split_once('_').unwrap_or((target_prefix, ""));
    format!("com.amazonaws.{}.v{}", service.to_lowercase(), version)
}

/// Java's `String.hashCode()`.
fn java_hash(s: &str) -> u32 {
    s.encode_utf16()
        .fold(0u32, |h, c| h.wrapping_mul(31).wrapping_add(u32::from(c)))
}

/// The order AWS prints an enum's value set in `Member must satisfy enum value set: [...]`.
///
/// Observed, not documented: AWS lists the values by `hashCode() & (capacity - 1)` of a
/// 16-slot table (doubled while more than 3/4 full), ties in model order. This reproduces every
/// message recorded against real AWS that we found: Kinesis ShardIteratorType
/// `[AFTER_SEQUENCE_NUMBER, LATEST, AT_TIMESTAMP, AT_SEQUENCE_NUMBER, TRIM_HORIZON]`
/// (kinesalite's tests), DynamoDB ReturnConsumedCapacity `[INDEXES, TOTAL, NONE]`, Cognito
/// MfaConfiguration `[OPTIONAL, OFF, ON]`, Lambda LogType `[Tail, None]`.
pub fn aws_enum_order(values: &[String]) -> Vec<String> {
    let mut capacity: usize = 16;
    while values.len() * 4 > capacity * 3 {
        capacity *= 2;
    }
    let mask = (capacity - 1) as u32;
    let mut ordered: Vec<&String> = values.iter().collect();
    ordered.sort_by_key(|v| java_hash(v) & mask);
    ordered.into_iter().cloned().collect()
}

/// A Java regular expression from the model in `regex` crate syntax: Java's `\d` and `\w` are
/// ASCII, so they become `[0-9]` and `[a-zA-Z0-9_]` (without brackets inside a class);
/// everything else is passed through and must compile.
pub fn rust_regex(java: &str) -> String {
    // The look-around idioms of the models, rewritten without look-around (which the `regex`
    // crate lacks) into the same language: a host label of 1 to 63 characters that neither
    // starts nor ends with `-` (Firehose's ClusterJDBCURL), and a string that is not blank.
    const LOOK_AROUND_IDIOMS: &[(&str, &str)] = &[
        (
            "(?!-)[A-Za-z0-9-]{1,63}(?<!-)",
            "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?",
        ),
        ("^(?!\\s*$).+", ".*[^ \\t\\n\\x0B\\f\\r].*"),
    ];
    let java = LOOK_AROUND_IDIOMS
        .iter()
        .fold(java.to_owned(), |text, (idiom, rewrite)| {
            text.replace(idiom, rewrite)
        });
    let java = without_negative_prefix(&java).unwrap_or(java);
    let mut out = String::new();
    let mut in_class = false;
    let mut chars = java.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('d') if in_class => out.push_str("0-9"),
                Some('d') => out.push_str("[0-9]"),
                // Java's `\w` is ASCII too; the Unicode class would also make bounded
                // repetitions such as `[\w\.\-]{1,255}` exceed the regex size limit.
                Some('w') if in_class => out.push_str("a-zA-Z0-9_"),
                Some('w') => out.push_str("[a-zA-Z0-9_]"),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            '[' => {
                in_class = true;
                out.push(c);
            }
            ']' => {
                in_class = false;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// `^(?!PREFIX)[CLASS]*$` (Firehose's tag keys: `^(?!aws:)[\p{L}...]*$`) without the
/// look-ahead: strings over CLASS shorter than PREFIX, or that leave PREFIX at some character
/// (`[CLASS&&[^c]]`, a class intersection). `None` for any other pattern.
fn without_negative_prefix(java: &str) -> Option<String> {
    let rest = java.strip_prefix("^(?!")?;
    let (prefix, rest) = rest.split_once(')')?;
    let class = rest.strip_suffix("*$")?;
    let body = class.strip_prefix('[')?.strip_suffix(']')?;
    if prefix.is_empty()
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b':')
    {
        return None;
    }
    let chars: Vec<char> = prefix.chars().collect();
    let mut alternatives = vec![format!("{class}{{0,{}}}", chars.len() - 1)];
    for (char_idx, &c) in chars.iter().enumerate() {
        let same: String = chars
            .iter()
            .take(char_idx)
            .map(|p| format!("[{body}&&[{p}]]"))
            .collect();
        alternatives.push(format!("{same}[{body}&&[^{c}]]{class}*"));
    }
    Some(format!("(?:{})", alternatives.join("|")))
}

fn is_keyword(word: &str) -> bool {
    matches!(
        word,
        "as" | "async"
            | "await"
            | "break"
            | "const"
            | "continue"
            | "crate"
            | "dyn"
            | "else"
            | "enum"
            | "extern"
            | "false"
            | "fn"
            | "for"
            | "gen"
            | "if"
            | "impl"
            | "in"
            | "let"
            | "loop"
            | "match"
            | "mod"
            | "move"
            | "mut"
            | "pub"
            | "ref"
            | "return"
            | "self"
            | "static"
            | "struct"
            | "super"
            | "trait"
            | "true"
            | "type"
            | "unsafe"
            | "use"
            | "where"
            | "while"
            | "abstract"
            | "become"
            | "box"
            | "do"
            | "final"
            | "macro"
            | "override"
            | "priv"
            | "try"
            | "typeof"
            | "unsized"
            | "virtual"
            | "yield"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_cases() {
        let cases = [
            ("StreamName", "stream_name"),
            ("StreamARN", "stream_arn"),
            ("GSRSchemaARN", "gsr_schema_arn"),
            ("MaxRecordSizeInKiB", "max_record_size_in_ki_b"),
            ("S3TablesConfigurationList", "s3_tables_configuration_list"),
            ("Type", "type_"),
            ("message", "message"),
            ("KMSKeyId", "kms_key_id"),
        ];
        for (name, expected) in cases {
            assert_eq!(snake_case(name), expected);
        }
    }

    #[test]
    fn variant_names() {
        let cases = [
            ("AT_SEQUENCE_NUMBER", "AtSequenceNumber"),
            ("KMS", "Kms"),
            ("NONE", "None"),
            ("IncomingBytes", "IncomingBytes"),
            ("ALL", "All"),
            ("S3_TABLES", "S3Tables"),
            (
                "ENABLED_UNTIL_EARLIEST_ALLOWED_END",
                "EnabledUntilEarliestAllowedEnd",
            ),
            ("python3.9", "Python39"),
            ("3x", "V3x"),
        ];
        for (value, expected) in cases {
            assert_eq!(variant_name(value), expected);
        }
    }

    #[test]
    fn enum_order_matches_aws_observations() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            aws_enum_order(&s(&[
                "AT_SEQUENCE_NUMBER",
                "AFTER_SEQUENCE_NUMBER",
                "TRIM_HORIZON",
                "LATEST",
                "AT_TIMESTAMP"
            ])),
            s(&[
                "AFTER_SEQUENCE_NUMBER",
                "LATEST",
                "AT_TIMESTAMP",
                "AT_SEQUENCE_NUMBER",
                "TRIM_HORIZON"
            ])
        );
        assert_eq!(
            aws_enum_order(&s(&["INDEXES", "TOTAL", "NONE"])),
            s(&["INDEXES", "TOTAL", "NONE"])
        );
        assert_eq!(
            aws_enum_order(&s(&["OFF", "ON", "OPTIONAL"])),
            s(&["OPTIONAL", "OFF", "ON"])
        );
        assert_eq!(aws_enum_order(&s(&["None", "Tail"])), s(&["Tail", "None"]));
    }

    #[test]
    fn regexes() {
        assert_eq!(
            rust_regex(r"arn:aws.*:kinesis:.*:\d{12}:stream/\S+"),
            r"arn:aws.*:kinesis:.*:[0-9]{12}:stream/\S+"
        );
        assert_eq!(rust_regex(r"[\d\-]+"), r"[0-9\-]+");
        assert_eq!(
            rust_regex(r"arn:.*:s3:::[\w\.\-]{1,255}"),
            r"arn:.*:s3:::[a-zA-Z0-9_\.\-]{1,255}"
        );
        assert_eq!(rust_regex(r"\w+"), r"[a-zA-Z0-9_]+");
        assert_eq!(
            rust_regex(r"((?!-)[A-Za-z0-9-]{1,63}(?<!-)\.)+x"),
            r"([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+x"
        );
        assert_eq!(rust_regex(r"^(?!\s*$).+"), r".*[^ \t\n\x0B\f\r].*");
        let tag_key = regex::Regex::new(&format!("^(?:{})$", rust_regex(r"^(?!aws:)[\p{L}:]*$")))
            .expect("compiles");
        for (key, ok) in [
            ("", true),
            ("aws", true),
            ("aws:x", false),
            ("aws:", false),
            ("awsx", true),
            ("aw:s", true),
            ("b", true),
            ("x1", false),
        ] {
            assert_eq!(tag_key.is_match(key), ok, "{key}");
        }
        assert_eq!(
            java_package("Kinesis_20131202"),
            "com.amazonaws.kinesis.v20131202"
        );
        assert_eq!(lower_first("StreamName"), "streamName");
    }
}
