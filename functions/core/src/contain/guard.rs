//! The guard rails and the decision for each action.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{
    Action, ClusterApi, Containment, ContainmentDecision, ContainmentOutcome, Mode, RateLimiter,
    Trigger, latest_decision,
};
use crate::finding::Finding;

/// A controller reference of a pod or a ReplicaSet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerReference {
    pub kind: String,
    pub name: String,
}

/// Pod facts containment checks, from the Kubernetes API.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodState {
    pub uid: String,
    /// `spec.nodeName`.
    pub node_name: Option<String>,
    /// The `ownerReferences` entry with `controller: true`.
    pub controller: Option<OwnerReference>,
    /// The kubelet's mirror of a static pod: it has the
    /// `kubernetes.io/config.mirror` annotation.
    pub mirror: bool,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
}

/// Replica counts of a ReplicaSet, Deployment or StatefulSet.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ControllerState {
    /// `spec.replicas`.
    pub replicas: u32,
    /// `status.readyReplicas`.
    pub ready_replicas: u32,
    /// The controller's own controller, such as a ReplicaSet's Deployment.
    pub controller: Option<OwnerReference>,
}

/// The pod a finding names, checked against the API.
enum PodCheck {
    /// The pod is the one reported and may be acted on.
    Target {
        namespace: String,
        name: String,
        uid: String,
    },
    /// No pod action may be taken, for this reason.
    Skip(String),
    /// The API call failed.
    Failed(String),
}

pub(super) async fn respond<K: ClusterApi, R: RateLimiter>(
    containment: &Containment<K, R>,
    finding: &Finding,
    trigger: Trigger,
    now: DateTime<Utc>,
) -> Vec<ContainmentDecision> {
    let policy = &containment.policy;
    let namespace = finding
        .pod
        .as_ref()
        .and_then(|pod| pod.namespace.as_deref());
    let mode = namespace.map_or(policy.modes.default, |ns| policy.modes.mode(ns));
    if mode == Mode::Off {
        return Vec::new();
    }

    let mut decisions = Vec::new();
    let mut pod_check: Option<PodCheck> = None;
    for action in Action::ALL {
        if latest_decision(finding, action).is_some_and(|last| last.outcome.settled()) {
            continue;
        }
        let Some(&min_severity) = policy.min_severity.get(&action) else {
            continue;
        };
        let outcome = if finding.severity < min_severity {
            ContainmentOutcome::Skipped {
                reason: format!(
                    "severity {} is below the {} threshold {}",
                    finding.severity.as_str(),
                    action.as_str(),
                    min_severity.as_str()
                ),
            }
        } else if let Some(reason) = static_skip(containment, finding, action, trigger) {
            ContainmentOutcome::Skipped { reason }
        } else if action == Action::KillProcess {
            kill(containment, finding, mode, now).await
        } else {
            let check = match pod_check {
                Some(ref check) => check,
                None => pod_check.insert(check_pod(containment, finding).await),
            };
            match check {
                PodCheck::Target {
                    namespace,
                    name,
                    uid,
                } => {
                    act_on_pod(
                        containment,
                        finding,
                        action,
                        mode,
                        (namespace, name, uid),
                        now,
                    )
                    .await
                }
                PodCheck::Skip(reason) => ContainmentOutcome::Skipped {
                    reason: reason.clone(),
                },
                PodCheck::Failed(error) => ContainmentOutcome::Failed {
                    error: error.clone(),
                },
            }
        };
        log_decision(finding, action, mode, &outcome);
        decisions.push(ContainmentDecision {
            action,
            mode,
            outcome,
            decided_at: now,
            severity: finding.severity,
        });
    }
    decisions
}

/// Reasons to skip that need no API call.
fn static_skip<K, R>(
    containment: &Containment<K, R>,
    finding: &Finding,
    action: Action,
    trigger: Trigger,
) -> Option<String> {
    let policy = &containment.policy;
    let Some(pod) = &finding.pod else {
        return Some("the reader is not in a pod".to_owned());
    };
    let Some(namespace) = pod.namespace.as_deref() else {
        return Some(format!(
            "pod {} has no known namespace: the agent could not read it from the Kubernetes API",
            pod.uid
        ));
    };
    if policy.protected_namespaces.contains(namespace) {
        return Some(format!("namespace {namespace} is protected"));
    }
    if !policy.contain_node_pods
        && let Some(owner) = &pod.owner
        && matches!(owner.kind.as_str(), "DaemonSet" | "Node")
    {
        return Some(format!(
            "the pod belongs to {} {}, and node pods are not contained",
            owner.kind, owner.name
        ));
    }
    if action == Action::KillProcess && trigger == Trigger::Escalation {
        return Some(
            "a kill is ordered only in the answer to the agent's post of the read".to_owned(),
        );
    }
    if action != Action::KillProcess && pod.name.is_none() {
        return Some(format!("pod {} has no known name", pod.uid));
    }
    None
}

async fn kill<K: ClusterApi, R: RateLimiter>(
    containment: &Containment<K, R>,
    finding: &Finding,
    mode: Mode,
    now: DateTime<Utc>,
) -> ContainmentOutcome {
    let detail = format!(
        "SIGKILL to pid {} ({}, start time {}) on node {}, if it is still the same process",
        finding.process.pid, finding.process.comm, finding.process.start_time, finding.node
    );
    if mode == Mode::DryRun {
        return ContainmentOutcome::WouldAct { detail };
    }
    match take_budget(containment, &finding.cluster, now).await {
        Ok(()) => ContainmentOutcome::Ordered { detail },
        Err(outcome) => outcome,
    }
}

/// Takes one action from the cluster's hourly budget, or returns the outcome
/// that records why not.
async fn take_budget<K, R: RateLimiter>(
    containment: &Containment<K, R>,
    cluster: &str,
    now: DateTime<Utc>,
) -> Result<(), ContainmentOutcome> {
    let limit = containment.policy.max_actions_per_hour;
    match containment.limiter.acquire(cluster, limit, now).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            warn!(
                cluster,
                limit, "containment rate limit reached: no more actions this hour"
            );
            Err(ContainmentOutcome::Skipped {
                reason: format!(
                    "rate limit reached: {limit} actions in cluster {cluster} this hour; \
                     containment stopped acting in this cluster until the next hour"
                ),
            })
        }
        Err(error) => Err(ContainmentOutcome::Failed {
            error: format!("rate limit store: {error}"),
        }),
    }
}

/// Checks the reported pod against the API: it must exist with the reported
/// UID, run on the reporting node, not be a node pod, and leave its
/// controller enough ready replicas.
async fn check_pod<K: ClusterApi, R>(
    containment: &Containment<K, R>,
    finding: &Finding,
) -> PodCheck {
    let policy = &containment.policy;
    let api = &containment.api;
    let Some(reported) = &finding.pod else {
        return PodCheck::Skip("the reader is not in a pod".to_owned());
    };
    let (Some(namespace), Some(name)) = (reported.namespace.as_deref(), reported.name.as_deref())
    else {
        return PodCheck::Skip(format!("pod {} has no known name", reported.uid));
    };
    let cluster = &finding.cluster;
    let pod = match api.pod(cluster, namespace, name).await {
        Ok(Some(pod)) => pod,
        Ok(None) => {
            return PodCheck::Skip(format!(
                "pod {namespace}/{name} no longer exists in cluster {cluster}"
            ));
        }
        Err(error) => return PodCheck::Failed(format!("reading pod {namespace}/{name}: {error}")),
    };
    if pod.uid != reported.uid {
        return PodCheck::Skip(format!(
            "the agent and the API disagree: pod {namespace}/{name} has uid {} in the API, \
             not the reported {}; the reported pod is gone and this one is not touched",
            pod.uid, reported.uid
        ));
    }
    if pod.node_name.as_deref() != Some(finding.node.as_str()) {
        return PodCheck::Skip(format!(
            "the agent and the API disagree: pod {namespace}/{name} runs on node {} in the API, \
             but node {} reported the read",
            pod.node_name.as_deref().unwrap_or("(none)"),
            finding.node
        ));
    }
    if pod.deleting {
        return PodCheck::Skip(format!("pod {namespace}/{name} is already being deleted"));
    }
    if !policy.contain_node_pods {
        if pod.mirror {
            return PodCheck::Skip(format!(
                "pod {namespace}/{name} is a static pod's mirror, and node pods are not contained"
            ));
        }
        if let Some(owner) = &pod.controller
            && matches!(owner.kind.as_str(), "DaemonSet" | "Node")
        {
            return PodCheck::Skip(format!(
                "pod {namespace}/{name} belongs to {} {}, and node pods are not contained",
                owner.kind, owner.name
            ));
        }
    }
    if let Some(reason) = replica_shortfall(containment, cluster, namespace, &pod).await {
        return reason;
    }
    PodCheck::Target {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: pod.uid,
    }
}

/// Returns a skip when removing the pod would leave its controller with
/// fewer ready pods than the minimum. A ReplicaSet of a Deployment is judged
/// by the Deployment, which counts the ready pods of all its ReplicaSets.
async fn replica_shortfall<K: ClusterApi, R>(
    containment: &Containment<K, R>,
    cluster: &str,
    namespace: &str,
    pod: &PodState,
) -> Option<PodCheck> {
    let api = &containment.api;
    let minimum = containment.policy.min_healthy_replicas;
    let owner = pod.controller.as_ref()?;
    if !matches!(owner.kind.as_str(), "ReplicaSet" | "StatefulSet") {
        return None;
    }
    let (mut kind, mut name) = (owner.kind.clone(), owner.name.clone());
    let mut state = match api.controller(cluster, namespace, &kind, &name).await {
        Ok(Some(state)) => state,
        Ok(None) => return None,
        Err(error) => {
            return Some(PodCheck::Failed(format!(
                "reading {kind} {namespace}/{name}: {error}"
            )));
        }
    };
    if kind == "ReplicaSet"
        && let Some(deployment) = state.controller.clone()
        && deployment.kind == "Deployment"
    {
        match api
            .controller(cluster, namespace, "Deployment", &deployment.name)
            .await
        {
            Ok(Some(parent)) => {
                state = parent;
                kind = deployment.kind;
                name = deployment.name;
            }
            Ok(None) => {}
            Err(error) => {
                return Some(PodCheck::Failed(format!(
                    "reading Deployment {namespace}/{}: {error}",
                    deployment.name
                )));
            }
        }
    }
    let left = state.ready_replicas.saturating_sub(u32::from(pod.ready));
    (left < minimum).then(|| {
        PodCheck::Skip(format!(
            "{kind} {namespace}/{name} would have {left} ready pods left, below the minimum of \
             {minimum}"
        ))
    })
}

async fn act_on_pod<K: ClusterApi, R: RateLimiter>(
    containment: &Containment<K, R>,
    finding: &Finding,
    action: Action,
    mode: Mode,
    (namespace, name, uid): (&str, &str, &str),
    now: DateTime<Utc>,
) -> ContainmentOutcome {
    let grace = containment.policy.grace_period_seconds();
    let detail = match action {
        Action::DeletePod => {
            format!("delete pod {namespace}/{name} (uid {uid}) with a grace period of {grace}s")
        }
        _ => format!(
            "quarantine pod {namespace}/{name} (uid {uid}): label {}=true, egress denied by \
             NetworkPolicy {}",
            super::QUARANTINE_LABEL,
            super::QUARANTINE_POLICY
        ),
    };
    if mode == Mode::DryRun {
        return ContainmentOutcome::WouldAct { detail };
    }
    if let Err(outcome) = take_budget(containment, &finding.cluster, now).await {
        return outcome;
    }
    let api = &containment.api;
    let result = match action {
        Action::DeletePod => {
            api.delete_pod(&finding.cluster, namespace, name, uid, grace)
                .await
        }
        _ => {
            api.quarantine_pod(&finding.cluster, namespace, name, uid)
                .await
        }
    };
    match result {
        Ok(()) => ContainmentOutcome::Acted { detail },
        Err(error) => ContainmentOutcome::Failed {
            error: format!("{}: {error}", detail),
        },
    }
}

fn log_decision(finding: &Finding, action: Action, mode: Mode, outcome: &ContainmentOutcome) {
    info!(
        finding_id = %finding.finding_id,
        action = action.as_str(),
        mode = mode.as_str(),
        outcome = outcome.label(),
        detail = outcome.text(),
        "containment decision"
    );
}
