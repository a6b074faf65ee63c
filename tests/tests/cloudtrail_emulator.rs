//! The detector and CloudTrail functions under cargo-lambda's emulator,
//! against DynamoDB, SNS, SQS and EKS in moto: reads go to the detector's
//! Function URL, CloudTrail records go to the CloudTrail function as SQS
//! batches of EventBridge events, as the deployed event source mapping
//! sends them.
//!
//! One stack serves every test. Clusters `prod-e2e` and `staging-e2e` exist
//! in moto, so the function resolves their OIDC issuers with EKS
//! `DescribeCluster`. Tests keep apart by namespace, and each reads the
//! alerts of its namespace from its own queue.

use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use tokenguard_core::conformance::sample_read;
use tokenguard_core::{Finding, Severity};
use tokenguard_e2e::detector::{DetectorStack, StackOptions};
use tokenguard_e2e::fixtures::{cloudtrail_record, eventbridge_event, irsa_exchange, sqs_batch};
use tokenguard_schema::{TokenKind, TokenRead};
use tokio::sync::OnceCell;

const PROD: &str = "prod-e2e";
const STAGING: &str = "staging-e2e";
const SERVICE_ACCOUNT: &str = "api";
const BOTO3: &str = "Boto3/1.35.10 md/Botocore#1.35.10 ua/2.0 os/linux#6.1.112 md/arch#x86_64 \
                     lang/python#3.12.7 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.35.10";
const AWS_CLI: &str = "aws-cli/2.22.4 md/awscrt#0.23.1 ua/2.0 os/linux#6.8.0 md/arch#x86_64";
/// Inside `TOKENGUARD_EGRESS_CIDRS` of the stack.
const NAT: &str = "198.51.100.20";
const OUTSIDE: &str = "203.0.113.9";

static STACK: OnceCell<DetectorStack> = OnceCell::const_new();

async fn stack() -> &'static DetectorStack {
    STACK
        .get_or_init(|| async {
            DetectorStack::start_with(StackOptions {
                learning_period: "1h".to_owned(),
                clusters: vec![PROD.to_owned(), STAGING.to_owned()],
                egress_cidrs: "198.51.100.0/24".to_owned(),
                cloudtrail: true,
                ..StackOptions::default()
            })
            .await
            .expect("the detector and CloudTrail stack starts")
        })
        .await
}

/// A namespace no other test of this process uses, and its alert queue.
async fn namespace(stack: &DetectorStack, test: &str) -> (String, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let namespace = format!("{test}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let queue = stack
        .filtered_alert_queue(&namespace, json!({ "namespace": [namespace] }))
        .await
        .unwrap();
    (namespace, queue)
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A read by `exe` in Deployment `api` of `namespace` in cluster `prod-e2e`.
fn read(namespace: &str, exe: &str, id: &str, observed_at: DateTime<Utc>) -> TokenRead {
    let comm = exe.rsplit('/').next().unwrap();
    let mut read = sample_read(exe, comm);
    read.cluster = PROD.to_owned();
    read.event_id = format!("{namespace}:{id}");
    read.observed_at = observed_at;
    let pod = read.pod.as_mut().unwrap();
    pod.namespace = Some(namespace.to_owned());
    pod.service_account = Some(SERVICE_ACCOUNT.to_owned());
    read
}

fn exchange(
    stack: &DetectorStack,
    cluster: &str,
    namespace: &str,
    id: &str,
    time: DateTime<Utc>,
    source: &str,
    agent: &str,
) -> Value {
    let issuer = stack.issuer(cluster).expect("the cluster exists in moto");
    let event_id = format!("{namespace}-{id}");
    irsa_exchange(
        issuer,
        namespace,
        SERVICE_ACCOUNT,
        &event_id,
        &rfc3339(time),
        source,
        agent,
    )
}

/// Sends records to the CloudTrail function as one SQS batch and returns the
/// message ids it reported as failed.
async fn send(stack: &DetectorStack, bodies: Vec<String>) -> Vec<String> {
    let (status, response) = stack.invoke_cloudtrail(sqs_batch(&bodies)).await.unwrap();
    assert_eq!(status, 200, "response: {response}");
    response["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("not an SQS batch response: {response}"))
        .iter()
        .map(|failure| failure["itemIdentifier"].as_str().unwrap().to_owned())
        .collect()
}

async fn send_records(stack: &DetectorStack, records: &[Value]) {
    let bodies = records
        .iter()
        .map(|record| eventbridge_event(record).to_string())
        .collect();
    assert_eq!(send(stack, bodies).await, Vec::<String>::new());
}

/// Learns python3 as the workload's reader and Boto3 from the NAT address as
/// its way of exchanging the token, three hours ago.
async fn learn(stack: &DetectorStack, namespace: &str) -> DateTime<Utc> {
    let base = Utc::now() - Duration::hours(3);
    let python = read(namespace, "/usr/bin/python3", "learn", base);
    stack.post_reads(vec![python]).await.unwrap();
    let sdk = exchange(stack, PROD, namespace, "learn", base, NAT, BOTO3);
    send_records(stack, &[sdk]).await;
    base
}

/// Posts an unfamiliar read by curl at `at` and returns its finding id.
async fn curl_finding(stack: &DetectorStack, namespace: &str, at: DateTime<Utc>) -> String {
    let outcomes = stack
        .post_reads(vec![read(namespace, "/usr/bin/curl", "curl", at)])
        .await
        .unwrap();
    outcomes[0]
        .finding_id
        .clone()
        .expect("an unfamiliar read after learning raises a finding")
}

async fn finding(stack: &DetectorStack, finding_id: &str) -> Finding {
    stack
        .finding(finding_id)
        .await
        .unwrap()
        .expect("finding stored")
}

fn subjects(alerts: &[Value]) -> Vec<String> {
    alerts
        .iter()
        .map(|alert| alert["Subject"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_then_exchange_escalates() {
    let stack = stack().await;
    let (namespace, queue) = namespace(stack, "escalate").await;
    learn(stack, &namespace).await;
    let read_at = Utc::now() - Duration::minutes(30);
    let finding_id = curl_finding(stack, &namespace, read_at).await;
    assert_eq!(stack.alerts(&queue).await.unwrap().len(), 1);

    let later = exchange(
        stack,
        PROD,
        &namespace,
        "cli",
        read_at + Duration::minutes(10),
        NAT,
        AWS_CLI,
    );
    send_records(stack, &[later]).await;

    let escalated = finding(stack, &finding_id).await;
    assert_eq!(escalated.severity, Severity::High);
    let calls = &escalated.correlation.as_ref().unwrap().calls;
    assert_eq!(calls.len(), 1);
    assert!(calls[0].signals.new_user_agent);
    assert_eq!(calls[0].source_address.as_deref(), Some(NAT));
    let follow_ups = stack.alerts(&queue).await.unwrap();
    assert_eq!(follow_ups.len(), 1, "one follow-up: {follow_ups:?}");
    let subject = &subjects(&follow_ups)[0];
    assert!(
        subject.starts_with("[tokenguard HIGH, was medium]"),
        "{subject}"
    );
    let message: Value =
        serde_json::from_str(follow_ups[0]["Message"].as_str().unwrap()).unwrap_or(Value::Null);
    let text = message["default"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| follow_ups[0]["Message"].as_str().unwrap().to_owned());
    assert!(text.contains("raised to high"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_then_read_critical() {
    let stack = stack().await;
    let (namespace, queue) = namespace(stack, "before").await;
    learn(stack, &namespace).await;
    let read_at = Utc::now() - Duration::minutes(30);

    // CloudTrail lands first; the agent's post comes after.
    let stolen = exchange(
        stack,
        PROD,
        &namespace,
        "stolen",
        read_at + Duration::minutes(4),
        OUTSIDE,
        AWS_CLI,
    );
    send_records(stack, &[stolen]).await;
    let finding_id = curl_finding(stack, &namespace, read_at).await;

    let read_finding = finding(stack, &finding_id).await;
    assert_eq!(read_finding.severity, Severity::Critical);
    let call = &read_finding.correlation.as_ref().unwrap().calls[0];
    assert!(call.signals.outside_egress);
    assert_eq!(call.event_id, format!("{namespace}-stolen"));
    let alerts = subjects(&stack.alerts(&queue).await.unwrap());
    assert!(
        alerts
            .iter()
            .any(|s| s.starts_with("[tokenguard CRITICAL] curl read")),
        "{alerts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_outside_without_read() {
    let stack = stack().await;
    let (namespace, queue) = namespace(stack, "noread").await;
    learn(stack, &namespace).await;
    let at = Utc::now() - Duration::minutes(50);
    let first = exchange(stack, PROD, &namespace, "1", at, OUTSIDE, AWS_CLI);
    let second = exchange(
        stack,
        PROD,
        &namespace,
        "2",
        at + Duration::minutes(20),
        OUTSIDE,
        AWS_CLI,
    );
    send_records(stack, &[first]).await;
    send_records(stack, &[second]).await;

    let alerts = stack.alerts(&queue).await.unwrap();
    assert_eq!(
        alerts.len(),
        1,
        "the repeat is folded: {:?}",
        subjects(&alerts)
    );
    let subject = &subjects(&alerts)[0];
    assert!(
        subject.starts_with(&format!(
            "[tokenguard HIGH] Token used from {OUTSIDE}: {namespace}/api"
        )),
        "{subject}"
    );
    assert!(subject.contains(OUTSIDE), "{subject}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_identity_reaches_exact_pod() {
    let stack = stack().await;
    let (namespace, _queue) = namespace(stack, "podid").await;
    learn(stack, &namespace).await;
    let read_at = Utc::now() - Duration::minutes(30);
    let this_uid = "6f1e2d3c-4b5a-4c6d-8e7f-0a1b2c3d4e5f";

    let mut this_pod = read(&namespace, "/usr/bin/curl", "curl", read_at);
    this_pod.token.kind = TokenKind::PodIdentity;
    this_pod.pod.as_mut().unwrap().uid = this_uid.to_owned();
    let mut other_pod = read(&namespace, "/usr/bin/wget", "wget", read_at);
    other_pod.token.kind = TokenKind::PodIdentity;
    other_pod.pod.as_mut().unwrap().uid = "00000000-0000-4000-8000-000000000001".to_owned();
    let outcomes = stack.post_reads(vec![this_pod, other_pod]).await.unwrap();
    let this_finding = outcomes[0].finding_id.clone().unwrap();
    let other_finding = outcomes[1].finding_id.clone().unwrap();

    let mut assume_role = cloudtrail_record("podidentity-sts-assumerole");
    assume_role["eventID"] = json!(format!("{namespace}-podid"));
    assume_role["eventTime"] = json!(rfc3339(read_at + Duration::minutes(2)));
    for tag in assume_role["requestParameters"]["tags"]
        .as_array_mut()
        .unwrap()
    {
        let value = match tag["key"].as_str().unwrap() {
            "eks-cluster-name" => PROD.to_owned(),
            "kubernetes-namespace" => namespace.clone(),
            "kubernetes-service-account" => SERVICE_ACCOUNT.to_owned(),
            "kubernetes-pod-uid" => this_uid.to_owned(),
            _ => continue,
        };
        tag["value"] = json!(value);
    }
    send_records(stack, &[assume_role]).await;

    let matched = finding(stack, &this_finding).await;
    let call = &matched.correlation.as_ref().expect("matched").calls[0];
    assert_eq!(call.pod_uid.as_deref(), Some(this_uid));
    assert_eq!(call.api.as_str(), "sts:AssumeRole");
    assert!(finding(stack, &other_finding).await.correlation.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_subjects_never_match() {
    let stack = stack().await;
    let (namespace, _queue) = namespace(stack, "apart").await;
    learn(stack, &namespace).await;
    let read_at = Utc::now() - Duration::minutes(30);
    let finding_id = curl_finding(stack, &namespace, read_at).await;
    let soon = read_at + Duration::minutes(2);

    let mut other_account = exchange(stack, PROD, &namespace, "sa", soon, OUTSIDE, AWS_CLI);
    let subject = format!("system:serviceaccount:{namespace}:billing");
    other_account["userIdentity"]["userName"] = json!(subject);
    let other_cluster = exchange(
        stack, STAGING, &namespace, "staging", soon, OUTSIDE, AWS_CLI,
    );
    let mut unknown_cluster = exchange(stack, PROD, &namespace, "unknown", soon, OUTSIDE, AWS_CLI);
    unknown_cluster["userIdentity"]["identityProvider"] = json!(
        "arn:aws:iam::111122223333:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/FFFF0000"
    );
    send_records(stack, &[other_account, other_cluster, unknown_cluster]).await;

    let untouched = finding(stack, &finding_id).await;
    assert!(
        untouched.correlation.is_none(),
        "{:?}",
        untouched.correlation
    );
    assert_eq!(untouched.severity, Severity::Medium);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_exchange_raises_one_step() {
    let stack = stack().await;
    let (namespace, _queue) = namespace(stack, "failed").await;
    learn(stack, &namespace).await;
    let read_at = Utc::now() - Duration::minutes(30);
    let finding_id = curl_finding(stack, &namespace, read_at).await;

    let mut denied = exchange(
        stack,
        PROD,
        &namespace,
        "denied",
        read_at + Duration::minutes(1),
        NAT,
        BOTO3,
    );
    denied["errorCode"] = json!("AccessDenied");
    denied["errorMessage"] = json!("Not authorized to perform sts:AssumeRoleWithWebIdentity");
    denied["responseElements"] = Value::Null;
    send_records(stack, &[denied]).await;

    let raised = finding(stack, &finding_id).await;
    assert_eq!(raised.severity, Severity::High);
    let call = &raised.correlation.as_ref().unwrap().calls[0];
    assert_eq!(call.outcome, "failed: AccessDenied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_event_counted_once() {
    let stack = stack().await;
    let (namespace, queue) = namespace(stack, "dup").await;
    learn(stack, &namespace).await;
    let read_at = Utc::now() - Duration::minutes(30);
    let finding_id = curl_finding(stack, &namespace, read_at).await;
    stack.alerts(&queue).await.unwrap();

    let cli = exchange(
        stack,
        PROD,
        &namespace,
        "cli",
        read_at + Duration::minutes(3),
        NAT,
        AWS_CLI,
    );
    // EventBridge delivers at least once: twice in one batch, then again.
    send_records(stack, &[cli.clone(), cli.clone()]).await;
    send_records(stack, &[cli]).await;

    let escalated = finding(stack, &finding_id).await;
    let calls = &escalated.correlation.as_ref().unwrap().calls;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].count, 1);
    assert_eq!(
        stack.alerts(&queue).await.unwrap().len(),
        1,
        "one follow-up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_skip_alone() {
    let stack = stack().await;
    let (namespace, _queue) = namespace(stack, "malformed").await;
    learn(stack, &namespace).await;
    let read_at = Utc::now() - Duration::minutes(30);
    let finding_id = curl_finding(stack, &namespace, read_at).await;

    let mut no_time = exchange(stack, PROD, &namespace, "bad", read_at, OUTSIDE, AWS_CLI);
    no_time.as_object_mut().unwrap().remove("eventTime");
    let mut wrong_type = exchange(stack, PROD, &namespace, "bad2", read_at, OUTSIDE, AWS_CLI);
    wrong_type["userIdentity"]["userName"] = json!(["not", "a", "string"]);
    let good = exchange(
        stack,
        PROD,
        &namespace,
        "good",
        read_at + Duration::minutes(2),
        OUTSIDE,
        AWS_CLI,
    );
    let bodies = vec![
        "not json".to_owned(),
        json!({"detail-type": "EC2 Instance State-change Notification", "detail": {}}).to_string(),
        eventbridge_event(&no_time).to_string(),
        eventbridge_event(&wrong_type).to_string(),
        eventbridge_event(&cloudtrail_record("unrelated-getcalleridentity")).to_string(),
        eventbridge_event(&good).to_string(),
    ];
    let failures = send(stack, bodies).await;
    assert!(
        failures.is_empty(),
        "bad records never fail the batch: {failures:?}"
    );

    let escalated = finding(stack, &finding_id).await;
    assert_eq!(
        escalated.severity,
        Severity::Critical,
        "the good record still counts"
    );
}
