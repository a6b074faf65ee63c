//! The detector Lambda, and optionally the CloudTrail Lambda, under
//! cargo-lambda's emulator, with their DynamoDB tables, SNS topic and EKS
//! clusters in a moto server of their own, and SQS queues that collect their
//! alerts.
//!
//! Tests that share one stack keep apart by cluster name: each uses its own
//! cluster and reads alerts from its own queue, subscribed to the topic with a
//! filter policy on the `cluster` message attribute.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName};
use serde_json::{Value, json};
use thiserror::Error;
use tokenguard_core::Finding;
use tokenguard_detector::dynamodb::attributes::{
    FINDING_ID, FINDING_JSON, PK, SK, VALUE_SK_PREFIX,
};
use tokenguard_schema::{Batch, BatchResponse, Node, Outcome, SCHEMA_VERSION, TokenRead};

use crate::lambda::{LambdaEmulator, Profile, Readiness};
use crate::moto::{HelperError, MotoServer};

/// Package and binary name of the detector.
pub const FUNCTION: &str = "tokenguard-detector";
/// Package and binary name of the CloudTrail function.
pub const CLOUDTRAIL_FUNCTION: &str = "tokenguard-cloudtrail";
/// Name of the correlation table in the stack's moto server.
pub const CORRELATION_TABLE: &str = "e2e-correlation";
/// Name of the baseline table in the stack's moto server.
pub const BASELINE_TABLE: &str = "e2e-baseline";
/// Name of the findings table in the stack's moto server.
pub const FINDINGS_TABLE: &str = "e2e-findings";
/// Name of the SNS topic the detector publishes alerts to.
pub const TOPIC_NAME: &str = "e2e-alerts";
/// `TOKENGUARD_FORGET_AFTER` of the detector: long enough that no value
/// expires during a test.
const FORGET_AFTER: &str = "28d";
/// Function instances the emulator runs at once, so that concurrent POSTs
/// overlap inside the detector.
const CONCURRENCY: u32 = 4;
/// Separator between the executable and the command name in a baseline
/// value key, as `tokenguard_core::BaselineKey` builds it.
const VALUE_KEY_SEPARATOR: char = '\u{1f}';

/// A reason the stack could not start or a call to moto failed.
#[derive(Debug, Error)]
pub enum DetectorStackError {
    /// moto or the emulator did not start.
    #[error(transparent)]
    Helper(#[from] HelperError),
    /// The thread that started a helper panicked.
    #[error("failed to start {helper}: its start-up thread panicked: {source}")]
    StartPanicked {
        helper: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// A request to moto failed, or its response lacks a required field.
    #[error("{operation} against moto failed: {message}")]
    Aws {
        operation: &'static str,
        message: String,
    },
    /// An item or message does not have the shape the detector writes.
    #[error("invalid {what}: {message}")]
    Invalid { what: String, message: String },
}

fn aws_error(operation: &'static str, error: impl std::error::Error) -> DetectorStackError {
    DetectorStackError::Aws {
        operation,
        message: DisplayErrorContext(error).to_string(),
    }
}

fn missing(operation: &'static str, field: &str) -> DetectorStackError {
    DetectorStackError::Aws {
        operation,
        message: format!("the response has no {field}"),
    }
}

/// A value the detector learned for a scope, read from the baseline table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineValue {
    /// Key of the scope, such as `prod/payments/Deployment/payments-api/api`.
    pub scope_key: String,
    pub exe: String,
    pub comm: String,
    /// Finding the value raised when it was first seen, if any.
    pub finding_id: Option<String>,
}

/// What a [`DetectorStack`] runs.
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// `TOKENGUARD_LEARNING_PERIOD`, a duration such as `0s` or `7d`.
    pub learning_period: String,
    /// EKS clusters created in moto and set as `TOKENGUARD_CLUSTERS`; none
    /// leaves the variable unset, so the detector accepts any cluster.
    pub clusters: Vec<String>,
    /// `TOKENGUARD_EGRESS_CIDRS`.
    pub egress_cidrs: String,
    /// Whether to run the CloudTrail function too.
    pub cloudtrail: bool,
    /// More variables for both functions, such as
    /// `TOKENGUARD_CONTAINMENT_MODES`; they override the ones set here.
    pub extra_env: Vec<(&'static str, String)>,
    /// The profile the functions are built in.
    pub profile: Profile,
}

/// The detector served on a Function URL on 127.0.0.1, backed by a moto
/// server. Dropping it stops both.
#[derive(Debug)]
pub struct DetectorStack {
    emulator: LambdaEmulator,
    cloudtrail: Option<LambdaEmulator>,
    /// OIDC issuer URL of each cluster created in moto.
    issuers: HashMap<String, String>,
    /// Handles one request at a time, for the atomic conditional writes that
    /// DynamoDB gives and threaded moto does not. So no SQS read may
    /// long-poll, because that would stall the detector's writes.
    moto: MotoServer,
    topic_arn: String,
}

impl DetectorStack {
    /// Starts a serial moto server, creates [`BASELINE_TABLE`],
    /// [`FINDINGS_TABLE`] and topic [`TOPIC_NAME`] in it, then builds the
    /// detector and serves it under the emulator with `learning_period` as
    /// `TOKENGUARD_LEARNING_PERIOD` (a duration such as `0s` or `7d`).
    ///
    /// The first build of the detector and the AWS SDK takes minutes; the
    /// emulator's wait is bounded by [`crate::lambda::START_TIMEOUT`].
    pub async fn start(learning_period: &str) -> Result<DetectorStack, DetectorStackError> {
        DetectorStack::start_with(StackOptions {
            learning_period: learning_period.to_owned(),
            ..StackOptions::default()
        })
        .await
    }

    /// Starts a stack as `options` say: the tables and topic of
    /// [`DetectorStack::start`], the correlation table, an EKS cluster in
    /// moto for each of `options.clusters`, the detector and, if asked, the
    /// CloudTrail function beside it.
    pub async fn start_with(options: StackOptions) -> Result<DetectorStack, DetectorStackError> {
        let learning_period = options.learning_period.as_str();
        let moto = tokio::task::spawn_blocking(MotoServer::start_serial)
            .await
            .map_err(|source| DetectorStackError::StartPanicked {
                helper: "moto_server",
                source,
            })??;
        let config = moto.sdk_config();
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        tokenguard_detector::create_tables(&dynamodb, BASELINE_TABLE, FINDINGS_TABLE)
            .await
            .map_err(|error| DetectorStackError::Aws {
                operation: "DynamoDB CreateTable",
                message: error.to_string(),
            })?;
        tokenguard_detector::create_correlation_table(&dynamodb, CORRELATION_TABLE)
            .await
            .map_err(|error| DetectorStackError::Aws {
                operation: "DynamoDB CreateTable",
                message: error.to_string(),
            })?;
        let mut issuers = HashMap::new();
        for cluster in &options.clusters {
            issuers.insert(cluster.clone(), create_cluster(&config, cluster).await?);
        }
        let topic_arn = aws_sdk_sns::Client::new(&config)
            .create_topic()
            .name(TOPIC_NAME)
            .send()
            .await
            .map_err(|error| aws_error("SNS CreateTopic", error))?
            .topic_arn
            .ok_or_else(|| missing("SNS CreateTopic", "TopicArn"))?;

        let mut env = moto.client_env();
        env.extend([
            ("TOKENGUARD_BASELINE_TABLE", BASELINE_TABLE.to_owned()),
            ("TOKENGUARD_FINDINGS_TABLE", FINDINGS_TABLE.to_owned()),
            ("TOKENGUARD_TOPIC_ARN", topic_arn.clone()),
            ("TOKENGUARD_LEARNING_PERIOD", learning_period.to_owned()),
            ("TOKENGUARD_FORGET_AFTER", FORGET_AFTER.to_owned()),
            ("TOKENGUARD_CORRELATION_TABLE", CORRELATION_TABLE.to_owned()),
            ("TOKENGUARD_EGRESS_CIDRS", options.egress_cidrs.clone()),
            ("TOKENGUARD_CLUSTERS", options.clusters.join(",")),
            ("RUST_LOG", "info".to_owned()),
        ]);
        for (name, value) in &options.extra_env {
            env.retain(|(known, _)| known != name);
            env.push((*name, value.clone()));
        }
        let cloudtrail_env = env.clone();
        let profile = options.profile;
        let emulator = tokio::task::spawn_blocking(move || {
            LambdaEmulator::start_with(
                FUNCTION,
                FUNCTION,
                &env,
                CONCURRENCY,
                Readiness::FunctionUrl,
                profile,
            )
        })
        .await
        .map_err(|source| DetectorStackError::StartPanicked {
            helper: "cargo lambda watch",
            source,
        })??;
        let cloudtrail = if options.cloudtrail {
            let emulator = tokio::task::spawn_blocking(move || {
                let empty = r#"{"Records": []}"#.to_owned();
                LambdaEmulator::start_with(
                    CLOUDTRAIL_FUNCTION,
                    CLOUDTRAIL_FUNCTION,
                    &cloudtrail_env,
                    CONCURRENCY,
                    Readiness::Invoke(empty),
                    profile,
                )
            })
            .await
            .map_err(|source| DetectorStackError::StartPanicked {
                helper: "cargo lambda watch",
                source,
            })??;
            Some(emulator)
        } else {
            None
        };
        Ok(DetectorStack {
            emulator,
            cloudtrail,
            issuers,
            moto,
            topic_arn,
        })
    }

    /// POSTs `body` to the detector's Function URL and returns the status and
    /// response body.
    pub async fn post(&self, body: String) -> Result<(u16, String), DetectorStackError> {
        let failed = |error: reqwest::Error| DetectorStackError::Aws {
            operation: "POST to the detector",
            message: error.to_string(),
        };
        let response = reqwest::Client::new()
            .post(self.function_url())
            .header("content-type", "application/json")
            .body(body)
            .timeout(std::time::Duration::from_secs(120))
            .send()
            .await
            .map_err(failed)?;
        let status = response.status().as_u16();
        Ok((status, response.text().await.map_err(failed)?))
    }

    /// POSTs `events` as one batch from a fixed node and returns their
    /// outcomes; any status but 200 is an error.
    pub async fn post_reads(
        &self,
        events: Vec<TokenRead>,
    ) -> Result<Vec<Outcome>, DetectorStackError> {
        let (status, body) = self.post(batch_body(events)).await?;
        let invalid = |message: String| DetectorStackError::Invalid {
            what: format!("detector response {body:?}"),
            message,
        };
        if status != 200 {
            return Err(invalid(format!("status {status}, expected 200")));
        }
        serde_json::from_str::<BatchResponse>(&body)
            .map(|response| response.outcomes)
            .map_err(|error| invalid(error.to_string()))
    }

    /// Returns the OIDC issuer URL that moto gave `cluster`.
    pub fn issuer(&self, cluster: &str) -> Option<&str> {
        self.issuers.get(cluster).map(String::as_str)
    }

    /// Returns the CloudTrail function's emulator, if the stack runs it.
    pub fn cloudtrail(&self) -> Option<&LambdaEmulator> {
        self.cloudtrail.as_ref()
    }

    /// Invokes the CloudTrail function with `payload` and returns the status
    /// and the function's JSON response.
    pub async fn invoke_cloudtrail(
        &self,
        payload: Value,
    ) -> Result<(u16, Value), DetectorStackError> {
        let Some(invoker) = self.cloudtrail.as_ref().map(LambdaEmulator::invoker) else {
            return Err(DetectorStackError::Invalid {
                what: "stack".to_owned(),
                message: "it runs no CloudTrail function: start it with cloudtrail: true"
                    .to_owned(),
            });
        };
        let text = payload.to_string();
        let (status, body) = tokio::task::spawn_blocking(move || invoker.invoke(&text))
            .await
            .map_err(|source| DetectorStackError::StartPanicked {
                helper: "cargo lambda invoke",
                source,
            })??;
        let response = serde_json::from_str(&body).unwrap_or(Value::String(body));
        Ok((status, response))
    }

    /// Returns the detector's Function URL,
    /// `http://127.0.0.1:<port>/lambda-url/tokenguard-detector/`.
    pub fn function_url(&self) -> String {
        self.emulator.function_url()
    }

    /// Returns the emulator, whose log has the detector's output.
    pub fn emulator(&self) -> &LambdaEmulator {
        &self.emulator
    }

    /// Returns the moto server with the detector's tables, topic and queues.
    pub fn moto(&self) -> &MotoServer {
        &self.moto
    }

    /// Returns the ARN of the topic the detector publishes alerts to.
    pub fn topic_arn(&self) -> &str {
        &self.topic_arn
    }

    /// Creates SQS queue `cluster`, subscribes it to the alert topic for
    /// alerts of `cluster` only, and returns the queue URL.
    pub async fn alert_queue(&self, cluster: &str) -> Result<String, DetectorStackError> {
        self.filtered_alert_queue(cluster, json!({ "cluster": [cluster] }))
            .await
    }

    /// Creates SQS queue `name`, subscribes it to the alert topic with the
    /// filter policy `filter` on message attributes, and returns the queue
    /// URL.
    pub async fn filtered_alert_queue(
        &self,
        name: &str,
        filter: Value,
    ) -> Result<String, DetectorStackError> {
        let config = self.moto.sdk_config();
        let sqs = aws_sdk_sqs::Client::new(&config);
        let queue_url = sqs
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .map_err(|error| aws_error("SQS CreateQueue", error))?
            .queue_url
            .ok_or_else(|| missing("SQS CreateQueue", "QueueUrl"))?;
        let queue_arn = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|error| aws_error("SQS GetQueueAttributes", error))?
            .attributes
            .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn))
            .ok_or_else(|| missing("SQS GetQueueAttributes", "QueueArn"))?;
        aws_sdk_sns::Client::new(&config)
            .subscribe()
            .topic_arn(&self.topic_arn)
            .protocol("sqs")
            .endpoint(queue_arn)
            .attributes("FilterPolicy", filter.to_string())
            .send()
            .await
            .map_err(|error| aws_error("SNS Subscribe", error))?;
        Ok(queue_url)
    }

    /// Receives and deletes every message on the queue, and returns the SNS
    /// envelopes they carry. moto delivers to SQS during `Publish`, so all
    /// alerts of a finished POST to the detector are already there.
    ///
    /// Deleting matters to callers that poll: a received message that stays
    /// on the queue comes back after its visibility timeout of 30 seconds.
    pub async fn alerts(&self, queue_url: &str) -> Result<Vec<Value>, DetectorStackError> {
        let sqs = aws_sdk_sqs::Client::new(&self.moto.sdk_config());
        let mut envelopes = Vec::new();
        loop {
            let output = sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await
                .map_err(|error| aws_error("SQS ReceiveMessage", error))?;
            if output.messages().is_empty() {
                return Ok(envelopes);
            }
            let mut entries = Vec::new();
            for (index, message) in output.messages().iter().enumerate() {
                let body = message.body().unwrap_or_default();
                let envelope =
                    serde_json::from_str(body).map_err(|error| DetectorStackError::Invalid {
                        what: format!("SNS envelope {body:?}"),
                        message: error.to_string(),
                    })?;
                envelopes.push(envelope);
                let receipt = message
                    .receipt_handle()
                    .ok_or_else(|| missing("SQS ReceiveMessage", "ReceiptHandle"))?;
                let entry = DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(receipt)
                    .build()
                    .map_err(|error| aws_error("SQS DeleteMessageBatch", error))?;
                entries.push(entry);
            }
            sqs.delete_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|error| aws_error("SQS DeleteMessageBatch", error))?;
        }
    }

    /// Reads finding `finding_id` from the findings table, or returns `None`
    /// when the detector has not stored it.
    pub async fn finding(&self, finding_id: &str) -> Result<Option<Finding>, DetectorStackError> {
        let output = aws_sdk_dynamodb::Client::new(&self.moto.sdk_config())
            .get_item()
            .table_name(FINDINGS_TABLE)
            .key(FINDING_ID, AttributeValue::S(finding_id.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| aws_error("DynamoDB GetItem", error))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let invalid = |message: String| DetectorStackError::Invalid {
            what: format!("findings table item {finding_id}"),
            message,
        };
        let Some(AttributeValue::S(document)) = item.get(FINDING_JSON) else {
            return Err(invalid(format!("missing string attribute {FINDING_JSON}")));
        };
        serde_json::from_str(document)
            .map(Some)
            .map_err(|error| invalid(error.to_string()))
    }

    /// Lists the values the detector learned in every scope of `cluster`.
    pub async fn baseline_values(
        &self,
        cluster: &str,
    ) -> Result<Vec<BaselineValue>, DetectorStackError> {
        let dynamodb = aws_sdk_dynamodb::Client::new(&self.moto.sdk_config());
        let scope_prefix = format!("{cluster}/");
        let mut values = Vec::new();
        let mut start_key = None;
        loop {
            let output = dynamodb
                .scan()
                .table_name(BASELINE_TABLE)
                .set_exclusive_start_key(start_key)
                .consistent_read(true)
                .send()
                .await
                .map_err(|error| aws_error("DynamoDB Scan", error))?;
            for item in output.items() {
                if let Some(value) = baseline_value(item)?
                    && value.scope_key.starts_with(&scope_prefix)
                {
                    values.push(value);
                }
            }
            start_key = output.last_evaluated_key;
            if start_key.is_none() {
                return Ok(values);
            }
        }
    }
}

/// Encodes `events` as a batch from a fixed node.
pub fn batch_body(events: Vec<TokenRead>) -> String {
    let batch = Batch {
        schema: SCHEMA_VERSION,
        node: Node {
            name: "ip-10-0-1-2.eu-west-1.compute.internal".to_owned(),
            boot_id: "boot-e2e".to_owned(),
            agent_version: Some("0.1.0".to_owned()),
            hook: None,
        },
        events,
        reports: Vec::new(),
    };
    serde_json::to_string(&batch).unwrap_or_default()
}

/// Creates EKS cluster `name` in moto and returns its OIDC issuer URL.
async fn create_cluster(
    config: &aws_config::SdkConfig,
    name: &str,
) -> Result<String, DetectorStackError> {
    let vpc = aws_sdk_eks::types::VpcConfigRequest::builder()
        .subnet_ids("subnet-0a1b2c3d4e5f60718")
        .build();
    let output = aws_sdk_eks::Client::new(config)
        .create_cluster()
        .name(name)
        .role_arn("arn:aws:iam::111122223333:role/eks-cluster")
        .resources_vpc_config(vpc)
        .send()
        .await
        .map_err(|error| aws_error("EKS CreateCluster", error))?;
    output
        .cluster()
        .and_then(|cluster| cluster.identity())
        .and_then(|identity| identity.oidc())
        .and_then(|oidc| oidc.issuer())
        .map(str::to_owned)
        .ok_or_else(|| missing("EKS CreateCluster", "cluster.identity.oidc.issuer"))
}

/// Decodes a value item of the baseline table, or returns `None` for a scope
/// item.
fn baseline_value(
    item: &HashMap<String, AttributeValue>,
) -> Result<Option<BaselineValue>, DetectorStackError> {
    let string = |name: &str| match item.get(name) {
        Some(AttributeValue::S(value)) => Some(value.clone()),
        _ => None,
    };
    let (Some(scope_key), Some(sort_key)) = (string(PK), string(SK)) else {
        return Err(DetectorStackError::Invalid {
            what: format!("baseline table item {item:?}"),
            message: format!("missing string key {PK} or {SK}"),
        });
    };
    let Some(value_key) = sort_key.strip_prefix(VALUE_SK_PREFIX) else {
        return Ok(None);
    };
    let Some((exe, comm)) = value_key.split_once(VALUE_KEY_SEPARATOR) else {
        return Err(DetectorStackError::Invalid {
            what: format!("baseline table item {scope_key}, {sort_key:?}"),
            message: "the value key has no separator between exe and comm".to_owned(),
        });
    };
    Ok(Some(BaselineValue {
        exe: exe.to_owned(),
        comm: comm.to_owned(),
        finding_id: string(FINDING_ID),
        scope_key,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenguard_core::BaselineKey;
    use tokenguard_core::conformance::sample_read;
    use tokenguard_detector::dynamodb::attributes::SCOPE_SK;
    use tokenguard_detector::dynamodb::value_sk;

    #[test]
    fn value_item_decoded() {
        let mut read = sample_read("/usr/bin/python3", "python3");
        read.cluster = "prod".to_owned();
        let key = BaselineKey::of(&read);
        let item = HashMap::from([
            (PK.to_owned(), AttributeValue::S(key.scope.key.clone())),
            (SK.to_owned(), AttributeValue::S(value_sk(&key.value.key))),
            (FINDING_ID.to_owned(), AttributeValue::S("tg-1".to_owned())),
        ]);

        let value = baseline_value(&item).unwrap().expect("a value item");

        assert!(
            value.scope_key.starts_with("prod/"),
            "scope keys must start with the cluster for baseline_values to filter: {}",
            value.scope_key
        );
        assert_eq!(value.exe, "/usr/bin/python3", "exe of the value key");
        assert_eq!(value.comm, "python3", "comm of the value key");
        assert_eq!(value.finding_id.as_deref(), Some("tg-1"), "finding id");
    }

    #[test]
    fn scope_item_skipped() {
        let item = HashMap::from([
            (PK.to_owned(), AttributeValue::S("prod/~host".to_owned())),
            (SK.to_owned(), AttributeValue::S(SCOPE_SK.to_owned())),
        ]);
        assert_eq!(baseline_value(&item).unwrap(), None, "a scope item");
    }
}
