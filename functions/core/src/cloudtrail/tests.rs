use serde_json::{Value, json};

use super::*;

/// A record of `tests/fixtures/cloudtrail`, the project's own records in the
/// shapes CloudTrail writes, with fake ids.
pub(crate) fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../../tests/fixtures/cloudtrail/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn exchange(record: &Value) -> Exchange {
    match parse_record(record) {
        Ok(Parsed::Exchange(exchange)) => *exchange,
        other => panic!("expected an exchange, got {other:?}"),
    }
}

fn ignored_reason(record: &Value) -> &'static str {
    match parse_record(record) {
        Ok(Parsed::Ignored { reason, .. }) => reason,
        other => panic!("expected an ignored record, got {other:?}"),
    }
}

#[test]
fn irsa_exchange_parsed() {
    let exchange = exchange(&fixture("irsa-success"));
    assert_eq!(exchange.api, ExchangeApi::AssumeRoleWithWebIdentity);
    assert_eq!(
        exchange.cluster,
        ClusterRef::Issuer(
            "https://oidc.eks.eu-west-1.amazonaws.com/id/0A1B2C3D4E5F60718293A4B5C6D7E8F9"
                .to_owned()
        )
    );
    assert_eq!(exchange.namespace.as_deref(), Some("payments"));
    assert_eq!(exchange.service_account.as_deref(), Some("payments-api"));
    assert_eq!(exchange.source_address.as_deref(), Some("198.51.100.20"));
    assert_eq!(
        exchange.session_name.as_deref(),
        Some("botocore-session-1764583205")
    );
    assert_eq!(
        exchange.role_arn.as_deref(),
        Some("arn:aws:iam::111122223333:role/payments-api")
    );
    assert_eq!(
        exchange.event_time.to_rfc3339(),
        "2026-12-01T10:00:05+00:00"
    );
    assert!(exchange.succeeded());
    assert_eq!(exchange.outcome(), "success");
}

#[test]
fn failed_exchange_kept() {
    let exchange = exchange(&fixture("irsa-access-denied"));
    assert!(!exchange.succeeded());
    assert_eq!(exchange.outcome(), "failed: AccessDenied");
    assert_eq!(exchange.source_address.as_deref(), Some("203.0.113.66"));
}

#[test]
fn issuer_from_principal_id() {
    let mut record = fixture("irsa-success");
    record["userIdentity"]
        .as_object_mut()
        .unwrap()
        .remove("identityProvider");
    let exchange = exchange(&record);
    assert_eq!(
        exchange.cluster,
        ClusterRef::Issuer(
            "https://oidc.eks.eu-west-1.amazonaws.com/id/0A1B2C3D4E5F60718293A4B5C6D7E8F9"
                .to_owned()
        )
    );
}

#[test]
fn pod_identity_call_names_cluster() {
    let exchange = exchange(&fixture("podidentity-eks-auth"));
    assert_eq!(exchange.api, ExchangeApi::AssumeRoleForPodIdentity);
    assert_eq!(exchange.cluster, ClusterRef::Name("prod".to_owned()));
    assert_eq!(exchange.namespace, None);
    assert_eq!(
        exchange.caller_arn.as_deref(),
        Some("arn:aws:sts::111122223333:assumed-role/prod-node-group-role/i-0a1b2c3d4e5f60718")
    );
}

#[test]
fn eks_auth_assume_role_names_pod() {
    let exchange = exchange(&fixture("podidentity-sts-assumerole"));
    assert_eq!(exchange.api, ExchangeApi::AssumeRoleByEksAuth);
    assert_eq!(exchange.cluster, ClusterRef::Name("prod".to_owned()));
    assert_eq!(exchange.namespace.as_deref(), Some("payments"));
    assert_eq!(exchange.service_account.as_deref(), Some("payments-api"));
    assert_eq!(
        exchange.pod_name.as_deref(),
        Some("payments-api-6d8f7b9c5-x2k4q")
    );
    assert_eq!(
        exchange.pod_uid.as_deref(),
        Some("7c1d5a3e-2b4f-4e8a-9c6d-0f1e2d3c4b5a")
    );
    assert_eq!(
        exchange.source_address.as_deref(),
        Some("pods.eks.amazonaws.com")
    );
}

#[test]
fn other_calls_ignored() {
    assert_eq!(
        ignored_reason(&fixture("unrelated-getcalleridentity")),
        "not a token exchange"
    );
    assert_eq!(
        ignored_reason(&fixture("github-oidc-assumerolewithwebidentity")),
        "a web identity that is not a Kubernetes service account"
    );

    let mut self_managed = fixture("irsa-success");
    self_managed["userIdentity"]["identityProvider"] =
        json!("arn:aws:iam::111122223333:oidc-provider/k8s.example.com/cluster-a");
    assert_eq!(
        ignored_reason(&self_managed),
        "a web identity from an OIDC provider that is not EKS's"
    );

    let mut user_assume_role = fixture("podidentity-sts-assumerole");
    user_assume_role["userIdentity"] = json!({"type": "IAMUser", "userName": "alice"});
    assert_eq!(
        ignored_reason(&user_assume_role),
        "an AssumeRole that EKS Auth did not make"
    );
}

#[test]
fn malformed_records_named() {
    let mut no_time = fixture("irsa-success");
    no_time.as_object_mut().unwrap().remove("eventTime");
    let error = parse_record(&no_time).unwrap_err();
    assert_eq!(
        error.event_id.as_deref(),
        Some("e1a2b3c4-d5e6-4f70-8192-a3b4c5d6e7f8")
    );
    assert_eq!(error.reason, "missing eventTime");

    let mut bad_time = fixture("irsa-success");
    bad_time["eventTime"] = json!("yesterday");
    let error = parse_record(&bad_time).unwrap_err();
    assert!(
        error.reason.starts_with("eventTime \"yesterday\" is not"),
        "{error}"
    );

    let mut wrong_type = fixture("irsa-success");
    wrong_type["sourceIPAddress"] = json!(42);
    let error = parse_record(&wrong_type).unwrap_err();
    assert_eq!(
        error.reason,
        "sourceIPAddress is a number, expected a string"
    );

    let mut no_tags = fixture("podidentity-sts-assumerole");
    no_tags["requestParameters"]["tags"] = json!("pod");
    let error = parse_record(&no_tags).unwrap_err();
    assert_eq!(
        error.reason,
        "requestParameters.tags is a string, expected an array"
    );

    let mut no_id = fixture("irsa-success");
    no_id["eventID"] = json!(7);
    let error = parse_record(&no_id).unwrap_err();
    assert_eq!(error.event_id, None);
    assert_eq!(
        error.to_string(),
        "invalid CloudTrail record (no eventID): eventID is a number, expected a string"
    );

    assert!(parse_record(&json!([1, 2])).is_err());
}

#[test]
fn issuer_keys_compare() {
    assert_eq!(
        issuer_key("https://OIDC.eks.eu-west-1.amazonaws.com/id/ABC123/"),
        issuer_key("oidc.eks.eu-west-1.amazonaws.com/id/ABC123")
    );
    assert_ne!(
        issuer_key("https://oidc.eks.eu-west-1.amazonaws.com/id/ABC123"),
        issuer_key("https://oidc.eks.eu-west-1.amazonaws.com/id/abc123")
    );
}

#[test]
fn log_file_split() {
    let file = json!({"Records": [fixture("irsa-success"), fixture("podidentity-eks-auth")]});
    let text = serde_json::to_string_pretty(&file).unwrap();
    let records = split_records("trail.json", &text);
    assert_eq!(records.len(), 2);
    let first = records[0].as_ref().unwrap();
    assert_eq!(first.origin, "trail.json: Records[0]");
    let Parsed::Exchange(exchange) = parse_record_text(first.text).unwrap() else {
        panic!("expected an exchange");
    };
    assert_eq!(exchange.api, ExchangeApi::AssumeRoleWithWebIdentity);
}

#[test]
fn eventbridge_lines_split() {
    let event = |detail: Value| {
        json!({
            "version": "0",
            "id": "0b1c2d3e-4f5a-6b7c-8d9e-0f1a2b3c4d5e",
            "detail-type": EVENTBRIDGE_DETAIL_TYPE,
            "source": "aws.sts",
            "account": "111122223333",
            "time": "2026-12-01T10:00:05Z",
            "region": "eu-west-1",
            "resources": [],
            "detail": detail
        })
        .to_string()
    };
    let text = format!(
        "{}\n\nnot json\n{}\n{}\n",
        event(fixture("irsa-success")),
        json!({"detail-type": "EC2 Instance State-change Notification", "detail": {}}),
        event(fixture("podidentity-eks-auth"))
    );
    let records = split_records("events.jsonl", &text);
    assert_eq!(records.len(), 4);
    assert_eq!(records[0].as_ref().unwrap().origin, "events.jsonl:1");
    let not_json = records[1].as_ref().unwrap_err();
    assert_eq!(not_json.origin, "events.jsonl:3");
    assert!(not_json.reason.starts_with("not JSON"), "{not_json}");
    let wrong_type = records[2].as_ref().unwrap_err();
    assert!(
        wrong_type.reason.contains("EC2 Instance State-change"),
        "{wrong_type}"
    );
    let last: Value = serde_json::from_str(records[3].as_ref().unwrap().text).unwrap();
    assert_eq!(last["eventSource"], "eks-auth.amazonaws.com");
}

#[test]
fn broken_log_file_one_error() {
    let text = "{\"Records\": [\n  {\"eventID\": \"x\"},\n";
    let records = split_records("cut.json", text);
    assert_eq!(records.len(), 1);
    assert!(
        records[0]
            .as_ref()
            .unwrap_err()
            .reason
            .starts_with("not valid JSON")
    );
}

/// A named change to a record.
type Mutation = (&'static str, Box<dyn Fn(&mut Value)>);

/// Every fixture, and variants of each with fields of wrong types or
/// missing, parses the same from text as from a JSON tree.
#[test]
fn text_and_tree_agree() {
    let names = [
        "irsa-success",
        "irsa-access-denied",
        "podidentity-eks-auth",
        "podidentity-sts-assumerole",
        "unrelated-getcalleridentity",
        "github-oidc-assumerolewithwebidentity",
    ];
    let mutations: Vec<Mutation> = vec![
        ("as is", Box::new(|_| {})),
        (
            "no eventTime",
            Box::new(|r| drop(r.as_object_mut().unwrap().remove("eventTime"))),
        ),
        (
            "numeric source",
            Box::new(|r| r["sourceIPAddress"] = json!(7)),
        ),
        (
            "string identity",
            Box::new(|r| r["userIdentity"] = json!("x")),
        ),
        (
            "null request",
            Box::new(|r| r["requestParameters"] = Value::Null),
        ),
        (
            "bad tags",
            Box::new(|r| r["requestParameters"]["tags"] = json!([{"key": 1}])),
        ),
        (
            "no provider",
            Box::new(|r| {
                drop(
                    r["userIdentity"]
                        .as_object_mut()
                        .map(|o| o.remove("identityProvider")),
                )
            }),
        ),
        (
            "escaped agent",
            Box::new(|r| r["userAgent"] = json!("a\"b\\c\u{e9}")),
        ),
        ("numeric id", Box::new(|r| r["eventID"] = json!(5))),
    ];
    for name in names {
        for (mutation, apply) in &mutations {
            let mut record = fixture(name);
            apply(&mut record);
            let text = record.to_string();
            assert_eq!(
                parse_record_text(&text),
                parse_record(&record),
                "{name}, {mutation}"
            );
        }
    }
    assert!(parse_record_text("[1]").is_err());
    assert!(
        parse_record_text("{")
            .unwrap_err()
            .reason
            .starts_with("the record is not JSON")
    );
}
