//! `tokenguard-agent replay` as a user runs it: recorded reads and a gzip S3
//! log file of CloudTrail in, alerts as JSON lines out.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use chrono::{DateTime, Duration, TimeZone, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use tokenguard_core::conformance::sample_read;
use tokenguard_e2e::fixtures::{eventbridge_event, irsa_exchange};
use tokenguard_schema::TokenRead;

const AGENT: &str = env!("CARGO_BIN_EXE_tokenguard-agent");
const ISSUER: &str = "https://oidc.eks.eu-west-1.amazonaws.com/id/0A1B2C3D4E5F60718293A4B5C6D7E8F9";
const BOTO3: &str = "Boto3/1.35.10 md/Botocore#1.35.10 ua/2.0 os/linux#6.1.112";
const AWS_CLI: &str = "aws-cli/2.22.4 md/awscrt#0.23.1 ua/2.0 os/linux#6.8.0";

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 8, 0, 0).unwrap()
}

fn read(exe: &str, id: &str, at: DateTime<Utc>) -> TokenRead {
    let comm = exe.rsplit('/').next().unwrap();
    let mut read = sample_read(exe, comm);
    read.cluster = "prod".to_owned();
    read.event_id = id.to_owned();
    read.observed_at = at;
    read
}

fn exchange(id: &str, at: DateTime<Utc>, source: &str, agent: &str) -> Value {
    irsa_exchange(
        ISSUER,
        "payments",
        "payments-api",
        id,
        &at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        source,
        agent,
    )
}

fn write_reads(path: &Path, reads: &[TokenRead]) {
    let lines: String = reads
        .iter()
        .map(|read| serde_json::to_string(read).unwrap() + "\n")
        .collect();
    std::fs::write(path, lines).unwrap();
}

fn write_gzip(path: &Path, text: &str) {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(text.as_bytes()).unwrap();
    std::fs::write(path, encoder.finish().unwrap()).unwrap();
}

/// Runs the agent and returns success, the JSON lines of stdout and stderr.
fn run(args: &[&str]) -> (bool, Vec<Value>, String) {
    let output = Command::new(AGENT).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let alerts = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    (
        output.status.success(),
        alerts,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn summary(stderr: &str) -> Value {
    stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find_map(|line| line.get("summary").cloned())
        .unwrap_or_else(|| panic!("no summary line in stderr: {stderr}"))
}

/// Two hours of history: python3 and Boto3 are learned in the first hour, curl
/// reads the token two hours in, and the token is exchanged from outside the
/// egress five minutes later.
fn history(dir: &Path) -> (String, String) {
    let t0 = start();
    let curl_at = t0 + Duration::hours(2);
    let reads = dir.join("reads.jsonl");
    write_reads(
        &reads,
        &[
            read("/usr/bin/python3", "boot:1", t0),
            read("/usr/bin/python3", "boot:2", t0 + Duration::minutes(90)),
            read("/usr/bin/curl", "boot:3", curl_at),
        ],
    );
    let log_file = json!({
        "Records": [
            exchange("x-learn", t0, "198.51.100.20", BOTO3),
            exchange("x-stolen", curl_at + Duration::minutes(5), "203.0.113.9", AWS_CLI),
            tokenguard_e2e::fixtures::cloudtrail_record("unrelated-getcalleridentity"),
        ]
    });
    let trail = dir.join("111122223333_CloudTrail_eu-west-1_20261120T1010Z_abc.json.gz");
    write_gzip(&trail, &log_file.to_string());
    (reads.display().to_string(), trail.display().to_string())
}

#[test]
fn gzip_log_file_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let (reads, trail) = history(dir.path());
    let cluster = format!("prod={ISSUER}");
    let (ok, alerts, stderr) = run(&[
        "replay",
        "--reads",
        &reads,
        "--cloudtrail",
        &trail,
        "--cluster",
        &cluster,
        "--learning-period",
        "1h",
        "--egress",
        "198.51.100.0/24",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(alerts[0]["process"]["exe"], "/usr/bin/curl");
    assert_eq!(alerts[0]["severity"], "medium");
    assert_eq!(alerts[1]["finding_id"], alerts[0]["finding_id"]);
    assert_eq!(alerts[1]["severity"], "critical");
    let call = &alerts[1]["correlation"]["calls"][0];
    assert_eq!(call["source_address"], "203.0.113.9");
    assert_eq!(call["signals"]["outside_egress"], true);

    let summary = summary(&stderr);
    assert_eq!(summary["reads"], 3);
    assert_eq!(summary["records"]["exchanges"], 2);
    assert_eq!(summary["records"]["ignored"], 1);
    assert_eq!(summary["alerts"]["findings"], 1);
    assert_eq!(summary["alerts"]["escalations"], 1);
}

#[test]
fn longer_learning_hides_finding() {
    let dir = tempfile::tempdir().unwrap();
    let (reads, trail) = history(dir.path());
    let cluster = format!("prod={ISSUER}");
    let (ok, alerts, stderr) = run(&[
        "replay",
        "--reads",
        &reads,
        "--cloudtrail",
        &trail,
        "--cluster",
        &cluster,
        "--learning-period",
        "1d",
        "--forget-after",
        "28d",
        "--egress",
        "198.51.100.0/24",
    ]);
    assert!(ok, "{stderr}");
    let summary = summary(&stderr);
    assert_eq!(
        summary["alerts"]["findings"], 0,
        "curl is learned: {alerts:?}"
    );
    // Learning hides the read, not an exchange from outside the egress with
    // no read within minutes of it.
    assert_eq!(summary["alerts"]["exchange_findings"], 1);
}

#[test]
fn eventbridge_lines_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = start();
    let events: String = [
        exchange("x-1", t0, "198.51.100.20", BOTO3),
        exchange("x-2", t0 + Duration::hours(3), "203.0.113.9", AWS_CLI),
    ]
    .iter()
    .map(|record| eventbridge_event(record).to_string() + "\n")
    .collect::<String>()
        + "this line is not an event\n";
    let path = dir.path().join("events.jsonl");
    std::fs::write(&path, events).unwrap();
    let cluster = format!("prod={ISSUER}");
    let (ok, alerts, stderr) = run(&[
        "replay",
        "--cloudtrail",
        path.to_str().unwrap(),
        "--cluster",
        &cluster,
        "--learning-period",
        "1h",
        "--egress",
        "198.51.100.0/24",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["rule"], "exchange_without_read");
    assert_eq!(alerts[0]["severity"], "high");
    let summary = summary(&stderr);
    assert_eq!(summary["cloudtrail_invalid"], 1);
}

#[test]
fn bad_flags_named() {
    let (ok, _, stderr) = run(&["replay"]);
    assert!(!ok);
    assert!(
        stderr.contains("nothing to replay: pass --reads FILE"),
        "{stderr}"
    );

    let (ok, _, stderr) = run(&[
        "replay",
        "--cloudtrail",
        "/nonexistent/trail.json",
        "--cluster",
        "prod=https://example.com/issuer",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("invalid --cluster \\\"prod=https://example.com/issuer\\\""),
        "{stderr}"
    );

    let (ok, _, stderr) = run(&["replay", "--cloudtrail", "/nonexistent/trail.json"]);
    assert!(!ok);
    assert!(
        stderr.contains("failed to read /nonexistent/trail.json"),
        "{stderr}"
    );
}
