//! Errors in reaching a cluster's API, before any API call is made.

use thiserror::Error;

use crate::token::TokenError;

/// A failure to look up a cluster or to build its client.
#[derive(Debug, Error)]
pub enum SetupError {
    /// The AWS configuration has no region.
    #[error("no AWS region configured: set AWS_REGION to the region of the EKS clusters")]
    NoRegion,
    /// The AWS configuration has no credentials provider.
    #[error(
        "no AWS credentials provider configured: give the detector a role, or set \
         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )]
    NoCredentials,
    /// `DescribeCluster` failed.
    #[error("failed to describe EKS cluster {cluster}: {message}")]
    Describe { cluster: String, message: String },
    /// `DescribeCluster` returned `ResourceNotFoundException`.
    #[error(
        "EKS cluster {cluster} not found in the detector's region: check the cluster name the \
         agent reports and the region the detector runs in"
    )]
    ClusterNotFound { cluster: String },
    /// The cluster has no endpoint or CA yet, as while it is being created.
    #[error(
        "EKS cluster {cluster} has no API endpoint or certificate authority yet (status \
         {status}): containment can act once the cluster is ACTIVE"
    )]
    NotReady { cluster: String, status: String },
    /// A fixed cluster list has no entry for the cluster.
    #[error("no API endpoint configured for cluster {cluster}: add it to the fixed cluster list")]
    UnknownCluster { cluster: String },
    /// The API server URL is not a usable `https://` URL.
    #[error("invalid API server URL {url:?} for cluster {cluster}: {problem}")]
    InvalidEndpoint {
        cluster: String,
        url: String,
        problem: String,
    },
    /// The CA bundle does not parse as certificates.
    #[error("invalid certificate authority for cluster {cluster}: {problem}; {fix}")]
    InvalidCa {
        cluster: String,
        problem: String,
        fix: String,
    },
    /// No bearer token could be made.
    #[error("failed to make an EKS token for cluster {cluster}")]
    Token {
        cluster: String,
        #[source]
        source: TokenError,
    },
    /// kube rejected the client configuration.
    #[error("failed to build the Kubernetes client for cluster {cluster}")]
    Client {
        cluster: String,
        #[source]
        source: kube::Error,
    },
}
