//! CPU time of the CloudTrail handler per event, with the baseline and
//! correlation stores in memory, so the number is the function's own work:
//! parsing the SQS batch and the EventBridge envelopes, resolving the
//! cluster, matching and folding. It prints a Markdown table for
//! docs/benchmarks.md.
//!
//! Run: `cargo bench -p tokenguard-cloudtrail --bench handler_cpu`.

use std::collections::HashMap;

use aws_lambda_events::event::sqs::SqsEvent;
use chrono::{DateTime, Duration, SecondsFormat, TimeZone, Utc};
use serde_json::Value;
use tokenguard_cloudtrail::handle_sqs;
use tokenguard_core::cloudtrail::{ClusterResolver, StaticIssuers};
use tokenguard_core::correlate::{CorrelationPolicy, EgressCidrs};
use tokenguard_core::{Alert, Engine, MemoryStore, Notifier, Policy, StoreError};
use tokenguard_e2e::fixtures::{cloudtrail_record, eventbridge_event, irsa_exchange, sqs_batch};

const ISSUER: &str = "https://oidc.eks.eu-west-1.amazonaws.com/id/0A1B2C3D4E5F60718293A4B5C6D7E8F9";
const BOTO3: &str = "Boto3/1.35.10 md/Botocore#1.35.10 ua/2.0 os/linux#6.1.112 md/arch#x86_64";
/// SQS batch size of the deployed event source mapping.
const BATCH: usize = 10;
const SERVICE_ACCOUNTS: usize = 200;
const WARM_EVENTS: usize = 2_000;
const MEASURED_EVENTS: usize = 20_000;

#[derive(Debug)]
struct Quiet;

impl Notifier for Quiet {
    async fn notify(&self, _alert: &Alert<'_>) -> Result<(), StoreError> {
        Ok(())
    }
}

/// CPU time this process has used, user and system.
fn process_cpu_time() -> std::time::Duration {
    let spec = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    std::time::Duration::new(spec.tv_sec as u64, spec.tv_nsec as u32)
}

/// Event `index` of the stream: nine in ten are IRSA exchanges of one of the
/// service accounts from the cluster's NAT address, one in ten is an
/// unrelated STS call that the handler counts and ignores.
fn event(index: usize, start: DateTime<Utc>) -> String {
    let time = (start + Duration::milliseconds(index as i64 * 250))
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    let id = format!("00000000-0000-4000-8000-{index:012}");
    let record = if index % 10 == 9 {
        let mut record = cloudtrail_record("unrelated-getcalleridentity");
        record["eventID"] = Value::from(id);
        record["eventTime"] = Value::from(time);
        record
    } else {
        let account = format!("sa-{}", index % SERVICE_ACCOUNTS);
        irsa_exchange(
            ISSUER,
            "bench",
            &account,
            &id,
            &time,
            "198.51.100.20",
            BOTO3,
        )
    };
    eventbridge_event(&record).to_string()
}

/// SQS batches of events `range`, as the Lambda runtime receives them.
fn batches(range: std::ops::Range<usize>, start: DateTime<Utc>) -> Vec<Vec<u8>> {
    let events: Vec<String> = range.map(|index| event(index, start)).collect();
    events
        .chunks(BATCH)
        .map(|bodies| sqs_batch(bodies).to_string().into_bytes())
        .collect()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let engine = Engine::with_correlation(
        MemoryStore::new(),
        Quiet,
        Policy::from_settings("1h", "28d").expect("valid settings"),
        MemoryStore::new(),
        CorrelationPolicy {
            egress: EgressCidrs::parse("198.51.100.0/24").expect("a valid CIDR"),
            ..CorrelationPolicy::default()
        },
    );
    let issuers = HashMap::from([("prod".to_owned(), ISSUER.to_owned())]);
    let resolver = ClusterResolver::new(vec!["prod".to_owned()], StaticIssuers(issuers));
    let start = Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap();
    let now = start + Duration::days(1);

    let run = |payloads: Vec<Vec<u8>>| {
        runtime.block_on(async {
            let mut failed = 0;
            for payload in payloads {
                let event: SqsEvent =
                    serde_json::from_slice(&payload).expect("the batch is an SQS event");
                let (response, counts) = handle_sqs(&engine, &resolver, &event, now).await;
                assert!(response.batch_item_failures.is_empty());
                failed += counts.failed;
            }
            failed
        })
    };

    // The first exchanges create each service account's profile.
    let warm = batches(0..WARM_EVENTS, start);
    run(warm);

    let measured = batches(WARM_EVENTS..WARM_EVENTS + MEASURED_EVENTS, start);
    let bytes: usize = measured.iter().map(Vec::len).sum();
    let before = process_cpu_time();
    let failed = run(measured);
    let used = process_cpu_time() - before;
    assert_eq!(failed, 0);

    let per_event = used.as_secs_f64() * 1e6 / MEASURED_EVENTS as f64;
    println!("| events | batches of | payload | CPU time | per event |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| {MEASURED_EVENTS} (9 in 10 exchanges of {SERVICE_ACCOUNTS} service accounts) | {BATCH} | {:.1} MB | {:.3} s | {per_event:.1} µs |",
        bytes as f64 / 1e6,
        used.as_secs_f64(),
    );
}
