//! IAM policy documents and their evaluation, as AWS evaluates them for one account and
//! cross-account.
//!
//! A document is `{"Version": ..., "Statement": [...]}` (a single statement object is
//! accepted too). A statement has `Effect` (`Allow`/`Deny`), `Action` or `NotAction`
//! (`kinesis:PutRecord`, `kinesis:Get*`, `*`; matched case-insensitively, `*` and `?`
//! wildcards), `Resource` or `NotResource` (ARNs with wildcards, case-sensitive), and in a
//! resource policy `Principal` or `NotPrincipal` (`"*"`, `{"AWS": "*"}`, an account id, an
//! account root ARN, or a user/role ARN; an assumed-role session matches its role ARN).
//!
//! `Condition` supports a subset: the operators `StringEquals`, `StringNotEquals`,
//! `StringEqualsIgnoreCase`, `StringLike`, `StringNotLike`, `ArnEquals`, `ArnLike`,
//! `ArnNotEquals`, `ArnNotLike` and `Bool` (each with `IfExists` too), on the keys
//! `aws:PrincipalArn`, `aws:PrincipalAccount`, `aws:SecureTransport`, `aws:username` and
//! `aws:userid`. A document using any other operator or key is refused when it is parsed
//! ([`PolicyError::Unsupported`]), so a policy never silently means less than it says.
//!
//! Evaluation ([`evaluate`]): an explicit `Deny` in any applicable policy wins; otherwise a
//! same-account request is allowed by an `Allow` in an identity policy or one in the
//! resource policy that names the principal (a resource policy that names only the account
//! delegates to the account's identity policies, as on AWS); a cross-account request needs
//! both an identity `Allow` and a resource-policy `Allow`. The account root user (a
//! principal `arn:aws:iam::ACCOUNT:root`) is allowed everything in its own account unless a
//! resource policy denies it.
//!
//! Not here: which policies apply to a request and what resource it acts on (`authz`).

use serde_json::Value;

/// Statements in one document at most (IAM's size limits keep real ones far smaller).
pub const STATEMENTS_MAX: usize = 1_000;
/// Values in one Action/Resource/Principal/Condition list at most.
pub const VALUES_MAX: usize = 1_000;
/// Bytes of a document at most (PutResourcePolicy allows 20 KiB; IAM managed policies 6 KiB).
pub const DOCUMENT_BYTES_MAX: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the policy document is not valid JSON: {0}")]
    Json(String),
    #[error("the policy document is malformed: {0}")]
    Malformed(String),
    #[error("the policy document uses {0}, which Millrace does not support")]
    Unsupported(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Match {
    /// The element lists what matches.
    Is(Vec<String>),
    /// `Not...`: everything but what it lists matches.
    Not(Vec<String>),
    /// Absent (a statement without Resource in a resource policy applies to the resource).
    Any,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PrincipalValue {
    Everyone,
    Account(String),
    Arn(String),
    /// `Service`, `Federated`, `CanonicalUser`: never a Millrace principal.
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ConditionTest {
    operator: String,
    if_exists: bool,
    key: String,
    values: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Statement {
    effect: Effect,
    actions: Match,
    resources: Match,
    /// `None`: no Principal element (identity policies).
    principals: Option<(bool, Vec<PrincipalValue>)>,
    conditions: Vec<ConditionTest>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyDocument {
    statements: Vec<Statement>,
}

/// What a request is, for evaluation.
#[derive(Clone, Debug)]
pub struct RequestFacts<'a> {
    pub principal_arn: &'a str,
    pub principal_account: &'a str,
    /// `kinesis:PutRecord`.
    pub action: &'a str,
    /// The resource ARN, or `*` for actions on no resource.
    pub resource: &'a str,
    pub secure_transport: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    ExplicitIdentity,
    ExplicitResource,
    NoIdentityAllow,
    NoResourceAllow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(DenyReason),
}

impl DenyReason {
    /// AWS's access-denied message for this reason.
    pub fn message(self, facts: &RequestFacts<'_>) -> String {
        let head = format!(
            "User: {} is not authorized to perform: {} on resource: {}",
            facts.principal_arn, facts.action, facts.resource
        );
        match self {
            DenyReason::ExplicitIdentity => {
                format!("{head} with an explicit deny in an identity-based policy")
            }
            DenyReason::ExplicitResource => {
                format!("{head} with an explicit deny in a resource-based policy")
            }
            DenyReason::NoIdentityAllow => format!(
                "{head} because no identity-based policy allows the {} action",
                facts.action
            ),
            DenyReason::NoResourceAllow => format!(
                "{head} because no resource-based policy allows the {} action",
                facts.action
            ),
        }
    }
}

fn strings(value: &Value, what: &str) -> Result<Vec<String>, PolicyError> {
    let list: Vec<String> = match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Bool(b) => Ok(b.to_string()),
                _ => Err(PolicyError::Malformed(format!(
                    "{what} must be a string or a list of strings"
                ))),
            })
            .collect::<Result<_, _>>()?,
        Value::Bool(b) => vec![b.to_string()],
        _ => {
            return Err(PolicyError::Malformed(format!(
                "{what} must be a string or a list of strings"
            )));
        }
    };
    if list.len() > VALUES_MAX {
        return Err(PolicyError::Malformed(format!(
            "{what} lists more than {VALUES_MAX} values"
        )));
    }
    Ok(list)
}

fn principal_value(text: &str) -> PrincipalValue {
    if text == "*" {
        PrincipalValue::Everyone
    } else if text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit()) {
        PrincipalValue::Account(text.to_string())
    } else if let Some(account) = text
        .strip_prefix("arn:aws:iam::")
        .and_then(|rest| rest.strip_suffix(":root"))
    {
        PrincipalValue::Account(account.to_string())
    } else {
        PrincipalValue::Arn(text.to_string())
    }
}

fn principals(value: &Value) -> Result<Vec<PrincipalValue>, PolicyError> {
    match value {
        Value::String(s) if s == "*" => Ok(vec![PrincipalValue::Everyone]),
        Value::Object(map) => {
            let mut out = Vec::new();
            for (kind, values) in map {
                let values = strings(values, "Principal")?;
                if kind == "AWS" {
                    out.extend(values.iter().map(|v| principal_value(v)));
                } else {
                    out.push(PrincipalValue::Other);
                }
            }
            Ok(out)
        }
        _ => Err(PolicyError::Malformed(
            "Principal must be \"*\" or an object such as {\"AWS\": ...}".into(),
        )),
    }
}

const CONDITION_OPERATORS: [&str; 10] = [
    "StringEquals",
    "StringNotEquals",
    "StringEqualsIgnoreCase",
    "StringLike",
    "StringNotLike",
    "ArnEquals",
    "ArnLike",
    "ArnNotEquals",
    "ArnNotLike",
    "Bool",
];
const CONDITION_KEYS: [&str; 5] = [
    "aws:principalarn",
    "aws:principalaccount",
    "aws:securetransport",
    "aws:username",
    "aws:userid",
];

fn conditions(value: &Value) -> Result<Vec<ConditionTest>, PolicyError> {
    let Value::Object(operators) = value else {
        return Err(PolicyError::Malformed("Condition must be an object".into()));
    };
    let mut out = Vec::new();
    for (operator, tests) in operators {
        let (base, if_exists) = match operator.strip_suffix("IfExists") {
            Some(base) => (base, true),
            None => (operator.as_str(), false),
        };
        if !CONDITION_OPERATORS.contains(&base) {
            return Err(PolicyError::Unsupported(format!(
                "the condition operator {operator}"
            )));
        }
        let Value::Object(tests) = tests else {
            return Err(PolicyError::Malformed(format!(
                "Condition operator {operator} must map keys to values"
            )));
        };
        for (key, values) in tests {
            if !CONDITION_KEYS.contains(&key.to_ascii_lowercase().as_str()) {
                return Err(PolicyError::Unsupported(format!("the condition key {key}")));
            }
            out.push(ConditionTest {
                operator: base.to_string(),
                if_exists,
                key: key.to_ascii_lowercase(),
                values: strings(values, "Condition")?,
            });
        }
    }
    Ok(out)
}

fn statement(value: &Value) -> Result<Statement, PolicyError> {
    let Value::Object(map) = value else {
        return Err(PolicyError::Malformed(
            "a Statement must be an object".into(),
        ));
    };
    for key in map.keys() {
        if !matches!(
            key.as_str(),
            "Sid"
                | "Effect"
                | "Action"
                | "NotAction"
                | "Resource"
                | "NotResource"
                | "Principal"
                | "NotPrincipal"
                | "Condition"
        ) {
            return Err(PolicyError::Malformed(format!(
                "unknown statement element {key}"
            )));
        }
    }
    let effect = match map.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        _ => {
            return Err(PolicyError::Malformed(
                "Effect must be \"Allow\" or \"Deny\"".into(),
            ));
        }
    };
    let actions = match (map.get("Action"), map.get("NotAction")) {
        (Some(v), None) => Match::Is(strings(v, "Action")?),
        (None, Some(v)) => Match::Not(strings(v, "NotAction")?),
        _ => {
            return Err(PolicyError::Malformed(
                "a statement needs exactly one of Action and NotAction".into(),
            ));
        }
    };
    let resources = match (map.get("Resource"), map.get("NotResource")) {
        (Some(v), None) => Match::Is(strings(v, "Resource")?),
        (None, Some(v)) => Match::Not(strings(v, "NotResource")?),
        (None, None) => Match::Any,
        _ => {
            return Err(PolicyError::Malformed(
                "a statement cannot have both Resource and NotResource".into(),
            ));
        }
    };
    let principals = match (map.get("Principal"), map.get("NotPrincipal")) {
        (Some(v), None) => Some((false, principals(v)?)),
        (None, Some(v)) => Some((true, principals(v)?)),
        (None, None) => None,
        _ => {
            return Err(PolicyError::Malformed(
                "a statement cannot have both Principal and NotPrincipal".into(),
            ));
        }
    };
    let conditions = match map.get("Condition") {
        Some(v) => conditions(v)?,
        None => Vec::new(),
    };
    Ok(Statement {
        effect,
        actions,
        resources,
        principals,
        conditions,
    })
}

impl PolicyDocument {
    pub fn parse(text: &str) -> Result<PolicyDocument, PolicyError> {
        if text.len() > DOCUMENT_BYTES_MAX {
            return Err(PolicyError::Malformed(format!(
                "the document is longer than {DOCUMENT_BYTES_MAX} bytes"
            )));
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| PolicyError::Json(e.to_string()))?;
        let Value::Object(map) = &value else {
            return Err(PolicyError::Malformed(
                "the document must be an object".into(),
            ));
        };
        let statements = match map.get("Statement") {
            Some(Value::Array(items)) => {
                if items.len() > STATEMENTS_MAX {
                    return Err(PolicyError::Malformed(format!(
                        "more than {STATEMENTS_MAX} statements"
                    )));
                }
                items.iter().map(statement).collect::<Result<Vec<_>, _>>()?
            }
            Some(single @ Value::Object(_)) => vec![statement(single)?],
            // GetResourcePolicy's `{}`: no statements, allows nothing.
            None => Vec::new(),
            Some(_) => {
                return Err(PolicyError::Malformed(
                    "Statement must be an object or a list".into(),
                ));
            }
        };
        Ok(PolicyDocument { statements })
    }
}

/// `*` matches any run of characters, `?` any one; case-insensitive when asked.
pub fn wildcard_match(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let eq = |a: char, b: char| {
        if ignore_case {
            a.to_lowercase().eq(b.to_lowercase())
        } else {
            a == b
        }
    };
    // Iterative matching with backtracking to the last star: O(len(p) * len(t)) worst case.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || t.get(ti).is_some_and(|&tc| eq(c, tc)) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

/// The role ARN of an assumed-role session (`arn:aws:sts::A:assumed-role/R/s` →
/// `arn:aws:iam::A:role/R`).
fn role_of_session(principal_arn: &str) -> Option<String> {
    let rest = principal_arn.strip_prefix("arn:aws:sts::")?;
    let (account, resource) = rest.split_once(':')?;
    let role = resource.strip_prefix("assumed-role/")?.split('/').next()?;
    Some(format!("arn:aws:iam::{account}:role/{role}"))
}

/// How a resource-policy statement's principal matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PrincipalMatch {
    No,
    /// Through the account (id or root ARN): delegation to the account's IAM policies.
    Account,
    /// The principal itself, or everyone.
    Direct,
}

fn principal_match(values: &[PrincipalValue], facts: &RequestFacts<'_>) -> PrincipalMatch {
    let role = role_of_session(facts.principal_arn);
    let mut best = PrincipalMatch::No;
    for value in values {
        let m = match value {
            PrincipalValue::Everyone => PrincipalMatch::Direct,
            PrincipalValue::Arn(arn)
                if arn == facts.principal_arn || role.as_deref() == Some(arn.as_str()) =>
            {
                PrincipalMatch::Direct
            }
            PrincipalValue::Account(account) if account == facts.principal_account => {
                if is_root(facts) {
                    PrincipalMatch::Direct
                } else {
                    PrincipalMatch::Account
                }
            }
            _ => PrincipalMatch::No,
        };
        best = best.max(m);
    }
    best
}

fn is_root(facts: &RequestFacts<'_>) -> bool {
    facts.principal_arn == format!("arn:aws:iam::{}:root", facts.principal_account)
}

fn condition_value(key: &str, facts: &RequestFacts<'_>) -> Option<String> {
    match key {
        "aws:principalarn" => Some(facts.principal_arn.to_string()),
        "aws:principalaccount" => Some(facts.principal_account.to_string()),
        "aws:securetransport" => Some(facts.secure_transport.to_string()),
        "aws:username" => facts
            .principal_arn
            .split_once(":user/")
            .map(|(_, name)| name.rsplit('/').next().unwrap_or(name).to_string()),
        "aws:userid" => Some(facts.principal_arn.to_string()),
        _ => None,
    }
}

fn condition_holds(test: &ConditionTest, facts: &RequestFacts<'_>) -> bool {
    let Some(actual) = condition_value(&test.key, facts) else {
        return test.if_exists;
    };
    let any = |f: &dyn Fn(&str) -> bool| test.values.iter().any(|v| f(v));
    match test.operator.as_str() {
        "StringEquals" | "ArnEquals" => any(&|v| v == actual),
        "StringNotEquals" | "ArnNotEquals" => !any(&|v| v == actual),
        "StringEqualsIgnoreCase" => any(&|v| v.eq_ignore_ascii_case(&actual)),
        "StringLike" | "ArnLike" => any(&|v| wildcard_match(v, &actual, false)),
        "StringNotLike" | "ArnNotLike" => !any(&|v| wildcard_match(v, &actual, false)),
        "Bool" => any(&|v| v.eq_ignore_ascii_case(&actual)),
        _ => false,
    }
}

fn matches_list(m: &Match, text: &str, ignore_case: bool) -> bool {
    match m {
        Match::Is(patterns) => patterns
            .iter()
            .any(|p| wildcard_match(p, text, ignore_case)),
        Match::Not(patterns) => !patterns
            .iter()
            .any(|p| wildcard_match(p, text, ignore_case)),
        Match::Any => true,
    }
}

impl Statement {
    /// Action, resource and conditions (not the principal).
    fn applies(&self, facts: &RequestFacts<'_>) -> bool {
        matches_list(&self.actions, facts.action, true)
            && matches_list(&self.resources, facts.resource, false)
            && self.conditions.iter().all(|c| condition_holds(c, facts))
    }

    fn principal(&self, facts: &RequestFacts<'_>) -> PrincipalMatch {
        match &self.principals {
            None => PrincipalMatch::No,
            Some((false, values)) => principal_match(values, facts),
            Some((true, values)) => {
                if principal_match(values, facts) == PrincipalMatch::No {
                    PrincipalMatch::Direct
                } else {
                    PrincipalMatch::No
                }
            }
        }
    }
}

/// The decision for a request, given the principal's identity policies, the resource's
/// policy (if the action has a resource that can carry one) and the resource's account.
pub fn evaluate(
    identity: &[&PolicyDocument],
    resource_policy: Option<&PolicyDocument>,
    resource_account: &str,
    facts: &RequestFacts<'_>,
) -> Decision {
    let identity_statements = || identity.iter().flat_map(|d| d.statements.iter());
    if identity_statements().any(|s| s.effect == Effect::Deny && s.applies(facts)) {
        return Decision::Deny(DenyReason::ExplicitIdentity);
    }
    let resource_statements = || {
        resource_policy
            .into_iter()
            .flat_map(|d| d.statements.iter())
    };
    if resource_statements().any(|s| {
        s.effect == Effect::Deny && s.principal(facts) != PrincipalMatch::No && s.applies(facts)
    }) {
        return Decision::Deny(DenyReason::ExplicitResource);
    }
    let same_account = facts.principal_account == resource_account || facts.resource == "*";
    let identity_allows = (is_root(facts))
        || identity_statements().any(|s| s.effect == Effect::Allow && s.applies(facts));
    let resource_grant = resource_statements()
        .filter(|s| s.effect == Effect::Allow && s.applies(facts))
        .map(|s| s.principal(facts))
        .max()
        .unwrap_or(PrincipalMatch::No);
    if same_account {
        if identity_allows || resource_grant == PrincipalMatch::Direct {
            Decision::Allow
        } else {
            Decision::Deny(DenyReason::NoIdentityAllow)
        }
    } else if !identity_allows {
        Decision::Deny(DenyReason::NoIdentityAllow)
    } else if resource_grant == PrincipalMatch::No {
        Decision::Deny(DenyReason::NoResourceAllow)
    } else {
        Decision::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "123456789012";
    const STREAM: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/orders";
    const PRODUCER: &str = "arn:aws:iam::123456789012:user/producer";

    fn doc(text: &str) -> PolicyDocument {
        match PolicyDocument::parse(text) {
            Ok(doc) => doc,
            Err(error) => panic!("{error}: {text}"),
        }
    }

    fn facts<'a>(principal: &'a str, action: &'a str, resource: &'a str) -> RequestFacts<'a> {
        let account = principal.split(':').nth(4).unwrap_or("");
        RequestFacts {
            principal_arn: principal,
            principal_account: account,
            action,
            resource,
            secure_transport: false,
        }
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("kinesis:Put*", "kinesis:PutRecords", false));
        assert!(wildcard_match(
            "KINESIS:put?ecord",
            "kinesis:PutRecord",
            true
        ));
        assert!(!wildcard_match("kinesis:Put?", "kinesis:PutRecord", true));
        assert!(wildcard_match("*", "", false));
        assert!(wildcard_match(
            "arn:aws:kinesis:*:123456789012:stream/ord*",
            STREAM,
            false
        ));
        assert!(!wildcard_match(
            "arn:aws:kinesis:*:*:stream/Orders",
            STREAM,
            false
        ));
        assert!(wildcard_match("a*b*c", "aXXbYYbZc", false));
        assert!(!wildcard_match("a*b*c", "aXXbYY", false));
    }

    #[test]
    fn least_privilege_producer() {
        let producer = doc(&format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow",
                "Action":["kinesis:PutRecord","kinesis:PutRecords"],"Resource":"{STREAM}"}}]}}"#
        ));
        let put = facts(PRODUCER, "kinesis:PutRecord", STREAM);
        assert_eq!(evaluate(&[&producer], None, ACCOUNT, &put), Decision::Allow);
        let get = facts(PRODUCER, "kinesis:GetRecords", STREAM);
        assert_eq!(
            evaluate(&[&producer], None, ACCOUNT, &get),
            Decision::Deny(DenyReason::NoIdentityAllow)
        );
        let other = "arn:aws:kinesis:us-east-1:123456789012:stream/other";
        let put_other = facts(PRODUCER, "kinesis:PutRecord", other);
        assert_eq!(
            evaluate(&[&producer], None, ACCOUNT, &put_other),
            Decision::Deny(DenyReason::NoIdentityAllow)
        );
        assert_eq!(
            DenyReason::NoIdentityAllow.message(&put_other),
            "User: arn:aws:iam::123456789012:user/producer is not authorized to perform: \
             kinesis:PutRecord on resource: arn:aws:kinesis:us-east-1:123456789012:stream/other \
             because no identity-based policy allows the kinesis:PutRecord action"
        );
    }

    #[test]
    fn explicit_deny_wins_everywhere() {
        let allow_all = doc(r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#);
        let deny_delete =
            doc(r#"{"Statement":[{"Effect":"Deny","Action":"kinesis:Delete*","Resource":"*"}]}"#);
        let delete = facts(PRODUCER, "kinesis:DeleteStream", STREAM);
        assert_eq!(
            evaluate(&[&allow_all, &deny_delete], None, ACCOUNT, &delete),
            Decision::Deny(DenyReason::ExplicitIdentity)
        );
        let resource_deny = doc(&format!(
            r#"{{"Statement":[{{"Effect":"Deny","Principal":{{"AWS":"{PRODUCER}"}},
                "Action":"kinesis:*","Resource":"{STREAM}"}}]}}"#
        ));
        assert_eq!(
            evaluate(&[&allow_all], Some(&resource_deny), ACCOUNT, &delete),
            Decision::Deny(DenyReason::ExplicitResource)
        );
        assert!(
            DenyReason::ExplicitResource
                .message(&delete)
                .ends_with("with an explicit deny in a resource-based policy")
        );
        // NotAction: everything except reads is denied.
        let read_only = doc(
            r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},
                {"Effect":"Deny","NotAction":["kinesis:Get*","kinesis:Describe*","kinesis:List*"],
                 "Resource":"*"}]}"#,
        );
        assert_eq!(
            evaluate(&[&read_only], None, ACCOUNT, &delete),
            Decision::Deny(DenyReason::ExplicitIdentity)
        );
        let list = facts(PRODUCER, "kinesis:ListShards", STREAM);
        assert_eq!(
            evaluate(&[&read_only], None, ACCOUNT, &list),
            Decision::Allow
        );
    }

    #[test]
    fn resource_policies_same_and_cross_account() {
        let reader = "arn:aws:iam::123456789012:user/reader";
        let grant = doc(&format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow",
                "Principal":{{"AWS":"{reader}"}},"Action":"kinesis:GetRecords",
                "Resource":"{STREAM}"}}]}}"#
        ));
        let get = facts(reader, "kinesis:GetRecords", STREAM);
        // Same account: the resource policy alone suffices.
        assert_eq!(evaluate(&[], Some(&grant), ACCOUNT, &get), Decision::Allow);
        // Granting the account only delegates to identity policies.
        let to_account = doc(&format!(
            r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},
                "Action":"kinesis:GetRecords","Resource":"{STREAM}"}}]}}"#
        ));
        assert_eq!(
            evaluate(&[], Some(&to_account), ACCOUNT, &get),
            Decision::Deny(DenyReason::NoIdentityAllow)
        );
        // Cross-account: both sides must allow.
        let stranger = "arn:aws:iam::111122223333:role/analytics";
        let cross = facts(stranger, "kinesis:GetRecords", STREAM);
        let identity =
            doc(r#"{"Statement":[{"Effect":"Allow","Action":"kinesis:*","Resource":"*"}]}"#);
        assert_eq!(
            evaluate(&[&identity], None, ACCOUNT, &cross),
            Decision::Deny(DenyReason::NoResourceAllow)
        );
        let to_stranger = doc(
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"111122223333"},
                "Action":"kinesis:GetRecords"}]}"#,
        );
        assert_eq!(
            evaluate(&[&identity], Some(&to_stranger), ACCOUNT, &cross),
            Decision::Allow
        );
        assert_eq!(
            evaluate(&[], Some(&to_stranger), ACCOUNT, &cross),
            Decision::Deny(DenyReason::NoIdentityAllow)
        );
        // An assumed-role session matches its role.
        let session = "arn:aws:sts::111122223333:assumed-role/analytics/job-7";
        let to_role = doc(&format!(
            r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{stranger}"}},
                "Action":"kinesis:GetRecords","Resource":"{STREAM}"}}]}}"#
        ));
        let by_session = facts(session, "kinesis:GetRecords", STREAM);
        assert_eq!(
            evaluate(&[&identity], Some(&to_role), ACCOUNT, &by_session),
            Decision::Allow
        );
    }

    #[test]
    fn root_and_conditions() {
        let root = "arn:aws:iam::123456789012:root";
        let any = facts(root, "kinesis:DeleteStream", STREAM);
        assert_eq!(evaluate(&[], None, ACCOUNT, &any), Decision::Allow);
        let tls_only = doc(
            r#"{"Statement":[{"Effect":"Allow","Action":"kinesis:*","Resource":"*"},
                {"Effect":"Deny","Action":"*","Resource":"*",
                 "Condition":{"Bool":{"aws:SecureTransport":"false"}}}]}"#,
        );
        let mut put = facts(PRODUCER, "kinesis:PutRecord", STREAM);
        assert_eq!(
            evaluate(&[&tls_only], None, ACCOUNT, &put),
            Decision::Deny(DenyReason::ExplicitIdentity)
        );
        put.secure_transport = true;
        assert_eq!(evaluate(&[&tls_only], None, ACCOUNT, &put), Decision::Allow);
        let unsupported = PolicyDocument::parse(
            r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*",
                "Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}"#,
        );
        assert!(matches!(unsupported, Err(PolicyError::Unsupported(_))));
        assert!(matches!(
            PolicyDocument::parse(r#"{"Statement":[{"Effect":"Maybe","Action":"*"}]}"#),
            Err(PolicyError::Malformed(_))
        ));
        assert_eq!(
            PolicyDocument::parse("{}").map(|d| d.statements.len()),
            Ok(0)
        );
    }
}
