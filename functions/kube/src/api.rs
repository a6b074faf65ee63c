//! The containment calls on the Kubernetes API: [`ClusterApi`] for
//! [`EksClusters`].

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ObjectMeta, OwnerReference as KubeOwnerReference,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;
use tokenguard_core::contain::{
    ApiError, ClusterApi, ControllerState, OwnerReference, PodState, QUARANTINE_LABEL,
    QUARANTINE_POLICY,
};
use tracing::{info, warn};

use crate::clusters::EksClusters;
use crate::quarantine::{modified_policy_error, policy_problems, quarantine_policy};

/// Annotation the kubelet sets on the mirror pod of a static pod.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// HTTP status of a request whose bearer token the API server rejected.
const UNAUTHORIZED: u16 = 401;

/// HTTP status of a JSON Patch the API server could not apply, such as a
/// failed `test` operation or an `add` under a missing parent. The server
/// sends reason `Invalid` with the generic message "the server rejected our
/// request due to an error in our request", without the patch error
/// (`applyJSPatch` in the apiserver's `endpoints/handlers/patch.go`).
const UNPROCESSABLE: u16 = 422;

/// Converts a kube error to an [`ApiError`]: the `Status` of an HTTP error
/// response, or the whole error chain when no response arrived.
pub fn api_error(error: kube::Error) -> ApiError {
    match error {
        kube::Error::Api(status) => {
            let mut message = status.message.clone();
            let causes = status.details.iter().flat_map(|details| &details.causes);
            for cause in causes.filter(|cause| !cause.message.is_empty()) {
                message.push_str(": ");
                message.push_str(&cause.message);
            }
            ApiError {
                status: (status.code != 0).then_some(status.code),
                reason: status.reason.clone(),
                message,
            }
        }
        other => ApiError::transport(error_chain(&other)),
    }
}

/// Joins an error and its sources with `: `, skipping a source whose text
/// its parent already shows.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Returns the `ownerReferences` entry with `controller: true`.
fn controller_of(references: Option<&[KubeOwnerReference]>) -> Option<OwnerReference> {
    references?
        .iter()
        .find(|reference| reference.controller == Some(true))
        .map(|reference| OwnerReference {
            kind: reference.kind.clone(),
            name: reference.name.clone(),
        })
}

/// Extracts what containment needs of a pod.
pub fn pod_state(pod: &Pod) -> PodState {
    let metadata = &pod.metadata;
    let ready = pod
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
    PodState {
        uid: metadata.uid.clone().unwrap_or_default(),
        node_name: pod.spec.as_ref().and_then(|spec| spec.node_name.clone()),
        controller: controller_of(metadata.owner_references.as_deref()),
        mirror: metadata
            .annotations
            .as_ref()
            .is_some_and(|annotations| annotations.contains_key(MIRROR_ANNOTATION)),
        ready,
        deleting: metadata.deletion_timestamp.is_some(),
    }
}

/// Replica counts: `spec.replicas` defaults to 1 and `status.readyReplicas`
/// to 0, as the API does.
fn controller_state(
    metadata: &ObjectMeta,
    replicas: Option<i32>,
    ready_replicas: Option<i32>,
) -> ControllerState {
    let count =
        |value: Option<i32>, default: u32| value.map_or(default, |v| u32::try_from(v).unwrap_or(0));
    ControllerState {
        replicas: count(replicas, 1),
        ready_replicas: count(ready_replicas, 0),
        controller: controller_of(metadata.owner_references.as_deref()),
    }
}

/// Escapes a map key for a JSON Pointer (RFC 6901): `~` as `~0`, `/` as `~1`.
fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn json_patch(operations: serde_json::Value) -> Patch<()> {
    let patch: json_patch::Patch = serde_json::from_value(operations)
        .expect("the quarantine patch operations are valid JSON Patch");
    Patch::Json(patch)
}

/// A workload controller whose replica counts containment checks.
trait Replicated:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + k8s_openapi::serde::de::DeserializeOwned
    + std::fmt::Debug
{
    /// `spec.replicas` and `status.readyReplicas`, as the object has them.
    fn counts(&self) -> (Option<i32>, Option<i32>);
}

/// Implements [`Replicated`] for controllers whose spec and status name
/// the counts `replicas` and `readyReplicas`.
macro_rules! replicated {
    ($($kind:ty),+) => {$(
        impl Replicated for $kind {
            fn counts(&self) -> (Option<i32>, Option<i32>) {
                (
                    self.spec.as_ref().and_then(|spec| spec.replicas),
                    self.status
                        .as_ref()
                        .and_then(|status| status.ready_replicas),
                )
            }
        }
    )+};
}

replicated!(ReplicaSet, Deployment, StatefulSet);

impl EksClusters {
    /// Reads controller `name` of type `T`; `None` when it does not exist.
    async fn get_controller<T: Replicated>(
        &self,
        cluster: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ControllerState>, ApiError> {
        let object = self
            .call(cluster, |client| async move {
                Api::<T>::namespaced(client, namespace).get_opt(name).await
            })
            .await?;
        Ok(object.map(|object| {
            let (replicas, ready) = object.counts();
            controller_state(object.meta(), replicas, ready)
        }))
    }

    /// Runs `call` with the cluster's client. A failure without an HTTP
    /// response drops the cached client and endpoint, and a 401 drops the
    /// client, so the next call signs a new token.
    async fn call<T, F, Fut>(&self, cluster: &str, call: F) -> Result<T, ApiError>
    where
        F: FnOnce(kube::Client) -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let client = self.client(cluster).await.map_err(|error| {
            warn!(cluster, error = %error_chain(&error), "failed to set up the Kubernetes client");
            ApiError::transport(error_chain(&error))
        })?;
        match call(client).await {
            Ok(value) => Ok(value),
            Err(error) => {
                let error = api_error(error);
                if error.status.is_none() {
                    warn!(cluster, %error, "Kubernetes API call failed without a response");
                    self.forget(cluster).await;
                    return Err(ApiError::transport(format!(
                        "failed to reach the Kubernetes API of cluster {cluster}: {}",
                        error.message
                    )));
                }
                if error.status == Some(UNAUTHORIZED) {
                    warn!(cluster, %error, "the API server rejected the EKS token");
                    self.forget_client(cluster).await;
                }
                Err(error)
            }
        }
    }

    /// Adds [`QUARANTINE_LABEL`] to the pod if it still has `uid`. When the
    /// pod has no labels, the `add` under `/metadata/labels` fails, so the
    /// labels map is then created whole, guarded by the resourceVersion read.
    async fn label_quarantined(
        &self,
        cluster: &str,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<(), ApiError> {
        let label_path = format!("/metadata/labels/{}", pointer_token(QUARANTINE_LABEL));
        let add_label = json_patch(json!([
            {"op": "test", "path": "/metadata/uid", "value": uid},
            {"op": "add", "path": label_path, "value": "true"},
        ]));
        let result = self
            .call(cluster, |client| async move {
                let pods: Api<Pod> = Api::namespaced(client, namespace);
                pods.patch(name, &PatchParams::default(), &add_label).await
            })
            .await;
        let first_error = match result {
            Ok(_) => return Ok(()),
            Err(error) if error.status == Some(UNPROCESSABLE) => error,
            Err(error) => return Err(error),
        };

        // The patch failed: either the UID test or the missing labels map.
        let pod = self
            .call(cluster, |client| async move {
                Api::<Pod>::namespaced(client, namespace)
                    .get_opt(name)
                    .await
            })
            .await?;
        // A failed JSON Patch test returns a bare 422, so the error is
        // built from the pod read: the user must learn that the pod they
        // were alerted on was replaced or is gone.
        let Some(pod) = pod else {
            return Err(ApiError {
                message: format!(
                    "pod {namespace}/{name} no longer exists, so nothing was labelled \
                     (the label patch failed with: {first_error})"
                ),
                ..first_error
            });
        };
        let metadata = &pod.metadata;
        if metadata.uid.as_deref() != Some(uid) {
            return Err(ApiError {
                message: format!(
                    "pod {namespace}/{name} was replaced: its uid is now {}, not the reported \
                     {uid}, and the new pod was left alone",
                    metadata.uid.as_deref().unwrap_or("unknown")
                ),
                ..first_error
            });
        }
        if metadata.labels.is_some() {
            return Err(first_error);
        }
        let resource_version = metadata.resource_version.clone().unwrap_or_default();
        let create_labels = json_patch(json!([
            {"op": "test", "path": "/metadata/uid", "value": uid},
            {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
            {"op": "add", "path": "/metadata/labels", "value": {QUARANTINE_LABEL: "true"}},
        ]));
        self.call(cluster, |client| async move {
            let pods: Api<Pod> = Api::namespaced(client, namespace);
            pods.patch(name, &PatchParams::default(), &create_labels)
                .await
        })
        .await
        .map(|_| ())
    }

    /// Creates [`QUARANTINE_POLICY`] in `namespace`. When a policy of that
    /// name already exists, it is read and accepted only if it still denies
    /// all egress of quarantined pods. One that does not is left unchanged,
    /// and the error names what is wrong and how to fix it.
    async fn ensure_quarantine_policy(
        &self,
        cluster: &str,
        namespace: &str,
    ) -> Result<(), ApiError> {
        match self.create_quarantine_policy(cluster, namespace).await {
            Err(error) if error.reason == "AlreadyExists" => {}
            other => return other,
        }
        let existing = self
            .call(cluster, |client| async move {
                Api::<NetworkPolicy>::namespaced(client, namespace)
                    .get_opt(QUARANTINE_POLICY)
                    .await
            })
            .await?;
        let Some(existing) = existing else {
            // Deleted since the create failed: create it again, once.
            return self.create_quarantine_policy(cluster, namespace).await;
        };

        let problems = policy_problems(&existing);
        if problems.is_empty() {
            return Ok(());
        }
        warn!(
            cluster,
            namespace,
            policy = QUARANTINE_POLICY,
            problems = problems.join("; "),
            "the existing quarantine NetworkPolicy does not deny all egress"
        );
        Err(modified_policy_error(cluster, namespace, &problems))
    }

    async fn create_quarantine_policy(
        &self,
        cluster: &str,
        namespace: &str,
    ) -> Result<(), ApiError> {
        let policy = quarantine_policy(namespace);
        self.call(cluster, |client| async move {
            let policies: Api<NetworkPolicy> = Api::namespaced(client, namespace);
            policies.create(&PostParams::default(), &policy).await
        })
        .await?;
        info!(
            cluster,
            namespace,
            policy = QUARANTINE_POLICY,
            "created the quarantine NetworkPolicy"
        );
        Ok(())
    }
}

impl ClusterApi for EksClusters {
    async fn pod(
        &self,
        cluster: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PodState>, ApiError> {
        let pod = self
            .call(cluster, |client| async move {
                Api::<Pod>::namespaced(client, namespace)
                    .get_opt(name)
                    .await
            })
            .await?;
        Ok(pod.as_ref().map(pod_state))
    }

    async fn controller(
        &self,
        cluster: &str,
        namespace: &str,
        kind: &str,
        name: &str,
    ) -> Result<Option<ControllerState>, ApiError> {
        match kind {
            "ReplicaSet" => {
                self.get_controller::<ReplicaSet>(cluster, namespace, name)
                    .await
            }
            "Deployment" => {
                self.get_controller::<Deployment>(cluster, namespace, name)
                    .await
            }
            "StatefulSet" => {
                self.get_controller::<StatefulSet>(cluster, namespace, name)
                    .await
            }
            other => Err(ApiError {
                status: None,
                reason: String::new(),
                message: format!(
                    "controller kind {other} is not supported: expected ReplicaSet, StatefulSet \
                     or Deployment"
                ),
            }),
        }
    }

    async fn delete_pod(
        &self,
        cluster: &str,
        namespace: &str,
        name: &str,
        uid: &str,
        grace_period_seconds: u32,
    ) -> Result<(), ApiError> {
        let params = DeleteParams {
            grace_period_seconds: Some(grace_period_seconds),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        self.call(cluster, |client| async move {
            Api::<Pod>::namespaced(client, namespace)
                .delete(name, &params)
                .await
        })
        .await?;
        info!(
            cluster,
            namespace,
            pod = name,
            uid,
            grace_period_seconds,
            "deleted pod"
        );
        Ok(())
    }

    async fn quarantine_pod(
        &self,
        cluster: &str,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<(), ApiError> {
        self.label_quarantined(cluster, namespace, name, uid)
            .await?;
        self.ensure_quarantine_policy(cluster, namespace).await?;
        info!(cluster, namespace, pod = name, uid, "quarantined pod");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    #[test]
    fn pointer_token_escapes_slash_and_tilde() {
        assert_eq!(
            pointer_token("tokenguard.io/quarantine"),
            "tokenguard.io~1quarantine"
        );
        assert_eq!(pointer_token("a~b/c"), "a~0b~1c");
    }

    #[test]
    fn pod_state_from_api_object() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": "web-1", "namespace": "shop", "uid": "u-1",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "x"},
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc",
                     "uid": "y", "controller": true}
                ],
                "annotations": {"kubernetes.io/config.mirror": "hash"},
                "deletionTimestamp": "2024-05-01T12:00:00Z"
            },
            "spec": {"nodeName": "node-a", "containers": []},
            "status": {"conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True"}
            ]}
        }))
        .unwrap();
        let state = pod_state(&pod);
        assert_eq!(state.uid, "u-1");
        assert_eq!(state.node_name.as_deref(), Some("node-a"));
        assert_eq!(
            state.controller,
            Some(OwnerReference {
                kind: "ReplicaSet".to_owned(),
                name: "web-abc".to_owned()
            })
        );
        assert!(state.mirror);
        assert!(state.ready);
        assert!(state.deleting);
    }

    #[test]
    fn pod_state_defaults() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u"},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]}
        }))
        .unwrap();
        let state = pod_state(&pod);
        assert_eq!(state.node_name, None);
        assert_eq!(state.controller, None);
        assert!(!state.mirror);
        assert!(!state.ready);
        assert!(!state.deleting);
    }

    #[test]
    fn controller_state_defaults() {
        let state = controller_state(&ObjectMeta::default(), None, None);
        assert_eq!(state.replicas, 1);
        assert_eq!(state.ready_replicas, 0);
        assert_eq!(state.controller, None);
    }

    #[test]
    fn api_error_keeps_status_and_causes() {
        let status: Status = serde_json::from_value(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Pod \"p\" is invalid",
            "reason": "Invalid",
            "details": {"name": "p", "kind": "Pod", "causes": [
                {"reason": "FieldValueInvalid", "message": "field is immutable", "field": "metadata.uid"}
            ]},
            "code": 422
        }))
        .unwrap();
        let error = api_error(kube::Error::Api(Box::new(status)));
        assert_eq!(error.status, Some(422));
        assert_eq!(error.reason, "Invalid");
        assert_eq!(error.message, "Pod \"p\" is invalid: field is immutable");
    }
}
