//! Embedded mode end to end: the built binary replays opens, names pods from
//! the stand-in API server, and keeps its baseline across restarts.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::*;
use serde_json::Value;
use tokenguard_agent::OpenRecord;
use tokenguard_e2e::kube_api::KubeApi;

const AGENT: &str = env!("CARGO_BIN_EXE_tokenguard-agent");

/// Runs the agent over `records` and returns the JSON lines it printed.
async fn run_agent(
    host: &FakeHost,
    state: &Path,
    kubeconfig: &Path,
    records: &[OpenRecord],
) -> Vec<Value> {
    for record in records {
        host.add_pod_process(record);
    }
    let replay = host.dir.path().join("opens.jsonl");
    let lines: Vec<String> = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    std::fs::write(&replay, lines.join("\n")).unwrap();

    let output = tokio::process::Command::new(AGENT)
        .args(["--cluster", "test", "--node-name", NODE])
        .arg("--embedded")
        .arg(state)
        .args(["--learning-period", "0s", "--forget-after", "28d"])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--host-proc")
        .arg(host.proc_root())
        .arg("--cgroup-root")
        .arg(host.cgroup_root())
        .arg("--replay-opens")
        .arg(&replay)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "agent failed: {stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    for line in stderr.lines() {
        let log: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stderr line is not a JSON log ({e}): {line}"));
        assert!(log.get("level").is_some(), "{line}");
    }
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("stdout holds only finding JSON lines"))
        .collect()
}

#[tokio::test]
async fn unfamiliar_reader_raises_one_finding() {
    let api = KubeApi::start().await.unwrap();
    api.add_pod(fixture_pod());
    let host = FakeHost::new();
    let kubeconfig = host.dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let state = host.dir.path().join("state");

    let first_run = [
        open_record(4100, "/usr/local/bin/python3.12", 1000),
        open_record(4100, "/usr/local/bin/python3.12", 1001),
        open_record(4200, "/usr/bin/curl", 1002),
    ];
    let findings = run_agent(&host, &state, &kubeconfig, &first_run).await;
    assert_eq!(findings.len(), 1, "exactly one finding: {findings:#?}");
    let finding = &findings[0];
    assert_eq!(finding["rule"], "unfamiliar_process_token_read");
    assert_eq!(finding["process"]["exe"], "/usr/bin/curl");
    assert_eq!(finding["process"]["pid"], 4200);
    assert_eq!(finding["process"]["parent"]["exe"], "/usr/bin/tini");
    assert_eq!(finding["pod"]["uid"], POD_UID);
    assert_eq!(finding["pod"]["namespace"], "payments");
    assert_eq!(finding["pod"]["name"], "payments-api-6d8f7b9c5-x2k4q");
    assert_eq!(finding["pod"]["service_account"], "payments-api");
    assert_eq!(finding["pod"]["owner"]["kind"], "Deployment");
    assert_eq!(finding["pod"]["owner"]["name"], "payments-api");
    assert_eq!(finding["container"]["id"], CONTAINER_ID);
    assert_eq!(finding["container"]["name"], "api");
    assert_eq!(finding["cluster"], "test");
    assert_eq!(finding["node"], NODE);
    assert_eq!(
        finding["scope"]["key"],
        "test/payments/Deployment/payments-api/api"
    );
    assert_eq!(finding["event_id"], format!("{BOOT_ID}:1002000000000"));
    let known = finding["baseline"]["known_values"].as_array().unwrap();
    assert_eq!(known.len(), 1);
    assert_eq!(known[0]["exe"], "/usr/local/bin/python3.12");

    // After a restart, a fresh baseline would learn python3 silently and flag
    // curl; the kept one contains both and flags only wget.
    let second_run = [
        open_record(4300, "/usr/local/bin/python3.12", 2000),
        open_record(4400, "/usr/bin/curl", 2001),
        open_record(4500, "/usr/bin/wget", 2002),
    ];
    let findings = run_agent(&host, &state, &kubeconfig, &second_run).await;
    assert_eq!(
        findings.len(),
        1,
        "one finding after restart: {findings:#?}"
    );
    assert_eq!(findings[0]["process"]["exe"], "/usr/bin/wget");
    let known: Vec<&str> = findings[0]["baseline"]["known_values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["exe"].as_str().unwrap())
        .collect();
    assert_eq!(known, vec!["/usr/bin/curl", "/usr/local/bin/python3.12"]);
}
