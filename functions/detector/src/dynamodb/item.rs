//! Attribute names of the baseline and findings tables, and the conversions
//! between DynamoDB items and the core's records.
//!
//! Times are stored twice: as RFC 3339 text for people reading the table, and
//! as epoch numbers where a condition expression compares them.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use tokenguard_core::{Finding, FindingRecord, ScopeRecord, StoreError, ValueRecord};

use super::attributes::*;

/// A DynamoDB item as the SDK returns it.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// How long a finding stays in the findings table after it was detected.
pub const FINDING_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// Sort key of the item of value `value_key`.
pub fn value_sk(value_key: &str) -> String {
    format!("{VALUE_SK_PREFIX}{value_key}")
}

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(crate) fn rfc3339(time: DateTime<Utc>) -> AttributeValue {
    s(time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

pub(crate) fn epoch_micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

/// Epoch seconds at which an item last seen at `last_seen` is forgotten,
/// rounded up so that the TTL never marks an item expired before
/// [`tokenguard_core::is_forgotten`] does.
pub(crate) fn expires_at(last_seen: DateTime<Utc>, forget_after: Duration) -> i64 {
    let micros =
        epoch_micros(last_seen) + i64::try_from(forget_after.as_micros()).unwrap_or(i64::MAX / 2);
    micros.div_euclid(1_000_000) + i64::from(micros.rem_euclid(1_000_000) != 0)
}

/// Reads attributes of one item, naming the item in every error.
pub(crate) struct ItemReader<'a> {
    item: &'a Item,
    /// `baseline table item pk=…, sk=…` or similar, for error messages.
    describe: String,
}

impl<'a> ItemReader<'a> {
    pub(crate) fn new(item: &'a Item, describe: String) -> Self {
        ItemReader { item, describe }
    }

    pub(crate) fn describe(&self) -> &str {
        &self.describe
    }

    fn invalid(&self, attribute: &str, expected: &str) -> StoreError {
        StoreError::Permanent {
            operation: "decode item",
            message: format!(
                "{} has a missing or invalid attribute {attribute}: expected {expected}; \
                 fix or delete the item",
                self.describe
            ),
        }
    }

    pub(crate) fn string(&self, attribute: &str) -> Result<String, StoreError> {
        match self.item.get(attribute) {
            Some(AttributeValue::S(value)) => Ok(value.clone()),
            _ => Err(self.invalid(attribute, "a string")),
        }
    }

    pub(crate) fn optional_string(&self, attribute: &str) -> Result<Option<String>, StoreError> {
        match self.item.get(attribute) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(value)) => Ok(Some(value.clone())),
            Some(_) => Err(self.invalid(attribute, "a string")),
        }
    }

    pub(crate) fn time(&self, attribute: &str) -> Result<DateTime<Utc>, StoreError> {
        let text = self.string(attribute)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|time| time.with_timezone(&Utc))
            .map_err(|_| self.invalid(attribute, "an RFC 3339 time"))
    }

    pub(crate) fn number<T: std::str::FromStr>(&self, attribute: &str) -> Result<T, StoreError> {
        match self.item.get(attribute) {
            Some(AttributeValue::N(value)) => value
                .parse()
                .map_err(|_| self.invalid(attribute, "an integer")),
            _ => Err(self.invalid(attribute, "a number")),
        }
    }

    pub(crate) fn optional_number<T: std::str::FromStr>(
        &self,
        attribute: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.item.get(attribute) {
            None => Ok(None),
            Some(_) => self.number(attribute).map(Some),
        }
    }

    pub(crate) fn boolean(&self, attribute: &str) -> Result<bool, StoreError> {
        match self.item.get(attribute) {
            Some(AttributeValue::Bool(value)) => Ok(*value),
            _ => Err(self.invalid(attribute, "a boolean")),
        }
    }
}

/// Checks whether an item last seen at `last_seen` with TTL `expires_at` counts as
/// absent at `now`. Either test suffices: the TTL may be earlier than
/// `forget_after` allows when the setting grew since the write, and DynamoDB
/// may delete such an item at any moment.
pub(crate) fn is_expired(
    last_seen: DateTime<Utc>,
    expires_at: Option<i64>,
    now: DateTime<Utc>,
    forget_after: Duration,
) -> bool {
    tokenguard_core::is_forgotten(last_seen, now, forget_after)
        || expires_at.is_some_and(|epoch| epoch <= now.timestamp())
}

/// Decodes a value item of the baseline table.
pub(crate) fn value_record(item: &Item, describe: String) -> Result<ValueRecord, StoreError> {
    let reader = ItemReader::new(item, describe);
    Ok(ValueRecord {
        first_seen: reader.time(FIRST_SEEN)?,
        last_seen: reader.time(LAST_SEEN)?,
        sightings: reader.number(SIGHTINGS)?,
        first_event_id: reader.string(FIRST_EVENT_ID)?,
        last_event_id: reader.string(LAST_EVENT_ID)?,
        finding_id: reader.optional_string(FINDING_ID)?,
    })
}

/// Decodes a scope item of the baseline table.
pub(crate) fn scope_record(item: &Item, describe: String) -> Result<ScopeRecord, StoreError> {
    let reader = ItemReader::new(item, describe);
    Ok(ScopeRecord {
        first_seen: reader.time(FIRST_SEEN)?,
        first_event_id: reader.string(FIRST_EVENT_ID)?,
    })
}

/// Encodes a finding as an item of the findings table.
pub(crate) fn finding_item(record: &FindingRecord) -> Result<Item, StoreError> {
    let finding = &record.finding;
    let json = serde_json::to_string(finding).map_err(|error| StoreError::Permanent {
        operation: "encode finding",
        message: format!("finding {} does not serialize: {error}", finding.finding_id),
    })?;
    let expires = finding.detected_at + FINDING_RETENTION;
    let mut item = Item::from([
        (FINDING_ID.to_owned(), s(&finding.finding_id)),
        (FINDING_JSON.to_owned(), s(json)),
        (NOTIFIED.to_owned(), AttributeValue::Bool(record.notified)),
        (REPEAT_COUNT.to_owned(), n(finding.repeat_count)),
        (LAST_SEEN.to_owned(), rfc3339(finding.last_seen)),
        (SEVERITY.to_owned(), s(finding.severity.as_str())),
        (CLUSTER.to_owned(), s(&finding.cluster)),
        (DETECTED_AT.to_owned(), rfc3339(finding.detected_at)),
        (EXPIRES_AT.to_owned(), n(expires.timestamp())),
        (VERSION.to_owned(), n(record.version)),
        (FINDING_KIND.to_owned(), s("read")),
    ]);
    if let Some(namespace) = finding.pod.as_ref().and_then(|pod| pod.namespace.as_ref()) {
        item.insert(NAMESPACE.to_owned(), s(namespace));
    }
    Ok(item)
}

/// Decodes an item of the findings table. `repeat_count` and `last_seen` come
/// from their own attributes, which `add_repeats` updates without rewriting
/// the finding JSON.
pub(crate) fn finding_record(item: &Item, describe: String) -> Result<FindingRecord, StoreError> {
    let reader = ItemReader::new(item, describe);
    let json = reader.string(FINDING_JSON)?;
    let mut finding: Finding = serde_json::from_str(&json)
        .map_err(|_| reader.invalid(FINDING_JSON, "a finding JSON document"))?;
    finding.repeat_count = reader.number(REPEAT_COUNT)?;
    finding.last_seen = reader.time(LAST_SEEN)?;
    Ok(FindingRecord {
        finding,
        notified: reader.boolean(NOTIFIED)?,
        version: reader.optional_number(VERSION)?.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn expires_at_rounds_up() {
        let whole = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        let ten = Duration::from_secs(10);
        assert_eq!(expires_at(whole, ten), whole.timestamp() + 10);
        let half = whole + chrono::Duration::milliseconds(500);
        assert_eq!(expires_at(half, ten), whole.timestamp() + 11);
    }

    #[test]
    fn expired_by_either_rule() {
        let start = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        let day = Duration::from_secs(24 * 3600);
        let later = start + chrono::Duration::hours(12);
        assert!(!is_expired(start, None, later, day));
        assert!(is_expired(
            start,
            None,
            start + chrono::Duration::days(1),
            day
        ));
        assert!(is_expired(start, Some(later.timestamp()), later, day));
        assert!(!is_expired(start, Some(later.timestamp() + 1), later, day));
    }
}
