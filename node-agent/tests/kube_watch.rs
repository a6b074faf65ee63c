//! The pod watch against the stand-in API server, and the agent without one.

mod common;

use std::time::Duration;

use common::*;
use futures::stream;
use serde_json::json;
use tokenguard_agent::cli::{Config, Output};
use tokenguard_agent::pods::{ApiState, KubeAccess, PodIndex};
use tokenguard_agent::{Agent, Metrics};
use tokenguard_e2e::kube_api::KubeApi;

const WAIT: Duration = Duration::from_secs(5);

async fn api_with_fixture() -> (KubeApi, tempfile::TempDir, KubeAccess) {
    let api = KubeApi::start().await.unwrap();
    api.add_pod(fixture_pod());
    let mut elsewhere = fixture_pod();
    elsewhere["metadata"]["uid"] = json!("11111111-2222-4333-8444-555555555555");
    elsewhere["metadata"]["name"] = json!("payments-api-6d8f7b9c5-zz9zz");
    elsewhere["spec"]["nodeName"] = json!("ip-10-0-99-99.eu-west-1.compute.internal");
    api.add_pod(elsewhere);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    (api, dir, KubeAccess::Kubeconfig(kubeconfig))
}

async fn wait_connected(index: &PodIndex) {
    for _ in 0..100 {
        if index.state() == ApiState::Connected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("pod watch did not connect, state {:?}", index.state());
}

#[tokio::test]
async fn pod_found_with_names() {
    let (api, _dir, access) = api_with_fixture().await;
    let (index, task) = PodIndex::spawn(access, NODE);

    let pod = index
        .lookup(POD_UID, Some(CONTAINER_ID), WAIT)
        .await
        .expect("the fixture pod on this node is indexed");
    assert_eq!(pod.namespace, "payments");
    assert_eq!(pod.name, "payments-api-6d8f7b9c5-x2k4q");
    assert_eq!(pod.service_account.as_deref(), Some("payments-api"));
    let owner = pod.owner.as_ref().unwrap();
    assert_eq!(owner.kind, "Deployment");
    assert_eq!(owner.name, "payments-api");
    let container = &pod.containers[CONTAINER_ID];
    assert_eq!(container.name, "api");
    assert_eq!(
        container.image,
        "111122223333.dkr.ecr.eu-west-1.amazonaws.com/payments-api:1.4.2"
    );
    assert_eq!(container.runtime, "containerd");
    assert_eq!(pod.containers.len(), 2, "both containers indexed by id");

    assert!(
        index.get("11111111-2222-4333-8444-555555555555").is_none(),
        "a pod of another node must not be indexed"
    );
    // The watch starts right after the list.
    for _ in 0..100 {
        if api.requests().iter().any(|r| r.contains("watch=true")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let requests = api.requests();
    let selector = format!("fieldSelector=spec.nodeName%3D{NODE}");
    assert!(
        requests.iter().all(|r| r.contains(&selector)),
        "every request selects this node: {requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.contains("watch=true")),
        "{requests:?}"
    );
    task.abort();
}

#[tokio::test]
async fn pod_added_after_start_found() {
    let (api, _dir, access) = api_with_fixture().await;
    let (index, task) = PodIndex::spawn(access, NODE);
    wait_connected(&index).await;

    // A new pod appears first without container statuses, as when the
    // kubelet has not reported the started container yet.
    let uid = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
    let id = "c".repeat(64);
    let mut pod = fixture_pod();
    pod["metadata"]["uid"] = json!(uid);
    pod["metadata"]["name"] = json!("payments-api-6d8f7b9c5-n3w9p");
    let statuses = pod["status"]["containerStatuses"].take();
    api.add_pod(pod.clone());

    let writer = tokio::spawn({
        let mut pod = pod.clone();
        let mut statuses = statuses.clone();
        let id = id.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            statuses[0]["containerID"] = json!(format!("containerd://{id}"));
            pod["status"]["containerStatuses"] = statuses;
            api.update_pod(pod);
            api
        }
    });

    let found = index
        .lookup(uid, Some(&id), WAIT)
        .await
        .expect("the pod added after start is found");
    assert_eq!(found.name, "payments-api-6d8f7b9c5-n3w9p");
    assert_eq!(
        found.containers.get(&id).map(|c| c.name.as_str()),
        Some("api"),
        "the lookup waits for the container status update"
    );

    let api = writer.await.unwrap();
    assert!(api.delete_pod(uid));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        index.get(uid).is_some(),
        "a deleted pod stays for reads reported late"
    );
    task.abort();
}

/// Collects log lines in memory; current-thread runtimes keep every task on
/// the thread whose default subscriber this sets.
fn capture_logs() -> (
    tracing::subscriber::DefaultGuard,
    std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) {
    let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = BufferWriter(buffer.clone());
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    (tracing::subscriber::set_default(subscriber), buffer)
}

#[tokio::test(flavor = "current_thread")]
async fn api_down_warns_once_events_flow() {
    let (_guard, logs) = capture_logs();
    let host = FakeHost::new();
    let records: Vec<_> = (0..3)
        .map(|i| open_record(4000 + i, "/usr/local/bin/python3.12", 100 + u64::from(i)))
        .collect();
    for record in &records {
        host.add_pod_process(record);
    }

    // A kubeconfig pointing at a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        tokenguard_e2e::kube_api::kubeconfig(&format!("http://127.0.0.1:{port}")),
    )
    .unwrap();

    let mut config = Config::new("prod", NODE);
    config.output = Output::Stdout;
    config.kube = Some(KubeAccess::Kubeconfig(kubeconfig));
    config.proc_root = host.proc_root();
    config.cgroup_root = host.cgroup_root();
    config.pod_lookup_wait = Duration::from_secs(2);

    let (writer, output) = memory_writer();
    let agent = Agent::new(config).with_writer(writer);
    let metrics = agent.metrics();
    // Space the reads so that the watch fails and retries in between.
    let source = stream::unfold(records.into_iter(), |mut records| async move {
        let record = records.next()?;
        tokio::time::sleep(Duration::from_millis(700)).await;
        Some((record, records))
    });
    tokio::time::timeout(Duration::from_secs(30), agent.run(source))
        .await
        .expect("the agent finishes without the API")
        .unwrap();

    let events = json_lines(&output);
    assert_eq!(events.len(), 3, "every read is reported: {events:?}");
    for event in &events {
        assert_eq!(event["pod"]["uid"], POD_UID);
        assert!(
            event["pod"].get("name").is_none(),
            "no names without the API"
        );
        assert_eq!(event["container"]["id"], CONTAINER_ID);
        assert_eq!(event["container"]["runtime"], "containerd");
        assert_eq!(event["token"]["kind"], "irsa");
        assert_eq!(
            event["token"]["path"],
            "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"
        );
        assert!(event["event_id"].as_str().unwrap().starts_with(BOOT_ID));
    }
    assert_eq!(Metrics::get(&metrics.events_built), 3);

    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let warnings = logs
        .lines()
        .filter(|line| line.contains("Kubernetes API unreachable"))
        .count();
    assert_eq!(warnings, 1, "one warning per outage, logs:\n{logs}");
}
