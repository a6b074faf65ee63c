//! Lambda entry point: reads the configuration, builds the AWS clients once,
//! then serves Function URL invocations.

// The futures of the AWS SDK inside the runtime nest deeper than the default
// limit of 128 when the compiler computes their layout.
#![recursion_limit = "256"]

use std::sync::Arc;

use anyhow::Context as _;
use aws_lambda_events::event::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use lambda_runtime::{LambdaEvent, service_fn};
use tokenguard_detector::{Config, DetectorEngine, LOG_FILTER_VAR, build_engine, handle_request};
use tracing::{Instrument, info, info_span};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();

    let config = Config::from_env().context("invalid detector configuration")?;
    // Standard loading: region, credentials and AWS_ENDPOINT_URL come from the
    // Lambda environment.
    let sdk_config = aws_config::load_from_env().await;
    let engine = Arc::new(build_engine(&config, &sdk_config)?);
    info!(
        baseline_table = %config.baseline_table,
        findings_table = %config.findings_table,
        topic_arn = %config.topic_arn,
        learning_period_seconds = config.policy.learning_period.as_secs(),
        forget_after_seconds = config.policy.forget_after.as_secs(),
        correlation_table = %config.correlation_table,
        correlation_window_seconds = config.correlation.window.as_secs(),
        clusters = %config.clusters.join(","),
        containment_enforced = %config.containment.modes.enforced().collect::<Vec<_>>().join(","),
        containment_default = %config.containment.modes.default,
        "detector started"
    );

    lambda_runtime::run(service_fn(move |event| invoke(engine.clone(), event)))
        .await
        .map_err(|error| anyhow::anyhow!(error))
        .context("lambda runtime stopped")
}

async fn invoke(
    engine: Arc<DetectorEngine>,
    event: LambdaEvent<LambdaFunctionUrlRequest>,
) -> Result<LambdaFunctionUrlResponse, lambda_runtime::Error> {
    let span = info_span!("invocation", request_id = %event.context.request_id);
    let started = std::time::Instant::now();
    let response = handle_request(&engine, &event.payload, chrono::Utc::now())
        .instrument(span.clone())
        .await;
    let duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    span.in_scope(|| {
        info!(
            status = response.status_code,
            duration_us, "invocation finished"
        );
    });
    Ok(response)
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
