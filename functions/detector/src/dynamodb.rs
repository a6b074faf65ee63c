//! [`BaselineStore`] on DynamoDB.
//!
//! The baseline table has partition key `pk` (the scope key) and sort key
//! `sk`: `SCOPE` for the scope's item, `V#<value key>` for each value. The
//! findings table has partition key `finding_id`. Both use the TTL attribute
//! `expires_at`, but DynamoDB deletes expired items lazily (often days late),
//! so every read and condition here treats an expired item as absent itself.

pub mod attributes;
mod correlation;
mod item;
mod rate_limit;
mod tables;

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, Utc};
use tokenguard_core::{
    BaselineKey, BaselineStore, FindingRecord, ScopeRecord, StoreError, ValueRecord, ValueSighting,
    needs_refresh,
};
use tracing::debug;

use crate::aws_error::{Resource, classify};
use attributes::{EXPIRES_AT, FINDING_ID, LAST_SEEN_US, PK, SCOPE_SK, SK, VALUE_SK_PREFIX};
use item::{Item, epoch_micros, expires_at, is_expired, n, rfc3339, s};

pub use correlation::DynamoCorrelation;
pub use item::{FINDING_RETENTION, value_sk};
pub use rate_limit::DynamoRateLimiter;
pub use tables::{create_correlation_table, create_tables};

/// Condition under which an item counts as absent: it does not exist, its TTL
/// has passed, or it was last seen `forget_after` ago or earlier.
const ABSENT_OR_FORGOTTEN: &str =
    "attribute_not_exists(pk) OR expires_at <= :now_s OR last_seen_us <= :forget_before_us";

/// Baseline and findings in two DynamoDB tables.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    baseline_table: String,
    findings_table: String,
}

/// Times of one call, in the forms its expressions compare.
struct Clock {
    now: DateTime<Utc>,
    now_us: i64,
    forget_before_us: i64,
    expires_at: i64,
}

impl Clock {
    fn new(now: DateTime<Utc>, forget_after: Duration) -> Clock {
        let forget_us = i64::try_from(forget_after.as_micros()).unwrap_or(i64::MAX);
        let now_us = epoch_micros(now);
        Clock {
            now,
            now_us,
            forget_before_us: now_us.saturating_sub(forget_us),
            expires_at: expires_at(now, forget_after),
        }
    }

    /// Values that [`ABSENT_OR_FORGOTTEN`] refers to.
    fn absence_values(&self) -> [(&'static str, AttributeValue); 2] {
        [
            (":now_s", n(self.now.timestamp())),
            (":forget_before_us", n(self.forget_before_us)),
        ]
    }

    /// Values that set `last_seen` and the TTL to this call's time.
    fn seen_values(&self) -> [(&'static str, AttributeValue); 3] {
        [
            (":now", rfc3339(self.now)),
            (":now_us", n(self.now_us)),
            (":expires", n(self.expires_at)),
        ]
    }
}

fn is_condition_failure(error: &SdkError<UpdateItemError, impl std::fmt::Debug>) -> bool {
    matches!(
        error.as_service_error(),
        Some(UpdateItemError::ConditionalCheckFailedException(_))
    )
}

/// Returns the item an `UpdateItem` condition failed on, as DynamoDB returned it.
fn failed_condition_item<R>(error: &SdkError<UpdateItemError, R>) -> Option<Item> {
    match error.as_service_error() {
        Some(UpdateItemError::ConditionalCheckFailedException(failure)) => failure.item().cloned(),
        _ => None,
    }
}

impl DynamoStore {
    /// Creates a store on existing tables; [`create_tables`] creates them.
    pub fn new(
        client: Client,
        baseline_table: impl Into<String>,
        findings_table: impl Into<String>,
    ) -> DynamoStore {
        DynamoStore {
            client,
            baseline_table: baseline_table.into(),
            findings_table: findings_table.into(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn baseline_table(&self) -> &str {
        &self.baseline_table
    }

    pub fn findings_table(&self) -> &str {
        &self.findings_table
    }

    fn baseline(&self) -> Resource<'_> {
        Resource {
            kind: "DynamoDB table",
            name: &self.baseline_table,
            setting: "TOKENGUARD_BASELINE_TABLE",
        }
    }

    fn findings(&self) -> Resource<'_> {
        Resource {
            kind: "DynamoDB table",
            name: &self.findings_table,
            setting: "TOKENGUARD_FINDINGS_TABLE",
        }
    }

    fn describe(&self, pk: &str, sk: &str) -> String {
        format!("item pk={pk:?} sk={sk:?} of table {}", self.baseline_table)
    }

    /// Reads a baseline item with a consistent read.
    async fn get_baseline_item(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.baseline_table)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| classify("DynamoDB GetItem", self.baseline(), &error))?;
        Ok(output.item)
    }

    /// Creates the value item, or replaces a forgotten one, in one conditional
    /// write. Returns the live item that made the condition fail, if any.
    async fn create_value(
        &self,
        key: &BaselineKey,
        sk: &str,
        event_id: &str,
        count: u32,
        clock: &Clock,
    ) -> Result<Option<Item>, StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.baseline_table)
            .key(PK, s(&key.scope.key))
            .key(SK, s(sk))
            .update_expression(
                "SET first_seen = :now, last_seen = :now, last_seen_us = :now_us, \
                 expires_at = :expires, first_event_id = :event, last_event_id = :event, \
                 sightings = :count REMOVE finding_id",
            )
            .condition_expression(ABSENT_OR_FORGOTTEN)
            .expression_attribute_values(":event", s(event_id))
            .expression_attribute_values(":count", n(count))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (name, value) in clock
            .seen_values()
            .into_iter()
            .chain(clock.absence_values())
        {
            request = request.expression_attribute_values(name, value);
        }
        match request.send().await {
            Ok(_) => Ok(None),
            Err(error) if is_condition_failure(&error) => match failed_condition_item(&error) {
                Some(item) => Ok(Some(item)),
                // DynamoDB returns the item with the failure when asked to;
                // read it if a backend did not.
                None => self.get_baseline_item(&key.scope.key, sk).await,
            },
            Err(error) => Err(classify("DynamoDB UpdateItem", self.baseline(), &error)),
        }
    }

    /// Rewrites `last_seen` of a known value, unless another writer changed it
    /// since `seen_us`. Returns whether this call wrote.
    async fn refresh_value(
        &self,
        key: &BaselineKey,
        sk: &str,
        event_id: &str,
        count: u32,
        seen_us: i64,
        clock: &Clock,
    ) -> Result<bool, StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.baseline_table)
            .key(PK, s(&key.scope.key))
            .key(SK, s(sk))
            .update_expression(
                "SET last_seen = :now, last_seen_us = :now_us, expires_at = :expires, \
                 last_event_id = :event ADD sightings :count",
            )
            .condition_expression("last_seen_us = :seen_us")
            .expression_attribute_values(":seen_us", n(seen_us))
            .expression_attribute_values(":event", s(event_id))
            .expression_attribute_values(":count", n(count));
        for (name, value) in clock.seen_values() {
            request = request.expression_attribute_values(name, value);
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(error) if is_condition_failure(&error) => Ok(false),
            Err(error) => Err(classify("DynamoDB UpdateItem", self.baseline(), &error)),
        }
    }

    /// Moves a live scope's `last_seen` forward to this call's time. A missing,
    /// forgotten or more recently seen scope is left alone.
    async fn touch_scope(&self, scope_key: &str, clock: &Clock) -> Result<(), StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.baseline_table)
            .key(PK, s(scope_key))
            .key(SK, s(SCOPE_SK))
            .update_expression(
                "SET last_seen = :now, last_seen_us = :now_us, expires_at = :expires",
            )
            .condition_expression(
                "attribute_exists(pk) AND last_seen_us < :now_us \
                 AND last_seen_us > :forget_before_us AND expires_at > :now_s",
            );
        for (name, value) in clock
            .seen_values()
            .into_iter()
            .chain(clock.absence_values())
        {
            request = request.expression_attribute_values(name, value);
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(error) if is_condition_failure(&error) => Ok(()),
            Err(error) => Err(classify("DynamoDB UpdateItem", self.baseline(), &error)),
        }
    }
}

impl BaselineStore for DynamoStore {
    async fn record_value(
        &self,
        key: &BaselineKey,
        event_id: &str,
        count: u32,
        now: DateTime<Utc>,
        forget_after: Duration,
        refresh_interval: Duration,
    ) -> Result<ValueSighting, StoreError> {
        let clock = Clock::new(now, forget_after);
        let sk = value_sk(&key.value.key);

        // The common cases take one round trip: a new value is created, and a
        // known value that needs no refresh fails the condition unwritten.
        let Some(old) = self.create_value(key, &sk, event_id, count, &clock).await? else {
            self.touch_scope(&key.scope.key, &clock).await?;
            return Ok(ValueSighting::New);
        };
        let describe = self.describe(&key.scope.key, &sk);
        let record = item::value_record(&old, describe.clone())?;
        let seen_us: i64 = item::ItemReader::new(&old, describe).number(LAST_SEEN_US)?;

        if needs_refresh(record.last_seen, now, refresh_interval)
            && self
                .refresh_value(key, &sk, event_id, count, seen_us, &clock)
                .await?
        {
            self.touch_scope(&key.scope.key, &clock).await?;
        }
        Ok(ValueSighting::Known(record))
    }

    async fn record_scope(
        &self,
        scope_key: &str,
        event_id: &str,
        now: DateTime<Utc>,
        forget_after: Duration,
    ) -> Result<ScopeRecord, StoreError> {
        let clock = Clock::new(now, forget_after);
        let mut request = self
            .client
            .update_item()
            .table_name(&self.baseline_table)
            .key(PK, s(scope_key))
            .key(SK, s(SCOPE_SK))
            .update_expression(
                "SET first_seen = :now, first_event_id = :event, last_seen = :now, \
                 last_seen_us = :now_us, expires_at = :expires",
            )
            .condition_expression(ABSENT_OR_FORGOTTEN)
            .expression_attribute_values(":event", s(event_id))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (name, value) in clock
            .seen_values()
            .into_iter()
            .chain(clock.absence_values())
        {
            request = request.expression_attribute_values(name, value);
        }
        let old = match request.send().await {
            Ok(_) => {
                return Ok(ScopeRecord {
                    first_seen: now,
                    first_event_id: event_id.to_owned(),
                });
            }
            Err(error) if is_condition_failure(&error) => match failed_condition_item(&error) {
                Some(item) => item,
                None => self
                    .get_baseline_item(scope_key, SCOPE_SK)
                    .await?
                    .unwrap_or_default(),
            },
            Err(error) => return Err(classify("DynamoDB UpdateItem", self.baseline(), &error)),
        };
        item::scope_record(&old, self.describe(scope_key, SCOPE_SK))
    }

    async fn known_values(
        &self,
        scope_key: &str,
        except: &str,
        now: DateTime<Utc>,
        forget_after: Duration,
    ) -> Result<Vec<(String, ValueRecord)>, StoreError> {
        let mut values = Vec::new();
        let mut start_key: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.baseline_table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(scope_key))
                .expression_attribute_values(":prefix", s(VALUE_SK_PREFIX))
                .consistent_read(true)
                .set_exclusive_start_key(start_key.take())
                .send()
                .await
                .map_err(|error| classify("DynamoDB Query", self.baseline(), &error))?;
            for value_item in output.items() {
                let Some(AttributeValue::S(sk)) = value_item.get(SK) else {
                    continue;
                };
                let Some(value_key) = sk.strip_prefix(VALUE_SK_PREFIX) else {
                    continue;
                };
                if value_key == except {
                    continue;
                }
                let describe = self.describe(scope_key, sk);
                let record = item::value_record(value_item, describe.clone())?;
                let expires: Option<i64> =
                    item::ItemReader::new(value_item, describe).optional_number(EXPIRES_AT)?;
                if !is_expired(record.last_seen, expires, now, forget_after) {
                    values.push((value_key.to_owned(), record));
                }
            }
            match output.last_evaluated_key {
                Some(next) if !next.is_empty() => start_key = Some(next),
                _ => break,
            }
        }
        values.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(values)
    }

    async fn put_finding(
        &self,
        key: &BaselineKey,
        record: &FindingRecord,
    ) -> Result<(), StoreError> {
        let finding_item = item::finding_item(record)?;
        let put = async {
            self.client
                .put_item()
                .table_name(&self.findings_table)
                .set_item(Some(finding_item))
                .send()
                .await
                .map_err(|error| classify("DynamoDB PutItem", self.findings(), &error))
        };
        // The value's link to its finding goes out with the finding: a
        // repeat that follows the link before the finding lands is folded
        // into nothing, and the agent waits on this write for a kill order.
        let sk = value_sk(&key.value.key);
        let link = async {
            let result = self
                .client
                .update_item()
                .table_name(&self.baseline_table)
                .key(PK, s(&key.scope.key))
                .key(SK, s(&sk))
                .update_expression("SET finding_id = :finding_id")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_values(":finding_id", s(&record.finding.finding_id))
                .send()
                .await;
            match result {
                Ok(_) => Ok(()),
                Err(error) if is_condition_failure(&error) => {
                    debug!(
                        finding_id = %record.finding.finding_id, scope = %key.scope.key,
                        "finding stored for a value that is no longer in the baseline"
                    );
                    Ok(())
                }
                Err(error) => Err(classify("DynamoDB UpdateItem", self.baseline(), &error)),
            }
        };
        tokio::try_join!(put, link).map(|_| ())
    }

    async fn get_finding(&self, finding_id: &str) -> Result<Option<FindingRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.findings_table)
            .key(FINDING_ID, s(finding_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| classify("DynamoDB GetItem", self.findings(), &error))?;
        let Some(finding_item) = output.item else {
            return Ok(None);
        };
        let describe = format!("finding {finding_id:?} of table {}", self.findings_table);
        item::finding_record(&finding_item, describe).map(Some)
    }

    async fn replace_finding(&self, record: &FindingRecord) -> Result<bool, StoreError> {
        let finding = &record.finding;
        let json = serde_json::to_string(finding).map_err(|error| StoreError::Permanent {
            operation: "encode finding",
            message: format!("finding {} does not serialize: {error}", finding.finding_id),
        })?;
        // repeat_count and last_seen are left alone: add_repeats owns them.
        let result = self
            .client
            .update_item()
            .table_name(&self.findings_table)
            .key(FINDING_ID, s(&finding.finding_id))
            .update_expression(
                "SET finding = :json, severity = :severity, notified = :notified, \
                 version = :next",
            )
            .condition_expression(
                "attribute_exists(finding_id) AND \
                 (version = :version OR (attribute_not_exists(version) AND :version = :zero))",
            )
            .expression_attribute_values(":json", s(json))
            .expression_attribute_values(":severity", s(finding.severity.as_str()))
            .expression_attribute_values(":notified", AttributeValue::Bool(record.notified))
            .expression_attribute_values(":version", n(record.version))
            .expression_attribute_values(":next", n(record.version + 1))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) if is_condition_failure(&error) => Ok(false),
            Err(error) => Err(classify("DynamoDB UpdateItem", self.findings(), &error)),
        }
    }

    async fn mark_notified(&self, finding_id: &str, version: u64) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.findings_table)
            .key(FINDING_ID, s(finding_id))
            .update_expression("SET notified = :notified")
            .condition_expression(
                "attribute_exists(finding_id) AND \
                 (version = :version OR (attribute_not_exists(version) AND :version = :zero))",
            )
            .expression_attribute_values(":version", n(version))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":notified", AttributeValue::Bool(true))
            .return_values(ReturnValue::None)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_condition_failure(&error) => {
                debug!(
                    finding_id,
                    version, "delivery recorded for a finding no longer stored at this version"
                );
                Ok(())
            }
            Err(error) => Err(classify("DynamoDB UpdateItem", self.findings(), &error)),
        }
    }

    async fn add_repeats(
        &self,
        finding_id: &str,
        count: u32,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.findings_table)
            .key(FINDING_ID, s(finding_id))
            .update_expression("ADD repeat_count :count SET last_seen = :now")
            .condition_expression("attribute_exists(finding_id)")
            .expression_attribute_values(":count", n(count))
            .expression_attribute_values(":now", rfc3339(now))
            .return_values(ReturnValue::None)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_condition_failure(&error) => {
                debug!(finding_id, "repeats for a finding no longer stored");
                Ok(())
            }
            Err(error) => Err(classify("DynamoDB UpdateItem", self.findings(), &error)),
        }
    }
}
