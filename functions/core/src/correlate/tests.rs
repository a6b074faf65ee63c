use std::time::Duration;

use chrono::{DateTime, Utc};
use tokenguard_schema::{Node, TokenKind, TokenRead};

use super::*;
use crate::cloudtrail::tests::fixture;
use crate::cloudtrail::{Parsed, parse_record};
use crate::conformance::{at, sample_read};
use crate::engine::tests::{RecordingNotifier, SentAlert};
use crate::store::{BaselineStore, MemoryStore};
use crate::{Decision, Engine, ExchangeDecision, Finding, Policy};

pub(crate) type TestEngine = Engine<MemoryStore, RecordingNotifier, MemoryStore>;

pub(crate) const CLUSTER: &str = "test";
pub(crate) const AWS_CLI: &str =
    "aws-cli/2.22.4 md/awscrt#0.23.1 ua/2.0 os/linux#6.8.0 md/arch#x86_64";

pub(crate) fn engine() -> TestEngine {
    let policy = Policy::from_settings("1h", "28d").unwrap();
    let correlation = CorrelationPolicy {
        egress: EgressCidrs::parse("198.51.100.0/24").unwrap(),
        ..CorrelationPolicy::default()
    };
    Engine::with_correlation(
        MemoryStore::new(),
        RecordingNotifier::default(),
        policy,
        MemoryStore::new(),
        correlation,
    )
}

pub(crate) fn node() -> Node {
    Node {
        name: "node-a".to_owned(),
        boot_id: "boot-1".to_owned(),
        agent_version: None,
        hook: None,
    }
}

pub(crate) fn minutes(base: DateTime<Utc>, minutes: i64) -> DateTime<Utc> {
    base + chrono::Duration::minutes(minutes)
}

pub(crate) fn read_at(exe: &str, time: DateTime<Utc>, id: &str) -> TokenRead {
    let comm = exe.rsplit('/').next().unwrap();
    let mut read = sample_read(exe, comm);
    read.observed_at = time;
    read.event_id = id.to_owned();
    read
}

/// The IRSA exchange fixture at `time`, with event id `id`.
pub(crate) fn irsa_at(time: DateTime<Utc>, id: &str) -> Exchange {
    let mut record = fixture("irsa-success");
    record["eventTime"] = serde_json::Value::from(time.to_rfc3339());
    record["eventID"] = serde_json::Value::from(id);
    match parse_record(&record).unwrap() {
        Parsed::Exchange(exchange) => *exchange,
        other => panic!("expected an exchange, got {other:?}"),
    }
}

pub(crate) fn from_address(mut exchange: Exchange, address: &str, agent: &str) -> Exchange {
    exchange.source_address = Some(address.to_owned());
    exchange.user_agent = Some(agent.to_owned());
    exchange
}

/// Learns python3 as the workload's reader and the SDK's exchanges as its
/// profile during the first hour, then raises a finding for curl at hour 2.
async fn curl_finding(engine: &TestEngine) -> Finding {
    let python = read_at("/usr/bin/python3", at(0), "b:1");
    engine.process(&node(), &python, at(0)).await.unwrap();
    engine
        .process_exchange(irsa_at(at(0), "x-learn"), CLUSTER, at(0))
        .await
        .unwrap();
    let curl = read_at("/usr/bin/curl", at(2), "b:2");
    match engine.process(&node(), &curl, at(2)).await.unwrap() {
        Decision::Finding(finding) => *finding,
        other => panic!("expected a finding, got {other:?}"),
    }
}

async fn stored(engine: &TestEngine, finding_id: &str) -> Finding {
    engine
        .store()
        .get_finding(finding_id)
        .await
        .unwrap()
        .expect("finding stored")
        .finding
}

fn alerts(engine: &TestEngine) -> Vec<SentAlert> {
    engine.notifier().alerts.lock().unwrap().clone()
}

#[tokio::test]
async fn read_then_exchange_escalates() {
    let engine = engine();
    let finding = curl_finding(&engine).await;
    assert_eq!(finding.severity, Severity::Medium);

    let later = from_address(irsa_at(minutes(at(2), 10), "x-1"), "198.51.100.20", AWS_CLI);
    let decision = engine
        .process_exchange(later.clone(), CLUSTER, minutes(at(2), 20))
        .await
        .unwrap();
    assert_eq!(
        decision,
        ExchangeDecision::Matched {
            findings: vec![finding.finding_id.clone()],
            escalated: vec![finding.finding_id.clone()],
        }
    );

    let updated = stored(&engine, &finding.finding_id).await;
    assert_eq!(updated.severity, Severity::High);
    let calls = &updated.correlation.as_ref().unwrap().calls;
    assert_eq!(calls.len(), 1);
    assert!(calls[0].signals.new_user_agent);
    assert!(!calls[0].signals.outside_egress);
    assert_eq!(updated.changes.len(), 1);
    assert!(
        updated.changes[0].reason.contains("10m0s after the read"),
        "{:?}",
        updated.changes
    );

    let sent = alerts(&engine);
    assert_eq!(sent.len(), 2, "{sent:?}");
    let SentAlert::Escalation(follow_up, from) = &sent[1] else {
        panic!("expected a follow-up, got {:?}", sent[1]);
    };
    assert_eq!(*from, Severity::Medium);
    assert_eq!(follow_up.severity, Severity::High);
}

#[tokio::test]
async fn familiar_exchange_attached_quietly() {
    let engine = engine();
    let finding = curl_finding(&engine).await;
    let sdk = irsa_at(minutes(at(2), 3), "x-1");
    engine
        .process_exchange(sdk.clone(), CLUSTER, minutes(at(2), 10))
        .await
        .unwrap();
    let updated = stored(&engine, &finding.finding_id).await;
    assert_eq!(updated.severity, Severity::Medium);
    assert_eq!(updated.correlation.unwrap().calls.len(), 1);
    assert_eq!(alerts(&engine).len(), 1, "no follow-up without a rise");
}

#[tokio::test]
async fn exchange_then_read_matches() {
    let engine = engine();
    let python = read_at("/usr/bin/python3", at(0), "b:1");
    engine.process(&node(), &python, at(0)).await.unwrap();
    engine
        .process_exchange(irsa_at(at(0), "x-learn"), CLUSTER, at(0))
        .await
        .unwrap();

    let early = from_address(irsa_at(minutes(at(2), 4), "x-1"), "203.0.113.9", AWS_CLI);
    let decision = engine
        .process_exchange(early.clone(), CLUSTER, minutes(at(2), 5))
        .await
        .unwrap();
    assert!(
        matches!(decision, ExchangeDecision::Finding(_)),
        "{decision:?}"
    );

    // The agent's post was late: the read lands after its exchange.
    let curl = read_at("/usr/bin/curl", at(2), "b:2");
    let Decision::Finding(finding) = engine
        .process(&node(), &curl, minutes(at(2), 6))
        .await
        .unwrap()
    else {
        panic!("expected a finding");
    };
    assert_eq!(finding.severity, Severity::Critical);
    let calls = &finding.correlation.as_ref().unwrap().calls;
    assert_eq!(calls[0].event_id, "x-1");
    assert!(calls[0].signals.outside_egress);
    let sent = alerts(&engine);
    let SentAlert::Finding(first) = sent.last().unwrap() else {
        panic!("expected a first alert, got {sent:?}");
    };
    assert_eq!(
        first.severity,
        Severity::Critical,
        "the first alert carries the match"
    );
}

#[tokio::test]
async fn outside_egress_critical() {
    let engine = engine();
    let finding = curl_finding(&engine).await;
    let outside = irsa_at(minutes(at(2), 1), "x-1");
    let outside = from_address(outside, "203.0.113.9", "Boto3/1.35.10 md/Botocore#1.35.10");
    engine
        .process_exchange(outside.clone(), CLUSTER, minutes(at(2), 8))
        .await
        .unwrap();
    let updated = stored(&engine, &finding.finding_id).await;
    assert_eq!(updated.severity, Severity::Critical);
    assert!(
        updated.changes[0]
            .reason
            .contains("outside the cluster's egress")
    );
}

#[tokio::test]
async fn exchange_without_read_is_finding() {
    let engine = engine();
    let python = read_at("/usr/bin/python3", at(0), "b:1");
    engine.process(&node(), &python, at(0)).await.unwrap();

    let stolen = from_address(irsa_at(at(5), "x-1"), "203.0.113.9", AWS_CLI);
    let ExchangeDecision::Finding(finding) = engine
        .process_exchange(stolen.clone(), CLUSTER, at(5))
        .await
        .unwrap()
    else {
        panic!("an exchange from outside with no read must raise a finding");
    };
    assert_eq!(finding.rule, Rule::ExchangeWithoutRead);
    assert_eq!(finding.severity, Severity::High);
    assert_eq!(finding.egress, vec!["198.51.100.0/24".to_owned()]);

    let again = from_address(irsa_at(minutes(at(5), 30), "x-2"), "203.0.113.9", AWS_CLI);
    let decision = engine
        .process_exchange(again.clone(), CLUSTER, minutes(at(5), 30))
        .await
        .unwrap();
    assert_eq!(
        decision,
        ExchangeDecision::Folded {
            finding_id: finding.finding_id.clone()
        }
    );
    let exchange_alerts = alerts(&engine)
        .into_iter()
        .filter(|alert| matches!(alert, SentAlert::Exchange(_)))
        .count();
    assert_eq!(exchange_alerts, 1, "repeats are folded, never re-alerted");
}

#[tokio::test]
async fn unknown_egress_judges_nothing() {
    let policy = Policy::from_settings("1h", "28d").unwrap();
    let engine: TestEngine = Engine::with_correlation(
        MemoryStore::new(),
        RecordingNotifier::default(),
        policy,
        MemoryStore::new(),
        CorrelationPolicy::default(),
    );
    let far = from_address(irsa_at(at(5), "x-1"), "203.0.113.9", AWS_CLI);
    let decision = engine
        .process_exchange(far.clone(), CLUSTER, at(5))
        .await
        .unwrap();
    assert!(
        matches!(decision, ExchangeDecision::Stored { .. }),
        "{decision:?}"
    );
    assert!(alerts(&engine).is_empty());
}

#[tokio::test]
async fn familiar_read_teaches_egress() {
    let engine = engine();
    let python = read_at("/usr/bin/python3", at(0), "b:1");
    engine.process(&node(), &python, at(0)).await.unwrap();
    engine
        .process_exchange(irsa_at(at(0), "x-learn"), CLUSTER, at(0))
        .await
        .unwrap();

    // The workload's own SDK, right after its familiar read, from a new NAT
    // address.
    let familiar = read_at("/usr/bin/python3", at(3), "b:2");
    engine.process(&node(), &familiar, at(3)).await.unwrap();
    let nat = from_address(
        irsa_at(minutes(at(3), 0), "x-1"),
        "192.0.2.50",
        "Boto3/1.35.10 md/Botocore#1.35.10 ua/2.0 os/linux#6.1.112 md/arch#x86_64 lang/python#3.12.7 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.35.10",
    );
    let decision = engine
        .process_exchange(nat.clone(), CLUSTER, at(3))
        .await
        .unwrap();
    let ExchangeDecision::Stored { learned_egress, .. } = decision else {
        panic!("expected a stored exchange, got {decision:?}");
    };
    assert!(learned_egress);

    // Later, with no read near it, the same address is inside.
    let later = from_address(irsa_at(at(6), "x-2"), "192.0.2.50", AWS_CLI);
    let decision = engine
        .process_exchange(later.clone(), CLUSTER, at(6))
        .await
        .unwrap();
    let ExchangeDecision::Stored { signals, .. } = decision else {
        panic!("expected a stored exchange, got {decision:?}");
    };
    assert!(!signals.outside_egress);
}

#[tokio::test]
async fn first_egress_learned_without_cidrs() {
    let policy = Policy::from_settings("1h", "28d").unwrap();
    let engine: TestEngine = Engine::with_correlation(
        MemoryStore::new(),
        RecordingNotifier::default(),
        policy,
        MemoryStore::new(),
        CorrelationPolicy::default(),
    );
    let python = read_at("/usr/bin/python3", at(0), "b:1");
    engine.process(&node(), &python, at(0)).await.unwrap();
    let nat = from_address(irsa_at(at(0), "x-1"), "192.0.2.50", AWS_CLI);
    let decision = engine.process_exchange(nat, CLUSTER, at(0)).await.unwrap();
    let ExchangeDecision::Stored { learned_egress, .. } = decision else {
        panic!("expected a stored exchange, got {decision:?}");
    };
    assert!(learned_egress, "the SDK's exchange after a familiar read");

    // With one address learned, the egress is known: another address with no
    // read near it is outside.
    let far = from_address(irsa_at(at(3), "x-2"), "203.0.113.9", AWS_CLI);
    let decision = engine.process_exchange(far, CLUSTER, at(3)).await.unwrap();
    assert!(
        matches!(decision, ExchangeDecision::Finding(_)),
        "{decision:?}"
    );
    let near = from_address(irsa_at(at(4), "x-3"), "192.0.2.50", AWS_CLI);
    let decision = engine.process_exchange(near, CLUSTER, at(4)).await.unwrap();
    let ExchangeDecision::Stored { signals, .. } = decision else {
        panic!("expected a stored exchange, got {decision:?}");
    };
    assert!(!signals.outside_egress);
}

#[tokio::test]
async fn pod_identity_matches_exact_pod() {
    let engine = engine();
    let mut python = read_at("/usr/bin/python3", at(0), "b:1");
    python.token.kind = TokenKind::PodIdentity;
    engine.process(&node(), &python, at(0)).await.unwrap();

    let mut this_pod = read_at("/usr/bin/curl", at(2), "b:2");
    this_pod.token.kind = TokenKind::PodIdentity;
    let uid = "7c1d5a3e-2b4f-4e8a-9c6d-0f1e2d3c4b5a";
    this_pod.pod.as_mut().unwrap().uid = uid.to_owned();
    let Decision::Finding(this_finding) = engine.process(&node(), &this_pod, at(2)).await.unwrap()
    else {
        panic!("expected a finding");
    };
    let mut other_pod = read_at("/usr/bin/wget", at(2), "b:3");
    other_pod.token.kind = TokenKind::PodIdentity;
    other_pod.pod.as_mut().unwrap().uid = "00000000-0000-4000-8000-000000000000".to_owned();
    let Decision::Finding(other_finding) =
        engine.process(&node(), &other_pod, at(2)).await.unwrap()
    else {
        panic!("expected a finding");
    };

    let mut record = fixture("podidentity-sts-assumerole");
    record["eventTime"] = serde_json::Value::from(minutes(at(2), 2).to_rfc3339());
    let Parsed::Exchange(exchange) = parse_record(&record).unwrap() else {
        panic!("expected an exchange");
    };
    let decision = engine
        .process_exchange(*exchange, CLUSTER, minutes(at(2), 9))
        .await
        .unwrap();
    let ExchangeDecision::Matched { findings, .. } = decision else {
        panic!("expected a match, got {decision:?}");
    };
    assert_eq!(findings, vec![this_finding.finding_id.clone()]);
    let matched = stored(&engine, &this_finding.finding_id).await;
    let call = &matched.correlation.unwrap().calls[0];
    assert_eq!(call.pod_uid.as_deref(), Some(uid));
    assert!(
        stored(&engine, &other_finding.finding_id)
            .await
            .correlation
            .is_none()
    );
}

#[tokio::test]
async fn other_subjects_never_match() {
    let engine = engine();
    let finding = curl_finding(&engine).await;

    let mut other_account = from_address(irsa_at(minutes(at(2), 2), "x-1"), "203.0.113.9", AWS_CLI);
    other_account.service_account = Some("billing".to_owned());
    let decision = engine
        .process_exchange(other_account.clone(), CLUSTER, minutes(at(2), 5))
        .await
        .unwrap();
    assert!(
        !matches!(decision, ExchangeDecision::Matched { .. }),
        "{decision:?}"
    );

    // The same namespace and service account names in another cluster.
    let other_cluster = from_address(irsa_at(minutes(at(2), 2), "x-2"), "203.0.113.9", AWS_CLI);
    let decision = engine
        .process_exchange(other_cluster.clone(), "staging", minutes(at(2), 5))
        .await
        .unwrap();
    assert!(
        !matches!(decision, ExchangeDecision::Matched { .. }),
        "{decision:?}"
    );

    // Outside the window.
    let late = from_address(irsa_at(minutes(at(2), 16), "x-3"), "203.0.113.9", AWS_CLI);
    let decision = engine
        .process_exchange(late.clone(), CLUSTER, minutes(at(2), 20))
        .await
        .unwrap();
    assert!(
        !matches!(decision, ExchangeDecision::Matched { .. }),
        "{decision:?}"
    );

    let untouched = stored(&engine, &finding.finding_id).await;
    assert!(untouched.correlation.is_none());
    assert_eq!(untouched.severity, Severity::Medium);
}

#[tokio::test]
async fn failed_exchange_raises_one_step() {
    let engine = engine();
    let finding = curl_finding(&engine).await;
    let mut denied = irsa_at(minutes(at(2), 1), "x-1");
    denied.error_code = Some("AccessDenied".to_owned());
    denied.source_address = Some("198.51.100.20".to_owned());
    engine
        .process_exchange(denied.clone(), CLUSTER, minutes(at(2), 5))
        .await
        .unwrap();
    let updated = stored(&engine, &finding.finding_id).await;
    assert_eq!(updated.severity, Severity::High);
    assert_eq!(
        updated.correlation.unwrap().calls[0].outcome,
        "failed: AccessDenied"
    );
}

#[tokio::test]
async fn duplicate_event_counted_once() {
    let engine = engine();
    let finding = curl_finding(&engine).await;
    let exchange = from_address(irsa_at(minutes(at(2), 1), "x-1"), "198.51.100.20", AWS_CLI);
    engine
        .process_exchange(exchange.clone(), CLUSTER, minutes(at(2), 5))
        .await
        .unwrap();
    let again = engine
        .process_exchange(exchange.clone(), CLUSTER, minutes(at(2), 6))
        .await
        .unwrap();
    assert_eq!(again, ExchangeDecision::Duplicate);
    let updated = stored(&engine, &finding.finding_id).await;
    let calls = updated.correlation.unwrap().calls;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].count, 1);
    assert_eq!(
        alerts(&engine).len(),
        2,
        "one first alert and one follow-up"
    );
}

#[tokio::test]
async fn repeated_calls_fold() {
    let engine = engine();
    let finding = curl_finding(&engine).await;
    for (minute, id) in [(1, "x-1"), (2, "x-2"), (3, "x-3")] {
        let exchange = from_address(irsa_at(minutes(at(2), minute), id), "203.0.113.9", AWS_CLI);
        engine
            .process_exchange(exchange, CLUSTER, minutes(at(2), 9))
            .await
            .unwrap();
    }
    let updated = stored(&engine, &finding.finding_id).await;
    let calls = updated.correlation.unwrap().calls;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].count, 3);
    assert_eq!(calls[0].last_event_time, minutes(at(2), 3));
    assert_eq!(alerts(&engine).len(), 2, "repeats never re-alert");
}

#[tokio::test]
async fn learning_hides_new_agents() {
    let engine = engine();
    let first = irsa_at(at(0), "x-1");
    engine
        .process_exchange(first.clone(), CLUSTER, at(0))
        .await
        .unwrap();
    let cli = from_address(irsa_at(minutes(at(0), 30), "x-2"), "198.51.100.20", AWS_CLI);
    let ExchangeDecision::Stored { signals, .. } = engine
        .process_exchange(cli.clone(), CLUSTER, minutes(at(0), 30))
        .await
        .unwrap()
    else {
        panic!("expected a stored exchange");
    };
    assert!(!signals.new_user_agent, "learning keeps new agents quiet");

    let other = from_address(irsa_at(at(2), "x-3"), "198.51.100.20", "curl/8.5.0");
    let ExchangeDecision::Stored { signals, .. } = engine
        .process_exchange(other.clone(), CLUSTER, at(2))
        .await
        .unwrap()
    else {
        panic!("expected a stored exchange");
    };
    assert!(signals.new_user_agent);
    assert!(!signals.new_session_name, "botocore-session-# was learned");
}

#[test]
fn severity_rules() {
    let call = |outcome: &str, signals: CallSignals| {
        let mut call = MatchedCall::of(&irsa_at(at(0), "x"), signals);
        call.outcome = outcome.to_owned();
        call
    };
    let quiet = CallSignals::default();
    let outside = CallSignals {
        outside_egress: true,
        ..quiet
    };
    let new_agent = CallSignals {
        new_user_agent: true,
        ..quiet
    };
    let medium = Severity::Medium;
    assert_eq!(correlated_severity(medium, &[]), Severity::Medium);
    assert_eq!(
        correlated_severity(medium, &[call("success", quiet)]),
        Severity::Medium
    );
    assert_eq!(
        correlated_severity(medium, &[call("success", new_agent)]),
        Severity::High
    );
    assert_eq!(
        correlated_severity(medium, &[call("success", outside)]),
        Severity::Critical
    );
    assert_eq!(
        correlated_severity(medium, &[call("failed: AccessDenied", outside)]),
        Severity::High,
        "a failed call from outside raises one step, not to critical"
    );
    assert_eq!(
        correlated_severity(
            medium,
            &[
                call("success", new_agent),
                call("failed: AccessDenied", quiet)
            ]
        ),
        Severity::Critical
    );
    assert_eq!(
        correlated_severity(Severity::High, &[call("failed: x", quiet)]),
        Severity::Critical
    );
}

#[test]
fn subjects_keyed_apart() {
    let read = sample_read("/usr/bin/curl", "curl");
    let subjects = Subject::of_read(&read);
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].key(), "test/payments/payments-api");

    let mut pod_identity = read.clone();
    pod_identity.token.kind = TokenKind::PodIdentity;
    let keys: Vec<_> = Subject::of_read(&pod_identity)
        .iter()
        .map(Subject::key)
        .collect();
    assert_eq!(keys, vec!["test/payments/payments-api", "test/~eks-auth"]);

    let mut unnamed = read;
    unnamed.pod.as_mut().unwrap().service_account = None;
    assert!(Subject::of_read(&unnamed).is_empty());
}

#[test]
fn window_bounds() {
    let policy = CorrelationPolicy {
        window: Duration::from_secs(600),
        ..CorrelationPolicy::default()
    };
    assert!(in_window(at(0), minutes(at(0), 10), &policy));
    assert!(!in_window(at(0), minutes(at(0), 11), &policy));
    assert!(in_window(at(0), minutes(at(0), -2), &policy));
    assert!(!in_window(at(0), minutes(at(0), -3), &policy));
}

#[tokio::test]
async fn escalation_alert_says_what_changed() {
    let engine = engine();
    let finding = curl_finding(&engine).await;
    let outside = from_address(irsa_at(minutes(at(2), 4), "x-1"), "203.0.113.9", AWS_CLI);
    engine
        .process_exchange(outside.clone(), CLUSTER, minutes(at(2), 9))
        .await
        .unwrap();
    let escalated = stored(&engine, &finding.finding_id).await;
    let alert = crate::render_alert(&crate::Alert::Escalation {
        finding: &escalated,
        from: Severity::Medium,
    });
    assert!(
        alert
            .subject
            .starts_with("[tokenguard CRITICAL, was medium] curl read"),
        "{}",
        alert.subject
    );
    assert!(
        alert
            .default
            .contains("; raised to critical: sts:AssumeRoleWithWebIdentity from 203.0.113.9")
    );
    assert!(
        alert.email.contains(
            "What changed\nSeverity rose from medium to critical since the first alert.\n"
        )
    );
    assert!(alert.email.contains(
        "CloudTrail exchanges by the service account payments/payments-api of cluster test\n"
    ));
    assert!(alert.email.contains("    source:     203.0.113.9\n"));
    assert!(
        alert
            .email
            .contains("    unusual:    outside the cluster's egress, new user agent\n")
    );
    assert!(alert.email.contains("4m0s after the read"));
}

#[tokio::test]
async fn exchange_alert_names_address() {
    let engine = engine();
    let python = read_at("/usr/bin/python3", at(0), "b:1");
    engine.process(&node(), &python, at(0)).await.unwrap();
    let mut stolen = from_address(irsa_at(at(5), "x-1"), "203.0.113.9", "curl/8.5.0\r\nX: 1");
    stolen.session_name = Some("pwn".to_owned());
    let ExchangeDecision::Finding(finding) = engine
        .process_exchange(stolen.clone(), CLUSTER, at(5))
        .await
        .unwrap()
    else {
        panic!("expected a finding");
    };
    let alert = crate::render_alert(&crate::Alert::Exchange(&finding));
    assert_eq!(
        alert.subject,
        "[tokenguard HIGH] Token used from 203.0.113.9: payments/payments-api of cluster test"
    );
    assert!(alert.email.contains("Known egress: 198.51.100.0/24\n"));
    assert!(
        alert
            .email
            .contains("    user agent: curl/8.5.0\\r\\nX: 1\n"),
        "{}",
        alert.email
    );
    assert!(alert.email.contains("    session:    pwn\n"));
    assert!(
        alert
            .attributes
            .contains(&("rule", "exchange_without_read".to_owned()))
    );
    assert!(
        alert
            .attributes
            .contains(&("namespace", "payments".to_owned()))
    );
}
