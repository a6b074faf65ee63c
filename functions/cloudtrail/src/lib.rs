//! CloudTrail Lambda of tokenguard.
//!
//! EventBridge sends the CloudTrail records of token exchanges to an SQS
//! queue, and the queue invokes this function with batches of them. The
//! [`handler`] runs each record through the same engine as the detector,
//! which matches it with the token reads the detector stored, escalates
//! their findings, or raises a finding of its own. [`eks`] finds each
//! configured cluster's OIDC issuer with EKS `DescribeCluster`.

pub mod eks;
pub mod handler;
pub mod metrics;

pub use eks::EksIssuers;
pub use handler::{handle_eventbridge, handle_sqs};

/// Every environment variable this function reads, apart from those Lambda
/// sets. They are the detector's, because both functions load the same
/// [`tokenguard_detector::Config`] and log filter.
pub const ENV_VARS: &[&str] = tokenguard_detector::ENV_VARS;
