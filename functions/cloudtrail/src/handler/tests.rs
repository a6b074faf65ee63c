use std::sync::atomic::{AtomicBool, Ordering};

use aws_lambda_events::event::sqs::SqsMessage;
use serde_json::json;
use tokenguard_core::cloudtrail::StaticIssuers;
use tokenguard_core::correlate::{CorrelationPolicy, EgressCidrs};
use tokenguard_core::{Alert, MemoryStore, Policy, StoreError};
use tokenguard_e2e::fixtures::{cloudtrail_record, eventbridge_event, irsa_exchange};

use super::*;

const ISSUER: &str = "https://oidc.eks.eu-west-1.amazonaws.com/id/0A1B2C3D4E5F60718293A4B5C6D7E8F9";

/// Fails every alert while `down` is set, as SNS does in an outage.
#[derive(Debug, Default)]
struct Topic {
    down: AtomicBool,
}

impl Notifier for Topic {
    async fn notify(&self, _alert: &Alert<'_>) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Transient {
                operation: "SNS Publish",
                message: "throttled".to_owned(),
            });
        }
        Ok(())
    }
}

type TestEngine = Engine<MemoryStore, Topic, MemoryStore>;

fn engine() -> TestEngine {
    let correlation = CorrelationPolicy {
        egress: EgressCidrs::parse("198.51.100.0/24").unwrap(),
        ..CorrelationPolicy::default()
    };
    Engine::with_correlation(
        MemoryStore::new(),
        Topic::default(),
        Policy::from_settings("0s", "28d").unwrap(),
        MemoryStore::new(),
        correlation,
    )
}

fn resolver() -> ClusterResolver<StaticIssuers> {
    let issuers = StaticIssuers([("prod".to_owned(), ISSUER.to_owned())].into());
    ClusterResolver::new(vec!["prod".to_owned()], issuers)
}

fn message(id: &str, body: String) -> SqsMessage {
    let mut message = SqsMessage::default();
    message.message_id = Some(id.to_owned());
    message.body = Some(body);
    message
}

fn outside(id: &str, time: &str) -> String {
    let record = irsa_exchange(
        ISSUER,
        "payments",
        "api",
        id,
        time,
        "203.0.113.9",
        "curl/8.5.0",
    );
    eventbridge_event(&record).to_string()
}

fn batch(messages: Vec<SqsMessage>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = messages;
    event
}

#[tokio::test]
async fn failed_records_reported_alone() {
    let engine = engine();
    let resolver = resolver();
    let now = Utc::now();
    // Teach the egress check that the cluster has egress, then take SNS down.
    let first = batch(vec![message("m-0", outside("x-0", "2026-12-01T10:00:00Z"))]);
    handle_sqs(&engine, &resolver, &first, now).await;
    engine.notifier().down.store(true, Ordering::SeqCst);

    let event = batch(vec![
        message("m-1", outside("x-1", "2026-12-02T10:00:00Z")),
        message("m-2", "not json".to_owned()),
        message(
            "m-3",
            eventbridge_event(&cloudtrail_record("unrelated-getcalleridentity")).to_string(),
        ),
    ]);
    let (response, counts) = handle_sqs(&engine, &resolver, &event, now).await;
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|failure| failure.item_identifier.as_str())
        .collect();
    assert_eq!(
        failed,
        vec!["m-1"],
        "only the record whose alert failed is retried"
    );
    assert_eq!(counts.failed, 1);
    assert_eq!(counts.invalid, 1);
    assert_eq!(counts.ignored, 1);

    // SQS redelivers m-1 once SNS is back; it alerts then.
    engine.notifier().down.store(false, Ordering::SeqCst);
    let retry = batch(vec![message("m-1", outside("x-1", "2026-12-02T10:00:00Z"))]);
    let (response, counts) = handle_sqs(&engine, &resolver, &retry, now).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(counts.findings, 1, "{counts:?}");
}

#[tokio::test]
async fn unknown_cluster_counted() {
    let engine = engine();
    let other = irsa_exchange(
        "https://oidc.eks.eu-west-1.amazonaws.com/id/FFFF0000",
        "payments",
        "api",
        "x-1",
        "2026-12-01T10:00:00Z",
        "203.0.113.9",
        "curl/8.5.0",
    );
    let event = batch(vec![message("m-1", eventbridge_event(&other).to_string())]);
    let (response, counts) = handle_sqs(&engine, &resolver(), &event, Utc::now()).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(counts.unknown_cluster, 1);
}

#[tokio::test]
async fn direct_event_handled() {
    let engine = engine();
    let resolver = resolver();
    let record = irsa_exchange(
        ISSUER,
        "payments",
        "api",
        "x-1",
        "2026-12-01T10:00:00Z",
        "198.51.100.20",
        "Boto3/1.35.10",
    );
    let event: CloudWatchEvent<Value> = serde_json::from_value(eventbridge_event(&record)).unwrap();
    let counts = handle_eventbridge(&engine, &resolver, &event, Utc::now())
        .await
        .unwrap();
    assert_eq!(counts.exchanges, 1);

    let mut wrong = event.clone();
    wrong.detail_type = Some("EC2 Instance State-change Notification".to_owned());
    wrong.detail = Some(json!({"state": "running"}));
    let counts = handle_eventbridge(&engine, &resolver, &wrong, Utc::now())
        .await
        .unwrap();
    assert_eq!(counts.invalid, 1);
}

#[tokio::test]
async fn direct_event_failure_fails_invocation() {
    let engine = engine();
    let resolver = resolver();
    let first: CloudWatchEvent<Value> =
        serde_json::from_str(&outside("x-0", "2026-12-01T10:00:00Z")).unwrap();
    handle_eventbridge(&engine, &resolver, &first, Utc::now())
        .await
        .unwrap();
    engine.notifier().down.store(true, Ordering::SeqCst);
    let event: CloudWatchEvent<Value> =
        serde_json::from_str(&outside("x-1", "2026-12-02T10:00:00Z")).unwrap();
    let error = handle_eventbridge(&engine, &resolver, &event, Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(error, EngineError::Notify { .. }), "{error}");
}
