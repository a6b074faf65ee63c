//! The DynamoDB store against moto: the core's conformance checks, races
//! between independent clients, expired items that TTL has not deleted, and
//! error mapping.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, KeyType, TimeToLiveStatus};
use chrono::Utc;
use common::{dynamodb, moto, new_store, sample_finding, unique};
use tokenguard_core::conformance::{self, at, sample_read};
use tokenguard_core::{BaselineKey, BaselineStore, StoreError, ValueSighting};
use tokenguard_detector::dynamodb::attributes::{
    EXPIRES_AT, FINDING_ID, FIRST_EVENT_ID, FIRST_SEEN, LAST_EVENT_ID, LAST_SEEN, LAST_SEEN_US, PK,
    SCOPE_SK, SIGHTINGS, SK,
};
use tokenguard_detector::dynamodb::value_sk;
use tokenguard_detector::{
    DynamoCorrelation, DynamoStore, create_correlation_table, create_tables,
};
use tokenguard_e2e::moto::MotoServer;
use tokenguard_schema::MAX_EXE_LEN;
use tokio::sync::Barrier;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

#[tokio::test]
async fn conformance_new_then_known() {
    conformance::new_then_known(&new_store(moto()).await).await;
}

#[tokio::test]
async fn conformance_forgotten_value_is_new() {
    conformance::forgotten_value_is_new(&new_store(moto()).await).await;
}

#[tokio::test]
async fn conformance_refresh_keeps_value() {
    conformance::refresh_keeps_value(&new_store(moto()).await).await;
}

#[tokio::test]
async fn conformance_scope_first_seen_kept() {
    conformance::scope_first_seen_kept(&new_store(moto()).await).await;
}

#[tokio::test]
async fn conformance_scope_lives_with_values() {
    conformance::scope_lives_with_values(&new_store(moto()).await).await;
}

#[tokio::test]
async fn conformance_forgotten_scope_not_revived() {
    conformance::forgotten_scope_not_revived(&new_store(moto()).await).await;
}

#[tokio::test]
async fn conformance_known_values_listed() {
    conformance::known_values_listed(&new_store(moto()).await).await;
}

#[tokio::test]
async fn conformance_findings_round_trip() {
    let finding = sample_finding().await;
    conformance::findings_round_trip(&new_store(moto()).await, finding).await;
}

#[tokio::test]
async fn conformance_findings_replaced_by_version() {
    let finding = sample_finding().await;
    conformance::findings_replaced_by_version(&new_store(moto()).await, finding).await;
}

#[tokio::test]
async fn create_tables_idempotent_with_ttl() {
    let client = dynamodb(moto());
    let baseline = unique("baseline");
    let findings = unique("findings");
    create_tables(&client, &baseline, &findings).await.unwrap();
    create_tables(&client, &baseline, &findings).await.unwrap();

    let table = client
        .describe_table()
        .table_name(&baseline)
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = table
        .table()
        .unwrap()
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name().to_owned(), k.key_type().clone()))
        .collect();
    assert_eq!(
        keys,
        vec![
            (PK.to_owned(), KeyType::Hash),
            (SK.to_owned(), KeyType::Range)
        ]
    );
    for name in [&baseline, &findings] {
        let ttl = client
            .describe_time_to_live()
            .table_name(name)
            .send()
            .await
            .unwrap();
        let description = ttl.time_to_live_description().unwrap();
        assert_eq!(
            description.time_to_live_status(),
            Some(&TimeToLiveStatus::Enabled),
            "TTL of {name}"
        );
        assert_eq!(
            description.attribute_name(),
            Some(EXPIRES_AT),
            "TTL of {name}"
        );
    }
}

/// Writes a value item as an earlier writer left it, last seen at `last_seen`
/// hours with TTL `expires_at` (epoch seconds).
async fn put_value_item(
    store: &DynamoStore,
    key: &BaselineKey,
    last_seen_hours: i64,
    expires_at: i64,
) {
    let last_seen = at(last_seen_hours);
    let text = AttributeValue::S(last_seen.to_rfc3339());
    store
        .client()
        .put_item()
        .table_name(store.baseline_table())
        .item(PK, AttributeValue::S(key.scope.key.clone()))
        .item(SK, AttributeValue::S(value_sk(&key.value.key)))
        .item(FIRST_SEEN, text.clone())
        .item(LAST_SEEN, text)
        .item(
            LAST_SEEN_US,
            AttributeValue::N(last_seen.timestamp_micros().to_string()),
        )
        .item(EXPIRES_AT, AttributeValue::N(expires_at.to_string()))
        .item(FIRST_EVENT_ID, AttributeValue::S("old-event".to_owned()))
        .item(LAST_EVENT_ID, AttributeValue::S("old-event".to_owned()))
        .item(SIGHTINGS, AttributeValue::N("7".to_owned()))
        .item(FINDING_ID, AttributeValue::S("tg-old".to_owned()))
        .send()
        .await
        .unwrap();
}

async fn get_value_item(
    store: &DynamoStore,
    key: &BaselineKey,
) -> std::collections::HashMap<String, AttributeValue> {
    store
        .client()
        .get_item()
        .table_name(store.baseline_table())
        .key(PK, AttributeValue::S(key.scope.key.clone()))
        .key(SK, AttributeValue::S(value_sk(&key.value.key)))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("value item exists")
}

#[tokio::test]
async fn expired_item_not_deleted_is_new() {
    let store = new_store(moto()).await;
    let key = BaselineKey::of(&sample_read("/bin/expired", "expired"));
    // Last seen 30 days before at(0), so its TTL passed 2 days ago; moto, like
    // DynamoDB before its sweep, still returns it.
    let expired = (at(0) - chrono::Duration::days(2)).timestamp();
    put_value_item(&store, &key, -30 * 24, expired).await;

    let sighting = store
        .record_value(&key, "e-new", 2, at(0), 28 * DAY, HOUR)
        .await
        .unwrap();
    assert_eq!(sighting, ValueSighting::New);

    let item = get_value_item(&store, &key).await;
    assert_eq!(item[FIRST_EVENT_ID], AttributeValue::S("e-new".to_owned()));
    assert_eq!(item[LAST_EVENT_ID], AttributeValue::S("e-new".to_owned()));
    assert_eq!(item[SIGHTINGS], AttributeValue::N("2".to_owned()));
    assert!(
        !item.contains_key(FINDING_ID),
        "the old finding link must go"
    );
    let expires: i64 = match &item[EXPIRES_AT] {
        AttributeValue::N(value) => value.parse().unwrap(),
        other => panic!("expires_at is {other:?}"),
    };
    assert_eq!(expires, (at(0) + chrono::Duration::days(28)).timestamp());

    let known = store
        .known_values(&key.scope.key, "", at(0), 28 * DAY)
        .await
        .unwrap();
    assert_eq!(known.len(), 1);
    assert_eq!(known[0].1.first_event_id, "e-new");
}

#[tokio::test]
async fn passed_ttl_is_absent() {
    // Last seen 10 hours ago, well within forget_after, but its TTL has passed:
    // written under a shorter forget_after, DynamoDB may delete it any moment.
    let store = new_store(moto()).await;
    let key = BaselineKey::of(&sample_read("/bin/short-ttl", "short-ttl"));
    put_value_item(&store, &key, -10, at(-1).timestamp()).await;

    let known = store
        .known_values(&key.scope.key, "", at(0), 28 * DAY)
        .await
        .unwrap();
    assert!(
        known.is_empty(),
        "an item past its TTL is not listed: {known:?}"
    );
    let sighting = store
        .record_value(&key, "e-new", 1, at(0), 28 * DAY, HOUR)
        .await
        .unwrap();
    assert_eq!(sighting, ValueSighting::New);
}

#[tokio::test]
async fn live_item_is_known() {
    let store = new_store(moto()).await;
    let key = BaselineKey::of(&sample_read("/bin/live", "live"));
    put_value_item(&store, &key, -10, at(0).timestamp() + 3600).await;
    let sighting = store
        .record_value(&key, "e-next", 1, at(0), 28 * DAY, HOUR)
        .await
        .unwrap();
    let ValueSighting::Known(record) = sighting else {
        panic!("a value seen 10h ago must be known, got {sighting:?}");
    };
    assert_eq!(record.first_event_id, "old-event");
    assert_eq!(record.sightings, 7);
    assert_eq!(record.finding_id.as_deref(), Some("tg-old"));

    let item = get_value_item(&store, &key).await;
    assert_eq!(item[LAST_EVENT_ID], AttributeValue::S("e-next".to_owned()));
    assert_eq!(item[SIGHTINGS], AttributeValue::N("8".to_owned()));
}

/// Keys of the longest names and executable that validation accepts fit
/// DynamoDB's key limits (2048 bytes for `pk`, 1024 for `sk`), which moto
/// enforces as well.
#[tokio::test]
async fn longest_valid_keys_stored() {
    let store = new_store(moto()).await;
    let name = "n".repeat(253);
    let mut read = sample_read(
        &format!("/{}", "e".repeat(MAX_EXE_LEN - 1)),
        "c".repeat(15).as_str(),
    );
    read.event_id = "boot-1:1".to_owned();
    read.cluster = name.clone();
    let pod = read.pod.as_mut().unwrap();
    pod.namespace = Some(name.clone());
    let owner = pod.owner.as_mut().unwrap();
    owner.kind = name.clone();
    owner.name = name.clone();
    read.container.as_mut().unwrap().name = Some(name.clone());
    assert_eq!(read.validate(read.observed_at), Ok(()));

    let key = BaselineKey::of(&read);
    let sighting = store
        .record_value(&key, "e-long", 1, at(0), 28 * DAY, HOUR)
        .await
        .unwrap();
    assert_eq!(sighting, ValueSighting::New);
    let scope = store
        .record_scope(&key.scope.key, "e-long", at(0), 28 * DAY)
        .await
        .unwrap();
    assert_eq!(scope.first_event_id, "e-long");
}

#[tokio::test]
async fn expired_scope_created_again() {
    let store = new_store(moto()).await;
    let scope = "cluster/ns/Deployment/expired/app";
    let old = at(-40 * 24);
    store
        .client()
        .put_item()
        .table_name(store.baseline_table())
        .item(PK, AttributeValue::S(scope.to_owned()))
        .item(SK, AttributeValue::S(SCOPE_SK.to_owned()))
        .item(FIRST_SEEN, AttributeValue::S(old.to_rfc3339()))
        .item(LAST_SEEN, AttributeValue::S(old.to_rfc3339()))
        .item(
            LAST_SEEN_US,
            AttributeValue::N(old.timestamp_micros().to_string()),
        )
        .item(
            EXPIRES_AT,
            AttributeValue::N((old + chrono::Duration::days(28)).timestamp().to_string()),
        )
        .item(FIRST_EVENT_ID, AttributeValue::S("old-event".to_owned()))
        .send()
        .await
        .unwrap();
    let record = store
        .record_scope(scope, "e-new", at(0), 28 * DAY)
        .await
        .unwrap();
    assert_eq!(record.first_event_id, "e-new");
    assert_eq!(record.first_seen, at(0));
}

/// Races `racers` independent clients on one new value per round and returns,
/// per round, how many of them got `New`.
async fn race(server: &MotoServer, racers: usize, rounds: usize) -> Vec<usize> {
    let first = new_store(server).await;
    let stores: Vec<_> = (0..racers)
        .map(|_| {
            DynamoStore::new(
                dynamodb(server),
                first.baseline_table(),
                first.findings_table(),
            )
        })
        .collect();
    let mut new_counts = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let key = BaselineKey::of(&sample_read(&format!("/bin/race-{round}"), "race"));
        let barrier = Arc::new(Barrier::new(racers));
        let tasks: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(racer, store)| {
                let store = store.clone();
                let key = key.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .record_value(&key, &format!("racer-{racer}"), 1, at(0), 28 * DAY, HOUR)
                        .await
                })
            })
            .collect();
        let mut new = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(ValueSighting::New) => new += 1,
                Ok(ValueSighting::Known(_)) => {}
                Err(error) => panic!("round {round}: record_value failed: {error}"),
            }
        }
        new_counts.push(new);
    }
    new_counts
}

/// Run on a server that handles one request at a time, which gives the atomic
/// conditional writes that DynamoDB guarantees and moto's threaded server does
/// not. The racers still send concurrently from separate clients, so this
/// proves that each decision comes from the server's condition check and not
/// from a read before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_clients_one_new() {
    let server = MotoServer::start_serial().unwrap();
    let counts = race(&server, 8, 20).await;
    for (round, new) in counts.iter().enumerate() {
        assert_eq!(*new, 1, "round {round}: {new} of 8 racers got New");
    }
}

#[tokio::test]
async fn missing_table_names_fix() {
    let client = dynamodb(moto());
    let store = DynamoStore::new(client, "tokenguard-absent", "tokenguard-absent-findings");
    let key = BaselineKey::of(&sample_read("/bin/a", "a"));
    let error = store
        .record_value(&key, "e1", 1, Utc::now(), 28 * DAY, HOUR)
        .await
        .unwrap_err();
    let StoreError::Permanent { message, .. } = &error else {
        panic!("a missing table is permanent, got {error:?}");
    };
    assert!(
        message.starts_with(
            "DynamoDB table tokenguard-absent not found: create it or fix TOKENGUARD_BASELINE_TABLE"
        ),
        "{message}"
    );
    let error = store.get_finding("tg-x").await.unwrap_err();
    assert!(
        error.to_string().contains("fix TOKENGUARD_FINDINGS_TABLE"),
        "{error}"
    );
}

#[tokio::test]
async fn unreachable_endpoint_transient() {
    // A port that was free a moment ago: nothing listens, so connections fail.
    let port = tokenguard_e2e::moto::free_port().unwrap();
    let config = moto()
        .sdk_config()
        .into_builder()
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .build();
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), "t-b", "t-f");
    let error = store.get_finding("tg-x").await.unwrap_err();
    assert!(
        matches!(error, StoreError::Transient { .. }),
        "a refused connection is transient, got {error:?}"
    );
}

async fn correlation_store(moto: &MotoServer) -> DynamoCorrelation {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let client = aws_sdk_dynamodb::Client::new(&moto.sdk_config());
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (table, findings) = (format!("correlation-{n}"), format!("cfindings-{n}"));
    create_correlation_table(&client, &table).await.unwrap();
    create_tables(&client, &format!("cbaseline-{n}"), &findings)
        .await
        .unwrap();
    DynamoCorrelation::new(client, table, findings)
}

#[tokio::test]
async fn correlation_conformance() {
    use conformance::correlation;
    correlation::exchanges_by_time(&correlation_store(moto()).await).await;
    correlation::reads_by_time(&correlation_store(moto()).await).await;
    correlation::profile_marks_new_values(&correlation_store(moto()).await).await;
    correlation::egress_learned(&correlation_store(moto()).await).await;
    correlation::exchange_findings_fold(&correlation_store(moto()).await).await;
}
