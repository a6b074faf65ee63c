//! Creation of the baseline, findings and correlation tables, for tests and
//! local stacks.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveSpecification, TimeToLiveStatus,
};
use tokenguard_core::StoreError;

use super::attributes::{EXPIRES_AT, FINDING_ID, PK, SK};
use crate::aws_error::{Resource, classify};

/// Maximum wait for a new table to become active.
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// Creates the baseline and findings tables with on-demand billing and TTL on
/// `expires_at`. Tables that already exist are kept, so the call is idempotent.
pub async fn create_tables(
    client: &Client,
    baseline: &str,
    findings: &str,
) -> Result<(), StoreError> {
    let baseline_resource = Resource {
        kind: "DynamoDB table",
        name: baseline,
        setting: "TOKENGUARD_BASELINE_TABLE",
    };
    let findings_resource = Resource {
        kind: "DynamoDB table",
        name: findings,
        setting: "TOKENGUARD_FINDINGS_TABLE",
    };
    create_table(
        client,
        baseline_resource,
        &[(PK, KeyType::Hash), (SK, KeyType::Range)],
    )
    .await?;
    create_table(client, findings_resource, &[(FINDING_ID, KeyType::Hash)]).await?;
    enable_ttl(client, baseline_resource).await?;
    enable_ttl(client, findings_resource).await
}

/// Creates the correlation table, keyed like the baseline table, with TTL on
/// `expires_at`. An existing table is kept.
pub async fn create_correlation_table(client: &Client, name: &str) -> Result<(), StoreError> {
    let resource = Resource {
        kind: "DynamoDB table",
        name,
        setting: "TOKENGUARD_CORRELATION_TABLE",
    };
    create_table(
        client,
        resource,
        &[(PK, KeyType::Hash), (SK, KeyType::Range)],
    )
    .await?;
    enable_ttl(client, resource).await
}

fn build_error(table: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Permanent {
        operation: "DynamoDB CreateTable",
        message: format!("invalid definition of table {table}: {error}"),
    }
}

/// Creates one table whose keys are all strings, and waits until it is active.
async fn create_table(
    client: &Client,
    table: Resource<'_>,
    keys: &[(&str, KeyType)],
) -> Result<(), StoreError> {
    let mut request = client
        .create_table()
        .table_name(table.name)
        .billing_mode(BillingMode::PayPerRequest);
    for (name, key_type) in keys {
        let definition = AttributeDefinition::builder()
            .attribute_name(*name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|error| build_error(table.name, error))?;
        let element = KeySchemaElement::builder()
            .attribute_name(*name)
            .key_type(key_type.clone())
            .build()
            .map_err(|error| build_error(table.name, error))?;
        request = request
            .attribute_definitions(definition)
            .key_schema(element);
    }
    match request.send().await {
        Ok(_) => {}
        Err(error)
            if matches!(
                error.as_service_error(),
                Some(CreateTableError::ResourceInUseException(_))
            ) => {}
        Err(error) => return Err(classify("DynamoDB CreateTable", table, &error)),
    }
    client
        .wait_until_table_exists()
        .table_name(table.name)
        .wait(TABLE_ACTIVE_TIMEOUT)
        .await
        .map_err(|error| StoreError::Transient {
            operation: "DynamoDB DescribeTable",
            message: format!(
                "table {} did not become active within {}s: {error}",
                table.name,
                TABLE_ACTIVE_TIMEOUT.as_secs()
            ),
        })?;
    Ok(())
}

/// Turns on TTL on `expires_at` unless it is already on or being turned on.
async fn enable_ttl(client: &Client, table: Resource<'_>) -> Result<(), StoreError> {
    let current = client
        .describe_time_to_live()
        .table_name(table.name)
        .send()
        .await
        .map_err(|error| classify("DynamoDB DescribeTimeToLive", table, &error))?;
    let status = current
        .time_to_live_description()
        .and_then(|description| description.time_to_live_status());
    if matches!(
        status,
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
    ) {
        return Ok(());
    }
    let specification = TimeToLiveSpecification::builder()
        .attribute_name(EXPIRES_AT)
        .enabled(true)
        .build()
        .map_err(|error| build_error(table.name, error))?;
    client
        .update_time_to_live()
        .table_name(table.name)
        .time_to_live_specification(specification)
        .send()
        .await
        .map_err(|error| classify("DynamoDB UpdateTimeToLive", table, &error))?;
    Ok(())
}
