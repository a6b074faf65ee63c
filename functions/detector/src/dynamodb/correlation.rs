//! [`CorrelationStore`] on DynamoDB.
//!
//! The correlation table has partition key `pk` and sort key `sk`. A
//! subject's items share the partition `S#<subject key>`: exchanges under
//! `X#<event time in µs, 17 digits>#<event id>`, reads under
//! `R#<observed time in µs>#<finding id or ~familiar>`, and the exchange
//! profile under `PROFILE`. Learned egress is the item `E#<cluster>`,
//! `PROFILE`. Every item has a TTL in `expires_at`; queries bound times
//! themselves, because DynamoDB deletes expired items late.
//!
//! Exchange findings live in the findings table beside read findings, with
//! `kind` = `exchange`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, PutRequest, ReturnValue, ReturnValuesOnConditionCheckFailure, WriteRequest,
};
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokenguard_core::correlate::{
    CorrelationStore, ExchangeFinding, ExchangeFindingRecord, ExchangeRecord, MatchedCall,
    ProfileSighting, ReadRecord,
};
use tokenguard_core::{StoreError, is_forgotten};
use tracing::debug;

use super::attributes::*;
use super::item::{FINDING_RETENTION, Item, ItemReader, n, rfc3339, s};
use crate::aws_error::{Resource, classify};

/// Attempts at writing the items a batch write left unprocessed.
const BATCH_ATTEMPTS: usize = 5;

/// Correlation items in one table, and exchange findings in the findings
/// table.
#[derive(Debug, Clone)]
pub struct DynamoCorrelation {
    client: Client,
    table: String,
    findings_table: String,
}

impl DynamoCorrelation {
    pub fn new(
        client: Client,
        table: impl Into<String>,
        findings_table: impl Into<String>,
    ) -> DynamoCorrelation {
        DynamoCorrelation {
            client,
            table: table.into(),
            findings_table: findings_table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn resource(&self) -> Resource<'_> {
        Resource {
            kind: "DynamoDB table",
            name: &self.table,
            setting: "TOKENGUARD_CORRELATION_TABLE",
        }
    }

    fn findings(&self) -> Resource<'_> {
        Resource {
            kind: "DynamoDB table",
            name: &self.findings_table,
            setting: "TOKENGUARD_FINDINGS_TABLE",
        }
    }

    /// Lists the records of a subject whose sort keys start with `prefix`
    /// and whose times fall in `[from, to]`.
    async fn query_between<T: DeserializeOwned>(
        &self,
        subject_key: &str,
        prefix: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<T>, StoreError> {
        if from > to {
            return Ok(Vec::new());
        }
        let pk = subject_pk(subject_key);
        // Every sort key continues with `#<id>`, so the bare key one
        // microsecond after `to` sorts after all items of `to` itself.
        let low = format!("{prefix}{}", time_key(from));
        let high = format!(
            "{prefix}{}",
            time_key(to + chrono::Duration::microseconds(1))
        );
        let mut records = Vec::new();
        let mut start_key: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :low AND :high")
                .expression_attribute_values(":pk", s(&pk))
                .expression_attribute_values(":low", s(&low))
                .expression_attribute_values(":high", s(&high))
                .consistent_read(true)
                .set_exclusive_start_key(start_key.take())
                .send()
                .await
                .map_err(|error| classify("DynamoDB Query", self.resource(), &error))?;
            for item in output.items() {
                let describe = format!("item pk={pk:?} of table {}", self.table);
                records.push(decode_json(item, RECORD_JSON, describe)?);
            }
            match output.last_evaluated_key {
                Some(next) if !next.is_empty() => start_key = Some(next),
                _ => break,
            }
        }
        Ok(records)
    }

    /// Writes `items` with BatchWriteItem, resending what DynamoDB leaves
    /// unprocessed under throttling.
    async fn batch_put(&self, items: Vec<Item>) -> Result<(), StoreError> {
        let mut requests = items
            .into_iter()
            .map(|item| {
                let put = PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map_err(|error| build_error(&self.table, error))?;
                Ok(WriteRequest::builder().put_request(put).build())
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        for _ in 0..BATCH_ATTEMPTS {
            let output = self
                .client
                .batch_write_item()
                .request_items(&self.table, requests)
                .send()
                .await
                .map_err(|error| classify("DynamoDB BatchWriteItem", self.resource(), &error))?;
            requests = output
                .unprocessed_items
                .and_then(|mut unprocessed| unprocessed.remove(&self.table))
                .unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
        }
        Err(StoreError::Transient {
            operation: "DynamoDB BatchWriteItem",
            message: format!(
                "{} items of table {} stayed unprocessed after {BATCH_ATTEMPTS} attempts",
                requests.len(),
                self.table
            ),
        })
    }
}

fn build_error(table: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Permanent {
        operation: "build DynamoDB request",
        message: format!("invalid request for table {table}: {error}"),
    }
}

fn subject_pk(subject_key: &str) -> String {
    format!("{SUBJECT_PK_PREFIX}{subject_key}")
}

/// A time as 17 zero-padded digits of epoch microseconds, which sort as the
/// times do from 1970 to the year 5138.
fn time_key(time: DateTime<Utc>) -> String {
    format!("{:017}", time.timestamp_micros().max(0))
}

fn epoch_seconds(time: DateTime<Utc>) -> i64 {
    time.timestamp()
}

fn encode<T: Serialize>(value: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|error| StoreError::Permanent {
        operation: "encode correlation record",
        message: format!("{what} does not serialize: {error}"),
    })
}

fn decode_json<T: DeserializeOwned>(
    item: &Item,
    attribute: &str,
    describe: String,
) -> Result<T, StoreError> {
    let reader = ItemReader::new(item, describe);
    let json = reader.string(attribute)?;
    serde_json::from_str(&json).map_err(|error| StoreError::Permanent {
        operation: "decode item",
        message: format!(
            "{} has an invalid {attribute} JSON document ({error}); fix or delete the item",
            reader.describe()
        ),
    })
}

/// Attribute name of a profile value: values are user agents and session
/// names of any length and alphabet, so the name holds a hash of it.
fn profile_attribute(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    format!("{PROFILE_VALUE_PREFIX}{}", hex::encode(&digest[..12]))
}

fn egress_attribute(address: IpAddr) -> String {
    format!("{EGRESS_ADDRESS_PREFIX}{address}")
}

fn is_put_condition_failure<R>(
    error: &aws_sdk_dynamodb::error::SdkError<PutItemError, R>,
) -> Option<Option<Item>> {
    match error.as_service_error() {
        Some(PutItemError::ConditionalCheckFailedException(failure)) => {
            Some(failure.item().cloned())
        }
        _ => None,
    }
}

fn exchange_finding_item(record: &ExchangeFindingRecord) -> Result<Item, StoreError> {
    let finding = &record.finding;
    let json = encode(finding, &format!("exchange finding {}", finding.finding_id))?;
    let expires = finding.detected_at + FINDING_RETENTION;
    let mut item = Item::from([
        (FINDING_ID.to_owned(), s(&finding.finding_id)),
        (FINDING_JSON.to_owned(), s(json)),
        (FINDING_KIND.to_owned(), s("exchange")),
        (NOTIFIED.to_owned(), AttributeValue::Bool(record.notified)),
        (REPEAT_COUNT.to_owned(), n(finding.repeat_count)),
        (LAST_SEEN.to_owned(), rfc3339(finding.last_seen)),
        (LAST_EVENT_ID_FOLDED.to_owned(), s(&finding.call.event_id)),
        (SEVERITY.to_owned(), s(finding.severity.as_str())),
        (CLUSTER.to_owned(), s(&finding.cluster)),
        (DETECTED_AT.to_owned(), rfc3339(finding.detected_at)),
        (EXPIRES_AT.to_owned(), n(expires.timestamp())),
        (VERSION.to_owned(), n(0)),
    ]);
    if let Some(namespace) = &finding.subject.namespace {
        item.insert(NAMESPACE.to_owned(), s(namespace));
    }
    Ok(item)
}

fn exchange_finding_record(
    item: &Item,
    describe: String,
) -> Result<ExchangeFindingRecord, StoreError> {
    let mut finding: ExchangeFinding = decode_json(item, FINDING_JSON, describe.clone())?;
    let reader = ItemReader::new(item, describe);
    finding.repeat_count = reader.number(REPEAT_COUNT)?;
    finding.last_seen = reader.time(LAST_SEEN)?;
    Ok(ExchangeFindingRecord {
        finding,
        notified: reader.boolean(NOTIFIED)?,
    })
}

impl CorrelationStore for DynamoCorrelation {
    async fn put_exchange(
        &self,
        record: &ExchangeRecord,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<ExchangeRecord>, StoreError> {
        let exchange = &record.exchange;
        let pk = subject_pk(&record.subject.key());
        let sk = format!(
            "{EXCHANGE_SK_PREFIX}{}#{}",
            time_key(exchange.event_time),
            exchange.event_id
        );
        let json = encode(record, &format!("exchange {}", exchange.event_id))?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PK, s(&pk))
            .item(SK, s(&sk))
            .item(RECORD_JSON, s(json))
            .item(EXPIRES_AT, n(epoch_seconds(expires_at)))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let describe = format!("item pk={pk:?} sk={sk:?} of table {}", self.table);
        match result {
            Ok(_) => Ok(None),
            Err(error) => match is_put_condition_failure(&error) {
                Some(Some(old)) => decode_json(&old, RECORD_JSON, describe).map(Some),
                // Asked for, the item comes with the failure; a backend that
                // leaves it out still said the exchange is stored.
                Some(None) => Ok(Some(record.clone())),
                None => Err(classify("DynamoDB PutItem", self.resource(), &error)),
            },
        }
    }

    async fn exchanges_between(
        &self,
        subject_key: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ExchangeRecord>, StoreError> {
        self.query_between(subject_key, EXCHANGE_SK_PREFIX, from, to)
            .await
    }

    async fn put_read(
        &self,
        subject_keys: &[String],
        record: &ReadRecord,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let json = encode(record, "read record")?;
        let sk = format!(
            "{READ_SK_PREFIX}{}#{}",
            time_key(record.observed_at),
            record.id()
        );
        let items = subject_keys
            .iter()
            .map(|key| {
                Item::from([
                    (PK.to_owned(), s(subject_pk(key))),
                    (SK.to_owned(), s(&sk)),
                    (RECORD_JSON.to_owned(), s(&json)),
                    (EXPIRES_AT.to_owned(), n(epoch_seconds(expires_at))),
                ])
            })
            .collect();
        self.batch_put(items).await
    }

    async fn reads_between(
        &self,
        subject_key: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ReadRecord>, StoreError> {
        self.query_between(subject_key, READ_SK_PREFIX, from, to)
            .await
    }

    async fn record_profile(
        &self,
        subject_key: &str,
        values: &[String],
        at: DateTime<Utc>,
        forget_after: Duration,
    ) -> Result<ProfileSighting, StoreError> {
        let pk = subject_pk(subject_key);
        let mut expression =
            "SET first_seen = if_not_exists(first_seen, :at), expires_at = :expires".to_owned();
        let mut request = self.client.update_item().table_name(&self.table);
        let mut names = Vec::new();
        for (index, value) in values.iter().enumerate() {
            let name = profile_attribute(value);
            expression.push_str(&format!(", #v{index} = :seen"));
            request = request.expression_attribute_names(format!("#v{index}"), &name);
            names.push(name);
        }
        let expires =
            at + chrono::Duration::from_std(forget_after).unwrap_or(chrono::Duration::MAX);
        let output = request
            .key(PK, s(&pk))
            .key(SK, s(PROFILE_SK))
            .update_expression(expression)
            .expression_attribute_values(":at", rfc3339(at))
            .expression_attribute_values(":seen", n(epoch_seconds(at)))
            .expression_attribute_values(":expires", n(epoch_seconds(expires)))
            // UPDATED_OLD would return less, but moto 5.2 returns nothing
            // for it; ALL_OLD works on both and the item is small.
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|error| classify("DynamoDB UpdateItem", self.resource(), &error))?;

        let old = output.attributes.unwrap_or_default();
        let describe = format!("profile pk={pk:?} of table {}", self.table);
        let reader = ItemReader::new(&old, describe);
        let (first_seen, created) = match old.get(FIRST_SEEN) {
            Some(_) => (reader.time(FIRST_SEEN)?, false),
            None => (at, true),
        };
        let new = names
            .iter()
            .map(|name| {
                let seen: Option<i64> = reader.optional_number(name)?;
                Ok(seen.is_none_or(|seconds| {
                    let seen = Utc.timestamp_opt(seconds, 0).single().unwrap_or(at);
                    is_forgotten(seen, at, forget_after)
                }))
            })
            .collect::<Result<Vec<bool>, StoreError>>()?;
        Ok(ProfileSighting {
            first_seen,
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
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(format!("{EGRESS_PK_PREFIX}{cluster}")))
            .key(SK, s(PROFILE_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| classify("DynamoDB GetItem", self.resource(), &error))?;
        let item: HashMap<String, AttributeValue> = output.item.unwrap_or_default();
        let mut addresses: Vec<IpAddr> = item
            .iter()
            .filter_map(|(name, value)| {
                let address = name.strip_prefix(EGRESS_ADDRESS_PREFIX)?.parse().ok()?;
                let AttributeValue::N(seconds) = value else {
                    return None;
                };
                let seen = Utc.timestamp_opt(seconds.parse().ok()?, 0).single()?;
                (!is_forgotten(seen, now, forget_after)).then_some(address)
            })
            .collect();
        addresses.sort();
        Ok(addresses)
    }

    async fn learn_egress(
        &self,
        cluster: &str,
        address: IpAddr,
        at: DateTime<Utc>,
        forget_after: Duration,
    ) -> Result<(), StoreError> {
        let expires =
            at + chrono::Duration::from_std(forget_after).unwrap_or(chrono::Duration::MAX);
        self.client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(format!("{EGRESS_PK_PREFIX}{cluster}")))
            .key(SK, s(PROFILE_SK))
            .update_expression("SET #address = :seen, expires_at = :expires")
            .expression_attribute_names("#address", egress_attribute(address))
            .expression_attribute_values(":seen", n(epoch_seconds(at)))
            .expression_attribute_values(":expires", n(epoch_seconds(expires)))
            .send()
            .await
            .map_err(|error| classify("DynamoDB UpdateItem", self.resource(), &error))?;
        Ok(())
    }

    async fn put_exchange_finding(
        &self,
        record: &ExchangeFindingRecord,
    ) -> Result<Option<ExchangeFindingRecord>, StoreError> {
        let finding_id = &record.finding.finding_id;
        let result = self
            .client
            .put_item()
            .table_name(&self.findings_table)
            .set_item(Some(exchange_finding_item(record)?))
            .condition_expression("attribute_not_exists(finding_id)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let describe = format!("finding {finding_id:?} of table {}", self.findings_table);
        match result {
            Ok(_) => Ok(None),
            Err(error) => match is_put_condition_failure(&error) {
                Some(Some(old)) => exchange_finding_record(&old, describe).map(Some),
                Some(None) => Ok(Some(record.clone())),
                None => Err(classify("DynamoDB PutItem", self.findings(), &error)),
            },
        }
    }

    async fn fold_exchange_finding(
        &self,
        finding_id: &str,
        call: &MatchedCall,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.findings_table)
            .key(FINDING_ID, s(finding_id))
            .update_expression("ADD repeat_count :one SET last_seen = :time, last_event_id = :id")
            .condition_expression("attribute_exists(finding_id) AND last_event_id <> :id")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":time", rfc3339(call.event_time))
            .expression_attribute_values(":id", s(&call.event_id))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if super::is_condition_failure(&error) => {
                debug!(finding_id, event_id = %call.event_id, "exchange counted before");
                Ok(())
            }
            Err(error) => Err(classify("DynamoDB UpdateItem", self.findings(), &error)),
        }
    }

    async fn mark_exchange_notified(&self, finding_id: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.findings_table)
            .key(FINDING_ID, s(finding_id))
            .update_expression("SET notified = :notified")
            .condition_expression("attribute_exists(finding_id)")
            .expression_attribute_values(":notified", AttributeValue::Bool(true))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if super::is_condition_failure(&error) => Ok(()),
            Err(error) => Err(classify("DynamoDB UpdateItem", self.findings(), &error)),
        }
    }
}
