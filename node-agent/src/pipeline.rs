//! Turns [`OpenRecord`]s into `TokenRead` events: classifies the path, finds
//! the container and pod from the cgroup, and names them from the pod index.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokenguard_schema::{Container, MAX_IMAGE_LEN, Node, Pod, TokenRead};
use tracing::debug;

use crate::cgroup::{CgroupInfo, CgroupResolver, parse_cgroup_path, read_proc_cgroup};
use crate::classify::Classifier;
use crate::metrics::Metrics;
use crate::pods::PodIndex;
use crate::procfs::{ProcFs, boot_ns_to_ticks, boot_ns_to_utc};
use crate::record::{EventIds, OpenRecord, build_process};

/// Node details shared by every event.
#[derive(Debug, Clone)]
pub struct NodeContext {
    pub cluster: String,
    pub node_name: String,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// Kernel hook that produced the events, such as `tracepoint/syscalls`.
    pub hook: Option<String>,
}

impl NodeContext {
    /// Returns the `node` object of a batch.
    pub fn node(&self) -> Node {
        Node {
            name: self.node_name.clone(),
            boot_id: self.boot_id.clone(),
            agent_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            hook: self.hook.clone(),
        }
    }
}

/// Settings of the [`Enricher`].
#[derive(Debug, Clone)]
pub struct EnrichConfig {
    pub kubelet_root: PathBuf,
    pub proc_root: PathBuf,
    pub cgroup_root: PathBuf,
    /// How long to wait for the pod watch to deliver a pod that is not in the
    /// index yet.
    pub pod_lookup_wait: Duration,
    /// `sysconf(_SC_CLK_TCK)`.
    pub ticks_per_second: u64,
}

/// Builds `TokenRead` events from open records.
#[derive(Debug)]
pub struct Enricher {
    context: NodeContext,
    classifier: Classifier,
    procfs: ProcFs,
    cgroups: Arc<CgroupResolver>,
    pods: PodIndex,
    ids: EventIds,
    pod_lookup_wait: Duration,
    ticks_per_second: u64,
    metrics: Arc<Metrics>,
}

impl Enricher {
    /// Builds an enricher for this node.
    pub fn new(
        context: NodeContext,
        config: &EnrichConfig,
        pods: PodIndex,
        metrics: Arc<Metrics>,
    ) -> Enricher {
        Enricher {
            ids: EventIds::new(context.boot_id.clone()),
            context,
            classifier: Classifier::new(&config.kubelet_root),
            procfs: ProcFs::new(config.proc_root.clone()),
            cgroups: Arc::new(CgroupResolver::new(config.cgroup_root.clone())),
            pods,
            pod_lookup_wait: config.pod_lookup_wait,
            ticks_per_second: config.ticks_per_second,
            metrics,
        }
    }

    /// Returns the node context that events are built with.
    pub fn context(&self) -> &NodeContext {
        &self.context
    }

    /// Builds the event for `record`, or returns `None` when its path is not
    /// an AWS token file.
    pub async fn enrich(&self, record: OpenRecord) -> Option<TokenRead> {
        Metrics::add(&self.metrics.opens_seen, 1);
        let Some(location) = self.classifier.classify(&record.path) else {
            Metrics::add(&self.metrics.opens_ignored, 1);
            debug!(pid = record.tgid, path = %record.path, "open ignored: not an AWS token path");
            return None;
        };
        let event_id = self.ids.next(record.timestamp_ns);

        let (process, cgroup) = {
            let procfs = self.procfs.clone();
            let cgroups = self.cgroups.clone();
            let ticks = self.ticks_per_second;
            let record = record.clone();
            tokio::task::spawn_blocking(move || {
                let process = build_process(&record, &procfs, ticks);
                let cgroup = cgroup_of(&record, &procfs, &cgroups, process.start_time, ticks);
                (process, cgroup)
            })
            .await
            .ok()?
        };

        let mut container = cgroup.container_id.as_ref().map(|id| Container {
            id: id.clone(),
            runtime: cgroup.runtime.map(|r| r.as_str().to_owned()),
            name: None,
            image: None,
        });
        let mut pod = cgroup.pod_uid.as_ref().map(|uid| Pod {
            uid: uid.clone(),
            namespace: None,
            name: None,
            service_account: None,
            owner: None,
        });

        if let Some(pod) = pod.as_mut() {
            let container_id = container.as_ref().map(|c| c.id.as_str());
            let info = self
                .pods
                .lookup(&pod.uid, container_id, self.pod_lookup_wait)
                .await;
            if let Some(info) = info {
                pod.namespace = Some(info.namespace.clone());
                pod.name = Some(info.name.clone());
                pod.service_account = info.service_account.clone();
                pod.owner = info.owner.clone();
                if let Some(container) = container.as_mut()
                    && let Some(known) = info.containers.get(&container.id)
                {
                    container.name = Some(known.name.clone());
                    container.image = usable_image(&known.image);
                    container
                        .runtime
                        .get_or_insert_with(|| known.runtime.clone());
                }
            }
        }

        Metrics::add(&self.metrics.events_built, 1);
        debug!(
            event_id = %event_id,
            pid = process.pid,
            pod = pod.as_ref().and_then(|p| p.name.as_deref()).unwrap_or("-"),
            namespace = pod.as_ref().and_then(|p| p.namespace.as_deref()).unwrap_or("-"),
            token_pod_uid = location.token_pod_uid.as_deref().unwrap_or("-"),
            "token read"
        );
        Some(TokenRead {
            event_id,
            observed_at: boot_ns_to_utc(record.timestamp_ns),
            cluster: self.context.cluster.clone(),
            token: tokenguard_schema::Token {
                kind: location.kind,
                path: location.path,
                host_path: location.host_path,
            },
            process,
            container,
            pod,
            count: 1,
        })
    }
}

/// Finds the reader's cgroup: from the id cache, then `/proc/<pid>/cgroup`
/// while the pid still belongs to the reader, then a scan of the cgroup tree.
fn cgroup_of(
    record: &OpenRecord,
    procfs: &ProcFs,
    cgroups: &CgroupResolver,
    start_time: u64,
    ticks_per_second: u64,
) -> CgroupInfo {
    let cached = (record.cgroup_id != 0)
        .then(|| cgroups.cached(record.cgroup_id))
        .flatten();
    if let Some(path) = cached {
        return parse_cgroup_path(&path);
    }
    let expected_start = if record.start_boottime_ns != 0 {
        boot_ns_to_ticks(record.start_boottime_ns, ticks_per_second)
    } else {
        start_time
    };
    if procfs.is_same_process(record.tgid, expected_start)
        && let Ok(info) = read_proc_cgroup(procfs.root(), record.tgid)
    {
        if record.cgroup_id != 0 && cgroups.id_of(&info.path) == Some(record.cgroup_id) {
            cgroups.remember(record.cgroup_id, &info.path);
        }
        return info;
    }
    if record.cgroup_id != 0
        && let Some(path) = cgroups.resolve(record.cgroup_id)
    {
        return parse_cgroup_path(&path);
    }
    CgroupInfo::default()
}

/// Returns the image reference when the detector accepts it: Kubernetes sets
/// no length limit, and a longer or control-character image would make the
/// whole event invalid.
fn usable_image(image: &str) -> Option<String> {
    let usable =
        !image.is_empty() && image.len() <= MAX_IMAGE_LEN && !image.chars().any(char::is_control);
    usable.then(|| image.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_kept_when_valid() {
        let image = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/api:1.4.2";
        assert_eq!(usable_image(image).as_deref(), Some(image));
    }

    #[test]
    fn image_dropped_when_invalid() {
        assert_eq!(usable_image(""), None, "empty");
        assert_eq!(
            usable_image(&"a".repeat(MAX_IMAGE_LEN + 1)),
            None,
            "too long"
        );
        assert_eq!(usable_image("api:1\n2"), None, "control character");
    }
}
