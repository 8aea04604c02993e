//! Who is calling: the checks AWS makes on the authentication material before anything
//! else, and the principal, account and region a request acts in.
//!
//! With credentials configured ([`Authenticator`]), every request's SigV4 signature is
//! verified by `wire::sigv4` (header and presigned forms, clock skew, scope, unknown keys,
//! session tokens, `aws-chunked` bodies) against the configured secrets; the principal is
//! the one the access key maps to, the account is the principal's, the region is the one in
//! the credential scope.
//!
//! With none configured ([`identify`], development mode) any credentials are accepted:
//! what is checked is that the request carries an `Authorization` header or a presigned
//! query with the parts AWS requires, with AWS's errors and messages when it does not. The
//! region is the one in the credential scope (`AKID/20261127/eu-west-1/kinesis/aws4_request`),
//! else the default; the account is the configured one, except that a 12-digit access key
//! id selects that account (as moto and LocalStack do).
//!
//! Secrets never leave this module: they are not logged, not in `Debug` output, not in
//! error messages.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;
use millrace_wire::ErrorKind;
use millrace_wire::sigv4::{self, Secret, SignedRequest};

use crate::{ServerConfig, header_str};

/// The service name SigV4 scopes Kinesis Data Streams requests to (Firehose's is
/// `firehose`).
pub const SIGNING_SERVICE: &str = "kinesis";

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// `arn:aws:iam::123456789012:user/producer`, `arn:aws:iam::123456789012:root`,
    /// `arn:aws:sts::123456789012:assumed-role/role/session`.
    pub arn: String,
    pub account: String,
}

impl Principal {
    /// Parses an IAM or STS principal ARN; the account is its fifth field.
    pub fn parse(arn: &str) -> Result<Principal, String> {
        let mut parts = arn.splitn(6, ':');
        let (prefix, partition, service, _region, account, resource) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
        if prefix != "arn"
            || partition.is_empty()
            || !matches!(service, "iam" | "sts")
            || !account_ok
            || resource.is_empty()
        {
            return Err(format!(
                "principal {arn:?} is not an IAM principal ARN such as \
                 arn:aws:iam::123456789012:user/NAME"
            ));
        }
        Ok(Principal {
            arn: arn.to_string(),
            account: account.to_string(),
        })
    }
}

/// One configured access key.
#[derive(Clone)]
pub struct CredentialSpec {
    pub access_key_id: String,
    pub secret: Secret,
    pub principal: Arc<Principal>,
}

impl std::fmt::Debug for CredentialSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialSpec")
            .field("access_key_id", &self.access_key_id)
            .field("principal", &self.principal.arn)
            .finish_non_exhaustive()
    }
}

/// Verifies signatures against the configured credentials.
pub struct Authenticator {
    by_key: HashMap<String, CredentialSpec>,
}

impl Authenticator {
    pub fn new(credentials: Vec<CredentialSpec>) -> Result<Authenticator, String> {
        let mut by_key = HashMap::new();
        for credential in credentials {
            if credential.access_key_id.is_empty() || credential.secret.secret_access_key.is_empty()
            {
                return Err("a credential needs a non-empty access_key_id and secret".into());
            }
            let key = credential.access_key_id.clone();
            if by_key.insert(key.clone(), credential).is_some() {
                return Err(format!("access key id {key} is configured twice"));
            }
        }
        Ok(Authenticator { by_key })
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Verifies a request; returns who sent it, in which region, and the decoded body of an
    /// `aws-chunked` request.
    pub fn authenticate(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        now_secs: i64,
        service: &str,
    ) -> Result<(Identity, Option<Vec<u8>>), AuthError> {
        let headers: Vec<(&str, &str)> = parts
            .headers
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
            .collect();
        let authority = parts.uri.authority().map(|a| a.as_str());
        let request = SignedRequest {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &headers,
            authority,
        };
        let verified = sigv4::verify(&request, body, now_secs, service, |key| {
            self.by_key.get(key).map(|c| &c.secret)
        })
        .map_err(|e| (e.kind, e.message))?;
        let principal = self
            .by_key
            .get(&verified.access_key)
            .map(|c| c.principal.clone())
            .ok_or_else(|| {
                (
                    ErrorKind::UnrecognizedClientException,
                    sigv4::UNKNOWN_KEY_MESSAGE.to_string(),
                )
            })?;
        Ok((
            Identity {
                account: principal.account.clone(),
                region: verified.region,
                principal: Some(principal),
            },
            verified.decoded_body,
        ))
    }
}

pub struct Identity {
    pub account: String,
    pub region: String,
    /// `None` in development mode.
    pub principal: Option<Arc<Principal>>,
}

pub type AuthError = (ErrorKind, String);

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Parses `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
/// The `name=value` parameters after the algorithm, borrowed from the header: this runs on
/// every request, so nothing is allocated.
fn header_params(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header
        .split([',', ' '])
        .skip(1)
        .filter(|part| !part.is_empty())
        .filter_map(|part| part.trim().split_once('='))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes.get(i) {
            Some(b'%') => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            Some(&b) => {
                out.push(b);
                i += 1;
            }
            None => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn identify(
    headers: &HeaderMap,
    query: Option<&str>,
    config: &ServerConfig,
) -> Result<Identity, AuthError> {
    let auth_header = header_str(headers, "authorization");
    let auth_query = query_param(query, "X-Amz-Algorithm").is_some();
    if auth_header.is_some() && auth_query {
        return Err((
            ErrorKind::InvalidSignatureException,
            "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header."
                .to_string(),
        ));
    }
    let credential = match auth_header {
        Some(header) => {
            // One pass over the header (this runs on every request); the first of each wins.
            let (mut credential, mut signature, mut signed_headers) = (None, None, None);
            for (k, v) in header_params(header) {
                match k {
                    "Credential" => credential = credential.or(Some(v)),
                    "Signature" => signature = signature.or(Some(v)),
                    "SignedHeaders" => signed_headers = signed_headers.or(Some(v)),
                    _ => {}
                }
            }
            let get = |name: &str| match name {
                "Credential" => credential,
                "Signature" => signature,
                "SignedHeaders" => signed_headers,
                _ => None,
            };
            let mut message = String::new();
            for name in ["Credential", "Signature", "SignedHeaders"] {
                if get(name).is_none_or(str::is_empty) {
                    message.push_str(&format!(
                        "Authorization header requires '{name}' parameter. "
                    ));
                }
            }
            if header_str(headers, "x-amz-date").is_none() && header_str(headers, "date").is_none()
            {
                message.push_str(
                    "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. ",
                );
            }
            if !message.is_empty() {
                message.push_str(&format!("Authorization={header}"));
                return Err((ErrorKind::IncompleteSignatureException, message));
            }
            get("Credential").unwrap_or("").to_string()
        }
        None if auth_query => {
            let mut message = String::new();
            for name in [
                "X-Amz-Algorithm",
                "X-Amz-Credential",
                "X-Amz-Signature",
                "X-Amz-SignedHeaders",
                "X-Amz-Date",
            ] {
                if query_param(query, name).is_none_or(str::is_empty) {
                    message.push_str(&format!(
                        "AWS query-string parameters must include '{name}'. "
                    ));
                }
            }
            if !message.is_empty() {
                message.push_str("Re-examine the query-string parameters.");
                return Err((ErrorKind::IncompleteSignatureException, message));
            }
            percent_decode(query_param(query, "X-Amz-Credential").unwrap_or(""))
        }
        None => {
            return Err((
                ErrorKind::MissingAuthenticationTokenException,
                "Missing Authentication Token".to_string(),
            ));
        }
    };
    // AKID/DATE/REGION/SERVICE/aws4_request
    let mut scope = credential.split('/');
    let access_key = scope.next().unwrap_or("");
    let region = scope
        .nth(1)
        .filter(|r| !r.is_empty())
        .unwrap_or(&config.default_region)
        .to_string();
    let account = if access_key.len() == 12 && access_key.bytes().all(|b| b.is_ascii_digit()) {
        access_key.to_string()
    } else {
        config.account_id.clone()
    };
    Ok(Identity {
        account,
        region,
        principal: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            if let Ok(value) = v.parse() {
                map.insert(*k, value);
            }
        }
        map
    }

    #[test]
    fn region_and_account_from_the_credential_scope() {
        let config = ServerConfig::default();
        let h = headers(&[
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKID/20261127/eu-west-1/kinesis/aws4_request, SignedHeaders=host, Signature=abc",
            ),
            ("x-amz-date", "20261127T000000Z"),
        ]);
        let id = identify(&h, None, &config).map_err(|e| e.1);
        assert_eq!(id.as_ref().map(|i| i.region.as_str()), Ok("eu-west-1"));
        assert_eq!(id.as_ref().map(|i| i.account.as_str()), Ok("000000000000"));
        let h = headers(&[
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=123456789012/20261127/us-west-2/kinesis/aws4_request, SignedHeaders=host, Signature=abc",
            ),
            ("x-amz-date", "20261127T000000Z"),
        ]);
        let id = identify(&h, None, &config).map_err(|e| e.1);
        assert_eq!(id.map(|i| i.account), Ok("123456789012".to_string()));
    }

    #[test]
    fn missing_and_incomplete() {
        let config = ServerConfig::default();
        let none = identify(&HeaderMap::new(), None, &config).err();
        assert_eq!(
            none.map(|e| e.0),
            Some(ErrorKind::MissingAuthenticationTokenException)
        );
        let h = headers(&[("authorization", "AWS4-HMAC-SHA256 Credential=a/b/c/d/e")]);
        let incomplete = identify(&h, None, &config).err();
        assert_eq!(
            incomplete.map(|e| (e.0, e.1)),
            Some((
                ErrorKind::IncompleteSignatureException,
                "Authorization header requires 'Signature' parameter. Authorization header requires \
                 'SignedHeaders' parameter. Authorization header requires existence of either a \
                 'X-Amz-Date' or a 'Date' header. Authorization=AWS4-HMAC-SHA256 Credential=a/b/c/d/e"
                    .to_string()
            ))
        );
        let both = identify(&h, Some("X-Amz-Algorithm=x"), &config).err();
        assert_eq!(
            both.map(|e| e.0),
            Some(ErrorKind::InvalidSignatureException)
        );
    }
}
