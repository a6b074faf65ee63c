//! The OIDC issuer of each configured cluster, from EKS `DescribeCluster`.

use aws_sdk_eks::Client;
use aws_sdk_eks::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_eks::operation::describe_cluster::DescribeClusterError;
use tokenguard_core::StoreError;
use tokenguard_core::cloudtrail::IssuerLookup;

/// Looks issuers up with `eks:DescribeCluster`, which the function's role
/// needs on each configured cluster.
#[derive(Debug, Clone)]
pub struct EksIssuers {
    client: Client,
}

impl EksIssuers {
    pub fn new(client: Client) -> EksIssuers {
        EksIssuers { client }
    }
}

impl IssuerLookup for EksIssuers {
    async fn issuer(&self, cluster: &str) -> Result<Option<String>, StoreError> {
        let output = match self.client.describe_cluster().name(cluster).send().await {
            Ok(output) => output,
            Err(error)
                if matches!(
                    error.as_service_error(),
                    Some(DescribeClusterError::ResourceNotFoundException(_))
                ) =>
            {
                return Ok(None);
            }
            Err(error) => {
                let message = DisplayErrorContext(&error).to_string();
                let throttled = error.code().is_some_and(|code| {
                    code.contains("Throttl") || code.contains("ServerException")
                });
                let is_service = error.as_service_error().is_some();
                return Err(if is_service && !throttled {
                    StoreError::Permanent {
                        operation: "EKS DescribeCluster",
                        message: format!(
                            "cluster {cluster}: {message}; allow eks:DescribeCluster on it \
                             in the function's role"
                        ),
                    }
                } else {
                    StoreError::Transient {
                        operation: "EKS DescribeCluster",
                        message: format!("cluster {cluster}: {message}"),
                    }
                });
            }
        };
        let issuer = output
            .cluster()
            .and_then(|cluster| cluster.identity())
            .and_then(|identity| identity.oidc())
            .and_then(|oidc| oidc.issuer())
            .map(str::to_owned);
        Ok(issuer)
    }
}
