//! `tokenguard-agent replay`: recorded token reads and CloudTrail files
//! through the detection and correlation engine, for forensics and for
//! tuning the settings on one's own history.
//!
//! Reads and CloudTrail records are merged by the time the live system would
//! have seen them: a read at its `observed_at`, a record at its `eventTime`
//! plus `--cloudtrail-delay`, because CloudTrail delivers minutes late. Each
//! alert the live system would have sent is printed as one JSON line: the
//! finding as it stood when the alert went out.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Parser;
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;
use tokenguard_core::cloudtrail::{
    ClusterResolver, Parsed, RecordError, StaticIssuers, is_eks_issuer_path, issuer_key,
    parse_record_text, split_records,
};
use tokenguard_core::correlate::{CorrelationPolicy, EgressCidrs};
use tokenguard_core::ingest::{RecordCounts, process_parsed};
use tokenguard_core::{
    Alert, BaselineStore, Decision, Engine, MemoryStore, Notifier, Policy, StoreError,
    parse_duration,
};
use tokenguard_schema::{Node, TokenRead};
use tracing::warn;

use crate::sink::{SharedWriter, write_json_line};
use crate::store::EmbeddedStore;

/// Flags of `tokenguard-agent replay`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tokenguard-agent replay",
    about = "Replays recorded token reads and CloudTrail files through the detection engine \
             and prints the alerts it would have sent, one JSON line each"
)]
pub struct ReplayCli {
    /// Token reads, one JSON object per line: a TokenRead, or a batch as the agent posts it
    /// ({"schema", "node", "events"}).
    #[arg(long, value_name = "FILE")]
    pub reads: Option<PathBuf>,

    /// CloudTrail files: S3 log files ({"Records": [...]}, plain or gzip) or EventBridge
    /// events, one per line.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub cloudtrail: Vec<PathBuf>,

    /// A cluster whose exchanges count, as NAME=ISSUER_URL (the OIDC issuer of its IRSA
    /// tokens), or NAME alone for EKS Pod Identity; repeat for each cluster.
    #[arg(long = "cluster", value_name = "NAME=ISSUER_URL")]
    pub clusters: Vec<String>,

    /// How long a workload learns its token readers silently, such as 12h or 7d.
    #[arg(long, default_value = "7d", value_name = "DURATION")]
    pub learning_period: String,

    /// How long a reader is remembered without being seen again.
    #[arg(long, default_value = "28d", value_name = "DURATION")]
    pub forget_after: String,

    /// How long after a read an exchange still matches it.
    #[arg(long, default_value = "15m", value_name = "DURATION")]
    pub window: String,

    /// Egress CIDRs, comma-separated, each optionally as CLUSTER=CIDR.
    #[arg(long, default_value = "", value_name = "CIDRS")]
    pub egress: String,

    /// How long after its event time a CloudTrail record counts as delivered.
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub cloudtrail_delay: String,

    /// Keep the baseline in this directory's embedded store, so a later replay starts from
    /// what this one learned [default: in memory, empty at each run].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Node name of reads given without their batch.
    #[arg(long, default_value = "replay", value_name = "NAME")]
    pub node_name: String,
}

/// A replay input or setting that cannot be used.
#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("nothing to replay: pass --reads FILE, --cloudtrail FILE..., or both")]
    NoInput,
    #[error("invalid --{flag} {value:?}: {reason}")]
    Flag {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to open the state directory: {0}")]
    State(#[from] crate::store::EmbeddedStoreError),
}

/// What a replay did, printed on stderr at the end.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplaySummary {
    pub reads: u64,
    pub reads_invalid: u64,
    pub records: RecordCounts,
    /// Lines or files of CloudTrail input that held no record.
    pub cloudtrail_invalid: u64,
    pub alerts: AlertCounts,
    /// Time spent reading and parsing the inputs, then deciding.
    pub load_seconds: f64,
    pub seconds: f64,
}

/// Alerts the live system would have sent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AlertCounts {
    pub findings: u64,
    pub escalations: u64,
    pub exchange_findings: u64,
}

/// Prints each alert as a JSON line and counts them.
struct ReplayNotifier {
    writer: SharedWriter,
    findings: AtomicU64,
    escalations: AtomicU64,
    exchanges: AtomicU64,
}

impl std::fmt::Debug for ReplayNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayNotifier").finish_non_exhaustive()
    }
}

impl Notifier for ReplayNotifier {
    async fn notify(&self, alert: &Alert<'_>) -> Result<(), StoreError> {
        let (counter, written) = match alert {
            Alert::Finding(finding) => (&self.findings, write_json_line(&self.writer, *finding)),
            Alert::Escalation { finding, .. } => {
                (&self.escalations, write_json_line(&self.writer, *finding))
            }
            Alert::Exchange(finding) => (&self.exchanges, write_json_line(&self.writer, *finding)),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        written.map_err(|error| StoreError::Permanent {
            operation: "write alert",
            message: error.to_string(),
        })
    }
}

/// One input item at the time the live system would have seen it.
enum Item {
    Read(Node, Box<TokenRead>),
    Record(Result<Parsed, RecordError>),
}

struct Settings {
    policy: Policy,
    correlation: CorrelationPolicy,
    clusters: Vec<String>,
    issuers: HashMap<String, String>,
    delay: chrono::Duration,
}

fn flag_error(flag: &'static str, value: &str, reason: impl ToString) -> ReplayError {
    ReplayError::Flag {
        flag,
        value: value.to_owned(),
        reason: reason.to_string(),
    }
}

fn duration_flag(flag: &'static str, value: &str) -> Result<Duration, ReplayError> {
    parse_duration(flag, value).map_err(|error| flag_error(flag, value, error))
}

impl ReplayCli {
    fn settings(&self) -> Result<Settings, ReplayError> {
        let policy = Policy {
            learning_period: duration_flag("learning-period", &self.learning_period)?,
            forget_after: duration_flag("forget-after", &self.forget_after)?,
            ..Policy::default()
        };
        policy
            .validate()
            .map_err(|error| flag_error("forget-after", &self.forget_after, error))?;
        let window = duration_flag("window", &self.window)?;
        if window.is_zero() {
            return Err(flag_error("window", &self.window, "expected more than 0s"));
        }
        let egress = EgressCidrs::parse(&self.egress)
            .map_err(|error| flag_error("egress", &self.egress, error))?;
        let delay = duration_flag("cloudtrail-delay", &self.cloudtrail_delay)?;

        let mut clusters = Vec::new();
        let mut issuers = HashMap::new();
        for entry in &self.clusters {
            let (name, issuer) = match entry.split_once('=') {
                Some((name, issuer)) => (name.trim(), Some(issuer.trim())),
                None => (entry.trim(), None),
            };
            if name.is_empty() {
                return Err(flag_error(
                    "cluster",
                    entry,
                    "expected NAME=ISSUER_URL or NAME",
                ));
            }
            if let Some(issuer) = issuer {
                let path = issuer_key(issuer);
                if !is_eks_issuer_path(&path) {
                    return Err(flag_error(
                        "cluster",
                        entry,
                        "expected an EKS issuer URL such as \
                         https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE \
                         (aws eks describe-cluster --query cluster.identity.oidc.issuer)",
                    ));
                }
                issuers.insert(name.to_owned(), issuer.to_owned());
            }
            clusters.push(name.to_owned());
        }
        Ok(Settings {
            policy,
            correlation: CorrelationPolicy {
                window,
                egress,
                ..CorrelationPolicy::default()
            },
            clusters,
            issuers,
            delay: chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX),
        })
    }
}

/// Reads a file, unpacking it when it is gzip.
fn read_text(path: &Path) -> Result<String, ReplayError> {
    let error = |source| ReplayError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::read(path).map_err(error)?;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return String::from_utf8(bytes).map_err(|e| error(std::io::Error::other(e)));
    }
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(bytes.as_slice())
        .read_to_string(&mut text)
        .map_err(error)?;
    Ok(text)
}

/// Parses the reads file into reads with their nodes. A line that is not a
/// valid read is logged and counted.
fn load_reads(
    path: &Path,
    node_name: &str,
    summary: &mut ReplaySummary,
) -> Result<Vec<(DateTime<Utc>, Item)>, ReplayError> {
    let text = read_text(path)?;
    let default_node = Node {
        name: node_name.to_owned(),
        boot_id: "replay".to_owned(),
        agent_version: None,
        hook: None,
    };
    let mut items = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let origin = format!("{}:{}", path.display(), index + 1);
        let (node, events) = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(mut object)) if object.contains_key("events") => {
                let node = object
                    .remove("node")
                    .and_then(|node| serde_json::from_value(node).ok())
                    .unwrap_or_else(|| default_node.clone());
                let events = match object.remove("events") {
                    Some(Value::Array(events)) => events,
                    _ => Vec::new(),
                };
                (node, events)
            }
            Ok(event) => (default_node.clone(), vec![event]),
            Err(error) => {
                warn!(origin, %error, "line is not JSON; skipped");
                summary.reads_invalid += 1;
                continue;
            }
        };
        for event in events {
            match valid_read(event) {
                Ok(read) => {
                    items.push((read.observed_at, Item::Read(node.clone(), Box::new(read))))
                }
                Err(reason) => {
                    warn!(origin, reason, "invalid read skipped");
                    summary.reads_invalid += 1;
                }
            }
        }
    }
    Ok(items)
}

/// Decodes and validates a recorded read, with its own time as the clock so
/// that history is not too old.
fn valid_read(event: Value) -> Result<TokenRead, String> {
    let read: TokenRead = serde_json::from_value(event).map_err(|error| error.to_string())?;
    read.validate(read.observed_at)
        .map_err(|error| error.to_string())?;
    Ok(read)
}

fn load_records(
    paths: &[PathBuf],
    delay: chrono::Duration,
    summary: &mut ReplaySummary,
) -> Result<Vec<(DateTime<Utc>, Item)>, ReplayError> {
    let mut items = Vec::new();
    for path in paths {
        let text = read_text(path)?;
        for raw in split_records(&path.display().to_string(), &text) {
            match raw {
                Ok(raw) => {
                    let parsed = parse_record_text(raw.text);
                    // Records that are not exchanges change nothing, so they
                    // go first, to be counted.
                    let time = match &parsed {
                        Ok(Parsed::Exchange(exchange)) => exchange.event_time + delay,
                        _ => DateTime::<Utc>::MIN_UTC,
                    };
                    items.push((time, Item::Record(parsed)));
                }
                Err(error) => {
                    warn!(origin = %error.origin, reason = %error.reason, "CloudTrail input skipped");
                    summary.cloudtrail_invalid += 1;
                }
            }
        }
    }
    Ok(items)
}

/// Runs a replay, writing alerts to `writer`, and returns its summary.
pub async fn replay(cli: &ReplayCli, writer: SharedWriter) -> Result<ReplaySummary, ReplayError> {
    if cli.reads.is_none() && cli.cloudtrail.is_empty() {
        return Err(ReplayError::NoInput);
    }
    let settings = cli.settings()?;
    match &cli.state_dir {
        Some(dir) => run(EmbeddedStore::open(dir)?, cli, settings, writer).await,
        None => run(MemoryStore::new(), cli, settings, writer).await,
    }
}

async fn run<S: BaselineStore>(
    store: S,
    cli: &ReplayCli,
    settings: Settings,
    writer: SharedWriter,
) -> Result<ReplaySummary, ReplayError> {
    let started = Instant::now();
    let mut summary = ReplaySummary::default();
    let mut items = match &cli.reads {
        Some(path) => load_reads(path, &cli.node_name, &mut summary)?,
        None => Vec::new(),
    };
    items.extend(load_records(&cli.cloudtrail, settings.delay, &mut summary)?);
    items.sort_by_key(|(time, _)| *time);
    summary.load_seconds = started.elapsed().as_secs_f64();

    let notifier = ReplayNotifier {
        writer,
        findings: AtomicU64::new(0),
        escalations: AtomicU64::new(0),
        exchanges: AtomicU64::new(0),
    };
    let engine = Engine::with_correlation(
        store,
        notifier,
        settings.policy,
        MemoryStore::new(),
        settings.correlation,
    );
    let resolver = ClusterResolver::new(settings.clusters, StaticIssuers(settings.issuers));
    for (time, item) in items {
        match item {
            Item::Read(node, read) => {
                summary.reads += 1;
                match engine.process(&node, &read, read.observed_at).await {
                    Ok(Decision::Finding(_) | Decision::Known | Decision::Learned) => {}
                    Ok(Decision::Allowed | Decision::Duplicate) => {}
                    Err(error) => {
                        warn!(event_id = %read.event_id, %error, "read not processed");
                    }
                }
            }
            Item::Record(parsed) => {
                let now = if time == DateTime::<Utc>::MIN_UTC {
                    Utc::now()
                } else {
                    time
                };
                match process_parsed(&engine, &resolver, parsed, now).await {
                    Ok(outcome) => summary.records.add(&outcome),
                    Err(error) => {
                        summary.records.failed += 1;
                        warn!(%error, "record not processed");
                    }
                }
            }
        }
    }

    let notifier = engine.notifier();
    summary.alerts = AlertCounts {
        findings: notifier.findings.load(Ordering::Relaxed),
        escalations: notifier.escalations.load(Ordering::Relaxed),
        exchange_findings: notifier.exchanges.load(Ordering::Relaxed),
    };
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

#[cfg(test)]
mod tests;
