//! SigV4 verification (`wire::sigv4`): arbitrary requests (method, path, query, headers,
//! body) never panic and are refused unless signed; a request built from the input's parts
//! and signed with the secret verifies, and stops verifying when its signature, its body or
//! a signed header changes. The same for `aws-chunked` bodies: arbitrary bytes are refused
//! without a panic.
#![no_main]

use millrace_wire::sigv4::{
    Secret, SignedRequest, canonical_request, decode_chunked, sha256_hex, sign, signing_key,
    string_to_sign, verify, Scope,
};

const SECRET: &str = "fuzzing-secret-access-key";
const DATE: &str = "20261127T100000Z";
const NOW: i64 = 1_795_773_600; // DATE in epoch seconds

/// Splits the input at 0xff bytes into up to 8 fields, lossily decoded.
fn fields(data: &[u8]) -> Vec<String> {
    data.split(|b| *b == 0xff)
        .take(8)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

/// Keeps the characters a header name may have (lower case, as `http` hands them over).
fn header_name(text: &str) -> String {
    let name: String = text
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
        .take(32)
        .collect();
    if name.is_empty() { "x-fuzz".into() } else { name }
}

/// Keeps visible ASCII and spaces (what an HTTP header value may carry).
fn header_value(text: &str) -> String {
    text.chars().filter(|c| (' '..='~').contains(c)).take(64).collect()
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let f = fields(data);
    let get = |i: usize| f.get(i).cloned().unwrap_or_default();
    let secret = Secret {
        secret_access_key: SECRET.into(),
        session_token: None,
    };

    // 1. Arbitrary headers as they arrived: no panic, and no success without the secret.
    let raw_headers: Vec<(String, String)> = get(3)
        .split('\n')
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .take(16)
        .collect();
    let borrowed: Vec<(&str, &str)> = raw_headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let method = get(0);
    let path = get(1);
    let query = get(2);
    let body = get(4).into_bytes();
    let request = SignedRequest {
        method: &method,
        path: &path,
        query: (!query.is_empty()).then_some(query.as_str()),
        headers: &borrowed,
        authority: None,
    };
    let _ = verify(&request, &body, NOW, "kinesis", |_| Some(&secret));

    // 2. A request made of the input's parts and signed: it verifies; tampering breaks it.
    let path: String = path
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "/-._~".contains(*c))
        .take(64)
        .collect();
    let path = format!("/{path}");
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), "127.0.0.1:4567".into()),
        ("x-amz-date".into(), DATE.into()),
    ];
    for (name, value) in &raw_headers {
        let name = header_name(name);
        if name == "host" || name.starts_with("x-amz-") || name == "authorization" {
            continue;
        }
        headers.push((name, header_value(value)));
    }
    let mut names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let signed_headers = names.join(";");
    let borrowed: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let unsigned = SignedRequest {
        method: "POST",
        path: &path,
        query: None,
        headers: &borrowed,
        authority: None,
    };
    let scope = Scope {
        access_key: "AKIDFUZZ".into(),
        date: DATE[..8].into(),
        region: "us-east-1".into(),
        service: "kinesis".into(),
        terminator: "aws4_request".into(),
    };
    let key = signing_key(SECRET, &scope.date, &scope.region, &scope.service);
    let canonical = canonical_request(&unsigned, &signed_headers, &sha256_hex(&body));
    let signature = sign(&key, &string_to_sign(DATE, &scope, &canonical));
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential=AKIDFUZZ/{}/us-east-1/kinesis/aws4_request, \
         SignedHeaders={signed_headers}, Signature={signature}",
        scope.date
    );
    let with_auth = |auth: &str| {
        let mut all = headers.clone();
        all.push(("authorization".into(), auth.to_string()));
        all
    };
    let lookup = |key: &str| (key == "AKIDFUZZ").then_some(&secret);
    let check = |all: &[(String, String)], body: &[u8]| {
        let borrowed: Vec<(&str, &str)> =
            all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let request = SignedRequest {
            method: "POST",
            path: &path,
            query: None,
            headers: &borrowed,
            authority: None,
        };
        verify(&request, body, NOW, "kinesis", lookup).is_ok()
    };
    let good = with_auth(&authorization);
    assert!(check(&good, &body), "a correctly signed request was refused");
    let mut other_body = body.clone();
    other_body.push(b'!');
    assert!(!check(&good, &other_body), "a changed body verified");
    let flipped = if signature.starts_with('0') { "1" } else { "0" };
    let tampered = authorization.replacen(
        &format!("Signature={}", &signature[..1]),
        &format!("Signature={flipped}"),
        1,
    );
    assert!(!check(&with_auth(&tampered), &body), "a changed signature verified");
    if let Some(index) = headers.iter().position(|(k, _)| k != "host" && k != "x-amz-date") {
        let mut changed = good.clone();
        changed[index].1.push('!');
        assert!(!check(&changed, &body), "a changed signed header verified");
    }

    // 3. aws-chunked bodies: arbitrary bytes are refused or decoded, never a panic.
    let _ = decode_chunked(&body, &key, DATE, &scope, &signature);
});
