//! Detector Lambda of tokenguard.
//!
//! Node agents POST batches of token reads to the function's URL. The
//! [`handler`] runs each batch through [`tokenguard_core::Engine`], backed by
//! the DynamoDB baseline in [`dynamodb`] and the SNS notifier in [`sns`], and
//! answers with one outcome per event. [`config`] reads the settings from the
//! environment once at start-up.

mod aws_error;
mod build;
pub mod config;
pub mod dynamodb;
pub mod handler;
pub mod sns;

pub use build::build_engine;
pub use config::{CLUSTERS_VAR, Config, ConfigError, ENV_VARS, LOG_FILTER_VAR};
pub use dynamodb::{
    DynamoCorrelation, DynamoRateLimiter, DynamoStore, create_correlation_table, create_tables,
};
pub use handler::{Reply, handle_batch, handle_request};
pub use sns::SnsNotifier;

/// The engine as the Lambdas run it.
pub type DetectorEngine = tokenguard_core::Engine<
    DynamoStore,
    SnsNotifier,
    DynamoCorrelation,
    tokenguard_core::contain::Containment<tokenguard_kube::EksClusters, DynamoRateLimiter>,
>;
