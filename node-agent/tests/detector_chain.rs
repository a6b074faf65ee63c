//! The whole chain on real components. The agent runs on this machine's kernel and reports reads
//! of a pod's IRSA token inside a sandbox laid out the way the kubelet lays out a pod. It names
//! the pod through the Kubernetes API stand-in and posts signed batches to the detector under
//! cargo-lambda's emulator. The detector keeps its baseline in DynamoDB and alerts through SNS,
//! both in moto, into an SQS queue that the test reads. With the pod's namespace in enforce
//! mode, the agent kills the unfamiliar reader on the detector's order, and the finding in
//! moto records the kill.
//!
//! Needs root (the agent loads eBPF programs, and the sandbox makes a cgroup and a mount
//! namespace), the Python virtual environment with moto and cargo-lambda, and the emulator's
//! first build of the detector, which takes minutes.

use std::fs;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokenguard_core::contain::{Action, ContainmentOutcome, Mode, latest_decision};
use tokenguard_core::{Finding, Rule, Severity};
use tokenguard_e2e::detector::{BaselineValue, DetectorStack, StackOptions};
use tokenguard_e2e::fixtures::{NODE, irsa_pod_on};
use tokenguard_e2e::kube_api::KubeApi;
use tokenguard_e2e::moto::{GuardedChild, REGION, log_dir};
use tokenguard_schema::TokenKind;

const AGENT: &str = env!("CARGO_BIN_EXE_tokenguard-agent");

/// Where pod-sandbox.sh mounts the IRSA token inside its mount namespace.
const TOKEN: &str = "/run/secrets/eks.amazonaws.com/serviceaccount/token";
/// Names of the fixture pod from `tokenguard_e2e::fixtures::irsa_pod_on`.
const NAMESPACE: &str = "payments";
const POD_NAME: &str = "payments-api-6d8f7b9c5-x2k4q";
const SERVICE_ACCOUNT: &str = "payments-api";
const CONTAINER_NAME: &str = "api";
/// Name of the workload's own binary, a copy of `cat`.
const FAMILIAR_COMM: &str = "payments-api";

/// Maximum wait for the agent to load its probe and connect to the stand-in API server.
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Maximum wait for a read to reach the baseline table or the alert queue.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the test keeps reading the queue after the first alert, to catch extra alerts.
const SETTLE_TIME: Duration = Duration::from_secs(3);
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Runs the tests of this file one at a time. Each agent reports every token open on the
/// machine, so one test's agent would post the other test's reads to its own detector, where
/// they raise findings that the other test does not expect.
static ONE_CHAIN_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Takes the lock that `tests/kernel.rs` takes, shared. Every loaded probe reports every token
/// open on the machine, so the agent's reads would break that binary's exact counter checks,
/// and its burst of 1,000 opens could overflow the agent's ring buffer. `cargo test` runs test
/// binaries one after another, so the lock matters only for runs started side by side.
fn kernel_tests_lock() -> fs::File {
    let path = std::env::temp_dir().join("tokenguard-kernel-tests.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|error| panic!("failed to open lock file {}: {error}", path.display()));
    file.lock_shared()
        .unwrap_or_else(|error| panic!("failed to lock {}: {error}", path.display()));
    file
}

/// Names that no other run shares, so leftovers of a failed run cannot match.
struct RunIds {
    cluster: String,
    pod_uid: String,
    container_id: String,
}

impl RunIds {
    fn new() -> RunIds {
        let seed = format!("{}-{:?}", std::process::id(), SystemTime::now());
        let digest = hex::encode(Sha256::digest(format!("pod-{seed}")));
        let pod_uid = format!(
            "{}-{}-{}-{}-{}",
            &digest[0..8],
            &digest[8..12],
            &digest[12..16],
            &digest[16..20],
            &digest[20..32]
        );
        RunIds {
            cluster: format!("chain-{}", &digest[32..44]),
            pod_uid,
            container_id: hex::encode(Sha256::digest(format!("container-{seed}"))),
        }
    }
}

/// A pod laid out by `scripts/pod-sandbox.sh` under a temporary kubelet root: the projected
/// IRSA volume and a cgroup named the way the kubelet's systemd driver names it with
/// containerd. Torn down on drop.
struct PodSandbox {
    kubelet_root: PathBuf,
    pod_uid: String,
    container_id: String,
}

impl PodSandbox {
    fn setup(kubelet_root: &Path, ids: &RunIds) -> PodSandbox {
        // Built before the script runs, so that a setup failing halfway is torn down too.
        let sandbox = PodSandbox {
            kubelet_root: kubelet_root.to_path_buf(),
            pod_uid: ids.pod_uid.clone(),
            container_id: ids.container_id.clone(),
        };
        let output = sandbox.script("setup").output().unwrap();
        assert_success("pod-sandbox.sh setup", &output);
        sandbox
    }

    fn script(&self, action: &str) -> Command {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pod-sandbox.sh");
        let mut command = Command::new(script);
        command
            .arg(action)
            .arg(&self.kubelet_root)
            .arg(&self.pod_uid)
            .arg(&self.container_id);
        command
    }

    /// Starts `program args` in the pod's cgroup and a mount namespace with the token at
    /// [`TOKEN`], without waiting for it. Its pid is the pid of `program`, because the script
    /// and the commands after it exec one another.
    fn spawn(&self, program: &Path, args: &[&str]) -> SandboxProcess {
        let child = self
            .script("exec")
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        SandboxProcess { child }
    }

    /// Runs `program args` in the pod's cgroup and a mount namespace with the token at
    /// [`TOKEN`], and checks that it exits with status 0.
    fn exec(&self, program: &Path, args: &[&str]) -> Output {
        let output = self
            .script("exec")
            .arg("--")
            .arg(program)
            .args(args)
            .output()
            .unwrap();
        assert_success(&format!("{} in the sandbox", program.display()), &output);
        output
    }
}

impl Drop for PodSandbox {
    fn drop(&mut self) {
        match self.script("teardown").output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "pod-sandbox.sh teardown failed with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => eprintln!("failed to run pod-sandbox.sh teardown: {error}"),
        }
    }
}

/// A process started in the sandbox, killed and reaped on drop if it still runs.
struct SandboxProcess {
    child: Child,
}

impl SandboxProcess {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit, and returns `None` if it still runs after `timeout`.
    async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed with {}: stdout {:?}, stderr {:?}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Finds a program on PATH and resolves symlinks, as the kernel's exe_file does.
fn which(program: &str) -> PathBuf {
    std::env::var("PATH")
        .unwrap()
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{program} not found on PATH"))
        .canonicalize()
        .unwrap()
}

/// Returns the `fields.message` texts of the agent's JSON log lines so far.
fn log_messages(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|line| line["fields"]["message"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until the agent has logged every message in `expected`, and panics with its log when
/// it exits or `timeout` passes first.
async fn wait_for_log(agent: &mut GuardedChild, log: &Path, expected: &[&str], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let messages = log_messages(log);
        if expected
            .iter()
            .all(|message| messages.iter().any(|m| m == message))
        {
            return;
        }
        let log_text = fs::read_to_string(log).unwrap_or_default();
        if let Some(status) = agent.exited() {
            panic!(
                "tokenguard-agent exited with {status} before logging {expected:?}:\n{log_text}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "tokenguard-agent did not log {expected:?} within {}s:\n{log_text}",
            timeout.as_secs()
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Calls `probe` until it returns `Some`, or returns `None` once `timeout` has passed.
async fn poll<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe().await {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Returns the value of string message attribute `name` of an SNS envelope.
fn attribute<'a>(envelope: &'a Value, name: &str) -> Option<&'a str> {
    envelope["MessageAttributes"][name]["Value"].as_str()
}

/// Returns the finding id that ends an alert's default text: `... [tg-<hex>]`.
fn finding_id_of(message: &str) -> Option<&str> {
    message
        .strip_suffix(']')?
        .rsplit_once(" [")
        .map(|(_, id)| id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfamiliar_reader_alerts() {
    let _chain = ONE_CHAIN_AT_A_TIME.lock().await;
    let _lock = kernel_tests_lock();
    let ids = RunIds::new();
    let cluster = ids.cluster.as_str();

    let stack = DetectorStack::start("0s")
        .await
        .expect("the detector stack starts");
    let queue = stack
        .alert_queue(cluster)
        .await
        .expect("the alert queue is created");
    let kube = KubeApi::start()
        .await
        .expect("the Kubernetes API stand-in starts");
    kube.add_pod(irsa_pod_on(NODE, &ids.pod_uid, &ids.container_id));

    let work = tempfile::tempdir().unwrap();
    let work_dir = work.path().canonicalize().unwrap();
    assert!(
        !work_dir.starts_with("/run"),
        "temp dir {} is under /run, which the sandbox hides: set TMPDIR elsewhere",
        work_dir.display()
    );
    let kubeconfig = work_dir.join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig).unwrap();
    let kubelet_root = work_dir.join("kubelet");
    let sandbox = PodSandbox::setup(&kubelet_root, &ids);

    // The workload's own binary: a copy of cat, so the baseline learns a process that is not
    // the reader that should alert.
    let cat = which("cat");
    let familiar = work_dir.join(FAMILIAR_COMM);
    fs::copy(&cat, &familiar).unwrap();

    let agent_log = log_dir().join(format!("agent-{cluster}.log"));
    let mut command = Command::new(AGENT);
    command
        .args(["--sink", &stack.function_url()])
        .args(["--cluster", cluster])
        .args(["--node-name", NODE])
        .arg("--kubelet-root")
        .arg(&kubelet_root)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--region", REGION])
        .envs(stack.moto().client_env())
        .env("RUST_LOG", "info,tokenguard_agent=debug");
    // The guard stops the agent, and so detaches its eBPF programs, however the test ends,
    // including a failed assert.
    let mut agent = GuardedChild::spawn("tokenguard-agent", &command, &agent_log)
        .expect("tokenguard-agent starts");
    wait_for_log(
        &mut agent,
        &agent_log,
        &["agent started", "watching pods of this node"],
        AGENT_START_TIMEOUT,
    )
    .await;
    let logs = format!(
        "agent log {}, detector log {}",
        agent_log.display(),
        stack.emulator().log().display()
    );

    let output = sandbox.exec(&familiar, &[TOKEN]);
    assert!(
        output.stdout.starts_with(b"eyJ"),
        "{FAMILIAR_COMM} did not print the token: {:?}",
        String::from_utf8_lossy(&output.stdout)
    );
    let familiar_exe = familiar.to_str().unwrap();
    let learned = poll(DELIVERY_TIMEOUT, || async {
        let values = stack.baseline_values(cluster).await.unwrap();
        values.into_iter().find(|value| value.exe == familiar_exe)
    })
    .await;
    let Some(learned) = learned else {
        panic!(
            "the detector did not learn {familiar_exe} within {}s; {logs}",
            DELIVERY_TIMEOUT.as_secs()
        );
    };
    assert_eq!(
        learned.comm, FAMILIAR_COMM,
        "comm of the learned familiar process"
    );
    assert_eq!(
        learned.finding_id, None,
        "the first reader of a scope must be learned silently, without a finding"
    );
    assert_eq!(
        stack.alerts(&queue).await.unwrap(),
        Vec::<Value>::new(),
        "the familiar process raised an alert"
    );

    let script = format!("cat {TOKEN}");
    sandbox.exec(&which("sh"), &["-c", &script]);
    let first = poll(DELIVERY_TIMEOUT, || async {
        let alerts = stack.alerts(&queue).await.unwrap();
        (!alerts.is_empty()).then_some(alerts)
    })
    .await;
    let Some(mut alerts) = first else {
        panic!(
            "no alert reached the queue within {}s of the unfamiliar read; {logs}",
            DELIVERY_TIMEOUT.as_secs()
        );
    };
    tokio::time::sleep(SETTLE_TIME).await;
    alerts.extend(stack.alerts(&queue).await.unwrap());
    assert_eq!(alerts.len(), 1, "expected exactly one alert: {alerts:#?}");
    let envelope = &alerts[0];

    assert_eq!(
        attribute(envelope, "severity"),
        Some("medium"),
        "severity attribute of {envelope:#}"
    );
    assert_eq!(
        attribute(envelope, "cluster"),
        Some(cluster),
        "cluster attribute of {envelope:#}"
    );
    assert_eq!(
        attribute(envelope, "namespace"),
        Some(NAMESPACE),
        "namespace attribute of {envelope:#}"
    );
    assert_eq!(
        attribute(envelope, "rule"),
        Some("unfamiliar_process_token_read"),
        "rule attribute of {envelope:#}"
    );

    // SNS delivers the `default` member of the JSON message structure to SQS, so `Message`
    // is the one-line text. The pod uid and container id are only in the stored finding.
    let message = envelope["Message"]
        .as_str()
        .unwrap_or_else(|| panic!("the envelope has no string Message: {envelope:#}"));
    let finding_id = finding_id_of(message)
        .unwrap_or_else(|| panic!("the alert text ends with no [finding id]: {message}"));
    let cat_exe = cat.to_str().unwrap();
    assert_eq!(
        message,
        format!(
            "tokenguard MEDIUM: {cat_exe} (cat) read the irsa token of pod \
             {NAMESPACE}/{POD_NAME} on node {NODE} [{finding_id}]"
        ),
        "alert text"
    );
    assert_eq!(
        envelope["Subject"],
        format!("[tokenguard MEDIUM] cat read the AWS token of pod {NAMESPACE}/{POD_NAME}"),
        "alert subject"
    );

    let finding = stack
        .finding(finding_id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("finding {finding_id} of the alert is not stored"));
    assert_eq!(finding.rule, Rule::UnfamiliarProcessTokenRead, "rule");
    assert_eq!(finding.severity, Severity::Medium, "severity");
    assert_eq!(finding.cluster, cluster, "cluster");
    assert_eq!(finding.node, NODE, "node");
    assert_eq!(finding.process.exe, cat_exe, "exe of the reader");
    assert_eq!(finding.process.comm, "cat", "comm of the reader");
    assert_eq!(
        finding.process.args,
        ["cat", TOKEN],
        "command line of the reader"
    );
    assert_eq!(finding.token.kind, TokenKind::Irsa, "token kind");
    assert_eq!(finding.token.path, TOKEN, "token path as the pod sees it");
    assert!(!finding.token.host_path, "the read was inside the pod");
    let pod = finding.pod.as_ref().expect("the finding names the pod");
    assert_eq!(pod.uid, ids.pod_uid, "pod uid from the cgroup");
    assert_eq!(pod.namespace.as_deref(), Some(NAMESPACE), "pod namespace");
    assert_eq!(pod.name.as_deref(), Some(POD_NAME), "pod name");
    assert_eq!(
        pod.service_account.as_deref(),
        Some(SERVICE_ACCOUNT),
        "service account of the pod"
    );
    let container = finding
        .container
        .as_ref()
        .expect("the finding names the container");
    assert_eq!(
        container.id, ids.container_id,
        "container id from the cgroup"
    );
    assert_eq!(
        container.name.as_deref(),
        Some(CONTAINER_NAME),
        "container name from the pod's status"
    );
    let known: Vec<&str> = finding
        .baseline
        .known_values
        .iter()
        .map(|value| value.exe.as_str())
        .collect();
    assert_eq!(known, [familiar_exe], "values known before the finding");

    let mut values = stack.baseline_values(cluster).await.unwrap();
    values.sort_by(|a, b| a.exe.cmp(&b.exe));
    let mut expected = vec![
        BaselineValue {
            scope_key: learned.scope_key.clone(),
            exe: familiar_exe.to_owned(),
            comm: FAMILIAR_COMM.to_owned(),
            finding_id: None,
        },
        BaselineValue {
            scope_key: learned.scope_key.clone(),
            exe: cat_exe.to_owned(),
            comm: "cat".to_owned(),
            finding_id: Some(finding_id.to_owned()),
        },
    ];
    expected.sort_by(|a, b| a.exe.cmp(&b.exe));
    assert_eq!(
        values, expected,
        "the baseline must hold the two readers in one scope, and only cat raised a finding"
    );
}

/// Returns a port on 127.0.0.1 that was free a moment ago.
fn free_local_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Returns the value of the Prometheus sample `name` (with its labels) in `text`.
fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

/// Returns the outcome of the finding's latest kill decision once it is no longer an order
/// waiting for the agent's report.
fn settled_kill(finding: &Finding) -> Option<&ContainmentOutcome> {
    let decision = latest_decision(finding, Action::KillProcess)?;
    (!matches!(decision.outcome, ContainmentOutcome::Ordered { .. })).then_some(&decision.outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfamiliar_reader_killed() {
    let _chain = ONE_CHAIN_AT_A_TIME.lock().await;
    let _lock = kernel_tests_lock();
    let ids = RunIds::new();
    let cluster = ids.cluster.as_str();

    let stack = DetectorStack::start_with(StackOptions {
        learning_period: "0s".to_owned(),
        extra_env: vec![(
            "TOKENGUARD_CONTAINMENT_MODES",
            format!("{NAMESPACE}=enforce"),
        )],
        ..StackOptions::default()
    })
    .await
    .expect("the detector stack starts");
    let kube = KubeApi::start()
        .await
        .expect("the Kubernetes API stand-in starts");
    kube.add_pod(irsa_pod_on(NODE, &ids.pod_uid, &ids.container_id));

    let work = tempfile::tempdir().unwrap();
    let work_dir = work.path().canonicalize().unwrap();
    assert!(
        !work_dir.starts_with("/run"),
        "temp dir {} is under /run, which the sandbox hides: set TMPDIR elsewhere",
        work_dir.display()
    );
    let kubeconfig = work_dir.join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig).unwrap();
    let kubelet_root = work_dir.join("kubelet");
    let sandbox = PodSandbox::setup(&kubelet_root, &ids);
    let familiar = work_dir.join(FAMILIAR_COMM);
    fs::copy(which("cat"), &familiar).unwrap();

    let metrics_addr = free_local_address();
    let agent_log = log_dir().join(format!("agent-{cluster}.log"));
    let mut command = Command::new(AGENT);
    command
        .args(["--sink", &stack.function_url()])
        .args(["--cluster", cluster])
        .args(["--node-name", NODE])
        .arg("--kubelet-root")
        .arg(&kubelet_root)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--region", REGION])
        .args(["--metrics-addr", &metrics_addr.to_string()])
        .envs(stack.moto().client_env())
        .env("RUST_LOG", "info,tokenguard_agent=debug");
    let mut agent = GuardedChild::spawn("tokenguard-agent", &command, &agent_log)
        .expect("tokenguard-agent starts");
    wait_for_log(
        &mut agent,
        &agent_log,
        &["agent started", "watching pods of this node"],
        AGENT_START_TIMEOUT,
    )
    .await;
    let logs = format!(
        "agent log {}, detector log {}",
        agent_log.display(),
        stack.emulator().log().display()
    );

    // The first reader of the workload is learned silently, so it is not contained.
    sandbox.exec(&familiar, &[TOKEN]);
    let familiar_exe = familiar.to_str().unwrap();
    let learned = poll(DELIVERY_TIMEOUT, || async {
        let values = stack.baseline_values(cluster).await.unwrap();
        values.into_iter().find(|value| value.exe == familiar_exe)
    })
    .await;
    assert!(
        learned.is_some(),
        "the detector did not learn {familiar_exe} within {}s; {logs}",
        DELIVERY_TIMEOUT.as_secs()
    );

    // The shell itself opens the token, with a redirection, and keeps running.
    let shell = which("sh");
    let script = format!("while :; do read -r token < {TOKEN}; sleep 1; done");
    let mut reader = sandbox.spawn(&shell, &["-c", &script]);
    let pid = reader.pid();
    let status = reader.wait_exit(DELIVERY_TIMEOUT).await;
    let Some(status) = status else {
        panic!(
            "the unfamiliar reader, pid {pid}, still ran {}s after it read the token; {logs}",
            DELIVERY_TIMEOUT.as_secs()
        );
    };
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the unfamiliar reader, pid {pid}, ended with {status}, not by SIGKILL; {logs}"
    );

    let shell_exe = shell.to_str().unwrap();
    let finding_id = poll(DELIVERY_TIMEOUT, || async {
        let values = stack.baseline_values(cluster).await.unwrap();
        values
            .into_iter()
            .find(|value| value.exe == shell_exe)
            .and_then(|value| value.finding_id)
    })
    .await
    .unwrap_or_else(|| panic!("no finding for {shell_exe} in the baseline; {logs}"));
    let finding = poll(DELIVERY_TIMEOUT, || async {
        let finding = stack.finding(&finding_id).await.unwrap()?;
        settled_kill(&finding).is_some().then_some(finding)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "finding {finding_id} recorded no report of the kill within {}s; {logs}",
            DELIVERY_TIMEOUT.as_secs()
        )
    });

    assert_eq!(finding.rule, Rule::UnfamiliarProcessTokenRead, "rule");
    assert_eq!(finding.severity, Severity::Medium, "severity");
    assert_eq!(finding.process.pid, pid, "pid of the reader");
    assert_eq!(finding.process.exe, shell_exe, "exe of the reader");
    let kills: Vec<_> = finding
        .containment
        .iter()
        .filter(|decision| decision.action == Action::KillProcess)
        .collect();
    assert_eq!(kills.len(), 2, "the order and the report: {kills:#?}");
    assert!(
        matches!(kills[0].outcome, ContainmentOutcome::Ordered { .. }),
        "the first kill decision is the order: {:#?}",
        kills[0]
    );
    let ContainmentOutcome::Acted { detail } = &kills[1].outcome else {
        panic!("the kill was not recorded as acted: {:#?}", kills[1]);
    };
    assert!(
        detail.contains(&format!("SIGKILL to pid {pid} ")),
        "detail of the kill: {detail}"
    );
    assert_eq!(kills[1].mode, Mode::Enforce, "mode of the kill");

    let messages = log_messages(&agent_log);
    assert!(
        messages
            .iter()
            .any(|message| message == "killed the process on the detector's order"),
        "the agent did not log the kill; {logs}"
    );
    let metrics = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        sample(&metrics, "tokenguard_orders_total{result=\"killed\"}"),
        Some(1),
        "kills counted by the agent:\n{metrics}"
    );
    assert_eq!(
        sample(&metrics, "tokenguard_action_reports_sent_total"),
        Some(1),
        "reports the detector received:\n{metrics}"
    );
}
