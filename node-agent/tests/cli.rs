//! Flag checks of the built binary.

use std::process::Command;

const AGENT: &str = env!("CARGO_BIN_EXE_tokenguard-agent");

fn run(args: &[&str]) -> (bool, String) {
    let output = Command::new(AGENT)
        .args(args)
        .env_remove("TOKENGUARD_CLUSTER")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Returns the `error` field of the agent's fatal `ERROR` log line.
fn fatal_error(stderr: &str) -> String {
    let line = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|log| log["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR log line in stderr: {stderr}"));
    line["fields"]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("ERROR line without an error field: {line}"))
        .to_owned()
}

#[test]
fn bad_learning_period_rejected() {
    let (ok, stderr) = run(&["--cluster", "test", "--learning-period", "7days-ish"]);
    assert!(!ok);
    assert!(
        stderr.contains(
            "invalid learning-period \"7days-ish\": expected a duration such as 0s, 10m, 12h or 7d"
        ),
        "{stderr}"
    );
}

#[test]
fn missing_cluster_rejected() {
    let (ok, stderr) = run(&["--no-kube"]);
    assert!(!ok);
    assert!(stderr.contains("--cluster <CLUSTER>"), "{stderr}");
}

#[test]
fn plain_http_to_remote_host_rejected() {
    let (ok, stderr) = run(&[
        "--cluster",
        "test",
        "--sink",
        "http://detector.example/",
        "--region",
        "eu-west-1",
    ]);
    assert!(!ok);
    let error = fatal_error(&stderr);
    assert!(
        error.starts_with("invalid --sink \"http://detector.example/\""),
        "{error}"
    );
}

#[test]
fn forget_before_learning_reported_once() {
    let (ok, stderr) = run(&[
        "--cluster",
        "test",
        "--learning-period",
        "7d",
        "--forget-after",
        "1d",
    ]);
    assert!(!ok);
    let error = fatal_error(&stderr);
    assert_eq!(
        error
            .matches("must be longer than the learning period")
            .count(),
        1,
        "{error}"
    );
}

#[test]
fn sink_and_embedded_exclusive() {
    let (ok, stderr) = run(&[
        "--cluster",
        "test",
        "--sink",
        "stdout",
        "--embedded",
        "/tmp/x",
    ]);
    assert!(!ok);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}
