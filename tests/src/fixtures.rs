//! Real-format Kubernetes objects with fake ids, shared by the tests and the demo.

use serde_json::Value;

/// Node the fixture pod runs on.
pub const NODE: &str = "ip-10-0-12-34.eu-west-1.compute.internal";
/// `metadata.uid` of the fixture pod.
pub const POD_UID: &str = "7c1d5a3e-2b4f-4e8a-9c6d-0f1e2d3c4b5a";
/// containerd id of the fixture pod's `api` container.
pub const CONTAINER_ID: &str = "3b0f5e4c9a7d2e1f8c6b5a4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f";

const IRSA_POD: &str = include_str!("../fixtures/pods/pod-irsa.json");

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
