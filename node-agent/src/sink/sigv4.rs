//! SigV4 signing of POSTs to a Lambda Function URL with `AWS_IAM` auth.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use thiserror::Error;
use tokio::sync::Mutex;

/// Signing name of Lambda, which serves Function URLs.
pub const SERVICE: &str = "lambda";

/// Credentials are refreshed when they expire within this margin.
const EXPIRY_MARGIN: Duration = Duration::from_secs(300);

/// A failure to sign a request.
#[derive(Debug, Error)]
pub enum SignError {
    /// The credential chain returned no credentials.
    #[error(
        "failed to load AWS credentials: {0}; give the agent a role (IRSA, EKS Pod Identity or \
         an instance profile) or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )]
    Credentials(#[source] aws_credential_types::provider::error::CredentialsError),
    /// The signer rejected the request or its parameters.
    #[error("failed to sign request: {0}")]
    Signing(String),
}

/// Signs requests with credentials from a provider, caching them until
/// shortly before they expire.
#[derive(Debug)]
pub struct Signer {
    provider: SharedCredentialsProvider,
    region: String,
    cached: Mutex<Option<Credentials>>,
}

impl Signer {
    /// Builds a signer for `region` with credentials from `provider`.
    pub fn new(provider: SharedCredentialsProvider, region: impl Into<String>) -> Signer {
        Signer {
            provider,
            region: region.into(),
            cached: Mutex::new(None),
        }
    }

    async fn credentials(&self) -> Result<Credentials, SignError> {
        let mut cached = self.cached.lock().await;
        if let Some(credentials) = cached.as_ref() {
            let fresh = credentials
                .expiry()
                .is_none_or(|expiry| expiry > SystemTime::now() + EXPIRY_MARGIN);
            if fresh {
                return Ok(credentials.clone());
            }
        }
        let credentials = self
            .provider
            .provide_credentials()
            .await
            .map_err(SignError::Credentials)?;
        *cached = Some(credentials.clone());
        Ok(credentials)
    }

    /// Returns the headers that sign a POST of `body` with `headers` to
    /// `url`: `authorization`, `x-amz-date`, `x-amz-content-sha256`, and
    /// `x-amz-security-token` for temporary credentials.
    pub async fn sign_post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, SignError> {
        let identity: Identity = self.credentials().await?.into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SERVICE)
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|error| SignError::Signing(error.to_string()))?
            .into();
        let request = SignableRequest::new(
            "POST",
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|error| SignError::Signing(error.to_string()))?;
        let (instructions, _signature) = sign(request, &params)
            .map_err(|error| SignError::Signing(error.to_string()))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(session_token: Option<&str>) -> Signer {
        let credentials = Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            session_token.map(str::to_owned),
            None,
            "test",
        );
        Signer::new(SharedCredentialsProvider::new(credentials), "eu-west-1")
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[tokio::test]
    async fn signs_for_lambda_with_payload_hash() {
        let headers = signer(None)
            .sign_post(
                "https://abc123.lambda-url.eu-west-1.on.aws/",
                &[("content-type", "application/json")],
                b"{}",
            )
            .await
            .unwrap();
        let authorization = header(&headers, "authorization").unwrap();
        assert!(authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/"));
        assert!(authorization.contains("/eu-west-1/lambda/aws4_request"));
        assert!(authorization.contains("x-amz-content-sha256"));
        assert_eq!(
            header(&headers, "x-amz-content-sha256"),
            Some("44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")
        );
        assert!(header(&headers, "x-amz-date").is_some());
        assert_eq!(header(&headers, "x-amz-security-token"), None);
    }

    #[tokio::test]
    async fn session_token_sent() {
        let headers = signer(Some("session-token-value"))
            .sign_post("https://abc123.lambda-url.eu-west-1.on.aws/", &[], b"{}")
            .await
            .unwrap();
        assert_eq!(
            header(&headers, "x-amz-security-token"),
            Some("session-token-value")
        );
    }
}
