//! Wire schema between the tokenguard node agent and the detector.
//!
//! The agent posts a [`Batch`] of [`TokenRead`] events; the detector answers
//! with a [`BatchResponse`] holding one [`Outcome`] per event. The detector
//! parses a body as a [`BatchEnvelope`] first, so that one malformed event is
//! rejected on its own while the rest of its batch is processed.
//!
//! Decoding ignores unknown fields at every level, so an agent can add an
//! optional field without waiting for every detector to know it. A change
//! that a detector must not ignore needs a new [`SCHEMA_VERSION`].

mod validate;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use validate::{
    MAX_ARGS, MAX_ARGS_BYTES, MAX_BATCH_BYTES, MAX_BATCH_EVENTS, MAX_CLOCK_SKEW, MAX_EVENT_AGE,
    MAX_EXE_LEN, MAX_IMAGE_LEN, MAX_NAME_LEN, ValidationError, is_valid_name,
};

/// Version of the wire schema, carried in every batch as `schema`.
pub const SCHEMA_VERSION: u32 = 1;

/// One POST body from an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub schema: u32,
    pub node: Node,
    pub events: Vec<TokenRead>,
    /// Results of the orders in earlier responses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<ActionReport>,
}

/// A batch whose events are not parsed yet, so each can fail on its own.
#[derive(Debug, Deserialize)]
pub struct BatchEnvelope {
    pub schema: u32,
    pub node: Node,
    pub events: Vec<Box<RawValue>>,
    #[serde(default)]
    pub reports: Vec<Box<RawValue>>,
}

/// An order from the detector to the agent that posted the read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentOrder {
    /// Send SIGKILL to the process, only if `pid` still has `start_time`.
    Kill { pid: u32, start_time: u64 },
}

/// Result of an order, sent back by the agent in a later batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionReport {
    /// The finding whose outcome carried the order.
    pub finding_id: String,
    pub order: AgentOrder,
    pub result: ActionResult,
    /// Free text: the error, or what the agent found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

/// Result of an order on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionResult {
    /// The signal was sent to the same process.
    Killed,
    /// The process had exited before the order arrived.
    Exited,
    /// The pid now belongs to another process, which was left alone.
    PidReused,
    /// The agent runs with orders turned off.
    Disabled,
    /// The signal could not be sent.
    Failed,
}

/// The node that observed the reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Kubernetes node name.
    pub name: String,
    /// `/proc/sys/kernel/random/boot_id`, which prefixes every `event_id`.
    pub boot_id: String,
    /// Version of the agent that sent the batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// Kernel hook the agent attached, such as `tracepoint/syscalls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
}

/// A successful open of an AWS web-identity token file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRead {
    /// Unique per node boot (`<boot id>:<sequence>`), so retries are idempotent.
    pub event_id: String,
    #[serde(deserialize_with = "validate::deserialize_time")]
    pub observed_at: DateTime<Utc>,
    pub cluster: String,
    pub token: Token,
    pub process: Process,
    /// Absent when the reader runs outside any container (a host process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    /// Absent when the reader is not in a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Pod>,
    /// Number of identical reads folded into this event, at least 1.
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// The token file that was opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub kind: TokenKind,
    /// Path as the reading process sees it, with the kubelet's `..data` and
    /// timestamped directories removed.
    pub path: String,
    /// Whether the path is the kubelet's copy under `/var/lib/kubelet/pods/`
    /// rather than the mount inside a container.
    #[serde(default)]
    pub host_path: bool,
}

/// Which credential mechanism the token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// IAM Roles for Service Accounts: exchanged with `sts:AssumeRoleWithWebIdentity`.
    Irsa,
    /// EKS Pod Identity: exchanged with `eks-auth:AssumeRoleForPodIdentity`.
    PodIdentity,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Irsa => "irsa",
            TokenKind::PodIdentity => "pod_identity",
        }
    }
}

/// The process that opened the token, and its parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    /// Kernel command name, at most 15 bytes.
    pub comm: String,
    /// Executable path as the process sees it, at most [`MAX_EXE_LEN`] bytes.
    pub exe: String,
    /// Command line, truncated to [`MAX_ARGS`] entries and [`MAX_ARGS_BYTES`].
    #[serde(default)]
    pub args: Vec<String>,
    /// Whether `args` was cut short.
    #[serde(default)]
    pub args_truncated: bool,
    pub uid: u32,
    /// Start time in clock ticks since boot, as in field 22 of
    /// `/proc/<pid>/stat`; with `pid` it names one process across pid reuse.
    pub start_time: u64,
    /// The parent process, which has no `parent` of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Box<Process>>,
}

/// The container the reader runs in, taken from its cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// Runtime container id (64 hex characters).
    pub id: String,
    /// `containerd`, `cri-o` or `docker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Container name from the pod spec; needs the Kubernetes API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// The pod the reader runs in. Only `uid` is known without the Kubernetes API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Top-level controller, such as the Deployment above a ReplicaSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

/// A workload controller that owns a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

/// The detector's answer to one batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    pub schema: u32,
    pub outcomes: Vec<Outcome>,
}

/// What the detector did with one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The event's `event_id`, or `events[<index>]` when it had no valid one.
    pub event_id: String,
    pub status: OutcomeStatus,
    /// Why the event was not accepted: set for `invalid` and `failed`, and for
    /// a `duplicate` of an earlier event in the same batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The finding this event raised, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding_id: Option<String>,
    /// Order for the agent that posted the event, for a finding in enforce
    /// mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<AgentOrder>,
}

/// Status of one event in a [`BatchResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    Accepted,
    /// Already processed; retrying it changes nothing.
    Duplicate,
    /// Rejected; resending it unchanged will not help.
    Invalid,
    /// Valid but not processed because a dependency failed; retry it.
    Failed,
}

impl Outcome {
    pub fn accepted(event_id: &str, finding_id: Option<String>) -> Self {
        Outcome {
            event_id: event_id.to_owned(),
            status: OutcomeStatus::Accepted,
            reason: None,
            finding_id,
            order: None,
        }
    }

    pub fn with_status(event_id: &str, status: OutcomeStatus, reason: Option<String>) -> Self {
        Outcome {
            event_id: event_id.to_owned(),
            status,
            reason,
            finding_id: None,
            order: None,
        }
    }
}

#[cfg(test)]
mod tests;
