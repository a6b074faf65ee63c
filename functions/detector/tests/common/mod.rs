//! Shared set-up of the detector's tests against moto.

#![allow(dead_code)]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, Utc};
use tokenguard_core::conformance::{at, sample_read};
use tokenguard_core::{
    Alert, Decision, Engine, Finding, MemoryStore, Notifier, Policy, StoreError,
};
use tokenguard_detector::{DynamoStore, create_tables};
use tokenguard_e2e::moto::MotoServer;
use tokenguard_schema::{Node, TokenRead};

/// Returns the moto server of this test binary, started on first use. Tests
/// keep apart by table name.
pub fn moto() -> &'static MotoServer {
    static SERVER: OnceLock<MotoServer> = OnceLock::new();
    SERVER.get_or_init(|| MotoServer::start().expect("moto server starts"))
}

/// Returns a name unique within this test process, such as `baseline-3-<pid>`.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let number = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{number}-{}", std::process::id())
}

/// Creates a DynamoDB client for `server`, with its own connection pool.
pub fn dynamodb(server: &MotoServer) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&server.sdk_config())
}

/// Creates a store on two new tables of `server`.
pub async fn new_store(server: &MotoServer) -> DynamoStore {
    let client = dynamodb(server);
    let baseline = unique("baseline");
    let findings = unique("findings");
    create_tables(&client, &baseline, &findings)
        .await
        .expect("tables are created");
    DynamoStore::new(client, baseline, findings)
}

/// Accepts every alert.
#[derive(Debug, Default)]
pub struct NullNotifier;

impl Notifier for NullNotifier {
    async fn notify(&self, _alert: &Alert<'_>) -> Result<(), StoreError> {
        Ok(())
    }
}

pub fn node() -> Node {
    Node {
        name: "node-a".to_owned(),
        boot_id: "boot-1".to_owned(),
        agent_version: None,
        hook: None,
    }
}

pub fn read_at(exe: &str, comm: &str, time: DateTime<Utc>, event_id: &str) -> TokenRead {
    let mut read = sample_read(exe, comm);
    read.observed_at = time;
    read.event_id = event_id.to_owned();
    read
}

/// Builds the finding that `/usr/bin/curl` raises in the sample scope one hour
/// after `/usr/bin/python3` was learned, detected at 01:00.
pub async fn sample_finding() -> Finding {
    let policy = Policy::from_settings("0s", "28d").unwrap();
    let engine = Engine::new(MemoryStore::new(), NullNotifier, policy);
    let seed = read_at("/usr/bin/python3", "python3", at(0), "b:1");
    engine.process(&node(), &seed, at(0)).await.unwrap();
    let curl = read_at("/usr/bin/curl", "curl", at(1), "b:2");
    match engine.process(&node(), &curl, at(1)).await.unwrap() {
        Decision::Finding(finding) => *finding,
        other => panic!("expected a finding, got {other:?}"),
    }
}
