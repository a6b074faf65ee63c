//! Handlers for the two ways EventBridge can deliver CloudTrail records: SQS
//! batches (the deployed path) and direct invocations. Both parse, call the
//! core and shape the response; neither needs the Lambda runtime.

use aws_lambda_events::event::cloudwatch_events::CloudWatchEvent;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokenguard_core::cloudtrail::{ClusterResolver, IssuerLookup, eventbridge_detail};
use tokenguard_core::contain::Responder;
use tokenguard_core::correlate::CorrelationStore;
use tokenguard_core::ingest::{RecordCounts, RecordOutcome, process_record};
use tokenguard_core::{BaselineStore, Engine, EngineError, Notifier};
use tracing::{info, warn};

/// Runs each message of an SQS batch, each an EventBridge event, through the
/// engine. Messages that failed on a dependency are returned as batch item
/// failures, so SQS redelivers only those; a message that can never be
/// processed is logged, counted and dropped.
pub async fn handle_sqs<S, N, C, K, L>(
    engine: &Engine<S, N, C, K>,
    resolver: &ClusterResolver<L>,
    event: &SqsEvent,
    now: DateTime<Utc>,
) -> (SqsBatchResponse, RecordCounts)
where
    S: BaselineStore,
    N: Notifier,
    C: CorrelationStore,
    K: Responder,
    L: IssuerLookup,
{
    let mut counts = RecordCounts::default();
    let mut response = SqsBatchResponse::default();
    for message in &event.records {
        let message_id = message.message_id.as_deref().unwrap_or_default();
        let record = message
            .body
            .as_deref()
            .ok_or_else(|| "the message has no body".to_owned())
            .and_then(|body| {
                serde_json::from_str::<Value>(body)
                    .map_err(|error| format!("the body is not JSON ({error})"))
            })
            .and_then(|event| eventbridge_detail(&event, message_id).map_err(|error| error.reason));
        let record = match record {
            Ok(record) => record,
            Err(reason) => {
                warn!(message_id, reason, "invalid message dropped");
                counts.add(&RecordOutcome::Invalid {
                    event_id: None,
                    reason,
                });
                continue;
            }
        };
        match process_record(engine, resolver, &record, now).await {
            Ok(outcome) => counts.add(&outcome),
            Err(error) => {
                warn!(message_id, %error, "record failed; SQS will redeliver it");
                counts.failed += 1;
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = message_id.to_owned();
                response.batch_item_failures.push(failure);
            }
        }
    }
    summarize(&counts, event.records.len());
    (response, counts)
}

/// Runs one EventBridge event delivered straight to the function. An error
/// fails the invocation, so Lambda's asynchronous retries run it again.
pub async fn handle_eventbridge<S, N, C, K, L>(
    engine: &Engine<S, N, C, K>,
    resolver: &ClusterResolver<L>,
    event: &CloudWatchEvent<Value>,
    now: DateTime<Utc>,
) -> Result<RecordCounts, EngineError>
where
    S: BaselineStore,
    N: Notifier,
    C: CorrelationStore,
    K: Responder,
    L: IssuerLookup,
{
    let mut counts = RecordCounts::default();
    let id = event.id.as_deref().unwrap_or_default();
    let detail_type = event.detail_type.as_deref().unwrap_or_default();
    let detail = match (&event.detail, detail_type) {
        (Some(detail @ Value::Object(_)), tokenguard_core::cloudtrail::EVENTBRIDGE_DETAIL_TYPE) => {
            detail
        }
        _ => {
            let reason = format!(
                "detail-type {detail_type:?} without a CloudTrail record: route only \
                 \"AWS API Call via CloudTrail\" events here"
            );
            warn!(event = id, reason, "invalid event dropped");
            counts.add(&RecordOutcome::Invalid {
                event_id: None,
                reason,
            });
            summarize(&counts, 1);
            return Ok(counts);
        }
    };
    let result = process_record(engine, resolver, detail, now).await;
    match &result {
        Ok(outcome) => counts.add(outcome),
        Err(_) => counts.failed += 1,
    }
    summarize(&counts, 1);
    result.map(|_| counts)
}

fn summarize(counts: &RecordCounts, messages: usize) {
    info!(
        messages,
        exchanges = counts.exchanges,
        matched = counts.matched,
        escalated = counts.escalated,
        findings = counts.findings,
        folded = counts.folded,
        duplicates = counts.duplicates,
        ignored = counts.ignored,
        unknown_cluster = counts.unknown_cluster,
        invalid = counts.invalid,
        failed = counts.failed,
        "records processed"
    );
    crate::metrics::emit(counts);
}

#[cfg(test)]
mod tests;
