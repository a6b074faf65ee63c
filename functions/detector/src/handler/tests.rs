use std::sync::Mutex;

use aws_lambda_events::http::HeaderValue;
use tokenguard_core::contain::ApiError;
use tokenguard_core::{
    BaselineKey, FindingRecord, MemoryStore, Policy, ScopeRecord, StoreError, ValueRecord,
    ValueSighting,
};
use tokenguard_schema::{BatchResponse, MAX_BATCH_BYTES, MAX_BATCH_EVENTS, OutcomeStatus};

use super::*;

const FIXTURE: &str = include_str!("../../../schema/tests/fixtures/batch.json");

#[derive(Debug, Default)]
struct Recorder {
    sent: Mutex<Vec<String>>,
}

impl Notifier for Recorder {
    async fn notify(&self, alert: &tokenguard_core::Alert<'_>) -> Result<(), StoreError> {
        self.sent
            .lock()
            .unwrap()
            .push(alert.finding_id().to_owned());
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
    async fn replace_finding(&self, _: &FindingRecord) -> Result<bool, StoreError> {
        Err(outage())
    }
    async fn mark_notified(&self, _: &str, _: u64) -> Result<(), StoreError> {
        Err(outage())
    }
    async fn add_repeats(&self, _: &str, _: u32, _: DateTime<Utc>) -> Result<(), StoreError> {
        Err(outage())
    }
}

/// Returns a detector time a few minutes after the fixture's events.
fn now() -> DateTime<Utc> {
    "2026-12-04T09:20:00Z".parse().unwrap()
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
    let reply = handle_batch(&engine(), FIXTURE.as_bytes(), now()).await;
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
    let reply = handle_batch(&engine(), body.as_bytes(), now()).await;
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
    let reply = handle_batch(&engine(), b"{\"schema\": 1, \"node\":", now()).await;
    assert_eq!(reply.status, 400);
    assert!(
        error_message(&reply.body).starts_with("invalid batch:"),
        "{}",
        reply.body
    );

    let reply = handle_batch(
        &engine(),
        br#"{"schema": 9, "node": {"name": "n", "boot_id": "b"}, "events": []}"#,
        now(),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert!(error_message(&reply.body).starts_with("unsupported schema version 9"));
}

#[tokio::test]
async fn store_outage_503() {
    let policy = Policy::from_settings("0s", "28d").unwrap();
    let engine = Engine::new(DownStore, Recorder::default(), policy);
    let reply = handle_batch(&engine, FIXTURE.as_bytes(), now()).await;
    assert_eq!(reply.status, 503);
    let outcomes = outcomes(&reply.body);
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(|o| o.status == OutcomeStatus::Failed));
    assert!(outcomes[0].reason.as_deref().unwrap().contains("throttled"));
}

#[tokio::test]
async fn empty_batch_200() {
    let body = br#"{"schema": 1, "node": {"name": "n", "boot_id": "b"}, "events": []}"#;
    let reply = handle_batch(&engine(), body, now()).await;
    assert_eq!(reply.status, 200);
    assert!(outcomes(&reply.body).is_empty());
}

#[tokio::test]
async fn wrong_method_405() {
    let response = handle_request(&engine(), &request("GET", None), now()).await;
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
    let response = handle_request(&engine(), &request, now()).await;
    assert_eq!(response.status_code, 200);
    assert_eq!(
        response.headers.get(header::CONTENT_TYPE).unwrap(),
        "application/json"
    );
    assert_eq!(outcomes(response.body.as_deref().unwrap()).len(), 2);

    request.body = Some("not base64!".to_owned());
    let response = handle_request(&engine(), &request, now()).await;
    assert_eq!(response.status_code, 400);
    assert!(error_message(response.body.as_deref().unwrap()).starts_with("invalid base64"));
}

#[tokio::test]
async fn missing_body_400() {
    let response = handle_request(&engine(), &request("POST", None), now()).await;
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
    let response = handle_request(&engine(), &request, now()).await;
    assert_eq!(response.status_code, 415);

    request.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    let response = handle_request(&engine(), &request, now()).await;
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

    let first = handle_batch(&engine, body.as_bytes(), now()).await;
    let first = outcomes(&first.body);
    assert_eq!(first[0].status, OutcomeStatus::Accepted);
    assert_eq!(first[1].status, OutcomeStatus::Accepted);
    assert!(first[1].finding_id.is_some());

    let retry = handle_batch(&engine, body.as_bytes(), now()).await;
    let retry = outcomes(&retry.body);
    assert_eq!(retry[0].status, OutcomeStatus::Duplicate);
    assert_eq!(retry[1].status, OutcomeStatus::Duplicate);
    assert_eq!(engine.notifier().sent.lock().unwrap().len(), 1);
}

fn fixture_events() -> Vec<serde_json::Value> {
    let batch: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    batch["events"].as_array().unwrap().clone()
}

/// Builds a body with the fixture's node and `events`.
fn batch_body(events: Vec<serde_json::Value>) -> String {
    let mut batch: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    batch["events"] = events.into();
    batch.to_string()
}

/// Returns the fixture's first event as `exe` with a fresh id. With no
/// learning period, the first such event learns the workload and any other
/// exe raises a finding.
fn read_of(exe: &str, comm: &str, sequence: u32) -> serde_json::Value {
    let mut event = fixture_events()[0].clone();
    event["event_id"] = format!("5f1c6a7e-0b7e-4c41-9d0a-3f3e2a6b9c10:{sequence}").into();
    event["process"]["exe"] = exe.into();
    event["process"]["comm"] = comm.into();
    event
}

async fn post(engine: &Engine<MemoryStore, Recorder>, body: &str) -> LambdaFunctionUrlResponse {
    handle_request(engine, &request("POST", Some(body)), now()).await
}

#[tokio::test]
async fn malformed_bodies_400() {
    let node = r#""node": {"name": "n", "boot_id": "b"}"#;
    let cases = [
        (
            "   ".to_owned(),
            "invalid batch: expected a JSON object, found \"\"",
        ),
        (
            "hello".to_owned(),
            "invalid batch: expected a JSON object, found \"hello\"",
        ),
        (
            "[]".to_owned(),
            "invalid batch: expected a JSON object, found \"[]\"",
        ),
        (
            "{\"schema\": 1, \"node\":".to_owned(),
            "invalid batch: node: EOF while parsing a value at line 1 column 21",
        ),
        (
            format!(r#"{{"schema": 1, {node}, "events": []}} x"#),
            "invalid batch: trailing characters at line 1 column 68",
        ),
        (
            format!(r#"{{{node}, "events": []}}"#),
            "invalid batch: missing field `schema`",
        ),
        (
            format!(r#"{{"schema": "1", {node}, "events": []}}"#),
            "invalid batch: schema: invalid type: string \"1\", expected u32",
        ),
        (
            format!(r#"{{"schema": -1, {node}, "events": []}}"#),
            "invalid batch: schema: invalid value: integer `-1`, expected u32",
        ),
        (
            format!(r#"{{"schema": 1, {node}}}"#),
            "invalid batch: missing field `events`",
        ),
        (
            format!(r#"{{"schema": 1, {node}, "events": "[]"}}"#),
            "invalid batch: events: invalid type: string \"[]\", expected a sequence",
        ),
        (
            r#"{"schema": 1, "node": {"name": "n"}, "events": []}"#.to_owned(),
            "invalid batch: node: missing field `boot_id`",
        ),
    ];
    for (body, expected) in cases {
        let response = post(&engine(), &body).await;
        let message = error_message(response.body.as_deref().unwrap());
        assert_eq!(response.status_code, 400, "{body}: {message}");
        assert!(message.starts_with(expected), "{body}: {message}");
        assert!(
            message
                .ends_with(r#"send a JSON object {"schema": 1, "node": {...}, "events": [...]}"#),
            "{message}"
        );
    }
}

#[tokio::test]
async fn newer_schema_400() {
    let response = post(&engine(), r#"{"schema": 2, "batches": []}"#).await;
    assert_eq!(response.status_code, 400);
    assert_eq!(
        error_message(response.body.as_deref().unwrap()),
        "unsupported schema version 2: this detector accepts schema 1"
    );
}

#[tokio::test]
async fn too_many_events_400() {
    let events = vec![serde_json::json!({}); 10_000];
    let response = post(&engine(), &batch_body(events)).await;
    assert_eq!(response.status_code, 400);
    assert_eq!(
        error_message(response.body.as_deref().unwrap()),
        "batch has 10000 events: split it into batches of at most 500"
    );
}

#[tokio::test]
async fn max_events_accepted() {
    let events = (0..MAX_BATCH_EVENTS as u32)
        .map(|sequence| read_of("/usr/local/bin/python3.12", "python3", sequence))
        .collect();
    let response = post(&engine(), &batch_body(events)).await;
    assert_eq!(response.status_code, 200);
    let outcomes = outcomes(response.body.as_deref().unwrap());
    assert_eq!(outcomes.len(), MAX_BATCH_EVENTS);
    assert!(outcomes.iter().all(|o| o.status == OutcomeStatus::Accepted));
}

#[tokio::test]
async fn oversized_body_413() {
    let mut event = fixture_events()[0].clone();
    event["padding"] = "x".repeat(MAX_BATCH_BYTES).into();
    let body = batch_body(vec![event]);
    let response = post(&engine(), &body).await;
    assert_eq!(response.status_code, 413);
    assert_eq!(
        error_message(response.body.as_deref().unwrap()),
        format!(
            "request body of {} bytes exceeds the limit of 4194304 bytes: split the batch",
            body.len()
        )
    );
}

#[tokio::test]
async fn base64_errors_400() {
    let mut request = request("POST", Some("eyJzY2hlbWEiOiAx"));
    request.is_base64_encoded = true;
    let response = handle_request(&engine(), &request, now()).await;
    assert_eq!(response.status_code, 400);
    let message = error_message(response.body.as_deref().unwrap());
    assert!(
        message.starts_with("invalid batch: EOF while parsing an object"),
        "{message}"
    );

    request.body = Some("e30=\n".to_owned());
    let response = handle_request(&engine(), &request, now()).await;
    assert_eq!(response.status_code, 400);
    let message = error_message(response.body.as_deref().unwrap());
    assert!(
        message.starts_with("invalid base64 request body ("),
        "{message}"
    );
    assert!(
        message.ends_with("send standard base64 or set isBase64Encoded to false"),
        "{message}"
    );
}

#[tokio::test]
async fn missing_method_405() {
    let mut request = request("POST", Some(FIXTURE));
    request.request_context.http.method = None;
    let response = handle_request(&engine(), &request, now()).await;
    assert_eq!(response.status_code, 405);
    assert_eq!(
        error_message(response.body.as_deref().unwrap()),
        "method \"\" not allowed: POST a JSON batch"
    );
}

#[tokio::test]
async fn content_type_shown_when_not_utf8() {
    let mut request = request("POST", Some(FIXTURE));
    request.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_bytes(b"text/\xe9").unwrap(),
    );
    let response = handle_request(&engine(), &request, now()).await;
    assert_eq!(response.status_code, 415);
    assert_eq!(
        error_message(response.body.as_deref().unwrap()),
        "unsupported content type \"text/\u{fffd}\": send application/json"
    );
}

#[tokio::test]
async fn missing_content_type_accepted() {
    let mut request = request("POST", Some(FIXTURE));
    request.headers.clear();
    let response = handle_request(&engine(), &request, now()).await;
    assert_eq!(response.status_code, 200);
}

#[tokio::test]
async fn bad_events_keep_finding() {
    let engine = engine();
    let mut missing_id = read_of("/bin/ls", "ls", 3);
    missing_id.as_object_mut().unwrap().remove("event_id");
    let mut bad_time = read_of("/bin/ls", "ls", 4);
    bad_time["observed_at"] = "2026-12-04".into();
    let mut negative_pid = read_of("/bin/ls", "ls", 5);
    negative_pid["process"]["pid"] = (-1).into();
    let events = vec![
        read_of("/usr/local/bin/python3.12", "python3", 1),
        serde_json::json!("not an event"),
        missing_id,
        bad_time,
        negative_pid,
        read_of("/usr/bin/curl", "curl", 6),
    ];
    let response = post(&engine, &batch_body(events)).await;
    assert_eq!(response.status_code, 200);
    let outcomes = outcomes(response.body.as_deref().unwrap());
    assert_eq!(outcomes.len(), 6);

    assert_eq!(outcomes[0].status, OutcomeStatus::Accepted);
    assert_eq!(outcomes[0].finding_id, None);

    assert_eq!(outcomes[1].event_id, "events[1]");
    assert_eq!(outcomes[1].status, OutcomeStatus::Invalid);
    assert_eq!(
        outcomes[1].reason.as_deref(),
        Some("invalid event: expected a JSON object, found \"\\\"not an event\\\"\"")
    );

    assert_eq!(outcomes[2].event_id, "events[2]");
    assert_eq!(
        outcomes[2].reason.as_deref(),
        Some("invalid event: missing field `event_id`")
    );

    assert_eq!(
        outcomes[3].event_id,
        "5f1c6a7e-0b7e-4c41-9d0a-3f3e2a6b9c10:4"
    );
    let reason = outcomes[3].reason.as_deref().unwrap();
    assert!(
        reason.starts_with("invalid event: observed_at: invalid time \"2026-12-04\""),
        "{reason}"
    );

    assert_eq!(
        outcomes[4].event_id,
        "5f1c6a7e-0b7e-4c41-9d0a-3f3e2a6b9c10:5"
    );
    assert_eq!(
        outcomes[4].reason.as_deref(),
        Some("invalid event: process.pid: invalid value: integer `-1`, expected u32")
    );

    assert_eq!(outcomes[5].status, OutcomeStatus::Accepted);
    let finding_id = outcomes[5].finding_id.clone().unwrap();
    assert_eq!(*engine.notifier().sent.lock().unwrap(), vec![finding_id]);
}

#[tokio::test]
async fn duplicate_id_processed_once() {
    let engine = engine();
    let mut twin = read_of("/usr/bin/wget", "wget", 2);
    twin["event_id"] = read_of("/usr/bin/curl", "curl", 2)["event_id"].clone();
    let events = vec![
        read_of("/usr/local/bin/python3.12", "python3", 1),
        read_of("/usr/bin/curl", "curl", 2),
        twin,
    ];
    let response = post(&engine, &batch_body(events)).await;
    let outcomes = outcomes(response.body.as_deref().unwrap());
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes[1].finding_id.is_some());
    assert_eq!(outcomes[2].status, OutcomeStatus::Duplicate);
    assert_eq!(outcomes[2].finding_id, None);
    assert_eq!(
        outcomes[2].reason.as_deref(),
        Some(
            "event_id \"5f1c6a7e-0b7e-4c41-9d0a-3f3e2a6b9c10:2\" repeats an earlier event \
             of this batch: only the first was processed"
        )
    );
    assert_eq!(engine.notifier().sent.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn future_event_not_learned() {
    let engine = engine();
    let mut future = read_of("/usr/local/bin/python3.12", "python3", 1);
    future["observed_at"] = "2036-12-04T09:15:02Z".into();
    let response = post(&engine, &batch_body(vec![future])).await;
    let rejected = outcomes(response.body.as_deref().unwrap());
    assert_eq!(rejected[0].status, OutcomeStatus::Invalid);
    let reason = rejected[0].reason.as_deref().unwrap();
    assert!(
        reason.starts_with("invalid observed_at \"2036-12-04T09:15:02Z\""),
        "{reason}"
    );

    // Had the future time been stored, the scope would learn until 2036.
    let events = vec![
        read_of("/usr/local/bin/python3.12", "python3", 2),
        read_of("/usr/bin/curl", "curl", 3),
    ];
    let response = post(&engine, &batch_body(events)).await;
    let later = outcomes(response.body.as_deref().unwrap());
    assert!(later[1].finding_id.is_some(), "{later:?}");
}

#[tokio::test]
async fn control_characters_raise_finding() {
    let engine = engine();
    let events = vec![
        read_of("/usr/local/bin/python3.12", "python3", 1),
        read_of("/tmp/x\nSeverity: low", "\u{1b}[2Jcurl", 2),
    ];
    let response = post(&engine, &batch_body(events)).await;
    let outcomes = outcomes(response.body.as_deref().unwrap());
    assert_eq!(outcomes[1].status, OutcomeStatus::Accepted);
    assert!(outcomes[1].finding_id.is_some());
}

#[tokio::test]
async fn oversized_values_not_echoed() {
    let mut long_id = read_of("/bin/ls", "ls", 1);
    long_id["event_id"] = "b:".repeat(100_000).into();
    let mut long_pid = read_of("/bin/ls", "ls", 2);
    long_pid["process"]["pid"] = "9".repeat(1_000_000).into();
    let response = post(&engine(), &batch_body(vec![long_id, long_pid])).await;
    let body = response.body.unwrap();
    assert!(body.len() < 1000, "{} bytes", body.len());
    let outcomes = outcomes(&body);
    assert_eq!(outcomes[0].event_id, "events[0]");
    assert_eq!(outcomes[1].status, OutcomeStatus::Invalid);
}

#[tokio::test]
async fn deep_nesting_handled() {
    let depth = 100_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let mut batch = batch_body(vec![read_of("/bin/ls", "ls", 1)]);
    batch.insert_str(1, &format!(r#""extension": {nested}, "#));
    let response = post(&engine(), &batch).await;
    assert_eq!(response.status_code, 200);
    let ignored = outcomes(response.body.as_deref().unwrap());
    assert_eq!(ignored[0].status, OutcomeStatus::Accepted);

    let body = batch_body(vec![]).replace("[]", &format!("[{nested}]"));
    let response = post(&engine(), &body).await;
    let as_event = outcomes(response.body.as_deref().unwrap());
    assert_eq!(as_event[0].status, OutcomeStatus::Invalid);
}

#[tokio::test]
async fn unknown_fields_accepted() {
    let mut events = fixture_events();
    events[0]["pid_namespace"] = 4026531836u64.into();
    events[1]["process"]["capabilities"] = serde_json::json!(["CAP_NET_RAW"]);
    let mut batch: serde_json::Value = serde_json::from_str(&batch_body(events)).unwrap();
    batch["sent_at"] = "2026-12-04T09:15:04Z".into();
    batch["node"]["kernel"] = "6.1.0-28-cloud-amd64".into();
    let response = post(&engine(), &batch.to_string()).await;
    assert_eq!(response.status_code, 200);
    let outcomes = outcomes(response.body.as_deref().unwrap());
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(|o| o.status == OutcomeStatus::Accepted));
}

/// A cluster API that every call fails on: kill orders need none.
#[derive(Debug)]
struct NoCluster;

impl tokenguard_core::contain::ClusterApi for NoCluster {
    async fn pod(
        &self,
        _cluster: &str,
        _namespace: &str,
        _name: &str,
    ) -> Result<Option<tokenguard_core::contain::PodState>, ApiError> {
        Err(no_cluster())
    }

    async fn controller(
        &self,
        _cluster: &str,
        _namespace: &str,
        _kind: &str,
        _name: &str,
    ) -> Result<Option<tokenguard_core::contain::ControllerState>, ApiError> {
        Err(no_cluster())
    }

    async fn delete_pod(
        &self,
        _cluster: &str,
        _namespace: &str,
        _name: &str,
        _uid: &str,
        _grace_period_seconds: u32,
    ) -> Result<(), ApiError> {
        Err(no_cluster())
    }

    async fn quarantine_pod(
        &self,
        _cluster: &str,
        _namespace: &str,
        _name: &str,
        _uid: &str,
    ) -> Result<(), ApiError> {
        Err(no_cluster())
    }
}

fn no_cluster() -> ApiError {
    ApiError::transport("this test has no Kubernetes API")
}

#[tokio::test]
async fn report_rides_with_new_read() {
    use tokenguard_core::contain::{
        Action, Containment, ContainmentOutcome, ContainmentPolicy, MemoryRateLimiter,
        latest_decision,
    };
    use tokenguard_schema::{ActionReport, ActionResult, AgentOrder};

    let policy = ContainmentPolicy {
        modes: ContainmentPolicy::parse_modes("modes", "payments=enforce").unwrap(),
        ..ContainmentPolicy::default()
    };
    let engine = engine().with_containment(Containment::new(
        policy,
        NoCluster,
        MemoryRateLimiter::default(),
    ));
    let post = |body: String| {
        let engine = &engine;
        async move { handle_request(engine, &request("POST", Some(&body)), now()).await }
    };
    post(batch_body(vec![read_of(
        "/app/payments-api",
        "payments-api",
        1,
    )]))
    .await;
    let first = post(batch_body(vec![read_of("/usr/bin/curl", "curl", 2)])).await;
    let first = outcomes(first.body.as_deref().unwrap()).remove(0);
    let order = first
        .order
        .clone()
        .expect("the first unfamiliar read is ordered killed");

    let mut body: serde_json::Value =
        serde_json::from_str(&batch_body(vec![read_of("/usr/bin/wget", "wget", 3)])).unwrap();
    let report = ActionReport {
        finding_id: first.finding_id.clone().unwrap(),
        order: order.clone(),
        result: ActionResult::Killed,
        detail: None,
        at: now(),
    };
    body["reports"] = serde_json::json!([report]);
    let second = post(body.to_string()).await;

    let second = outcomes(second.body.as_deref().unwrap()).remove(0);
    assert!(
        matches!(second.order, Some(AgentOrder::Kill { .. })),
        "{second:?}"
    );
    assert_ne!(second.finding_id, first.finding_id);
    let stored = engine
        .store()
        .get_finding(first.finding_id.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    let kill = latest_decision(&stored.finding, Action::KillProcess).unwrap();
    assert!(
        matches!(kill.outcome, ContainmentOutcome::Acted { .. }),
        "{kill:?}"
    );
}
