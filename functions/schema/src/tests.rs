use super::*;

const BATCH: &str = include_str!("../tests/fixtures/batch.json");

fn envelope() -> BatchEnvelope {
    BatchEnvelope::parse(BATCH.as_bytes()).expect("fixture batch parses")
}

#[test]
fn batch_fixture_round_trips() {
    let batch: Batch = serde_json::from_str(BATCH).unwrap();
    let again: Batch = serde_json::from_str(&serde_json::to_string(&batch).unwrap()).unwrap();
    assert_eq!(batch, again);
    assert_eq!(batch.events.len(), 2);
    assert_eq!(batch.events[0].token.kind, TokenKind::Irsa);
    assert_eq!(batch.events[1].token.kind, TokenKind::PodIdentity);
}

#[test]
fn event_fields_decode() {
    let event = TokenRead::parse(&envelope().events[0]).unwrap();
    assert_eq!(event.event_id, "5f1c6a7e-0b7e-4c41-9d0a-3f3e2a6b9c10:41");
    assert_eq!(event.process.exe, "/usr/local/bin/python3.12");
    assert_eq!(event.process.parent.as_ref().unwrap().comm, "sh");
    let pod = event.pod.unwrap();
    assert_eq!(pod.namespace.as_deref(), Some("payments"));
    assert_eq!(pod.owner.unwrap().kind, "Deployment");
    assert_eq!(event.count, 1);
}

#[test]
fn count_defaults_to_one() {
    let mut value: serde_json::Value = serde_json::from_str(BATCH).unwrap();
    value["events"][0].as_object_mut().unwrap().remove("count");
    let batch: Batch = serde_json::from_value(value).unwrap();
    assert_eq!(batch.events[0].count, 1);
}

#[test]
fn wrong_schema_rejected() {
    let body = BATCH.replacen("\"schema\": 1", "\"schema\": 2", 1);
    let error = BatchEnvelope::parse(body.as_bytes()).unwrap_err();
    assert_eq!(error, ValidationError::UnsupportedSchema(2));
    assert!(error.to_string().contains("accepts schema 1"));
}

#[test]
fn non_json_body_rejected() {
    let error = BatchEnvelope::parse(b"{\"schema\": 1,").unwrap_err();
    assert!(matches!(error, ValidationError::Malformed(_)));
    assert!(error.to_string().starts_with("invalid batch: "));
}

#[test]
fn too_many_events_rejected() {
    let events = vec!["{}"; MAX_BATCH_EVENTS + 1].join(",");
    let body = format!(r#"{{"schema":1,"node":{{"name":"n","boot_id":"b"}},"events":[{events}]}}"#);
    let error = BatchEnvelope::parse(body.as_bytes()).unwrap_err();
    assert_eq!(error, ValidationError::TooManyEvents(501));
}

#[test]
fn malformed_event_keeps_its_id() {
    let raw = RawValue::from_string(r#"{"event_id":"b:7","cluster":5}"#.to_owned()).unwrap();
    let (event_id, error) = TokenRead::parse(&raw).unwrap_err();
    assert_eq!(event_id.as_deref(), Some("b:7"));
    assert!(matches!(error, ValidationError::MalformedEvent(_)));
}

#[test]
fn relative_token_path_rejected() {
    let mut event = TokenRead::parse(&envelope().events[0]).unwrap();
    event.token.path = "token".to_owned();
    let error = event.validate().unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid token.path \"token\": expected an absolute path"
    );
}

#[test]
fn zero_count_rejected() {
    let mut event = TokenRead::parse(&envelope().events[0]).unwrap();
    event.count = 0;
    let error = event.validate().unwrap_err();
    assert!(error.to_string().starts_with("invalid count \"0\""));
}

#[test]
fn long_comm_rejected() {
    let mut event = TokenRead::parse(&envelope().events[0]).unwrap();
    event.process.comm = "a-very-long-command-name".to_owned();
    let error = event.validate().unwrap_err();
    assert!(error.to_string().starts_with("invalid process.comm"));
}

#[test]
fn parent_exe_checked() {
    let mut event = TokenRead::parse(&envelope().events[0]).unwrap();
    event.process.parent.as_mut().unwrap().exe = "sh".to_owned();
    let error = event.validate().unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("invalid process.parent.exe \"sh\"")
    );
}

#[test]
fn empty_event_id_rejected() {
    let mut event = TokenRead::parse(&envelope().events[0]).unwrap();
    event.event_id.clear();
    let error = event.validate().unwrap_err();
    assert!(error.to_string().starts_with("invalid event_id \"\""));
}

#[test]
fn long_values_truncated_in_errors() {
    let mut event = TokenRead::parse(&envelope().events[0]).unwrap();
    event.token.path = "x".repeat(500);
    let message = event.validate().unwrap_err().to_string();
    assert!(message.len() < 200, "message too long: {message}");
    assert!(message.contains('…'));
}

#[test]
fn outcome_serializes_snake_case() {
    let outcome = Outcome::with_status("b:1", OutcomeStatus::Invalid, Some("bad".to_owned()));
    let json = serde_json::to_value(&outcome).unwrap();
    assert_eq!(json["status"], "invalid");
    assert_eq!(json["reason"], "bad");
    assert!(json.get("finding_id").is_none());
}
