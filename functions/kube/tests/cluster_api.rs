//! `EksClusters` against the TLS stand-in of the Kubernetes API server:
//! reads, deletes and quarantines, every `Status` error the server sends, the
//! token's cluster binding, its refresh, and trust in the cluster's CA only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokenguard_core::contain::{ApiError, ClusterApi, OwnerReference};
use tokenguard_e2e::kube_tls::{KubeTls, Resource, pod_fixture, unrelated_ca_pem};
use tokenguard_kube::{
    ClusterEndpoint, ClusterSource, EksClusters, EksTokens, api_error, quarantine_policy,
};

const CLUSTER: &str = "prod";
const ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const NAMESPACE: &str = "shop";
const NODE: &str = "ip-10-0-1-17.eu-west-1.compute.internal";

fn tokens(secret_key: &str) -> EksTokens {
    let credentials = Credentials::new(ACCESS_KEY_ID, secret_key, None, None, "test");
    EksTokens::new(SharedCredentialsProvider::new(credentials), "eu-west-1")
}

fn clusters_trusting(server: &KubeTls, ca_pem: &str, secret_key: &str) -> EksClusters {
    let endpoint = ClusterEndpoint::from_pem(CLUSTER, &server.url(), ca_pem.as_bytes()).unwrap();
    let source = ClusterSource::Fixed(HashMap::from([(CLUSTER.to_owned(), endpoint)]));
    EksClusters::new(source, tokens(secret_key))
}

fn clusters(server: &KubeTls) -> EksClusters {
    clusters_trusting(server, server.ca_pem(), SECRET_KEY)
}

/// Starts a stand-in that checks signatures for [`CLUSTER`] and allows containment
/// in [`NAMESPACE`].
async fn server() -> KubeTls {
    let server = KubeTls::start().await.unwrap();
    server.verify_signatures(CLUSTER, ACCESS_KEY_ID, SECRET_KEY);
    server.grant_containment(NAMESPACE);
    server
}

fn owned_pod(name: &str, uid: &str, owner_kind: &str, owner: &str) -> Value {
    let mut pod = pod_fixture(NAMESPACE, name, uid, NODE);
    pod["metadata"]["labels"] = json!({"app": "web"});
    pod["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": owner_kind, "name": owner,
        "uid": "owner-uid", "controller": true, "blockOwnerDeletion": true
    }]);
    pod
}

/// Method and path of each request with the status it got.
fn calls(server: &KubeTls) -> Vec<(String, String, Option<u16>)> {
    server
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path, r.status))
        .collect()
}

fn call(method: &str, path: &str, status: u16) -> (String, String, Option<u16>) {
    (method.to_owned(), path.to_owned(), Some(status))
}

const POD_PATH: &str = "/api/v1/namespaces/shop/pods/web-1";
const POLICY_PATH: &str = "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies";
const QUARANTINE_POLICY_PATH: &str =
    "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/tokenguard-quarantine";

fn expect_error<T: std::fmt::Debug>(result: Result<T, ApiError>) -> ApiError {
    match result {
        Err(error) => error,
        Ok(value) => panic!("expected an API error, got {value:?}"),
    }
}

#[tokio::test]
async fn pod_found() {
    let server = server().await;
    server.add_pod(owned_pod("web-1", "uid-1", "ReplicaSet", "web-7d9f"));

    let pod = clusters(&server)
        .pod(CLUSTER, NAMESPACE, "web-1")
        .await
        .unwrap()
        .expect("the pod exists");

    assert_eq!(pod.uid, "uid-1");
    assert_eq!(pod.node_name.as_deref(), Some(NODE));
    assert_eq!(
        pod.controller,
        Some(OwnerReference {
            kind: "ReplicaSet".to_owned(),
            name: "web-7d9f".to_owned()
        })
    );
    assert!(pod.ready);
    assert!(!pod.mirror);
    assert!(!pod.deleting);
    assert_eq!(calls(&server), [call("GET", POD_PATH, 200)]);
}

#[tokio::test]
async fn pod_not_found() {
    let server = server().await;
    let pod = clusters(&server)
        .pod(CLUSTER, NAMESPACE, "web-1")
        .await
        .unwrap();
    assert_eq!(pod, None);
    assert_eq!(calls(&server), [call("GET", POD_PATH, 404)]);
}

#[tokio::test]
async fn namespace_not_granted_forbidden() {
    let server = server().await;
    let pod = pod_fixture("payments", "api-0", "uid-9", NODE);
    server.add_pod(pod);

    let error = expect_error(clusters(&server).pod(CLUSTER, "payments", "api-0").await);

    assert_eq!(error.status, Some(403));
    assert_eq!(error.reason, "Forbidden");
    assert_eq!(
        error.message,
        "pods \"api-0\" is forbidden: User \"tokenguard-detector\" cannot get resource \"pods\" \
         in API group \"\" in the namespace \"payments\""
    );
}

#[tokio::test]
async fn wrong_secret_unauthorized() {
    let server = server().await;
    server.add_pod(pod_fixture(NAMESPACE, "web-1", "uid-1", NODE));
    let clusters = clusters_trusting(&server, server.ca_pem(), "not-the-secret");

    let error = expect_error(clusters.pod(CLUSTER, NAMESPACE, "web-1").await);

    assert_eq!(error.status, Some(401));
    assert_eq!(error.reason, "Unauthorized");
    assert_eq!(error.message, "Unauthorized");
    let failures = server.auth_failures();
    assert_eq!(failures.len(), 1);
    assert!(failures[0].contains("signature mismatch"), "{failures:?}");
}

#[tokio::test]
async fn token_for_other_cluster_unauthorized() {
    let server = KubeTls::start().await.unwrap();
    server.verify_signatures("staging", ACCESS_KEY_ID, SECRET_KEY);
    server.grant_containment(NAMESPACE);

    let error = expect_error(clusters(&server).pod(CLUSTER, NAMESPACE, "web-1").await);

    assert_eq!(error.status, Some(401));
    assert!(server.auth_failures()[0].contains("cluster staging"));
}

/// Builds a kube client that trusts the stand-in's CA and sends `token`, if any.
fn raw_client(server: &KubeTls, token: Option<&str>) -> kube::Client {
    let endpoint =
        ClusterEndpoint::from_pem(CLUSTER, &server.url(), server.ca_pem().as_bytes()).unwrap();
    let mut config = kube::Config::new(endpoint.url().clone());
    config.root_cert = Some(endpoint.ca_certificates().to_vec());
    config.auth_info.token = token.map(SecretString::from);
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn missing_token_unauthorized() {
    let server = server().await;
    let pods: Api<Pod> = Api::namespaced(raw_client(&server, None), NAMESPACE);

    let error = api_error(pods.get("web-1").await.unwrap_err());

    assert_eq!(error.status, Some(401));
    assert_eq!(error.reason, "Unauthorized");
    assert_eq!(
        server.auth_failures(),
        ["no bearer token in the Authorization header"]
    );
}

#[tokio::test]
async fn malformed_tokens_unauthorized() {
    let server = server().await;
    let not_sts = format!(
        "k8s-aws-v1.{}",
        base64_url("https://evil.example.com/?Action=GetCallerIdentity")
    );
    let unsigned_cluster = format!(
        "k8s-aws-v1.{}",
        base64_url(
            "https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15\
             &X-Amz-Expires=60&X-Amz-Date=20240501T120000Z&X-Amz-SignedHeaders=host"
        )
    );
    let cases = [
        ("plain-service-account-token", "prefix"),
        ("k8s-aws-v1.***", "base64url"),
        (not_sts.as_str(), "unexpected hostname"),
        (
            unsigned_cluster.as_str(),
            "x-k8s-aws-id header is not signed",
        ),
    ];
    for (token, reason) in cases {
        let pods: Api<Pod> = Api::namespaced(raw_client(&server, Some(token)), NAMESPACE);
        let error = api_error(pods.get("web-1").await.unwrap_err());
        assert_eq!(error.status, Some(401), "token {token}");
        let failure = server.auth_failures().pop().unwrap();
        assert!(failure.contains(reason), "token {token}: {failure}");
    }
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test]
async fn delete_with_uid_and_grace_period() {
    let server = server().await;
    server.add_pod(pod_fixture(NAMESPACE, "web-1", "uid-1", NODE));

    clusters(&server)
        .delete_pod(CLUSTER, NAMESPACE, "web-1", "uid-1", 5)
        .await
        .unwrap();

    let pod = server
        .pod(NAMESPACE, "web-1")
        .expect("a graceful delete keeps the pod");
    assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 5);
    assert!(pod["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(calls(&server), [call("DELETE", POD_PATH, 200)]);
    let state = clusters(&server)
        .pod(CLUSTER, NAMESPACE, "web-1")
        .await
        .unwrap()
        .unwrap();
    assert!(state.deleting);
}

#[tokio::test]
async fn delete_with_zero_grace_removes_pod() {
    let server = server().await;
    server.add_pod(pod_fixture(NAMESPACE, "web-1", "uid-1", NODE));

    clusters(&server)
        .delete_pod(CLUSTER, NAMESPACE, "web-1", "uid-1", 0)
        .await
        .unwrap();

    assert_eq!(server.pod(NAMESPACE, "web-1"), None);
}

#[tokio::test]
async fn recreated_pod_not_deleted() {
    let server = server().await;
    server.add_pod(pod_fixture(NAMESPACE, "web-1", "uid-old", NODE));
    server.remove(Resource::Pods, NAMESPACE, "web-1");
    server.add_pod(pod_fixture(NAMESPACE, "web-1", "uid-new", NODE));

    let error = expect_error(
        clusters(&server)
            .delete_pod(CLUSTER, NAMESPACE, "web-1", "uid-old", 5)
            .await,
    );

    assert_eq!(error.status, Some(409));
    assert_eq!(error.reason, "Conflict");
    assert!(
        error
            .message
            .starts_with("Operation cannot be fulfilled on pods \"web-1\": "),
        "{}",
        error.message
    );
    assert!(
        error.message.ends_with(
            "Precondition failed: UID in precondition: uid-old, UID in object meta: uid-new"
        ),
        "{}",
        error.message
    );
    let pod = server.pod(NAMESPACE, "web-1").unwrap();
    assert_eq!(pod["metadata"]["uid"], "uid-new");
    assert!(pod["metadata"].get("deletionTimestamp").is_none());
}

#[tokio::test]
async fn delete_missing_pod_not_found() {
    let server = server().await;

    let error = expect_error(
        clusters(&server)
            .delete_pod(CLUSTER, NAMESPACE, "web-1", "uid-1", 5)
            .await,
    );

    assert_eq!(error.status, Some(404));
    assert_eq!(error.reason, "NotFound");
    assert_eq!(error.message, "pods \"web-1\" not found");
}

#[tokio::test]
async fn quarantine_labels_pod_and_creates_policy_once() {
    let server = server().await;
    server.add_pod(owned_pod("web-1", "uid-1", "ReplicaSet", "web-7d9f"));
    let clusters = clusters(&server);

    clusters
        .quarantine_pod(CLUSTER, NAMESPACE, "web-1", "uid-1")
        .await
        .unwrap();
    clusters
        .quarantine_pod(CLUSTER, NAMESPACE, "web-1", "uid-1")
        .await
        .unwrap();

    let labels = server.pod(NAMESPACE, "web-1").unwrap()["metadata"]["labels"].clone();
    assert_eq!(
        labels,
        json!({"app": "web", "tokenguard.io/quarantine": "true"})
    );
    let policy = server
        .object(
            Resource::NetworkPolicies,
            NAMESPACE,
            "tokenguard-quarantine",
        )
        .expect("the policy exists");
    assert_eq!(
        policy["spec"],
        json!({
            "podSelector": {"matchLabels": {"tokenguard.io/quarantine": "true"}},
            "policyTypes": ["Egress"]
        })
    );
    assert_eq!(
        calls(&server),
        [
            call("PATCH", POD_PATH, 200),
            call("POST", POLICY_PATH, 201),
            call("PATCH", POD_PATH, 200),
            call("POST", POLICY_PATH, 409),
            call("GET", QUARANTINE_POLICY_PATH, 200),
        ]
    );
}

/// Builds a `tokenguard-quarantine` policy in [`NAMESPACE`] with `spec`.
fn policy_with_spec(spec: Value) -> Value {
    json!({
        "metadata": {"name": "tokenguard-quarantine", "namespace": NAMESPACE},
        "spec": spec
    })
}

/// Returns the spec of tokenguard's policy, as the API server stores it.
fn quarantine_spec() -> Value {
    json!({
        "podSelector": {"matchLabels": {"tokenguard.io/quarantine": "true"}},
        "policyTypes": ["Egress"]
    })
}

/// Quarantines `web-1` against a stand-in that already contains `policy`, as
/// someone with write access to the namespace could have left it. Returns
/// the result, the stand-in and the policy as stored before the quarantine.
async fn quarantine_with_policy(policy: Value) -> (Result<(), ApiError>, KubeTls, Value) {
    let server = server().await;
    server.add_pod(owned_pod("web-1", "uid-1", "ReplicaSet", "web-7d9f"));
    let stored = server.add(Resource::NetworkPolicies, policy);
    let result = clusters(&server)
        .quarantine_pod(CLUSTER, NAMESPACE, "web-1", "uid-1")
        .await;
    (result, server, stored)
}

/// Checks that the pod was labelled, and that the policy was read once and
/// left as `before`.
fn assert_policy_read_only(server: &KubeTls, before: &Value) {
    let labels = server.pod(NAMESPACE, "web-1").unwrap()["metadata"]["labels"].clone();
    assert_eq!(
        labels,
        json!({"app": "web", "tokenguard.io/quarantine": "true"})
    );
    let after = server.object(
        Resource::NetworkPolicies,
        NAMESPACE,
        "tokenguard-quarantine",
    );
    assert_eq!(after.as_ref(), Some(before));
    assert_eq!(
        calls(server),
        [
            call("PATCH", POD_PATH, 200),
            call("POST", POLICY_PATH, 409),
            call("GET", QUARANTINE_POLICY_PATH, 200),
        ]
    );
}

#[tokio::test]
async fn existing_identical_policy_accepted() {
    let policy = serde_json::to_value(quarantine_policy(NAMESPACE)).unwrap();

    let (result, server, before) = quarantine_with_policy(policy).await;

    result.unwrap();
    assert_policy_read_only(&server, &before);
}

#[tokio::test]
async fn existing_policy_with_extra_metadata_accepted() {
    let mut policy = policy_with_spec(quarantine_spec());
    policy["spec"]["egress"] = json!([]);
    policy["metadata"]["labels"] = json!({
        "app.kubernetes.io/managed-by": "argocd",
        "team": "shop"
    });
    policy["metadata"]["annotations"] = json!({
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
        "argocd.argoproj.io/tracking-id": "shop:networking.k8s.io/NetworkPolicy"
    });
    policy["metadata"]["generation"] = json!(4);

    let (result, server, before) = quarantine_with_policy(policy).await;

    result.unwrap();
    assert_policy_read_only(&server, &before);
}

#[tokio::test]
async fn existing_policy_allowing_egress_rejected() {
    let mut policy = policy_with_spec(quarantine_spec());
    policy["spec"]["egress"] = json!([{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]);

    let (result, server, before) = quarantine_with_policy(policy).await;

    let error = expect_error(result);
    assert_eq!(error.status, None);
    let message = &error.message;
    assert!(
        message.starts_with(
            "NetworkPolicy shop/tokenguard-quarantine in cluster prod already exists but does \
             not deny all egress of quarantined pods: it allows egress through 1 rule. "
        ),
        "{message}"
    );
    assert!(
        message.contains("`kubectl -n shop patch networkpolicy tokenguard-quarantine "),
        "{message}"
    );
    assert!(
        message.contains("`kubectl -n shop delete networkpolicy tokenguard-quarantine`"),
        "{message}"
    );
    assert_policy_read_only(&server, &before);
}

#[tokio::test]
async fn existing_policy_selecting_other_pods_rejected() {
    let policy = policy_with_spec(json!({
        "podSelector": {"matchLabels": {"app": "web"}},
        "policyTypes": ["Egress"]
    }));

    let (result, server, before) = quarantine_with_policy(policy).await;

    let error = expect_error(result);
    assert_eq!(error.status, None);
    assert!(
        error.message.contains(
            ": its podSelector is {\"matchLabels\":{\"app\":\"web\"}}, which does not \
             select exactly the pods labelled tokenguard.io/quarantine=true. "
        ),
        "{}",
        error.message
    );
    assert_policy_read_only(&server, &before);
}

#[tokio::test]
async fn existing_policy_without_egress_type_rejected() {
    let policy = policy_with_spec(json!({
        "podSelector": {"matchLabels": {"tokenguard.io/quarantine": "true"}},
        "policyTypes": ["Ingress"]
    }));

    let (result, server, before) = quarantine_with_policy(policy).await;

    let error = expect_error(result);
    assert!(
        error
            .message
            .contains(": its policyTypes [\"Ingress\"] do not include Egress. "),
        "{}",
        error.message
    );
    assert_policy_read_only(&server, &before);
}

#[tokio::test]
async fn existing_policy_get_forbidden() {
    let server = KubeTls::start().await.unwrap();
    server.verify_signatures(CLUSTER, ACCESS_KEY_ID, SECRET_KEY);
    server.grant("patch", Resource::Pods, NAMESPACE);
    server.grant("create", Resource::NetworkPolicies, NAMESPACE);
    server.add_pod(owned_pod("web-1", "uid-1", "ReplicaSet", "web-7d9f"));
    server.add(
        Resource::NetworkPolicies,
        policy_with_spec(quarantine_spec()),
    );

    let error = expect_error(
        clusters(&server)
            .quarantine_pod(CLUSTER, NAMESPACE, "web-1", "uid-1")
            .await,
    );

    assert_eq!(error.status, Some(403));
    assert_eq!(
        error.message,
        "networkpolicies.networking.k8s.io \"tokenguard-quarantine\" is forbidden: User \
         \"tokenguard-detector\" cannot get resource \"networkpolicies\" in API group \
         \"networking.k8s.io\" in the namespace \"shop\""
    );
}

#[tokio::test]
async fn quarantine_pod_without_labels() {
    let server = server().await;
    server.add_pod(pod_fixture(NAMESPACE, "web-1", "uid-1", NODE));

    clusters(&server)
        .quarantine_pod(CLUSTER, NAMESPACE, "web-1", "uid-1")
        .await
        .unwrap();

    let labels = server.pod(NAMESPACE, "web-1").unwrap()["metadata"]["labels"].clone();
    assert_eq!(labels, json!({"tokenguard.io/quarantine": "true"}));
    assert_eq!(
        calls(&server),
        [
            call("PATCH", POD_PATH, 422),
            call("GET", POD_PATH, 200),
            call("PATCH", POD_PATH, 200),
            call("POST", POLICY_PATH, 201),
        ]
    );
}

#[tokio::test]
async fn quarantine_skips_recreated_pod() {
    let server = server().await;
    server.add_pod(owned_pod("web-1", "uid-new", "ReplicaSet", "web-7d9f"));

    let error = expect_error(
        clusters(&server)
            .quarantine_pod(CLUSTER, NAMESPACE, "web-1", "uid-old")
            .await,
    );

    assert_eq!(error.status, Some(422));
    assert_eq!(error.reason, "Invalid");
    assert_eq!(
        error.message,
        "pod shop/web-1 was replaced: its uid is now uid-new, not the reported uid-old, and \
         the new pod was left alone"
    );
    let labels = server.pod(NAMESPACE, "web-1").unwrap()["metadata"]["labels"].clone();
    assert_eq!(labels, json!({"app": "web"}));
    assert_eq!(
        server.object(
            Resource::NetworkPolicies,
            NAMESPACE,
            "tokenguard-quarantine"
        ),
        None
    );
    assert_eq!(
        calls(&server),
        [call("PATCH", POD_PATH, 422), call("GET", POD_PATH, 200)]
    );
}

#[tokio::test]
async fn quarantine_policy_create_forbidden() {
    let server = KubeTls::start().await.unwrap();
    server.verify_signatures(CLUSTER, ACCESS_KEY_ID, SECRET_KEY);
    server.grant("patch", Resource::Pods, NAMESPACE);
    server.add_pod(owned_pod("web-1", "uid-1", "ReplicaSet", "web-7d9f"));

    let error = expect_error(
        clusters(&server)
            .quarantine_pod(CLUSTER, NAMESPACE, "web-1", "uid-1")
            .await,
    );

    assert_eq!(error.status, Some(403));
    assert_eq!(
        error.message,
        "networkpolicies.networking.k8s.io is forbidden: User \"tokenguard-detector\" cannot \
         create resource \"networkpolicies\" in API group \"networking.k8s.io\" in the namespace \
         \"shop\""
    );
}

#[tokio::test]
async fn replica_set_to_deployment_chain() {
    let server = server().await;
    server.add(
        Resource::ReplicaSets,
        json!({
            "metadata": {
                "name": "web-7d9f", "namespace": NAMESPACE,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                    "name": "web", "uid": "d-1", "controller": true}]
            },
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 3, "readyReplicas": 2}
        }),
    );
    server.add(
        Resource::Deployments,
        json!({
            "metadata": {"name": "web", "namespace": NAMESPACE},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 4, "readyReplicas": 4}
        }),
    );
    let clusters = clusters(&server);

    let replica_set = clusters
        .controller(CLUSTER, NAMESPACE, "ReplicaSet", "web-7d9f")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(replica_set.replicas, 3);
    assert_eq!(replica_set.ready_replicas, 2);
    let owner = replica_set
        .controller
        .expect("the Deployment owns the ReplicaSet");
    assert_eq!(owner.kind, "Deployment");
    assert_eq!(owner.name, "web");

    let deployment = clusters
        .controller(CLUSTER, NAMESPACE, &owner.kind, &owner.name)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deployment.replicas, 4);
    assert_eq!(deployment.ready_replicas, 4);
    assert_eq!(deployment.controller, None);
    assert_eq!(
        calls(&server),
        [
            call(
                "GET",
                "/apis/apps/v1/namespaces/shop/replicasets/web-7d9f",
                200
            ),
            call("GET", "/apis/apps/v1/namespaces/shop/deployments/web", 200),
        ]
    );
}

#[tokio::test]
async fn stateful_set_defaults_and_missing_controller() {
    let server = server().await;
    server.add(
        Resource::StatefulSets,
        json!({
            "metadata": {"name": "db", "namespace": NAMESPACE},
            "spec": {"selector": {"matchLabels": {"app": "db"}}, "serviceName": "db",
                     "template": {"spec": {"containers": []}}},
            "status": {"replicas": 1}
        }),
    );
    let clusters = clusters(&server);

    let set = clusters
        .controller(CLUSTER, NAMESPACE, "StatefulSet", "db")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(set.replicas, 1);
    assert_eq!(set.ready_replicas, 0);

    let missing = clusters
        .controller(CLUSTER, NAMESPACE, "ReplicaSet", "gone")
        .await
        .unwrap();
    assert_eq!(missing, None);
    let error = expect_error(
        clusters
            .controller(CLUSTER, NAMESPACE, "DaemonSet", "agent")
            .await,
    );
    assert_eq!(error.status, None);
    assert!(error.message.contains("DaemonSet"), "{}", error.message);
}

#[tokio::test]
async fn other_ca_rejected() {
    let server = server().await;
    server.add_pod(pod_fixture(NAMESPACE, "web-1", "uid-1", NODE));
    let clusters = clusters_trusting(&server, &unrelated_ca_pem(), SECRET_KEY);

    let error = expect_error(clusters.pod(CLUSTER, NAMESPACE, "web-1").await);

    assert_eq!(error.status, None);
    assert!(
        error
            .message
            .contains("failed to reach the Kubernetes API of cluster prod"),
        "{}",
        error.message
    );
    assert!(error.message.contains("UnknownIssuer"), "{}", error.message);
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn eks_ca_data_reaches_server() {
    use base64::Engine;
    let server = server().await;
    server.add_pod(pod_fixture(NAMESPACE, "web-1", "uid-1", NODE));
    let ca_data = base64::engine::general_purpose::STANDARD.encode(server.ca_pem());
    let endpoint = ClusterEndpoint::from_eks(CLUSTER, &server.url(), &ca_data).unwrap();
    let source = ClusterSource::Fixed(HashMap::from([(CLUSTER.to_owned(), endpoint)]));
    let clusters = EksClusters::new(source, tokens(SECRET_KEY));

    let pod = clusters.pod(CLUSTER, NAMESPACE, "web-1").await.unwrap();

    assert_eq!(pod.map(|pod| pod.uid).as_deref(), Some("uid-1"));
}

/// Seconds added to the real time by [`advanced_clock`].
static CLOCK_OFFSET: AtomicU64 = AtomicU64::new(0);

fn advanced_clock() -> SystemTime {
    SystemTime::now() + Duration::from_secs(CLOCK_OFFSET.load(Ordering::SeqCst))
}

#[tokio::test]
async fn token_replaced_after_unauthorized() {
    static OFFSET: AtomicU64 = AtomicU64::new(0);
    fn clock() -> SystemTime {
        SystemTime::now() + Duration::from_secs(OFFSET.load(Ordering::SeqCst))
    }
    let server = server().await;
    server.add_pod(pod_fixture(NAMESPACE, "web-1", "uid-1", NODE));
    let clusters = clusters_trusting(&server, server.ca_pem(), "not-the-secret").with_clock(clock);

    let first = expect_error(clusters.pod(CLUSTER, NAMESPACE, "web-1").await);
    OFFSET.store(60, Ordering::SeqCst);
    let second = expect_error(clusters.pod(CLUSTER, NAMESPACE, "web-1").await);

    assert_eq!(first.status, Some(401));
    assert_eq!(second.status, Some(401));
    let signed: Vec<SystemTime> = server
        .requests()
        .iter()
        .map(|r| r.token_signed_at.expect("an EKS token"))
        .collect();
    assert_eq!(signed.len(), 2);
    assert!(
        signed[1] >= signed[0] + Duration::from_secs(60),
        "a new token is signed after a 401"
    );
}

#[tokio::test]
async fn token_replaced_after_fourteen_minutes() {
    let server = server().await;
    server.add_pod(pod_fixture(NAMESPACE, "web-1", "uid-1", NODE));
    let clusters = clusters(&server).with_clock(advanced_clock);

    clusters.pod(CLUSTER, NAMESPACE, "web-1").await.unwrap();
    CLOCK_OFFSET.store(13 * 60, Ordering::SeqCst);
    clusters.pod(CLUSTER, NAMESPACE, "web-1").await.unwrap();
    CLOCK_OFFSET.store(14 * 60 + 1, Ordering::SeqCst);
    clusters.pod(CLUSTER, NAMESPACE, "web-1").await.unwrap();

    let signed: Vec<SystemTime> = server
        .requests()
        .iter()
        .map(|r| r.token_signed_at.expect("an EKS token"))
        .collect();
    assert_eq!(signed.len(), 3);
    assert_eq!(
        signed[0], signed[1],
        "the token is reused within 14 minutes"
    );
    assert!(
        signed[2] >= signed[0] + Duration::from_secs(14 * 60),
        "a new token is signed after 14 minutes"
    );
}
