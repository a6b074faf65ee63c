//! The detector binary under cargo-lambda's emulator, driven over its Function
//! URL with real HTTP POSTs, against DynamoDB, SNS and SQS in moto.
//!
//! One emulator and one moto server serve every test of this binary, because
//! the first build takes minutes. Tests keep apart by cluster name: each test
//! uses its own cluster and reads alerts from its own SQS queue, subscribed
//! with a filter policy on the `cluster` attribute.

use std::sync::atomic::{AtomicU32, Ordering};

use chrono::Utc;
use serde_json::{Value, json};
use tokenguard_core::conformance::sample_read;
use tokenguard_e2e::detector::DetectorStack;
use tokenguard_schema::{Outcome, OutcomeStatus, TokenRead};
use tokio::sync::OnceCell;

static STACK: OnceCell<DetectorStack> = OnceCell::const_new();

async fn stack() -> &'static DetectorStack {
    STACK
        .get_or_init(|| async {
            DetectorStack::start("0s")
                .await
                .expect("the detector stack starts")
        })
        .await
}

/// Returns a cluster name that no other test of this process uses.
fn unique_cluster(test: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{test}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Builds a read in Deployment `payments/api` of `cluster`, observed now.
fn read(cluster: &str, exe: &str, comm: &str, event_id: &str) -> TokenRead {
    let mut read = sample_read(exe, comm);
    read.cluster = cluster.to_owned();
    read.event_id = format!("{cluster}:{event_id}");
    read.observed_at = Utc::now();
    read
}

async fn post(stack: &DetectorStack, body: String) -> (u16, String) {
    stack.post(body).await.unwrap()
}

async fn post_batch(stack: &DetectorStack, events: Vec<TokenRead>) -> Vec<Outcome> {
    stack.post_reads(events).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn familiar_then_unfamiliar_alerts() {
    let stack = stack().await;
    let cluster = unique_cluster("familiar");
    let queue = stack.alert_queue(&cluster).await.unwrap();

    let familiar = post_batch(
        stack,
        vec![read(&cluster, "/usr/bin/python3", "python3", "1")],
    )
    .await;
    assert_eq!(familiar.len(), 1);
    assert_eq!(familiar[0].status, OutcomeStatus::Accepted);
    assert_eq!(familiar[0].finding_id, None);
    assert!(
        stack.alerts(&queue).await.unwrap().is_empty(),
        "the first value is learned silently"
    );

    let stranger = post_batch(stack, vec![read(&cluster, "/usr/bin/curl", "curl", "2")]).await;
    assert_eq!(stranger.len(), 1);
    assert_eq!(stranger[0].status, OutcomeStatus::Accepted);
    let finding_id = stranger[0]
        .finding_id
        .clone()
        .expect("the unfamiliar read raises a finding");

    let alerts = stack.alerts(&queue).await.unwrap();
    assert_eq!(alerts.len(), 1, "alerts: {alerts:?}");
    assert_eq!(
        alerts[0]["MessageAttributes"],
        json!({
            "severity": {"Type": "String", "Value": "medium"},
            "cluster": {"Type": "String", "Value": cluster},
            "namespace": {"Type": "String", "Value": "payments"},
            "rule": {"Type": "String", "Value": "unfamiliar_process_token_read"},
        })
    );
    assert_eq!(
        alerts[0]["Message"],
        format!(
            "tokenguard MEDIUM: /usr/bin/curl (curl) read the irsa token of pod \
             payments/api-6d8f7b9c5-x2k4q on node ip-10-0-1-2.eu-west-1.compute.internal \
             [{finding_id}]"
        )
    );
    assert_eq!(
        alerts[0]["Subject"],
        "[tokenguard MEDIUM] curl read the AWS token of pod payments/api-6d8f7b9c5-x2k4q"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_post_one_finding() {
    let stack = stack().await;
    let cluster = unique_cluster("duplicate");
    let queue = stack.alert_queue(&cluster).await.unwrap();
    let events = vec![
        read(&cluster, "/usr/bin/python3", "python3", "1"),
        read(&cluster, "/usr/bin/curl", "curl", "2"),
    ];

    let first = post_batch(stack, events.clone()).await;
    assert_eq!(first[0].status, OutcomeStatus::Accepted);
    assert_eq!(first[1].status, OutcomeStatus::Accepted);
    assert!(first[1].finding_id.is_some());

    let retry = post_batch(stack, events).await;
    assert_eq!(retry.len(), 2);
    assert_eq!(retry[0].status, OutcomeStatus::Duplicate);
    assert_eq!(retry[1].status, OutcomeStatus::Duplicate);
    assert_eq!(stack.alerts(&queue).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_event_rest_accepted() {
    let stack = stack().await;
    let cluster = unique_cluster("invalid");
    let mut bad = read(&cluster, "/usr/bin/python3", "python3", "2");
    bad.process.comm = "a-command-name-too-long".to_owned();
    let events = vec![
        read(&cluster, "/usr/bin/python3", "python3", "1"),
        bad,
        read(&cluster, "/usr/bin/python3", "python3", "3"),
    ];
    let outcomes = post_batch(stack, events).await;
    assert_eq!(outcomes.len(), 3);
    assert_eq!(outcomes[0].status, OutcomeStatus::Accepted);
    assert_eq!(outcomes[1].status, OutcomeStatus::Invalid);
    assert_eq!(outcomes[1].event_id, format!("{cluster}:2"));
    let reason = outcomes[1].reason.as_deref().unwrap();
    assert!(
        reason.starts_with("invalid process.comm \"a-command-name-too-long\""),
        "{reason}"
    );
    assert_eq!(outcomes[2].status, OutcomeStatus::Accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_body_400() {
    let stack = stack().await;
    let (status, body) = post(stack, "{\"schema\": 1, \"events\": [".to_owned()).await;
    assert_eq!(status, 400);
    let error: Value = serde_json::from_str(&body).unwrap();
    let message = error["error"].as_str().unwrap();
    assert!(message.starts_with("invalid batch: "), "{message}");

    let response = reqwest::get(stack.function_url()).await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_new_value_one_finding() {
    let stack = stack().await;
    let cluster = unique_cluster("race");
    let queue = stack.alert_queue(&cluster).await.unwrap();
    let seed = post_batch(
        stack,
        vec![read(&cluster, "/usr/bin/python3", "python3", "1")],
    )
    .await;
    assert_eq!(seed[0].status, OutcomeStatus::Accepted);

    // Two events with the same new value, posted at once; the emulator runs up
    // to four instances of the function, so both invocations overlap.
    let first = post_batch(stack, vec![read(&cluster, "/usr/bin/curl", "curl", "2")]);
    let second = post_batch(stack, vec![read(&cluster, "/usr/bin/curl", "curl", "3")]);
    let (first, second) = tokio::join!(first, second);
    let outcomes: Vec<_> = first.into_iter().chain(second).collect();
    assert!(
        outcomes.iter().all(|o| o.status == OutcomeStatus::Accepted),
        "{outcomes:?}"
    );
    let findings: Vec<_> = outcomes
        .iter()
        .filter_map(|o| o.finding_id.as_ref())
        .collect();
    assert_eq!(findings.len(), 1, "outcomes: {outcomes:?}");
    assert_eq!(stack.alerts(&queue).await.unwrap().len(), 1);
}
