//! Checks of EKS bearer tokens, written from the rules aws-iam-authenticator
//! applies (`pkg/token/token.go` in kubernetes-sigs/aws-iam-authenticator)
//! and from the SigV4 query-string signing steps, without aws-sigv4.
//!
//! [`parse_token`] applies the authenticator's format checks. STS, which
//! the authenticator then calls, checks the signature with the secret key and
//! the cluster name in `x-k8s-aws-id`; [`PresignedToken::verify_signature`]
//! recomputes it the same way.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{NaiveDateTime, TimeZone, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Prefix of an EKS token.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";

/// Maximum token size the authenticator accepts, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// How long after `X-Amz-Date` a token is accepted.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// Query parameters the authenticator allows, lowercased.
const ALLOWED_PARAMETERS: [&str; 9] = [
    "action",
    "version",
    "x-amz-algorithm",
    "x-amz-credential",
    "x-amz-date",
    "x-amz-expires",
    "x-amz-security-token",
    "x-amz-signature",
    "x-amz-signedheaders",
];

/// SHA-256 of an empty payload, hex.
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// A token's presigned URL, decoded.
#[derive(Debug, Clone)]
pub struct PresignedToken {
    pub url: url::Url,
    /// Query parameters with their names as sent.
    pub params: BTreeMap<String, String>,
    /// `X-Amz-Date`.
    pub signed_at: SystemTime,
}

impl PresignedToken {
    /// Returns a query parameter, by name as sent.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// Returns the access key id from `X-Amz-Credential`.
    pub fn access_key_id(&self) -> Option<&str> {
        self.param("X-Amz-Credential")?.split('/').next()
    }

    /// Recomputes the signature for `cluster` in `x-k8s-aws-id` with
    /// `secret_key`, as STS does, and compares it with `X-Amz-Signature`.
    pub fn verify_signature(&self, cluster: &str, secret_key: &str) -> Result<(), String> {
        let expected = self.expected_signature(cluster, secret_key)?;
        let sent = self.param("X-Amz-Signature").unwrap_or_default();
        if sent != expected {
            return Err(format!(
                "signature mismatch: the token was not signed for cluster {cluster} with this \
                 secret key"
            ));
        }
        Ok(())
    }

    /// Computes the SigV4 signature of this URL for `cluster` with the HMAC
    /// steps of query-string signing.
    pub fn expected_signature(&self, cluster: &str, secret_key: &str) -> Result<String, String> {
        let credential = self
            .param("X-Amz-Credential")
            .ok_or("missing X-Amz-Credential")?;
        let scope: Vec<&str> = credential.split('/').collect();
        let [_, date, region, service, terminator] = scope[..] else {
            return Err(format!("invalid X-Amz-Credential {credential:?}"));
        };
        if terminator != "aws4_request" {
            return Err(format!("invalid X-Amz-Credential {credential:?}"));
        }
        let amz_date = self.param("X-Amz-Date").ok_or("missing X-Amz-Date")?;
        let signed_headers = self
            .param("X-Amz-SignedHeaders")
            .ok_or("missing X-Amz-SignedHeaders")?;
        let host = self.url.host_str().ok_or("no host")?;

        let mut canonical_headers = String::new();
        for name in signed_headers.split(';') {
            let value = match name {
                "host" => host,
                "x-k8s-aws-id" => cluster,
                other => return Err(format!("unexpected signed header {other}")),
            };
            canonical_headers.push_str(&format!("{name}:{value}\n"));
        }
        let canonical_request = format!(
            "GET\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{EMPTY_PAYLOAD_SHA256}",
            self.url.path(),
            canonical_query(&self.params),
        );
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        );

        let date_key = hmac_sha256(format!("AWS4{secret_key}").as_bytes(), date.as_bytes());
        let region_key = hmac_sha256(&date_key, region.as_bytes());
        let service_key = hmac_sha256(&region_key, service.as_bytes());
        let signing_key = hmac_sha256(&service_key, b"aws4_request");
        Ok(hex::encode(hmac_sha256(
            &signing_key,
            string_to_sign.as_bytes(),
        )))
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key size");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Percent-encodes as SigV4 requires: everything but `A-Z a-z 0-9 - _ . ~`,
/// with uppercase hex.
fn sigv4_encode(text: &str) -> String {
    let mut encoded = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Builds the canonical query string: every parameter but
/// `X-Amz-Signature`, encoded, sorted by name.
fn canonical_query(params: &BTreeMap<String, String>) -> String {
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .filter(|(name, _)| name.as_str() != "X-Amz-Signature")
        .map(|(name, value)| (sigv4_encode(name), sigv4_encode(value)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Returns whether `host` is an STS endpoint: global, or regional in the
/// AWS or AWS China partition.
fn is_sts_host(host: &str) -> bool {
    if host == "sts.amazonaws.com" {
        return true;
    }
    let regional = host
        .strip_suffix(".amazonaws.com.cn")
        .or_else(|| host.strip_suffix(".amazonaws.com"));
    regional
        .and_then(|rest| rest.strip_prefix("sts."))
        .is_some_and(|region| {
            !region.is_empty()
                && region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Decodes `token` and applies the authenticator's checks at `now`: those of
/// [`decode_token`], and an `X-Amz-Date` less than 15 minutes old. A date in
/// the future passes, as it does in the authenticator.
pub fn parse_token(token: &str, now: SystemTime) -> Result<PresignedToken, String> {
    let presigned = decode_token(token)?;
    if now > presigned.signed_at + TOKEN_LIFETIME {
        let date = presigned.param("X-Amz-Date").unwrap_or_default();
        return Err(format!(
            "X-Amz-Date {date} is expired (15 minute expiration)"
        ));
    }
    Ok(presigned)
}

/// Decodes `token` and applies the authenticator's checks that do not depend
/// on the time. The token needs the prefix, at most 4096 bytes, and an
/// `https` STS URL with path `/`. The URL needs only allowed query
/// parameters, each given once, `Action=GetCallerIdentity`, `x-k8s-aws-id`
/// among the signed headers, `X-Amz-Expires` from 0 to 900, and a valid
/// `X-Amz-Date`.
pub fn decode_token(token: &str) -> Result<PresignedToken, String> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err("token is too large".to_owned());
    }
    let encoded = token
        .strip_prefix(TOKEN_PREFIX)
        .ok_or_else(|| format!("token is missing the {TOKEN_PREFIX:?} prefix"))?;
    let decoded = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|error| format!("token is not base64url without padding: {error}"))?;
    let text = String::from_utf8(decoded).map_err(|_| "token URL is not UTF-8".to_owned())?;
    let url = url::Url::parse(&text).map_err(|error| format!("token URL is invalid: {error}"))?;

    if url.scheme() != "https" {
        return Err(format!(
            "unexpected scheme {:?} in presigned URL",
            url.scheme()
        ));
    }
    let host = url.host_str().unwrap_or_default();
    if !is_sts_host(host) {
        return Err(format!("unexpected hostname {host:?} in presigned URL"));
    }
    if url.path() != "/" {
        return Err("unexpected path in presigned URL".to_owned());
    }

    let mut params = BTreeMap::new();
    for (name, value) in url.query_pairs() {
        if !ALLOWED_PARAMETERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(format!("query parameter {name:?} is not allowed"));
        }
        if params.insert(name.to_string(), value.to_string()).is_some() {
            return Err("query parameter with multiple values".to_owned());
        }
    }
    let lookup = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    };

    if lookup("action") != Some("GetCallerIdentity") {
        return Err("unexpected action parameter in presigned URL".to_owned());
    }
    let signed_headers = lookup("x-amz-signedheaders").unwrap_or_default();
    if !signed_headers
        .split(';')
        .any(|name| name.eq_ignore_ascii_case("x-k8s-aws-id"))
    {
        return Err("the x-k8s-aws-id header is not signed in the presigned URL".to_owned());
    }
    let expires = lookup("x-amz-expires").and_then(|value| value.parse::<i64>().ok());
    if !expires.is_some_and(|seconds| (0..=900).contains(&seconds)) {
        return Err(format!(
            "invalid X-Amz-Expires {:?} in presigned URL",
            lookup("x-amz-expires")
        ));
    }
    let date = lookup("x-amz-date").ok_or("X-Amz-Date must be present in presigned URL")?;
    let signed_at = NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ")
        .map_err(|error| format!("invalid X-Amz-Date {date:?}: {error}"))?;
    let signed_at: SystemTime = Utc.from_utc_datetime(&signed_at).into();

    Ok(PresignedToken {
        url,
        params,
        signed_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigv4_encoding_keeps_unreserved_only() {
        assert_eq!(sigv4_encode("a-Z_0.9~"), "a-Z_0.9~");
        assert_eq!(sigv4_encode("a/b+c=d;e f"), "a%2Fb%2Bc%3Dd%3Be%20f");
    }

    #[test]
    fn sts_hosts() {
        assert!(is_sts_host("sts.amazonaws.com"));
        assert!(is_sts_host("sts.eu-west-1.amazonaws.com"));
        assert!(is_sts_host("sts.cn-north-1.amazonaws.com.cn"));
        assert!(!is_sts_host("sts.eu-west-1.example.com"));
        assert!(!is_sts_host("evil.amazonaws.com"));
        assert!(!is_sts_host("sts..amazonaws.com"));
    }
}
