use std::sync::Mutex;

use aws_lambda_events::http::HeaderValue;
use tokenguard_core::{
    BaselineKey, FindingRecord, MemoryStore, Policy, ScopeRecord, StoreError, ValueRecord,
    ValueSighting,
};
use tokenguard_schema::{BatchResponse, OutcomeStatus};

use super::*;

const FIXTURE: &str = include_str!("../../../schema/tests/fixtures/batch.json");

#[derive(Debug, Default)]
struct Recorder {
    sent: Mutex<Vec<String>>,
}

impl Notifier for Recorder {
    async fn notify(&self, finding: &tokenguard_core::Finding) -> Result<(), StoreError> {
        self.sent.lock().unwrap().push(finding.finding_id.clone());
        Ok(())
    }
}

/// A store whose every call fails as a throttled DynamoDB would.
#[derive(Debug)]
struct DownStore;

fn outage() -> StoreError {
    StoreError::Transient {
        operation: "DynamoDB UpdateItem",
        message: "throttled".to_owned(),
    }
}

impl BaselineStore for DownStore {
    async fn record_value(
        &self,
        _: &BaselineKey,
        _: &str,
        _: u32,
        _: DateTime<Utc>,
        _: std::time::Duration,
        _: std::time::Duration,
    ) -> Result<ValueSighting, StoreError> {
        Err(outage())
    }
    async fn record_scope(
        &self,
        _: &str,
        _: &str,
        _: DateTime<Utc>,
        _: std::time::Duration,
    ) -> Result<ScopeRecord, StoreError> {
        Err(outage())
    }
    async fn known_values(
        &self,
        _: &str,
        _: &str,
        _: DateTime<Utc>,
        _: std::time::Duration,
    ) -> Result<Vec<(String, ValueRecord)>, StoreError> {
        Err(outage())
    }
    async fn put_finding(&self, _: &BaselineKey, _: &FindingRecord) -> Result<(), StoreError> {
        Err(outage())
    }
    async fn get_finding(&self, _: &str) -> Result<Option<FindingRecord>, StoreError> {
        Err(outage())
    }
    async fn mark_notified(&self, _: &str) -> Result<(), StoreError> {
        Err(outage())
    }
    async fn add_repeats(&self, _: &str, _: u32, _: DateTime<Utc>) -> Result<(), StoreError> {
        Err(outage())
    }
}

fn engine() -> Engine<MemoryStore, Recorder> {
    let policy = Policy::from_settings("0s", "28d").unwrap();
    Engine::new(MemoryStore::new(), Recorder::default(), policy)
}

fn request(method: &str, body: Option<&str>) -> LambdaFunctionUrlRequest {
    let mut request = LambdaFunctionUrlRequest::default();
    request.request_context.http.method = Some(method.to_owned());
    request.body = body.map(str::to_owned);
    request.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    request
}

fn error_message(body: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(body).unwrap();
    value["error"].as_str().unwrap().to_owned()
}

fn outcomes(body: &str) -> Vec<tokenguard_schema::Outcome> {
    serde_json::from_str::<BatchResponse>(body)
        .unwrap()
        .outcomes
}

#[tokio::test]
async fn fixture_batch_accepted() {
    let reply = handle_batch(&engine(), FIXTURE.as_bytes(), Utc::now()).await;
    assert_eq!(reply.status, 200);
    let outcomes = outcomes(&reply.body);
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(|o| o.status == OutcomeStatus::Accepted));
    assert_eq!(
        outcomes[0].event_id,
        "5f1c6a7e-0b7e-4c41-9d0a-3f3e2a6b9c10:41"
    );
}

#[tokio::test]
async fn bad_event_isolated() {
    let mut batch: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    batch["events"][1]["process"]["exe"] = "relative/path".into();
    batch["events"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"observed_at": "yesterday"}));
    let body = batch.to_string();
    let reply = handle_batch(&engine(), body.as_bytes(), Utc::now()).await;
    assert_eq!(reply.status, 200);
    let outcomes = outcomes(&reply.body);
    assert_eq!(outcomes.len(), 3);
    assert_eq!(outcomes[0].status, OutcomeStatus::Accepted);
    assert_eq!(outcomes[1].status, OutcomeStatus::Invalid);
    let reason = outcomes[1].reason.as_deref().unwrap();
    assert!(
        reason.starts_with("invalid process.exe \"relative/path\""),
        "{reason}"
    );
    assert_eq!(outcomes[2].event_id, "events[2]");
    assert_eq!(outcomes[2].status, OutcomeStatus::Invalid);
    assert!(
        outcomes[2]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("invalid event:"),
        "{:?}",
        outcomes[2].reason
    );
}

#[tokio::test]
async fn malformed_body_400() {
    let reply = handle_batch(&engine(), b"{\"schema\": 1, \"node\":", Utc::now()).await;
    assert_eq!(reply.status, 400);
    assert!(
        error_message(&reply.body).starts_with("invalid batch:"),
        "{}",
        reply.body
    );

    let reply = handle_batch(
        &engine(),
        br#"{"schema": 9, "node": {"name": "n", "boot_id": "b"}, "events": []}"#,
        Utc::now(),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert!(error_message(&reply.body).starts_with("unsupported schema version 9"));
}

#[tokio::test]
async fn store_outage_503() {
    let policy = Policy::from_settings("0s", "28d").unwrap();
    let engine = Engine::new(DownStore, Recorder::default(), policy);
    let reply = handle_batch(&engine, FIXTURE.as_bytes(), Utc::now()).await;
    assert_eq!(reply.status, 503);
    let outcomes = outcomes(&reply.body);
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(|o| o.status == OutcomeStatus::Failed));
    assert!(outcomes[0].reason.as_deref().unwrap().contains("throttled"));
}

#[tokio::test]
async fn empty_batch_200() {
    let body = br#"{"schema": 1, "node": {"name": "n", "boot_id": "b"}, "events": []}"#;
    let reply = handle_batch(&engine(), body, Utc::now()).await;
    assert_eq!(reply.status, 200);
    assert!(outcomes(&reply.body).is_empty());
}

#[tokio::test]
async fn wrong_method_405() {
    let response = handle_request(&engine(), &request("GET", None), Utc::now()).await;
    assert_eq!(response.status_code, 405);
    assert_eq!(response.headers.get(header::ALLOW).unwrap(), "POST");
    assert_eq!(
        error_message(response.body.as_deref().unwrap()),
        "method \"GET\" not allowed: POST a JSON batch"
    );
}

#[tokio::test]
async fn base64_body_decoded() {
    let mut request = request("POST", Some(&BASE64.encode(FIXTURE)));
    request.is_base64_encoded = true;
    let response = handle_request(&engine(), &request, Utc::now()).await;
    assert_eq!(response.status_code, 200);
    assert_eq!(
        response.headers.get(header::CONTENT_TYPE).unwrap(),
        "application/json"
    );
    assert_eq!(outcomes(response.body.as_deref().unwrap()).len(), 2);

    request.body = Some("not base64!".to_owned());
    let response = handle_request(&engine(), &request, Utc::now()).await;
    assert_eq!(response.status_code, 400);
    assert!(error_message(response.body.as_deref().unwrap()).starts_with("invalid base64"));
}

#[tokio::test]
async fn missing_body_400() {
    let response = handle_request(&engine(), &request("POST", None), Utc::now()).await;
    assert_eq!(response.status_code, 400);
    assert_eq!(
        error_message(response.body.as_deref().unwrap()),
        "missing request body: POST a JSON batch"
    );
}

#[tokio::test]
async fn non_json_content_type_415() {
    let mut request = request("POST", Some(FIXTURE));
    request
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    let response = handle_request(&engine(), &request, Utc::now()).await;
    assert_eq!(response.status_code, 415);

    request.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    let response = handle_request(&engine(), &request, Utc::now()).await;
    assert_eq!(response.status_code, 200);
}

#[tokio::test]
async fn retried_batch_duplicate() {
    let engine = engine();
    let mut batch: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    // Same workload and container for both events, so the second is unfamiliar.
    batch["events"][1] = batch["events"][0].clone();
    batch["events"][1]["event_id"] = "5f1c6a7e-0b7e-4c41-9d0a-3f3e2a6b9c10:42".into();
    batch["events"][1]["process"]["exe"] = "/usr/bin/curl".into();
    batch["events"][1]["process"]["comm"] = "curl".into();
    let body = batch.to_string();

    let first = handle_batch(&engine, body.as_bytes(), Utc::now()).await;
    let first = outcomes(&first.body);
    assert_eq!(first[0].status, OutcomeStatus::Accepted);
    assert_eq!(first[1].status, OutcomeStatus::Accepted);
    assert!(first[1].finding_id.is_some());

    let retry = handle_batch(&engine, body.as_bytes(), Utc::now()).await;
    let retry = outcomes(&retry.body);
    assert_eq!(retry[0].status, OutcomeStatus::Duplicate);
    assert_eq!(retry[1].status, OutcomeStatus::Duplicate);
    assert_eq!(engine.notifier().sent.lock().unwrap().len(), 1);
}
