//! Lambda entry point: reads the configuration, builds the AWS clients once,
//! then serves SQS batches or EventBridge events of CloudTrail records.

// The futures of the AWS SDK inside the runtime nest deeper than the default
// limit of 128 when the compiler computes their layout.
#![recursion_limit = "256"]

use std::sync::Arc;

use anyhow::Context as _;
use aws_lambda_events::event::cloudwatch_events::CloudWatchEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use tokenguard_cloudtrail::{EksIssuers, handle_eventbridge, handle_sqs};
use tokenguard_core::cloudtrail::ClusterResolver;
use tokenguard_detector::{CLUSTERS_VAR, Config, DetectorEngine, LOG_FILTER_VAR, build_engine};
use tracing::{Instrument, info, info_span};
use tracing_subscriber::EnvFilter;

struct Function {
    engine: DetectorEngine,
    resolver: ClusterResolver<EksIssuers>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();

    let config = Config::from_env().context("invalid cloudtrail function configuration")?;
    if config.clusters.is_empty() {
        anyhow::bail!(
            "missing environment variable {CLUSTERS_VAR}: set it to the EKS cluster names to \
             watch, separated by commas"
        );
    }
    let sdk_config = aws_config::load_from_env().await;
    let resolver = ClusterResolver::new(
        config.clusters.clone(),
        EksIssuers::new(aws_sdk_eks::Client::new(&sdk_config)),
    );
    info!(
        correlation_table = %config.correlation_table,
        findings_table = %config.findings_table,
        topic_arn = %config.topic_arn,
        clusters = %config.clusters.join(","),
        correlation_window_seconds = config.correlation.window.as_secs(),
        containment_enforced = %config.containment.modes.enforced().collect::<Vec<_>>().join(","),
        "cloudtrail function started"
    );
    let function = Arc::new(Function {
        engine: build_engine(&config, &sdk_config)?,
        resolver,
    });

    lambda_runtime::run(service_fn(move |event| invoke(function.clone(), event)))
        .await
        .map_err(|error| anyhow::anyhow!(error))
        .context("lambda runtime stopped")
}

/// Accepts an SQS batch (`Records` of `aws:sqs` messages) or one EventBridge
/// event, told apart by shape.
async fn invoke(
    function: Arc<Function>,
    event: LambdaEvent<Value>,
) -> Result<Value, lambda_runtime::Error> {
    let span = info_span!("invocation", request_id = %event.context.request_id);
    let now = chrono::Utc::now();
    let payload = event.payload;
    async move {
        if payload.get("Records").is_some() {
            let batch: SqsEvent = serde_json::from_value(payload)
                .map_err(|error| format!("invalid SQS event: {error}"))?;
            let (response, _) = handle_sqs(&function.engine, &function.resolver, &batch, now).await;
            return Ok(serde_json::to_value(response)?);
        }
        if payload.get("detail-type").is_some() {
            let event: CloudWatchEvent<Value> = serde_json::from_value(payload)
                .map_err(|error| format!("invalid EventBridge event: {error}"))?;
            let counts =
                handle_eventbridge(&function.engine, &function.resolver, &event, now).await?;
            return Ok(serde_json::to_value(counts)?);
        }
        Err(
            "unsupported event: expected an SQS batch or an EventBridge event of \
             CloudTrail API calls"
                .into(),
        )
    }
    .instrument(span)
    .await
}

/// JSON logs on stdout, filtered by `RUST_LOG` (default `info`).
fn init_logging() {
    let filter = EnvFilter::try_from_env(LOG_FILTER_VAR).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .init();
}
