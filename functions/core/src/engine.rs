//! The new-value decision for each token read.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use futures_util::TryFutureExt;
use thiserror::Error;
use tokenguard_schema::{
    ActionReport, ActionResult, AgentOrder, Node, Outcome, OutcomeStatus, TokenRead,
};
use tracing::{debug, info, warn};

use crate::contain::{
    Action, ContainmentDecision, ContainmentOutcome, Mode, NoContainment, Responder, Trigger,
    kill_order, latest_decision,
};
use crate::correlate::{CorrelationPolicy, CorrelationStore, NoCorrelation};
use crate::finding::{
    BaselineSummary, FINDING_SCHEMA_VERSION, Finding, KnownValueSummary, Mitre, Rule, finding_id,
    triage_steps,
};
use crate::policy::Policy;
use crate::render::Alert;
use crate::scope::{BaselineKey, ScopeKind};
use crate::store::{BaselineStore, FindingRecord, Notifier, StoreError, ValueSighting};

mod correlation;

use correlation::Correlator;
pub use correlation::ExchangeDecision;

/// What the engine decided for one read.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The value was known; nothing to report.
    Known,
    /// The value was new and its scope is still learning, so it was learned
    /// silently.
    Learned,
    /// The reader is on the host allowlist.
    Allowed,
    /// The event was processed before; retrying it changed nothing.
    Duplicate,
    /// A finding was raised and notified.
    Finding(Box<Finding>),
}

/// A read the engine could not finish.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error("baseline store: {0}")]
    Store(#[source] StoreError),
    /// The finding is stored but its alert did not go out; a retry of the
    /// same event sends it.
    #[error("failed to send alert for finding {finding_id}")]
    Notify {
        finding_id: String,
        #[source]
        source: StoreError,
    },
}

impl From<StoreError> for EngineError {
    fn from(error: StoreError) -> Self {
        EngineError::Store(error)
    }
}

/// Runs reads through the baseline and raises findings. With a correlation
/// store, it matches them with CloudTrail exchanges, and with a responder, it
/// contains what they name.
#[derive(Debug)]
pub struct Engine<S, N, C = NoCorrelation, K = NoContainment> {
    store: S,
    notifier: N,
    policy: Policy,
    correlation: Option<Correlator<C>>,
    responder: K,
}

impl<S: BaselineStore, N: Notifier> Engine<S, N, NoCorrelation> {
    /// Creates an engine that does not correlate.
    pub fn new(store: S, notifier: N, policy: Policy) -> Self {
        Engine {
            store,
            notifier,
            policy,
            correlation: None,
            responder: NoContainment,
        }
    }
}

impl<S, N, C, K> Engine<S, N, C, K> {
    /// Returns this engine with `responder` deciding containment for each
    /// finding before its alert goes out.
    pub fn with_containment<R: Responder>(self, responder: R) -> Engine<S, N, C, R> {
        Engine {
            store: self.store,
            notifier: self.notifier,
            policy: self.policy,
            correlation: self.correlation,
            responder,
        }
    }

    pub fn responder(&self) -> &K {
        &self.responder
    }
}

impl<S: BaselineStore, N: Notifier, C: CorrelationStore> Engine<S, N, C> {
    /// Creates an engine that stores reads and exchanges in `correlation`
    /// and matches them.
    pub fn with_correlation(
        store: S,
        notifier: N,
        policy: Policy,
        correlation: C,
        correlation_policy: CorrelationPolicy,
    ) -> Self {
        Engine {
            store,
            notifier,
            policy,
            correlation: Some(Correlator::new(correlation, correlation_policy)),
            responder: NoContainment,
        }
    }
}

impl<S: BaselineStore, N: Notifier, C: CorrelationStore, K: Responder> Engine<S, N, C, K> {
    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn notifier(&self) -> &N {
        &self.notifier
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Decides one validated read observed by `node`, detected at `now`.
    pub async fn process(
        &self,
        node: &Node,
        read: &TokenRead,
        now: DateTime<Utc>,
    ) -> Result<Decision, EngineError> {
        let key = BaselineKey::of(read);
        let event_time = read.observed_at;

        if key.scope.kind == ScopeKind::Host && self.policy.host_readers.contains(&read.process.exe)
        {
            debug!(event_id = %read.event_id, exe = %read.process.exe, "host reader allowed");
            return Ok(Decision::Allowed);
        }

        let sighting = self
            .store
            .record_value(
                &key,
                &read.event_id,
                read.count,
                event_time,
                self.policy.forget_after,
                self.policy.refresh_interval,
            )
            .await?;

        match sighting {
            ValueSighting::New => self.decide_new(node, read, &key, now, false).await,
            // The event that created the value is being retried: finish what
            // the first attempt may have left undone.
            ValueSighting::Known(record) if record.first_event_id == read.event_id => {
                match self.decide_new(node, read, &key, now, true).await? {
                    Decision::Learned => Ok(Decision::Duplicate),
                    decision => Ok(decision),
                }
            }
            ValueSighting::Known(record) if record.last_event_id == read.event_id => {
                Ok(Decision::Duplicate)
            }
            ValueSighting::Known(record) => {
                if let Some(finding_id) = &record.finding_id {
                    self.store
                        .add_repeats(finding_id, read.count, event_time)
                        .await?;
                    debug!(event_id = %read.event_id, finding_id, "repeat folded into finding");
                } else {
                    self.mark_familiar(read).await;
                }
                Ok(Decision::Known)
            }
        }
    }

    async fn decide_new(
        &self,
        node: &Node,
        read: &TokenRead,
        key: &BaselineKey,
        now: DateTime<Utc>,
        retry: bool,
    ) -> Result<Decision, EngineError> {
        let event_time = read.observed_at;
        let id = finding_id(key, &read.event_id);
        // The scope decides whether the read is learned or raises a
        // finding. The known values are read at the same time, because the
        // agent waits for a kill order until this returns, so a value new
        // during learning costs one Query more. Only a retry can find its
        // finding stored.
        let existing = async {
            if retry {
                self.store.get_finding(&id).await
            } else {
                Ok(None)
            }
        };
        let (scope, existing, known) = futures_util::try_join!(
            self.store.record_scope(
                &key.scope.key,
                &read.event_id,
                event_time,
                self.policy.forget_after,
            ),
            existing,
            self.store.known_values(
                &key.scope.key,
                &key.value.key,
                event_time,
                self.policy.forget_after,
            ),
        )?;
        let learning_ends = scope.first_seen + self.policy.learning_period;

        // Host reads skip learning: no process outside a pod needs the token
        // unless it is on the allowlist.
        let rule = match key.scope.kind {
            ScopeKind::Host => Rule::HostProcessTokenRead,
            _ if scope.first_event_id == read.event_id || event_time < learning_ends => {
                debug!(
                    event_id = %read.event_id, scope = %key.scope.key, value = %key.value.key,
                    "new value learned"
                );
                self.mark_familiar(read).await;
                return Ok(Decision::Learned);
            }
            _ => Rule::UnfamiliarProcessTokenRead,
        };

        if let Some(existing) = existing {
            if existing.notified {
                return Ok(Decision::Duplicate);
            }
            let keys = self.remember_read(read, &id).await?;
            let existing = self.correlate_read(read, &keys, existing, now).await?;
            let existing = self.contain(existing, Trigger::AgentRead, now).await?;
            return self.notify(key, existing).await;
        }

        let (known_values, known_values_omitted) = BaselineSummary::latest_known(
            known
                .into_iter()
                .map(|(value_key, record)| {
                    let (exe, comm) = value_key.split_once('\u{1f}').unwrap_or((&value_key, ""));
                    KnownValueSummary {
                        exe: exe.to_owned(),
                        comm: comm.to_owned(),
                        first_seen: record.first_seen,
                        last_seen: record.last_seen,
                    }
                })
                .collect(),
        );
        let mut finding = Finding {
            schema: FINDING_SCHEMA_VERSION,
            finding_id: id,
            rule,
            title: rule.title().to_owned(),
            severity: rule.base_severity(),
            detected_at: now,
            observed_at: event_time,
            last_seen: event_time,
            repeat_count: u64::from(read.count - 1),
            cluster: read.cluster.clone(),
            node: node.name.clone(),
            event_id: read.event_id.clone(),
            token: read.token.clone(),
            process: read.process.clone(),
            container: read.container.clone(),
            pod: read.pod.clone(),
            scope: key.scope.clone(),
            value: key.value.clone(),
            baseline: BaselineSummary {
                scope_first_seen: scope.first_seen,
                learning_ended_at: learning_ends,
                learning_period_seconds: self.policy.learning_period.as_secs(),
                forget_after_seconds: self.policy.forget_after.as_secs(),
                known_values,
                known_values_omitted,
            },
            mitre: Mitre::credentials_in_files(),
            triage: triage_steps(rule, &read.cluster, &read.process, read.pod.as_ref()),
            correlation: None,
            changes: Vec::new(),
            containment: Vec::new(),
        };
        // Containment is decided before the finding is stored, so the
        // finding is written once with its decisions and a kill order goes
        // out one write sooner.
        finding.containment = self
            .responder
            .respond(&finding, Trigger::AgentRead, now)
            .await;
        let decided_at = finding.severity;

        let record = FindingRecord {
            finding,
            notified: false,
            version: 0,
        };
        // An exchange that finds the read before the finding is stored skips
        // it, and the read then finds that exchange below.
        let ((), keys) = futures_util::try_join!(
            self.store.put_finding(key, &record).err_into(),
            self.remember_read(read, &record.finding.finding_id),
        )?;
        let mut record = self.correlate_read(read, &keys, record, now).await?;
        if record.finding.severity > decided_at {
            record = self.contain(record, Trigger::AgentRead, now).await?;
        }
        self.notify(key, record).await
    }

    /// Runs the responder on a stored finding and records its new decisions
    /// before the alert goes out, so the alert shows them. A finding retried
    /// after its decisions were stored is not decided again for settled
    /// actions.
    async fn contain(
        &self,
        record: FindingRecord,
        trigger: Trigger,
        now: DateTime<Utc>,
    ) -> Result<FindingRecord, EngineError> {
        let decisions = self.responder.respond(&record.finding, trigger, now).await;
        if decisions.is_empty() {
            return Ok(record);
        }
        self.record_containment(record, &decisions).await
    }

    /// Appends containment decisions to a stored finding. Another writer may
    /// have changed the finding since it was read, so on a version conflict
    /// the finding is read again and the decisions appended to that.
    pub(crate) async fn record_containment(
        &self,
        mut record: FindingRecord,
        decisions: &[ContainmentDecision],
    ) -> Result<FindingRecord, EngineError> {
        const ATTEMPTS: usize = 8;
        for _ in 0..ATTEMPTS {
            let mut candidate = record.clone();
            candidate.finding.containment.extend_from_slice(decisions);
            if self.store.replace_finding(&candidate).await? {
                candidate.version += 1;
                return Ok(candidate);
            }
            let finding_id = &record.finding.finding_id;
            debug!(
                finding_id,
                "finding changed while containment was recorded; retrying"
            );
            record =
                self.store
                    .get_finding(finding_id)
                    .await?
                    .ok_or_else(|| StoreError::Permanent {
                        operation: "record containment",
                        message: format!(
                            "finding {finding_id} disappeared from the findings table"
                        ),
                    })?;
        }
        Err(EngineError::Store(StoreError::Transient {
            operation: "record containment",
            message: format!(
                "finding {} kept changing over {ATTEMPTS} attempts",
                record.finding.finding_id
            ),
        }))
    }

    async fn notify(
        &self,
        key: &BaselineKey,
        record: FindingRecord,
    ) -> Result<Decision, EngineError> {
        let finding = record.finding;
        if let Err(source) = self.notifier.notify(&Alert::Finding(&finding)).await {
            warn!(finding_id = %finding.finding_id, error = %source, "alert not sent");
            return Err(EngineError::Notify {
                finding_id: finding.finding_id,
                source,
            });
        }
        self.store
            .mark_notified(&finding.finding_id, record.version)
            .await?;
        info!(
            finding_id = %finding.finding_id, severity = finding.severity.as_str(),
            scope = %key.scope.key, exe = %key.value.exe, "finding raised"
        );
        Ok(Decision::Finding(Box::new(finding)))
    }

    /// Records on its finding what an agent did with a kill order. A report
    /// is ignored, with a warning, unless the finding's latest kill decision
    /// is an order for the same process on the reporting node, so a report
    /// cannot rewrite another node's finding or a settled decision.
    pub async fn record_report(
        &self,
        node: &Node,
        report: &ActionReport,
        now: DateTime<Utc>,
    ) -> Result<bool, EngineError> {
        let finding_id = &report.finding_id;
        let Some(record) = self.store.get_finding(finding_id).await? else {
            warn!(finding_id, node = %node.name, "action report for an unknown finding ignored");
            return Ok(false);
        };
        let AgentOrder::Kill { pid, start_time } = report.order;
        let ordered = kill_order(&record.finding) == Some((pid, start_time));
        if record.finding.node != node.name || !ordered {
            warn!(
                finding_id, node = %node.name, pid,
                "action report does not match an open kill order of this node; ignored"
            );
            return Ok(false);
        }
        let detail = report.detail.as_deref().unwrap_or_default();
        let process = format!("pid {pid} (start time {start_time})");
        let outcome = match report.result {
            ActionResult::Killed => ContainmentOutcome::Acted {
                detail: format!("the agent sent SIGKILL to {process} at {}", report.at),
            },
            ActionResult::Exited => ContainmentOutcome::Skipped {
                reason: format!("{process} had exited before the order arrived"),
            },
            ActionResult::PidReused => ContainmentOutcome::Skipped {
                reason: format!("pid {pid} belongs to another process now; it was left alone"),
            },
            ActionResult::Disabled => ContainmentOutcome::Skipped {
                reason: "the agent on this node runs with kill orders turned off".to_owned(),
            },
            ActionResult::Failed => ContainmentOutcome::Failed {
                error: format!("SIGKILL to {process} failed: {detail}"),
            },
        };
        let previous = latest_decision(&record.finding, Action::KillProcess);
        let decision = ContainmentDecision {
            action: Action::KillProcess,
            mode: previous.map_or(Mode::Enforce, |decision| decision.mode),
            outcome,
            decided_at: now,
            severity: record.finding.severity,
        };
        info!(
            finding_id, node = %node.name, pid, result = ?report.result,
            "kill reported by the agent"
        );
        self.record_containment(record, std::slice::from_ref(&decision))
            .await?;
        Ok(true)
    }

    /// Decides every event of a batch, one outcome each.
    ///
    /// An event that fails validation or processing gets its own outcome and
    /// never stops the rest. A valid event whose `event_id` an earlier valid
    /// event of the batch had gets a `duplicate` outcome without processing,
    /// so one id never raises two findings.
    pub async fn process_batch(
        &self,
        node: &Node,
        events: &[Result<TokenRead, (String, String)>],
        now: DateTime<Utc>,
    ) -> (Vec<Outcome>, Vec<Finding>) {
        let mut outcomes = Vec::with_capacity(events.len());
        let mut findings = Vec::new();
        let mut seen_ids = HashSet::new();
        for event in events {
            let read = match event {
                Ok(read) => read,
                Err((event_id, reason)) => {
                    outcomes.push(Outcome::with_status(
                        event_id,
                        OutcomeStatus::Invalid,
                        Some(reason.clone()),
                    ));
                    continue;
                }
            };
            if !seen_ids.insert(read.event_id.as_str()) {
                debug!(event_id = %read.event_id, "event id repeated within its batch");
                outcomes.push(Outcome::with_status(
                    &read.event_id,
                    OutcomeStatus::Duplicate,
                    Some(format!(
                        "event_id {:?} repeats an earlier event of this batch: \
                         only the first was processed",
                        read.event_id
                    )),
                ));
                continue;
            }
            let outcome = match self.process(node, read, now).await {
                Ok(Decision::Finding(finding)) => {
                    let mut outcome =
                        Outcome::accepted(&read.event_id, Some(finding.finding_id.clone()));
                    outcome.order = kill_order(&finding)
                        .map(|(pid, start_time)| AgentOrder::Kill { pid, start_time });
                    findings.push(*finding);
                    outcome
                }
                Ok(Decision::Duplicate) => {
                    Outcome::with_status(&read.event_id, OutcomeStatus::Duplicate, None)
                }
                Ok(Decision::Known | Decision::Learned | Decision::Allowed) => {
                    Outcome::accepted(&read.event_id, None)
                }
                Err(error) => {
                    warn!(event_id = %read.event_id, error = %error, "event not processed");
                    Outcome::with_status(
                        &read.event_id,
                        OutcomeStatus::Failed,
                        Some(error.to_string()),
                    )
                }
            };
            outcomes.push(outcome);
        }
        (outcomes, findings)
    }
}

#[cfg(test)]
pub(crate) mod tests;
