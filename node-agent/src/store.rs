//! The embedded baseline store: a `redb` database in the state directory, so
//! the baseline of `--embedded` mode survives agent restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokenguard_core::{
    BaselineKey, BaselineStore, Finding, FindingRecord, ScopeRecord, StoreError, ValueRecord,
    ValueSighting, is_forgotten, needs_refresh,
};
use tracing::info;

/// File name of the database inside the state directory.
pub const DATABASE_FILE: &str = "baseline.redb";

/// Values by (scope key, value key).
const VALUES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("values");
/// Scopes by scope key.
const SCOPES: TableDefinition<&str, &[u8]> = TableDefinition::new("scopes");
/// Findings by finding id.
const FINDINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("findings");

/// A failure to open the embedded store.
#[derive(Debug, Error)]
pub enum EmbeddedStoreError {
    /// The state directory path names something that is not a directory.
    #[error("invalid state directory {path}: it exists and is not a directory; pass a directory")]
    NotADirectory { path: PathBuf },
    /// The state directory could not be created.
    #[error(
        "failed to create state directory {path}: {source}; check the path and its permissions"
    )]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened, for example because another agent
    /// has it open.
    #[error(
        "failed to open baseline database {path}: {source}; stop any other agent using this \
         state directory, or pass another --embedded directory"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    /// The tables could not be created.
    #[error("failed to initialize baseline database {path}: {source}")]
    Init {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredValue {
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    sightings: u64,
    first_event_id: String,
    last_event_id: String,
    finding_id: Option<String>,
}

impl StoredValue {
    fn record(&self) -> ValueRecord {
        ValueRecord {
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            sightings: self.sightings,
            first_event_id: self.first_event_id.clone(),
            last_event_id: self.last_event_id.clone(),
            finding_id: self.finding_id.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredScope {
    first_seen: DateTime<Utc>,
    first_event_id: String,
    last_seen: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredFinding {
    finding: Finding,
    notified: bool,
    #[serde(default)]
    version: u64,
}

/// A [`BaselineStore`] in a `redb` file. Each operation is one write
/// transaction, which makes the new-or-known decision atomic within the
/// process; the file lock keeps other processes out.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl EmbeddedStore {
    /// Opens or creates the store in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<EmbeddedStore, EmbeddedStoreError> {
        if state_dir.exists() && !state_dir.is_dir() {
            return Err(EmbeddedStoreError::NotADirectory {
                path: state_dir.to_path_buf(),
            });
        }
        if !state_dir.exists() {
            info!(path = %state_dir.display(), "creating the state directory");
        }
        std::fs::create_dir_all(state_dir).map_err(|source| EmbeddedStoreError::CreateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(DATABASE_FILE);
        let db = Database::create(&path).map_err(|source| EmbeddedStoreError::Open {
            path: path.clone(),
            source,
        })?;
        let init = || -> Result<(), redb::Error> {
            let tx = db.begin_write()?;
            tx.open_table(VALUES)?;
            tx.open_table(SCOPES)?;
            tx.open_table(FINDINGS)?;
            tx.commit()?;
            Ok(())
        };
        init().map_err(|source| EmbeddedStoreError::Init {
            path: path.clone(),
            source,
        })?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            path,
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn run<T, F>(&self, operation: &'static str, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|error| StoreError::Transient {
                operation,
                message: format!("store task failed: {error}"),
            })?
    }
}

/// Maps a redb error: I/O may succeed on retry, corruption and misuse not.
fn store_error(operation: &'static str) -> impl Fn(redb::Error) -> StoreError {
    move |error| match error {
        redb::Error::Io(_) => StoreError::Transient {
            operation,
            message: error.to_string(),
        },
        _ => StoreError::Permanent {
            operation,
            message: error.to_string(),
        },
    }
}

fn encode<T: Serialize>(operation: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|error| StoreError::Permanent {
        operation,
        message: format!("failed to encode record: {error}"),
    })
}

fn decode<T: DeserializeOwned>(operation: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Permanent {
        operation,
        message: format!("stored record is invalid: {error}; the state directory may be damaged"),
    })
}

/// Moves a scope's `last_seen` to `now` if the scope exists and is not
/// forgotten. A forgotten scope stays forgotten, so that `record_scope`
/// creates it anew and the scope learns again.
fn touch_scope(
    scopes: &mut redb::Table<&str, &[u8]>,
    scope_key: &str,
    now: DateTime<Utc>,
    forget_after: Duration,
) -> Result<(), StoreError> {
    const OP: &str = "record_value";
    let existing = scopes
        .get(scope_key)
        .map_err(|e| store_error(OP)(e.into()))?
        .map(|guard| decode::<StoredScope>(OP, guard.value()))
        .transpose()?;
    if let Some(mut scope) = existing
        && !is_forgotten(scope.last_seen, now, forget_after)
    {
        scope.last_seen = scope.last_seen.max(now);
        scopes
            .insert(scope_key, encode(OP, &scope)?.as_slice())
            .map_err(|e| store_error(OP)(e.into()))?;
    }
    Ok(())
}

impl BaselineStore for EmbeddedStore {
    async fn record_value(
        &self,
        key: &BaselineKey,
        event_id: &str,
        count: u32,
        now: DateTime<Utc>,
        forget_after: Duration,
        refresh_interval: Duration,
    ) -> Result<ValueSighting, StoreError> {
        const OP: &str = "record_value";
        let scope_key = key.scope.key.clone();
        let value_key = key.value.key.clone();
        let event_id = event_id.to_owned();
        self.run(OP, move |db| {
            let fail = store_error(OP);
            let tx = db.begin_write().map_err(|e| fail(e.into()))?;
            let sighting = {
                let mut values = tx.open_table(VALUES).map_err(|e| fail(e.into()))?;
                let id = (scope_key.as_str(), value_key.as_str());
                let existing = values
                    .get(id)
                    .map_err(|e| fail(e.into()))?
                    .map(|guard| decode::<StoredValue>(OP, guard.value()))
                    .transpose()?;
                match existing {
                    Some(mut stored) if !is_forgotten(stored.last_seen, now, forget_after) => {
                        let before = stored.record();
                        if !needs_refresh(stored.last_seen, now, refresh_interval) {
                            // Nothing is written between refreshes, so
                            // `sightings` lags as the trait allows.
                            drop(values);
                            tx.abort().map_err(|e| fail(e.into()))?;
                            return Ok(ValueSighting::Known(before));
                        }
                        stored.sightings += u64::from(count);
                        stored.last_seen = now;
                        stored.last_event_id = event_id.clone();
                        values
                            .insert(id, encode(OP, &stored)?.as_slice())
                            .map_err(|e| fail(e.into()))?;
                        ValueSighting::Known(before)
                    }
                    _ => {
                        let fresh = StoredValue {
                            first_seen: now,
                            last_seen: now,
                            sightings: u64::from(count),
                            first_event_id: event_id.clone(),
                            last_event_id: event_id.clone(),
                            finding_id: None,
                        };
                        values
                            .insert(id, encode(OP, &fresh)?.as_slice())
                            .map_err(|e| fail(e.into()))?;
                        ValueSighting::New
                    }
                }
            };
            {
                let mut scopes = tx.open_table(SCOPES).map_err(|e| fail(e.into()))?;
                touch_scope(&mut scopes, &scope_key, now, forget_after)?;
            }
            tx.commit().map_err(|e| fail(e.into()))?;
            Ok(sighting)
        })
        .await
    }

    async fn record_scope(
        &self,
        scope_key: &str,
        event_id: &str,
        now: DateTime<Utc>,
        forget_after: Duration,
    ) -> Result<ScopeRecord, StoreError> {
        const OP: &str = "record_scope";
        let scope_key = scope_key.to_owned();
        let event_id = event_id.to_owned();
        self.run(OP, move |db| {
            let fail = store_error(OP);
            let tx = db.begin_write().map_err(|e| fail(e.into()))?;
            let record = {
                let mut scopes = tx.open_table(SCOPES).map_err(|e| fail(e.into()))?;
                let existing = scopes
                    .get(scope_key.as_str())
                    .map_err(|e| fail(e.into()))?
                    .map(|guard| decode::<StoredScope>(OP, guard.value()))
                    .transpose()?;
                let scope = match existing {
                    Some(mut scope) if !is_forgotten(scope.last_seen, now, forget_after) => {
                        scope.last_seen = scope.last_seen.max(now);
                        scope
                    }
                    _ => StoredScope {
                        first_seen: now,
                        first_event_id: event_id,
                        last_seen: now,
                    },
                };
                scopes
                    .insert(scope_key.as_str(), encode(OP, &scope)?.as_slice())
                    .map_err(|e| fail(e.into()))?;
                ScopeRecord {
                    first_seen: scope.first_seen,
                    first_event_id: scope.first_event_id,
                }
            };
            tx.commit().map_err(|e| fail(e.into()))?;
            Ok(record)
        })
        .await
    }

    async fn known_values(
        &self,
        scope_key: &str,
        except: &str,
        now: DateTime<Utc>,
        forget_after: Duration,
    ) -> Result<Vec<(String, ValueRecord)>, StoreError> {
        const OP: &str = "known_values";
        let scope_key = scope_key.to_owned();
        let except = except.to_owned();
        self.run(OP, move |db| {
            let fail = store_error(OP);
            let tx = db.begin_read().map_err(|e| fail(e.into()))?;
            let values = tx.open_table(VALUES).map_err(|e| fail(e.into()))?;
            let mut known = Vec::new();
            let range = values
                .range((scope_key.as_str(), "")..)
                .map_err(|e| fail(e.into()))?;
            for item in range {
                let (key, value) = item.map_err(|e| fail(e.into()))?;
                let (scope, value_key) = key.value();
                if scope != scope_key {
                    break;
                }
                if value_key == except {
                    continue;
                }
                let stored: StoredValue = decode(OP, value.value())?;
                if !is_forgotten(stored.last_seen, now, forget_after) {
                    known.push((value_key.to_owned(), stored.record()));
                }
            }
            Ok(known)
        })
        .await
    }

    async fn put_finding(
        &self,
        key: &BaselineKey,
        record: &FindingRecord,
    ) -> Result<(), StoreError> {
        const OP: &str = "put_finding";
        let scope_key = key.scope.key.clone();
        let value_key = key.value.key.clone();
        let stored = StoredFinding {
            finding: record.finding.clone(),
            notified: record.notified,
            version: record.version,
        };
        self.run(OP, move |db| {
            let fail = store_error(OP);
            let finding_id = stored.finding.finding_id.clone();
            let tx = db.begin_write().map_err(|e| fail(e.into()))?;
            {
                let mut values = tx.open_table(VALUES).map_err(|e| fail(e.into()))?;
                let id = (scope_key.as_str(), value_key.as_str());
                let existing = values
                    .get(id)
                    .map_err(|e| fail(e.into()))?
                    .map(|guard| decode::<StoredValue>(OP, guard.value()))
                    .transpose()?;
                if let Some(mut value) = existing {
                    value.finding_id = Some(finding_id.clone());
                    values
                        .insert(id, encode(OP, &value)?.as_slice())
                        .map_err(|e| fail(e.into()))?;
                }
                let mut findings = tx.open_table(FINDINGS).map_err(|e| fail(e.into()))?;
                findings
                    .insert(finding_id.as_str(), encode(OP, &stored)?.as_slice())
                    .map_err(|e| fail(e.into()))?;
            }
            tx.commit().map_err(|e| fail(e.into()))?;
            Ok(())
        })
        .await
    }

    async fn get_finding(&self, finding_id: &str) -> Result<Option<FindingRecord>, StoreError> {
        const OP: &str = "get_finding";
        let finding_id = finding_id.to_owned();
        self.run(OP, move |db| {
            let fail = store_error(OP);
            let tx = db.begin_read().map_err(|e| fail(e.into()))?;
            let findings = tx.open_table(FINDINGS).map_err(|e| fail(e.into()))?;
            let stored = findings
                .get(finding_id.as_str())
                .map_err(|e| fail(e.into()))?
                .map(|guard| decode::<StoredFinding>(OP, guard.value()))
                .transpose()?;
            Ok(stored.map(|stored| FindingRecord {
                finding: stored.finding,
                notified: stored.notified,
                version: stored.version,
            }))
        })
        .await
    }

    async fn replace_finding(&self, record: &FindingRecord) -> Result<bool, StoreError> {
        let record = record.clone();
        let finding_id = record.finding.finding_id.clone();
        self.update_finding("replace_finding", &finding_id, move |stored| {
            if stored.version != record.version {
                return false;
            }
            let (repeat_count, last_seen) = (stored.finding.repeat_count, stored.finding.last_seen);
            stored.finding = record.finding;
            stored.finding.repeat_count = repeat_count;
            stored.finding.last_seen = last_seen;
            stored.notified = record.notified;
            stored.version += 1;
            true
        })
        .await
    }

    async fn mark_notified(&self, finding_id: &str, version: u64) -> Result<(), StoreError> {
        self.update_finding("mark_notified", finding_id, move |stored| {
            let current = stored.version == version;
            stored.notified |= current;
            current
        })
        .await
        .map(drop)
    }

    async fn add_repeats(
        &self,
        finding_id: &str,
        count: u32,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.update_finding("add_repeats", finding_id, move |stored| {
            stored.finding.repeat_count += u64::from(count);
            stored.finding.last_seen = now;
            true
        })
        .await
        .map(drop)
    }
}

impl EmbeddedStore {
    /// Applies `change` to a stored finding in one write transaction, and
    /// writes it back if `change` returns true. A missing finding is left
    /// missing. Returns whether it wrote.
    async fn update_finding(
        &self,
        operation: &'static str,
        finding_id: &str,
        change: impl FnOnce(&mut StoredFinding) -> bool + Send + 'static,
    ) -> Result<bool, StoreError> {
        let finding_id = finding_id.to_owned();
        self.run(operation, move |db| {
            let fail = store_error(operation);
            let mut written = false;
            let tx = db.begin_write().map_err(|e| fail(e.into()))?;
            {
                let mut findings = tx.open_table(FINDINGS).map_err(|e| fail(e.into()))?;
                let existing = findings
                    .get(finding_id.as_str())
                    .map_err(|e| fail(e.into()))?
                    .map(|guard| decode::<StoredFinding>(operation, guard.value()))
                    .transpose()?;
                if let Some(mut stored) = existing
                    && change(&mut stored)
                {
                    findings
                        .insert(finding_id.as_str(), encode(operation, &stored)?.as_slice())
                        .map_err(|e| fail(e.into()))?;
                    written = true;
                }
            }
            tx.commit().map_err(|e| fail(e.into()))?;
            Ok(written)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenguard_core::conformance::{self, at, sample_read};
    use tokenguard_core::{Decision, Engine, Notifier, Policy};
    use tokenguard_schema::Node;

    fn open(dir: &tempfile::TempDir) -> EmbeddedStore {
        EmbeddedStore::open(dir.path()).unwrap()
    }

    #[test]
    fn file_as_state_dir_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state");
        std::fs::write(&file, "").unwrap();
        let error = EmbeddedStore::open(&file).unwrap_err();
        assert!(
            matches!(error, EmbeddedStoreError::NotADirectory { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("is not a directory"), "{error}");
    }

    #[derive(Debug, Default)]
    struct Quiet;

    impl Notifier for Quiet {
        async fn notify(&self, _alert: &tokenguard_core::Alert<'_>) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn node() -> Node {
        Node {
            name: "node-a".to_owned(),
            boot_id: "boot-1".to_owned(),
            agent_version: None,
            hook: None,
        }
    }

    async fn sample_finding() -> Finding {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(
            open(&dir),
            Quiet,
            Policy::from_settings("0s", "28d").unwrap(),
        );
        let mut familiar = sample_read("/usr/bin/python3", "python3");
        familiar.event_id = "b:1".to_owned();
        engine.process(&node(), &familiar, at(0)).await.unwrap();
        let mut curl = sample_read("/usr/bin/curl", "curl");
        curl.event_id = "b:2".to_owned();
        curl.observed_at = at(1);
        match engine.process(&node(), &curl, at(1)).await.unwrap() {
            Decision::Finding(finding) => *finding,
            other => panic!("expected a finding, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn embedded_store_conformance() {
        let dirs: Vec<_> = (0..9).map(|_| tempfile::tempdir().unwrap()).collect();
        conformance::new_then_known(&open(&dirs[0])).await;
        conformance::forgotten_value_is_new(&open(&dirs[1])).await;
        conformance::refresh_keeps_value(&open(&dirs[2])).await;
        conformance::scope_first_seen_kept(&open(&dirs[3])).await;
        conformance::scope_lives_with_values(&open(&dirs[4])).await;
        conformance::known_values_listed(&open(&dirs[5])).await;
        conformance::forgotten_scope_not_revived(&open(&dirs[7])).await;
        conformance::findings_round_trip(&open(&dirs[6]), sample_finding().await).await;
        conformance::findings_replaced_by_version(&open(&dirs[8]), sample_finding().await).await;
    }

    #[tokio::test]
    async fn baseline_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let key = BaselineKey::of(&sample_read("/usr/bin/python3", "python3"));
        let day = Duration::from_secs(24 * 3600);
        {
            let store = open(&dir);
            store
                .record_scope(&key.scope.key, "e1", at(0), 28 * day)
                .await
                .unwrap();
            let first = store
                .record_value(&key, "e1", 1, at(0), 28 * day, Duration::from_secs(3600))
                .await
                .unwrap();
            assert_eq!(first, ValueSighting::New);
        }
        let reopened = open(&dir);
        let again = reopened
            .record_value(&key, "e2", 1, at(2), 28 * day, Duration::from_secs(3600))
            .await
            .unwrap();
        let ValueSighting::Known(record) = again else {
            panic!("a value stored before the restart must be known, got {again:?}");
        };
        assert_eq!(record.first_event_id, "e1");
        let scope = reopened
            .record_scope(&key.scope.key, "e3", at(2), 28 * day)
            .await
            .unwrap();
        assert_eq!(scope.first_event_id, "e1");
    }

    #[tokio::test]
    async fn second_open_of_same_dir_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(&dir);
        let error = EmbeddedStore::open(dir.path()).unwrap_err();
        assert!(
            error.to_string().contains("stop any other agent"),
            "unexpected error: {error}"
        );
    }
}
