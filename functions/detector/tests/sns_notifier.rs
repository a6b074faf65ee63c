//! The SNS notifier against moto: a topic with SQS subscribers receives the
//! alert with its exact text and message attributes, and the published
//! message has its `default`, `email` and `https` parts.

mod common;

use aws_sdk_sqs::types::QueueAttributeName;
use common::{moto, sample_finding, unique};
use serde_json::{Value, json};
use tokenguard_core::conformance::at;
use tokenguard_core::{Alert, Notifier, StoreError};
use tokenguard_detector::SnsNotifier;
use tokenguard_e2e::moto::MotoServer;

const EMAIL_FIXTURE: &str = include_str!("../../core/tests/fixtures/email.txt");

/// A queue subscribed to `topic_arn`, optionally with a filter policy.
async fn subscribe_queue(
    server: &MotoServer,
    topic_arn: &str,
    filter_policy: Option<&str>,
) -> (String, String, String) {
    let sns = aws_sdk_sns::Client::new(&server.sdk_config());
    let sqs = aws_sdk_sqs::Client::new(&server.sdk_config());
    let queue_url = sqs
        .create_queue()
        .queue_name(unique("alerts"))
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
    let mut subscribe = sns
        .subscribe()
        .topic_arn(topic_arn)
        .protocol("sqs")
        .endpoint(&queue_arn);
    if let Some(policy) = filter_policy {
        subscribe = subscribe.attributes("FilterPolicy", policy);
    }
    let subscription_arn = subscribe.send().await.unwrap().subscription_arn.unwrap();
    (queue_url, queue_arn, subscription_arn)
}

async fn receive_all(server: &MotoServer, queue_url: &str) -> Vec<String> {
    let sqs = aws_sdk_sqs::Client::new(&server.sdk_config());
    let output = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    output
        .messages()
        .iter()
        .map(|message| message.body().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn alert_reaches_sqs_subscriber() {
    let server = moto();
    let sns = aws_sdk_sns::Client::new(&server.sdk_config());
    let topic_arn = sns
        .create_topic()
        .name(unique("tokenguard-alerts"))
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();
    let (queue_url, queue_arn, subscription_arn) = subscribe_queue(server, &topic_arn, None).await;
    let (high_queue_url, ..) =
        subscribe_queue(server, &topic_arn, Some(r#"{"severity": ["high"]}"#)).await;

    // moto records the subscription as created, with the queue as endpoint.
    let subscriptions = sns
        .list_subscriptions_by_topic()
        .topic_arn(&topic_arn)
        .send()
        .await
        .unwrap();
    let plain: Vec<_> = subscriptions
        .subscriptions()
        .iter()
        .filter(|s| s.subscription_arn() == Some(subscription_arn.as_str()))
        .collect();
    assert_eq!(plain.len(), 1);
    assert_eq!(plain[0].protocol(), Some("sqs"));
    assert_eq!(plain[0].endpoint(), Some(queue_arn.as_str()));
    assert_eq!(subscriptions.subscriptions().len(), 2);

    let mut finding = sample_finding().await;
    finding.detected_at = at(1);
    let finding_id = finding.finding_id.clone();
    let notifier = SnsNotifier::new(sns.clone(), &topic_arn);
    notifier.notify(&Alert::Finding(&finding)).await.unwrap();

    let subject = "[tokenguard MEDIUM] curl read the AWS token of pod payments/api-6d8f7b9c5-x2k4q";
    let default = format!(
        "tokenguard MEDIUM: /usr/bin/curl (curl) read the irsa token of pod \
         payments/api-6d8f7b9c5-x2k4q on node node-a [{finding_id}]"
    );

    // The SQS subscriber gets the `default` text in the SNS envelope.
    let bodies = receive_all(server, &queue_url).await;
    assert_eq!(bodies.len(), 1, "messages on the queue: {bodies:?}");
    let envelope: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(envelope["Type"], "Notification");
    assert_eq!(envelope["TopicArn"], topic_arn.as_str());
    assert_eq!(envelope["Subject"], subject);
    assert_eq!(envelope["Message"], default.as_str());
    assert_eq!(
        envelope["MessageAttributes"],
        json!({
            "severity": {"Type": "String", "Value": "medium"},
            "cluster": {"Type": "String", "Value": "test"},
            "rule": {"Type": "String", "Value": "unfamiliar_process_token_read"},
            "namespace": {"Type": "String", "Value": "payments"},
        })
    );

    // The subscription filtered on severity high gets nothing.
    let filtered = receive_all(server, &high_queue_url).await;
    assert!(filtered.is_empty(), "high-only queue received {filtered:?}");

    // moto keeps the published JSON message, with the email text.
    let sent = server.sns_notifications(&topic_arn).unwrap();
    assert_eq!(sent.len(), 1, "notifications: {sent:?}");
    let message: Value = serde_json::from_str(sent[0][1].as_str().unwrap()).unwrap();
    let email = EMAIL_FIXTURE.replace("{finding_id}", &finding_id);
    assert_eq!(message["email"], email.as_str());
    assert_eq!(message["default"], default.as_str());
    assert_eq!(message.as_object().unwrap().len(), 3);
    assert_eq!(sent[0][2], subject);

    // The https part, for AWS Chatbot, is the card serialized as a string.
    let https = message["https"].as_str().expect("https is a string");
    let card: Value = serde_json::from_str(https).unwrap();
    assert_eq!(card["version"], "1.0");
    assert_eq!(card["source"], "custom");
    assert_eq!(card["content"]["textType"], "client-markdown");
    assert_eq!(card["content"]["title"], subject);
    assert_eq!(card["metadata"]["threadId"], finding_id.as_str());
    assert_eq!(
        card["content"]["keywords"],
        json!([
            "medium",
            "test",
            "payments",
            "unfamiliar_process_token_read"
        ])
    );
}

#[tokio::test]
async fn missing_topic_names_fix() {
    let server = moto();
    let sns = aws_sdk_sns::Client::new(&server.sdk_config());
    let topic_arn = "arn:aws:sns:eu-west-1:123456789012:tokenguard-absent";
    let notifier = SnsNotifier::new(sns, topic_arn);
    let finding = sample_finding().await;
    let error = notifier
        .notify(&Alert::Finding(&finding))
        .await
        .unwrap_err();
    let StoreError::Permanent { message, .. } = &error else {
        panic!("a missing topic is permanent, got {error:?}");
    };
    assert!(
        message.starts_with(&format!(
            "SNS topic {topic_arn} not found: create it or fix TOKENGUARD_TOPIC_ARN"
        )),
        "{message}"
    );
}

/// moto accepts a json-structured message without `default` when the topic has
/// no subscriber, where SNS rejects it; that is why the notifier checks it.
#[tokio::test]
async fn moto_skips_default_check() {
    let server = moto();
    let sns = aws_sdk_sns::Client::new(&server.sdk_config());
    let topic_arn = sns
        .create_topic()
        .name(unique("no-subscribers"))
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();
    let result = sns
        .publish()
        .topic_arn(&topic_arn)
        .message(r#"{"email": "no default"}"#)
        .message_structure("json")
        .send()
        .await;
    assert!(result.is_ok(), "moto now rejects it: {result:?}");
    assert!(tokenguard_detector::sns::check_message(r#"{"email": "no default"}"#).is_err());
}
