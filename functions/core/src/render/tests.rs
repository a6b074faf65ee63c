use serde_json::Value as Json;

use super::*;
use crate::cloudtrail::ExchangeApi;
use crate::conformance::{at, sample_read};
use crate::correlate::{CallSignals, Subject};
use crate::finding::{BaselineSummary, FINDING_SCHEMA_VERSION, KnownValueSummary, Mitre};
use crate::scope::BaselineKey;

const FINDING_ID: &str = "tg-00112233445566778899aabbccddeeff";

/// Builds a finding for `/usr/bin/curl` in Deployment `payments/api` field by
/// field, so that its text does not depend on the engine.
fn curl_finding() -> Finding {
    let read = sample_read("/usr/bin/curl", "curl");
    let key = BaselineKey::of(&read);
    let rule = Rule::UnfamiliarProcessTokenRead;
    Finding {
        schema: FINDING_SCHEMA_VERSION,
        finding_id: FINDING_ID.to_owned(),
        rule,
        title: rule.title().to_owned(),
        severity: Severity::Medium,
        detected_at: at(1),
        observed_at: at(1),
        last_seen: at(1),
        repeat_count: 0,
        cluster: read.cluster.clone(),
        node: "node-a".to_owned(),
        event_id: read.event_id.clone(),
        triage: crate::finding::triage_steps(rule, &read.cluster, &read.process, read.pod.as_ref()),
        token: read.token,
        process: read.process,
        container: read.container,
        pod: read.pod,
        scope: key.scope,
        value: key.value,
        baseline: BaselineSummary {
            scope_first_seen: at(0),
            learning_ended_at: at(0),
            learning_period_seconds: 0,
            forget_after_seconds: 28 * 24 * 3600,
            known_values: vec![KnownValueSummary {
                exe: "/usr/bin/python3".to_owned(),
                comm: "python3".to_owned(),
                first_seen: at(0),
                last_seen: at(0),
            }],
            known_values_omitted: 0,
        },
        mitre: Mitre::credentials_in_files(),
        correlation: None,
        changes: Vec::new(),
        containment: Vec::new(),
    }
}

fn outside_call() -> MatchedCall {
    MatchedCall {
        api: ExchangeApi::AssumeRoleWithWebIdentity,
        event_id: "ev-1".to_owned(),
        event_time: at(1) + chrono::Duration::minutes(4),
        last_event_time: at(1) + chrono::Duration::minutes(4),
        count: 1,
        source_address: Some("203.0.113.9".to_owned()),
        user_agent: Some("aws-cli/2.15.0".to_owned()),
        role_arn: Some("arn:aws:iam::111122223333:role/payments-api".to_owned()),
        session_name: Some("botocore-session-1".to_owned()),
        pod_name: None,
        pod_uid: None,
        caller_arn: None,
        outcome: "success".to_owned(),
        signals: CallSignals {
            outside_egress: true,
            new_user_agent: true,
            new_session_name: false,
        },
        recent_event_ids: vec!["ev-1".to_owned()],
    }
}

fn subject() -> Subject {
    Subject {
        cluster: "test".to_owned(),
        namespace: Some("payments".to_owned()),
        service_account: Some("payments-api".to_owned()),
    }
}

/// Builds the curl finding as it is after an exchange from outside the egress
/// made it critical.
fn escalated_finding() -> Finding {
    let mut finding = curl_finding();
    finding.severity = Severity::Critical;
    finding.correlation = Some(Correlation {
        subject: subject(),
        calls: vec![outside_call()],
    });
    finding.changes = vec![crate::correlate::SeverityChange {
        at: at(1) + chrono::Duration::minutes(9),
        from: Severity::Medium,
        to: Severity::Critical,
        reason: "sts:AssumeRoleWithWebIdentity from 203.0.113.9 (outside the cluster's egress), \
                 4m0s after the read"
            .to_owned(),
    }];
    finding
}

fn exchange_finding() -> ExchangeFinding {
    let mut finding = ExchangeFinding::new(
        &subject(),
        outside_call(),
        vec!["198.51.100.0/24".to_owned()],
        at(2),
    );
    finding.finding_id = FINDING_ID.to_owned();
    finding
}

#[test]
fn email_text_exact() {
    let alert = render_alert(&Alert::Finding(&curl_finding()));
    let expected = "\
Unfamiliar process read an AWS service account token
Severity: medium
Finding: tg-00112233445566778899aabbccddeeff
Observed: 2026-12-01T01:00:00+00:00

What happened
/usr/bin/curl (pid 4242) opened the irsa token at /var/run/secrets/eks.amazonaws.com/serviceaccount/token.
This workload never used this process to read its token before. Whoever holds the token can exchange it for the pod's AWS role credentials from anywhere until it expires.

Process
  exe:     /usr/bin/curl
  comm:    curl
  pid:     4242  uid: 1000
  args:    curl
  parent:  /bin/sh (pid 4200, sh)

Pod
  cluster:         test
  node:            node-a
  namespace:       payments
  pod:             api-6d8f7b9c5-x2k4q
  pod uid:         pod-uid-1
  service account: payments-api
  container:       api
  container id:    c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffee
  image:           registry.example/payments-api:1.0

What the baseline knew
  scope:    Deployment payments/api
  learning: from 2026-12-01T00:00:00+00:00 to 2026-12-01T00:00:00+00:00
  known processes:
    /usr/bin/python3 (python3), last seen 2026-12-01T00:00:00+00:00

Triage
  1. Check whether /usr/bin/curl (pid 4242) belongs to the workload: compare it with the container image and recent deploys (kubectl describe pod -n payments api-6d8f7b9c5-x2k4q).
  2. Look for an exec session into the pod: with EKS audit logging on, CloudWatch Logs group /aws/eks/test/cluster records each pods/exec request for payments/api-6d8f7b9c5-x2k4q with its user. Then check the parent process /bin/sh (pid 4200), and kubectl get events -n payments --field-selector involvedObject.name=api-6d8f7b9c5-x2k4q for restarts or image changes.
  3. Search CloudTrail for AssumeRoleWithWebIdentity or AssumeRoleForPodIdentity by this service account since the read, and their source addresses.
  4. If the read is not explained, revoke the role's active sessions (IAM: revoke older sessions) and delete the pod so it gets a fresh token.

MITRE ATT&CK: TA0006 Credential Access, T1552.001 Unsecured Credentials: Credentials In Files
";
    assert_eq!(alert.email, expected);
}

/// Checks `card` against the custom notification schema field by field and
/// returns its `content` and `metadata` objects.
fn check_schema(
    card: &Json,
) -> (
    &serde_json::Map<String, Json>,
    &serde_json::Map<String, Json>,
) {
    let top = card.as_object().expect("notification is a JSON object");
    for key in top.keys() {
        assert!(
            ["version", "source", "id", "content", "metadata"].contains(&key.as_str()),
            "unknown top-level field {key}"
        );
    }
    assert_eq!(top["version"], "1.0");
    assert_eq!(top["source"], "custom");
    assert!(top["id"].is_string(), "id: {}", top["id"]);

    let content = top["content"].as_object().expect("content is an object");
    for key in content.keys() {
        assert!(
            ["textType", "title", "description", "nextSteps", "keywords"].contains(&key.as_str()),
            "unknown content field {key}"
        );
    }
    assert_eq!(content["textType"], "client-markdown");
    let title = content["title"].as_str().expect("title is a string");
    assert!(!title.is_empty());
    assert!(title.chars().count() <= CHATBOT_TITLE_MAX_CHARS);
    let description = content["description"]
        .as_str()
        .expect("description is a string");
    assert!(!description.is_empty());
    assert!(description.chars().count() <= CHATBOT_DESCRIPTION_MAX_CHARS);
    for list in ["nextSteps", "keywords"] {
        let items = content[list].as_array().expect("list is an array");
        assert!(!items.is_empty(), "{list} is empty");
        assert!(items.iter().all(Json::is_string), "{list}: {items:?}");
    }

    let metadata = top["metadata"].as_object().expect("metadata is an object");
    for key in metadata.keys() {
        assert!(
            [
                "threadId",
                "summary",
                "eventType",
                "relatedResources",
                "additionalContext"
            ]
            .contains(&key.as_str()),
            "unknown metadata field {key}"
        );
    }
    for text in ["threadId", "summary", "eventType"] {
        assert!(metadata[text].is_string(), "{text}: {}", metadata[text]);
    }
    if let Some(resources) = metadata.get("relatedResources") {
        let resources = resources.as_array().expect("relatedResources is an array");
        assert!(resources.iter().all(Json::is_string), "{resources:?}");
    }
    let context = metadata["additionalContext"]
        .as_object()
        .expect("additionalContext is an object");
    assert!(context.values().all(Json::is_string), "{context:?}");
    (content, metadata)
}

fn card_json(alert: &AlertMessage) -> Json {
    alert.chatbot.check().unwrap();
    let text = serde_json::to_string(&alert.chatbot).unwrap();
    let parsed: ChatbotNotification = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed, alert.chatbot, "the card survives a round trip");
    serde_json::from_str(&text).unwrap()
}

fn strings(values: &[&str]) -> Vec<Json> {
    values.iter().map(|value| Json::from(*value)).collect()
}

#[test]
fn finding_card_fields() {
    let finding = curl_finding();
    let alert = render_alert(&Alert::Finding(&finding));
    let card = card_json(&alert);
    let (content, metadata) = check_schema(&card);

    assert_eq!(card["id"], FINDING_ID);
    assert_eq!(content["title"], alert.subject.as_str());
    assert_eq!(
        content["description"],
        "*Severity:* medium\n\
         *Pod:* `payments/api-6d8f7b9c5-x2k4q` of cluster `test`, node `node-a`\n\
         *Service account:* `payments-api`\n\
         *Container:* `api`, image `registry.example/payments-api:1.0`\n\
         *Process:* `/usr/bin/curl` (comm `curl`, pid 4242, uid 1000)\n\
         *Parent:* `/bin/sh` (pid 4200)\n\
         *Token:* irsa at `/var/run/secrets/eks.amazonaws.com/serviceaccount/token`\n\
         This workload never used this process to read its token before. Whoever holds the \
         token can exchange it for the pod's AWS role credentials from anywhere until it \
         expires.\n\
         *Finding:* `tg-00112233445566778899aabbccddeeff`"
    );
    let steps: Vec<_> = finding
        .triage
        .iter()
        .map(|s| Json::from(s.as_str()))
        .collect();
    assert_eq!(content["nextSteps"].as_array().unwrap(), &steps);
    assert_eq!(
        content["keywords"].as_array().unwrap(),
        &strings(&[
            "medium",
            "test",
            "payments",
            "unfamiliar_process_token_read"
        ])
    );
    assert_eq!(metadata["threadId"], FINDING_ID);
    assert_eq!(metadata["summary"], alert.subject.as_str());
    assert_eq!(metadata["eventType"], "unfamiliar_process_token_read");
    assert!(!metadata.contains_key("relatedResources"));
    assert_eq!(metadata["additionalContext"]["findingId"], FINDING_ID);
    assert_eq!(metadata["additionalContext"]["node"], "node-a");
    assert_eq!(metadata["additionalContext"]["pod"], "api-6d8f7b9c5-x2k4q");
}

#[test]
fn escalation_card_fields() {
    let finding = escalated_finding();
    let alert = render_alert(&Alert::Escalation {
        finding: &finding,
        from: Severity::Medium,
    });
    let card = card_json(&alert);
    let (content, metadata) = check_schema(&card);

    assert_eq!(card["id"], format!("{FINDING_ID}-critical"));
    assert_eq!(
        metadata["threadId"], FINDING_ID,
        "threads with the first alert"
    );
    assert_eq!(content["title"], alert.subject.as_str());
    let description = content["description"].as_str().unwrap();
    let lines: Vec<_> = description.lines().collect();
    assert_eq!(lines[0], "*Severity:* critical, raised from medium");
    assert_eq!(
        lines[1],
        "• medium → critical: sts:AssumeRoleWithWebIdentity from 203.0.113.9 (outside the \
         cluster's egress), 4m0s after the read"
    );
    assert!(
        lines.contains(
            &"*CloudTrail exchanges by the service account payments/payments-api of cluster \
              test:*"
        ),
        "{description}"
    );
    assert!(
        lines.contains(
            &"• `sts:AssumeRoleWithWebIdentity` from `203.0.113.9` at \
              2026-12-01T01:04:00+00:00, success, outside the cluster's egress, new user \
              agent `aws-cli/2.15.0`"
        ),
        "{description}"
    );
    assert_eq!(
        content["keywords"].as_array().unwrap(),
        &strings(&[
            "critical",
            "test",
            "payments",
            "unfamiliar_process_token_read"
        ])
    );
    assert_eq!(
        metadata["relatedResources"].as_array().unwrap(),
        &strings(&["arn:aws:iam::111122223333:role/payments-api"])
    );
}

#[test]
fn exchange_card_fields() {
    let finding = exchange_finding();
    let alert = render_alert(&Alert::Exchange(&finding));
    let card = card_json(&alert);
    let (content, metadata) = check_schema(&card);

    assert_eq!(card["id"], FINDING_ID);
    assert_eq!(content["title"], alert.subject.as_str());
    assert_eq!(
        content["description"],
        "*Severity:* high\n\
         *Service account:* `payments/payments-api` of cluster `test`\n\
         *Source address:* `203.0.113.9`, outside the cluster's egress\n\
         *Exchange:* `sts:AssumeRoleWithWebIdentity` at 2026-12-01T01:04:00+00:00, success\n\
         *Role:* `arn:aws:iam::111122223333:role/payments-api`\n\
         *Session name:* `botocore-session-1`\n\
         *User agent:* `aws-cli/2.15.0`\n\
         No process in the cluster read the token near that time, so someone holds a copy \
         of the token.\n\
         *Finding:* `tg-00112233445566778899aabbccddeeff`"
    );
    let steps: Vec<_> = finding
        .triage
        .iter()
        .map(|s| Json::from(s.as_str()))
        .collect();
    assert_eq!(content["nextSteps"].as_array().unwrap(), &steps);
    assert_eq!(
        content["keywords"].as_array().unwrap(),
        &strings(&["high", "test", "payments", "exchange_without_read"])
    );
    assert_eq!(metadata["threadId"], FINDING_ID);
    assert_eq!(metadata["eventType"], "exchange_without_read");
    assert_eq!(metadata["additionalContext"]["egress"], "198.51.100.0/24");
}

#[test]
fn card_neutralizes_markup() {
    let mut finding = curl_finding();
    finding.process.exe = "/tmp/`x` <https://example.com|click> <!channel>\n*b*".to_owned();
    finding.process.comm = "<!here>".to_owned();
    let alert = render_alert(&Alert::Finding(&finding));
    let content = &alert.chatbot.content;

    assert!(
        !content.description.contains('<'),
        "{}",
        content.description
    );
    assert!(
        !content.description.contains('>'),
        "{}",
        content.description
    );
    assert!(!content.title.contains('<'), "{}", content.title);
    assert!(
        content.description.contains(
            "*Process:* `/tmp/ˋxˋ ‹https://example.com|click› ‹!channel›\\n*b*` (comm `‹!here›`"
        ),
        "{}",
        content.description
    );
    for step in &content.next_steps {
        assert!(!step.contains('<'), "{step}");
    }
    // Each line has whole code spans, so no value runs into the next field.
    for line in content.description.lines() {
        assert_eq!(line.matches('`').count() % 2, 0, "{line}");
    }
}

#[test]
fn long_card_cut_to_limit() {
    let mut finding = curl_finding();
    finding.process.exe = format!("/{}", "a".repeat(20_000));
    let alert = render_alert(&Alert::Finding(&finding));
    let description = &alert.chatbot.content.description;
    assert_eq!(description.chars().count(), CHATBOT_DESCRIPTION_MAX_CHARS);
    assert!(description.ends_with("the email has the full report)"));
    assert_eq!(alert.chatbot.check(), Ok(()));
}

#[test]
fn card_check_rejects_schema_breaks() {
    let card = render_alert(&Alert::Finding(&curl_finding())).chatbot;

    let mut wrong = card.clone();
    wrong.version = "2.0".to_owned();
    assert!(
        matches!(
            wrong.check(),
            Err(ChatbotError::FixedValue {
                field: "version",
                ..
            })
        ),
        "{:?}",
        wrong.check()
    );

    let mut wrong = card.clone();
    wrong.content.text_type = "markdown".to_owned();
    assert_eq!(
        wrong.check().unwrap_err().to_string(),
        "invalid Chatbot notification: content.textType is \"markdown\", expected \
         \"client-markdown\""
    );

    let mut wrong = card.clone();
    wrong.content.title = " ".to_owned();
    assert_eq!(
        wrong.check(),
        Err(ChatbotError::Empty {
            field: "content.title"
        })
    );

    let mut wrong = card;
    wrong.content.description = "d".repeat(CHATBOT_DESCRIPTION_MAX_CHARS + 1);
    assert_eq!(
        wrong.check(),
        Err(ChatbotError::TooLong {
            field: "content.description",
            chars: CHATBOT_DESCRIPTION_MAX_CHARS + 1,
            max: CHATBOT_DESCRIPTION_MAX_CHARS,
        })
    );
}

#[test]
fn card_rejects_unknown_fields() {
    let card = render_alert(&Alert::Finding(&curl_finding())).chatbot;
    let mut json = serde_json::to_value(&card).unwrap();
    json["content"]["color"] = Json::from("red");
    assert!(serde_json::from_value::<ChatbotNotification>(json).is_err());
}
