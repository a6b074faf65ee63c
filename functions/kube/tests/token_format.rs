//! The EKS token format, checked with fixed credentials and a fixed time
//! against the authenticator's rules, a SigV4 signature recomputed by hand,
//! and signatures from botocore's presigner.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokenguard_e2e::eks_token::{decode_token, parse_token};
use tokenguard_kube::presign_token;

const ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const SESSION_TOKEN: &str = "FwoGZXIvYXdzEBYaDH/session+token==";
const CLUSTER: &str = "prod-cluster";
const REGION: &str = "eu-west-1";

/// 2024-05-01T12:00:00Z.
const SIGNED_AT: u64 = 1_714_564_800;

/// Signatures for the inputs above from botocore 1.43's presigner, both its
/// Python SigV4QueryAuth and its awscrt signer, driven the way the AWS CLI's
/// `eks get-token` drives it: `generate_presigned_url("get_caller_identity",
/// ExpiresIn=60, HttpMethod="GET")` with `x-k8s-aws-id` added before
/// signing, and the clock fixed at 2024-05-01T12:00:00Z.
const BOTOCORE_SIGNATURE: &str = "d67091b041414ed11402cfa9d848ed492e07794e231c878bc5f12b655d7e7cec";
const BOTOCORE_SIGNATURE_WITH_SESSION: &str =
    "3e0425f5cd239f5f9e4fb4db5e9867e5eb75ff460f8c5f4fb473fa687c15c12b";

fn signed_at() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(SIGNED_AT)
}

fn credentials(session_token: Option<&str>) -> Credentials {
    Credentials::new(
        ACCESS_KEY_ID,
        SECRET_KEY,
        session_token.map(str::to_owned),
        None,
        "test",
    )
}

fn token(session_token: Option<&str>) -> String {
    presign_token(CLUSTER, REGION, &credentials(session_token), signed_at()).unwrap()
}

#[test]
fn token_is_prefixed_base64url_without_padding() {
    let token = token(None);
    let encoded = token
        .strip_prefix("k8s-aws-v1.")
        .expect("k8s-aws-v1. prefix");
    assert!(!encoded.contains('='));
    assert!(!encoded.contains('+'));
    assert!(!encoded.contains('/'));
    let url = String::from_utf8(URL_SAFE_NO_PAD.decode(encoded).unwrap()).unwrap();
    assert!(
        url.starts_with("https://sts.eu-west-1.amazonaws.com/?"),
        "{url}"
    );
}

#[test]
fn presigned_url_parameters() {
    let presigned = decode_token(&token(None)).unwrap();
    assert_eq!(presigned.url.scheme(), "https");
    assert_eq!(
        presigned.url.host_str(),
        Some("sts.eu-west-1.amazonaws.com")
    );
    assert_eq!(presigned.url.path(), "/");

    let names: Vec<&str> = presigned.params.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "Action",
            "Version",
            "X-Amz-Algorithm",
            "X-Amz-Credential",
            "X-Amz-Date",
            "X-Amz-Expires",
            "X-Amz-Signature",
            "X-Amz-SignedHeaders",
        ]
    );
    assert_eq!(presigned.param("Action"), Some("GetCallerIdentity"));
    assert_eq!(presigned.param("Version"), Some("2011-06-15"));
    assert_eq!(presigned.param("X-Amz-Algorithm"), Some("AWS4-HMAC-SHA256"));
    assert_eq!(
        presigned.param("X-Amz-Credential"),
        Some("AKIAIOSFODNN7EXAMPLE/20240501/eu-west-1/sts/aws4_request")
    );
    assert_eq!(presigned.param("X-Amz-Date"), Some("20240501T120000Z"));
    assert_eq!(presigned.param("X-Amz-Expires"), Some("60"));
    assert_eq!(
        presigned.param("X-Amz-SignedHeaders"),
        Some("host;x-k8s-aws-id")
    );
    assert_eq!(presigned.signed_at, signed_at());
}

#[test]
fn session_token_in_query() {
    let presigned = decode_token(&token(Some(SESSION_TOKEN))).unwrap();
    assert_eq!(presigned.param("X-Amz-Security-Token"), Some(SESSION_TOKEN));
}

#[test]
fn signature_matches_recomputation() {
    for session_token in [None, Some(SESSION_TOKEN)] {
        let presigned = decode_token(&token(session_token)).unwrap();
        let expected = presigned.expected_signature(CLUSTER, SECRET_KEY).unwrap();
        assert_eq!(presigned.param("X-Amz-Signature"), Some(expected.as_str()));
    }
}

#[test]
fn signature_matches_botocore() {
    let presigned = decode_token(&token(None)).unwrap();
    assert_eq!(presigned.param("X-Amz-Signature"), Some(BOTOCORE_SIGNATURE));
    let presigned = decode_token(&token(Some(SESSION_TOKEN))).unwrap();
    assert_eq!(
        presigned.param("X-Amz-Signature"),
        Some(BOTOCORE_SIGNATURE_WITH_SESSION)
    );
}

#[test]
fn signature_binds_cluster_name() {
    let presigned = decode_token(&token(None)).unwrap();
    assert!(presigned.verify_signature(CLUSTER, SECRET_KEY).is_ok());
    assert!(
        presigned
            .verify_signature("other-cluster", SECRET_KEY)
            .is_err()
    );
    assert!(presigned.verify_signature(CLUSTER, "wrong-secret").is_err());
}

#[test]
fn accepted_for_fifteen_minutes() {
    let token = token(None);
    let fifteen_minutes = Duration::from_secs(15 * 60);
    assert!(parse_token(&token, signed_at()).is_ok());
    assert!(parse_token(&token, signed_at() + fifteen_minutes).is_ok());
    let error = parse_token(
        &token,
        signed_at() + fifteen_minutes + Duration::from_secs(1),
    )
    .unwrap_err();
    assert!(error.contains("expired"), "{error}");
}

#[test]
fn china_region_uses_china_endpoint() {
    let token = presign_token(CLUSTER, "cn-north-1", &credentials(None), signed_at()).unwrap();
    let presigned = decode_token(&token).unwrap();
    assert_eq!(
        presigned.url.host_str(),
        Some("sts.cn-north-1.amazonaws.com.cn")
    );
}
