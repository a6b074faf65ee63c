//! What the baseline groups reads by (the scope) and what it learns (the value).

use serde::{Deserialize, Serialize};
use tokenguard_schema::TokenRead;

/// How precisely a read could be tied to a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeKind {
    /// Cluster, namespace, top-level workload and container name are known.
    Workload,
    /// Only the pod uid is known, because the Kubernetes API was not reachable;
    /// such a scope learns per pod, not per workload.
    Pod,
    /// The reader runs outside any pod, on the node itself.
    Host,
}

/// The group of reads that share one baseline: a container of a workload.
///
/// A new pod of the same Deployment falls into the same scope, so it does not
/// learn again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub kind: ScopeKind,
    pub cluster: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Kind of the top-level owner, or `Pod` for a bare pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Stable key of the scope in the baseline store.
    pub key: String,
}

/// The learned identity of a reader: its executable and command name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    pub exe: String,
    pub comm: String,
    /// Stable key of the value within its scope.
    pub key: String,
}

/// Scope and value of one read, as the store addresses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineKey {
    pub scope: Scope,
    pub value: Value,
}

impl BaselineKey {
    /// Derives the scope and value of a read.
    pub fn of(read: &TokenRead) -> BaselineKey {
        BaselineKey {
            scope: Scope::of(read),
            value: Value::of(read),
        }
    }
}

impl Value {
    fn of(read: &TokenRead) -> Value {
        let exe = read.process.exe.clone();
        let comm = read.process.comm.clone();
        Value {
            key: format!("{exe}\u{1f}{comm}"),
            exe,
            comm,
        }
    }
}

impl Scope {
    fn of(read: &TokenRead) -> Scope {
        let cluster = read.cluster.clone();
        let container_name = read.container.as_ref().and_then(|c| c.name.clone());

        // A read outside any container of a pod is a host read, even when the
        // path names a pod: that is the kubelet's copy of the pod's token.
        let Some(pod) = read.pod.as_ref().filter(|_| read.container.is_some()) else {
            return Scope::host(cluster);
        };

        match (&pod.namespace, workload_of(pod)) {
            (Some(namespace), Some((kind, name))) => {
                let container = container_name.unwrap_or_else(|| "-".to_owned());
                Scope {
                    kind: ScopeKind::Workload,
                    key: join_key(&[&cluster, namespace, &kind, &name, &container]),
                    cluster,
                    namespace: Some(namespace.clone()),
                    workload_kind: Some(kind),
                    workload: Some(name),
                    container: Some(container),
                }
            }
            _ => {
                let container = container_name
                    .or_else(|| read.container.as_ref().map(|c| c.id.clone()))
                    .unwrap_or_else(|| "-".to_owned());
                Scope {
                    kind: ScopeKind::Pod,
                    key: join_key(&[&cluster, "~pod", &pod.uid, &container]),
                    cluster,
                    namespace: pod.namespace.clone(),
                    workload_kind: None,
                    workload: None,
                    container: Some(container),
                }
            }
        }
    }

    fn host(cluster: String) -> Scope {
        Scope {
            kind: ScopeKind::Host,
            key: join_key(&[&cluster, "~host"]),
            cluster,
            namespace: None,
            workload_kind: None,
            workload: None,
            container: None,
        }
    }

    /// Name of the workload for messages: `Deployment payments/api`.
    pub fn describe(&self) -> String {
        match (
            self.kind,
            &self.workload_kind,
            &self.namespace,
            &self.workload,
        ) {
            (ScopeKind::Workload, Some(kind), Some(ns), Some(name)) => {
                format!("{kind} {ns}/{name}")
            }
            (ScopeKind::Host, ..) => format!("host processes of cluster {}", self.cluster),
            _ => format!("pod scope {}", self.key),
        }
    }
}

/// The top-level owner of a pod, or the pod itself when it has none.
fn workload_of(pod: &tokenguard_schema::Pod) -> Option<(String, String)> {
    match (&pod.owner, &pod.name) {
        (Some(owner), _) => Some((owner.kind.clone(), owner.name.clone())),
        (None, Some(name)) => Some(("Pod".to_owned(), name.clone())),
        (None, None) => None,
    }
}

/// Joins key parts with `/`, which no Kubernetes name contains.
fn join_key(parts: &[&str]) -> String {
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::read;

    #[test]
    fn deployment_pods_share_scope() {
        let mut first = read("/usr/bin/python3", "python3");
        let mut second = first.clone();
        first.pod.as_mut().unwrap().name = Some("api-6d8f7b9c5-x2k4q".to_owned());
        second.pod.as_mut().unwrap().name = Some("api-6d8f7b9c5-r7p2m".to_owned());
        second.pod.as_mut().unwrap().uid = "other-uid".to_owned();
        assert_eq!(Scope::of(&first), Scope::of(&second));
        assert_eq!(Scope::of(&first).key, "test/payments/Deployment/api/api");
    }

    #[test]
    fn bare_pod_scoped_by_name() {
        let mut event = read("/bin/cat", "cat");
        event.pod.as_mut().unwrap().owner = None;
        let scope = Scope::of(&event);
        assert_eq!(scope.kind, ScopeKind::Workload);
        assert_eq!(scope.workload_kind.as_deref(), Some("Pod"));
        assert_eq!(scope.workload.as_deref(), Some("api-6d8f7b9c5-x2k4q"));
    }

    #[test]
    fn unattributed_pod_scoped_by_uid() {
        let mut event = read("/bin/cat", "cat");
        let pod = event.pod.as_mut().unwrap();
        pod.namespace = None;
        pod.name = None;
        pod.owner = None;
        event.container.as_mut().unwrap().name = None;
        let scope = Scope::of(&event);
        assert_eq!(scope.kind, ScopeKind::Pod);
        assert_eq!(
            scope.key,
            format!("test/~pod/pod-uid-1/{}", "c0ffee".repeat(10))
        );
    }

    #[test]
    fn read_without_container_is_host() {
        let mut event = read("/usr/bin/cat", "cat");
        event.container = None;
        let scope = Scope::of(&event);
        assert_eq!(scope.kind, ScopeKind::Host);
        assert_eq!(scope.key, "test/~host");
    }

    #[test]
    fn value_joins_exe_and_comm() {
        let value = Value::of(&read("/usr/bin/python3", "python3"));
        assert_eq!(value.key, "/usr/bin/python3\u{1f}python3");
    }
}
