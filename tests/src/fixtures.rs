//! Real-format Kubernetes objects with fake ids, shared by the tests and the demo.

use serde_json::Value;

/// Node the fixture pod runs on.
pub const NODE: &str = "ip-10-0-12-34.eu-west-1.compute.internal";
/// `metadata.uid` of the fixture pod.
pub const POD_UID: &str = "7c1d5a3e-2b4f-4e8a-9c6d-0f1e2d3c4b5a";
/// containerd id of the fixture pod's `api` container.
pub const CONTAINER_ID: &str = "3b0f5e4c9a7d2e1f8c6b5a4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f";

const IRSA_POD: &str = include_str!("../fixtures/pods/pod-irsa.json");

/// The project's CloudTrail records, by file name without `.json`.
const CLOUDTRAIL_RECORDS: &[(&str, &str)] = &[
    (
        "irsa-success",
        include_str!("../fixtures/cloudtrail/irsa-success.json"),
    ),
    (
        "irsa-access-denied",
        include_str!("../fixtures/cloudtrail/irsa-access-denied.json"),
    ),
    (
        "podidentity-eks-auth",
        include_str!("../fixtures/cloudtrail/podidentity-eks-auth.json"),
    ),
    (
        "podidentity-sts-assumerole",
        include_str!("../fixtures/cloudtrail/podidentity-sts-assumerole.json"),
    ),
    (
        "unrelated-getcalleridentity",
        include_str!("../fixtures/cloudtrail/unrelated-getcalleridentity.json"),
    ),
    (
        "github-oidc-assumerolewithwebidentity",
        include_str!("../fixtures/cloudtrail/github-oidc-assumerolewithwebidentity.json"),
    ),
];

/// CloudTrail record `name` of `tests/fixtures/cloudtrail`, in the shape
/// CloudTrail writes, with fake ids.
pub fn cloudtrail_record(name: &str) -> Value {
    let (_, text) = CLOUDTRAIL_RECORDS
        .iter()
        .find(|(known, _)| *known == name)
        .unwrap_or_else(|| panic!("no CloudTrail fixture {name}"));
    serde_json::from_str(text).expect("the CloudTrail fixtures are valid JSON")
}

/// An IRSA exchange of `namespace/service_account` of the cluster with OIDC
/// issuer `issuer`, at `time` from `source`, with event id `event_id`.
pub fn irsa_exchange(
    issuer: &str,
    namespace: &str,
    service_account: &str,
    event_id: &str,
    time: &str,
    source: &str,
    user_agent: &str,
) -> Value {
    let mut record = cloudtrail_record("irsa-success");
    let provider = format!(
        "arn:aws:iam::111122223333:oidc-provider/{}",
        issuer.trim_start_matches("https://")
    );
    let subject = format!("system:serviceaccount:{namespace}:{service_account}");
    record["userIdentity"]["identityProvider"] = Value::from(provider.clone());
    record["userIdentity"]["principalId"] =
        Value::from(format!("{provider}:sts.amazonaws.com:{subject}"));
    record["userIdentity"]["userName"] = Value::from(subject);
    record["eventID"] = Value::from(event_id);
    record["eventTime"] = Value::from(time);
    record["sourceIPAddress"] = Value::from(source);
    record["userAgent"] = Value::from(user_agent);
    record
}

/// The EventBridge event that carries a CloudTrail record.
pub fn eventbridge_event(record: &Value) -> Value {
    let source = match record["eventSource"].as_str() {
        Some("eks-auth.amazonaws.com") => "aws.eks-auth",
        _ => "aws.sts",
    };
    serde_json::json!({
        "version": "0",
        "id": format!("eb-{}", record["eventID"].as_str().unwrap_or("unknown")),
        "detail-type": "AWS API Call via CloudTrail",
        "source": source,
        "account": "111122223333",
        "time": record["eventTime"].clone(),
        "region": "eu-west-1",
        "resources": [],
        "detail": record,
    })
}

/// The SQS event that Lambda's event source mapping sends for `bodies`,
/// with message ids `message-<index>`.
pub fn sqs_batch(bodies: &[String]) -> Value {
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(index, body)| {
            serde_json::json!({
                "messageId": format!("message-{index}"),
                "receiptHandle": format!("receipt-{index}"),
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1764583205000",
                    "SenderId": "AIDAEXAMPLEFAKE00001",
                    "ApproximateFirstReceiveTimestamp": "1764583205000"
                },
                "messageAttributes": {},
                "md5OfBody": "0123456789abcdef0123456789abcdef",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-1:111122223333:tokenguard-cloudtrail",
                "awsRegion": "eu-west-1"
            })
        })
        .collect();
    serde_json::json!({ "Records": records })
}

/// Pod `payments/payments-api-6d8f7b9c5-x2k4q` of Deployment `payments-api`,
/// as the EKS pod identity webhook mutates it for IRSA.
pub fn irsa_pod() -> Value {
    serde_json::from_str(IRSA_POD).expect("the IRSA pod fixture is valid JSON")
}

/// The fixture pod moved to `node`, with its own uid and `api` container id.
pub fn irsa_pod_on(node: &str, pod_uid: &str, container_id: &str) -> Value {
    let mut pod = irsa_pod();
    pod["metadata"]["uid"] = Value::from(pod_uid);
    pod["spec"]["nodeName"] = Value::from(node);
    let statuses = pod["status"]["containerStatuses"]
        .as_array_mut()
        .expect("the fixture pod has container statuses");
    for status in statuses.iter_mut().filter(|s| s["name"] == "api") {
        status["containerID"] = Value::from(format!("containerd://{container_id}"));
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moved_pod_keeps_names() {
        let pod = irsa_pod_on("node-b", "uid-b", "ab".repeat(32).as_str());
        assert_eq!(pod["metadata"]["uid"], "uid-b");
        assert_eq!(pod["metadata"]["name"], "payments-api-6d8f7b9c5-x2k4q");
        assert_eq!(pod["spec"]["nodeName"], "node-b");
        let api = &pod["status"]["containerStatuses"][0];
        assert_eq!(api["name"], "api");
        assert_eq!(
            api["containerID"],
            format!("containerd://{}", "ab".repeat(32))
        );
    }

    #[test]
    fn fixture_ids_match_constants() {
        let pod = irsa_pod();
        assert_eq!(pod["metadata"]["uid"], POD_UID);
        assert_eq!(pod["spec"]["nodeName"], NODE);
        let api = &pod["status"]["containerStatuses"][0];
        assert_eq!(api["containerID"], format!("containerd://{CONTAINER_ID}"));
    }
}
