//! Correlation of token reads with the CloudTrail exchanges that used them.
//!
//! CloudTrail names the service account and the cluster of an exchange, never
//! the process or the pod (except EKS Auth's session tags, which name the
//! pod). Both sides are therefore keyed by [`Subject`]: cluster, namespace and
//! service account. Each side is stored when it arrives and looks for the
//! other, so a read followed by a late exchange and an exchange that landed
//! before its read both match.

mod egress;
mod pattern;
mod store;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokenguard_schema::{TokenKind, TokenRead};

use crate::cloudtrail::{Exchange, ExchangeApi};
use crate::finding::{FINDING_SCHEMA_VERSION, Mitre, MitreRef, Rule, Severity};

pub use egress::{EgressCidrs, EgressError};
pub use pattern::value_pattern;
pub(crate) use store::MemoryCorrelation;
pub use store::{
    CorrelationStore, ExchangeFindingRecord, ExchangeRecord, NoCorrelation, ProfileSighting,
    ReadRecord,
};

/// How reads and exchanges are matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationPolicy {
    /// How long after a read an exchange still matches it.
    pub window: Duration,
    /// How long before a read an exchange may be and still match it, for the
    /// clock difference between a node and AWS.
    pub clock_skew: Duration,
    /// How close to an exchange a familiar read must be to explain it. SDKs
    /// read the token right before they exchange it.
    pub familiar_distance: Duration,
    /// How long exchanges and reads are kept for matching.
    pub retention: Duration,
    /// Addresses each cluster reaches AWS from, besides the learned ones.
    pub egress: EgressCidrs,
}

impl Default for CorrelationPolicy {
    fn default() -> Self {
        CorrelationPolicy {
            window: Duration::from_secs(15 * 60),
            clock_skew: Duration::from_secs(2 * 60),
            familiar_distance: Duration::from_secs(2 * 60),
            retention: Duration::from_secs(24 * 3600),
            egress: EgressCidrs::default(),
        }
    }
}

/// Whom CloudTrail can tie an exchange to: a service account of a cluster,
/// or for `AssumeRoleForPodIdentity`, which names no service account, the
/// cluster's Pod Identity as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Subject {
    pub cluster: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// Marks the subject of a cluster's `AssumeRoleForPodIdentity` calls in keys.
const POD_IDENTITY_SUBJECT: &str = "~eks-auth";

impl Subject {
    /// Stable key of the subject in the correlation store. Kubernetes names
    /// contain no `/`, so the parts cannot run into each other.
    pub fn key(&self) -> String {
        match (&self.namespace, &self.service_account) {
            (Some(namespace), Some(account)) => {
                format!("{}/{namespace}/{account}", self.cluster)
            }
            _ => format!("{}/{POD_IDENTITY_SUBJECT}", self.cluster),
        }
    }

    /// The subject of an exchange whose cluster resolved to `cluster`.
    pub fn of_exchange(exchange: &Exchange, cluster: &str) -> Subject {
        Subject {
            cluster: cluster.to_owned(),
            namespace: exchange.namespace.clone(),
            service_account: exchange.service_account.clone(),
        }
    }

    /// The subjects whose exchanges can use the token of a read: its service
    /// account, and for a Pod Identity token also the cluster's Pod Identity
    /// calls. Empty when the read's pod or service account is not known.
    pub fn of_read(read: &TokenRead) -> Vec<Subject> {
        let Some(pod) = &read.pod else {
            return Vec::new();
        };
        let (Some(namespace), Some(account)) = (&pod.namespace, &pod.service_account) else {
            return Vec::new();
        };
        let mut subjects = vec![Subject {
            cluster: read.cluster.clone(),
            namespace: Some(namespace.clone()),
            service_account: Some(account.clone()),
        }];
        if read.token.kind == TokenKind::PodIdentity {
            subjects.push(Subject {
                cluster: read.cluster.clone(),
                namespace: None,
                service_account: None,
            });
        }
        subjects
    }

    /// `payments/api`, or `EKS Pod Identity`.
    pub fn short_name(&self) -> String {
        match (&self.namespace, &self.service_account) {
            (Some(namespace), Some(account)) => format!("{namespace}/{account}"),
            _ => "EKS Pod Identity".to_owned(),
        }
    }

    /// `service account payments/api of cluster prod`.
    pub fn describe(&self) -> String {
        match (&self.namespace, &self.service_account) {
            (Some(namespace), Some(account)) => {
                format!(
                    "service account {namespace}/{account} of cluster {}",
                    self.cluster
                )
            }
            _ => format!("EKS Pod Identity of cluster {}", self.cluster),
        }
    }
}

/// What was unusual about an exchange when it arrived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CallSignals {
    /// The source address is an IP address outside the cluster's egress.
    pub outside_egress: bool,
    /// The subject never used this user agent before, after learning.
    pub new_user_agent: bool,
    /// The subject never used this session-name pattern before, after
    /// learning.
    pub new_session_name: bool,
}

/// How many event ids a folded call keeps, to recognize a redelivered event.
const RECENT_EVENT_IDS: usize = 16;

/// One exchange matched to a finding, or several alike folded into one: same
/// API, source address, user agent, role, outcome and pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchedCall {
    pub api: ExchangeApi,
    pub event_id: String,
    pub event_time: DateTime<Utc>,
    /// Latest event folded into this call.
    pub last_event_time: DateTime<Utc>,
    /// Events folded into this call, counting the first.
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_arn: Option<String>,
    /// `success`, or `failed: <errorCode>`.
    pub outcome: String,
    pub signals: CallSignals,
    /// The latest event ids folded in, so a redelivered event counts once.
    pub recent_event_ids: Vec<String>,
}

impl MatchedCall {
    pub fn of(exchange: &Exchange, signals: CallSignals) -> MatchedCall {
        MatchedCall {
            api: exchange.api,
            event_id: exchange.event_id.clone(),
            event_time: exchange.event_time,
            last_event_time: exchange.event_time,
            count: 1,
            source_address: exchange.source_address.clone(),
            user_agent: exchange.user_agent.clone(),
            role_arn: exchange.role_arn.clone(),
            session_name: exchange.session_name.clone(),
            pod_name: exchange.pod_name.clone(),
            pod_uid: exchange.pod_uid.clone(),
            caller_arn: exchange.caller_arn.clone(),
            outcome: exchange.outcome(),
            signals,
            recent_event_ids: vec![exchange.event_id.clone()],
        }
    }

    pub fn succeeded(&self) -> bool {
        self.outcome == "success"
    }

    fn folds(&self, other: &MatchedCall) -> bool {
        self.api == other.api
            && self.source_address == other.source_address
            && self.user_agent == other.user_agent
            && self.role_arn == other.role_arn
            && self.outcome == other.outcome
            && self.pod_uid == other.pod_uid
    }

    fn contains(&self, event_id: &str) -> bool {
        self.event_id == event_id || self.recent_event_ids.iter().any(|id| id == event_id)
    }

    /// Counts `other` in. Its user agent is new only the first time it is
    /// seen, so the folded call keeps every signal either had.
    fn fold(&mut self, other: &MatchedCall) {
        self.count += 1;
        self.signals.outside_egress |= other.signals.outside_egress;
        self.signals.new_user_agent |= other.signals.new_user_agent;
        self.signals.new_session_name |= other.signals.new_session_name;
        self.last_event_time = self.last_event_time.max(other.event_time);
        self.recent_event_ids.push(other.event_id.clone());
        if self.recent_event_ids.len() > RECENT_EVENT_IDS {
            self.recent_event_ids.remove(0);
        }
    }
}

/// The exchanges matched to a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Correlation {
    pub subject: Subject,
    pub calls: Vec<MatchedCall>,
}

impl Correlation {
    /// Adds a call, folding it into an alike one. Returns `false`, changing
    /// nothing, when the call's event was added before.
    pub fn add(&mut self, call: &MatchedCall) -> bool {
        if self
            .calls
            .iter()
            .any(|known| known.contains(&call.event_id))
        {
            return false;
        }
        match self.calls.iter_mut().find(|known| known.folds(call)) {
            Some(known) => known.fold(call),
            None => {
                self.calls.push(call.clone());
                self.calls.sort_by_key(|known| known.event_time);
            }
        }
        true
    }
}

/// A rise in a finding's severity, and what caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeverityChange {
    pub at: DateTime<Utc>,
    pub from: Severity,
    pub to: Severity,
    pub reason: String,
}

/// The severity a read finding reaches with its matched calls.
///
/// A successful exchange from outside the egress makes it critical; one with
/// a user agent or session-name pattern new to the subject makes it high.
/// Failed exchanges then raise the result one step, because someone tried to
/// use the token.
pub fn correlated_severity(base: Severity, calls: &[MatchedCall]) -> Severity {
    let mut severity = base;
    for call in calls.iter().filter(|call| call.succeeded()) {
        if call.signals.outside_egress {
            severity = severity.max(Severity::Critical);
        } else if call.signals.new_user_agent || call.signals.new_session_name {
            severity = severity.max(Severity::High);
        }
    }
    if calls.iter().any(|call| !call.succeeded()) {
        severity = severity.raised();
    }
    severity
}

/// Why `call` changed a finding's severity, for the alert.
pub fn describe_call(call: &MatchedCall, read_at: DateTime<Utc>) -> String {
    let mut what = call.api.as_str().to_owned();
    if let Some(address) = &call.source_address {
        what.push_str(&format!(" from {address}"));
    }
    let mut notes = Vec::new();
    if !call.succeeded() {
        notes.push(call.outcome.clone());
    }
    if call.signals.outside_egress {
        notes.push("outside the cluster's egress".to_owned());
    }
    if call.signals.new_user_agent {
        let agent = call.user_agent.as_deref().unwrap_or("(none)");
        notes.push(format!(
            "user agent {agent:?} never used by this service account"
        ));
    }
    if call.signals.new_session_name {
        let session = call.session_name.as_deref().unwrap_or("(none)");
        notes.push(format!(
            "session name {session:?} unlike this service account's"
        ));
    }
    let delay = call.event_time.signed_duration_since(read_at);
    let when = if delay >= chrono::Duration::zero() {
        format!("{} after the read", human_delay(delay))
    } else {
        format!("{} before the read", human_delay(-delay))
    };
    if notes.is_empty() {
        format!("{what}, {when}")
    } else {
        format!("{what} ({}), {when}", notes.join("; "))
    }
}

fn human_delay(delay: chrono::Duration) -> String {
    let seconds = delay.num_seconds();
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{}s", seconds / 60, seconds % 60),
        _ => format!("{}h{}m", seconds / 3600, (seconds % 3600) / 60),
    }
}

/// A token exchange from outside the cluster's egress with no read of the
/// token near it: the token was taken some other way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeFinding {
    pub schema: u32,
    /// Derived from the subject, the source address and the day, so repeats
    /// from one address fold into one finding a day.
    pub finding_id: String,
    pub rule: Rule,
    pub title: String,
    pub severity: Severity,
    pub detected_at: DateTime<Utc>,
    /// Time of the first exchange.
    pub observed_at: DateTime<Utc>,
    /// Time of the latest exchange folded in.
    pub last_seen: DateTime<Utc>,
    /// Exchanges folded in after the first.
    pub repeat_count: u64,
    pub cluster: String,
    pub subject: Subject,
    pub call: MatchedCall,
    /// The egress the address was checked against: configured CIDRs, then
    /// learned addresses.
    pub egress: Vec<String>,
    pub mitre: Mitre,
    pub triage: Vec<String>,
}

impl ExchangeFinding {
    /// Builds the finding for an unexplained exchange.
    pub fn new(
        subject: &Subject,
        call: MatchedCall,
        egress: Vec<String>,
        now: DateTime<Utc>,
    ) -> ExchangeFinding {
        let rule = Rule::ExchangeWithoutRead;
        let address = call.source_address.clone().unwrap_or_default();
        ExchangeFinding {
            schema: FINDING_SCHEMA_VERSION,
            finding_id: exchange_finding_id(subject, &address, call.event_time),
            rule,
            title: rule.title().to_owned(),
            severity: Severity::High,
            detected_at: now,
            observed_at: call.event_time,
            last_seen: call.event_time,
            repeat_count: 0,
            cluster: subject.cluster.clone(),
            subject: subject.clone(),
            mitre: Mitre {
                tactic: MitreRef {
                    id: "TA0006".to_owned(),
                    name: "Credential Access".to_owned(),
                },
                technique: MitreRef {
                    id: "T1550.001".to_owned(),
                    name: "Use Alternate Authentication Material: Application Access Token"
                        .to_owned(),
                },
            },
            triage: exchange_triage(subject, &call),
            call,
            egress,
        }
    }
}

/// Id of the finding for exchanges of `subject` from `address` on the UTC day
/// of `time`.
pub fn exchange_finding_id(subject: &Subject, address: &str, time: DateTime<Utc>) -> String {
    let mut hash = Sha256::new();
    let day = time.format("%Y-%m-%d").to_string();
    for part in ["exchange", &subject.key(), address, &day] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    format!("tg-{}", hex::encode(&hash.finalize()[..16]))
}

fn exchange_triage(subject: &Subject, call: &MatchedCall) -> Vec<String> {
    let address = call.source_address.as_deref().unwrap_or("(unknown)");
    let mut steps = vec![format!(
        "Find out whether {address} belongs to you: a NAT gateway, proxy or VPC endpoint of \
         cluster {} that is missing from the egress CIDRs, or an address you do not own.",
        subject.cluster
    )];
    if let Some(role) = &call.role_arn {
        steps.push(format!(
            "Search CloudTrail for calls made with the session of {role} from {address} \
             since {}, to see what the credentials were used for.",
            call.event_time.to_rfc3339()
        ));
    }
    steps.push(format!(
        "No process read the token near this exchange, so look for a copy: the {} pods' \
         logs and crash dumps, images or volumes with the token, and the node's \
         /var/lib/kubelet/pods.",
        subject.describe()
    ));
    steps.push(
        "If the address is not yours, revoke the role's active sessions (IAM: revoke older \
         sessions) and restart the pods so they get fresh tokens."
            .to_owned(),
    );
    steps
}

/// Whether a read at `read_at` and an exchange at `exchange_at` fall in one
/// matching window: the exchange at most `window` after the read, or at most
/// `clock_skew` before it.
pub fn in_window(
    read_at: DateTime<Utc>,
    exchange_at: DateTime<Utc>,
    policy: &CorrelationPolicy,
) -> bool {
    let after = exchange_at.signed_duration_since(read_at);
    let window = chrono::Duration::from_std(policy.window).unwrap_or(chrono::Duration::MAX);
    let skew = chrono::Duration::from_std(policy.clock_skew).unwrap_or(chrono::Duration::MAX);
    after <= window && -after <= skew
}

#[cfg(test)]
pub(crate) mod tests;
