//! Who is calling: the checks AWS makes on the authentication material before anything
//! else, and the account and region a request acts in.
//!
//! Today any credentials are accepted (signature verification is a later issue); what is
//! checked is that the request carries an `Authorization` header or a presigned query with
//! the parts AWS requires, with AWS's errors and messages when it does not. The region is
//! the one in the credential scope (`AKID/20261127/eu-west-1/kinesis/aws4_request`), else
//! the default; the account is the configured one, except that a 12-digit access key id
//! selects that account (development mode, as moto and LocalStack do).

use http::HeaderMap;
use millrace_wire::ErrorKind;

use crate::{ServerConfig, header_str};

pub struct Identity {
    pub account: String,
    pub region: String,
}

type AuthError = (ErrorKind, String);

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Parses `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
fn header_params(header: &str) -> Vec<(String, String)> {
    header
        .split([',', ' '])
        .skip(1)
        .filter(|part| !part.is_empty())
        .filter_map(|part| part.trim().split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
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
            let params = header_params(header);
            let get = |name: &str| {
                params
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
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
    Ok(Identity { account, region })
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
