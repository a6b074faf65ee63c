//! DynamoDB round trips per token read and per CloudTrail record, counted
//! by an interceptor on the DynamoDB client, against moto. Prints a Markdown
//! table for docs/benchmarks.md.
//!
//! Run: `cargo bench -p tokenguard-e2e --bench round_trips`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use chrono::{DateTime, Duration, TimeZone, Utc};
use tokenguard_core::cloudtrail::{Exchange, Parsed, parse_record};
use tokenguard_core::conformance::sample_read;
use tokenguard_core::correlate::{CorrelationPolicy, EgressCidrs};
use tokenguard_core::{Alert, Decision, Engine, Notifier, Policy, StoreError};
use tokenguard_detector::{
    DynamoCorrelation, DynamoStore, create_correlation_table, create_tables,
};
use tokenguard_e2e::fixtures::irsa_exchange;
use tokenguard_e2e::moto::MotoServer;
use tokenguard_schema::{Node, TokenRead};

const ISSUER: &str = "https://oidc.eks.eu-west-1.amazonaws.com/id/0A1B2C3D4E5F60718293A4B5C6D7E8F9";
const BOTO3: &str = "Boto3/1.35.10 md/Botocore#1.35.10 ua/2.0 os/linux#6.1.112";
const AWS_CLI: &str = "aws-cli/2.22.4 md/awscrt#0.23.1 ua/2.0 os/linux#6.8.0";

/// Counts requests by operation name.
#[derive(Debug, Clone, Default)]
struct Counter(Arc<Mutex<BTreeMap<String, u64>>>);

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "RoundTripCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg
            .load::<Metadata>()
            .map_or("unknown".to_owned(), |metadata| metadata.name().to_owned());
        *self.0.lock().unwrap().entry(operation).or_default() += 1;
        Ok(())
    }
}

impl Counter {
    fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[derive(Debug)]
struct Quiet;

impl Notifier for Quiet {
    async fn notify(&self, _alert: &Alert<'_>) -> Result<(), StoreError> {
        Ok(())
    }
}

type BenchEngine = Engine<DynamoStore, Quiet, DynamoCorrelation>;

fn node() -> Node {
    Node {
        name: "node-a".to_owned(),
        boot_id: "boot-1".to_owned(),
        agent_version: None,
        hook: None,
    }
}

fn read(exe: &str, id: &str, at: DateTime<Utc>) -> TokenRead {
    let comm = exe.rsplit('/').next().unwrap();
    let mut read = sample_read(exe, comm);
    read.cluster = "prod".to_owned();
    read.event_id = id.to_owned();
    read.observed_at = at;
    read
}

fn exchange(id: &str, at: DateTime<Utc>, source: &str, agent: &str) -> Exchange {
    let time = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let record = irsa_exchange(ISSUER, "payments", "payments-api", id, &time, source, agent);
    match parse_record(&record) {
        Ok(Parsed::Exchange(exchange)) => *exchange,
        other => panic!("the fixture is an exchange: {other:?}"),
    }
}

fn row(case: &str, counts: BTreeMap<String, u64>) {
    let total: u64 = counts.values().sum();
    let detail: Vec<String> = counts
        .iter()
        .map(|(operation, count)| format!("{operation} {count}"))
        .collect();
    println!("| {case} | {total} | {} |", detail.join(", "));
}

/// A DynamoDB client whose requests `counter` counts.
fn counted_client(moto: &MotoServer, counter: &Counter) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::config::Builder::from(&moto.sdk_config())
        .interceptor(counter.clone())
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

async fn engine(moto: &MotoServer, counter: &Counter) -> BenchEngine {
    let plain = aws_sdk_dynamodb::Client::new(&moto.sdk_config());
    create_tables(&plain, "baseline", "findings").await.unwrap();
    create_correlation_table(&plain, "correlation")
        .await
        .unwrap();
    let client = counted_client(moto, counter);
    Engine::with_correlation(
        DynamoStore::new(client.clone(), "baseline", "findings"),
        Quiet,
        Policy::from_settings("1h", "28d").unwrap(),
        DynamoCorrelation::new(client, "correlation", "findings"),
        CorrelationPolicy {
            egress: EgressCidrs::parse("198.51.100.0/24").unwrap(),
            ..CorrelationPolicy::default()
        },
    )
}

/// Counts the round trips of the same unfamiliar read on an engine without
/// correlation, with its own tables.
async fn uncorrelated_read_trips(moto: &MotoServer, at: DateTime<Utc>) -> u64 {
    let plain = aws_sdk_dynamodb::Client::new(&moto.sdk_config());
    create_tables(&plain, "baseline-plain", "findings-plain")
        .await
        .unwrap();
    let counter = Counter::default();
    let engine: Engine<DynamoStore, Quiet> = Engine::new(
        DynamoStore::new(
            counted_client(moto, &counter),
            "baseline-plain",
            "findings-plain",
        ),
        Quiet,
        Policy::from_settings("1h", "28d").unwrap(),
    );
    let t0 = at - Duration::hours(2);
    let learn = read("/usr/bin/python3", "p:1", t0);
    engine.process(&node(), &learn, t0).await.unwrap();
    counter.take();
    let curl = read("/usr/bin/curl", "p:2", at);
    let decision = engine.process(&node(), &curl, at).await.unwrap();
    assert!(matches!(decision, Decision::Finding(_)), "{decision:?}");
    counter.take().values().sum()
}

#[tokio::main]
async fn main() {
    let moto = MotoServer::start_serial().expect("moto starts");
    let counter = Counter::default();
    let engine = engine(&moto, &counter).await;
    counter.take();
    let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap();
    let cluster = "prod";

    println!("| case | DynamoDB round trips | by operation |");
    println!("| --- | --- | --- |");

    let learn = read("/usr/bin/python3", "b:1", t0);
    engine.process(&node(), &learn, t0).await.unwrap();
    row("first read of a new workload (learned)", counter.take());

    let first = exchange("x-1", t0, "198.51.100.20", BOTO3);
    engine.process_exchange(first, cluster, t0).await.unwrap();
    row(
        "first exchange of a service account in a cold function",
        counter.take(),
    );

    let steady = exchange("x-2", t0 + Duration::minutes(55), "198.51.100.20", BOTO3);
    engine
        .process_exchange(steady, cluster, t0 + Duration::minutes(55))
        .await
        .unwrap();
    row(
        "exchange, steady state (inside egress, known values)",
        counter.take(),
    );

    let familiar = read("/usr/bin/python3", "b:2", t0 + Duration::minutes(56));
    engine
        .process(&node(), &familiar, t0 + Duration::minutes(56))
        .await
        .unwrap();
    row("familiar read, first in its minute", counter.take());

    let again = read("/usr/bin/python3", "b:3", t0 + Duration::minutes(56));
    engine
        .process(&node(), &again, t0 + Duration::minutes(56))
        .await
        .unwrap();
    row("familiar read, steady state", counter.take());

    let curl_at = t0 + Duration::hours(2);
    let curl = read("/usr/bin/curl", "b:4", curl_at);
    let decision = engine.process(&node(), &curl, curl_at).await.unwrap();
    assert!(matches!(decision, Decision::Finding(_)), "{decision:?}");
    let with_correlation = counter.take();
    let total: u64 = with_correlation.values().sum();
    row(
        "unfamiliar read, with its finding (no exchange yet)",
        with_correlation,
    );
    let without = uncorrelated_read_trips(&moto, curl_at).await;
    println!(
        "| of which correlation (the same read on an engine without it: {without}) | {} | |",
        total - without
    );

    let stolen = exchange(
        "x-3",
        curl_at + Duration::minutes(4),
        "203.0.113.9",
        AWS_CLI,
    );
    engine
        .process_exchange(stolen, cluster, curl_at + Duration::minutes(10))
        .await
        .unwrap();
    row(
        "exchange that escalates an unfamiliar read's finding",
        counter.take(),
    );

    let repeat = exchange(
        "x-4",
        curl_at + Duration::minutes(6),
        "203.0.113.9",
        AWS_CLI,
    );
    engine
        .process_exchange(repeat, cluster, curl_at + Duration::minutes(10))
        .await
        .unwrap();
    row("repeat exchange folded into that finding", counter.take());

    let nowhere = exchange("x-5", curl_at + Duration::hours(2), "203.0.113.9", AWS_CLI);
    engine
        .process_exchange(nowhere, cluster, curl_at + Duration::hours(2))
        .await
        .unwrap();
    row(
        "exchange from outside the egress with no read (new finding)",
        counter.take(),
    );
}
