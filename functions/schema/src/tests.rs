use chrono::TimeDelta;

use super::*;

const BATCH: &str = include_str!("../tests/fixtures/batch.json");

fn envelope() -> BatchEnvelope {
    BatchEnvelope::parse(BATCH.as_bytes()).expect("fixture batch parses")
}

/// Returns a detector time a few minutes after the fixture's events.
fn now() -> DateTime<Utc> {
    "2026-12-04T09:20:00Z".parse().unwrap()
}

/// Returns the first event of the fixture, decoded.
fn event() -> TokenRead {
    TokenRead::parse(&envelope().events[0], now()).unwrap()
}

/// Decodes `event` as JSON and checks it, returning the error message.
fn event_error(event: &serde_json::Value) -> String {
    let raw = RawValue::from_string(event.to_string()).unwrap();
    let (_, error) = TokenRead::parse(&raw, now()).unwrap_err();
    error.to_string()
}

fn event_json() -> serde_json::Value {
    let batch: serde_json::Value = serde_json::from_str(BATCH).unwrap();
    batch["events"][0].clone()
}

fn batch_error(body: &str) -> ValidationError {
    BatchEnvelope::parse(body.as_bytes()).unwrap_err()
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
    let event = event();
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
    let (event_id, error) = TokenRead::parse(&raw, now()).unwrap_err();
    assert_eq!(event_id.as_deref(), Some("b:7"));
    assert!(matches!(error, ValidationError::MalformedEvent(_)));
}

#[test]
fn relative_token_path_rejected() {
    let mut event = event();
    event.token.path = "token".to_owned();
    let error = event.validate(now()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid token.path \"token\": expected an absolute path"
    );
}

#[test]
fn zero_count_rejected() {
    let mut event = event();
    event.count = 0;
    let error = event.validate(now()).unwrap_err();
    assert!(error.to_string().starts_with("invalid count \"0\""));
}

#[test]
fn long_comm_rejected() {
    let mut event = event();
    event.process.comm = "a-very-long-command-name".to_owned();
    let error = event.validate(now()).unwrap_err();
    assert!(error.to_string().starts_with("invalid process.comm"));
}

#[test]
fn parent_exe_checked() {
    let mut event = event();
    event.process.parent.as_mut().unwrap().exe = "sh".to_owned();
    let error = event.validate(now()).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("invalid process.parent.exe \"sh\"")
    );
}

#[test]
fn empty_event_id_rejected() {
    let mut event = event();
    event.event_id.clear();
    let error = event.validate(now()).unwrap_err();
    assert!(error.to_string().starts_with("invalid event_id \"\""));
}

#[test]
fn long_values_truncated_in_errors() {
    let mut event = event();
    event.token.path = "x".repeat(500);
    let message = event.validate(now()).unwrap_err().to_string();
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

/// A change that makes an event invalid.
type Corruption = fn(&mut TokenRead);

const NODE: &str = r#""node": {"name": "n", "boot_id": "b"}"#;

#[test]
fn schema_errors_name_field() {
    let cases = [
        (
            format!(r#"{{{NODE}, "events": []}}"#),
            "missing field `schema`",
        ),
        (
            format!(r#"{{"schema": "1", {NODE}, "events": []}}"#),
            "schema: invalid type: string \"1\", expected u32",
        ),
        (
            format!(r#"{{"schema": -1, {NODE}, "events": []}}"#),
            "schema: invalid value: integer `-1`, expected u32",
        ),
    ];
    for (body, expected) in cases {
        let message = batch_error(&body).to_string();
        assert!(message.starts_with("invalid batch: "), "{message}");
        assert!(message.contains(expected), "{message}");
        assert!(message.ends_with(r#""events": [...]}"#), "{message}");
    }
}

#[test]
fn newer_schema_named_before_shape() {
    let error = batch_error(r#"{"schema": 2, "reads": []}"#);
    assert_eq!(error, ValidationError::UnsupportedSchema(2));
}

#[test]
fn non_object_body_rejected() {
    for body in [
        r#"[1, {"name": "n", "boot_id": "b"}, []]"#,
        "\"batch\"",
        "  hello",
        "",
    ] {
        let message = batch_error(body).to_string();
        assert!(
            message.starts_with("invalid batch: expected a JSON object, found "),
            "{message}"
        );
    }
}

#[test]
fn events_shape_errors_named() {
    let missing = batch_error(&format!(r#"{{"schema": 1, {NODE}}}"#)).to_string();
    assert!(missing.contains("missing field `events`"), "{missing}");
    let object = batch_error(&format!(r#"{{"schema": 1, {NODE}, "events": {{}}}}"#)).to_string();
    assert!(
        object.contains("events: invalid type: map, expected a sequence"),
        "{object}"
    );
}

#[test]
fn oversized_body_rejected() {
    let padding = " ".repeat(MAX_BATCH_BYTES);
    let body = format!(r#"{{"schema": 1, {NODE}, "events": []}}{padding}"#);
    let error = batch_error(&body);
    assert_eq!(error, ValidationError::TooLarge(body.len()));
    assert!(error.to_string().ends_with("split the batch"));
}

#[test]
fn node_control_characters_rejected() {
    let body =
        r#"{"schema": 1, "node": {"name": "n", "boot_id": "b", "hook": "kprobe\n"}, "events": []}"#;
    let message = batch_error(body).to_string();
    assert!(
        message.starts_with("invalid node.hook \"kprobe\\n\""),
        "{message}"
    );
}

#[test]
fn unknown_fields_ignored() {
    let mut batch: serde_json::Value = serde_json::from_str(BATCH).unwrap();
    batch["compression"] = "none".into();
    batch["node"]["kernel"] = "6.1.0".into();
    batch["events"][0]["tid"] = 48215.into();
    batch["events"][0]["process"]["gid"] = 1000.into();
    batch["events"][0]["process"]["parent"]["cgroup"] = serde_json::json!({"id": 7});
    batch["events"][0]["token"]["inode"] = serde_json::json!(1e300);
    let envelope = BatchEnvelope::parse(batch.to_string().as_bytes()).unwrap();
    let event = TokenRead::parse(&envelope.events[0], now()).unwrap();
    assert_eq!(event, self::event());
}

#[test]
fn huge_unknown_number_ignored() {
    let mut text = event_json().to_string();
    text.insert_str(1, r#""future": 1e400, "#);
    let raw = RawValue::from_string(text).unwrap();
    assert!(TokenRead::parse(&raw, now()).is_ok());
}

#[test]
fn non_object_event_rejected() {
    for text in ["5", "null", r#"["b:1", "2026-12-04T09:15:02Z"]"#] {
        let raw = RawValue::from_string(text.to_owned()).unwrap();
        let (event_id, error) = TokenRead::parse(&raw, now()).unwrap_err();
        assert_eq!(event_id, None);
        let message = error.to_string();
        assert!(
            message.starts_with("invalid event: expected a JSON object, found "),
            "{message}"
        );
    }
}

#[test]
fn event_type_errors_name_path() {
    let cases = [
        (
            "/process/pid",
            serde_json::json!(-1),
            "invalid event: process.pid: invalid value: integer `-1`, expected u32",
        ),
        (
            "/process/uid",
            serde_json::json!(1u64 << 32),
            "invalid event: process.uid: invalid value: integer `4294967296`, expected u32",
        ),
        (
            "/count",
            serde_json::json!(-3),
            "invalid event: count: invalid value: integer `-3`, expected u32",
        ),
        (
            "/token/kind",
            serde_json::json!("gcp"),
            "invalid event: token.kind: unknown variant `gcp`, expected `irsa` or `pod_identity`",
        ),
        (
            "/observed_at",
            serde_json::json!("yesterday"),
            "invalid event: observed_at: invalid time \"yesterday\"",
        ),
        (
            "/observed_at",
            serde_json::json!(1733303702),
            "invalid event: observed_at: invalid type: integer `1733303702`, expected a string",
        ),
    ];
    for (pointer, value, expected) in cases {
        let mut event = event_json();
        *event.pointer_mut(pointer).unwrap() = value;
        let message = event_error(&event);
        assert!(message.starts_with(expected), "{message}");
        assert!(!message.contains(" at line "), "{message}");
    }
}

#[test]
fn bad_time_message_shows_format() {
    let mut event = event_json();
    event["observed_at"] = "2026-12-04 09:15".into();
    let message = event_error(&event);
    assert!(
        message.ends_with("expected RFC 3339, such as 2026-12-04T09:15:02Z"),
        "{message}"
    );
}

#[test]
fn out_of_range_number_named() {
    let text = event_json().to_string().replace("48211", "1e400");
    let raw = RawValue::from_string(text).unwrap();
    let (event_id, error) = TokenRead::parse(&raw, now()).unwrap_err();
    assert_eq!(
        event_id.as_deref(),
        Some("5f1c6a7e-0b7e-4c41-9d0a-3f3e2a6b9c10:41")
    );
    let message = error.to_string();
    assert!(
        message.starts_with("invalid event: process.pid: number out of range"),
        "{message}"
    );
}

#[test]
fn decode_message_truncated() {
    let mut event = event_json();
    event["process"]["pid"] = "9".repeat(100_000).into();
    let message = event_error(&event);
    assert!(message.len() < 400, "{} bytes", message.len());
    assert!(message.ends_with('…'), "{message}");
}

#[test]
fn future_time_rejected() {
    let mut event = event();
    event.observed_at = now() + MAX_CLOCK_SKEW + TimeDelta::seconds(1);
    let message = event.validate(now()).unwrap_err().to_string();
    assert_eq!(
        message,
        "invalid observed_at \"2026-12-04T09:35:01Z\": expected at most 15 minutes after \
         the detector's time 2026-12-04T09:20:00Z: fix the node's clock"
    );
    event.observed_at = now() + MAX_CLOCK_SKEW;
    assert_eq!(event.validate(now()), Ok(()));
}

#[test]
fn old_time_rejected() {
    let mut event = event();
    event.observed_at = "1970-01-01T00:00:00Z".parse().unwrap();
    let message = event.validate(now()).unwrap_err().to_string();
    assert!(
        message.starts_with(
            "invalid observed_at \"1970-01-01T00:00:00Z\": expected at most 24 hours before"
        ),
        "{message}"
    );
    event.observed_at = now() - MAX_EVENT_AGE;
    assert_eq!(event.validate(now()), Ok(()));
}

#[test]
fn invalid_event_id_not_echoed() {
    let mut event = event_json();
    event["event_id"] = "b:1\n".repeat(1000).into();
    let raw = RawValue::from_string(event.to_string()).unwrap();
    let (event_id, error) = TokenRead::parse(&raw, now()).unwrap_err();
    assert_eq!(event_id, None);
    assert!(
        error
            .to_string()
            .starts_with("invalid event_id \"b:1\\nb:1")
    );

    event["process"]["pid"] = "x".into();
    let raw = RawValue::from_string(event.to_string()).unwrap();
    let (event_id, _) = TokenRead::parse(&raw, now()).unwrap_err();
    assert_eq!(event_id, None);
}

#[test]
fn process_control_characters_accepted() {
    let mut event = event();
    event.process.comm = "\u{1b}[2J\r\t".to_owned();
    event.process.exe = "/tmp/x\nSeverity: low".to_owned();
    event.process.args = vec!["\u{202e}fdp.exe".to_owned(), String::new()];
    event.token.path = "/var/run/secrets/eks.amazonaws.com/serviceaccount/\u{7f}".to_owned();
    assert_eq!(event.validate(now()), Ok(()));
}

#[test]
fn nul_rejected_in_process_strings() {
    let cases: [(&str, Corruption); 5] = [
        ("process.comm", |e| e.process.comm = "py\0".to_owned()),
        ("process.exe", |e| e.process.exe = "/bin/sh\0x".to_owned()),
        ("process.args", |e| e.process.args[1] = "-c\0".to_owned()),
        ("process.parent.args", |e| {
            e.process.parent.as_mut().unwrap().args = vec!["a\0b".to_owned()]
        }),
        ("token.path", |e| e.token.path = "/t\0".to_owned()),
    ];
    for (field, corrupt) in cases {
        let mut event = event();
        corrupt(&mut event);
        let message = event.validate(now()).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("invalid {field} ")),
            "{message}"
        );
        assert!(message.contains("NUL"), "{message}");
    }
}

#[test]
fn exe_length_limited() {
    let mut event = event();
    event.process.exe = format!("/{}", "a".repeat(MAX_EXE_LEN - 1));
    assert_eq!(event.validate(now()), Ok(()));
    event.process.exe.push('a');
    let message = event.validate(now()).unwrap_err().to_string();
    assert!(
        message.ends_with("expected at most 1000 bytes, but the path has 1001: truncate it"),
        "{message}"
    );
}

#[test]
fn args_bytes_limited() {
    let mut event = event();
    event.process.args = vec!["a".repeat(MAX_ARGS_BYTES / 2); 2];
    assert_eq!(event.validate(now()), Ok(()));
    event.process.args.push("b".to_owned());
    let message = event.validate(now()).unwrap_err().to_string();
    assert_eq!(
        message,
        "invalid process.args \"4097 bytes\": expected at most 4096 bytes of arguments: \
         truncate and set args_truncated"
    );
}

#[test]
fn parent_args_named() {
    let mut event = event();
    event.process.parent.as_mut().unwrap().args = vec!["x".to_owned(); MAX_ARGS + 1];
    let message = event.validate(now()).unwrap_err().to_string();
    assert!(
        message.starts_with("invalid process.parent.args \"33 entries\""),
        "{message}"
    );
}

#[test]
fn grandparent_rejected() {
    let mut event = event();
    let grandparent = event.process.parent.clone().unwrap();
    event.process.parent.as_mut().unwrap().parent = Some(grandparent);
    let message = event.validate(now()).unwrap_err().to_string();
    assert!(
        message.starts_with("invalid process.parent.parent \"/bin/dash\""),
        "{message}"
    );
}

#[test]
fn deep_parents_rejected() {
    let mut event = event_json();
    for _ in 0..200 {
        let inner = event["process"].clone();
        event["process"]["parent"] = inner;
    }
    let message = event_error(&event);
    assert!(message.contains("recursion limit exceeded"), "{message}");
}

#[test]
fn key_names_checked() {
    let cases: [(&str, Corruption); 6] = [
        ("pod.owner.name", |e| {
            e.pod.as_mut().unwrap().owner.as_mut().unwrap().name = "a".repeat(3000)
        }),
        ("pod.owner.kind", |e| {
            e.pod.as_mut().unwrap().owner.as_mut().unwrap().kind = "Deployment/x".to_owned()
        }),
        ("pod.namespace", |e| {
            e.pod.as_mut().unwrap().namespace = Some("pay/ments".to_owned())
        }),
        ("pod.name", |e| {
            e.pod.as_mut().unwrap().name = Some("api\0".to_owned())
        }),
        ("container.name", |e| {
            e.container.as_mut().unwrap().name = Some(String::new())
        }),
        ("cluster", |e| e.cluster = "prod\n".to_owned()),
    ];
    for (field, corrupt) in cases {
        let mut event = event();
        corrupt(&mut event);
        let message = event.validate(now()).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("invalid {field} ")),
            "{message}"
        );
        assert!(
            message.ends_with(
                "expected a Kubernetes name of 1 to 253 bytes without '/' or control characters"
            ),
            "{message}"
        );
    }
}

#[test]
fn image_control_characters_rejected() {
    let mut event = event();
    event.container.as_mut().unwrap().image = Some("nginx\nSeverity: low".to_owned());
    let message = event.validate(now()).unwrap_err().to_string();
    assert!(
        message.starts_with("invalid container.image \"nginx\\nSeverity: low\""),
        "{message}"
    );
}

#[test]
fn lone_surrogate_rejected() {
    let text = event_json()
        .to_string()
        .replace("\"python3\"", r#""py\ud800""#);
    let raw = RawValue::from_string(text).unwrap();
    let (event_id, error) = TokenRead::parse(&raw, now()).unwrap_err();
    assert_eq!(
        event_id.as_deref(),
        Some("5f1c6a7e-0b7e-4c41-9d0a-3f3e2a6b9c10:41")
    );
    assert!(matches!(error, ValidationError::MalformedEvent(_)));
}

#[test]
fn count_max_accepted() {
    let mut event = event();
    event.count = u32::MAX;
    assert_eq!(event.validate(now()), Ok(()));
}
