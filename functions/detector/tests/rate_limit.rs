//! The containment rate limit on DynamoDB against moto, under concurrent
//! invocations with their own clients.

mod common;

use std::sync::{Arc, OnceLock};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{Duration, TimeZone, Utc};
use common::{dynamodb, unique};
use tokenguard_core::contain::RateLimiter;
use tokenguard_detector::create_tables;
use tokenguard_detector::dynamodb::DynamoRateLimiter;
use tokenguard_e2e::moto::MotoServer;
use tokio::sync::Barrier;

/// A moto server that handles one request at a time, as DynamoDB applies
/// the writes to one item one at a time.
fn serial_moto() -> &'static MotoServer {
    static SERVER: OnceLock<MotoServer> = OnceLock::new();
    SERVER.get_or_init(|| MotoServer::start_serial().expect("moto server starts"))
}

async fn table() -> String {
    let baseline = unique("baseline");
    create_tables(&dynamodb(serial_moto()), &baseline, &unique("findings"))
        .await
        .expect("tables are created");
    baseline
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_invocations_share_budget() {
    let table = table().await;
    let now = Utc.with_ymd_and_hms(2026, 12, 4, 16, 20, 0).unwrap();
    let invocations = 40;
    let barrier = Arc::new(Barrier::new(invocations));
    let tasks: Vec<_> = (0..invocations)
        .map(|_| {
            // Each invocation has its own client, as separate Lambda
            // instances do.
            let limiter = DynamoRateLimiter::new(dynamodb(serial_moto()), &table);
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                limiter.acquire("prod", 10, now).await.unwrap()
            })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        granted += usize::from(task.await.unwrap());
    }
    assert_eq!(granted, 10);
}

#[tokio::test]
async fn budget_per_cluster_and_hour() {
    let table = table().await;
    let limiter = DynamoRateLimiter::new(dynamodb(serial_moto()), &table);
    let now = Utc.with_ymd_and_hms(2026, 12, 4, 16, 59, 0).unwrap();
    assert!(limiter.acquire("prod", 1, now).await.unwrap());
    assert!(!limiter.acquire("prod", 1, now).await.unwrap());
    assert!(limiter.acquire("staging", 1, now).await.unwrap());
    let next_hour = now + Duration::minutes(1);
    assert!(limiter.acquire("prod", 1, next_hour).await.unwrap());

    let item = dynamodb(serial_moto())
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("LIMIT#containment#prod".to_owned()))
        .key("sk", AttributeValue::S("H#2026-12-04T16".to_owned()))
        .send()
        .await
        .unwrap()
        .item
        .expect("the hour's budget is stored");
    assert_eq!(item.get("taken"), Some(&AttributeValue::N("1".to_owned())));
    let expires = Utc
        .with_ymd_and_hms(2026, 12, 4, 18, 0, 0)
        .unwrap()
        .timestamp();
    assert_eq!(
        item.get("expires_at"),
        Some(&AttributeValue::N(expires.to_string()))
    );
}

#[tokio::test]
async fn missing_table_names_setting() {
    let limiter = DynamoRateLimiter::new(dynamodb(serial_moto()), "no-such-table");
    let error = limiter
        .acquire("prod", 1, Utc::now())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("TOKENGUARD_BASELINE_TABLE"), "{error}");
}
