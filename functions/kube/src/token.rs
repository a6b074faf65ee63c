//! EKS bearer tokens: presigned STS `GetCallerIdentity` URLs, made the way
//! `aws eks get-token` and aws-iam-authenticator make them.
//!
//! The API server's authenticator decodes the URL, checks that it names
//! `GetCallerIdentity` with the `x-k8s-aws-id` header signed, and calls STS
//! with that header set to its own cluster name. STS then returns the
//! caller's identity, so a token only works on the cluster it was signed for.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use thiserror::Error;

/// Prefix of an EKS token, followed by base64url of the presigned URL.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";

/// Header that carries the cluster name. It must be among the signed
/// headers.
pub const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";

/// `X-Amz-Expires` of the presigned URL. STS ignores it and accepts a
/// presigned `GetCallerIdentity` for 15 minutes after `X-Amz-Date`.
/// aws-iam-authenticator sends 60, and its verifier accepts 0 to 900
/// (`pkg/token/token.go` in kubernetes-sigs/aws-iam-authenticator).
pub const PRESIGN_EXPIRES: Duration = Duration::from_secs(60);

/// How long EKS accepts a token after it was signed.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// Age at which a token is replaced: one minute before EKS stops accepting
/// it, the `expirationTimestamp` that aws-iam-authenticator reports.
pub const TOKEN_REFRESH_AFTER: Duration = Duration::from_secs(14 * 60);

/// Temporary credentials are not used for a token within this margin of
/// their expiry, because the presigned URL stops working when they expire.
const CREDENTIALS_MARGIN: Duration = Duration::from_secs(60);

/// A failure to make an EKS token.
#[derive(Debug, Error)]
pub enum TokenError {
    /// The credential chain returned no credentials.
    #[error(
        "failed to load AWS credentials to sign an EKS token: give the detector a role, or set \
         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )]
    Credentials(#[source] CredentialsError),
    /// aws-sigv4 rejected the request or its parameters.
    #[error("failed to presign the STS GetCallerIdentity URL for cluster {cluster}: {message}")]
    Signing { cluster: String, message: String },
}

/// A bearer token for one cluster.
#[derive(Clone)]
pub struct EksToken {
    token: String,
    /// When the presigned URL was signed (`X-Amz-Date`).
    pub signed_at: SystemTime,
    /// When the token should be replaced: [`TOKEN_REFRESH_AFTER`] after
    /// signing, or earlier when the credentials expire sooner.
    pub refresh_at: SystemTime,
}

impl EksToken {
    /// Returns the `k8s-aws-v1.` token to send as `Authorization: Bearer`.
    pub fn secret(&self) -> &str {
        &self.token
    }

    /// Whether the token should be replaced at `now`.
    pub fn needs_refresh(&self, now: SystemTime) -> bool {
        now >= self.refresh_at
    }
}

impl fmt::Debug for EksToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EksToken")
            .field("token", &"<redacted>")
            .field("signed_at", &self.signed_at)
            .field("refresh_at", &self.refresh_at)
            .finish()
    }
}

/// Signs EKS tokens with credentials from a provider, for clusters in one
/// region.
#[derive(Debug, Clone)]
pub struct EksTokens {
    provider: SharedCredentialsProvider,
    region: String,
}

impl EksTokens {
    /// Signs tokens for clusters in `region` with credentials from
    /// `provider`.
    pub fn new(provider: SharedCredentialsProvider, region: impl Into<String>) -> EksTokens {
        EksTokens {
            provider,
            region: region.into(),
        }
    }

    /// Returns the region of the STS endpoint in the presigned URLs.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Loads credentials and signs a token for `cluster` at `now`.
    pub async fn token(&self, cluster: &str, now: SystemTime) -> Result<EksToken, TokenError> {
        let credentials = self
            .provider
            .provide_credentials()
            .await
            .map_err(TokenError::Credentials)?;
        let token = presign_token(cluster, &self.region, &credentials, now)?;
        let mut refresh_at = now + TOKEN_REFRESH_AFTER;
        if let Some(expiry) = credentials.expiry() {
            refresh_at = refresh_at.min(expiry.checked_sub(CREDENTIALS_MARGIN).unwrap_or(expiry));
        }
        Ok(EksToken {
            token,
            signed_at: now,
            refresh_at,
        })
    }
}

/// Host of the regional STS endpoint for `region`.
pub fn sts_host(region: &str) -> String {
    if region.starts_with("cn-") {
        format!("sts.{region}.amazonaws.com.cn")
    } else {
        format!("sts.{region}.amazonaws.com")
    }
}

/// Makes the EKS token for `cluster`: the `GetCallerIdentity` URL of the
/// regional STS endpoint, presigned at `time` with the cluster name in the
/// signed `x-k8s-aws-id` header, encoded base64url without padding after
/// [`TOKEN_PREFIX`]. A session token goes in `X-Amz-Security-Token`.
pub fn presign_token(
    cluster: &str,
    region: &str,
    credentials: &Credentials,
    time: SystemTime,
) -> Result<String, TokenError> {
    let signing_error = |message: String| TokenError::Signing {
        cluster: cluster.to_owned(),
        message,
    };
    let url = format!(
        "https://{}/?Action=GetCallerIdentity&Version=2011-06-15",
        sts_host(region)
    );

    let identity: Identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(PRESIGN_EXPIRES);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(time)
        .settings(settings)
        .build()
        .map_err(|error| signing_error(error.to_string()))?
        .into();

    // STS hashes the empty body of the GET, as botocore's presigner does for
    // STS, rather than taking UNSIGNED-PAYLOAD.
    let request = SignableRequest::new(
        "GET",
        &url,
        std::iter::once((CLUSTER_ID_HEADER, cluster)),
        SignableBody::Bytes(&[]),
    )
    .map_err(|error| signing_error(error.to_string()))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|error| signing_error(error.to_string()))?
        .into_parts();

    let mut presigned = http::Request::get(&url)
        .body(())
        .map_err(|error| signing_error(error.to_string()))?;
    instructions.apply_to_request_http1x(&mut presigned);
    let presigned_url = presigned.uri().to_string();
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(presigned_url)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(expiry: Option<SystemTime>) -> Credentials {
        Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            None,
            expiry,
            "test",
        )
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[tokio::test]
    async fn refresh_fourteen_minutes_after_signing() {
        let tokens = EksTokens::new(
            SharedCredentialsProvider::new(credentials(None)),
            "eu-west-1",
        );
        let token = tokens.token("prod", at(1_714_564_800)).await.unwrap();
        assert_eq!(token.signed_at, at(1_714_564_800));
        assert_eq!(token.refresh_at, at(1_714_564_800 + 14 * 60));
        assert!(!token.needs_refresh(at(1_714_564_800 + 14 * 60 - 1)));
        assert!(token.needs_refresh(at(1_714_564_800 + 14 * 60)));
    }

    #[tokio::test]
    async fn refresh_before_credentials_expire() {
        let expiry = at(1_714_564_800 + 5 * 60);
        let tokens = EksTokens::new(
            SharedCredentialsProvider::new(credentials(Some(expiry))),
            "eu-west-1",
        );
        let token = tokens.token("prod", at(1_714_564_800)).await.unwrap();
        assert_eq!(token.refresh_at, at(1_714_564_800 + 4 * 60));
    }

    #[test]
    fn debug_redacts_token() {
        let token = EksToken {
            token: "k8s-aws-v1.secret".to_owned(),
            signed_at: at(0),
            refresh_at: at(1),
        };
        assert!(!format!("{token:?}").contains("secret"));
    }

    #[test]
    fn sts_host_by_partition() {
        assert_eq!(sts_host("eu-west-1"), "sts.eu-west-1.amazonaws.com");
        assert_eq!(sts_host("cn-north-1"), "sts.cn-north-1.amazonaws.com.cn");
        assert_eq!(sts_host("us-gov-west-1"), "sts.us-gov-west-1.amazonaws.com");
    }
}
