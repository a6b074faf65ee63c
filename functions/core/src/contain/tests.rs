use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use tokenguard_schema::{Node, Owner};

use super::*;
use crate::conformance::{at, sample_read};
use crate::engine::tests::{RecordingNotifier, SentAlert};
use crate::store::{BaselineStore, MemoryStore};
use crate::{Decision, Engine, Policy};

const POD: &str = "api-6d8f7b9c5-x2k4q";
const NAMESPACE: &str = "payments";
const UID: &str = "pod-uid-1";
const NODE: &str = "node-a";

/// A Kubernetes API in memory that records the calls that change state.
#[derive(Debug, Default, Clone)]
struct FakeApi {
    pods: Arc<Mutex<HashMap<String, PodState>>>,
    controllers: Arc<Mutex<HashMap<String, ControllerState>>>,
    calls: Arc<Mutex<Vec<String>>>,
    /// An error every delete returns.
    delete_error: Option<ApiError>,
}

impl FakeApi {
    /// The sample read's pod, ready, on `node-a`, of ReplicaSet
    /// `api-6d8f7b9c5` of Deployment `api` with 3 ready pods.
    fn with_pod() -> FakeApi {
        let api = FakeApi::default();
        api.put_pod(PodState {
            uid: UID.to_owned(),
            node_name: Some(NODE.to_owned()),
            controller: Some(owner("ReplicaSet", "api-6d8f7b9c5")),
            mirror: false,
            ready: true,
            deleting: false,
        });
        api.put_controller(
            "ReplicaSet",
            "api-6d8f7b9c5",
            ControllerState {
                replicas: 3,
                ready_replicas: 3,
                controller: Some(owner("Deployment", "api")),
            },
        );
        api.put_controller(
            "Deployment",
            "api",
            ControllerState {
                replicas: 3,
                ready_replicas: 3,
                controller: None,
            },
        );
        api
    }

    fn put_pod(&self, pod: PodState) {
        self.pods.lock().unwrap().insert(POD.to_owned(), pod);
    }

    fn put_controller(&self, kind: &str, name: &str, state: ControllerState) {
        self.controllers
            .lock()
            .unwrap()
            .insert(format!("{kind}/{name}"), state);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

fn owner(kind: &str, name: &str) -> OwnerReference {
    OwnerReference {
        kind: kind.to_owned(),
        name: name.to_owned(),
    }
}

impl ClusterApi for FakeApi {
    async fn pod(
        &self,
        _cluster: &str,
        _namespace: &str,
        name: &str,
    ) -> Result<Option<PodState>, ApiError> {
        Ok(self.pods.lock().unwrap().get(name).cloned())
    }

    async fn controller(
        &self,
        _cluster: &str,
        _namespace: &str,
        kind: &str,
        name: &str,
    ) -> Result<Option<ControllerState>, ApiError> {
        Ok(self
            .controllers
            .lock()
            .unwrap()
            .get(&format!("{kind}/{name}"))
            .cloned())
    }

    async fn delete_pod(
        &self,
        _cluster: &str,
        namespace: &str,
        name: &str,
        uid: &str,
        grace_period_seconds: u32,
    ) -> Result<(), ApiError> {
        if let Some(error) = &self.delete_error {
            return Err(error.clone());
        }
        self.calls.lock().unwrap().push(format!(
            "delete {namespace}/{name} uid={uid} grace={grace_period_seconds}"
        ));
        Ok(())
    }

    async fn quarantine_pod(
        &self,
        _cluster: &str,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<(), ApiError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("quarantine {namespace}/{name} uid={uid}"));
        Ok(())
    }
}

fn with_modes(modes: &str) -> ContainmentPolicy {
    ContainmentPolicy {
        modes: ContainmentPolicy::parse_modes("modes", modes).unwrap(),
        ..ContainmentPolicy::default()
    }
}

fn enforce(namespace: &str) -> ContainmentPolicy {
    with_modes(&format!("{namespace}=enforce"))
}

/// The finding of curl's read in the sample pod, raised at hour 2 after
/// python3 was learned.
async fn finding() -> Finding {
    let engine = Engine::new(
        MemoryStore::new(),
        RecordingNotifier::default(),
        Policy::from_settings("1h", "28d").unwrap(),
    );
    let node = node();
    let learned = sample_read("/usr/bin/python3", "python3");
    engine.process(&node, &learned, at(0)).await.unwrap();
    let mut curl = sample_read("/usr/bin/curl", "curl");
    curl.observed_at = at(0) + Duration::hours(2);
    match engine
        .process(&node, &curl, curl.observed_at)
        .await
        .unwrap()
    {
        Decision::Finding(finding) => *finding,
        other => panic!("expected a finding, got {other:?}"),
    }
}

fn node() -> Node {
    Node {
        name: NODE.to_owned(),
        boot_id: "boot-1".to_owned(),
        agent_version: None,
        hook: None,
    }
}

async fn critical_finding() -> Finding {
    let mut finding = finding().await;
    finding.severity = Severity::Critical;
    finding
}

fn now() -> DateTime<Utc> {
    at(0) + Duration::hours(2)
}

fn outcome(decisions: &[ContainmentDecision], action: Action) -> &ContainmentOutcome {
    &decisions
        .iter()
        .find(|decision| decision.action == action)
        .unwrap_or_else(|| panic!("no {} decision in {decisions:?}", action.as_str()))
        .outcome
}

fn skip_reason(decisions: &[ContainmentDecision], action: Action) -> String {
    match outcome(decisions, action) {
        ContainmentOutcome::Skipped { reason } => reason.clone(),
        other => panic!("expected {} skipped, got {other:?}", action.as_str()),
    }
}

#[tokio::test]
async fn off_by_default() {
    let api = FakeApi::with_pod();
    let containment = Containment::new(
        ContainmentPolicy::default(),
        api.clone(),
        MemoryRateLimiter::default(),
    );
    let decisions = containment
        .respond(&critical_finding().await, Trigger::AgentRead, now())
        .await;
    assert!(decisions.is_empty(), "{decisions:?}");
    assert!(api.calls().is_empty());
}

#[tokio::test]
async fn dry_run_acts_on_nothing() {
    let api = FakeApi::with_pod();
    let policy = with_modes("*=dry-run");
    let containment = Containment::new(policy, api.clone(), MemoryRateLimiter::default());
    let decisions = containment
        .respond(&critical_finding().await, Trigger::AgentRead, now())
        .await;
    assert_eq!(decisions.len(), 3, "{decisions:?}");
    for decision in &decisions {
        assert_eq!(decision.mode, Mode::DryRun);
        assert!(
            matches!(decision.outcome, ContainmentOutcome::WouldAct { .. }),
            "{decision:?}"
        );
    }
    assert!(api.calls().is_empty(), "dry run called {:?}", api.calls());
    let mut finding = critical_finding().await;
    finding.containment = decisions;
    assert_eq!(kill_order(&finding), None, "a dry run orders no kill");
}

#[tokio::test]
async fn enforce_acts_by_severity() {
    let api = FakeApi::with_pod();
    let containment = Containment::new(
        enforce(NAMESPACE),
        api.clone(),
        MemoryRateLimiter::default(),
    );

    // A medium finding: kill only.
    let medium = finding().await;
    let decisions = containment
        .respond(&medium, Trigger::AgentRead, now())
        .await;
    assert!(matches!(
        outcome(&decisions, Action::KillProcess),
        ContainmentOutcome::Ordered { .. }
    ));
    assert_eq!(
        skip_reason(&decisions, Action::DeletePod),
        "severity medium is below the delete threshold critical"
    );
    assert!(api.calls().is_empty());

    // A critical finding: all three.
    let decisions = containment
        .respond(&critical_finding().await, Trigger::AgentRead, now())
        .await;
    assert!(matches!(
        outcome(&decisions, Action::Quarantine),
        ContainmentOutcome::Acted { .. }
    ));
    assert!(matches!(
        outcome(&decisions, Action::DeletePod),
        ContainmentOutcome::Acted { .. }
    ));
    assert_eq!(
        api.calls(),
        vec![
            format!("quarantine {NAMESPACE}/{POD} uid={UID}"),
            format!("delete {NAMESPACE}/{POD} uid={UID} grace=5"),
        ]
    );
}

#[tokio::test]
async fn kill_order_names_process() {
    let containment = Containment::new(
        enforce(NAMESPACE),
        FakeApi::with_pod(),
        MemoryRateLimiter::default(),
    );
    let mut finding = finding().await;
    finding.containment = containment
        .respond(&finding, Trigger::AgentRead, now())
        .await;
    assert_eq!(kill_order(&finding), Some((4242, 12345)));
}

#[tokio::test]
async fn protected_namespaces_untouched() {
    for namespace in ["kube-system", "tokenguard", "istio-system"] {
        let api = FakeApi::with_pod();
        let mut policy = with_modes("*=enforce");
        policy.protect("protected", "istio-system").unwrap();
        let containment = Containment::new(policy, api.clone(), MemoryRateLimiter::default());
        let mut finding = critical_finding().await;
        finding.pod.as_mut().unwrap().namespace = Some(namespace.to_owned());
        let decisions = containment
            .respond(&finding, Trigger::AgentRead, now())
            .await;
        for action in Action::ALL {
            assert_eq!(
                skip_reason(&decisions, action),
                format!("namespace {namespace} is protected")
            );
        }
        assert!(api.calls().is_empty());
    }
}

#[tokio::test]
async fn node_pods_skipped() {
    // A DaemonSet pod, known from the agent's report.
    let api = FakeApi::with_pod();
    let containment = Containment::new(
        enforce(NAMESPACE),
        api.clone(),
        MemoryRateLimiter::default(),
    );
    let mut finding = critical_finding().await;
    finding.pod.as_mut().unwrap().owner = Some(Owner {
        kind: "DaemonSet".to_owned(),
        name: "log-shipper".to_owned(),
    });
    let decisions = containment
        .respond(&finding, Trigger::AgentRead, now())
        .await;
    assert!(skip_reason(&decisions, Action::KillProcess).contains("node pods are not contained"));
    assert!(skip_reason(&decisions, Action::DeletePod).contains("DaemonSet log-shipper"));

    // A static pod's mirror, known only from the API.
    let api = FakeApi::with_pod();
    let mut pod = api.pods.lock().unwrap()[POD].clone();
    pod.mirror = true;
    pod.controller = Some(owner("Node", NODE));
    api.put_pod(pod);
    let containment = Containment::new(
        enforce(NAMESPACE),
        api.clone(),
        MemoryRateLimiter::default(),
    );
    let decisions = containment
        .respond(&critical_finding().await, Trigger::AgentRead, now())
        .await;
    assert!(skip_reason(&decisions, Action::DeletePod).contains("static pod's mirror"));
    assert!(api.calls().is_empty());

    // Allowed when node pods may be contained.
    let mut policy = enforce(NAMESPACE);
    policy.contain_node_pods = true;
    let containment = Containment::new(policy, api.clone(), MemoryRateLimiter::default());
    let decisions = containment
        .respond(&critical_finding().await, Trigger::AgentRead, now())
        .await;
    assert!(matches!(
        outcome(&decisions, Action::DeletePod),
        ContainmentOutcome::Acted { .. }
    ));
}

#[tokio::test]
async fn last_healthy_replica_kept() {
    let api = FakeApi::with_pod();
    api.put_controller(
        "Deployment",
        "api",
        ControllerState {
            replicas: 3,
            ready_replicas: 1,
            controller: None,
        },
    );
    let containment = Containment::new(
        enforce(NAMESPACE),
        api.clone(),
        MemoryRateLimiter::default(),
    );
    let decisions = containment
        .respond(&critical_finding().await, Trigger::AgentRead, now())
        .await;
    assert_eq!(
        skip_reason(&decisions, Action::DeletePod),
        "Deployment payments/api would have 0 ready pods left, below the minimum of 1"
    );
    assert!(api.calls().is_empty());

    // A StatefulSet with two ready pods keeps one.
    let api = FakeApi::with_pod();
    let mut pod = api.pods.lock().unwrap()[POD].clone();
    pod.controller = Some(owner("StatefulSet", "db"));
    api.put_pod(pod);
    api.put_controller(
        "StatefulSet",
        "db",
        ControllerState {
            replicas: 2,
            ready_replicas: 2,
            controller: None,
        },
    );
    let containment = Containment::new(
        enforce(NAMESPACE),
        api.clone(),
        MemoryRateLimiter::default(),
    );
    let decisions = containment
        .respond(&critical_finding().await, Trigger::AgentRead, now())
        .await;
    assert!(matches!(
        outcome(&decisions, Action::DeletePod),
        ContainmentOutcome::Acted { .. }
    ));
}

#[tokio::test]
async fn claims_must_match_api() {
    let cases = [
        ("gone", None, "no longer exists"),
        (
            "recreated",
            Some(("other-uid", NODE)),
            "has uid other-uid in the API, not the reported pod-uid-1",
        ),
        (
            "moved",
            Some((UID, "node-b")),
            "runs on node node-b in the API, but node node-a reported the read",
        ),
    ];
    for (case, pod, expected) in cases {
        let api = FakeApi::with_pod();
        match pod {
            None => {
                api.pods.lock().unwrap().clear();
            }
            Some((uid, node)) => {
                let mut state = api.pods.lock().unwrap()[POD].clone();
                state.uid = uid.to_owned();
                state.node_name = Some(node.to_owned());
                api.put_pod(state);
            }
        }
        let containment = Containment::new(
            enforce(NAMESPACE),
            api.clone(),
            MemoryRateLimiter::default(),
        );
        let decisions = containment
            .respond(&critical_finding().await, Trigger::AgentRead, now())
            .await;
        let reason = skip_reason(&decisions, Action::DeletePod);
        assert!(reason.contains(expected), "{case}: {reason}");
        assert!(api.calls().is_empty(), "{case}: {:?}", api.calls());
    }
}

#[tokio::test]
async fn api_error_recorded() {
    let mut api = FakeApi::with_pod();
    api.delete_error = Some(ApiError {
        status: Some(409),
        reason: "Conflict".to_owned(),
        message: "Precondition failed: UID in precondition: pod-uid-1, UID in object meta: x"
            .to_owned(),
    });
    let containment = Containment::new(enforce(NAMESPACE), api, MemoryRateLimiter::default());
    let decisions = containment
        .respond(&critical_finding().await, Trigger::AgentRead, now())
        .await;
    let ContainmentOutcome::Failed { error } = outcome(&decisions, Action::DeletePod) else {
        panic!("expected a failed delete: {decisions:?}");
    };
    assert!(
        error.contains("HTTP 409 Conflict: Precondition failed"),
        "{error}"
    );
}

#[tokio::test]
async fn rate_limit_stops_acting() {
    let api = FakeApi::with_pod();
    let mut policy = enforce(NAMESPACE);
    policy.max_actions_per_hour = 2;
    policy.min_severity.remove(&Action::KillProcess);
    let containment = Containment::new(policy, api.clone(), MemoryRateLimiter::default());
    let finding = critical_finding().await;

    // Quarantine and delete take the budget of two.
    let decisions = containment
        .respond(&finding, Trigger::AgentRead, now())
        .await;
    assert!(matches!(
        outcome(&decisions, Action::DeletePod),
        ContainmentOutcome::Acted { .. }
    ));
    let decisions = containment
        .respond(&finding, Trigger::AgentRead, now())
        .await;
    for action in [Action::Quarantine, Action::DeletePod] {
        assert!(
            skip_reason(&decisions, action)
                .starts_with("rate limit reached: 2 actions in cluster test"),
            "{decisions:?}"
        );
    }
    assert_eq!(api.calls().len(), 2);

    // The next hour has a new budget.
    let decisions = containment
        .respond(&finding, Trigger::AgentRead, now() + Duration::hours(1))
        .await;
    assert!(matches!(
        outcome(&decisions, Action::Quarantine),
        ContainmentOutcome::Acted { .. }
    ));
}

#[tokio::test]
async fn concurrent_budget_shared() {
    let limiter = Arc::new(MemoryRateLimiter::default());
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.acquire("prod", 10, now()).await.unwrap() })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        granted += usize::from(task.await.unwrap());
    }
    assert_eq!(granted, 10);
}

#[tokio::test]
async fn escalation_settles_once() {
    let api = FakeApi::with_pod();
    let containment = Containment::new(
        enforce(NAMESPACE),
        api.clone(),
        MemoryRateLimiter::default(),
    );
    let mut finding = finding().await;
    finding.containment = containment
        .respond(&finding, Trigger::AgentRead, now())
        .await;

    // CloudTrail makes it critical later: the pod actions run, the kill
    // stays as ordered.
    finding.severity = Severity::Critical;
    let later = containment
        .respond(&finding, Trigger::Escalation, now() + Duration::minutes(5))
        .await;
    assert!(
        later
            .iter()
            .all(|decision| decision.action != Action::KillProcess),
        "the ordered kill is settled: {later:?}"
    );
    assert!(matches!(
        outcome(&later, Action::DeletePod),
        ContainmentOutcome::Acted { .. }
    ));
    finding.containment.extend(later);
    let again = containment
        .respond(&finding, Trigger::Escalation, now() + Duration::minutes(6))
        .await;
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(api.calls().len(), 2);
}

#[tokio::test]
async fn escalation_never_kills() {
    let containment = Containment::new(
        enforce(NAMESPACE),
        FakeApi::with_pod(),
        MemoryRateLimiter::default(),
    );
    let finding = critical_finding().await;
    let decisions = containment
        .respond(&finding, Trigger::Escalation, now())
        .await;
    assert!(skip_reason(&decisions, Action::KillProcess).contains("only in the answer"));
}

#[tokio::test]
async fn engine_alert_shows_decisions() {
    let api = FakeApi::with_pod();
    let engine = Engine::new(
        MemoryStore::new(),
        RecordingNotifier::default(),
        Policy::from_settings("1h", "28d").unwrap(),
    )
    .with_containment(Containment::new(
        enforce(NAMESPACE),
        api,
        MemoryRateLimiter::default(),
    ));
    let node = node();
    engine
        .process(&node, &sample_read("/usr/bin/python3", "python3"), at(0))
        .await
        .unwrap();
    let mut curl = sample_read("/usr/bin/curl", "curl");
    curl.observed_at = now();
    let Decision::Finding(finding) = engine.process(&node, &curl, now()).await.unwrap() else {
        panic!("expected a finding");
    };
    assert_eq!(kill_order(&finding), Some((4242, 12345)));
    let last = engine.notifier().alerts.lock().unwrap().pop();
    let Some(SentAlert::Finding(alerted)) = last else {
        panic!("expected a finding alert");
    };
    assert_eq!(alerted.containment, finding.containment);
    let email = crate::render_alert(&crate::Alert::Finding(&alerted)).email;
    assert!(
        email.contains(
            "Containment\n  kill (enforce, at medium severity): ordered: SIGKILL to pid 4242 \
             (curl, start time 12345) on node node-a, if it is still the same process\n"
        ),
        "{email}"
    );
    assert!(
        email.contains("  delete (enforce, at medium severity): skipped: severity medium is below"),
        "{email}"
    );
    let stored = engine
        .store()
        .get_finding(&finding.finding_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.finding.containment, finding.containment);
}

/// An exchange from outside the egress landed before the read, so the
/// read's finding turns critical before it is stored. The kill is decided
/// at the read's own severity, and the pod actions again at critical.
#[tokio::test]
async fn earlier_exchange_decides_again() {
    use crate::correlate::tests as correlate;

    let api = FakeApi::with_pod();
    let engine = correlate::engine().with_containment(Containment::new(
        enforce(NAMESPACE),
        api.clone(),
        MemoryRateLimiter::default(),
    ));
    let node = correlate::node();
    let python = correlate::read_at("/usr/bin/python3", at(0), "b:1");
    engine.process(&node, &python, at(0)).await.unwrap();
    let early = correlate::from_address(
        correlate::irsa_at(now() - Duration::minutes(1), "x-1"),
        "203.0.113.9",
        correlate::AWS_CLI,
    );
    engine
        .process_exchange(early, correlate::CLUSTER, now())
        .await
        .unwrap();

    let curl = correlate::read_at("/usr/bin/curl", now(), "b:2");
    let Decision::Finding(finding) = engine.process(&node, &curl, now()).await.unwrap() else {
        panic!("expected a finding");
    };
    assert_eq!(finding.severity, Severity::Critical);
    let decided: Vec<_> = finding
        .containment
        .iter()
        .map(|decision| (decision.action, decision.severity, decision.outcome.label()))
        .collect();
    assert_eq!(
        decided,
        vec![
            (Action::KillProcess, Severity::Medium, "ordered"),
            (Action::Quarantine, Severity::Medium, "skipped"),
            (Action::DeletePod, Severity::Medium, "skipped"),
            (Action::Quarantine, Severity::Critical, "done"),
            (Action::DeletePod, Severity::Critical, "done"),
        ]
    );
    assert_eq!(api.calls().len(), 2, "{:?}", api.calls());
    let stored = engine
        .store()
        .get_finding(&finding.finding_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.finding.containment, finding.containment);
    assert!(stored.notified);
}

#[test]
fn modes_parse() {
    let modes =
        ContainmentPolicy::parse_modes("m", " payments=enforce, web=dry-run,*=dry-run ").unwrap();
    assert_eq!(modes.mode("payments"), Mode::Enforce);
    assert_eq!(modes.mode("web"), Mode::DryRun);
    assert_eq!(modes.mode("other"), Mode::DryRun);
    assert_eq!(modes.enforced().collect::<Vec<_>>(), vec!["payments"]);
    assert_eq!(
        ContainmentPolicy::parse_modes("m", "").unwrap().mode("x"),
        Mode::Off
    );
    let error = ContainmentPolicy::parse_modes("TOKENGUARD_CONTAINMENT_MODES", "payments=on")
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "invalid TOKENGUARD_CONTAINMENT_MODES entry \"payments=on\": expected NAMESPACE=MODE or \
         *=MODE, with MODE off, dry-run or enforce"
    );
}

#[test]
fn thresholds_parse() {
    let mut policy = ContainmentPolicy::default();
    policy
        .parse_min_severity("a", "kill=high, delete=never")
        .unwrap();
    assert_eq!(
        policy.min_severity.get(&Action::KillProcess),
        Some(&Severity::High)
    );
    assert_eq!(
        policy.min_severity.get(&Action::Quarantine),
        Some(&Severity::High)
    );
    assert_eq!(policy.min_severity.get(&Action::DeletePod), None);
    let error = policy.parse_min_severity("a", "shoot=high").unwrap_err();
    assert!(error.to_string().contains("\"shoot=high\""), "{error}");
    assert!(policy.set_grace_period("g", "2h").is_err());
    policy.set_grace_period("g", "30s").unwrap();
    assert_eq!(policy.grace_period_seconds(), 30);
}

#[tokio::test]
async fn kill_report_recorded() {
    let engine = Engine::new(
        MemoryStore::new(),
        RecordingNotifier::default(),
        Policy::from_settings("1h", "28d").unwrap(),
    )
    .with_containment(Containment::new(
        enforce(NAMESPACE),
        FakeApi::with_pod(),
        MemoryRateLimiter::default(),
    ));
    let node = node();
    engine
        .process(&node, &sample_read("/usr/bin/python3", "python3"), at(0))
        .await
        .unwrap();
    let mut curl = sample_read("/usr/bin/curl", "curl");
    curl.observed_at = now();
    let (outcomes, findings) = engine.process_batch(&node, &[Ok(curl)], now()).await;
    assert_eq!(
        outcomes[0].order,
        Some(tokenguard_schema::AgentOrder::Kill {
            pid: 4242,
            start_time: 12345
        })
    );
    let finding_id = findings[0].finding_id.clone();
    let report = |pid: u32, result| tokenguard_schema::ActionReport {
        finding_id: finding_id.clone(),
        order: tokenguard_schema::AgentOrder::Kill {
            pid,
            start_time: 12345,
        },
        result,
        detail: None,
        at: now(),
    };

    // Reports that do not match the order change nothing.
    let mut stranger = node.clone();
    stranger.name = "node-b".to_owned();
    let killed = report(4242, tokenguard_schema::ActionResult::Killed);
    assert!(
        !engine
            .record_report(&stranger, &killed, now())
            .await
            .unwrap()
    );
    let other_pid = report(1, tokenguard_schema::ActionResult::Killed);
    assert!(
        !engine
            .record_report(&node, &other_pid, now())
            .await
            .unwrap()
    );

    assert!(engine.record_report(&node, &killed, now()).await.unwrap());
    let stored = engine
        .store()
        .get_finding(&finding_id)
        .await
        .unwrap()
        .unwrap();
    let decision = latest_decision(&stored.finding, Action::KillProcess).unwrap();
    assert_eq!(
        decision.outcome,
        ContainmentOutcome::Acted {
            detail: format!(
                "the agent sent SIGKILL to pid 4242 (start time 12345) at {}",
                now()
            )
        }
    );
    // The order is settled: a second report is ignored.
    assert!(!engine.record_report(&node, &killed, now()).await.unwrap());
}
