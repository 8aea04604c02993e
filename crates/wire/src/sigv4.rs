//! AWS Signature Version 4, verified the way an AWS front end verifies it.
//!
//! [`verify`] takes a request as it arrived (method, raw path and query, every header, the
//! body), the wall-clock time, the service name that must appear in the credential scope,
//! and a lookup from access key id to [`Secret`]. It runs AWS's checks in AWS's order
//! (documented by the coral front end's answers that kinesalite and dynalite recorded):
//!
//! 1. presence: an `Authorization` header or an `X-Amz-Algorithm` query parameter, not both
//!    (`MissingAuthenticationTokenException`, `InvalidSignatureException`);
//! 2. completeness: Credential, SignedHeaders, Signature and a date
//!    (`IncompleteSignatureException`);
//! 3. the date: ISO-8601 basic format, within 15 minutes of now (presigned: not past
//!    `X-Amz-Expires`) (`InvalidSignatureException` "Signature expired: ...");
//! 4. `host` (or HTTP/2's `:authority`) among the signed headers;
//! 5. the algorithm (`AWS4-HMAC-SHA256` only) and the credential's five elements;
//! 6. the scope: region, service, terminator and date (`InvalidSignatureException`);
//! 7. the access key (`UnrecognizedClientException`);
//! 8. the signature, compared in constant time (`InvalidSignatureException`, with the
//!    canonical request and string to sign the server expected, as AWS includes them);
//! 9. the session token, when the credential has one or the request carries one.
//!
//! The payload hash is the body's SHA-256, except that a client may declare
//! `x-amz-content-sha256: UNSIGNED-PAYLOAD` (the body is then not covered) or
//! `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` (an `aws-chunked` body whose every chunk carries a
//! signature chained from the request's; [`verify`] checks them all and returns the decoded
//! body). A hex hash in that header must be the body's.
//!
//! Not here: which credentials exist (the server's configuration) and what the caller may
//! do (authorization). Secrets and signatures never appear in an error message: the
//! canonical request and string to sign do, as on AWS; they hold nothing secret.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::ErrorKind;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
pub const TERMINATOR: &str = "aws4_request";
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
pub const STREAMING_PAYLOAD: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
/// How far a request's date may be from the server's clock.
pub const CLOCK_SKEW_SECS_MAX: i64 = 15 * 60;
/// The longest validity of a presigned request (a week, as AWS allows).
pub const PRESIGNED_EXPIRES_SECS_MAX: i64 = 7 * 24 * 3600;
/// Chunks of an `aws-chunked` body at most (a 16 MiB body of 8 KiB chunks, AWS's minimum
/// chunk size, is 2,048).
pub const CHUNKS_MAX: usize = 4096;

/// SHA-256 of the empty string.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

type HmacSha256 = Hmac<Sha256>;

/// What the server knows about an access key.
#[derive(Clone)]
pub struct Secret {
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A request as it arrived. Header names are lower case (as `http::HeaderMap` keeps them);
/// a header that appears several times appears several times here, in arrival order.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The path as sent on the wire (still percent-encoded).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    pub headers: &'a [(&'a str, &'a str)],
    /// HTTP/2's `:authority` (or the request URI's authority), for clients that sign it.
    pub authority: Option<&'a str>,
}

/// A request whose signature checked out.
#[derive(Debug)]
pub struct Verified {
    pub access_key: String,
    pub region: String,
    /// The decoded body of an `aws-chunked` (`STREAMING-...`) request; `None` when the
    /// body was sent as is.
    pub decoded_body: Option<Vec<u8>>,
    /// False when the client declared `UNSIGNED-PAYLOAD`.
    pub payload_signed: bool,
}

/// An AWS authentication error: its `__type` and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthError {
    pub kind: ErrorKind,
    pub message: String,
}

impl AuthError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> AuthError {
        AuthError {
            kind,
            message: message.into(),
        }
    }

    fn incomplete(message: impl Into<String>) -> AuthError {
        AuthError::new(ErrorKind::IncompleteSignatureException, message)
    }

    fn invalid(message: impl Into<String>) -> AuthError {
        AuthError::new(ErrorKind::InvalidSignatureException, message)
    }
}

pub const MISSING_TOKEN_MESSAGE: &str = "Missing Authentication Token";
pub const UNKNOWN_KEY_MESSAGE: &str = "The security token included in the request is invalid.";
/// AWS words the session-token check without the final period.
pub const BAD_TOKEN_MESSAGE: &str = "The security token included in the request is invalid";
pub const MISMATCH_MESSAGE: &str = "The request signature we calculated does not match the \
     signature you provided. Check your AWS Secret Access Key and signing method. Consult the \
     service documentation for details.";

/// The authentication parameters of a request, from its header or its query string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthParams {
    pub presigned: bool,
    pub algorithm: String,
    pub credential: String,
    pub signed_headers: String,
    pub signature: String,
    /// `X-Amz-Date` (or the `Date` header) as sent.
    pub date: String,
    pub expires: Option<String>,
    pub security_token: Option<String>,
}

fn header<'a>(request: &SignedRequest<'a>, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// Query parameters, percent-decoded (`+` stays a plus, as AWS canonicalises it).
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn query_param(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// Parses `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...` into pairs.
fn header_params(header: &str) -> Vec<(String, String)> {
    header
        .split([',', ' '])
        .skip(1)
        .filter(|part| !part.is_empty())
        .filter_map(|part| part.trim().split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Steps 1 and 2: finds the authentication parameters, or says what is missing.
pub fn auth_params(request: &SignedRequest<'_>) -> Result<AuthParams, AuthError> {
    let auth_header = header(request, "authorization");
    let pairs = query_pairs(request.query);
    let auth_query = query_param(&pairs, "X-Amz-Algorithm").is_some();
    if auth_header.is_some() && auth_query {
        return Err(AuthError::invalid(
            "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header.",
        ));
    }
    match auth_header {
        Some(value) if value.trim_start().starts_with("AWS4-") => {
            let params = header_params(value);
            let get = |name: &str| {
                params
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .filter(|v| !v.is_empty())
            };
            let date = header(request, "x-amz-date").or_else(|| header(request, "date"));
            let mut message = String::new();
            for name in ["Credential", "Signature", "SignedHeaders"] {
                if get(name).is_none() {
                    message.push_str(&format!(
                        "Authorization header requires '{name}' parameter. "
                    ));
                }
            }
            if date.is_none() {
                message.push_str(
                    "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. ",
                );
            }
            if !message.is_empty() {
                message.push_str(&format!("Authorization={value}"));
                return Err(AuthError::incomplete(message));
            }
            Ok(AuthParams {
                presigned: false,
                algorithm: value
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .trim_end_matches(',')
                    .to_string(),
                credential: get("Credential").unwrap_or_default(),
                signed_headers: get("SignedHeaders").unwrap_or_default(),
                signature: get("Signature").unwrap_or_default(),
                date: date.unwrap_or("").to_string(),
                expires: None,
                security_token: header(request, "x-amz-security-token").map(str::to_string),
            })
        }
        Some(_) => Err(AuthError::new(
            ErrorKind::MissingAuthenticationTokenException,
            MISSING_TOKEN_MESSAGE,
        )),
        None if auth_query => {
            let mut message = String::new();
            for name in [
                "X-Amz-Algorithm",
                "X-Amz-Credential",
                "X-Amz-Signature",
                "X-Amz-SignedHeaders",
                "X-Amz-Date",
            ] {
                if query_param(&pairs, name).is_none_or(|v| v.is_empty()) {
                    message.push_str(&format!(
                        "AWS query-string parameters must include '{name}'. "
                    ));
                }
            }
            if !message.is_empty() {
                message.push_str("Re-examine the query-string parameters.");
                return Err(AuthError::incomplete(message));
            }
            let get = |name: &str| query_param(&pairs, name).unwrap_or_default();
            Ok(AuthParams {
                presigned: true,
                algorithm: get("X-Amz-Algorithm"),
                credential: get("X-Amz-Credential"),
                signed_headers: get("X-Amz-SignedHeaders"),
                signature: get("X-Amz-Signature"),
                date: get("X-Amz-Date"),
                expires: query_param(&pairs, "X-Amz-Expires"),
                security_token: query_param(&pairs, "X-Amz-Security-Token")
                    .or_else(|| header(request, "x-amz-security-token").map(str::to_string)),
            })
        }
        None => Err(AuthError::new(
            ErrorKind::MissingAuthenticationTokenException,
            MISSING_TOKEN_MESSAGE,
        )),
    }
}

/// The credential scope `AKID/20150830/us-east-1/service/aws4_request`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub access_key: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub terminator: String,
}

impl Scope {
    /// The scope without the access key, as the string to sign holds it.
    pub fn string(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.date, self.region, self.service, self.terminator
        )
    }
}

/// Splits a credential into its five elements (trailing slashes are ignored, as on AWS).
pub fn parse_credential(credential: &str) -> Result<Scope, AuthError> {
    let parts: Vec<&str> = credential.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        [access_key, date, region, service, terminator] => Ok(Scope {
            access_key: access_key.to_string(),
            date: date.to_string(),
            region: region.to_string(),
            service: service.to_string(),
            terminator: terminator.to_string(),
        }),
        _ => Err(AuthError::incomplete(format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. \
             keyid/date/region/service/term, got '{credential}'"
        ))),
    }
}

fn valid_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 64
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Step 6: the scope's region, service, terminator and date; every violation is reported.
pub fn check_scope(scope: &Scope, service: &str, amz_date: &str) -> Result<(), AuthError> {
    let mut message = String::new();
    if !valid_region(&scope.region) {
        message.push_str(&format!(
            "Credential should be scoped to a valid region, not '{}'. ",
            scope.region
        ));
    }
    if scope.service != service {
        message.push_str(&format!(
            "Credential should be scoped to correct service: '{service}'. "
        ));
    }
    if scope.terminator != TERMINATOR {
        message.push_str(&format!(
            "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{}'. ",
            scope.terminator
        ));
    }
    let day = amz_date.get(..8).unwrap_or(amz_date);
    if scope.date != day {
        message.push_str(&format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from \
             HTTP: '{}' != '{day}', from '{amz_date}'.",
            scope.date
        ));
    }
    if message.is_empty() {
        Ok(())
    } else {
        Err(AuthError::invalid(message.trim_end().to_string()))
    }
}

// ---------------------------------------------------------------------------------------
// Time: ISO-8601 basic format (20150830T123600Z) and RFC 1123 (the `Date` header).

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Seconds since the epoch → `20150830T123600Z`.
pub fn format_amz_date(epoch_secs: i64) -> String {
    let days = epoch_secs.div_euclid(86_400);
    let secs = epoch_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

fn digits(text: &str, range: std::ops::Range<usize>) -> Option<i64> {
    let part = text.get(range)?;
    if !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

/// `20150830T123600Z` → seconds since the epoch.
pub fn parse_amz_date(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 16 || bytes.get(8) != Some(&b'T') || bytes.get(15) != Some(&b'Z') {
        return None;
    }
    let (year, month, day) = (
        digits(text, 0..4)?,
        digits(text, 4..6)?,
        digits(text, 6..8)?,
    );
    let (hour, minute, second) = (
        digits(text, 9..11)?,
        digits(text, 11..13)?,
        digits(text, 13..15)?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// `Sun, 30 Aug 2015 12:36:00 GMT` → seconds since the epoch.
pub fn parse_http_date(text: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let rest = text.split_once(", ").map_or(text, |(_, r)| r);
    let mut parts = rest.split_whitespace();
    let day: i64 = parts.next()?.parse().ok()?;
    let month_name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? as i64 + 1;
    let year: i64 = parts.next()?.parse().ok()?;
    let time = parts.next()?;
    if parts.next() != Some("GMT") {
        return None;
    }
    let mut hms = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (hms.next()??, hms.next()??, hms.next()??);
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Step 3: the request's date (ISO form for the string to sign, and seconds), within the
/// allowed skew of `now_secs` (and, presigned, not past its expiry).
fn check_date(params: &AuthParams, now_secs: i64) -> Result<(String, i64), AuthError> {
    let bad_format = || {
        AuthError::incomplete(format!(
            "Date must be in ISO-8601 'basic format'. Got '{}'. See \
             http://en.wikipedia.org/wiki/ISO_8601",
            params.date
        ))
    };
    let secs = parse_amz_date(&params.date)
        .or_else(|| {
            (!params.presigned)
                .then(|| parse_http_date(&params.date))
                .flatten()
        })
        .ok_or_else(bad_format)?;
    let amz_date = format_amz_date(secs);
    let earliest = now_secs - CLOCK_SKEW_SECS_MAX;
    let latest = now_secs + CLOCK_SKEW_SECS_MAX;
    if secs > latest {
        return Err(AuthError::invalid(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + 15 min.)",
            format_amz_date(latest),
            format_amz_date(now_secs)
        )));
    }
    match &params.expires {
        None if params.presigned => {
            return Err(AuthError::incomplete(
                "AWS query-string parameters must include 'X-Amz-Expires'. Re-examine the \
                 query-string parameters.",
            ));
        }
        None => {
            if secs < earliest {
                return Err(AuthError::invalid(format!(
                    "Signature expired: {amz_date} is now earlier than {} ({} - 15 min.)",
                    format_amz_date(earliest),
                    format_amz_date(now_secs)
                )));
            }
        }
        Some(expires) => {
            let expires: i64 = expires
                .parse()
                .ok()
                .filter(|e| (1..=PRESIGNED_EXPIRES_SECS_MAX).contains(e))
                .ok_or_else(|| {
                    AuthError::incomplete(format!(
                        "X-Amz-Expires must be a number of seconds from 1 to \
                         {PRESIGNED_EXPIRES_SECS_MAX}, got '{expires}'."
                    ))
                })?;
            if secs + expires < now_secs {
                return Err(AuthError::invalid(format!(
                    "Signature expired: {amz_date} is now earlier than {} ({} - {expires} sec.)",
                    format_amz_date(now_secs - expires),
                    format_amz_date(now_secs)
                )));
            }
        }
    }
    Ok((amz_date, secs))
}

// ---------------------------------------------------------------------------------------
// Canonical request.

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// URI-encodes every byte but the unreserved ones (and `/` when `keep_slash`), upper-case hex.
pub fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes; a malformed escape stays as it is.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The canonical URI of a path as sent on the wire: dot segments resolved and repeated
/// slashes collapsed, then every segment URI-encoded once more (so `%20` on the wire signs
/// as `%2520`, as every SDK signs for services other than S3).
pub fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut out = String::from("/");
    out.push_str(&uri_encode(&segments.join("/"), true));
    if path.len() > 1 && path.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
    out
}

/// The canonical query string: every pair decoded, encoded strictly, sorted by name then
/// value. `X-Amz-Signature` is left out (it cannot sign itself).
pub fn canonical_query(query: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> = query_pairs(query)
        .into_iter()
        .filter(|(k, _)| k != "X-Amz-Signature")
        .map(|(k, v)| (uri_encode(&k, false), uri_encode(&v, false)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A header value as signed: trimmed, runs of spaces collapsed to one.
fn canonical_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The value of one signed header: every occurrence, canonicalised, joined by commas.
/// `host` and `:authority` stand for each other (HTTP/2 carries the host as `:authority`).
fn signed_header_value(request: &SignedRequest<'_>, name: &str) -> String {
    let values: Vec<String> = request
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| canonical_value(v))
        .collect();
    if !values.is_empty() {
        return values.join(",");
    }
    match name {
        ":authority" => header(request, "host").or(request.authority),
        "host" => request.authority,
        _ => None,
    }
    .map(canonical_value)
    .unwrap_or_default()
}

/// The canonical request, given the signed header names as the client listed them.
pub fn canonical_request(
    request: &SignedRequest<'_>,
    signed_headers: &str,
    payload_hash: &str,
) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(request.method);
    out.push('\n');
    out.push_str(&canonical_uri(request.path));
    out.push('\n');
    out.push_str(&canonical_query(request.query));
    out.push('\n');
    for name in signed_headers.split(';').filter(|n| !n.is_empty()) {
        let name = name.to_ascii_lowercase();
        out.push_str(&name);
        out.push(':');
        out.push_str(&signed_header_value(request, &name));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(signed_headers);
    out.push('\n');
    out.push_str(payload_hash);
    out
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xF)]));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn string_to_sign(amz_date: &str, scope: &Scope, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        scope.string(),
        sha256_hex(canonical_request.as_bytes())
    )
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0; 32],
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `kSigning` = HMAC chain of "AWS4" + secret over date, region, service, "aws4_request".
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, TERMINATOR.as_bytes())
}

/// The hex signature of a string to sign.
pub fn sign(signing_key: &[u8; 32], string_to_sign: &str) -> String {
    hex(&hmac(signing_key, string_to_sign.as_bytes()))
}

/// True when `provided` (hex) is the HMAC of `string_to_sign`; constant time in the
/// signature's bytes.
pub fn signature_matches(signing_key: &[u8; 32], string_to_sign: &str, provided: &str) -> bool {
    let Some(provided) = unhex(provided) else {
        return false;
    };
    let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(signing_key) else {
        return false;
    };
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(&provided).is_ok()
}

fn mismatch(canonical: &str, string_to_sign: &str) -> AuthError {
    AuthError::invalid(format!(
        "{MISMATCH_MESSAGE}\n\nThe Canonical String for this request should have been\n\
         '{canonical}'\n\nThe String-to-Sign should have been\n'{string_to_sign}'\n"
    ))
}

/// Decodes an `aws-chunked` body, checking each chunk's signature against the chain that
/// starts at the request's (seed) signature.
pub fn decode_chunked(
    body: &[u8],
    signing_key: &[u8; 32],
    amz_date: &str,
    scope: &Scope,
    seed_signature: &str,
) -> Result<Vec<u8>, AuthError> {
    let malformed = || AuthError::incomplete("The aws-chunked request body is malformed.");
    let mut decoded = Vec::with_capacity(body.len());
    let mut previous = seed_signature.to_string();
    let mut rest = body;
    for _ in 0..CHUNKS_MAX {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(malformed)?;
        let line = std::str::from_utf8(rest.get(..line_end).ok_or_else(malformed)?)
            .map_err(|_| malformed())?;
        let (size_hex, signature) = line.split_once(";chunk-signature=").ok_or_else(malformed)?;
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| malformed())?;
        let data_start = line_end + 2;
        let data = rest
            .get(data_start..data_start.checked_add(size).ok_or_else(malformed)?)
            .ok_or_else(malformed)?;
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{}\n{previous}\n{EMPTY_SHA256}\n{}",
            scope.string(),
            sha256_hex(data)
        );
        if !signature_matches(signing_key, &string_to_sign, signature) {
            return Err(AuthError::invalid(MISMATCH_MESSAGE));
        }
        decoded.extend_from_slice(data);
        previous = signature.to_string();
        let after = data_start + size;
        if rest.get(after..after + 2) != Some(b"\r\n".as_slice()) {
            return Err(malformed());
        }
        rest = rest.get(after + 2..).unwrap_or_default();
        if size == 0 {
            return if rest.is_empty() {
                Ok(decoded)
            } else {
                Err(malformed())
            };
        }
    }
    Err(malformed())
}

/// Runs every check of the module documentation; `lookup` finds the secret of an access
/// key id.
pub fn verify<'s>(
    request: &SignedRequest<'_>,
    body: &[u8],
    now_secs: i64,
    service: &str,
    lookup: impl Fn(&str) -> Option<&'s Secret>,
) -> Result<Verified, AuthError> {
    let params = auth_params(request)?;
    let (amz_date, _) = check_date(&params, now_secs)?;
    let signs_host = params
        .signed_headers
        .split(';')
        .any(|h| h.eq_ignore_ascii_case("host") || h == ":authority");
    if !signs_host {
        return Err(AuthError::invalid(
            "'Host' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    if params.algorithm != ALGORITHM {
        return Err(AuthError::incomplete(format!(
            "Unsupported AWS 'algorithm': '{}' (only AWS4-HMAC-SHA256 for now). ",
            params.algorithm
        )));
    }
    let scope = parse_credential(&params.credential)?;
    check_scope(&scope, service, &amz_date)?;
    let secret = lookup(&scope.access_key).ok_or_else(|| {
        AuthError::new(ErrorKind::UnrecognizedClientException, UNKNOWN_KEY_MESSAGE)
    })?;
    let key = signing_key(
        &secret.secret_access_key,
        &scope.date,
        &scope.region,
        &scope.service,
    );
    let declared = header(request, "x-amz-content-sha256");
    let body_hash = sha256_hex(body);
    // The payload hashes to try, in order: what the client declared, else the body's (and,
    // presigned, UNSIGNED-PAYLOAD, which presigners for S3-style services use).
    let mut candidates: Vec<String> = Vec::with_capacity(2);
    match declared {
        Some(UNSIGNED_PAYLOAD) => candidates.push(UNSIGNED_PAYLOAD.to_string()),
        Some(STREAMING_PAYLOAD) => candidates.push(STREAMING_PAYLOAD.to_string()),
        Some(other) if other.len() == 64 && unhex(other).is_some() => {
            // A declared hash must be the body's: a signature over a hash of other bytes
            // must not authenticate these.
            candidates.push(body_hash.clone());
        }
        Some(other) => {
            return Err(AuthError::invalid(format!(
                "x-amz-content-sha256 value '{other}' is not supported by this service."
            )));
        }
        None => {
            candidates.push(body_hash.clone());
            if params.presigned {
                candidates.push(UNSIGNED_PAYLOAD.to_string());
            }
        }
    }
    let mut first: Option<(String, String)> = None;
    let mut matched: Option<String> = None;
    for payload_hash in candidates {
        let canonical = canonical_request(request, &params.signed_headers, &payload_hash);
        let to_sign = string_to_sign(&amz_date, &scope, &canonical);
        if signature_matches(&key, &to_sign, &params.signature) {
            matched = Some(payload_hash);
            break;
        }
        first.get_or_insert((canonical, to_sign));
    }
    let Some(payload_hash) = matched else {
        let (canonical, to_sign) = first.unwrap_or_default();
        return Err(mismatch(&canonical, &to_sign));
    };
    let token_ok = match (&secret.session_token, &params.security_token) {
        (None, None) => true,
        (Some(expected), Some(given)) => {
            // Not secret-dependent timing that matters (the token is a bearer value, but
            // compare it without an early exit anyway).
            expected.len() == given.len()
                && expected
                    .bytes()
                    .zip(given.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        }
        _ => false,
    };
    if !token_ok {
        return Err(AuthError::new(
            ErrorKind::UnrecognizedClientException,
            BAD_TOKEN_MESSAGE,
        ));
    }
    let decoded_body = if payload_hash == STREAMING_PAYLOAD {
        let decoded = decode_chunked(body, &key, &amz_date, &scope, &params.signature)?;
        if let Some(expected) = header(request, "x-amz-decoded-content-length")
            && expected.parse::<usize>().ok() != Some(decoded.len())
        {
            return Err(AuthError::incomplete(
                "x-amz-decoded-content-length does not match the decoded body.",
            ));
        }
        Some(decoded)
    } else {
        None
    };
    Ok(Verified {
        access_key: scope.access_key,
        region: scope.region,
        decoded_body,
        payload_signed: payload_hash != UNSIGNED_PAYLOAD,
    })
}

#[cfg(test)]
mod tests {
    //! The published AWS SigV4 test suite (`aws-sig-v4-test-suite`: credentials AKIDEXAMPLE /
    //! wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, 20150830T123600Z, us-east-1, service
    //! "service"), plus the S3 documentation's header, presigned and chunked examples.
    use super::*;

    const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const SUITE_DATE: &str = "20150830T123600Z";

    fn suite_scope() -> Scope {
        Scope {
            access_key: "AKIDEXAMPLE".into(),
            date: "20150830".into(),
            region: "us-east-1".into(),
            service: "service".into(),
            terminator: TERMINATOR.into(),
        }
    }

    /// Signs a suite request: `path` and `query` as sent on the wire.
    fn suite_signature(
        method: &str,
        path: &str,
        query: Option<&str>,
        extra: &[(&str, &str)],
        signed_headers: &str,
        body: &[u8],
    ) -> String {
        let mut headers: Vec<(&str, &str)> = vec![
            ("host", "example.amazonaws.com"),
            ("x-amz-date", SUITE_DATE),
        ];
        headers.extend_from_slice(extra);
        let request = SignedRequest {
            method,
            path,
            query,
            headers: &headers,
            authority: None,
        };
        let canonical = canonical_request(&request, signed_headers, &sha256_hex(body));
        let to_sign = string_to_sign(SUITE_DATE, &suite_scope(), &canonical);
        let key = signing_key(SUITE_SECRET, "20150830", "us-east-1", "service");
        sign(&key, &to_sign)
    }

    #[test]
    fn suite_vectors() {
        #[allow(clippy::type_complexity)]
        let cases: &[(
            &str,
            &str,
            &str,
            Option<&str>,
            &[(&str, &str)],
            &str,
            &[u8],
            &str,
        )] = &[
            (
                "get-vanilla",
                "GET",
                "/",
                None,
                &[],
                "host;x-amz-date",
                b"",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "get-unreserved",
                "GET",
                "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                None,
                &[],
                "host;x-amz-date",
                b"",
                "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
            ),
            (
                "get-slashes",
                "GET",
                "//example//",
                None,
                &[],
                "host;x-amz-date",
                b"",
                "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84",
            ),
            (
                "get-vanilla-query-order-key-case",
                "GET",
                "/",
                Some("Param2=value2&Param1=value1"),
                &[],
                "host;x-amz-date",
                b"",
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            ),
            (
                "get-vanilla-query-order-value",
                "GET",
                "/",
                Some("Param1=value2&Param1=value1"),
                &[],
                "host;x-amz-date",
                b"",
                "5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694",
            ),
            (
                "get-vanilla-utf8-query",
                "GET",
                "/",
                Some("%E1%88%B4=bar"),
                &[],
                "host;x-amz-date",
                b"",
                "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
            ),
            (
                "get-header-value-order",
                "GET",
                "/",
                None,
                &[
                    ("my-header1", "value4"),
                    ("my-header1", "value1"),
                    ("my-header1", "value3"),
                    ("my-header1", "value2"),
                ],
                "host;my-header1;x-amz-date",
                b"",
                "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01",
            ),
            (
                "get-header-key-duplicate",
                "GET",
                "/",
                None,
                &[
                    ("my-header1", "value2"),
                    ("my-header1", "value2"),
                    ("my-header1", "value1"),
                ],
                "host;my-header1;x-amz-date",
                b"",
                "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
            ),
            (
                "get-header-value-trim",
                "GET",
                "/",
                None,
                &[("my-header1", " value1"), ("my-header2", "\"a   b   c\"")],
                "host;my-header1;my-header2;x-amz-date",
                b"",
                "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
            ),
            (
                "post-x-www-form-urlencoded",
                "POST",
                "/",
                None,
                &[("content-type", "application/x-www-form-urlencoded")],
                "content-type;host;x-amz-date",
                b"Param1=value1",
                "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
            ),
            (
                "get-with-session-token",
                "GET",
                "/",
                None,
                &[(
                    "x-amz-security-token",
                    "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267",
                )],
                "host;x-amz-date;x-amz-security-token",
                b"",
                "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8",
            ),
        ];
        for (name, method, path, query, extra, signed, body, expected) in cases {
            assert_eq!(
                suite_signature(method, path, *query, extra, signed, body),
                *expected,
                "{name}"
            );
        }
    }

    #[test]
    fn suite_canonical_request_get_vanilla_query_order_key_case() {
        let headers = [
            ("host", "example.amazonaws.com"),
            ("x-amz-date", SUITE_DATE),
        ];
        let request = SignedRequest {
            method: "GET",
            path: "/",
            query: Some("Param2=value2&Param1=value1"),
            headers: &headers,
            authority: None,
        };
        let canonical = canonical_request(&request, "host;x-amz-date", EMPTY_SHA256);
        assert_eq!(
            canonical,
            "GET\n/\nParam1=value1&Param2=value2\nhost:example.amazonaws.com\n\
             x-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(canonical.as_bytes()),
            "816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0"
        );
    }

    #[test]
    fn canonical_uris_and_queries() {
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("//example//"), "/example/");
        assert_eq!(canonical_uri("/a/./b/../c"), "/a/c");
        // The wire form is encoded once more, as SDKs sign non-S3 paths.
        assert_eq!(canonical_uri("/example%20space/"), "/example%2520space/");
        assert_eq!(canonical_query(Some("q=a+b")), "q=a%2Bb");
        assert_eq!(canonical_query(Some("b&a=1")), "a=1&b=");
        assert_eq!(canonical_query(Some("a=1=2")), "a=1%3D2");
        assert_eq!(
            canonical_query(Some("X-Amz-Signature=abc&a=1")),
            "a=1",
            "the signature never signs itself"
        );
    }

    /// The S3 documentation's examples (secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY,
    /// 20130524T000000Z): S3 encodes paths once, which its paths here do not exercise.
    const S3_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn s3_scope() -> Scope {
        Scope {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            date: "20130524".into(),
            region: "us-east-1".into(),
            service: "s3".into(),
            terminator: TERMINATOR.into(),
        }
    }

    #[test]
    fn s3_get_object_header_example() {
        let headers = [
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ];
        let request = SignedRequest {
            method: "GET",
            path: "/test.txt",
            query: None,
            headers: &headers,
            authority: None,
        };
        let canonical = canonical_request(
            &request,
            "host;range;x-amz-content-sha256;x-amz-date",
            EMPTY_SHA256,
        );
        let to_sign = string_to_sign("20130524T000000Z", &s3_scope(), &canonical);
        let key = signing_key(S3_SECRET, "20130524", "us-east-1", "s3");
        assert_eq!(
            sign(&key, &to_sign),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn s3_presigned_url_example() {
        let query = "X-Amz-Algorithm=AWS4-HMAC-SHA256\
            &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
            &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
            &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
        let headers = [("host", "examplebucket.s3.amazonaws.com")];
        let request = SignedRequest {
            method: "GET",
            path: "/test.txt",
            query: Some(query),
            headers: &headers,
            authority: None,
        };
        let params = auth_params(&request).expect("presigned parameters");
        assert!(params.presigned);
        assert_eq!(
            params.credential,
            "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"
        );
        let canonical = canonical_request(&request, "host", UNSIGNED_PAYLOAD);
        let to_sign = string_to_sign("20130524T000000Z", &s3_scope(), &canonical);
        let key = signing_key(S3_SECRET, "20130524", "us-east-1", "s3");
        assert_eq!(sign(&key, &to_sign), params.signature);
        // And through `verify`, a day later (inside X-Amz-Expires), UNSIGNED-PAYLOAD found.
        let secret = Secret {
            secret_access_key: S3_SECRET.into(),
            session_token: None,
        };
        let now = parse_amz_date("20130524T120000Z").unwrap_or(0);
        let verified = verify(&request, b"", now, "s3", |_| Some(&secret));
        assert_eq!(verified.map(|v| v.payload_signed).ok(), Some(false));
        let late = parse_amz_date("20130525T000001Z").unwrap_or(0);
        let expired = verify(&request, b"", late, "s3", |_| Some(&secret)).err();
        assert_eq!(
            expired.map(|e| e.message),
            Some(
                "Signature expired: 20130524T000000Z is now earlier than 20130524T000001Z \
                 (20130525T000001Z - 86400 sec.)"
                    .to_string()
            )
        );
    }

    #[test]
    fn s3_chunked_upload_example() {
        let seed = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
        let key = signing_key(S3_SECRET, "20130524", "us-east-1", "s3");
        let mut body = Vec::new();
        body.extend_from_slice(
            b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n",
        );
        body.extend(std::iter::repeat_n(b'a', 65536));
        body.extend_from_slice(
            b"\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n",
        );
        body.extend(std::iter::repeat_n(b'a', 1024));
        body.extend_from_slice(
            b"\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n",
        );
        let decoded = decode_chunked(&body, &key, "20130524T000000Z", &s3_scope(), seed);
        assert_eq!(decoded.as_ref().map(Vec::len).ok(), Some(66560));
        // A flipped byte breaks the chain.
        let mut tampered = body.clone();
        if let Some(b) = tampered.get_mut(200) {
            *b = b'b';
        }
        let refused = decode_chunked(&tampered, &key, "20130524T000000Z", &s3_scope(), seed);
        assert_eq!(
            refused.err().map(|e| e.kind),
            Some(ErrorKind::InvalidSignatureException)
        );
    }

    #[test]
    fn dates() {
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(format_amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(
            parse_http_date("Sun, 30 Aug 2015 12:36:00 GMT"),
            Some(1_440_938_160)
        );
        assert_eq!(parse_amz_date("2015-08-30T12:36:00Z"), None);
        assert_eq!(parse_amz_date("20151330T123600Z"), None);
        assert_eq!(format_amz_date(0), "19700101T000000Z");
        assert_eq!(format_amz_date(951_782_400), "20000229T000000Z");
    }

    /// A Kinesis-shaped request signed by this module, then verified.
    fn kinesis_request(
        secret: &str,
        date: &str,
        body: &[u8],
        token: Option<&str>,
    ) -> (Vec<(String, String)>, String) {
        let mut headers: Vec<(String, String)> = vec![
            ("content-type".into(), "application/x-amz-json-1.1".into()),
            ("host".into(), "127.0.0.1:4567".into()),
            ("x-amz-date".into(), date.into()),
            ("x-amz-target".into(), "Kinesis_20131202.ListStreams".into()),
        ];
        let mut signed = "content-type;host;x-amz-date;x-amz-target".to_string();
        if let Some(token) = token {
            headers.push(("x-amz-security-token".into(), token.into()));
            signed.push_str(";x-amz-security-token");
        }
        let borrowed: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let request = SignedRequest {
            method: "POST",
            path: "/",
            query: None,
            headers: &borrowed,
            authority: None,
        };
        let scope = Scope {
            access_key: "AKIDMILLRACE".into(),
            date: date.get(..8).unwrap_or("").into(),
            region: "eu-west-1".into(),
            service: "kinesis".into(),
            terminator: TERMINATOR.into(),
        };
        let canonical = canonical_request(&request, &signed, &sha256_hex(body));
        let key = signing_key(secret, &scope.date, &scope.region, "kinesis");
        let signature = sign(&key, &string_to_sign(date, &scope, &canonical));
        headers.push((
            "authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDMILLRACE/{}/eu-west-1/kinesis/aws4_request, \
                 SignedHeaders={signed}, Signature={signature}",
                scope.date
            ),
        ));
        (headers, signature)
    }

    fn check(
        headers: &[(String, String)],
        body: &[u8],
        now: &str,
        secret: &Secret,
    ) -> Result<Verified, AuthError> {
        let borrowed: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let request = SignedRequest {
            method: "POST",
            path: "/",
            query: None,
            headers: &borrowed,
            authority: None,
        };
        let now = parse_amz_date(now).unwrap_or(0);
        verify(&request, body, now, "kinesis", |key| {
            (key == "AKIDMILLRACE").then_some(secret)
        })
    }

    #[test]
    fn verify_accepts_and_refuses() {
        let secret = Secret {
            secret_access_key: "right".into(),
            session_token: None,
        };
        let body = br#"{}"#;
        let (headers, _) = kinesis_request("right", "20261127T100000Z", body, None);
        let ok = check(&headers, body, "20261127T100500Z", &secret);
        assert_eq!(ok.map(|v| v.region).ok(), Some("eu-west-1".to_string()));

        let (wrong, _) = kinesis_request("wrong", "20261127T100000Z", body, None);
        let error = check(&wrong, body, "20261127T100500Z", &secret).err();
        assert_eq!(
            error.as_ref().map(|e| e.kind),
            Some(ErrorKind::InvalidSignatureException)
        );
        assert!(
            error
                .as_ref()
                .is_some_and(|e| e.message.starts_with(MISMATCH_MESSAGE)
                    && e.message.contains("The Canonical String for this request")
                    && !e.message.contains("right"))
        );

        // A body other than the one signed.
        let altered = check(&headers, br#"{"Limit":1}"#, "20261127T100500Z", &secret).err();
        assert_eq!(
            altered.map(|e| e.kind),
            Some(ErrorKind::InvalidSignatureException)
        );

        let skewed = check(&headers, body, "20261127T101600Z", &secret).err();
        assert_eq!(
            skewed,
            Some(AuthError::invalid(
                "Signature expired: 20261127T100000Z is now earlier than 20261127T100100Z \
                 (20261127T101600Z - 15 min.)"
            ))
        );
        let early = check(&headers, body, "20261127T094000Z", &secret).err();
        assert_eq!(
            early.map(|e| e.message),
            Some(
                "Signature not yet current: 20261127T100000Z is still later than \
                 20261127T095500Z (20261127T094000Z + 15 min.)"
                    .to_string()
            )
        );
    }

    #[test]
    fn verify_scope_key_and_token() {
        let secret = Secret {
            secret_access_key: "right".into(),
            session_token: Some("session".into()),
        };
        let body = b"{}";
        let (with_token, _) = kinesis_request("right", "20261127T100000Z", body, Some("session"));
        assert!(check(&with_token, body, "20261127T100000Z", &secret).is_ok());
        let (bad_token, _) = kinesis_request("right", "20261127T100000Z", body, Some("other"));
        assert_eq!(
            check(&bad_token, body, "20261127T100000Z", &secret).err(),
            Some(AuthError::new(
                ErrorKind::UnrecognizedClientException,
                BAD_TOKEN_MESSAGE
            ))
        );
        let (no_token, _) = kinesis_request("right", "20261127T100000Z", body, None);
        assert_eq!(
            check(&no_token, body, "20261127T100000Z", &secret)
                .err()
                .map(|e| e.kind),
            Some(ErrorKind::UnrecognizedClientException)
        );

        // Unknown key.
        let mut unknown = no_token.clone();
        for (k, v) in &mut unknown {
            if k == "authorization" {
                *v = v.replace("AKIDMILLRACE", "AKIDOTHER");
            }
        }
        assert_eq!(
            check(&unknown, body, "20261127T100000Z", &secret).err(),
            Some(AuthError::new(
                ErrorKind::UnrecognizedClientException,
                UNKNOWN_KEY_MESSAGE
            ))
        );

        // Scope errors, all reported at once.
        let scope = parse_credential("AKID/20261126/Bad_Region/dynamodb/aws5_request");
        let error = scope.and_then(|s| check_scope(&s, "kinesis", "20261127T100000Z"));
        assert_eq!(
            error.err().map(|e| e.message),
            Some(
                "Credential should be scoped to a valid region, not 'Bad_Region'. Credential \
                 should be scoped to correct service: 'kinesis'. Credential should be scoped \
                 with a valid terminator: 'aws4_request', not 'aws5_request'. Date in \
                 Credential scope does not match YYYYMMDD from ISO-8601 version of date from \
                 HTTP: '20261126' != '20261127', from '20261127T100000Z'."
                    .to_string()
            )
        );
        assert_eq!(
            parse_credential("a/b/c/d").err().map(|e| e.message),
            Some(
                "Credential must have exactly 5 slash-delimited elements, e.g. \
                 keyid/date/region/service/term, got 'a/b/c/d'"
                    .to_string()
            )
        );
    }

    #[test]
    fn presence_and_completeness() {
        let request = SignedRequest {
            method: "POST",
            path: "/",
            query: None,
            headers: &[],
            authority: None,
        };
        assert_eq!(
            auth_params(&request).err().map(|e| e.kind),
            Some(ErrorKind::MissingAuthenticationTokenException)
        );
        let headers = [("authorization", "AWS4-HMAC-SHA256 Credential=a/b/c/d/e")];
        let request = SignedRequest {
            headers: &headers,
            ..request
        };
        assert_eq!(
            auth_params(&request).err().map(|e| e.message),
            Some(
                "Authorization header requires 'Signature' parameter. Authorization header \
                 requires 'SignedHeaders' parameter. Authorization header requires existence \
                 of either a 'X-Amz-Date' or a 'Date' header. \
                 Authorization=AWS4-HMAC-SHA256 Credential=a/b/c/d/e"
                    .to_string()
            )
        );
        let request = SignedRequest {
            query: Some("X-Amz-Algorithm=AWS4-HMAC-SHA256"),
            ..request
        };
        assert_eq!(
            auth_params(&request).err().map(|e| e.kind),
            Some(ErrorKind::InvalidSignatureException)
        );
    }

    #[test]
    fn http2_authority_stands_for_host() {
        // The JavaScript SDK v3 signs `:authority` over HTTP/2 and sends no Host header.
        let headers = [("x-amz-date", SUITE_DATE)];
        let request = SignedRequest {
            method: "GET",
            path: "/",
            query: None,
            headers: &headers,
            authority: Some("example.amazonaws.com"),
        };
        let canonical = canonical_request(&request, ":authority;x-amz-date", EMPTY_SHA256);
        assert!(canonical.contains("\n:authority:example.amazonaws.com\n"));
        let canonical = canonical_request(&request, "host;x-amz-date", EMPTY_SHA256);
        assert!(canonical.contains("\nhost:example.amazonaws.com\n"));
    }
}
