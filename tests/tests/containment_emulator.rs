//! Containment end to end: the detector binary under cargo-lambda's emulator,
//! against moto, reaching a Kubernetes API stand-in over TLS with its own CA
//! and checking the EKS bearer tokens it sends.
//!
//! One stack serves every test. Namespaces `payments`, `billing` and `audit`
//! are in enforce mode and `web` in dry-run; every action is taken from
//! `medium`, so one unfamiliar read is enough. The stand-in's RBAC grants
//! nothing in `billing`, and `audit` contains a quarantine NetworkPolicy that
//! allows egress. Tests keep apart by pod name.

use std::sync::atomic::{AtomicU32, Ordering};

use chrono::Utc;
use serde_json::json;
use tokenguard_core::conformance::sample_read;
use tokenguard_core::contain::{Action, ContainmentOutcome, latest_decision};
use tokenguard_e2e::detector::{DetectorStack, StackOptions};
use tokenguard_e2e::kube_tls::{KubeTls, Resource, pod_fixture};
use tokenguard_e2e::moto::FAKE_KEY;
use tokenguard_schema::{Outcome, TokenRead};
use tokio::sync::OnceCell;

const CLUSTER: &str = "prod";
/// The node `batch_body` reports reads from.
const NODE: &str = "ip-10-0-1-2.eu-west-1.compute.internal";

struct Fixture {
    stack: DetectorStack,
    kube: KubeTls,
}

static FIXTURE: OnceCell<Fixture> = OnceCell::const_new();

fn server_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the API stand-in")
    })
}

async fn fixture() -> &'static Fixture {
    FIXTURE
        .get_or_init(|| async {
            // Each test has its own runtime, which stops when the test ends,
            // so the stand-in runs on one that lives as long as the process.
            let kube = server_runtime()
                .spawn(KubeTls::start())
                .await
                .expect("the API stand-in task runs")
                .expect("the API stand-in starts");
            kube.grant_containment("payments");
            kube.grant_containment("web");
            kube.grant_containment("audit");
            kube.add(Resource::NetworkPolicies, policy_allowing_egress("audit"));
            kube.verify_signatures(CLUSTER, FAKE_KEY, FAKE_KEY);
            let ca_file =
                std::env::temp_dir().join(format!("tokenguard-kube-ca-{}.pem", std::process::id()));
            std::fs::write(&ca_file, kube.ca_pem()).unwrap();
            let endpoints = format!("{CLUSTER}={}|{}", kube.url(), ca_file.display());
            let stack = DetectorStack::start_with(StackOptions {
                learning_period: "0s".to_owned(),
                clusters: vec![CLUSTER.to_owned()],
                extra_env: vec![
                    (
                        "TOKENGUARD_CONTAINMENT_MODES",
                        "payments=enforce,web=dry-run,billing=enforce,audit=enforce".to_owned(),
                    ),
                    (
                        "TOKENGUARD_CONTAINMENT_ACTIONS",
                        "kill=never,quarantine=medium,delete=medium".to_owned(),
                    ),
                    ("TOKENGUARD_KUBERNETES_ENDPOINTS", endpoints),
                ],
                ..StackOptions::default()
            })
            .await
            .expect("the detector stack starts");
            Fixture { stack, kube }
        })
        .await
}

/// Builds a `tokenguard-quarantine` policy in `namespace` as someone could
/// have edited it to allow all egress.
fn policy_allowing_egress(namespace: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": "tokenguard-quarantine", "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {"tokenguard.io/quarantine": "true"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]
        }
    })
}

/// Returns a pod name that no other test of this process uses.
fn unique_pod(test: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{test}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A read by `exe` in pod `namespace/pod` with uid `uid`, observed now.
fn read(namespace: &str, pod: &str, uid: &str, exe: &str, id: &str) -> TokenRead {
    let comm = exe.rsplit('/').next().unwrap();
    let mut read = sample_read(exe, comm);
    read.cluster = CLUSTER.to_owned();
    read.event_id = format!("{pod}:{id}");
    read.observed_at = Utc::now();
    let reported = read.pod.as_mut().unwrap();
    reported.namespace = Some(namespace.to_owned());
    reported.name = Some(pod.to_owned());
    reported.uid = uid.to_owned();
    reported.owner = None;
    read
}

/// Adds pod `namespace/pod` on the reporting node, learns python3 as its
/// reader, then posts curl's read, and returns curl's outcome.
async fn unfamiliar_read(fixture: &Fixture, namespace: &str, pod: &str, uid: &str) -> Outcome {
    fixture.kube.add_pod(pod_fixture(namespace, pod, uid, NODE));
    let learned = read(namespace, pod, uid, "/usr/bin/python3", "1");
    fixture.stack.post_reads(vec![learned]).await.unwrap();
    let curl = read(namespace, pod, uid, "/usr/bin/curl", "2");
    let outcomes = fixture.stack.post_reads(vec![curl]).await.unwrap();
    outcomes.into_iter().next().unwrap()
}

async fn finding(fixture: &Fixture, outcome: &Outcome) -> tokenguard_core::Finding {
    let finding_id = outcome.finding_id.as_deref().expect("a finding was raised");
    fixture
        .stack
        .finding(finding_id)
        .await
        .unwrap()
        .expect("the finding is stored")
}

/// The requests about `pod` or the NetworkPolicies of `namespace`.
fn requests_for(fixture: &Fixture, namespace: &str, pod: &str) -> Vec<String> {
    let policies = format!("/namespaces/{namespace}/networkpolicies");
    fixture
        .kube
        .requests()
        .into_iter()
        .filter(|request| request.path.contains(pod) || request.path.contains(&policies))
        .map(|request| {
            format!(
                "{} {} -> {:?}",
                request.method, request.path, request.status
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_deletes_and_quarantines() {
    let fixture = fixture().await;
    let pod = unique_pod("enforce");
    let uid = "7f3c2a1e-0000-4000-8000-000000000001";
    let outcome = unfamiliar_read(fixture, "payments", &pod, uid).await;
    let finding = finding(fixture, &outcome).await;

    for action in [Action::Quarantine, Action::DeletePod] {
        let decision = latest_decision(&finding, action).expect("a decision per action");
        assert!(
            matches!(decision.outcome, ContainmentOutcome::Acted { .. }),
            "{decision:?}"
        );
    }
    // With a grace period the API server marks the pod and the kubelet
    // removes it later.
    let deleted = fixture
        .kube
        .pod("payments", &pod)
        .is_none_or(|pod| pod["metadata"]["deletionTimestamp"].is_string());
    assert!(deleted, "the pod was deleted");
    let delete = fixture
        .kube
        .requests()
        .into_iter()
        .find(|request| request.method == "DELETE" && request.path.ends_with(&pod))
        .expect("a DELETE reached the API");
    assert_eq!(delete.status, Some(200));
    let policy = fixture
        .kube
        .object(
            Resource::NetworkPolicies,
            "payments",
            "tokenguard-quarantine",
        )
        .expect("the quarantine policy exists");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["tokenguard.io/quarantine"],
        json!("true")
    );
    assert_eq!(policy["spec"]["policyTypes"], json!(["Egress"]));
    assert!(
        fixture.kube.auth_failures().is_empty(),
        "{:?}",
        fixture.kube.auth_failures()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_touches_nothing() {
    let fixture = fixture().await;
    let pod = unique_pod("rehearsal");
    let uid = "7f3c2a1e-0000-4000-8000-000000000002";
    let outcome = unfamiliar_read(fixture, "web", &pod, uid).await;
    let finding = finding(fixture, &outcome).await;

    let decision = latest_decision(&finding, Action::DeletePod).unwrap();
    assert!(
        matches!(decision.outcome, ContainmentOutcome::WouldAct { .. }),
        "{decision:?}"
    );
    assert!(
        fixture.kube.pod("web", &pod).is_some(),
        "the pod is still there"
    );
    let writes: Vec<String> = requests_for(fixture, "web", &pod)
        .into_iter()
        .filter(|request| !request.starts_with("GET"))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreated_pod_left_alone() {
    let fixture = fixture().await;
    let pod = unique_pod("recreated");
    let reported_uid = "7f3c2a1e-0000-4000-8000-000000000003";
    let outcome = {
        // The pod the agent saw is gone; one of the same name replaced it.
        fixture.kube.add_pod(pod_fixture(
            "payments",
            &pod,
            "7f3c2a1e-0000-4000-8000-0000000000ff",
            NODE,
        ));
        let learned = read("payments", &pod, reported_uid, "/usr/bin/python3", "1");
        fixture.stack.post_reads(vec![learned]).await.unwrap();
        let curl = read("payments", &pod, reported_uid, "/usr/bin/curl", "2");
        fixture
            .stack
            .post_reads(vec![curl])
            .await
            .unwrap()
            .remove(0)
    };
    let finding = finding(fixture, &outcome).await;
    let decision = latest_decision(&finding, Action::DeletePod).unwrap();
    let ContainmentOutcome::Skipped { reason } = &decision.outcome else {
        panic!("expected a skip: {decision:?}");
    };
    assert!(
        reason.contains("the agent and the API disagree"),
        "{reason}"
    );
    assert!(fixture.kube.pod("payments", &pod).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_namespace_recorded() {
    let fixture = fixture().await;
    let pod = unique_pod("forbidden");
    let uid = "7f3c2a1e-0000-4000-8000-000000000004";
    let outcome = unfamiliar_read(fixture, "billing", &pod, uid).await;
    let finding = finding(fixture, &outcome).await;
    let decision = latest_decision(&finding, Action::DeletePod).unwrap();
    let ContainmentOutcome::Failed { error } = &decision.outcome else {
        panic!("expected a failure: {decision:?}");
    };
    assert!(error.contains("HTTP 403 Forbidden"), "{error}");
    assert!(fixture.kube.pod("billing", &pod).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_allowing_egress_fails_quarantine() {
    let fixture = fixture().await;
    let pod = unique_pod("egress-allowed");
    let uid = "7f3c2a1e-0000-4000-8000-000000000005";
    let before = fixture
        .kube
        .object(Resource::NetworkPolicies, "audit", "tokenguard-quarantine")
        .unwrap();
    let outcome = unfamiliar_read(fixture, "audit", &pod, uid).await;
    let finding = finding(fixture, &outcome).await;

    let decision = latest_decision(&finding, Action::Quarantine).unwrap();
    let ContainmentOutcome::Failed { error } = &decision.outcome else {
        panic!("expected a failure: {decision:?}");
    };
    let expected = format!(
        "quarantine pod audit/{pod} (uid {uid}): label tokenguard.io/quarantine=true, egress \
         denied by NetworkPolicy tokenguard-quarantine: NetworkPolicy audit/tokenguard-quarantine \
         in cluster prod already exists but does not deny all egress of quarantined pods: it \
         allows egress through 1 rule. "
    );
    assert!(error.starts_with(&expected), "{error}");
    assert!(
        error.contains("`kubectl -n audit delete networkpolicy tokenguard-quarantine`"),
        "{error}"
    );
    let after = fixture
        .kube
        .object(Resource::NetworkPolicies, "audit", "tokenguard-quarantine");
    assert_eq!(after, Some(before), "the policy is left as it was");
}
