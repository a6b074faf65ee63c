//! The HTTP sink against a local server that records requests and responds
//! from a script.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use sha2::{Digest, Sha256};
use tokenguard_agent::Metrics;
use tokenguard_agent::kill::KillOrders;
use tokenguard_agent::procfs::ProcFs;
use tokenguard_agent::sink::{HttpSink, HttpSinkConfig};
use tokenguard_core::conformance::sample_read;
use tokenguard_schema::{
    ActionResult, AgentOrder, Batch, BatchResponse, MAX_ARGS_BYTES, MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS, Node, Outcome, OutcomeStatus, SCHEMA_VERSION, TokenRead,
};

/// The server's response to one request.
#[derive(Debug, Clone)]
enum Answer {
    /// 200 with an outcome per event: `failed` for exes in the list, else accepted.
    Outcomes {
        delay: Duration,
        failed_exes: Vec<String>,
    },
    Status(u16, &'static str),
    /// 200 with every event accepted with finding `tg-<index>` and an order
    /// to kill `target`, or the event's reader when `None`.
    Kill {
        target: Option<(u32, u64)>,
    },
}

fn accept() -> Answer {
    Answer::Outcomes {
        delay: Duration::ZERO,
        failed_exes: Vec::new(),
    }
}

#[derive(Debug, Clone)]
struct Request {
    headers: HeaderMap,
    body: Bytes,
}

impl Request {
    fn batch(&self) -> Batch {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Debug, Default)]
struct Recorder {
    script: Mutex<VecDeque<Answer>>,
    requests: Mutex<Vec<Request>>,
}

impl Recorder {
    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

async fn detector(
    State(recorder): State<Arc<Recorder>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    recorder.requests.lock().unwrap().push(Request {
        headers,
        body: body.clone(),
    });
    // The detector's own limit, checked before any scripted response.
    if body.len() > MAX_BATCH_BYTES {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
    }
    let answer = recorder
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(accept);
    match answer {
        Answer::Status(code, text) => {
            (StatusCode::from_u16(code).unwrap(), text.to_owned()).into_response()
        }
        Answer::Outcomes { delay, failed_exes } => {
            tokio::time::sleep(delay).await;
            let batch: Batch = serde_json::from_slice(&body).unwrap();
            let outcomes = batch
                .events
                .iter()
                .map(|event| {
                    if failed_exes.contains(&event.process.exe) {
                        Outcome::with_status(
                            &event.event_id,
                            OutcomeStatus::Failed,
                            Some("baseline store throttled".to_owned()),
                        )
                    } else {
                        Outcome::accepted(&event.event_id, None)
                    }
                })
                .collect();
            let response = BatchResponse {
                schema: 1,
                outcomes,
            };
            axum::Json(response).into_response()
        }
        Answer::Kill { target } => {
            let batch: Batch = serde_json::from_slice(&body).unwrap();
            let outcomes = batch
                .events
                .iter()
                .enumerate()
                .map(|(index, event)| {
                    let (pid, start_time) =
                        target.unwrap_or((event.process.pid, event.process.start_time));
                    let mut outcome =
                        Outcome::accepted(&event.event_id, Some(format!("tg-{index}")));
                    outcome.order = Some(AgentOrder::Kill { pid, start_time });
                    outcome
                })
                .collect();
            let response = BatchResponse {
                schema: 1,
                outcomes,
            };
            axum::Json(response).into_response()
        }
    }
}

async fn start_detector(script: Vec<Answer>) -> (SocketAddr, Arc<Recorder>) {
    let recorder = Arc::new(Recorder {
        script: Mutex::new(script.into()),
        requests: Mutex::new(Vec::new()),
    });
    let app = axum::Router::new()
        .route("/", axum::routing::post(detector))
        .layer(DefaultBodyLimit::disable())
        .with_state(recorder.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, recorder)
}

fn sink(addr: SocketAddr, tune: impl FnOnce(&mut HttpSinkConfig)) -> (HttpSink, Arc<Metrics>) {
    let credentials = Credentials::new(
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        Some("fake-session-token".to_owned()),
        None,
        "test",
    );
    let mut config = HttpSinkConfig::new(
        format!("http://{addr}/").parse().unwrap(),
        "eu-west-1".to_owned(),
        node(),
        SharedCredentialsProvider::new(credentials),
    );
    config.initial_backoff = Duration::from_millis(50);
    config.max_backoff = Duration::from_millis(200);
    config.max_attempts = 4;
    tune(&mut config);
    let metrics = Arc::new(Metrics::default());
    (HttpSink::start(config, metrics.clone()).unwrap(), metrics)
}

fn node() -> Node {
    Node {
        name: "ip-10-0-12-34.eu-west-1.compute.internal".to_owned(),
        boot_id: "5f1c6a7e-0b7e-4c41-9d0a-3f3e2a6b9c10".to_owned(),
        agent_version: Some("0.1.0".to_owned()),
        hook: None,
    }
}

/// Size in bytes of a body of [`node`] without events.
fn envelope_size() -> usize {
    let envelope = Batch {
        schema: SCHEMA_VERSION,
        node: node(),
        events: Vec::new(),
        reports: Vec::new(),
    };
    serde_json::to_vec(&envelope).unwrap().len()
}

fn read(id: u32, exe: &str) -> TokenRead {
    let mut read = sample_read(exe, exe.rsplit('/').next().unwrap());
    read.event_id = format!("5f1c6a7e-0b7e-4c41-9d0a-3f3e2a6b9c10:{id}");
    read
}

async fn wait_for_requests(recorder: &Recorder, count: usize) {
    for _ in 0..200 {
        if recorder.requests().len() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "expected {count} requests, got {}",
        recorder.requests().len()
    );
}

#[tokio::test]
async fn posts_signed_for_lambda() {
    let (addr, recorder) = start_detector(vec![]).await;
    let (sink, metrics) = sink(addr, |_| {});
    sink.submit(read(1, "/usr/bin/python3"));
    sink.close().await;

    let requests = recorder.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    let authorization = request.header("authorization").expect("SigV4 header");
    assert!(authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/"));
    assert!(
        authorization.contains("/eu-west-1/lambda/aws4_request"),
        "{authorization}"
    );
    assert!(authorization.contains("SignedHeaders="), "{authorization}");
    let body_hash = hex::encode(Sha256::digest(&request.body));
    assert_eq!(
        request.header("x-amz-content-sha256"),
        Some(body_hash.as_str())
    );
    assert_eq!(
        request.header("x-amz-security-token"),
        Some("fake-session-token")
    );
    assert!(request.header("x-amz-date").is_some());
    assert_eq!(request.header("content-type"), Some("application/json"));

    let batch = request.batch();
    assert_eq!(batch.schema, 1);
    assert_eq!(batch.node.boot_id, "5f1c6a7e-0b7e-4c41-9d0a-3f3e2a6b9c10");
    assert_eq!(batch.events.len(), 1);
    assert_eq!(Metrics::get(&metrics.events_posted), 1);
}

#[tokio::test]
async fn coalesces_while_post_in_flight() {
    let slow = Answer::Outcomes {
        delay: Duration::from_millis(500),
        failed_exes: Vec::new(),
    };
    let (addr, recorder) = start_detector(vec![slow]).await;
    let (sink, metrics) = sink(addr, |_| {});
    sink.submit(read(1, "/usr/bin/python3"));
    wait_for_requests(&recorder, 1).await;
    for id in 2..=6 {
        sink.submit(read(id, "/usr/bin/python3"));
    }
    sink.close().await;

    let requests = recorder.requests();
    assert_eq!(requests.len(), 2, "one follow-up post after the slow one");
    let follow_up = requests[1].batch();
    assert_eq!(follow_up.events.len(), 1);
    assert_eq!(follow_up.events[0].count, 5);
    assert_eq!(
        follow_up.events[0].event_id, "5f1c6a7e-0b7e-4c41-9d0a-3f3e2a6b9c10:2",
        "the folded event keeps the first event id"
    );
    assert_eq!(Metrics::get(&metrics.events_coalesced), 4);
}

#[tokio::test]
async fn retries_after_503() {
    let (addr, recorder) = start_detector(vec![Answer::Status(503, "Service Unavailable")]).await;
    let (sink, metrics) = sink(addr, |_| {});
    sink.submit(read(1, "/usr/bin/python3"));
    sink.close().await;

    let requests = recorder.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].batch().events, requests[1].batch().events);
    assert_eq!(Metrics::get(&metrics.post_failures), 1);
    assert_eq!(Metrics::get(&metrics.events_posted), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn only_failed_events_resent() {
    let first = Answer::Outcomes {
        delay: Duration::ZERO,
        failed_exes: vec!["/usr/bin/curl".to_owned()],
    };
    let (addr, recorder) = start_detector(vec![first]).await;
    let (sink, metrics) = sink(addr, |_| {});
    // On a current-thread runtime the sender runs only at the next await,
    // so the three reads go out in one batch.
    sink.submit(read(1, "/usr/bin/python3"));
    sink.submit(read(2, "/usr/bin/curl"));
    sink.submit(read(3, "/bin/sh"));
    sink.close().await;

    let requests = recorder.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].batch().events.len(), 3);
    let resent = requests[1].batch().events;
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].process.exe, "/usr/bin/curl");
    assert_eq!(Metrics::get(&metrics.events_posted), 3);
}

#[tokio::test]
async fn bad_request_not_retried() {
    let rejected = Answer::Status(400, r#"{"error":"invalid batch: missing field `node`"}"#);
    let (addr, recorder) = start_detector(vec![rejected]).await;
    let (sink, metrics) = sink(addr, |_| {});
    sink.submit(read(1, "/usr/bin/python3"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    sink.close().await;

    assert_eq!(recorder.requests().len(), 1);
    assert_eq!(Metrics::get(&metrics.events_dropped_undeliverable), 1);
    assert_eq!(Metrics::get(&metrics.post_failures), 0);
}

#[tokio::test]
async fn gives_up_after_max_attempts() {
    let script = vec![Answer::Status(500, "boom"); 10];
    let (addr, recorder) = start_detector(script).await;
    let (sink, metrics) = sink(addr, |config| config.max_attempts = 3);
    sink.submit(read(1, "/usr/bin/python3"));
    sink.close().await;

    assert_eq!(recorder.requests().len(), 3);
    assert_eq!(Metrics::get(&metrics.events_dropped_undeliverable), 1);
}

#[tokio::test]
async fn full_queue_drops_and_counts() {
    let slow = Answer::Outcomes {
        delay: Duration::from_millis(300),
        failed_exes: Vec::new(),
    };
    let (addr, recorder) = start_detector(vec![slow]).await;
    let (sink, metrics) = sink(addr, |config| config.max_queue = 2);
    sink.submit(read(1, "/usr/bin/python3"));
    wait_for_requests(&recorder, 1).await;
    sink.submit(read(2, "/bin/a"));
    sink.submit(read(3, "/bin/b"));
    sink.submit(read(4, "/bin/c"));
    sink.close().await;

    assert_eq!(Metrics::get(&metrics.events_dropped_queue_full), 1);
    assert_eq!(Metrics::get(&metrics.events_posted), 3);
}

/// Builds a read by process `id`, so reads do not fold, with `args` of the
/// maximum size for the reader and its parent.
fn long_read(id: u32) -> TokenRead {
    let mut read = read(id, "/usr/bin/python3");
    read.process.pid = id;
    read.process.args = vec!["x".repeat(MAX_ARGS_BYTES)];
    if let Some(parent) = read.process.parent.as_mut() {
        parent.args = vec!["y".repeat(MAX_ARGS_BYTES)];
    }
    read
}

#[tokio::test(flavor = "current_thread")]
async fn batches_split_by_body_size() {
    let (addr, recorder) = start_detector(vec![]).await;
    let (sink, metrics) = sink(addr, |_| {});
    // About 8 KiB each, so 500 events exceed the body limit.
    for id in 1..=600 {
        sink.submit(long_read(id));
    }
    sink.close().await;

    let requests = recorder.requests();
    assert!(requests.len() >= 2, "{} requests", requests.len());
    let mut ids = Vec::new();
    for request in &requests {
        assert!(
            request.body.len() <= MAX_BATCH_BYTES,
            "body of {} bytes",
            request.body.len()
        );
        let batch = request.batch();
        assert!(batch.events.len() <= MAX_BATCH_EVENTS);
        ids.extend(batch.events.into_iter().map(|event| event.process.pid));
    }
    assert!(
        requests[0].batch().events.len() < MAX_BATCH_EVENTS,
        "the first batch is cut by size, not by count"
    );
    assert_eq!(
        ids,
        (1..=600).collect::<Vec<u32>>(),
        "each event once, in order"
    );
    assert_eq!(Metrics::get(&metrics.events_posted), 600);
    assert_eq!(Metrics::get(&metrics.events_dropped_undeliverable), 0);
}

/// Builds a read by process `id` running `exe` whose JSON encoding has
/// exactly `size` bytes.
fn sized_read(id: u32, exe: &str, size: usize) -> TokenRead {
    let mut read = read(id, exe);
    read.process.pid = id;
    read.process.args = vec![String::new()];
    let empty_arg_size = serde_json::to_vec(&read).unwrap().len();
    read.process.args = vec!["x".repeat(size - empty_arg_size)];
    assert_eq!(serde_json::to_vec(&read).unwrap().len(), size);
    read
}

#[tokio::test(flavor = "current_thread")]
async fn body_limit_counts_envelope() {
    let envelope = envelope_size();
    // Ten events with their nine commas fit the limit alone, but not together
    // with the envelope around them.
    let size = (MAX_BATCH_BYTES - envelope / 2 - 9) / 10;
    assert!(10 * size + 9 <= MAX_BATCH_BYTES);
    assert!(envelope + 10 * size + 9 > MAX_BATCH_BYTES);

    let (addr, recorder) = start_detector(vec![]).await;
    let (sink, metrics) = sink(addr, |_| {});
    for id in 10..30 {
        sink.submit(sized_read(id, "/usr/bin/python3", size));
    }
    sink.close().await;

    let requests = recorder.requests();
    for request in &requests {
        assert!(
            request.body.len() <= MAX_BATCH_BYTES,
            "body of {} bytes",
            request.body.len()
        );
    }
    let counts: Vec<usize> = requests.iter().map(|r| r.batch().events.len()).collect();
    assert_eq!(counts, [9, 9, 2]);
    assert_eq!(Metrics::get(&metrics.events_posted), 20);
}

#[tokio::test(flavor = "current_thread")]
async fn retried_and_queued_share_body_limit() {
    let failed = Answer::Outcomes {
        delay: Duration::from_millis(300),
        failed_exes: vec!["/usr/bin/curl".to_owned()],
    };
    let (addr, recorder) = start_detector(vec![failed]).await;
    let (sink, metrics) = sink(addr, |_| {});
    // The retried event, four queued ones and the four commas between them
    // are one byte over the room left by the envelope.
    let room = MAX_BATCH_BYTES - envelope_size();
    let size = (room + 1 - 4) / 5;
    let last_size = room + 1 - 4 - 4 * size;
    sink.submit(sized_read(10, "/usr/bin/curl", size));
    wait_for_requests(&recorder, 1).await;
    for id in 11..14 {
        sink.submit(sized_read(id, "/usr/bin/python3", size));
    }
    sink.submit(sized_read(14, "/usr/bin/python3", last_size));
    sink.close().await;

    let requests = recorder.requests();
    for request in &requests {
        assert!(
            request.body.len() <= MAX_BATCH_BYTES,
            "body of {} bytes",
            request.body.len()
        );
    }
    let pids: Vec<Vec<u32>> = requests
        .iter()
        .map(|r| r.batch().events.iter().map(|e| e.process.pid).collect())
        .collect();
    assert_eq!(pids, [vec![10], vec![10, 11, 12, 13], vec![14]]);
    assert_eq!(Metrics::get(&metrics.events_posted), 5);
}

#[tokio::test(flavor = "current_thread")]
async fn batches_split_by_count() {
    let (addr, recorder) = start_detector(vec![]).await;
    let (sink, metrics) = sink(addr, |_| {});
    for id in 1..=600 {
        let mut read = read(id, "/usr/bin/python3");
        read.process.pid = id;
        sink.submit(read);
    }
    sink.close().await;

    let requests = recorder.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].batch().events.len(), MAX_BATCH_EVENTS);
    assert_eq!(requests[1].batch().events.len(), 100);
    assert_eq!(Metrics::get(&metrics.events_posted), 600);
}

#[tokio::test]
async fn oversized_event_dropped() {
    let (addr, recorder) = start_detector(vec![]).await;
    let (sink, metrics) = sink(addr, |_| {});
    let mut huge = read(1, "/usr/bin/python3");
    huge.process.args = vec!["x".repeat(MAX_BATCH_BYTES)];
    sink.submit(huge);
    sink.submit(read(2, "/bin/sh"));
    sink.close().await;

    let requests = recorder.requests();
    assert_eq!(requests.len(), 1);
    let events = requests[0].batch().events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].process.exe, "/bin/sh");
    assert_eq!(Metrics::get(&metrics.events_dropped_undeliverable), 1);
    assert_eq!(Metrics::get(&metrics.events_posted), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn payload_too_large_splits_batch() {
    let too_large = Answer::Status(413, "Request must be smaller than 6291456 bytes");
    let (addr, recorder) = start_detector(vec![too_large]).await;
    let (sink, metrics) = sink(addr, |_| {});
    for id in 1..=4 {
        let mut read = read(id, "/usr/bin/python3");
        read.process.pid = id;
        sink.submit(read);
    }
    sink.close().await;

    let requests = recorder.requests();
    let sizes: Vec<usize> = requests.iter().map(|r| r.batch().events.len()).collect();
    assert_eq!(sizes, [4, 2, 2]);
    assert_eq!(Metrics::get(&metrics.events_posted), 4);
    assert_eq!(Metrics::get(&metrics.events_dropped_undeliverable), 0);
}

#[tokio::test]
async fn payload_too_large_single_event_dropped() {
    let too_large = Answer::Status(413, "Request must be smaller than 6291456 bytes");
    let (addr, recorder) = start_detector(vec![too_large]).await;
    let (sink, metrics) = sink(addr, |_| {});
    sink.submit(read(1, "/usr/bin/python3"));
    wait_for_requests(&recorder, 1).await;
    sink.submit(read(2, "/bin/sh"));
    sink.close().await;

    let requests = recorder.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].batch().events[0].process.exe, "/bin/sh");
    assert_eq!(Metrics::get(&metrics.events_dropped_undeliverable), 1);
    assert_eq!(Metrics::get(&metrics.events_posted), 1);
    assert_eq!(Metrics::get(&metrics.post_failures), 0);
}

/// A `sleep` child for kill orders, killed when dropped if still running.
struct Sleeper {
    child: Child,
    pid: u32,
    start_time: u64,
}

impl Sleeper {
    fn start() -> Sleeper {
        let child = Command::new("sleep").arg("60").spawn().unwrap();
        let pid = child.id();
        let start_time = ProcFs::default().stat(pid).unwrap().start_time;
        Sleeper {
            child,
            pid,
            start_time,
        }
    }

    /// Builds a read of the token by this process.
    fn read(&self, id: u32) -> TokenRead {
        let mut read = read(id, "/usr/bin/sleep");
        read.process.pid = self.pid;
        read.process.start_time = self.start_time;
        read
    }

    /// Waits up to 10 seconds for the process to exit.
    async fn exit_status(&mut self) -> Option<ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn kill_order_carried_out_and_reported() {
    let mut sleeper = Sleeper::start();
    let (addr, recorder) = start_detector(vec![Answer::Kill { target: None }]).await;
    let (sink, metrics) = sink(addr, |_| {});
    sink.submit(sleeper.read(1));

    let status = sleeper.exit_status().await;
    assert_eq!(
        status.and_then(|status| status.signal()),
        Some(libc::SIGKILL),
        "exit of the ordered process: {status:?}"
    );
    // The report goes alone, since no event is waiting.
    wait_for_requests(&recorder, 2).await;
    sink.close().await;

    let requests = recorder.requests();
    assert_eq!(requests.len(), 2);
    let follow_up = requests[1].batch();
    assert!(follow_up.events.is_empty(), "{:?}", follow_up.events);
    assert_eq!(follow_up.reports.len(), 1);
    let report = &follow_up.reports[0];
    assert_eq!(report.finding_id, "tg-0");
    assert_eq!(
        report.order,
        AgentOrder::Kill {
            pid: sleeper.pid,
            start_time: sleeper.start_time
        }
    );
    assert_eq!(report.result, ActionResult::Killed);
    assert_eq!(report.detail, None);
    assert_eq!(metrics.orders(ActionResult::Killed), 1);
    assert_eq!(Metrics::get(&metrics.reports_sent), 1);
    assert_eq!(Metrics::get(&metrics.events_posted), 1);
}

#[tokio::test]
async fn ignored_kill_order_reported_disabled() {
    let mut sleeper = Sleeper::start();
    let (addr, recorder) = start_detector(vec![Answer::Kill { target: None }]).await;
    let (sink, metrics) = sink(addr, |config| config.kill_orders = KillOrders::Ignore);
    sink.submit(sleeper.read(1));
    wait_for_requests(&recorder, 2).await;
    sink.close().await;

    assert!(sleeper.is_running(), "an ignored order killed the process");
    let reports = recorder.requests()[1].batch().reports;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].result, ActionResult::Disabled);
    let detail = reports[0].detail.as_deref().unwrap_or_default();
    assert!(detail.contains("--kill-orders ignore"), "{detail}");
    assert_eq!(metrics.orders(ActionResult::Disabled), 1);
    assert_eq!(metrics.orders(ActionResult::Killed), 0);
}

#[tokio::test]
async fn order_for_other_process_rejected() {
    let mut sleeper = Sleeper::start();
    let target = Some((sleeper.pid, sleeper.start_time));
    let (addr, recorder) = start_detector(vec![Answer::Kill { target }]).await;
    let (sink, metrics) = sink(addr, |_| {});
    // The event's reader is another process than the order's target.
    sink.submit(read(1, "/usr/bin/python3"));
    wait_for_requests(&recorder, 2).await;
    sink.close().await;

    assert!(sleeper.is_running(), "a process no event named was killed");
    let reports = recorder.requests()[1].batch().reports;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].result, ActionResult::Failed);
    let detail = reports[0].detail.as_deref().unwrap_or_default();
    assert!(detail.starts_with("kill order for pid"), "{detail}");
    assert_eq!(metrics.orders(ActionResult::Failed), 1);
}

#[tokio::test]
async fn report_rides_with_next_events() {
    let mut sleeper = Sleeper::start();
    let (addr, recorder) = start_detector(vec![Answer::Kill { target: None }]).await;
    let (sink, _metrics) = sink(addr, |config| config.report_wait = Duration::from_secs(30));
    sink.submit(sleeper.read(1));
    let status = sleeper.exit_status().await;
    assert!(status.is_some(), "the ordered process still runs");
    sink.submit(read(2, "/bin/sh"));
    wait_for_requests(&recorder, 2).await;
    sink.close().await;

    let requests = recorder.requests();
    assert_eq!(requests.len(), 2, "the report must not go alone");
    let batch = requests[1].batch();
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.events[0].process.exe, "/bin/sh");
    assert_eq!(batch.reports.len(), 1);
    assert_eq!(batch.reports[0].result, ActionResult::Killed);
}

#[tokio::test]
async fn report_retried_with_batch() {
    let mut sleeper = Sleeper::start();
    let script = vec![
        Answer::Kill { target: None },
        Answer::Status(503, "Service Unavailable"),
    ];
    let (addr, recorder) = start_detector(script).await;
    let (sink, metrics) = sink(addr, |_| {});
    sink.submit(sleeper.read(1));
    assert!(
        sleeper.exit_status().await.is_some(),
        "the ordered process still runs"
    );
    wait_for_requests(&recorder, 3).await;
    sink.close().await;

    let requests = recorder.requests();
    assert_eq!(requests.len(), 3);
    let failed = requests[1].batch().reports;
    assert_eq!(failed.len(), 1);
    assert_eq!(
        requests[2].batch().reports,
        failed,
        "the retry carries the same report"
    );
    assert_eq!(Metrics::get(&metrics.reports_sent), 1);
    assert_eq!(Metrics::get(&metrics.reports_dropped), 0);
}

#[tokio::test]
async fn reports_dropped_with_undeliverable_batch() {
    let mut script = vec![Answer::Kill { target: None }];
    script.extend(vec![Answer::Status(500, "boom"); 3]);
    let (addr, recorder) = start_detector(script).await;
    let (sink, metrics) = sink(addr, |config| {
        config.max_attempts = 3;
        config.kill_orders = KillOrders::Ignore;
    });
    sink.submit(read(1, "/usr/bin/python3"));
    wait_for_requests(&recorder, 4).await;
    sink.close().await;

    assert_eq!(recorder.requests().len(), 4);
    assert_eq!(Metrics::get(&metrics.reports_sent), 0);
    assert_eq!(Metrics::get(&metrics.reports_dropped), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn report_queue_drops_oldest_past_cap() {
    let (addr, recorder) = start_detector(vec![Answer::Kill { target: None }]).await;
    let (sink, metrics) = sink(addr, |config| {
        config.max_reports = 1;
        config.kill_orders = KillOrders::Ignore;
    });
    // On a current-thread runtime both reads go out in one batch.
    sink.submit(read(1, "/usr/bin/python3"));
    sink.submit(read(2, "/bin/sh"));
    wait_for_requests(&recorder, 2).await;
    sink.close().await;

    let requests = recorder.requests();
    assert_eq!(requests[0].batch().events.len(), 2);
    let reports = requests[1].batch().reports;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].finding_id, "tg-1", "the newest report is kept");
    assert_eq!(metrics.orders(ActionResult::Disabled), 2);
    assert_eq!(Metrics::get(&metrics.reports_dropped), 1);
    assert_eq!(Metrics::get(&metrics.reports_sent), 1);
}

#[tokio::test]
async fn payload_too_large_splits_reports_from_event() {
    let script = vec![
        Answer::Kill { target: None },
        Answer::Status(413, "Request must be smaller than 6291456 bytes"),
    ];
    let (addr, recorder) = start_detector(script).await;
    let (sink, metrics) = sink(addr, |config| {
        config.kill_orders = KillOrders::Ignore;
        config.report_wait = Duration::from_secs(30);
    });
    sink.submit(read(1, "/usr/bin/python3"));
    wait_for_requests(&recorder, 1).await;
    sink.submit(read(2, "/bin/sh"));
    wait_for_requests(&recorder, 4).await;
    sink.close().await;

    let shapes: Vec<(usize, usize)> = recorder
        .requests()
        .iter()
        .map(|request| {
            let batch = request.batch();
            (batch.events.len(), batch.reports.len())
        })
        .collect();
    assert_eq!(shapes, [(1, 0), (1, 1), (0, 1), (1, 0)]);
    assert_eq!(Metrics::get(&metrics.reports_sent), 1);
    assert_eq!(Metrics::get(&metrics.events_posted), 2);
    assert_eq!(Metrics::get(&metrics.events_dropped_undeliverable), 0);
}
