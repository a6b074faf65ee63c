//! The seams to storage and alerting, with an in-memory store for tests.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::correlate::MemoryCorrelation;
use crate::finding::Finding;
use crate::render::Alert;
use crate::scope::BaselineKey;

/// A storage or delivery failure. Whether a retry can help is part of the type.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The backend failed in a way a retry may fix (throttling, timeouts).
    #[error("{operation} failed and may succeed on retry: {message}")]
    Transient {
        operation: &'static str,
        message: String,
    },
    /// The backend rejected the request; retrying it unchanged will not help.
    #[error("{operation} failed: {message}")]
    Permanent {
        operation: &'static str,
        message: String,
    },
}

/// A stored value as the store had it before this sighting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueRecord {
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Sightings so far, each counting the reads folded into its event.
    pub sightings: u64,
    /// The event that created the value, which makes its finding id.
    pub first_event_id: String,
    /// The event that last rewrote `last_seen`.
    pub last_event_id: String,
    /// The finding this value raised, if it raised one.
    pub finding_id: Option<String>,
}

/// Result of recording a sighting of a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSighting {
    /// The value was absent, or forgotten; this sighting created it. Of
    /// concurrent sightings of one absent value, exactly one gets `New`.
    New,
    /// The value was known; holds the record as it was before.
    Known(ValueRecord),
}

/// A scope's learning state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRecord {
    pub first_seen: DateTime<Utc>,
    /// The event that created the scope; a retry of it is still the first.
    pub first_event_id: String,
}

/// A finding as stored, with its delivery state.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingRecord {
    pub finding: Finding,
    /// Whether the notifier accepted the alert for this version.
    pub notified: bool,
    /// Number of times the stored finding was replaced, for optimistic
    /// concurrency: 0 when first stored.
    pub version: u64,
}

/// Storage for the new-value baseline and the findings it raises.
///
/// Times passed in are event times, so replays of history decide as the live
/// system would have. Implementations must treat a value whose last sighting
/// is older than `forget_after` as absent even when the backend has not
/// deleted it yet (DynamoDB's TTL deletes within days, not at expiry).
pub trait BaselineStore: Send + Sync {
    /// Records a sighting of `key` at `now`, atomically deciding new or known.
    ///
    /// A known value's `last_seen` is rewritten only when older than
    /// `refresh_interval`; `sightings` may lag between rewrites. Each write of
    /// a value also moves its scope's `last_seen`, if the scope exists, so a
    /// scope lives as long as any of its values.
    fn record_value(
        &self,
        key: &BaselineKey,
        event_id: &str,
        count: u32,
        now: DateTime<Utc>,
        forget_after: Duration,
        refresh_interval: Duration,
    ) -> impl Future<Output = Result<ValueSighting, StoreError>> + Send;

    /// Creates the scope at `now` if it is absent or forgotten, and returns its
    /// state.
    fn record_scope(
        &self,
        scope_key: &str,
        event_id: &str,
        now: DateTime<Utc>,
        forget_after: Duration,
    ) -> impl Future<Output = Result<ScopeRecord, StoreError>> + Send;

    /// Lists the values of a scope not yet forgotten at `now`, without `except`,
    /// sorted by value key.
    fn known_values(
        &self,
        scope_key: &str,
        except: &str,
        now: DateTime<Utc>,
        forget_after: Duration,
    ) -> impl Future<Output = Result<Vec<(String, ValueRecord)>, StoreError>> + Send;

    /// Stores a finding, replacing an earlier version with the same id, and
    /// links it from the value that raised it.
    fn put_finding(
        &self,
        key: &BaselineKey,
        record: &FindingRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Loads a finding by id.
    fn get_finding(
        &self,
        finding_id: &str,
    ) -> impl Future<Output = Result<Option<FindingRecord>, StoreError>> + Send;

    /// Replaces a stored finding if its version is still `record.version`,
    /// and stores it with the version one higher. Returns whether it wrote.
    /// `repeat_count` and `last_seen` keep their stored values, which
    /// `add_repeats` owns.
    fn replace_finding(
        &self,
        record: &FindingRecord,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records that the notifier accepted the alert for version `version` of
    /// a finding, leaving the rest of the stored finding as it is. Changes
    /// nothing when the stored version is another.
    fn mark_notified(
        &self,
        finding_id: &str,
        version: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Adds `count` repeated reads to a finding.
    fn add_repeats(
        &self,
        finding_id: &str,
        count: u32,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Delivers alerts for findings.
pub trait Notifier: Send + Sync {
    fn notify(&self, alert: &Alert<'_>) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A [`BaselineStore`] in process memory, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<MemoryState>,
    correlation: Mutex<MemoryCorrelation>,
}

#[derive(Debug)]
struct MemoryScope {
    record: ScopeRecord,
    last_seen: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct MemoryState {
    values: HashMap<(String, String), ValueRecord>,
    scopes: HashMap<String, MemoryScope>,
    findings: HashMap<String, FindingRecord>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn correlation(&self) -> std::sync::MutexGuard<'_, MemoryCorrelation> {
        self.correlation
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether a value last seen at `last_seen` is forgotten at `now`.
pub fn is_forgotten(last_seen: DateTime<Utc>, now: DateTime<Utc>, forget_after: Duration) -> bool {
    now.signed_duration_since(last_seen)
        .to_std()
        .unwrap_or_default()
        >= forget_after
}

/// Whether a known value last seen at `last_seen` is due for a rewrite.
pub fn needs_refresh(
    last_seen: DateTime<Utc>,
    now: DateTime<Utc>,
    refresh_interval: Duration,
) -> bool {
    now.signed_duration_since(last_seen)
        .to_std()
        .unwrap_or_default()
        >= refresh_interval
}

impl BaselineStore for MemoryStore {
    async fn record_value(
        &self,
        key: &BaselineKey,
        event_id: &str,
        count: u32,
        now: DateTime<Utc>,
        forget_after: Duration,
        refresh_interval: Duration,
    ) -> Result<ValueSighting, StoreError> {
        let mut state = self.state();
        let id = (key.scope.key.clone(), key.value.key.clone());
        let fresh = ValueRecord {
            first_seen: now,
            last_seen: now,
            sightings: u64::from(count),
            first_event_id: event_id.to_owned(),
            last_event_id: event_id.to_owned(),
            finding_id: None,
        };
        let sighting = match state.values.get_mut(&id) {
            Some(stored) if !is_forgotten(stored.last_seen, now, forget_after) => {
                let before = stored.clone();
                stored.sightings += u64::from(count);
                if !needs_refresh(stored.last_seen, now, refresh_interval) {
                    return Ok(ValueSighting::Known(before));
                }
                stored.last_seen = now;
                stored.last_event_id = event_id.to_owned();
                ValueSighting::Known(before)
            }
            _ => {
                state.values.insert(id, fresh);
                ValueSighting::New
            }
        };
        // A forgotten scope stays forgotten, so that `record_scope` creates it
        // anew and the scope learns again.
        if let Some(scope) = state.scopes.get_mut(&key.scope.key)
            && !is_forgotten(scope.last_seen, now, forget_after)
        {
            scope.last_seen = scope.last_seen.max(now);
        }
        Ok(sighting)
    }

    async fn record_scope(
        &self,
        scope_key: &str,
        event_id: &str,
        now: DateTime<Utc>,
        forget_after: Duration,
    ) -> Result<ScopeRecord, StoreError> {
        let mut state = self.state();
        if let Some(scope) = state.scopes.get_mut(scope_key)
            && !is_forgotten(scope.last_seen, now, forget_after)
        {
            scope.last_seen = scope.last_seen.max(now);
            return Ok(scope.record.clone());
        }
        let record = ScopeRecord {
            first_seen: now,
            first_event_id: event_id.to_owned(),
        };
        let scope = MemoryScope {
            record: record.clone(),
            last_seen: now,
        };
        state.scopes.insert(scope_key.to_owned(), scope);
        Ok(record)
    }

    async fn known_values(
        &self,
        scope_key: &str,
        except: &str,
        now: DateTime<Utc>,
        forget_after: Duration,
    ) -> Result<Vec<(String, ValueRecord)>, StoreError> {
        let state = self.state();
        let mut values: Vec<_> = state
            .values
            .iter()
            .filter(|((scope, value), record)| {
                scope == scope_key
                    && value != except
                    && !is_forgotten(record.last_seen, now, forget_after)
            })
            .map(|((_, value), record)| (value.clone(), record.clone()))
            .collect();
        values.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(values)
    }

    async fn put_finding(
        &self,
        key: &BaselineKey,
        record: &FindingRecord,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let id = (key.scope.key.clone(), key.value.key.clone());
        if let Some(value) = state.values.get_mut(&id) {
            value.finding_id = Some(record.finding.finding_id.clone());
        }
        state
            .findings
            .insert(record.finding.finding_id.clone(), record.clone());
        Ok(())
    }

    async fn get_finding(&self, finding_id: &str) -> Result<Option<FindingRecord>, StoreError> {
        Ok(self.state().findings.get(finding_id).cloned())
    }

    async fn replace_finding(&self, record: &FindingRecord) -> Result<bool, StoreError> {
        let mut state = self.state();
        let Some(stored) = state.findings.get_mut(&record.finding.finding_id) else {
            return Ok(false);
        };
        if stored.version != record.version {
            return Ok(false);
        }
        let (repeat_count, last_seen) = (stored.finding.repeat_count, stored.finding.last_seen);
        *stored = record.clone();
        stored.version += 1;
        stored.finding.repeat_count = repeat_count;
        stored.finding.last_seen = last_seen;
        Ok(true)
    }

    async fn mark_notified(&self, finding_id: &str, version: u64) -> Result<(), StoreError> {
        if let Some(record) = self.state().findings.get_mut(finding_id)
            && record.version == version
        {
            record.notified = true;
        }
        Ok(())
    }

    async fn add_repeats(
        &self,
        finding_id: &str,
        count: u32,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if let Some(record) = self.state().findings.get_mut(finding_id) {
            record.finding.repeat_count += u64::from(count);
            record.finding.last_seen = now;
        }
        Ok(())
    }
}
