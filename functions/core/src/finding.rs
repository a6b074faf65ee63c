//! The finding document: the one JSON shape that goes to SNS, to the embedded
//! mode's output and to the findings table.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokenguard_schema::{Container, Pod, Process, Token};

use crate::contain::ContainmentDecision;
use crate::correlate::{Correlation, SeverityChange};
use crate::scope::{BaselineKey, Scope, Value};

/// Version of the finding document, carried as `schema`.
pub const FINDING_SCHEMA_VERSION: u32 = 1;

/// Detection rule that raised a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// A process the workload never used before read its token.
    UnfamiliarProcessTokenRead,
    /// A process outside every pod read the kubelet's copy of a pod's token.
    HostProcessTokenRead,
    /// A token was exchanged from outside the cluster's egress and no
    /// process read it near that time.
    ExchangeWithoutRead,
}

impl Rule {
    pub fn title(self) -> &'static str {
        match self {
            Rule::UnfamiliarProcessTokenRead => {
                "Unfamiliar process read an AWS service account token"
            }
            Rule::HostProcessTokenRead => "Host process read a pod's AWS service account token",
            Rule::ExchangeWithoutRead => {
                "AWS service account token exchanged outside the cluster with no read"
            }
        }
    }

    /// Severity of a finding of this rule before correlation.
    pub fn base_severity(self) -> Severity {
        match self {
            Rule::UnfamiliarProcessTokenRead => Severity::Medium,
            Rule::HostProcessTokenRead | Rule::ExchangeWithoutRead => Severity::High,
        }
    }
}

/// Finding severity, ordered from least to most urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// The next severity up; critical stays critical.
    pub fn raised(self) -> Severity {
        match self {
            Severity::Low => Severity::Medium,
            Severity::Medium => Severity::High,
            Severity::High | Severity::Critical => Severity::Critical,
        }
    }
}

/// A MITRE ATT&CK tactic or technique.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MitreRef {
    pub id: String,
    pub name: String,
}

/// MITRE ATT&CK classification of a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mitre {
    pub tactic: MitreRef,
    pub technique: MitreRef,
}

impl Mitre {
    /// Credential Access: Unsecured Credentials, Credentials In Files.
    pub fn credentials_in_files() -> Mitre {
        Mitre {
            tactic: MitreRef {
                id: "TA0006".to_owned(),
                name: "Credential Access".to_owned(),
            },
            technique: MitreRef {
                id: "T1552.001".to_owned(),
                name: "Unsecured Credentials: Credentials In Files".to_owned(),
            },
        }
    }
}

/// Known values a finding lists at most: the most recently seen. A scope
/// such as a CI runner's can hold thousands, which would not fit in an
/// alert, nor a finding in a DynamoDB item.
pub const MAX_KNOWN_VALUES: usize = 20;

/// One value the baseline already held for the scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownValueSummary {
    pub exe: String,
    pub comm: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// What the baseline knew when the finding was raised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineSummary {
    pub scope_first_seen: DateTime<Utc>,
    /// End of the scope's learning period.
    pub learning_ended_at: DateTime<Utc>,
    pub learning_period_seconds: u64,
    pub forget_after_seconds: u64,
    /// Values of the scope that were known, without the new one: the
    /// [`MAX_KNOWN_VALUES`] seen last, most recent first.
    pub known_values: Vec<KnownValueSummary>,
    /// Known values left out of `known_values`.
    #[serde(default)]
    pub known_values_omitted: u64,
}

impl BaselineSummary {
    /// Returns the [`MAX_KNOWN_VALUES`] of `values` seen last, most recent
    /// first, and how many were left out.
    pub fn latest_known(mut values: Vec<KnownValueSummary>) -> (Vec<KnownValueSummary>, u64) {
        values.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then_with(|| a.exe.cmp(&b.exe))
                .then_with(|| a.comm.cmp(&b.comm))
        });
        let omitted = values.len().saturating_sub(MAX_KNOWN_VALUES);
        values.truncate(MAX_KNOWN_VALUES);
        (values, u64::try_from(omitted).unwrap_or(u64::MAX))
    }
}

/// A detection, ready to alert on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub schema: u32,
    /// Derived from the scope, the value and the event that raised it, so a
    /// retried event yields the same id.
    pub finding_id: String,
    pub rule: Rule,
    pub title: String,
    pub severity: Severity,
    pub detected_at: DateTime<Utc>,
    /// When the node saw the read.
    pub observed_at: DateTime<Utc>,
    /// Latest repeated read folded into this finding.
    pub last_seen: DateTime<Utc>,
    /// Reads by the same value after the one that raised the finding.
    pub repeat_count: u64,
    pub cluster: String,
    pub node: String,
    pub event_id: String,
    pub token: Token,
    pub process: Process,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Pod>,
    pub scope: Scope,
    pub value: Value,
    pub baseline: BaselineSummary,
    pub mitre: Mitre,
    pub triage: Vec<String>,
    /// CloudTrail exchanges of the token matched to this read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<Correlation>,
    /// Each rise in severity since the finding was raised, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<SeverityChange>,
    /// Containment decisions, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containment: Vec<ContainmentDecision>,
}

/// Derives the id of the finding that `event_id` raises for `key`.
pub fn finding_id(key: &BaselineKey, event_id: &str) -> String {
    let mut hash = Sha256::new();
    for part in [&key.scope.key, &key.value.key, event_id] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let digest = hash.finalize();
    format!("tg-{}", hex::encode(&digest[..16]))
}

/// Triage steps for a finding, most useful first.
pub(crate) fn triage_steps(
    rule: Rule,
    cluster: &str,
    process: &Process,
    pod: Option<&Pod>,
) -> Vec<String> {
    let mut steps = Vec::new();
    let (namespace, name) = pod
        .and_then(|p| p.namespace.as_deref().zip(p.name.as_deref()))
        .unwrap_or(("<namespace>", "<pod>"));
    match rule {
        Rule::UnfamiliarProcessTokenRead => {
            steps.push(format!(
                "Check whether {} (pid {}) belongs to the workload: compare it with the \
                 container image and recent deploys (kubectl describe pod -n {namespace} {name}).",
                process.exe, process.pid
            ));
            // Exec sessions leave no Kubernetes events, only audit log entries.
            steps.push(format!(
                "Look for an exec session into the pod: with EKS audit logging on, CloudWatch \
                 Logs group /aws/eks/{cluster}/cluster records each pods/exec request for \
                 {namespace}/{name} with its user. Then check the parent process {}, and \
                 kubectl get events -n {namespace} --field-selector involvedObject.name={name} \
                 for restarts or image changes.",
                process
                    .parent
                    .as_ref()
                    .map(|p| format!("{} (pid {})", p.exe, p.pid))
                    .unwrap_or_else(|| "(unknown)".to_owned())
            ));
        }
        Rule::HostProcessTokenRead | Rule::ExchangeWithoutRead => {
            steps.push(format!(
                "A process outside every pod read the token: treat the node as compromised until \
                 {} (pid {}) is explained.",
                process.exe, process.pid
            ));
        }
    }
    steps.push(
        "Search CloudTrail for AssumeRoleWithWebIdentity or AssumeRoleForPodIdentity by this \
         service account since the read, and their source addresses."
            .to_owned(),
    );
    steps.push(
        "If the read is not explained, revoke the role's active sessions (IAM: revoke older \
         sessions) and delete the pod so it gets a fresh token."
            .to_owned(),
    );
    steps
}
