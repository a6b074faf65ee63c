//! Kubernetes API access for containment on EKS.
//!
//! [`EksClusters`] implements [`tokenguard_core::contain::ClusterApi`]: it
//! finds each cluster's API endpoint and CA with EKS `DescribeCluster` (or a
//! fixed list), trusts only that CA, and authenticates with the bearer token
//! `aws eks get-token` would make from the function's IAM credentials. The
//! cluster must map that IAM role to a Kubernetes user allowed to get pods,
//! ReplicaSets, Deployments and StatefulSets, to delete and patch pods, to
//! create NetworkPolicies, and to get the NetworkPolicy
//! `tokenguard-quarantine`.

mod api;
mod clusters;
mod endpoint;
mod error;
mod quarantine;
pub mod token;

pub use api::{MIRROR_ANNOTATION, api_error, pod_state};
pub use clusters::EksClusters;
pub use endpoint::{ClusterEndpoint, ClusterSource};
pub use error::SetupError;
pub use quarantine::quarantine_policy;
pub use token::{EksToken, EksTokens, TokenError, presign_token};
