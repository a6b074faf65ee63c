//! Names for pod uids and container ids, from a watch on the pods of this node.
//!
//! The index is filled by a kube-rs watcher with the field selector
//! `spec.nodeName=<node>`, so the agent lists and watches only its own pods.
//! Without a reachable API server the agent still reports pod uids and
//! container ids from cgroups, warns once per outage, and keeps retrying the
//! watch with backoff in the background.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use thiserror::Error;
use tokenguard_schema::Owner;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::record::{is_valid_name, truncate_utf8};

/// How long a deleted pod stays in the index, for reads reported after the
/// pod was deleted (processes in a terminating pod keep running for its grace
/// period).
const DELETED_POD_RETENTION: Duration = Duration::from_secs(300);

/// How long a lookup that timed out is not waited for again, so a container
/// that never shows up in the pod status delays only its first reads.
const GAVE_UP_RETENTION: Duration = Duration::from_secs(60);

/// Bytes of a rejected pod field that a warning repeats.
const MAX_LOGGED_VALUE: usize = 80;

/// Delay before retrying to build a Kubernetes client whose configuration
/// could not be loaded.
const CONFIG_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Range of the Unix-minute suffix that CronJob controllers give their Jobs
/// (`<cronjob>-<scheduled minute>`) that the index accepts: from about
/// 2015-01-01 to 2100-01-01.
const CRONJOB_MINUTES: std::ops::RangeInclusive<i64> = 23_667_840..=68_374_080;

/// How long after its scheduled minute the pod of a CronJob's Job may be
/// created for the Job to count as the CronJob's. Retries of a failed Job
/// create pods later, within the Job's backoff.
const CRONJOB_MAX_POD_DELAY: i64 = 7 * 24 * 3600;

/// Source of the watcher's API server address and credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeAccess {
    /// In-cluster service account, or `KUBECONFIG` / `~/.kube/config`.
    Infer,
    /// A kubeconfig file.
    Kubeconfig(PathBuf),
}

/// A failure to set up the Kubernetes client.
#[derive(Debug, Error)]
pub enum KubeError {
    /// Neither in-cluster settings nor a kubeconfig were usable.
    #[error(
        "failed to load Kubernetes client settings: {0}; run in a pod with a service account, \
         set KUBECONFIG, or pass --no-kube"
    )]
    Infer(#[source] kube::config::InferConfigError),
    /// The kubeconfig file could not be read or used.
    #[error("failed to load kubeconfig {path}: {source}; check the file or pass --no-kube")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The client could not be built from its settings.
    #[error("failed to build Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// A container of a pod, from its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub name: String,
    pub image: String,
    /// Runtime prefix of the container id, such as `containerd`.
    pub runtime: String,
}

/// The names the agent reports for a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub service_account: Option<String>,
    /// Top-level controller, or `None` for a bare pod.
    pub owner: Option<Owner>,
    /// Containers by runtime container id, without the runtime prefix.
    pub containers: HashMap<String, ContainerInfo>,
}

/// Whether the watch currently delivers pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiState {
    /// The agent runs without the Kubernetes API.
    Disabled,
    /// The watch was started and has not delivered pods or failed yet.
    Starting,
    /// The watch delivers pods.
    Connected,
    /// The last attempt failed; the watcher retries with backoff.
    Unreachable,
}

#[derive(Debug)]
struct Entry {
    info: Arc<PodInfo>,
    deleted_at: Option<Instant>,
}

#[derive(Debug)]
struct Shared {
    pods: RwLock<HashMap<String, Entry>>,
    /// Bumped on each change of `pods`, to wake waiting lookups.
    version: watch::Sender<u64>,
    state: watch::Sender<ApiState>,
    gave_up: Mutex<HashMap<(String, Option<String>), Instant>>,
}

/// Pods of this node by uid, shared between the watcher and the pipeline.
#[derive(Debug, Clone)]
pub struct PodIndex {
    shared: Arc<Shared>,
}

impl PodIndex {
    fn with_state(state: ApiState) -> PodIndex {
        PodIndex {
            shared: Arc::new(Shared {
                pods: RwLock::new(HashMap::new()),
                version: watch::Sender::new(0),
                state: watch::Sender::new(state),
                gave_up: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Builds an index that stays empty, for `--no-kube`.
    pub fn disabled() -> PodIndex {
        PodIndex::with_state(ApiState::Disabled)
    }

    /// Builds an index that tests or other sources fill with [`PodIndex::apply`].
    pub fn manual() -> PodIndex {
        PodIndex::with_state(ApiState::Connected)
    }

    /// Starts a background watch of the pods on `node_name` and returns the
    /// index it fills. Dropping the handle does not stop the watch; abort it.
    pub fn spawn(access: KubeAccess, node_name: &str) -> (PodIndex, JoinHandle<()>) {
        let index = PodIndex::with_state(ApiState::Starting);
        let task = tokio::spawn(run_watch(index.clone(), access, node_name.to_owned()));
        (index, task)
    }

    /// Current state of the watch.
    pub fn state(&self) -> ApiState {
        *self.shared.state.borrow()
    }

    /// Returns the pod with `uid`, deleted or not.
    pub fn get(&self, uid: &str) -> Option<Arc<PodInfo>> {
        let pods = self.shared.pods.read().unwrap_or_else(|p| p.into_inner());
        pods.get(uid).map(|entry| entry.info.clone())
    }

    /// Number of pods in the index, deleted ones included.
    pub fn len(&self) -> usize {
        self.shared
            .pods
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Returns whether the index contains no pod.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Looks up `uid` and, when given, its container `container_id`, waiting
    /// up to `wait` for the watch to deliver a pod or container status that
    /// is not in the index yet.
    ///
    /// Does not wait while the API is disabled or unreachable, nor again for
    /// a pod and container that timed out in the last minute.
    pub async fn lookup(
        &self,
        uid: &str,
        container_id: Option<&str>,
        wait: Duration,
    ) -> Option<Arc<PodInfo>> {
        let complete = |info: &Option<Arc<PodInfo>>| match (info, container_id) {
            (Some(pod), Some(id)) => pod.containers.contains_key(id),
            (Some(_), None) => true,
            (None, _) => false,
        };
        let found = self.get(uid);
        if complete(&found) || wait.is_zero() {
            return found;
        }
        let key = (uid.to_owned(), container_id.map(str::to_owned));
        if self.recently_gave_up(&key) {
            return found;
        }

        let mut versions = self.shared.version.subscribe();
        let mut states = self.shared.state.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let found = self.get(uid);
            if complete(&found) {
                return found;
            }
            if matches!(self.state(), ApiState::Disabled | ApiState::Unreachable) {
                return found;
            }
            let changed = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    result = versions.changed() => result.is_ok(),
                    result = states.changed() => result.is_ok(),
                }
            })
            .await;
            if !matches!(changed, Ok(true)) {
                debug!(pod_uid = uid, container_id, "pod lookup timed out");
                self.give_up(key);
                return self.get(uid);
            }
        }
    }

    fn recently_gave_up(&self, key: &(String, Option<String>)) -> bool {
        let mut gave_up = self
            .shared
            .gave_up
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        gave_up.retain(|_, at| at.elapsed() < GAVE_UP_RETENTION);
        gave_up.contains_key(key)
    }

    fn give_up(&self, key: (String, Option<String>)) {
        let mut gave_up = self
            .shared
            .gave_up
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        gave_up.insert(key, Instant::now());
    }

    /// Adds or replaces a pod. Pods without uid, namespace or name are skipped.
    pub fn apply(&self, pod: &Pod) {
        let Some(info) = pod_info(pod) else {
            return;
        };
        let mut pods = self.shared.pods.write().unwrap_or_else(|p| p.into_inner());
        purge_deleted(&mut pods);
        pods.insert(
            info.uid.clone(),
            Entry {
                info: Arc::new(info),
                deleted_at: None,
            },
        );
        drop(pods);
        self.shared.version.send_modify(|v| *v += 1);
    }

    /// Marks a pod deleted; it stays for [`DELETED_POD_RETENTION`].
    pub fn delete(&self, uid: &str) {
        let mut pods = self.shared.pods.write().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = pods.get_mut(uid) {
            entry.deleted_at.get_or_insert_with(Instant::now);
        }
        drop(pods);
        self.shared.version.send_modify(|v| *v += 1);
    }

    /// Marks deleted every pod not in `live`, after a full re-list.
    fn retain_listed(&self, live: &[String]) {
        let mut pods = self.shared.pods.write().unwrap_or_else(|p| p.into_inner());
        for (uid, entry) in pods.iter_mut() {
            if !live.contains(uid) {
                entry.deleted_at.get_or_insert_with(Instant::now);
            }
        }
        purge_deleted(&mut pods);
    }

    fn set_state(&self, state: ApiState) {
        self.shared.state.send_replace(state);
    }
}

fn purge_deleted(pods: &mut HashMap<String, Entry>) {
    pods.retain(|_, entry| {
        entry
            .deleted_at
            .is_none_or(|at| at.elapsed() < DELETED_POD_RETENTION)
    });
}

async fn run_watch(index: PodIndex, access: KubeAccess, node_name: String) {
    let mut warned = false;
    let client = loop {
        match build_client(&access).await {
            Ok(client) => break client,
            Err(error) => {
                if !warned {
                    warn!(
                        error = %error,
                        "Kubernetes API unavailable; reporting pod uids and container ids \
                         without names, retrying in the background"
                    );
                    warned = true;
                }
                index.set_state(ApiState::Unreachable);
                tokio::time::sleep(CONFIG_RETRY_DELAY).await;
            }
        }
    };

    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut listed: Vec<String> = Vec::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if !matches!(event, Event::Init) && index.state() != ApiState::Connected {
                    if warned {
                        info!(node = %node_name, "Kubernetes API reachable again; pod names resume");
                    } else {
                        info!(node = %node_name, "watching pods of this node");
                    }
                    warned = false;
                    index.set_state(ApiState::Connected);
                }
                handle_event(&index, event, &mut listed);
            }
            Err(error) => {
                if !warned {
                    warn!(
                        error = %error, node = %node_name,
                        "Kubernetes API unreachable; reporting pod uids and container ids \
                         without names, retrying the watch with backoff"
                    );
                    warned = true;
                } else {
                    debug!(error = %error, "pod watch retry failed");
                }
                index.set_state(ApiState::Unreachable);
            }
        }
    }
}

fn handle_event(index: &PodIndex, event: Event<Pod>, listed: &mut Vec<String>) {
    match event {
        Event::Init => listed.clear(),
        Event::InitApply(pod) => {
            if let Some(uid) = pod.metadata.uid.clone() {
                listed.push(uid);
            }
            index.apply(&pod);
        }
        Event::InitDone => index.retain_listed(listed),
        Event::Apply(pod) => index.apply(&pod),
        Event::Delete(pod) => {
            if let Some(uid) = &pod.metadata.uid {
                index.delete(uid);
            }
        }
    }
}

async fn build_client(access: &KubeAccess) -> Result<kube::Client, KubeError> {
    let config = match access {
        KubeAccess::Infer => kube::Config::infer().await.map_err(KubeError::Infer)?,
        KubeAccess::Kubeconfig(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|source| KubeError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|source| KubeError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
    };
    kube::Client::try_from(config).map_err(KubeError::Client)
}

/// Extracts the names the agent reports from a pod object.
pub fn pod_info(pod: &Pod) -> Option<PodInfo> {
    let metadata = &pod.metadata;
    let uid = metadata.uid.clone()?;
    let namespace = metadata.namespace.clone()?;
    let name = metadata.name.clone()?;
    let service_account = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.service_account_name.clone())
        .filter(|account| reportable_name(account, "service account", &namespace, &name));
    // The API server checks only that an owner reference has a non-empty kind
    // and name (`validateOwnerReference` in k8s.io/apimachinery), but the
    // detector rejects the whole event for an owner it cannot key. Without
    // the owner, the detector scopes the pod's reads by pod name.
    let owner = top_level_owner(pod).filter(|owner| {
        reportable_name(&owner.kind, "owner kind", &namespace, &name)
            && reportable_name(&owner.name, "owner name", &namespace, &name)
    });

    let mut containers = HashMap::new();
    if let Some(status) = &pod.status {
        let all = [
            &status.init_container_statuses,
            &status.container_statuses,
            &status.ephemeral_container_statuses,
        ];
        for statuses in all.into_iter().flatten() {
            for status in statuses {
                if let Some((id, info)) = container_info(status) {
                    containers.insert(id, info);
                }
            }
        }
    }

    Some(PodInfo {
        uid,
        namespace,
        name,
        service_account,
        owner,
        containers,
    })
}

/// Checks `value`, the `field` of pod `namespace/name`, against the
/// detector's rules for names, and logs a warning when it fails them.
fn reportable_name(value: &str, field: &'static str, namespace: &str, name: &str) -> bool {
    if is_valid_name(value) {
        return true;
    }
    let mut shown = value.to_owned();
    truncate_utf8(&mut shown, MAX_LOGGED_VALUE);
    warn!(
        namespace, pod = name, field, value = ?shown, bytes = value.len(),
        "invalid name in a pod field; leaving it out of events, which the detector would reject"
    );
    false
}

/// Splits `containerd://<id>`, `cri-o://<id>` or `docker://<id>`.
fn container_info(status: &ContainerStatus) -> Option<(String, ContainerInfo)> {
    let (runtime, id) = status.container_id.as_deref()?.split_once("://")?;
    if id.is_empty() {
        return None;
    }
    Some((
        id.to_owned(),
        ContainerInfo {
            name: status.name.clone(),
            image: status.image.clone(),
            runtime: runtime.to_owned(),
        },
    ))
}

/// Infers the top-level controller of a pod from its owner reference
/// without reading the owner objects.
///
/// - A ReplicaSet named `<deployment>-<pod-template-hash>` becomes that
///   Deployment, using the pod's `pod-template-hash` label.
/// - A Job named `<cronjob>-<minute>` becomes that CronJob when the suffix is
///   a Unix minute no later than the pod's creation and at most seven days
///   before it, as the CronJob controller names its Jobs. A Job named so by
///   hand stays a Job unless its pods were created in that window.
/// - Every other owner (StatefulSet, DaemonSet, Node for static pods, custom
///   controllers) is reported as is.
pub fn top_level_owner(pod: &Pod) -> Option<Owner> {
    let references = pod.metadata.owner_references.as_ref()?;
    let owner = references
        .iter()
        .find(|r| r.controller == Some(true))
        .or_else(|| references.first())?;
    let labels = pod.metadata.labels.as_ref();

    match owner.kind.as_str() {
        "ReplicaSet" => {
            if let Some(deployment) = deployment_of(&owner.name, labels) {
                return Some(Owner {
                    kind: "Deployment".to_owned(),
                    name: deployment,
                });
            }
        }
        "Job" => {
            let created = pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|time| time.0.as_second());
            if let Some(cronjob) = cronjob_of(&owner.name, created) {
                return Some(Owner {
                    kind: "CronJob".to_owned(),
                    name: cronjob,
                });
            }
        }
        _ => {}
    }
    Some(Owner {
        kind: owner.kind.clone(),
        name: owner.name.clone(),
    })
}

fn deployment_of(replica_set: &str, labels: Option<&BTreeMap<String, String>>) -> Option<String> {
    let hash = labels?.get("pod-template-hash")?;
    let deployment = replica_set.strip_suffix(hash.as_str())?.strip_suffix('-')?;
    (!deployment.is_empty()).then(|| deployment.to_owned())
}

fn cronjob_of(job: &str, pod_created: Option<i64>) -> Option<String> {
    let (cronjob, suffix) = job.rsplit_once('-')?;
    if cronjob.is_empty() || suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let minute: i64 = suffix.parse().ok()?;
    if !CRONJOB_MINUTES.contains(&minute) {
        return None;
    }
    let delay = pod_created? - minute * 60;
    (0..=CRONJOB_MAX_POD_DELAY)
        .contains(&delay)
        .then(|| cronjob.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(owner_kind: &str, owner_name: &str, labels: serde_json::Value, created: &str) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "p",
                "namespace": "ns",
                "uid": "7c1d5a3e-2b4f-4e8a-9c6d-0f1e2d3c4b5a",
                "creationTimestamp": created,
                "labels": labels,
                "ownerReferences": [{
                    "apiVersion": "apps/v1",
                    "kind": owner_kind,
                    "name": owner_name,
                    "uid": "0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d",
                    "controller": true,
                    "blockOwnerDeletion": true
                }]
            },
            "spec": {"containers": [{"name": "c", "image": "i"}], "serviceAccountName": "sa"},
            "status": {
                "containerStatuses": [{
                    "name": "c",
                    "image": "registry.example/app:1",
                    "imageID": "registry.example/app@sha256:00",
                    "containerID": "containerd://3b0f5e4c9a7d2e1f8c6b5a4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f",
                    "ready": true,
                    "restartCount": 0
                }]
            }
        }))
        .unwrap()
    }

    fn owner(pod: &Pod) -> (String, String) {
        let owner = top_level_owner(pod).unwrap();
        (owner.kind, owner.name)
    }

    #[test]
    fn replica_set_becomes_deployment() {
        let pod = pod(
            "ReplicaSet",
            "payments-api-6d8f7b9c5",
            json!({"pod-template-hash": "6d8f7b9c5"}),
            "2026-12-04T09:00:00Z",
        );
        assert_eq!(owner(&pod), ("Deployment".into(), "payments-api".into()));
    }

    #[test]
    fn replica_set_without_hash_label_kept() {
        let bare = pod("ReplicaSet", "web-abc12", json!({}), "2026-12-04T09:00:00Z");
        assert_eq!(owner(&bare), ("ReplicaSet".into(), "web-abc12".into()));
        let other = pod(
            "ReplicaSet",
            "web-abc12",
            json!({"pod-template-hash": "zzz"}),
            "2026-12-04T09:00:00Z",
        );
        assert_eq!(owner(&other), ("ReplicaSet".into(), "web-abc12".into()));
    }

    #[test]
    fn cronjob_job_becomes_cronjob() {
        // 2026-12-04T09:00:00Z is minute 29_939_580 since the epoch.
        let scheduled = pod("Job", "backup-29939580", json!({}), "2026-12-04T09:00:03Z");
        assert_eq!(owner(&scheduled), ("CronJob".into(), "backup".into()));
    }

    #[test]
    fn job_named_like_cronjob_kept_when_unsafe() {
        let too_late = pod("Job", "backup-29939580", json!({}), "2027-03-01T00:00:00Z");
        assert_eq!(owner(&too_late), ("Job".into(), "backup-29939580".into()));
        let before = pod("Job", "backup-29939580", json!({}), "2026-12-04T08:00:00Z");
        assert_eq!(owner(&before), ("Job".into(), "backup-29939580".into()));
        let small = pod("Job", "migrate-2", json!({}), "2026-12-04T08:00:00Z");
        assert_eq!(owner(&small), ("Job".into(), "migrate-2".into()));
        let named = pod("Job", "migrate", json!({}), "2026-12-04T08:00:00Z");
        assert_eq!(owner(&named), ("Job".into(), "migrate".into()));
    }

    #[test]
    fn stateful_and_daemon_sets_kept() {
        for kind in ["StatefulSet", "DaemonSet", "Node"] {
            let pod = pod(kind, "x-0", json!({}), "2026-12-04T09:00:00Z");
            assert_eq!(owner(&pod), (kind.to_owned(), "x-0".to_owned()));
        }
    }

    #[test]
    fn containers_by_runtime_id() {
        let pod = pod("StatefulSet", "db", json!({}), "2026-12-04T09:00:00Z");
        let info = pod_info(&pod).unwrap();
        let container =
            &info.containers["3b0f5e4c9a7d2e1f8c6b5a4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f"];
        assert_eq!(container.name, "c");
        assert_eq!(container.image, "registry.example/app:1");
        assert_eq!(container.runtime, "containerd");
        assert_eq!(info.service_account.as_deref(), Some("sa"));
    }

    #[test]
    fn invalid_owner_left_out() {
        let long = "a".repeat(254);
        let cases = [
            ("StatefulSet", "db/0"),
            ("StatefulSet", "db\n0"),
            ("StatefulSet", long.as_str()),
            ("example.com/Widget", "db"),
        ];
        for (kind, name) in cases {
            let pod = pod(kind, name, json!({}), "2026-12-04T09:00:00Z");
            let info = pod_info(&pod).unwrap();
            assert_eq!(info.owner, None, "owner {kind:?} {name:?}");
            assert_eq!(info.name, "p", "pod of owner {kind:?} {name:?}");
        }
    }

    #[test]
    fn valid_owner_kept() {
        let pod = pod("StatefulSet", "db", json!({}), "2026-12-04T09:00:00Z");
        let info = pod_info(&pod).unwrap();
        assert_eq!(
            info.owner,
            Some(Owner {
                kind: "StatefulSet".to_owned(),
                name: "db".to_owned(),
            })
        );
    }

    #[test]
    fn empty_service_account_left_out() {
        let mut pod = pod("StatefulSet", "db", json!({}), "2026-12-04T09:00:00Z");
        pod.spec.as_mut().unwrap().service_account_name = Some(String::new());
        let info = pod_info(&pod).unwrap();
        assert_eq!(info.service_account, None);
    }

    #[tokio::test]
    async fn lookup_waits_for_late_pod() {
        let index = PodIndex::manual();
        let late = pod("StatefulSet", "db", json!({}), "2026-12-04T09:00:00Z");
        let writer = index.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            writer.apply(&late);
        });
        let found = index
            .lookup(
                "7c1d5a3e-2b4f-4e8a-9c6d-0f1e2d3c4b5a",
                None,
                Duration::from_secs(2),
            )
            .await;
        assert_eq!(found.map(|p| p.name.clone()).as_deref(), Some("p"));
    }

    #[tokio::test]
    async fn lookup_does_not_wait_when_disabled() {
        let index = PodIndex::disabled();
        let started = Instant::now();
        assert!(
            index
                .lookup("x", None, Duration::from_secs(5))
                .await
                .is_none()
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn lookup_timeout_not_repeated() {
        let index = PodIndex::manual();
        let first = Instant::now();
        assert!(
            index
                .lookup("x", None, Duration::from_millis(200))
                .await
                .is_none()
        );
        assert!(first.elapsed() >= Duration::from_millis(200));
        let second = Instant::now();
        assert!(
            index
                .lookup("x", None, Duration::from_millis(200))
                .await
                .is_none()
        );
        assert!(second.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn deleted_pod_kept_for_late_reads() {
        let index = PodIndex::manual();
        index.apply(&pod("StatefulSet", "db", json!({}), "2026-12-04T09:00:00Z"));
        index.delete("7c1d5a3e-2b4f-4e8a-9c6d-0f1e2d3c4b5a");
        assert!(index.get("7c1d5a3e-2b4f-4e8a-9c6d-0f1e2d3c4b5a").is_some());
    }
}
