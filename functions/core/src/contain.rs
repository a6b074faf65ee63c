//! Containment: what tokenguard does to the pod or process behind a finding.
//!
//! Containment is off unless a namespace's mode turns it on. `dry-run`
//! decides and records what would be done, and `enforce` acts. Each action
//! has a minimum severity. Guard rails run before every action, and every
//! decision, taken or not, is recorded on the finding with its reason.
//!
//! The Kubernetes calls go through [`ClusterApi`] and the shared per-cluster
//! budget through [`RateLimiter`], so the rules here hold the same for the
//! real API server, the test stand-in and the in-memory fakes.

mod guard;
mod policy;

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::finding::{Finding, Severity};
use crate::store::StoreError;

pub use guard::{ControllerState, OwnerReference, PodState};
pub use policy::{
    ALWAYS_PROTECTED, ContainmentPolicy, ContainmentPolicyError, Mode, NamespaceModes, parse_count,
};

/// Label that puts a pod in quarantine. The namespace's NetworkPolicy
/// [`QUARANTINE_POLICY`] denies all egress of pods with this label set to
/// `"true"`, so removing the label lifts the quarantine.
pub const QUARANTINE_LABEL: &str = "tokenguard.io/quarantine";

/// Name of the NetworkPolicy that denies egress to quarantined pods.
pub const QUARANTINE_POLICY: &str = "tokenguard-quarantine";

/// An action containment can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// SIGKILL the reading process, sent by the agent on the node.
    KillProcess,
    /// Label the pod and deny its egress with a NetworkPolicy.
    Quarantine,
    /// Delete the pod through the Kubernetes API.
    DeletePod,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::KillProcess, Action::Quarantine, Action::DeletePod];

    /// Name in settings and alerts: `kill`, `quarantine` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::KillProcess => "kill",
            Action::Quarantine => "quarantine",
            Action::DeletePod => "delete",
        }
    }
}

/// Result of one action for one finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ContainmentOutcome {
    /// Done: the API accepted the call, or the agent killed the process.
    Acted { detail: String },
    /// The agent received a kill order and has not reported yet.
    Ordered { detail: String },
    /// Dry run: this would have been done.
    WouldAct { detail: String },
    /// Not done, for the reason given.
    Skipped { reason: String },
    /// Tried and failed, with the API's or the agent's error.
    Failed { error: String },
}

impl ContainmentOutcome {
    /// Short word for alerts.
    pub fn label(&self) -> &'static str {
        match self {
            ContainmentOutcome::Acted { .. } => "done",
            ContainmentOutcome::Ordered { .. } => "ordered",
            ContainmentOutcome::WouldAct { .. } => "dry run",
            ContainmentOutcome::Skipped { .. } => "skipped",
            ContainmentOutcome::Failed { .. } => "failed",
        }
    }

    /// Returns the detail, reason or error.
    pub fn text(&self) -> &str {
        match self {
            ContainmentOutcome::Acted { detail }
            | ContainmentOutcome::Ordered { detail }
            | ContainmentOutcome::WouldAct { detail } => detail,
            ContainmentOutcome::Skipped { reason } => reason,
            ContainmentOutcome::Failed { error } => error,
        }
    }

    /// Returns whether the action is settled, so a later rise in severity
    /// does not decide it again. Skips are not settled: a skip for a low severity or
    /// an exhausted budget may pass later.
    fn settled(&self) -> bool {
        !matches!(self, ContainmentOutcome::Skipped { .. })
    }
}

/// One containment decision recorded on a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainmentDecision {
    pub action: Action,
    pub mode: Mode,
    #[serde(flatten)]
    pub outcome: ContainmentOutcome,
    pub decided_at: DateTime<Utc>,
    /// Severity of the finding when this was decided.
    pub severity: Severity,
}

/// A Kubernetes API error, as the API server's `Status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}{message}", status.map(|status| format!("HTTP {status} {reason}: ")).unwrap_or_default())]
pub struct ApiError {
    /// HTTP status, when the server responded.
    pub status: Option<u16>,
    /// `Status.reason`, such as `NotFound` or `Conflict`.
    pub reason: String,
    pub message: String,
}

impl ApiError {
    /// Creates an error with no HTTP response: connection, TLS or
    /// authentication setup.
    pub fn transport(message: impl Into<String>) -> ApiError {
        ApiError {
            status: None,
            reason: String::new(),
            message: message.into(),
        }
    }
}

/// The Kubernetes API calls containment makes, on the cluster named by each
/// call.
pub trait ClusterApi: Send + Sync {
    /// Reads a pod; `None` when it does not exist.
    fn pod(
        &self,
        cluster: &str,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<PodState>, ApiError>> + Send;

    /// Reads the ReplicaSet, StatefulSet or Deployment `kind`/`name`; `None`
    /// when it does not exist.
    fn controller(
        &self,
        cluster: &str,
        namespace: &str,
        kind: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<ControllerState>, ApiError>> + Send;

    /// Deletes a pod with a UID precondition, so a pod recreated under the
    /// same name is never deleted.
    fn delete_pod(
        &self,
        cluster: &str,
        namespace: &str,
        name: &str,
        uid: &str,
        grace_period_seconds: u32,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Sets [`QUARANTINE_LABEL`] on the pod, only if it still has `uid`, and
    /// makes sure [`QUARANTINE_POLICY`] exists in its namespace.
    fn quarantine_pod(
        &self,
        cluster: &str,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
}

/// A budget of actions per cluster and hour, shared by every function
/// instance.
pub trait RateLimiter: Send + Sync {
    /// Takes one action from `cluster`'s budget for the hour of `now`.
    /// Returns `false`, taking nothing, when the budget of `limit` is spent.
    fn acquire(
        &self,
        cluster: &str,
        limit: u32,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// A [`RateLimiter`] in memory, for one process: the agent's embedded mode
/// and tests.
#[derive(Debug, Default)]
pub struct MemoryRateLimiter {
    /// Actions taken per cluster in the hour that starts at the key's time.
    taken: std::sync::Mutex<std::collections::HashMap<(String, i64), u32>>,
}

impl RateLimiter for MemoryRateLimiter {
    async fn acquire(
        &self,
        cluster: &str,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let hour = now.timestamp().div_euclid(3600);
        let mut taken = self
            .taken
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        taken.retain(|(_, started), _| *started >= hour - 1);
        let count = taken.entry((cluster.to_owned(), hour)).or_default();
        if *count >= limit {
            return Ok(false);
        }
        *count += 1;
        Ok(true)
    }
}

/// Formats the hour of `now` as the rate limit counts it: `2026-12-04T16`,
/// UTC.
pub fn rate_limit_hour(now: DateTime<Utc>) -> String {
    now.format("%Y-%m-%dT%H").to_string()
}

/// Where a finding came from, which decides whether the process can still be
/// killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A read the agent just posted, so the response can order a kill.
    AgentRead,
    /// A later event, such as a CloudTrail exchange, with no agent waiting.
    Escalation,
}

/// Decides and takes containment actions for findings.
pub trait Responder: Send + Sync {
    /// Decides each action not yet settled for `finding`, acts in enforce
    /// mode, and returns the new decisions to record.
    fn respond(
        &self,
        finding: &Finding,
        trigger: Trigger,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Vec<ContainmentDecision>> + Send;
}

/// A [`Responder`] that never acts and records nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoContainment;

impl Responder for NoContainment {
    async fn respond(
        &self,
        _finding: &Finding,
        _trigger: Trigger,
        _now: DateTime<Utc>,
    ) -> Vec<ContainmentDecision> {
        Vec::new()
    }
}

/// Containment by policy, through a Kubernetes API and a shared rate limit.
#[derive(Debug)]
pub struct Containment<K, R> {
    policy: ContainmentPolicy,
    api: K,
    limiter: R,
}

impl<K: ClusterApi, R: RateLimiter> Containment<K, R> {
    pub fn new(policy: ContainmentPolicy, api: K, limiter: R) -> Containment<K, R> {
        Containment {
            policy,
            api,
            limiter,
        }
    }

    pub fn policy(&self) -> &ContainmentPolicy {
        &self.policy
    }

    pub fn api(&self) -> &K {
        &self.api
    }
}

impl<K: ClusterApi, R: RateLimiter> Responder for Containment<K, R> {
    async fn respond(
        &self,
        finding: &Finding,
        trigger: Trigger,
        now: DateTime<Utc>,
    ) -> Vec<ContainmentDecision> {
        guard::respond(self, finding, trigger, now).await
    }
}

/// Returns the latest decision recorded on `finding` for `action`.
pub fn latest_decision(finding: &Finding, action: Action) -> Option<&ContainmentDecision> {
    finding
        .containment
        .iter()
        .rev()
        .find(|decision| decision.action == action)
}

/// The process the agent must kill for `finding`, when its latest kill
/// decision is an order: `(pid, start_time)`.
pub fn kill_order(finding: &Finding) -> Option<(u32, u64)> {
    let decision = latest_decision(finding, Action::KillProcess)?;
    matches!(decision.outcome, ContainmentOutcome::Ordered { .. })
        .then_some((finding.process.pid, finding.process.start_time))
}

#[cfg(test)]
mod tests;
