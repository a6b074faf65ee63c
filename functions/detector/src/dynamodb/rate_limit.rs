//! [`RateLimiter`] on DynamoDB, so every function instance shares one budget
//! per cluster and hour.
//!
//! The budget is one item of the baseline table, partition
//! `LIMIT#containment#<cluster>` and sort key `H#<hour>` (`2026-12-04T16`,
//! UTC), with the count in `taken`. One conditional `UpdateItem` both checks
//! and takes: DynamoDB applies it atomically, so concurrent invocations never
//! take more than the limit together. The item expires two hours after its
//! hour starts.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use chrono::{DateTime, Utc};
use tokenguard_core::StoreError;
use tokenguard_core::contain::{RateLimiter, rate_limit_hour};

use super::attributes::{EXPIRES_AT, PK, SK};
use super::item::{n, s};
use crate::aws_error::{Resource, classify};

/// Seconds an hour's item is kept after the hour starts.
const KEEP_SECONDS: i64 = 2 * 3600;

/// Containment budgets in the baseline table.
#[derive(Debug, Clone)]
pub struct DynamoRateLimiter {
    client: Client,
    table: String,
}

impl DynamoRateLimiter {
    pub fn new(client: Client, table: impl Into<String>) -> DynamoRateLimiter {
        DynamoRateLimiter {
            client,
            table: table.into(),
        }
    }
}

impl RateLimiter for DynamoRateLimiter {
    async fn acquire(
        &self,
        cluster: &str,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let hour_start = now.timestamp() - now.timestamp().rem_euclid(3600);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(format!("LIMIT#containment#{cluster}")))
            .key(SK, s(format!("H#{}", rate_limit_hour(now))))
            .update_expression("ADD taken :one SET #expires = :expires")
            .condition_expression("attribute_not_exists(taken) OR taken < :limit")
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(limit))
            .expression_attribute_values(":expires", n(hour_start + KEEP_SECONDS))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(failure))
                if matches!(
                    failure.err(),
                    UpdateItemError::ConditionalCheckFailedException(_)
                ) =>
            {
                Ok(false)
            }
            Err(error) => Err(classify(
                "containment rate limit",
                Resource {
                    kind: "DynamoDB table",
                    name: &self.table,
                    setting: crate::config::BASELINE_TABLE_VAR,
                },
                &error,
            )),
        }
    }
}
