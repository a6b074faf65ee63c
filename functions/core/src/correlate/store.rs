//! Storage for correlation: exchanges and reads by subject and time, each
//! subject's exchange profile, learned egress and exchange findings.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{CallSignals, ExchangeFinding, MatchedCall, Subject};
use crate::cloudtrail::Exchange;
use crate::store::{MemoryStore, StoreError, is_forgotten};

/// An exchange as stored, with what was unusual about it when it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeRecord {
    pub subject: Subject,
    pub exchange: Exchange,
    pub signals: CallSignals,
}

/// A read as stored for matching: an unfamiliar read with the finding it
/// raised, or a marker that the subject's familiar processes read the token
/// in the minute starting at `observed_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadRecord {
    pub observed_at: DateTime<Utc>,
    /// `None` for a familiar-read marker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
}

impl ReadRecord {
    /// Sort key part that orders reads by time and keeps two reads of one
    /// instant apart.
    pub fn id(&self) -> &str {
        self.finding_id.as_deref().unwrap_or("~familiar")
    }
}

/// Result of recording an exchange's values in its subject's profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSighting {
    /// When the profile was created, which starts its learning period.
    pub first_seen: DateTime<Utc>,
    /// Whether this call created the profile.
    pub created: bool,
    /// For each value passed, whether it was absent or forgotten before.
    pub new: Vec<bool>,
}

/// An exchange finding as stored, with its delivery state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeFindingRecord {
    pub finding: ExchangeFinding,
    pub notified: bool,
}

/// Storage for correlation. Times passed in are event times, as in
/// [`crate::BaselineStore`], so replays decide as the live system would have.
pub trait CorrelationStore: Send + Sync {
    /// Stores an exchange, unless one with the same subject, time and event
    /// id is stored: then returns that one and changes nothing.
    fn put_exchange(
        &self,
        record: &ExchangeRecord,
        expires_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<ExchangeRecord>, StoreError>> + Send;

    /// Lists the exchanges of a subject with event times in `[from, to]`.
    fn exchanges_between(
        &self,
        subject_key: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<ExchangeRecord>, StoreError>> + Send;

    /// Stores a read under each of `subject_keys`.
    fn put_read(
        &self,
        subject_keys: &[String],
        record: &ReadRecord,
        expires_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Lists the reads of a subject observed in `[from, to]`.
    fn reads_between(
        &self,
        subject_key: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<ReadRecord>, StoreError>> + Send;

    /// Records `values` as seen at `at` in a subject's profile, creating the
    /// profile if absent, and says which were new. A value last seen
    /// `forget_after` ago or earlier counts as new.
    fn record_profile(
        &self,
        subject_key: &str,
        values: &[String],
        at: DateTime<Utc>,
        forget_after: Duration,
    ) -> impl Future<Output = Result<ProfileSighting, StoreError>> + Send;

    /// Lists the addresses learned as a cluster's egress and not forgotten.
    fn learned_egress(
        &self,
        cluster: &str,
        now: DateTime<Utc>,
        forget_after: Duration,
    ) -> impl Future<Output = Result<Vec<IpAddr>, StoreError>> + Send;

    /// Records `address` as a cluster's egress, seen at `at`.
    fn learn_egress(
        &self,
        cluster: &str,
        address: IpAddr,
        at: DateTime<Utc>,
        forget_after: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores an exchange finding unless one with its id is stored: then
    /// returns that one and changes nothing.
    fn put_exchange_finding(
        &self,
        record: &ExchangeFindingRecord,
    ) -> impl Future<Output = Result<Option<ExchangeFindingRecord>, StoreError>> + Send;

    /// Counts `call` as a repeat of an exchange finding, unless it is the
    /// event counted last.
    fn fold_exchange_finding(
        &self,
        finding_id: &str,
        call: &MatchedCall,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records that the alert for an exchange finding was accepted.
    fn mark_exchange_notified(
        &self,
        finding_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The correlation store of an engine that does not correlate. It has no
/// values, so an engine holding `Option<NoCorrelation>` always holds `None`.
#[derive(Debug)]
pub enum NoCorrelation {}

impl CorrelationStore for NoCorrelation {
    async fn put_exchange(
        &self,
        _: &ExchangeRecord,
        _: DateTime<Utc>,
    ) -> Result<Option<ExchangeRecord>, StoreError> {
        match *self {}
    }

    async fn exchanges_between(
        &self,
        _: &str,
        _: DateTime<Utc>,
        _: DateTime<Utc>,
    ) -> Result<Vec<ExchangeRecord>, StoreError> {
        match *self {}
    }

    async fn put_read(
        &self,
        _: &[String],
        _: &ReadRecord,
        _: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match *self {}
    }

    async fn reads_between(
        &self,
        _: &str,
        _: DateTime<Utc>,
        _: DateTime<Utc>,
    ) -> Result<Vec<ReadRecord>, StoreError> {
        match *self {}
    }

    async fn record_profile(
        &self,
        _: &str,
        _: &[String],
        _: DateTime<Utc>,
        _: Duration,
    ) -> Result<ProfileSighting, StoreError> {
        match *self {}
    }

    async fn learned_egress(
        &self,
        _: &str,
        _: DateTime<Utc>,
        _: Duration,
    ) -> Result<Vec<IpAddr>, StoreError> {
        match *self {}
    }

    async fn learn_egress(
        &self,
        _: &str,
        _: IpAddr,
        _: DateTime<Utc>,
        _: Duration,
    ) -> Result<(), StoreError> {
        match *self {}
    }

    async fn put_exchange_finding(
        &self,
        _: &ExchangeFindingRecord,
    ) -> Result<Option<ExchangeFindingRecord>, StoreError> {
        match *self {}
    }

    async fn fold_exchange_finding(&self, _: &str, _: &MatchedCall) -> Result<(), StoreError> {
        match *self {}
    }

    async fn mark_exchange_notified(&self, _: &str) -> Result<(), StoreError> {
        match *self {}
    }
}

/// Correlation state of a [`MemoryStore`].
#[derive(Debug, Default)]
pub(crate) struct MemoryCorrelation {
    /// By subject key, then (event time, event id).
    exchanges: HashMap<String, TimeIndex<ExchangeRecord>>,
    /// By subject key, then (observed time, read id).
    reads: HashMap<String, TimeIndex<ReadRecord>>,
    profiles: HashMap<String, MemoryProfile>,
    egress: HashMap<String, HashMap<IpAddr, DateTime<Utc>>>,
    findings: HashMap<String, (ExchangeFindingRecord, String)>,
    /// Latest time passed in, which expires what `retention` left behind.
    latest: Option<DateTime<Utc>>,
    writes: u64,
}

/// Records of one subject by time and id.
type TimeIndex<V> = BTreeMap<(DateTime<Utc>, String), V>;

#[derive(Debug)]
struct MemoryProfile {
    first_seen: DateTime<Utc>,
    values: HashMap<String, DateTime<Utc>>,
}

/// Writes between sweeps of expired exchanges and reads.
const SWEEP_EVERY: u64 = 4096;

impl MemoryCorrelation {
    /// Drops exchanges and reads that expired before the latest time seen,
    /// so a long replay keeps only its matching window in memory.
    fn note_write(&mut self, now: DateTime<Utc>, retention: chrono::Duration) {
        self.latest = Some(self.latest.map_or(now, |latest| latest.max(now)));
        self.writes += 1;
        if !self.writes.is_multiple_of(SWEEP_EVERY) {
            return;
        }
        let Some(latest) = self.latest else { return };
        let horizon = latest - retention;
        for index in self.exchanges.values_mut() {
            index.retain(|(time, _), _| *time >= horizon);
        }
        for index in self.reads.values_mut() {
            index.retain(|(time, _), _| *time >= horizon);
        }
        self.exchanges.retain(|_, index| !index.is_empty());
        self.reads.retain(|_, index| !index.is_empty());
    }
}

fn range_of<V: Clone>(
    map: &HashMap<String, TimeIndex<V>>,
    subject_key: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<V> {
    let Some(index) = map.get(subject_key).filter(|_| from <= to) else {
        return Vec::new();
    };
    index
        .range((from, String::new())..)
        .take_while(|((time, _), _)| *time <= to)
        .map(|(_, value)| value.clone())
        .collect()
}

impl CorrelationStore for MemoryStore {
    async fn put_exchange(
        &self,
        record: &ExchangeRecord,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<ExchangeRecord>, StoreError> {
        let mut state = self.correlation();
        let key = (record.exchange.event_time, record.exchange.event_id.clone());
        let index = state.exchanges.entry(record.subject.key()).or_default();
        if let Some(stored) = index.get(&key) {
            return Ok(Some(stored.clone()));
        }
        index.insert(key, record.clone());
        let retention = expires_at - record.exchange.event_time;
        state.note_write(record.exchange.event_time, retention);
        Ok(None)
    }

    async fn exchanges_between(
        &self,
        subject_key: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ExchangeRecord>, StoreError> {
        Ok(range_of(
            &self.correlation().exchanges,
            subject_key,
            from,
            to,
        ))
    }

    async fn put_read(
        &self,
        subject_keys: &[String],
        record: &ReadRecord,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut state = self.correlation();
        for subject_key in subject_keys {
            let key = (record.observed_at, record.id().to_owned());
            let index = state.reads.entry(subject_key.clone()).or_default();
            index.insert(key, record.clone());
        }
        let retention = expires_at - record.observed_at;
        state.note_write(record.observed_at, retention);
        Ok(())
    }

    async fn reads_between(
        &self,
        subject_key: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ReadRecord>, StoreError> {
        Ok(range_of(&self.correlation().reads, subject_key, from, to))
    }

    async fn record_profile(
        &self,
        subject_key: &str,
        values: &[String],
        at: DateTime<Utc>,
        forget_after: Duration,
    ) -> Result<ProfileSighting, StoreError> {
        let mut state = self.correlation();
        let created = !state.profiles.contains_key(subject_key);
        let profile = state
            .profiles
            .entry(subject_key.to_owned())
            .or_insert_with(|| MemoryProfile {
                first_seen: at,
                values: HashMap::new(),
            });
        let new = values
            .iter()
            .map(|value| {
                let was_new = profile
                    .values
                    .get(value)
                    .is_none_or(|seen| is_forgotten(*seen, at, forget_after));
                let seen = profile.values.entry(value.clone()).or_insert(at);
                *seen = if was_new { at } else { (*seen).max(at) };
                was_new
            })
            .collect();
        Ok(ProfileSighting {
            first_seen: profile.first_seen,
            created,
            new,
        })
    }

    async fn learned_egress(
        &self,
        cluster: &str,
        now: DateTime<Utc>,
        forget_after: Duration,
    ) -> Result<Vec<IpAddr>, StoreError> {
        let state = self.correlation();
        let mut addresses: Vec<IpAddr> = state
            .egress
            .get(cluster)
            .into_iter()
            .flatten()
            .filter(|(_, seen)| !is_forgotten(**seen, now, forget_after))
            .map(|(address, _)| *address)
            .collect();
        addresses.sort();
        Ok(addresses)
    }

    async fn learn_egress(
        &self,
        cluster: &str,
        address: IpAddr,
        at: DateTime<Utc>,
        _forget_after: Duration,
    ) -> Result<(), StoreError> {
        let mut state = self.correlation();
        let seen = state
            .egress
            .entry(cluster.to_owned())
            .or_default()
            .entry(address)
            .or_insert(at);
        *seen = (*seen).max(at);
        Ok(())
    }

    async fn put_exchange_finding(
        &self,
        record: &ExchangeFindingRecord,
    ) -> Result<Option<ExchangeFindingRecord>, StoreError> {
        let mut state = self.correlation();
        if let Some((stored, _)) = state.findings.get(&record.finding.finding_id) {
            return Ok(Some(stored.clone()));
        }
        let last_event = record.finding.call.event_id.clone();
        state.findings.insert(
            record.finding.finding_id.clone(),
            (record.clone(), last_event),
        );
        Ok(None)
    }

    async fn fold_exchange_finding(
        &self,
        finding_id: &str,
        call: &MatchedCall,
    ) -> Result<(), StoreError> {
        let mut state = self.correlation();
        if let Some((record, last_event)) = state.findings.get_mut(finding_id)
            && *last_event != call.event_id
        {
            record.finding.repeat_count += 1;
            record.finding.last_seen = record.finding.last_seen.max(call.event_time);
            *last_event = call.event_id.clone();
        }
        Ok(())
    }

    async fn mark_exchange_notified(&self, finding_id: &str) -> Result<(), StoreError> {
        if let Some((record, _)) = self.correlation().findings.get_mut(finding_id) {
            record.notified = true;
        }
        Ok(())
    }
}
