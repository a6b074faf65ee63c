//! Latency of containment, from an unfamiliar process's `open()` of a pod's
//! token to that process's death by SIGKILL or, with `--delete`, to the
//! DELETE of its pod reaching the Kubernetes API. Run it with
//! `bench/kill-latency.sh`, as root.
//!
//! The path measured is the whole chain on this machine. It runs through the
//! kernel probe, the agent's pipeline and the signed POST to the detector
//! under cargo-lambda's emulator, built in the release profile as it is
//! deployed. Then come the detector's DynamoDB and SNS
//! calls to moto, the kill order in the response, and the agent's pidfd
//! kill. Each run starts a new reader, a hard link to this binary under a
//! new name, so the detector finds a new process and raises a new finding
//! each time.
//!
//! In kill mode each run has a pod of its own Deployment and service
//! account. A copy of `cat` reads the token there first, and the run waits
//! until the detector has learned it; only then does the reader start. So
//! each finding is raised in a workload with one known process, as in a
//! cluster. In one shared workload the hundredth run's finding would list
//! 99 known processes, and moto's Query takes about 0.2 ms for each item it
//! returns, which DynamoDB's does not.
//!
//! The reader takes `CLOCK_MONOTONIC` just before it opens the token and
//! prints it. The harness takes it again when `waitpid` returns the reader's
//! exit, so the latency includes the harness's wake-up, a few microseconds.
//!
//! Runs start `--gap-ms` apart after the kill, 500 ms by default. That is
//! longer than the agent waits before it sends a report alone, so no report
//! rides on the next run's POST. A report that does ride on it is recorded by
//! the detector before it answers, which adds its DynamoDB calls to that
//! run's kill.
//!
//! With `--stub`, a local server in place of the detector answers each event
//! at once with an order to kill its reader. That times the agent's share of
//! the path alone.
//!
//! With `--delete`, the detector orders no kill and deletes the reader's pod
//! instead, through the TLS stand-in of the Kubernetes API, after it reads
//! the pod, its ReplicaSet and the ReplicaSet's Deployment. The detector
//! sends the DELETE before it records the decision on the finding, publishes
//! the alert and responds to the agent, so those are not timed. The stand-in
//! marks a deleted pod with a `deletionTimestamp`, and the detector skips a
//! pod that is already being deleted, so each run has a new pod of the
//! ReplicaSet with a new uid, name and sandbox. The pod is added to both
//! stand-ins, the agent's pod watch and the detector's API, and the run waits
//! `--gap-ms` before its reader starts, so the agent knows the pod by then. A
//! run ends when the DELETE arrives at the stand-in, which stamps it with an
//! `Instant` that the harness converts to `CLOCK_MONOTONIC`. The harness then
//! kills the reader and removes the pod from both stand-ins, as the kubelet
//! does at the end of the grace period.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use rustix::process::{Pid, Signal, kill_process};
use rustix::time::{ClockId, clock_gettime};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokenguard_e2e::detector::{DetectorStack, StackOptions};
use tokenguard_e2e::fixtures::{NODE, irsa_pod_on};
use tokenguard_e2e::kube_api::KubeApi;
use tokenguard_e2e::kube_tls::{KubeTls, RecordedRequest, Resource};
use tokenguard_e2e::lambda::Profile;
use tokenguard_e2e::moto::{FAKE_KEY, GuardedChild, REGION, log_dir};
use tokenguard_schema::{AgentOrder, Batch, BatchResponse, Outcome, SCHEMA_VERSION};

const AGENT: &str = env!("CARGO_BIN_EXE_tokenguard-agent");
/// Mount point of the IRSA token in pod-sandbox.sh's mount namespace.
const TOKEN: &str = "/run/secrets/eks.amazonaws.com/serviceaccount/token";
/// Namespace of the fixture pod, set to enforce mode.
const NAMESPACE: &str = "payments";
/// The fixture pod's controller, and the Deployment above it.
const REPLICA_SET: &str = "payments-api-6d8f7b9c5";
const POD_TEMPLATE_HASH: &str = "6d8f7b9c5";
/// Slowest runs the report names, to find them in the logs.
const SLOWEST_SHOWN: usize = 5;
/// How long a run waits after adding its pod before a process in it reads
/// the token.
const POD_WATCH_DELAY: Duration = Duration::from_millis(300);
const DEPLOYMENT: &str = "payments-api";
/// Characters of the random suffix in the names of a ReplicaSet's pods.
const POD_NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// First argument that turns this binary into a reader of the token.
const READER_FLAG: &str = "--read-token";
/// Runs before the measured ones, so that each function instance of the
/// emulator has had its cold start.
const WARMUP_RUNS: usize = 4;
const DEFAULT_RUNS: usize = 100;
const DEFAULT_GAP: Duration = Duration::from_millis(500);
/// Maximum wait for one reader to be killed or for its pod's DELETE.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two looks at the requests that reached the API stand-in.
/// The stand-in stamps each request as it arrives, so this does not change
/// the measured time.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Maximum wait for the agent to start and for the familiar read to be learned.
const START_TIMEOUT: Duration = Duration::from_secs(120);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(READER_FLAG) {
        read_token(&args[1]);
    }
    let options = parse_args(&args).unwrap_or_else(|message| {
        eprintln!("kill-latency: {message}");
        std::process::exit(2);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The TLS stand-in of the Kubernetes API runs on a runtime of its own,
    // which outlives the measuring code, so that the harness's blocking
    // waits do not hold up the stamp it puts on an arriving DELETE.
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(&options, servers.handle()));
}

/// Command-line options of the benchmark.
struct Options {
    /// Measured runs, after [`WARMUP_RUNS`].
    runs: usize,
    /// Pause between a kill and the next run, or in delete mode between a
    /// pod's creation and its reader's start.
    gap: Duration,
    mode: Mode,
}

/// What responds to the agent's POSTs, and what ends a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The detector orders the reader killed, and the run ends at its death.
    Kill,
    /// A stub in place of the detector orders the reader killed.
    Stub,
    /// The detector deletes the reader's pod, and the run ends when the
    /// DELETE arrives at the Kubernetes API stand-in.
    Delete,
}

/// Reads `--runs N`, `--gap-ms N`, `--stub` and `--delete`, ignoring the
/// `--bench` flag that cargo adds.
fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        runs: DEFAULT_RUNS,
        gap: DEFAULT_GAP,
        mode: Mode::Kill,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => {}
            "--stub" | "--delete" if options.mode != Mode::Kill => {
                return Err("--stub and --delete cannot be combined: pass one".to_owned());
            }
            "--stub" => options.mode = Mode::Stub,
            "--delete" => options.mode = Mode::Delete,
            "--runs" => {
                let value = args.next().ok_or("missing value after --runs")?;
                options.runs =
                    value.parse().ok().filter(|runs| *runs > 0).ok_or_else(|| {
                        format!("invalid --runs {value:?}: expected a count above 0")
                    })?;
            }
            "--gap-ms" => {
                let value = args.next().ok_or("missing value after --gap-ms")?;
                let millis = value.parse().map_err(|_| {
                    format!("invalid --gap-ms {value:?}: expected milliseconds, such as 500")
                })?;
                options.gap = Duration::from_millis(millis);
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}: expected --runs N, --gap-ms N, --stub or \
                     --delete"
                ));
            }
        }
    }
    Ok(options)
}

/// Prints the monotonic time in nanoseconds, opens `path` and waits to be
/// killed. The time goes out before the open, because a kill that lands
/// between the open and a later print would lose it. The write adds a few
/// microseconds to the time measured.
fn read_token(path: &str) -> ! {
    let before = monotonic_ns();
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{before}");
    let _ = stdout.flush();
    if let Err(error) = fs::File::open(path) {
        let _ = writeln!(stdout, "failed to open {path}: {error}");
        let _ = stdout.flush();
        std::process::exit(1);
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn monotonic_ns() -> u64 {
    let now = clock_gettime(ClockId::Monotonic);
    let nanos = i128::from(now.tv_sec) * 1_000_000_000 + i128::from(now.tv_nsec);
    u64::try_from(nanos).unwrap_or(0)
}

/// Converts `instant` to nanoseconds of `CLOCK_MONOTONIC`, the clock of
/// [`monotonic_ns`]. On Linux `Instant::now` reads `CLOCK_MONOTONIC` too, as
/// the Rust standard library documents, so both count from the same origin.
/// The conversion subtracts the age of `instant` from a reading of the clock
/// taken right after, so it is late by the time between the two readings,
/// well under a microsecond.
fn monotonic_ns_at(instant: Instant) -> u64 {
    let age = instant.elapsed();
    let now = monotonic_ns();
    now.saturating_sub(u64::try_from(age.as_nanos()).unwrap_or(u64::MAX))
}

/// Formats the first 32 hex digits of `digest` as a pod uid.
fn pod_uid(digest: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &digest[0..8],
        &digest[8..12],
        &digest[12..16],
        &digest[16..20],
        &digest[20..32]
    )
}

async fn bench(options: &Options, servers: &tokio::runtime::Handle) {
    let runs = options.runs;
    assert!(
        rustix::process::geteuid().is_root(),
        "run as root: the agent loads eBPF programs and the sandbox makes a cgroup"
    );
    let _lock = kernel_tests_lock();
    let seed = format!("{}-{:?}", std::process::id(), SystemTime::now());
    let digest = hex::encode(Sha256::digest(format!("kill-latency-{seed}")));
    let cluster = format!("bench-{}", &digest[32..44]);
    let pod_uid = pod_uid(&digest);
    let container_id = hex::encode(Sha256::digest(format!("container-{seed}")));
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kill-latency-{cluster}"));
    fs::create_dir_all(&work).unwrap();

    let cluster_api = match options.mode {
        Mode::Delete => Some(start_cluster_api(servers, &cluster).await),
        Mode::Kill | Mode::Stub => None,
    };
    let detector = match options.mode {
        Mode::Stub => {
            eprintln!("kill-latency: starting a stub detector that orders every reader killed");
            Detector::Stub(start_stub().await)
        }
        Mode::Kill | Mode::Delete => {
            eprintln!("kill-latency: starting moto and the detector under the emulator");
            let endpoint = cluster_api
                .as_ref()
                .map(|api| kubernetes_endpoint(api, &cluster, &work.join("kube-ca.pem")));
            Detector::Emulator(Box::new(start_stack(runs, endpoint).await))
        }
    };
    let kube = KubeApi::start()
        .await
        .expect("the Kubernetes API stand-in starts");
    kube.add_pod(irsa_pod_on(NODE, &pod_uid, &container_id));

    let kubeconfig = work.join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig).unwrap();
    let sandbox = Sandbox {
        kubelet_root: work.join("kubelet"),
        pod_uid,
        container_id,
    };
    check(
        &sandbox.script("setup").output().unwrap(),
        "pod-sandbox.sh setup",
    );

    let agent_log = log_dir().join(format!("agent-{cluster}.log"));
    let mut command = Command::new(AGENT);
    command
        .args(["--sink", &detector.url()])
        .args(["--cluster", &cluster])
        .args(["--node-name", NODE])
        .arg("--kubelet-root")
        .arg(&sandbox.kubelet_root)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--region", REGION])
        .envs(detector.client_env())
        .env("RUST_LOG", "info");
    let agent = GuardedChild::spawn("tokenguard-agent", &command, &agent_log)
        .expect("tokenguard-agent starts");
    wait_for(START_TIMEOUT, "the agent to watch pods", || {
        fs::read_to_string(&agent_log).is_ok_and(|log| log.contains("watching pods of this node"))
    });
    // Kill mode learns a familiar reader in each run's own workload.
    if let (Detector::Emulator(stack), Some(_)) = (&detector, &cluster_api) {
        learn_familiar_reader(stack, &sandbox, &work, &cluster, DEPLOYMENT).await;
    }

    let detector_log = match &detector {
        Detector::Emulator(stack) => stack.emulator().log().display().to_string(),
        Detector::Stub(_) => "-".to_owned(),
    };
    let this = std::env::current_exe().unwrap();
    let mut latencies = Vec::new();
    for run in 0..WARMUP_RUNS + runs {
        let reader = work.join(format!("reader-{run}"));
        fs::hard_link(&this, &reader).unwrap();
        let latency = match (&detector, &cluster_api) {
            (Detector::Stub(_), _) => {
                let latency = tokio::task::block_in_place(|| kill_latency(&sandbox, &reader));
                tokio::time::sleep(options.gap).await;
                latency
            }
            (Detector::Emulator(stack), None) => {
                let workload = format!("bench-{run}");
                let kubelet_root = &sandbox.kubelet_root;
                let pod = RunPod::add(&seed, run, kubelet_root, &kube, None, Some(&workload));
                // The agent's pod watch learns of the pod within
                // milliseconds; a read before that would have no workload.
                tokio::time::sleep(POD_WATCH_DELAY).await;
                learn_familiar_reader(stack, &pod.sandbox, &work, &cluster, &workload).await;
                tokio::time::sleep(options.gap).await;
                let latency = tokio::task::block_in_place(|| kill_latency(&pod.sandbox, &reader));
                pod.remove(&kube, None);
                latency
            }
            (Detector::Emulator(_), Some(api)) => {
                let pod = RunPod::add(&seed, run, &sandbox.kubelet_root, &kube, Some(api), None);
                tokio::time::sleep(options.gap).await;
                let latency = tokio::task::block_in_place(|| {
                    delete_latency(&pod.sandbox, &reader, api, &pod.name)
                });
                pod.remove(&kube, Some(api));
                latency
            }
        };
        let latency = latency.unwrap_or_else(|message| {
            panic!(
                "run {run}: {message}; agent log {}, detector log {detector_log}",
                agent_log.display()
            )
        });
        if run >= WARMUP_RUNS {
            latencies.push(latency);
        }
    }

    drop(agent);
    let teardown = sandbox.script("teardown").output().unwrap();
    check(&teardown, "pod-sandbox.sh teardown");
    let _ = fs::remove_dir_all(&work);
    report(&mut latencies, options);
    if let Some(api) = &cluster_api {
        report_api_requests(api, WARMUP_RUNS + runs);
    }
}

/// Starts the detector under the emulator, with the fixture pod's namespace
/// in enforce mode and a containment budget above the runs, since each kill
/// or delete takes one action from the cluster's hourly budget.
///
/// With `endpoint`, a `TOKENGUARD_KUBERNETES_ENDPOINTS` entry, the detector
/// deletes the pod of each unfamiliar reader through that API and orders no
/// kill and no quarantine.
async fn start_stack(runs: usize, endpoint: Option<String>) -> DetectorStack {
    let budget = (runs + WARMUP_RUNS + 10).to_string();
    let mut extra_env = vec![
        (
            "TOKENGUARD_CONTAINMENT_MODES",
            format!("{NAMESPACE}=enforce"),
        ),
        ("TOKENGUARD_CONTAINMENT_RATE_LIMIT", budget),
    ];
    if let Some(endpoint) = endpoint {
        extra_env.extend([
            (
                "TOKENGUARD_CONTAINMENT_ACTIONS",
                "kill=never,quarantine=never,delete=medium".to_owned(),
            ),
            ("TOKENGUARD_KUBERNETES_ENDPOINTS", endpoint),
        ]);
    }
    DetectorStack::start_with(StackOptions {
        learning_period: "0s".to_owned(),
        extra_env,
        profile: Profile::Release,
        ..StackOptions::default()
    })
    .await
    .expect("the detector stack starts")
}

/// Writes the CA of `api` to `ca_file` and returns the
/// `TOKENGUARD_KUBERNETES_ENDPOINTS` entry that points `cluster` at `api`.
fn kubernetes_endpoint(api: &KubeTls, cluster: &str, ca_file: &Path) -> String {
    fs::write(ca_file, api.ca_pem()).unwrap_or_else(|error| {
        panic!("failed to write the CA file {}: {error}", ca_file.display())
    });
    format!("{cluster}={}|{}", api.url(), ca_file.display())
}

/// Starts the TLS stand-in of the Kubernetes API on `servers`. It checks
/// that the detector's tokens are signed for `cluster` with the fake key,
/// grants what containment needs in [`NAMESPACE`] and serves the fixture
/// pod's ReplicaSet and Deployment. Both report 3 ready pods, so deleting
/// one leaves more than the detector's default minimum of 1 ready pod.
async fn start_cluster_api(servers: &tokio::runtime::Handle, cluster: &str) -> KubeTls {
    let kube = servers
        .spawn(KubeTls::start())
        .await
        .expect("the API stand-in task runs")
        .expect("the API stand-in starts");
    kube.verify_signatures(cluster, FAKE_KEY, FAKE_KEY);
    kube.grant_containment(NAMESPACE);
    kube.add(
        Resource::ReplicaSets,
        json!({
            "metadata": {
                "name": REPLICA_SET,
                "namespace": NAMESPACE,
                "uid": "5e0c2f1a-8b7d-4c3e-9a6f-1d2e3f4a5b6c",
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "Deployment", "name": DEPLOYMENT,
                    "uid": "0d9e8f7a-6b5c-4d3e-8f2a-1b0c9d8e7f6a", "controller": true,
                    "blockOwnerDeletion": true
                }]
            },
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app.kubernetes.io/name": DEPLOYMENT}}
            },
            "status": {"replicas": 3, "readyReplicas": 3}
        }),
    );
    kube.add(
        Resource::Deployments,
        json!({
            "metadata": {
                "name": DEPLOYMENT,
                "namespace": NAMESPACE,
                "uid": "0d9e8f7a-6b5c-4d3e-8f2a-1b0c9d8e7f6a"
            },
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app.kubernetes.io/name": DEPLOYMENT}}
            },
            "status": {"replicas": 3, "readyReplicas": 3}
        }),
    );
    kube
}

/// A pod of the fixture's ReplicaSet that one run of delete mode reads the
/// token in and deletes.
struct RunPod {
    name: String,
    sandbox: Sandbox,
}

impl RunPod {
    /// Adds pod `run` to the agent's pod-watch stand-in `pods` and, in
    /// delete mode, to the detector's API stand-in `api`, with a new uid,
    /// name and container id on the agent's node, and lays out its sandbox
    /// under `kubelet_root`. With `workload`, the pod belongs to a
    /// Deployment and service account of that name instead of the
    /// fixture's.
    fn add(
        seed: &str,
        run: usize,
        kubelet_root: &Path,
        pods: &KubeApi,
        api: Option<&KubeTls>,
        workload: Option<&str>,
    ) -> RunPod {
        let digest = Sha256::digest(format!("pod-{seed}-{run}"));
        let suffix: String = digest[..5]
            .iter()
            .map(|byte| {
                let index = usize::from(*byte) % POD_NAME_ALPHABET.len();
                char::from(POD_NAME_ALPHABET[index])
            })
            .collect();
        let deployment = workload.unwrap_or(DEPLOYMENT);
        let replica_set = format!("{deployment}-{POD_TEMPLATE_HASH}");
        let name = format!("{replica_set}-{suffix}");
        let sandbox = Sandbox {
            kubelet_root: kubelet_root.to_owned(),
            pod_uid: pod_uid(&hex::encode(digest)),
            container_id: hex::encode(Sha256::digest(format!("container-{seed}-{run}"))),
        };

        let mut pod = irsa_pod_on(NODE, &sandbox.pod_uid, &sandbox.container_id);
        pod["metadata"]["name"] = Value::from(name.as_str());
        if let Some(workload) = workload {
            pod["metadata"]["ownerReferences"][0]["name"] = Value::from(replica_set);
            pod["metadata"]["labels"]["app.kubernetes.io/name"] = Value::from(workload);
            pod["spec"]["serviceAccountName"] = Value::from(workload);
        }
        pods.add_pod(pod.clone());
        if let Some(api) = api {
            api.add_pod(pod);
        }
        check(
            &sandbox.script("setup").output().unwrap(),
            "pod-sandbox.sh setup",
        );
        RunPod { name, sandbox }
    }

    /// Removes the pod from both stand-ins, as the kubelet does at the end
    /// of the grace period, and tears down its sandbox. Its reader must have
    /// exited, so that the sandbox's cgroup is empty.
    fn remove(self, pods: &KubeApi, api: Option<&KubeTls>) {
        pods.delete_pod(&self.sandbox.pod_uid);
        if let Some(api) = api {
            api.remove(Resource::Pods, NAMESPACE, &self.name);
        }
        check(
            &self.sandbox.script("teardown").output().unwrap(),
            "pod-sandbox.sh teardown",
        );
    }
}

/// Has the process of Deployment `deployment` read the token in `sandbox`
/// and waits until the detector learned it. The first reader of a workload
/// is learned silently, so the readers after it are unfamiliar.
async fn learn_familiar_reader(
    stack: &DetectorStack,
    sandbox: &Sandbox,
    work: &Path,
    cluster: &str,
    deployment: &str,
) {
    let familiar = work.join("payments-api");
    fs::copy("/bin/cat", &familiar).unwrap();
    check(
        &sandbox.exec(&familiar, &[TOKEN]).output().unwrap(),
        "the familiar read",
    );
    let familiar_exe = familiar.to_str().unwrap().to_owned();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let values = stack.baseline_values(cluster).await.unwrap();
        let learned = values.iter().any(|value| {
            value.exe == familiar_exe && value.scope_key.split('/').any(|part| part == deployment)
        });
        if learned {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the detector did not learn {familiar_exe}; detector log {}",
            stack.emulator().log().display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Destination of the agent's events.
enum Detector {
    /// Boxed, because the stack is large beside the stub.
    Emulator(Box<DetectorStack>),
    /// Address of the stub server.
    Stub(SocketAddr),
}

impl Detector {
    fn url(&self) -> String {
        match self {
            Detector::Emulator(stack) => stack.function_url(),
            Detector::Stub(address) => format!("http://{address}/"),
        }
    }

    /// Environment of the agent: fake credentials to sign with, and no
    /// instance metadata lookups.
    fn client_env(&self) -> Vec<(&'static str, String)> {
        match self {
            Detector::Emulator(stack) => stack.moto().client_env(),
            Detector::Stub(_) => vec![
                ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
                ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
                ("AWS_REGION", REGION.to_owned()),
                ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ],
        }
    }
}

/// Starts a server on 127.0.0.1 that accepts every event of a batch and
/// orders its reader killed, and returns its address.
async fn start_stub() -> SocketAddr {
    async fn respond(body: axum::body::Bytes) -> axum::response::Response {
        use axum::response::IntoResponse;

        let Ok(batch) = serde_json::from_slice::<Batch>(&body) else {
            return (axum::http::StatusCode::BAD_REQUEST, "invalid batch").into_response();
        };
        let outcomes = batch
            .events
            .iter()
            .map(|event| {
                let finding_id = format!("tg-stub-{}", event.process.pid);
                let mut outcome = Outcome::accepted(&event.event_id, Some(finding_id));
                outcome.order = Some(AgentOrder::Kill {
                    pid: event.process.pid,
                    start_time: event.process.start_time,
                });
                outcome
            })
            .collect();
        let response = BatchResponse {
            schema: SCHEMA_VERSION,
            outcomes,
        };
        axum::Json(response).into_response()
    }

    let app = axum::Router::new().route("/", axum::routing::post(respond));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// A reader started in a pod sandbox, with the time it printed before its
/// open of the token.
struct Reader {
    child: std::process::Child,
    pid: u32,
    stdout: BufReader<std::process::ChildStdout>,
    /// The first line the reader printed.
    line: String,
    /// That line as `CLOCK_MONOTONIC` nanoseconds, when it is one.
    opened_at: Option<u64>,
}

impl Reader {
    /// Starts `reader` in the pod of `sandbox` and reads the time it prints
    /// before it opens the token.
    fn start(sandbox: &Sandbox, reader: &Path) -> Result<Reader, String> {
        let mut child = sandbox
            .exec(reader, &[READER_FLAG, TOKEN])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|error| format!("failed to start {}: {error}", reader.display()))?;
        let pid = child.id();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let opened_at = match stdout.read_line(&mut line) {
            Ok(_) => line.trim().parse::<u64>().ok(),
            Err(_) => None,
        };
        Ok(Reader {
            child,
            pid,
            stdout,
            line,
            opened_at,
        })
    }

    /// Returns the time of the open, or an error that quotes what the
    /// reader printed instead.
    fn opened_at(&self) -> Result<u64, String> {
        self.opened_at.ok_or_else(|| {
            format!(
                "reader {} printed {:?}, expected the time of its open",
                self.pid, self.line
            )
        })
    }
}

/// Starts `reader` in the pod and returns the time from its open of the
/// token to its death by SIGKILL.
fn kill_latency(sandbox: &Sandbox, reader: &Path) -> Result<Duration, String> {
    let started = Reader::start(sandbox, reader)?;
    let opened_at = started.opened_at();
    let Reader {
        mut child,
        pid,
        mut stdout,
        ..
    } = started;

    // A thread blocked in waitpid notices the exit at once, without polling
    // for CPU time that the agent and the detector need.
    let (sender, receiver) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = sender.send((status, monotonic_ns()));
    });

    let exit = receiver.recv_timeout(RUN_TIMEOUT);
    if exit.is_err() {
        // The child is not reaped yet, so its pid is still its own.
        let raw_pid = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
        if let Some(raw_pid) = raw_pid {
            let _ = kill_process(raw_pid, Signal::KILL);
        }
    }
    let _ = waiter.join();

    let Ok((status, exited_at)) = exit else {
        return Err(format!(
            "reader {pid} was not killed within {}s",
            RUN_TIMEOUT.as_secs()
        ));
    };
    let status = status.map_err(|error| format!("failed to wait for reader {pid}: {error}"))?;
    if status.signal() != Some(libc::SIGKILL) {
        let mut rest = String::new();
        let _ = stdout.read_to_string(&mut rest);
        return Err(format!(
            "reader {pid} ended with {status}, not by SIGKILL: {}",
            rest.trim()
        ));
    }
    Ok(Duration::from_nanos(exited_at.saturating_sub(opened_at?)))
}

/// Starts `reader` in the pod of `sandbox` and returns the time from its
/// open of the token to the arrival of the DELETE of pod `pod` at `api`.
/// The reader is killed before this returns.
fn delete_latency(
    sandbox: &Sandbox,
    reader: &Path,
    api: &KubeTls,
    pod: &str,
) -> Result<Duration, String> {
    let mut started = Reader::start(sandbox, reader)?;
    let pid = started.pid;
    let delete = started
        .opened_at()
        .and_then(|opened_at| Ok((opened_at, wait_for_delete(api, pod)?)));
    // The detector orders no kill in this mode, so the reader still runs
    // unless it failed. It is this harness's child and not reaped yet, so
    // its pid is still its own.
    let running = matches!(started.child.try_wait(), Ok(None));
    let _ = started.child.kill();
    let _ = started.child.wait();

    let (opened_at, received) = delete?;
    if !running {
        return Err(format!(
            "reader {pid} exited before the harness stopped it: expected no kill order with \
             kill=never"
        ));
    }
    let deleted_at = monotonic_ns_at(received);
    Ok(Duration::from_nanos(deleted_at.saturating_sub(opened_at)))
}

/// Waits until the stand-in has responded to the DELETE of pod `pod`, and
/// returns when that DELETE arrived. A status other than 200 is an error.
fn wait_for_delete(api: &KubeTls, pod: &str) -> Result<Instant, String> {
    let path = format!("/api/v1/namespaces/{NAMESPACE}/pods/{pod}");
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        let delete = api
            .requests()
            .into_iter()
            .find(|request| request.method == "DELETE" && request.path == path);
        if let Some(request) = delete
            && let Some(status) = request.status
        {
            if status != 200 {
                return Err(format!(
                    "the DELETE of pod {NAMESPACE}/{pod} returned HTTP {status}, expected 200"
                ));
            }
            return Ok(request.received);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no DELETE of pod {NAMESPACE}/{pod} reached the API stand-in within {}s",
                RUN_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Prints the nearest-rank percentiles of `latencies` in milliseconds.
fn report(latencies: &mut [Duration], options: &Options) {
    let mut slowest: Vec<(Duration, usize)> = latencies
        .iter()
        .enumerate()
        .map(|(index, latency)| (*latency, index + WARMUP_RUNS))
        .collect();
    slowest.sort_by(|a, b| b.cmp(a));
    latencies.sort();
    let count = latencies.len();
    let rank = |percent: usize| nearest_rank(latencies, percent);
    let millis = |duration: Duration| duration.as_secs_f64() * 1000.0;
    let mean = latencies.iter().sum::<Duration>() / u32::try_from(count).unwrap_or(u32::MAX);
    let (path, spacing) = match options.mode {
        Mode::Kill | Mode::Stub => ("open() to SIGKILL", "after each kill"),
        Mode::Delete => (
            "open() to the pod's DELETE at the API stand-in",
            "between each pod's creation and its reader",
        ),
    };
    println!(
        "{path} over {count} runs ({WARMUP_RUNS} warm-up runs left out, \
         {} ms {spacing}): min {:.1} ms, p50 {:.1} ms, mean {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        options.gap.as_millis(),
        millis(latencies[0]),
        millis(rank(50)),
        millis(mean),
        millis(rank(90)),
        millis(rank(99)),
        millis(latencies[count - 1]),
    );
    let slowest: Vec<String> = slowest
        .iter()
        .take(SLOWEST_SHOWN)
        .map(|(latency, run)| format!("run {run} {:.1} ms", millis(*latency)))
        .collect();
    println!(
        "slowest (runs count from 0, warm-up included): {}",
        slowest.join(", ")
    );
}

/// Prints how many requests of each method and resource reached the API
/// stand-in and how many got a 401 response, which shows the calls the
/// detector made before each DELETE. Then prints the percentiles of the
/// time from a pod's first GET to its DELETE over the measured runs.
fn report_api_requests(api: &KubeTls, runs: usize) {
    let requests = api.requests();
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for request in &requests {
        // Paths end in `<resource>/<name>`, such as `pods/payments-api-…`.
        let resource = request.path.rsplit('/').nth(1).unwrap_or("?");
        *counts
            .entry((request.method.clone(), resource.to_owned()))
            .or_default() += 1;
    }
    let counts: Vec<String> = counts
        .iter()
        .map(|((method, resource), count)| format!("{method} {resource} {count}"))
        .collect();
    let unauthorized = requests
        .iter()
        .filter(|request| request.status == Some(401))
        .count();
    println!(
        "API stand-in requests over {runs} runs, warm-up runs included: {}; {unauthorized} \
         got 401",
        counts.join(", ")
    );

    let mut spans = pod_get_to_delete(&requests);
    if spans.len() > WARMUP_RUNS {
        let mut spans = spans.split_off(WARMUP_RUNS);
        spans.sort();
        let count = spans.len();
        let millis = |duration: Duration| duration.as_secs_f64() * 1000.0;
        println!(
            "first GET of a pod to its DELETE, at the API stand-in, over {count} runs: \
             p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            millis(nearest_rank(&spans, 50)),
            millis(nearest_rank(&spans, 99)),
            millis(spans[count - 1]),
        );
    }
}

/// Returns, for each DELETE of a pod in order of arrival, the time from the
/// first GET of that pod to the DELETE. The span covers the detector's
/// checks of the pod and its controllers and the budget update in moto.
fn pod_get_to_delete(requests: &[RecordedRequest]) -> Vec<Duration> {
    let pods = format!("/api/v1/namespaces/{NAMESPACE}/pods/");
    let mut first_get: HashMap<&str, Instant> = HashMap::new();
    let mut spans = Vec::new();
    for request in requests {
        let Some(pod) = request.path.strip_prefix(&pods) else {
            continue;
        };
        match request.method.as_str() {
            "GET" => {
                first_get.entry(pod).or_insert(request.received);
            }
            "DELETE" => {
                if let Some(got) = first_get.get(pod) {
                    spans.push(request.received.saturating_duration_since(*got));
                }
            }
            _ => {}
        }
    }
    spans
}

/// Returns the nearest-rank `percent` percentile of `sorted`, which must not
/// be empty.
fn nearest_rank(sorted: &[Duration], percent: usize) -> Duration {
    sorted[(sorted.len() * percent).div_ceil(100).max(1) - 1]
}

/// A pod laid out by `scripts/pod-sandbox.sh`.
struct Sandbox {
    kubelet_root: PathBuf,
    pod_uid: String,
    container_id: String,
}

impl Sandbox {
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

    /// Builds the command that runs `program args` in the pod.
    fn exec(&self, program: &Path, args: &[&str]) -> Command {
        let mut command = self.script("exec");
        command
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null());
        command
    }
}

fn check(output: &Output, step: &str) {
    assert!(
        output.status.success(),
        "{step} failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn wait_for(timeout: Duration, awaited: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !probe() {
        assert!(
            Instant::now() < deadline,
            "timed out after {}s waiting for {awaited}",
            timeout.as_secs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Takes the lock of the kernel tests exclusively, so that no test's token
/// opens reach this agent during the runs.
fn kernel_tests_lock() -> fs::File {
    let path = std::env::temp_dir().join("tokenguard-kernel-tests.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|error| panic!("failed to open lock file {}: {error}", path.display()));
    file.lock()
        .unwrap_or_else(|error| panic!("failed to lock {}: {error}", path.display()));
    file
}
