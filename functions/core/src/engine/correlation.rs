//! The engine's side of correlation: reads look for exchanges that came
//! before them, and exchanges look for reads, escalate their findings or
//! raise findings of their own.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, DurationRound, Utc};
use tokenguard_schema::TokenRead;
use tracing::{debug, info, warn};

use super::{Engine, EngineError};
use crate::cloudtrail::{ClusterRef, Exchange};
use crate::contain::{Responder, Trigger};
use crate::correlate::{
    CallSignals, Correlation, CorrelationPolicy, CorrelationStore, ExchangeFinding,
    ExchangeFindingRecord, ExchangeRecord, MatchedCall, ReadRecord, SeverityChange, Subject,
    correlated_severity, describe_call, in_window, value_pattern,
};
use crate::finding::Severity;
use crate::render::Alert;
use crate::store::{BaselineStore, FindingRecord, Notifier, StoreError, needs_refresh};

/// Attempts at replacing a finding that other writers keep changing.
const REPLACE_ATTEMPTS: usize = 8;

/// Entries a cache keeps before it starts over.
const CACHE_LIMIT: usize = 65_536;

/// How long learned egress read from the store is trusted before reading it
/// again. Other function instances learn addresses too.
const EGRESS_CACHE_SECONDS: u64 = 60;

/// Position of an exchange's source address against its cluster's egress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EgressVerdict {
    /// In a configured CIDR or a learned address.
    Inside,
    /// Outside a known egress.
    Outside,
    /// The cluster has no configured CIDR and no learned address yet.
    Unknown,
    /// The source is a service name such as `eks-auth.amazonaws.com`, or
    /// missing.
    NotAnAddress,
}

/// A correlation store with its policy and what this process already wrote.
#[derive(Debug)]
pub(super) struct Correlator<C> {
    store: C,
    policy: CorrelationPolicy,
    cache: Mutex<Cache>,
}

/// Writes this process may skip because it made them recently. Losing the
/// cache costs round trips, never a decision.
#[derive(Debug, Default)]
struct Cache {
    /// Familiar-read markers written, by (subject key, minute).
    markers: HashSet<(String, DateTime<Utc>)>,
    /// Profile values stored as known, by subject key and value, with the
    /// event time of the last write.
    profile: HashMap<String, HashMap<String, DateTime<Utc>>>,
    /// Learned egress by cluster, with when it was read.
    egress: HashMap<String, (Instant, Vec<IpAddr>)>,
}

impl<C> Correlator<C> {
    pub(super) fn new(store: C, policy: CorrelationPolicy) -> Correlator<C> {
        Correlator {
            store,
            policy,
            cache: Mutex::new(Cache::default()),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.markers.len() + cache.profile.len() > CACHE_LIMIT {
            cache.markers.clear();
            cache.profile.clear();
        }
        cache
    }

    fn expires(&self, time: DateTime<Utc>) -> DateTime<Utc> {
        time + chrono::Duration::from_std(self.policy.retention).unwrap_or(chrono::Duration::MAX)
    }
}

fn duration(value: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(value).unwrap_or(chrono::Duration::MAX)
}

/// What the engine did with one exchange.
#[derive(Debug, Clone, PartialEq)]
pub enum ExchangeDecision {
    /// Stored for later reads. `familiar` says whether a familiar read was
    /// near it; `learned_egress` whether its address became egress.
    Stored {
        familiar: bool,
        learned_egress: bool,
        signals: CallSignals,
    },
    /// Matched the findings of unfamiliar reads; `escalated` lists those
    /// whose severity rose.
    Matched {
        findings: Vec<String>,
        escalated: Vec<String>,
    },
    /// Raised a finding of its own and alerted.
    Finding(Box<ExchangeFinding>),
    /// Counted as a repeat of an exchange finding, without an alert.
    Folded { finding_id: String },
    /// The event was processed before; processing it again changed nothing.
    Duplicate,
}

/// A finding after calls were merged into it.
struct Merged {
    record: FindingRecord,
    /// Severity before the merge.
    before: Severity,
    /// Whether the version merged into had its alert sent.
    was_notified: bool,
    /// Whether the merge added a call.
    changed: bool,
}

impl<S: BaselineStore, N: Notifier, C: CorrelationStore, K: Responder> Engine<S, N, C, K> {
    /// The correlation settings, if this engine correlates.
    pub fn correlation_policy(&self) -> Option<&CorrelationPolicy> {
        self.correlation.as_ref().map(|c| &c.policy)
    }

    /// Records that a familiar process of the read's subjects read the token
    /// this minute, so an exchange near it counts as explained. A failure is
    /// logged and does not fail the read, whose baseline is already stored.
    pub(super) async fn mark_familiar(&self, read: &TokenRead) {
        let Some(correlator) = &self.correlation else {
            return;
        };
        let Ok(minute) = read
            .observed_at
            .duration_trunc(chrono::Duration::minutes(1))
        else {
            return;
        };
        let keys: Vec<String> = {
            let cache = correlator.cache();
            Subject::of_read(read)
                .iter()
                .map(Subject::key)
                .filter(|key| !cache.markers.contains(&(key.clone(), minute)))
                .collect()
        };
        if keys.is_empty() {
            return;
        }
        let marker = ReadRecord {
            observed_at: minute,
            finding_id: None,
            pod_uid: None,
        };
        let stored = correlator
            .store
            .put_read(&keys, &marker, correlator.expires(minute))
            .await;
        match stored {
            Ok(()) => {
                let mut cache = correlator.cache();
                cache
                    .markers
                    .extend(keys.into_iter().map(|key| (key, minute)));
            }
            Err(error) => {
                warn!(event_id = %read.event_id, %error, "familiar read not recorded for correlation");
            }
        }
    }

    /// Stores an unfamiliar read, whose finding is `finding_id`, for later
    /// exchanges. Returns the subject keys it was stored under: none when
    /// correlation is off or the read's service account is not known.
    pub(super) async fn remember_read(
        &self,
        read: &TokenRead,
        finding_id: &str,
    ) -> Result<Vec<String>, EngineError> {
        let Some(correlator) = &self.correlation else {
            return Ok(Vec::new());
        };
        let keys: Vec<String> = Subject::of_read(read).iter().map(Subject::key).collect();
        if keys.is_empty() {
            debug!(event_id = %read.event_id, "read has no service account to correlate");
            return Ok(keys);
        }
        let stored = ReadRecord {
            observed_at: read.observed_at,
            finding_id: Some(finding_id.to_owned()),
            pod_uid: read.pod.as_ref().map(|pod| pod.uid.clone()),
        };
        correlator
            .store
            .put_read(&keys, &stored, correlator.expires(read.observed_at))
            .await?;
        Ok(keys)
    }

    /// Merges the exchanges that landed before a read, stored under `keys`
    /// by [`Engine::remember_read`], into its finding.
    pub(super) async fn correlate_read(
        &self,
        read: &TokenRead,
        keys: &[String],
        record: FindingRecord,
        now: DateTime<Utc>,
    ) -> Result<FindingRecord, EngineError> {
        let Some(correlator) = &self.correlation else {
            return Ok(record);
        };
        let pod_uid = read.pod.as_ref().map(|pod| pod.uid.clone());
        let policy = &correlator.policy;
        let from = read.observed_at - duration(policy.clock_skew);
        let to = read.observed_at + duration(policy.window);
        let found = futures_util::future::try_join_all(
            keys.iter()
                .map(|key| correlator.store.exchanges_between(key, from, to)),
        )
        .await?;
        let exchanges: Vec<ExchangeRecord> = found
            .into_iter()
            .flatten()
            .filter(|exchange| {
                let uid = exchange.exchange.pod_uid.as_ref();
                uid.is_none() || uid == pod_uid.as_ref()
            })
            .collect();
        if exchanges.is_empty() {
            return Ok(record);
        }
        let id = record.finding.finding_id.clone();
        match self.merge_calls(&id, Some(record), &exchanges, now).await? {
            Some(merged) => Ok(merged.record),
            None => Err(EngineError::Store(StoreError::Transient {
                operation: "correlate read",
                message: format!("finding {id} disappeared while calls were merged into it"),
            })),
        }
    }

    /// Adds the calls of `exchanges` to a finding and raises its severity by
    /// the correlation rules, replacing the stored finding. Returns `None`
    /// when the finding is not stored.
    async fn merge_calls(
        &self,
        finding_id: &str,
        known: Option<FindingRecord>,
        exchanges: &[ExchangeRecord],
        now: DateTime<Utc>,
    ) -> Result<Option<Merged>, EngineError> {
        let mut record = match known {
            Some(record) => record,
            None => match self.store.get_finding(finding_id).await? {
                Some(record) => record,
                None => return Ok(None),
            },
        };
        for _ in 0..REPLACE_ATTEMPTS {
            let before = record.finding.severity;
            let mut finding = record.finding.clone();
            let mut changed = false;
            for exchange in exchanges {
                let call = MatchedCall::of(&exchange.exchange, exchange.signals);
                let correlation = finding.correlation.get_or_insert_with(|| Correlation {
                    subject: exchange.subject.clone(),
                    calls: Vec::new(),
                });
                if !correlation.add(&call) {
                    continue;
                }
                changed = true;
                let severity =
                    correlated_severity(finding.rule.base_severity(), &correlation.calls);
                if severity > finding.severity {
                    finding.changes.push(SeverityChange {
                        at: now,
                        from: finding.severity,
                        to: severity,
                        reason: describe_call(&call, finding.observed_at),
                    });
                    finding.severity = severity;
                }
            }
            let was_notified = record.notified;
            if !changed {
                return Ok(Some(Merged {
                    record,
                    before,
                    was_notified,
                    changed,
                }));
            }
            let candidate = FindingRecord {
                notified: was_notified && finding.severity == before,
                finding,
                version: record.version,
            };
            if self.store.replace_finding(&candidate).await? {
                let record = FindingRecord {
                    version: candidate.version + 1,
                    ..candidate
                };
                return Ok(Some(Merged {
                    record,
                    before,
                    was_notified,
                    changed,
                }));
            }
            debug!(
                finding_id,
                "finding changed while calls were merged; merging again"
            );
            record = match self.store.get_finding(finding_id).await? {
                Some(record) => record,
                None => return Ok(None),
            };
        }
        Err(EngineError::Store(StoreError::Transient {
            operation: "merge calls into finding",
            message: format!(
                "finding {finding_id} changed {REPLACE_ATTEMPTS} times while calls were merged"
            ),
        }))
    }

    /// Decides one exchange whose cluster resolved to `cluster`.
    ///
    /// Processing an exchange again, as at-least-once delivery does, adds
    /// nothing twice: calls are kept by event id, and the signals of the
    /// first processing are reused.
    pub async fn process_exchange(
        &self,
        exchange: Exchange,
        cluster: &str,
        now: DateTime<Utc>,
    ) -> Result<ExchangeDecision, EngineError> {
        let Some(correlator) = &self.correlation else {
            return Err(EngineError::Store(StoreError::Permanent {
                operation: "process exchange",
                message: "this engine has no correlation store: create it with \
                          Engine::with_correlation"
                    .to_owned(),
            }));
        };
        let subject = Subject::of_exchange(&exchange, cluster);
        let mut resolved = exchange;
        resolved.cluster = ClusterRef::Name(cluster.to_owned());
        let (signals, egress) = self
            .exchange_signals(correlator, &subject, &resolved)
            .await?;
        let record = ExchangeRecord {
            subject,
            exchange: resolved,
            signals,
        };
        let expires = correlator.expires(record.exchange.event_time);
        let (record, duplicate) = match correlator.store.put_exchange(&record, expires).await? {
            Some(stored) => (stored, true),
            None => (record, false),
        };

        let exchange = &record.exchange;
        let policy = &correlator.policy;
        let reads = correlator
            .store
            .reads_between(
                &record.subject.key(),
                exchange.event_time - duration(policy.window),
                exchange.event_time + duration(policy.clock_skew),
            )
            .await?;
        let mut unfamiliar: Vec<&str> = reads
            .iter()
            .filter(|read| {
                in_window(read.observed_at, exchange.event_time, policy)
                    && (exchange.pod_uid.is_none() || read.pod_uid == exchange.pod_uid)
            })
            .filter_map(|read| read.finding_id.as_deref())
            .collect();
        unfamiliar.sort_unstable();
        unfamiliar.dedup();
        if !unfamiliar.is_empty() {
            return self.escalate(&unfamiliar, &record, duplicate, now).await;
        }

        // A marker covers the minute that starts at its time.
        let half_minute = chrono::Duration::seconds(30);
        let familiar = reads.iter().any(|read| {
            read.finding_id.is_none()
                && (read.observed_at + half_minute - exchange.event_time).abs()
                    <= duration(policy.familiar_distance) + half_minute
        });
        // The workload's own SDK, right after a familiar read, teaches an
        // address the egress does not have yet. With no egress known at all,
        // this is how the first addresses are learned.
        let learnable = matches!(egress, EgressVerdict::Outside | EgressVerdict::Unknown)
            && exchange.succeeded()
            && !record.signals.new_user_agent;
        if familiar && learnable {
            self.learn_egress(correlator, &record).await?;
            return Ok(ExchangeDecision::Stored {
                familiar,
                learned_egress: true,
                signals: record.signals,
            });
        }
        if !familiar && record.signals.outside_egress && exchange.succeeded() {
            return self.raise_exchange_finding(correlator, &record, now).await;
        }
        if duplicate {
            return Ok(ExchangeDecision::Duplicate);
        }
        debug!(
            event_id = %exchange.event_id, subject = %record.subject.key(), familiar,
            "exchange stored"
        );
        Ok(ExchangeDecision::Stored {
            familiar,
            learned_egress: false,
            signals: record.signals,
        })
    }

    /// Merges an exchange into the findings of the reads it matched, and
    /// sends a follow-up alert for each whose severity rose.
    async fn escalate(
        &self,
        finding_ids: &[&str],
        record: &ExchangeRecord,
        duplicate: bool,
        now: DateTime<Utc>,
    ) -> Result<ExchangeDecision, EngineError> {
        let mut findings = Vec::new();
        let mut escalated = Vec::new();
        let mut changed_any = false;
        for finding_id in finding_ids {
            let Some(mut merged) = self
                .merge_calls(finding_id, None, std::slice::from_ref(record), now)
                .await?
            else {
                debug!(finding_id, "matched read's finding is no longer stored");
                continue;
            };
            changed_any |= merged.changed;
            findings.push(finding_id.to_string());
            let rose = merged.record.finding.severity > merged.before;
            if rose {
                merged.record = self
                    .contain(merged.record, Trigger::Escalation, now)
                    .await?;
            }
            let finding = &merged.record.finding;
            let alert = if rose && merged.was_notified {
                Some(Alert::Escalation {
                    finding,
                    from: merged.before,
                })
            } else if rose {
                Some(Alert::Finding(finding))
            } else if !merged.changed && !merged.record.notified {
                // A redelivered exchange whose follow-up did not go out.
                finding.changes.last().map(|change| Alert::Escalation {
                    finding,
                    from: change.from,
                })
            } else {
                None
            };
            let Some(alert) = alert else {
                continue;
            };
            if let Err(source) = self.notifier.notify(&alert).await {
                warn!(finding_id, error = %source, "follow-up alert not sent");
                return Err(EngineError::Notify {
                    finding_id: finding_id.to_string(),
                    source,
                });
            }
            self.store
                .mark_notified(finding_id, merged.record.version)
                .await?;
            info!(
                finding_id, severity = finding.severity.as_str(),
                event_id = %record.exchange.event_id, "finding escalated by an exchange"
            );
            escalated.push(finding_id.to_string());
        }
        if duplicate && !changed_any && escalated.is_empty() {
            return Ok(ExchangeDecision::Duplicate);
        }
        Ok(ExchangeDecision::Matched {
            findings,
            escalated,
        })
    }

    async fn raise_exchange_finding(
        &self,
        correlator: &Correlator<C>,
        record: &ExchangeRecord,
        now: DateTime<Utc>,
    ) -> Result<ExchangeDecision, EngineError> {
        let exchange = &record.exchange;
        let call = MatchedCall::of(exchange, record.signals);
        let egress = self.egress_list(correlator, &record.subject.cluster);
        let finding = ExchangeFinding::new(&record.subject, call.clone(), egress, now);
        let fresh = ExchangeFindingRecord {
            finding,
            notified: false,
        };
        let stored = correlator.store.put_exchange_finding(&fresh).await?;
        let (record_to_alert, decision) = match stored {
            None => (
                fresh.clone(),
                ExchangeDecision::Finding(Box::new(fresh.finding)),
            ),
            Some(existing) if existing.finding.call.event_id == exchange.event_id => {
                if existing.notified {
                    return Ok(ExchangeDecision::Duplicate);
                }
                let decision = ExchangeDecision::Finding(Box::new(existing.finding.clone()));
                (existing, decision)
            }
            Some(existing) => {
                let finding_id = existing.finding.finding_id.clone();
                correlator
                    .store
                    .fold_exchange_finding(&finding_id, &call)
                    .await?;
                debug!(finding_id, event_id = %exchange.event_id, "exchange folded into finding");
                if existing.notified {
                    return Ok(ExchangeDecision::Folded { finding_id });
                }
                (existing, ExchangeDecision::Folded { finding_id })
            }
        };
        let finding = &record_to_alert.finding;
        if let Err(source) = self.notifier.notify(&Alert::Exchange(finding)).await {
            warn!(finding_id = %finding.finding_id, error = %source, "alert not sent");
            return Err(EngineError::Notify {
                finding_id: finding.finding_id.clone(),
                source,
            });
        }
        correlator
            .store
            .mark_exchange_notified(&finding.finding_id)
            .await?;
        info!(
            finding_id = %finding.finding_id, subject = %record.subject.key(),
            source = exchange.source_address.as_deref().unwrap_or_default(),
            "exchange from outside the egress with no read"
        );
        Ok(decision)
    }

    /// Computes what is unusual about an exchange: an address outside the
    /// egress, and values its subject's profile did not have.
    async fn exchange_signals(
        &self,
        correlator: &Correlator<C>,
        subject: &Subject,
        exchange: &Exchange,
    ) -> Result<(CallSignals, EgressVerdict), EngineError> {
        let key = subject.key();
        let at = exchange.event_time;
        let mut values = Vec::new();
        let mut user_agent_index = None;
        let mut session_index = None;
        if let Some(agent) = &exchange.user_agent {
            user_agent_index = Some(values.len());
            values.push(format!("ua:{}", value_pattern(agent)));
        }
        if let Some(session) = &exchange.session_name {
            session_index = Some(values.len());
            values.push(format!("sn:{}", value_pattern(session)));
        }

        let mut new = vec![false; values.len()];
        let cached = {
            let cache = correlator.cache();
            let known = cache.profile.get(&key);
            values.iter().all(|value| {
                known
                    .and_then(|known| known.get(value))
                    .is_some_and(|written| {
                        !needs_refresh(*written, at, self.policy.refresh_interval)
                    })
            })
        };
        if !values.is_empty() && !cached {
            let sighting = correlator
                .store
                .record_profile(&key, &values, at, self.policy.forget_after)
                .await?;
            let learning_ends = sighting.first_seen + duration(self.policy.learning_period);
            if !sighting.created && at >= learning_ends {
                new = sighting.new;
            }
            let mut cache = correlator.cache();
            let known = cache.profile.entry(key.clone()).or_default();
            for value in &values {
                known.insert(value.clone(), at);
            }
        }
        let flag = |index: Option<usize>| index.and_then(|i| new.get(i).copied()) == Some(true);

        let egress = self
            .egress_verdict(correlator, &subject.cluster, exchange)
            .await?;
        let signals = CallSignals {
            outside_egress: egress == EgressVerdict::Outside,
            new_user_agent: flag(user_agent_index),
            new_session_name: flag(session_index),
        };
        Ok((signals, egress))
    }

    /// Places an exchange's source address against its cluster's egress.
    async fn egress_verdict(
        &self,
        correlator: &Correlator<C>,
        cluster: &str,
        exchange: &Exchange,
    ) -> Result<EgressVerdict, EngineError> {
        let Some(address) = exchange
            .source_address
            .as_deref()
            .and_then(|address| address.parse::<IpAddr>().ok())
        else {
            return Ok(EgressVerdict::NotAnAddress);
        };
        let configured = &correlator.policy.egress;
        if configured.contains(cluster, address) {
            return Ok(EgressVerdict::Inside);
        }
        let fresh = {
            let cache = correlator.cache();
            cache.egress.get(cluster).and_then(|(read_at, learned)| {
                (read_at.elapsed().as_secs() < EGRESS_CACHE_SECONDS).then(|| learned.clone())
            })
        };
        let learned = match fresh {
            Some(learned) => learned,
            None => {
                let learned = correlator
                    .store
                    .learned_egress(cluster, exchange.event_time, self.policy.forget_after)
                    .await?;
                correlator
                    .cache()
                    .egress
                    .insert(cluster.to_owned(), (Instant::now(), learned.clone()));
                learned
            }
        };
        if learned.contains(&address) {
            return Ok(EgressVerdict::Inside);
        }
        let known = configured.for_cluster(cluster).next().is_some() || !learned.is_empty();
        if !known {
            debug!(
                cluster,
                "no egress known for the cluster: no address counts as outside"
            );
            return Ok(EgressVerdict::Unknown);
        }
        Ok(EgressVerdict::Outside)
    }

    async fn learn_egress(
        &self,
        correlator: &Correlator<C>,
        record: &ExchangeRecord,
    ) -> Result<(), EngineError> {
        let exchange = &record.exchange;
        let Some(address) = exchange
            .source_address
            .as_deref()
            .and_then(|address| address.parse::<IpAddr>().ok())
        else {
            return Ok(());
        };
        let cluster = &record.subject.cluster;
        correlator
            .store
            .learn_egress(
                cluster,
                address,
                exchange.event_time,
                self.policy.forget_after,
            )
            .await?;
        if let Some((_, learned)) = correlator.cache().egress.get_mut(cluster)
            && !learned.contains(&address)
        {
            learned.push(address);
        }
        info!(cluster, %address, event_id = %exchange.event_id, "egress address learned");
        Ok(())
    }

    /// The egress of a cluster as last read: configured CIDRs, then learned
    /// addresses.
    fn egress_list(&self, correlator: &Correlator<C>, cluster: &str) -> Vec<String> {
        let mut egress: Vec<String> = correlator
            .policy
            .egress
            .for_cluster(cluster)
            .map(ToString::to_string)
            .collect();
        if let Some((_, learned)) = correlator.cache().egress.get(cluster) {
            egress.extend(learned.iter().map(ToString::to_string));
        }
        egress
    }
}
