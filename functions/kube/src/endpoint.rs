//! Cluster endpoints: each cluster's API server URL and the CA that signs
//! its certificate, from EKS `DescribeCluster` or from a fixed list for tests
//! and clusters outside EKS.

use std::collections::HashMap;
use std::fmt;

use aws_sdk_eks::error::{DisplayErrorContext, SdkError};
use aws_sdk_eks::operation::describe_cluster::DescribeClusterError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::error::SetupError;

/// A cluster's API server URL and the CA certificates trusted for it.
#[derive(Clone)]
pub struct ClusterEndpoint {
    url: http::Uri,
    /// DER of each CA certificate. No other roots are trusted.
    ca_certificates: Vec<Vec<u8>>,
}

impl ClusterEndpoint {
    /// Builds an endpoint from an `https://` URL and a PEM bundle of one or
    /// more CA certificates.
    pub fn from_pem(
        cluster: &str,
        url: &str,
        ca_pem: &[u8],
    ) -> Result<ClusterEndpoint, SetupError> {
        let url = parse_url(cluster, url)?;
        let fix = "give a PEM bundle of one or more CERTIFICATE blocks";
        let ca_certificates = parse_ca_bundle(cluster, ca_pem, fix)?;
        Ok(ClusterEndpoint {
            url,
            ca_certificates,
        })
    }

    /// Builds an endpoint from `DescribeCluster`'s `endpoint` and
    /// `certificateAuthority.data`, which is base64 of a PEM bundle.
    pub fn from_eks(
        cluster: &str,
        endpoint: &str,
        ca_data: &str,
    ) -> Result<ClusterEndpoint, SetupError> {
        let url = parse_url(cluster, endpoint)?;
        let fix = format!(
            "compare certificateAuthority.data of `aws eks describe-cluster --name {cluster}` \
             with the cluster's kubeconfig"
        );
        let compact: String = ca_data.split_whitespace().collect();
        let pem = STANDARD
            .decode(compact)
            .map_err(|error| SetupError::InvalidCa {
                cluster: cluster.to_owned(),
                problem: format!("certificateAuthority.data is not valid base64 ({error})"),
                fix: fix.clone(),
            })?;
        let ca_certificates = parse_ca_bundle(cluster, &pem, &fix)?;
        Ok(ClusterEndpoint {
            url,
            ca_certificates,
        })
    }

    /// Returns the API server URL.
    pub fn url(&self) -> &http::Uri {
        &self.url
    }

    /// Returns the DER of each trusted CA certificate.
    pub fn ca_certificates(&self) -> &[Vec<u8>] {
        &self.ca_certificates
    }
}

impl fmt::Debug for ClusterEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterEndpoint")
            .field("url", &self.url)
            .field("ca_certificates", &self.ca_certificates.len())
            .finish()
    }
}

fn parse_url(cluster: &str, url: &str) -> Result<http::Uri, SetupError> {
    let invalid = |problem: String| SetupError::InvalidEndpoint {
        cluster: cluster.to_owned(),
        url: url.to_owned(),
        problem,
    };
    let uri: http::Uri = url.parse().map_err(|error| invalid(format!("{error}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(invalid("the scheme is not https".to_owned()));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("it has no host".to_owned()));
    }
    Ok(uri)
}

/// Parses the CERTIFICATE blocks of `pem` and checks that each is an X.509
/// certificate rustls accepts as a trust anchor.
fn parse_ca_bundle(cluster: &str, pem: &[u8], fix: &str) -> Result<Vec<Vec<u8>>, SetupError> {
    let invalid = |problem: String| SetupError::InvalidCa {
        cluster: cluster.to_owned(),
        problem,
        fix: fix.to_owned(),
    };
    let mut certificates = Vec::new();
    for certificate in CertificateDer::pem_slice_iter(pem) {
        let certificate =
            certificate.map_err(|error| invalid(format!("the PEM bundle is invalid ({error})")))?;
        let mut store = rustls::RootCertStore::empty();
        store
            .add(certificate.clone())
            .map_err(|error| invalid(format!("a CA certificate is invalid ({error})")))?;
        certificates.push(certificate.as_ref().to_vec());
    }
    if certificates.is_empty() {
        return Err(invalid(
            "the PEM bundle has no CERTIFICATE block".to_owned(),
        ));
    }
    Ok(certificates)
}

/// Source of each cluster's endpoint for [`EksClusters`](crate::EksClusters).
#[derive(Debug, Clone)]
pub enum ClusterSource {
    /// EKS `DescribeCluster` in the client's region.
    Eks(aws_sdk_eks::Client),
    /// Fixed endpoints by cluster name.
    Fixed(HashMap<String, ClusterEndpoint>),
}

impl ClusterSource {
    /// Looks up the endpoint of `cluster`.
    pub async fn endpoint(&self, cluster: &str) -> Result<ClusterEndpoint, SetupError> {
        match self {
            ClusterSource::Eks(client) => describe(client, cluster).await,
            ClusterSource::Fixed(endpoints) => {
                endpoints
                    .get(cluster)
                    .cloned()
                    .ok_or_else(|| SetupError::UnknownCluster {
                        cluster: cluster.to_owned(),
                    })
            }
        }
    }
}

async fn describe(
    client: &aws_sdk_eks::Client,
    cluster: &str,
) -> Result<ClusterEndpoint, SetupError> {
    let output = client
        .describe_cluster()
        .name(cluster)
        .send()
        .await
        .map_err(|error| describe_error(cluster, error))?;
    let description = output.cluster();
    let endpoint = description.and_then(|c| c.endpoint()).unwrap_or_default();
    let ca_data = description
        .and_then(|c| c.certificate_authority())
        .and_then(|ca| ca.data())
        .unwrap_or_default();
    if endpoint.is_empty() || ca_data.is_empty() {
        let status = description
            .and_then(|c| c.status())
            .map_or_else(|| "unknown".to_owned(), |status| status.as_str().to_owned());
        return Err(SetupError::NotReady {
            cluster: cluster.to_owned(),
            status,
        });
    }
    ClusterEndpoint::from_eks(cluster, endpoint, ca_data)
}

fn describe_error(cluster: &str, error: SdkError<DescribeClusterError>) -> SetupError {
    if let Some(DescribeClusterError::ResourceNotFoundException(_)) = error.as_service_error() {
        return SetupError::ClusterNotFound {
            cluster: cluster.to_owned(),
        };
    }
    SetupError::Describe {
        cluster: cluster.to_owned(),
        message: DisplayErrorContext(&error).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Well-formed PEM whose DER stops inside the public key, so it is not a
    // certificate.
    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBdjCCAR2gAwIBAgIUJ6mZ0B0JSoUMYNPcO3rmM1FhIvYwCgYIKoZIzj0EAwIw
EjEQMA4GA1UEAwwHdGVzdC1jYTAeFw0yNDA1MDExMjAwMDBaFw0zNDA0MjkxMjAw
MDBaMBIxEDAOBgNVBAMMB3Rlc3QtY2EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AAQ=
-----END CERTIFICATE-----
";

    fn expect_invalid_ca(result: Result<ClusterEndpoint, SetupError>) -> String {
        match result {
            Err(error @ SetupError::InvalidCa { .. }) => error.to_string(),
            other => panic!("expected an invalid CA error, got {other:?}"),
        }
    }

    #[test]
    fn eks_ca_not_base64() {
        let message = expect_invalid_ca(ClusterEndpoint::from_eks(
            "prod",
            "https://ABC.gr7.eu-west-1.eks.amazonaws.com",
            "not base64!",
        ));
        assert!(message.contains("cluster prod"), "{message}");
        assert!(message.contains("not valid base64"), "{message}");
        assert!(
            message.contains("aws eks describe-cluster --name prod"),
            "{message}"
        );
    }

    #[test]
    fn eks_ca_without_certificate() {
        let data = STANDARD.encode("just text, no PEM");
        let message = expect_invalid_ca(ClusterEndpoint::from_eks(
            "prod",
            "https://ABC.gr7.eu-west-1.eks.amazonaws.com",
            &data,
        ));
        assert!(message.contains("no CERTIFICATE block"), "{message}");
    }

    #[test]
    fn pem_with_truncated_certificate() {
        let message = expect_invalid_ca(ClusterEndpoint::from_pem(
            "prod",
            "https://127.0.0.1:6443",
            CA_PEM.as_bytes(),
        ));
        assert!(message.contains("cluster prod"), "{message}");
        assert!(message.contains("a CA certificate is invalid"), "{message}");
        assert!(message.contains("CERTIFICATE blocks"), "{message}");
    }

    #[test]
    fn endpoint_must_be_https() {
        let result = ClusterEndpoint::from_pem("prod", "http://127.0.0.1:6443", CA_PEM.as_bytes());
        match result {
            Err(SetupError::InvalidEndpoint { problem, .. }) => {
                assert!(problem.contains("https"), "{problem}");
            }
            other => panic!("expected an invalid endpoint error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn fixed_source_unknown_cluster() {
        let source = ClusterSource::Fixed(HashMap::new());
        let error = source.endpoint("staging").await.unwrap_err();
        assert!(matches!(error, SetupError::UnknownCluster { .. }));
        assert!(error.to_string().contains("staging"));
    }
}
