use std::sync::Mutex;
use std::time::Duration;

use tokenguard_schema::{Node, OutcomeStatus, TokenRead};

use super::*;
use crate::conformance::{self, at};
use crate::correlate::ExchangeFinding;
use crate::finding::{MAX_KNOWN_VALUES, Severity};
use crate::render::render_alert;
use crate::store::MemoryStore;

pub(crate) fn read(exe: &str, comm: &str) -> TokenRead {
    conformance::sample_read(exe, comm)
}

fn node() -> Node {
    Node {
        name: "node-a".to_owned(),
        boot_id: "boot-1".to_owned(),
        agent_version: None,
        hook: None,
    }
}

/// An alert as a [`RecordingNotifier`] keeps it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SentAlert {
    Finding(Finding),
    Escalation(Finding, Severity),
    Exchange(ExchangeFinding),
}

/// Records the alerts it is asked to send; fails while `failing` is set.
#[derive(Debug, Default)]
pub(crate) struct RecordingNotifier {
    /// The findings of first alerts.
    pub sent: Mutex<Vec<Finding>>,
    /// Every alert, in order.
    pub alerts: Mutex<Vec<SentAlert>>,
    pub failing: Mutex<bool>,
}

impl Notifier for RecordingNotifier {
    async fn notify(&self, alert: &Alert<'_>) -> Result<(), StoreError> {
        if *self.failing.lock().unwrap() {
            return Err(StoreError::Transient {
                operation: "publish",
                message: "test outage".to_owned(),
            });
        }
        let sent = match alert {
            Alert::Finding(finding) => {
                self.sent.lock().unwrap().push((*finding).clone());
                SentAlert::Finding((*finding).clone())
            }
            Alert::Escalation { finding, from } => SentAlert::Escalation((*finding).clone(), *from),
            Alert::Exchange(finding) => SentAlert::Exchange((*finding).clone()),
        };
        self.alerts.lock().unwrap().push(sent);
        Ok(())
    }
}

fn engine(learning: &str, forget: &str) -> Engine<MemoryStore, RecordingNotifier> {
    let policy = Policy::from_settings(learning, forget).unwrap();
    Engine::new(MemoryStore::new(), RecordingNotifier::default(), policy)
}

fn at_hour(mut event: TokenRead, hours: i64, id: &str) -> TokenRead {
    event.observed_at = at(hours);
    event.event_id = id.to_owned();
    event
}

fn sent(engine: &Engine<MemoryStore, RecordingNotifier>) -> Vec<Finding> {
    engine.notifier().sent.lock().unwrap().clone()
}

#[tokio::test]
async fn familiar_quiet_unfamiliar_alerts() {
    let engine = engine("1d", "28d");
    let familiar = at_hour(read("/usr/bin/python3", "python3"), 0, "b:1");
    let during = engine.process(&node(), &familiar, at(0)).await.unwrap();
    assert_eq!(during, Decision::Learned);

    let again = at_hour(read("/usr/bin/python3", "python3"), 30, "b:2");
    assert_eq!(
        engine.process(&node(), &again, at(30)).await.unwrap(),
        Decision::Known
    );

    let stranger = at_hour(read("/usr/bin/curl", "curl"), 31, "b:3");
    let Decision::Finding(finding) = engine.process(&node(), &stranger, at(31)).await.unwrap()
    else {
        panic!("an unfamiliar process after learning must raise a finding");
    };
    assert_eq!(finding.rule, Rule::UnfamiliarProcessTokenRead);
    assert_eq!(finding.severity, Severity::Medium);
    assert_eq!(finding.process.exe, "/usr/bin/curl");
    assert_eq!(finding.scope.key, "test/payments/Deployment/api/api");
    assert_eq!(finding.baseline.known_values.len(), 1);
    assert_eq!(finding.baseline.known_values[0].exe, "/usr/bin/python3");
    assert_eq!(finding.baseline.scope_first_seen, at(0));
    assert_eq!(finding.baseline.learning_ended_at, at(24));
    assert_eq!(finding.node, "node-a");
    assert_eq!(sent(&engine).len(), 1);
}

/// A scope with more known values than a finding lists: the finding and
/// its email name the latest and count the rest.
#[tokio::test]
async fn many_known_values_capped() {
    let engine = engine("1d", "28d");
    let total = MAX_KNOWN_VALUES + 5;
    for index in 0..total {
        let exe = format!("/opt/tools/tool-{index:02}");
        let mut event = at_hour(read(&exe, "tool"), 0, &format!("b:{index}"));
        event.observed_at += chrono::Duration::minutes(i64::try_from(index).unwrap());
        engine
            .process(&node(), &event, event.observed_at)
            .await
            .unwrap();
    }

    let stranger = at_hour(read("/usr/bin/curl", "curl"), 30, "b:curl");
    let Decision::Finding(finding) = engine.process(&node(), &stranger, at(30)).await.unwrap()
    else {
        panic!("an unfamiliar process after learning must raise a finding");
    };

    let baseline = &finding.baseline;
    assert_eq!(baseline.known_values.len(), MAX_KNOWN_VALUES);
    assert_eq!(baseline.known_values_omitted, 5);
    assert_eq!(
        baseline.known_values[0].exe,
        format!("/opt/tools/tool-{:02}", total - 1)
    );
    assert_eq!(
        baseline.known_values[MAX_KNOWN_VALUES - 1].exe,
        "/opt/tools/tool-05"
    );

    let email = render_alert(&Alert::Finding(&finding)).email;
    let tail = "/opt/tools/tool-05 (tool), last seen 2026-12-01T00:05:00+00:00\n    \
                and 5 more, seen earlier\n";
    assert!(email.contains(tail), "{email}");
}

#[tokio::test]
async fn new_value_during_learning_silent() {
    let engine = engine("1d", "28d");
    let first = at_hour(read("/usr/bin/python3", "python3"), 0, "b:1");
    engine.process(&node(), &first, at(0)).await.unwrap();
    let second = at_hour(read("/usr/bin/curl", "curl"), 23, "b:2");
    assert_eq!(
        engine.process(&node(), &second, at(23)).await.unwrap(),
        Decision::Learned
    );
    let later = at_hour(read("/usr/bin/curl", "curl"), 25, "b:3");
    assert_eq!(
        engine.process(&node(), &later, at(25)).await.unwrap(),
        Decision::Known
    );
    assert!(sent(&engine).is_empty());
}

#[tokio::test]
async fn zero_learning_learns_first_only() {
    let engine = engine("0s", "28d");
    let first = at_hour(read("/usr/bin/python3", "python3"), 0, "b:1");
    assert_eq!(
        engine.process(&node(), &first, at(0)).await.unwrap(),
        Decision::Learned
    );
    let second = at_hour(read("/usr/bin/curl", "curl"), 0, "b:2");
    let decision = engine.process(&node(), &second, at(0)).await.unwrap();
    assert!(matches!(decision, Decision::Finding(_)), "got {decision:?}");
}

#[tokio::test]
async fn forgotten_value_alerts_again() {
    let engine = engine("0s", "2d");
    let seed = at_hour(read("/usr/bin/python3", "python3"), 0, "b:1");
    engine.process(&node(), &seed, at(0)).await.unwrap();
    let curl = at_hour(read("/usr/bin/curl", "curl"), 1, "b:2");
    assert!(matches!(
        engine.process(&node(), &curl, at(1)).await.unwrap(),
        Decision::Finding(_)
    ));

    // Keep the scope alive with python3, and let curl go unseen for 49 hours.
    let keep = at_hour(read("/usr/bin/python3", "python3"), 40, "b:3");
    engine.process(&node(), &keep, at(40)).await.unwrap();
    let back = at_hour(read("/usr/bin/curl", "curl"), 50, "b:4");
    let decision = engine.process(&node(), &back, at(50)).await.unwrap();
    let Decision::Finding(finding) = decision else {
        panic!("a forgotten value must alert again, got {decision:?}");
    };
    assert_eq!(finding.event_id, "b:4");
    assert_eq!(sent(&engine).len(), 2);
}

#[tokio::test]
async fn duplicate_event_one_finding() {
    let engine = engine("0s", "28d");
    let seed = at_hour(read("/usr/bin/python3", "python3"), 0, "b:1");
    engine.process(&node(), &seed, at(0)).await.unwrap();
    let curl = at_hour(read("/usr/bin/curl", "curl"), 1, "b:2");
    let first = engine.process(&node(), &curl, at(1)).await.unwrap();
    assert!(matches!(first, Decision::Finding(_)));
    let retry = engine.process(&node(), &curl, at(1)).await.unwrap();
    assert_eq!(retry, Decision::Duplicate);
    let seed_retry = engine.process(&node(), &seed, at(0)).await.unwrap();
    assert_eq!(seed_retry, Decision::Duplicate);
    assert_eq!(sent(&engine).len(), 1);
}

#[tokio::test]
async fn failed_alert_sent_on_retry() {
    let engine = engine("0s", "28d");
    let seed = at_hour(read("/usr/bin/python3", "python3"), 0, "b:1");
    engine.process(&node(), &seed, at(0)).await.unwrap();

    *engine.notifier().failing.lock().unwrap() = true;
    let curl = at_hour(read("/usr/bin/curl", "curl"), 1, "b:2");
    let error = engine.process(&node(), &curl, at(1)).await.unwrap_err();
    assert!(matches!(error, EngineError::Notify { .. }));

    *engine.notifier().failing.lock().unwrap() = false;
    let retry = engine.process(&node(), &curl, at(1)).await.unwrap();
    assert!(matches!(retry, Decision::Finding(_)), "got {retry:?}");
    assert_eq!(sent(&engine).len(), 1);
    assert_eq!(
        engine.process(&node(), &curl, at(1)).await.unwrap(),
        Decision::Duplicate
    );
}

#[tokio::test]
async fn repeats_counted_not_resent() {
    let engine = engine("0s", "28d");
    engine
        .process(&node(), &at_hour(read("/bin/a", "a"), 0, "b:1"), at(0))
        .await
        .unwrap();
    let Decision::Finding(finding) = engine
        .process(&node(), &at_hour(read("/bin/b", "b"), 1, "b:2"), at(1))
        .await
        .unwrap()
    else {
        panic!("expected a finding");
    };
    let mut repeat = at_hour(read("/bin/b", "b"), 2, "b:3");
    repeat.count = 4;
    assert_eq!(
        engine.process(&node(), &repeat, at(2)).await.unwrap(),
        Decision::Known
    );
    let stored = engine
        .store()
        .get_finding(&finding.finding_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.finding.repeat_count, 4);
    assert_eq!(sent(&engine).len(), 1);
}

#[tokio::test]
async fn host_read_alerts_without_learning() {
    let engine = engine("7d", "28d");
    let mut host = at_hour(read("/usr/bin/cat", "cat"), 0, "b:1");
    host.container = None;
    host.token.host_path = true;
    let Decision::Finding(finding) = engine.process(&node(), &host, at(0)).await.unwrap() else {
        panic!("a host read must raise a finding even while learning");
    };
    assert_eq!(finding.rule, Rule::HostProcessTokenRead);
    assert_eq!(finding.severity, Severity::High);
}

#[tokio::test]
async fn kubelet_host_read_allowed() {
    let engine = engine("0s", "28d");
    let mut kubelet = at_hour(read("/usr/bin/kubelet", "kubelet"), 0, "b:1");
    kubelet.container = None;
    assert_eq!(
        engine.process(&node(), &kubelet, at(0)).await.unwrap(),
        Decision::Allowed
    );
}

#[tokio::test]
async fn batch_invalid_event_isolated() {
    let engine = engine("0s", "28d");
    let events = vec![
        Ok(at_hour(read("/bin/a", "a"), 0, "b:1")),
        Err(("b:2".to_owned(), "invalid count".to_owned())),
        Ok(at_hour(read("/bin/b", "b"), 0, "b:3")),
    ];
    let (outcomes, findings) = engine.process_batch(&node(), &events, at(0)).await;
    let statuses: Vec<_> = outcomes.iter().map(|o| o.status).collect();
    assert_eq!(
        statuses,
        vec![
            OutcomeStatus::Accepted,
            OutcomeStatus::Invalid,
            OutcomeStatus::Accepted
        ]
    );
    assert_eq!(outcomes[1].reason.as_deref(), Some("invalid count"));
    assert_eq!(findings.len(), 1);
    assert_eq!(
        outcomes[2].finding_id.as_deref(),
        Some(findings[0].finding_id.as_str())
    );
}

#[tokio::test]
async fn batch_repeated_id_once() {
    let engine = engine("0s", "28d");
    let events = vec![
        Ok(at_hour(read("/bin/a", "a"), 0, "b:1")),
        Ok(at_hour(read("/bin/b", "b"), 0, "b:2")),
        Ok(at_hour(read("/bin/c", "c"), 0, "b:2")),
    ];
    let (outcomes, findings) = engine.process_batch(&node(), &events, at(0)).await;
    assert_eq!(outcomes.len(), 3);
    assert_eq!(outcomes[1].status, OutcomeStatus::Accepted);
    assert_eq!(outcomes[2].status, OutcomeStatus::Duplicate);
    assert_eq!(outcomes[2].event_id, "b:2");
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].process.exe, "/bin/b");
    assert_eq!(sent(&engine).len(), 1);
}

#[tokio::test]
async fn alert_escapes_process_strings() {
    let mut finding = sample_finding().await;
    finding.process.exe = "/tmp/x\nSeverity: low".to_owned();
    finding.process.comm = "\u{1b}[2J".to_owned();
    finding.process.args = vec!["\u{202e}fdp.exe".to_owned()];
    finding.token.path = "/t\r\n".to_owned();
    finding.baseline.known_values[0].exe = "/bin/\u{7}".to_owned();
    let alert = render_alert(&Alert::Finding(&finding));

    let severities: Vec<_> = alert
        .email
        .lines()
        .filter(|line| line.starts_with("Severity:"))
        .collect();
    assert_eq!(severities, vec!["Severity: medium"]);
    assert!(alert.email.contains("  exe:     /tmp/x\\nSeverity: low\n"));
    assert!(alert.email.contains("  comm:    \\u{1b}[2J\n"));
    assert!(alert.email.contains("  args:    \\u{202e}fdp.exe\n"));
    assert!(alert.email.contains("token at /t\\r\\n."));
    assert!(alert.email.contains("    /bin/\\u{7} (python3)"));
    assert!(!alert.default.contains('\n'));
    assert!(!alert.subject.contains('\u{1b}'));
}

#[tokio::test]
async fn memory_store_conformance() {
    conformance::new_then_known(&MemoryStore::new()).await;
    conformance::forgotten_value_is_new(&MemoryStore::new()).await;
    conformance::refresh_keeps_value(&MemoryStore::new()).await;
    conformance::scope_first_seen_kept(&MemoryStore::new()).await;
    conformance::scope_lives_with_values(&MemoryStore::new()).await;
    conformance::forgotten_scope_not_revived(&MemoryStore::new()).await;
    conformance::known_values_listed(&MemoryStore::new()).await;
    conformance::findings_round_trip(&MemoryStore::new(), sample_finding().await).await;
    conformance::findings_replaced_by_version(&MemoryStore::new(), sample_finding().await).await;
}

#[tokio::test]
async fn memory_store_correlation_conformance() {
    use conformance::correlation;
    correlation::exchanges_by_time(&MemoryStore::new()).await;
    correlation::reads_by_time(&MemoryStore::new()).await;
    correlation::profile_marks_new_values(&MemoryStore::new()).await;
    correlation::egress_learned(&MemoryStore::new()).await;
    correlation::exchange_findings_fold(&MemoryStore::new()).await;
}

/// A finding raised by `/usr/bin/curl` in the sample scope.
pub(crate) async fn sample_finding() -> Finding {
    let engine = engine("0s", "28d");
    engine
        .process(
            &node(),
            &at_hour(read("/usr/bin/python3", "python3"), 0, "b:1"),
            at(0),
        )
        .await
        .unwrap();
    let curl = at_hour(read("/usr/bin/curl", "curl"), 1, "b:2");
    match engine.process(&node(), &curl, at(1)).await.unwrap() {
        Decision::Finding(finding) => *finding,
        other => panic!("expected a finding, got {other:?}"),
    }
}

#[tokio::test]
async fn finding_json_has_contract_fields() {
    let json = serde_json::to_value(sample_finding().await).unwrap();
    for pointer in [
        "/finding_id",
        "/rule",
        "/severity",
        "/detected_at",
        "/token/kind",
        "/token/path",
        "/process/pid",
        "/process/comm",
        "/process/exe",
        "/process/parent",
        "/container/id",
        "/pod/uid",
        "/pod/namespace",
        "/pod/name",
        "/pod/service_account",
        "/scope/key",
        "/baseline/known_values",
        "/baseline/known_values_omitted",
        "/node",
        "/cluster",
    ] {
        assert!(
            json.pointer(pointer).is_some(),
            "finding JSON lacks {pointer}"
        );
    }
    assert_eq!(json["rule"], "unfamiliar_process_token_read");
    assert_eq!(json["mitre"]["tactic"]["id"], "TA0006");
    assert_eq!(json["mitre"]["technique"]["id"], "T1552.001");
    let again: Finding = serde_json::from_value(json).unwrap();
    assert_eq!(again, sample_finding().await);
}

#[tokio::test]
async fn email_text_exact() {
    let mut finding = sample_finding().await;
    finding.detected_at = at(1);
    let alert = render_alert(&Alert::Finding(&finding));
    let expected =
        include_str!("../../tests/fixtures/email.txt").replace("{finding_id}", &finding.finding_id);
    assert_eq!(alert.email, expected);
    assert_eq!(
        alert.subject,
        "[tokenguard MEDIUM] curl read the AWS token of pod payments/api-6d8f7b9c5-x2k4q"
    );
    assert_eq!(
        alert.attributes,
        vec![
            ("severity", "medium".to_owned()),
            ("cluster", "test".to_owned()),
            ("rule", "unfamiliar_process_token_read".to_owned()),
            ("namespace", "payments".to_owned()),
        ]
    );
    assert!(
        alert
            .default
            .starts_with("tokenguard MEDIUM: /usr/bin/curl (curl) read the irsa")
    );
}

#[test]
fn finding_id_stable_and_distinct() {
    let a = BaselineKey::of(&read("/bin/a", "a"));
    let b = BaselineKey::of(&read("/bin/b", "b"));
    assert_eq!(finding_id(&a, "e1"), finding_id(&a, "e1"));
    assert_ne!(finding_id(&a, "e1"), finding_id(&a, "e2"));
    assert_ne!(finding_id(&a, "e1"), finding_id(&b, "e1"));
    assert_eq!(finding_id(&a, "e1").len(), 35);
}

#[test]
fn zero_forget_rejected() {
    let error = Policy::from_settings("0s", "0s").unwrap_err();
    assert!(error.to_string().contains("forget-after"));
    let _ = Duration::ZERO;
}
