//! Builds the engine both Lambdas run from their [`Config`].

use std::collections::HashMap;

use anyhow::Context as _;
use aws_config::SdkConfig;
use tokenguard_core::Engine;
use tokenguard_core::contain::Containment;
use tokenguard_kube::{ClusterEndpoint, ClusterSource, EksClusters, EksTokens};

use crate::config::{Config, KUBERNETES_ENDPOINTS_VAR};
use crate::{DetectorEngine, DynamoCorrelation, DynamoRateLimiter, DynamoStore, SnsNotifier};

/// Builds the engine with the DynamoDB stores, the SNS notifier and
/// containment through the clusters' Kubernetes APIs.
pub fn build_engine(config: &Config, sdk_config: &SdkConfig) -> anyhow::Result<DetectorEngine> {
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk_config);
    let store = DynamoStore::new(
        dynamodb.clone(),
        &config.baseline_table,
        &config.findings_table,
    );
    let correlation = DynamoCorrelation::new(
        dynamodb.clone(),
        &config.correlation_table,
        &config.findings_table,
    );
    let notifier = SnsNotifier::new(aws_sdk_sns::Client::new(sdk_config), &config.topic_arn);
    let limiter = DynamoRateLimiter::new(dynamodb, &config.baseline_table);
    let clusters = kubernetes(config, sdk_config)?;
    let engine = Engine::with_correlation(
        store,
        notifier,
        config.policy.clone(),
        correlation,
        config.correlation.clone(),
    )
    .with_containment(Containment::new(
        config.containment.clone(),
        clusters,
        limiter,
    ));
    Ok(engine)
}

/// The clusters' Kubernetes APIs: found with EKS `DescribeCluster`, or the
/// fixed endpoints of [`KUBERNETES_ENDPOINTS_VAR`].
fn kubernetes(config: &Config, sdk_config: &SdkConfig) -> anyhow::Result<EksClusters> {
    if config.kubernetes_endpoints.is_empty() {
        return EksClusters::from_sdk_config(sdk_config)
            .context("cannot reach the clusters' Kubernetes APIs for containment");
    }
    let mut endpoints = HashMap::new();
    for endpoint in &config.kubernetes_endpoints {
        let pem = std::fs::read(&endpoint.ca_file).with_context(|| {
            format!(
                "cannot read the CA file {} of cluster {} in {KUBERNETES_ENDPOINTS_VAR}",
                endpoint.ca_file, endpoint.cluster
            )
        })?;
        let fixed = ClusterEndpoint::from_pem(&endpoint.cluster, &endpoint.url, &pem)
            .with_context(|| format!("invalid {KUBERNETES_ENDPOINTS_VAR}"))?;
        endpoints.insert(endpoint.cluster.clone(), fixed);
    }
    let region = sdk_config
        .region()
        .context("no AWS region configured: set AWS_REGION")?;
    let provider = sdk_config
        .credentials_provider()
        .context("no AWS credentials provider configured")?;
    Ok(EksClusters::new(
        ClusterSource::Fixed(endpoints),
        EksTokens::new(provider, region.as_ref()),
    ))
}
