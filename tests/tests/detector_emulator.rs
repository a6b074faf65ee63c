//! The detector binary under cargo-lambda's emulator, driven over its Function
//! URL with real HTTP POSTs, against DynamoDB, SNS and SQS in moto.
//!
//! One emulator and one moto server serve every test of this binary, because
//! the first build takes minutes. Tests keep apart by cluster name: each test
//! uses its own cluster and reads alerts from its own SQS queue, subscribed
//! with a filter policy on the `cluster` attribute.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use chrono::Utc;
use serde_json::{Value, json};
use tokenguard_core::conformance::sample_read;
use tokenguard_e2e::lambda::LambdaEmulator;
use tokenguard_e2e::moto::MotoServer;
use tokenguard_schema::{
    Batch, BatchResponse, Node, Outcome, OutcomeStatus, SCHEMA_VERSION, TokenRead,
};
use tokio::sync::OnceCell;

const FUNCTION: &str = "tokenguard-detector";

/// The emulated detector and the moto server it uses.
struct Stack {
    /// Handles one request at a time, for the atomic conditional writes that
    /// DynamoDB gives and threaded moto does not. SQS reads must not long-poll.
    moto: MotoServer,
    emulator: LambdaEmulator,
    topic_arn: String,
}

static STACK: OnceCell<Stack> = OnceCell::const_new();

async fn stack() -> &'static Stack {
    STACK
        .get_or_init(|| async {
            let moto = tokio::task::spawn_blocking(MotoServer::start_serial)
                .await
                .unwrap()
                .expect("moto server starts");
            let config = moto.sdk_config();
            let dynamodb = aws_sdk_dynamodb::Client::new(&config);
            tokenguard_detector::create_tables(&dynamodb, "e2e-baseline", "e2e-findings")
                .await
                .expect("tables are created");
            let topic_arn = aws_sdk_sns::Client::new(&config)
                .create_topic()
                .name("e2e-alerts")
                .send()
                .await
                .unwrap()
                .topic_arn
                .unwrap();

            let mut env = moto.client_env();
            env.extend([
                ("TOKENGUARD_BASELINE_TABLE", "e2e-baseline".to_owned()),
                ("TOKENGUARD_FINDINGS_TABLE", "e2e-findings".to_owned()),
                ("TOKENGUARD_TOPIC_ARN", topic_arn.clone()),
                ("TOKENGUARD_LEARNING_PERIOD", "0s".to_owned()),
                ("TOKENGUARD_FORGET_AFTER", "28d".to_owned()),
                ("RUST_LOG", "info".to_owned()),
            ]);
            let emulator = tokio::task::spawn_blocking(move || {
                LambdaEmulator::start(FUNCTION, FUNCTION, &env, 4)
            })
            .await
            .unwrap()
            .expect("the emulator builds and serves the detector");
            Stack {
                moto,
                emulator,
                topic_arn,
            }
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

fn batch(events: Vec<TokenRead>) -> String {
    let batch = Batch {
        schema: SCHEMA_VERSION,
        node: Node {
            name: "ip-10-0-1-2.eu-west-1.compute.internal".to_owned(),
            boot_id: "boot-e2e".to_owned(),
            agent_version: Some("0.1.0".to_owned()),
            hook: None,
        },
        events,
    };
    serde_json::to_string(&batch).unwrap()
}

async fn post(stack: &Stack, body: String) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(stack.emulator.function_url())
        .header("content-type", "application/json")
        .body(body)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn post_batch(stack: &Stack, events: Vec<TokenRead>) -> Vec<Outcome> {
    let (status, body) = post(stack, batch(events)).await;
    assert_eq!(status, 200, "response body: {body}");
    serde_json::from_str::<BatchResponse>(&body)
        .unwrap_or_else(|error| panic!("{error}: {body}"))
        .outcomes
}

/// Creates an SQS queue that receives the alerts of `cluster` only.
async fn alert_queue(stack: &Stack, cluster: &str) -> String {
    let config = stack.moto.sdk_config();
    let sqs = aws_sdk_sqs::Client::new(&config);
    let queue_url = sqs
        .create_queue()
        .queue_name(cluster)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()
        .remove(&QueueAttributeName::QueueArn)
        .unwrap();
    aws_sdk_sns::Client::new(&config)
        .subscribe()
        .topic_arn(&stack.topic_arn)
        .protocol("sqs")
        .endpoint(queue_arn)
        .attributes("FilterPolicy", json!({ "cluster": [cluster] }).to_string())
        .send()
        .await
        .unwrap();
    queue_url
}

/// Receives every SNS envelope on the queue. moto delivers during `Publish`, so all
/// alerts of a finished POST are already there.
async fn alerts(stack: &Stack, queue_url: &str) -> Vec<Value> {
    let sqs = aws_sdk_sqs::Client::new(&stack.moto.sdk_config());
    let mut envelopes = Vec::new();
    loop {
        let output = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .send()
            .await
            .unwrap();
        if output.messages().is_empty() {
            return envelopes;
        }
        for message in output.messages() {
            envelopes.push(serde_json::from_str(message.body().unwrap()).unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn familiar_then_unfamiliar_alerts() {
    let stack = stack().await;
    let cluster = unique_cluster("familiar");
    let queue = alert_queue(stack, &cluster).await;

    let familiar = post_batch(
        stack,
        vec![read(&cluster, "/usr/bin/python3", "python3", "1")],
    )
    .await;
    assert_eq!(familiar.len(), 1);
    assert_eq!(familiar[0].status, OutcomeStatus::Accepted);
    assert_eq!(familiar[0].finding_id, None);
    assert!(
        alerts(stack, &queue).await.is_empty(),
        "the first value is learned silently"
    );

    let stranger = post_batch(stack, vec![read(&cluster, "/usr/bin/curl", "curl", "2")]).await;
    assert_eq!(stranger.len(), 1);
    assert_eq!(stranger[0].status, OutcomeStatus::Accepted);
    let finding_id = stranger[0]
        .finding_id
        .clone()
        .expect("the unfamiliar read raises a finding");

    let alerts = alerts(stack, &queue).await;
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
    let queue = alert_queue(stack, &cluster).await;
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
    assert_eq!(alerts(stack, &queue).await.len(), 1);
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

    let response = reqwest::get(stack.emulator.function_url()).await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_new_value_one_finding() {
    let stack = stack().await;
    let cluster = unique_cluster("race");
    let queue = alert_queue(stack, &cluster).await;
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
    assert_eq!(alerts(stack, &queue).await.len(), 1);
}
