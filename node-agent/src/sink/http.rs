//! Sends events to the detector's Lambda Function URL as signed `Batch` POSTs.
//!
//! There is no batching delay: a read is posted as soon as it is seen. While
//! a POST is in flight or waiting to retry, new reads queue up, identical
//! ones fold into one event, and they go out together in the next POST.
//!
//! A POST carries at most [`MAX_BATCH_EVENTS`] events and [`MAX_BATCH_BYTES`]
//! of body, because the detector rejects a larger batch whole.
//!
//! An outcome in the detector's response may carry an order to kill the
//! process that read the token. The sink carries out every order of a
//! response before it handles the rest of that response, then sends a
//! report of each in the `reports` of the next POST. When no event is waiting, the
//! reports go alone after [`HttpSinkConfig::report_wait`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_credential_types::provider::SharedCredentialsProvider;
use reqwest::{StatusCode, Url};
use tokenguard_schema::{
    ActionReport, Batch, BatchResponse, MAX_BATCH_BYTES, MAX_BATCH_EVENTS, Node, OutcomeStatus,
    SCHEMA_VERSION, TokenRead,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, warn};

use super::orders::carry_out_orders;
use super::queue::{CoalescingQueue, Pushed, SizedRead};
use super::reports::{ReportPushed, ReportQueue};
use super::sigv4::Signer;
use crate::kill::{KillOrders, Killer};
use crate::metrics::Metrics;
use crate::procfs::DEFAULT_PROC_ROOT;

/// Maximum number of bytes of a rejected response body that are logged.
const MAX_LOGGED_BODY: usize = 1024;

/// Settings of the [`HttpSink`].
#[derive(Debug, Clone)]
pub struct HttpSinkConfig {
    pub url: Url,
    /// Region the Function URL is in, used in the signature.
    pub region: String,
    pub node: Node,
    pub credentials: SharedCredentialsProvider,
    /// Maximum number of distinct queued events; further ones are dropped
    /// and counted.
    pub max_queue: usize,
    /// Maximum events per POST, at most [`MAX_BATCH_EVENTS`].
    pub max_batch: usize,
    /// Attempts per batch (or per failed event) before it is dropped.
    pub max_attempts: u32,
    /// Delay before the first retry; it doubles per attempt up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Timeout of one POST.
    pub request_timeout: Duration,
    /// How long [`HttpSink::close`] waits for queued events to go out.
    pub shutdown_timeout: Duration,
    /// Handling of the detector's kill orders.
    pub kill_orders: KillOrders,
    /// procfs of the host pid namespace, where a process's start time is
    /// checked before it is killed.
    pub proc_root: PathBuf,
    /// Maximum number of action reports waiting to be sent. Past it the
    /// oldest is dropped and counted.
    pub max_reports: usize,
    /// How long action reports wait for events to share a POST with before
    /// they are sent alone.
    pub report_wait: Duration,
}

impl HttpSinkConfig {
    /// Settings with the default limits: a queue of 10,000 events, batches of
    /// [`MAX_BATCH_EVENTS`], 12 attempts with backoff from 0.5 s to 60 s
    /// (about 6 minutes in all), 30 s per request, 10 s to drain on shutdown.
    /// Kill orders are followed with `/proc`, and up to 1,000 action reports
    /// wait at most 250 ms for events.
    pub fn new(
        url: Url,
        region: String,
        node: Node,
        credentials: SharedCredentialsProvider,
    ) -> HttpSinkConfig {
        HttpSinkConfig {
            url,
            region,
            node,
            credentials,
            max_queue: 10_000,
            max_batch: MAX_BATCH_EVENTS,
            max_attempts: 12,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            kill_orders: KillOrders::Follow,
            proc_root: PathBuf::from(DEFAULT_PROC_ROOT),
            max_reports: 1000,
            report_wait: Duration::from_millis(250),
        }
    }
}

/// A failure to set up the HTTP sink.
#[derive(Debug, thiserror::Error)]
pub enum HttpSinkError {
    /// The HTTP client could not be built (TLS setup).
    #[error("failed to build HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The batch body without events already exceeds [`MAX_BATCH_BYTES`].
    #[error(
        "batch envelope of {0} bytes leaves no room for events under the limit of \
         {MAX_BATCH_BYTES} bytes: shorten the node name, agent version or hook"
    )]
    EnvelopeTooLarge(usize),
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Notify,
}

#[derive(Debug)]
struct State {
    queue: CoalescingQueue,
    reports: ReportQueue,
    closed: bool,
}

/// Queues events and posts them from a background task.
#[derive(Debug)]
pub struct HttpSink {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    metrics: Arc<Metrics>,
    shutdown_timeout: Duration,
}

impl HttpSink {
    /// Starts the sender task.
    pub fn start(config: HttpSinkConfig, metrics: Arc<Metrics>) -> Result<HttpSink, HttpSinkError> {
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .user_agent(concat!("tokenguard-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(HttpSinkError::Client)?;
        let envelope = Batch {
            schema: SCHEMA_VERSION,
            node: config.node.clone(),
            events: Vec::new(),
            reports: Vec::new(),
        };
        let envelope_size = serde_json::to_vec(&envelope).map_or(usize::MAX, |body| body.len());
        // Each event adds its own encoding and, after the first, a comma.
        let max_events_size = MAX_BATCH_BYTES
            .checked_sub(envelope_size)
            .ok_or(HttpSinkError::EnvelopeTooLarge(envelope_size))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: CoalescingQueue::new(config.max_queue, max_events_size),
                reports: ReportQueue::new(config.max_reports),
                closed: false,
            }),
            wake: Notify::new(),
        });
        let shutdown_timeout = config.shutdown_timeout;
        let killer = Killer::new(config.kill_orders, config.proc_root.clone());
        if killer.orders() == KillOrders::Follow
            && let Err(reason) = killer.check_pid_namespace()
        {
            warn!(error = %reason, "kill orders from the detector will fail");
        }
        let sender = Sender {
            killer,
            signer: Signer::new(config.credentials.clone(), config.region.clone()),
            shared: shared.clone(),
            client,
            metrics: metrics.clone(),
            max_events_size,
            config,
        };
        Ok(HttpSink {
            shared,
            task: tokio::spawn(sender.run()),
            metrics,
            shutdown_timeout,
        })
    }

    /// Queues `read` for the next POST.
    pub fn submit(&self, read: TokenRead) {
        let event_id = read.event_id.clone();
        let pushed = self
            .shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .queue
            .push(read);
        match pushed {
            Pushed::Queued => {}
            Pushed::Coalesced => Metrics::add(&self.metrics.events_coalesced, 1),
            Pushed::Dropped => {
                Metrics::add(&self.metrics.events_dropped_queue_full, 1);
                debug!(event_id = %event_id, "send queue full; event dropped");
            }
            Pushed::TooLarge(size) => {
                Metrics::add(&self.metrics.events_dropped_undeliverable, 1);
                warn!(
                    event_id = %event_id, bytes = size, limit = MAX_BATCH_BYTES,
                    "event too large for any batch; dropping it"
                );
            }
        }
        self.shared.wake.notify_one();
    }

    /// Number of distinct events waiting to be sent.
    pub fn queued(&self) -> usize {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .queue
            .len()
    }

    /// Sends what is queued, waiting at most the shutdown timeout, then stops.
    pub async fn close(mut self) {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed = true;
        self.shared.wake.notify_one();
        let abort = self.task.abort_handle();
        let finished = tokio::time::timeout(self.shutdown_timeout, &mut self.task).await;
        if finished.is_err() {
            abort.abort();
            let left = self.queued();
            Metrics::add(&self.metrics.events_dropped_undeliverable, left as u64);
            let reports = self
                .shared
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .reports
                .len();
            Metrics::add(&self.metrics.reports_dropped, reports as u64);
            error!(
                queued = left,
                reports,
                "events and action reports not delivered before shutdown; they and any batch \
                 in flight are lost"
            );
        }
    }
}

/// An event with the number of POSTs it already went out in.
#[derive(Debug)]
struct Pending {
    read: TokenRead,
    /// Size of the event's JSON encoding in bytes.
    size: usize,
    attempts: u32,
}

/// The events and action reports of one POST.
#[derive(Debug)]
struct Outgoing {
    events: Vec<Pending>,
    reports: Vec<ActionReport>,
}

impl Outgoing {
    /// Returns whether the batch can be split in two non-empty parts.
    fn can_split(&self) -> bool {
        self.events.len() + usize::from(!self.reports.is_empty()) > 1
    }

    /// Splits the events in halves, with the reports in the first. A single
    /// event is split from the reports instead.
    fn split(mut self) -> (Outgoing, Outgoing) {
        if self.events.len() > 1 {
            let second = self.events.split_off(self.events.len() / 2);
            let second = Outgoing {
                events: second,
                reports: Vec::new(),
            };
            return (self, second);
        }
        let reports = Outgoing {
            events: Vec::new(),
            reports: std::mem::take(&mut self.reports),
        };
        (reports, self)
    }
}

/// Result of one POST, as the sender acts on it.
#[derive(Debug)]
enum PostResult {
    Answered(BatchResponse),
    /// 413: the body was too large for the detector or for Lambda.
    TooLarge {
        status: StatusCode,
        body: String,
    },
    /// 400 and other 4xx that a retry cannot fix.
    Rejected {
        status: StatusCode,
        body: String,
    },
    /// Network error, timeout, 429, 5xx, or missing credentials.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
}

/// Result of one batch in [`Sender::deliver_part`].
#[derive(Debug)]
enum Delivery {
    /// The detector returned outcomes, and failed events went to the retry list.
    Answered,
    /// Rejected or out of attempts, and counted as undeliverable.
    Dropped,
    /// Rejected with 413, and more than one event or report to split.
    TooLarge(Outgoing),
}

struct Sender {
    config: HttpSinkConfig,
    killer: Killer,
    signer: Signer,
    shared: Arc<Shared>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    /// Maximum bytes of the events of one body, separators included.
    max_events_size: usize,
}

impl Sender {
    async fn run(self) {
        let mut retry: Vec<Pending> = Vec::new();
        loop {
            let Some(batch) = self.next_batch(&mut retry).await else {
                return;
            };
            let delay = self.deliver(batch, &mut retry).await;
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
        }
    }

    /// Waits for events or action reports and returns the next batch:
    /// events to retry first, then the oldest queued ones, within the count
    /// and byte limits, with the oldest queued reports that fit. Returns
    /// `None` once closed with nothing queued.
    ///
    /// Reports go with the next events. When no event is waiting they go
    /// alone after [`HttpSinkConfig::report_wait`], or at once when the sink
    /// is closed or the waiting events do not fit beside them.
    ///
    /// Every event fits a body without reports, because the queue rejects
    /// larger ones, so each batch takes at least one event or report.
    async fn next_batch(&self, retry: &mut Vec<Pending>) -> Option<Outgoing> {
        let max = self.config.max_batch.clamp(1, MAX_BATCH_EVENTS);
        let mut report_deadline: Option<Instant> = None;
        loop {
            let notified = self.shared.wake.notified();
            {
                let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
                let (report_count, report_bytes) = state.reports.fitting();
                let max_events_size = self.max_events_size.saturating_sub(report_bytes);
                let mut bytes = 0;
                let mut from_retry = 0;
                for pending in retry.iter().take(max) {
                    let added = usize::from(from_retry > 0) + pending.size;
                    if bytes + added > max_events_size {
                        break;
                    }
                    bytes += added;
                    from_retry += 1;
                }
                let mut events: Vec<Pending> = retry.drain(..from_retry).collect();
                let room = max - events.len();
                // A comma separates the first queued event from retried ones before it.
                let separator = usize::from(!events.is_empty());
                let budget = max_events_size.saturating_sub(bytes + separator);
                // Retried events go first, so queued ones wait until all fit.
                if retry.is_empty() {
                    events.extend(state.queue.take(room, budget).into_iter().map(
                        |SizedRead { read, size }| Pending {
                            read,
                            size,
                            attempts: 0,
                        },
                    ));
                }

                let events_left = !retry.is_empty() || !state.queue.is_empty();
                let waited = report_deadline.is_some_and(|deadline| Instant::now() >= deadline);
                let send_reports = report_count > 0
                    && (!events.is_empty() || events_left || waited || state.closed);
                if !events.is_empty() || send_reports {
                    let reports = if send_reports {
                        state.reports.take(report_count)
                    } else {
                        Vec::new()
                    };
                    return Some(Outgoing { events, reports });
                }
                if state.closed {
                    return None;
                }
                if report_count > 0 && report_deadline.is_none() {
                    report_deadline = Some(Instant::now() + self.config.report_wait);
                }
            }
            match report_deadline {
                Some(deadline) => {
                    let _ = tokio::time::timeout_at(deadline, notified).await;
                }
                None => notified.await,
            }
        }
    }

    /// Posts `batch`, split in halves while the detector returns 413, and
    /// returns the delay to wait before the next POST when events wait in
    /// `retry`.
    async fn deliver(&self, batch: Outgoing, retry: &mut Vec<Pending>) -> Option<Duration> {
        let mut parts = vec![batch];
        let mut answered = false;
        while let Some(part) = parts.pop() {
            match self.deliver_part(part, retry).await {
                Delivery::Answered => answered = true,
                Delivery::Dropped => {}
                Delivery::TooLarge(part) => {
                    let (first, second) = part.split();
                    parts.push(second);
                    parts.push(first);
                }
            }
        }
        if !answered {
            return None;
        }
        let worst = retry.iter().map(|p| p.attempts).max()?;
        Some(self.backoff(worst, None))
    }

    /// Posts `batch` until it gets a response, is rejected or runs out of
    /// attempts. Events with outcome `failed` go to `retry`. Action reports
    /// share the batch's attempts and are dropped with it.
    async fn deliver_part(&self, mut batch: Outgoing, retry: &mut Vec<Pending>) -> Delivery {
        let mut attempt = batch.events.iter().map(|p| p.attempts).max().unwrap_or(0);
        loop {
            attempt += 1;
            for pending in batch.events.iter_mut() {
                pending.attempts = attempt.max(pending.attempts + 1);
            }
            Metrics::add(&self.metrics.posts, 1);
            let events = batch.events.len();
            let reports = batch.reports.len();
            match self.post(&batch).await {
                PostResult::Answered(response) => {
                    Metrics::add(&self.metrics.reports_sent, reports as u64);
                    // Orders first, so that no other work delays a kill.
                    let reads: Vec<&TokenRead> = batch.events.iter().map(|p| &p.read).collect();
                    let reports = carry_out_orders(&self.killer, &self.metrics, &reads, &response);
                    for report in reports {
                        self.queue_report(report);
                    }
                    self.handle_outcomes(batch.events, response, retry);
                    return Delivery::Answered;
                }
                PostResult::TooLarge { status, body } if batch.can_split() => {
                    // Lambda limits the payload after it embeds the body, which
                    // can grow more than the margin of `MAX_BATCH_BYTES`.
                    warn!(
                        status = status.as_u16(), events, reports, error = %body,
                        "detector rejected the batch as too large; splitting it"
                    );
                    return Delivery::TooLarge(batch);
                }
                PostResult::TooLarge { status, body } => {
                    self.count_dropped(&batch);
                    let event_id = batch
                        .events
                        .first()
                        .map_or("-", |p| p.read.event_id.as_str());
                    warn!(
                        status = status.as_u16(), event_id, reports, error = %body,
                        "detector rejected a batch of one event or of reports alone as too \
                         large; dropping it"
                    );
                    return Delivery::Dropped;
                }
                PostResult::Rejected { status, body } => {
                    self.count_dropped(&batch);
                    error!(
                        status = status.as_u16(), events, reports, error = %body,
                        "detector rejected the batch; dropping it"
                    );
                    return Delivery::Dropped;
                }
                PostResult::Retry {
                    reason,
                    retry_after,
                } => {
                    Metrics::add(&self.metrics.post_failures, 1);
                    if attempt >= self.config.max_attempts {
                        self.count_dropped(&batch);
                        error!(
                            attempts = attempt, events, reports, error = %reason,
                            "posting to the detector failed on every attempt; dropping the batch"
                        );
                        return Delivery::Dropped;
                    }
                    let delay = self.backoff(attempt, retry_after);
                    warn!(
                        attempt, events, reports, delay_ms = delay.as_millis() as u64,
                        error = %reason, "posting to the detector failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn count_dropped(&self, batch: &Outgoing) {
        Metrics::add(
            &self.metrics.events_dropped_undeliverable,
            batch.events.len() as u64,
        );
        Metrics::add(&self.metrics.reports_dropped, batch.reports.len() as u64);
    }

    fn queue_report(&self, report: ActionReport) {
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.reports.push(report) {
            ReportPushed::Queued => {}
            ReportPushed::DroppedOldest(oldest) => {
                Metrics::add(&self.metrics.reports_dropped, 1);
                warn!(
                    finding_id = %oldest.finding_id, max_reports = self.config.max_reports,
                    "action report queue full; dropped the oldest report"
                );
            }
            ReportPushed::TooLarge(size) => {
                Metrics::add(&self.metrics.reports_dropped, 1);
                warn!(
                    bytes = size,
                    "action report too large for any batch, because of its finding id or \
                     event id; dropping it"
                );
            }
        }
    }

    fn handle_outcomes(
        &self,
        batch: Vec<Pending>,
        response: BatchResponse,
        retry: &mut Vec<Pending>,
    ) {
        let mut outcomes: std::collections::HashMap<String, _> = response
            .outcomes
            .into_iter()
            .map(|outcome| (outcome.event_id.clone(), outcome))
            .collect();
        for pending in batch {
            let event_id = pending.read.event_id.clone();
            let Some(outcome) = outcomes.remove(&event_id) else {
                // An event without an outcome is sent again, which is safe
                // because event ids make the retry idempotent.
                self.retry_or_drop(pending, "no outcome in the response", retry);
                continue;
            };
            match outcome.status {
                OutcomeStatus::Accepted | OutcomeStatus::Duplicate => {
                    Metrics::add(&self.metrics.events_posted, 1);
                }
                OutcomeStatus::Invalid => {
                    Metrics::add(&self.metrics.events_invalid, 1);
                    warn!(
                        event_id = %event_id,
                        reason = outcome.reason.as_deref().unwrap_or("-"),
                        "detector rejected the event as invalid"
                    );
                }
                OutcomeStatus::Failed => {
                    let reason = outcome.reason.unwrap_or_default();
                    self.retry_or_drop(pending, &reason, retry);
                }
            }
        }
    }

    fn retry_or_drop(&self, pending: Pending, reason: &str, retry: &mut Vec<Pending>) {
        if pending.attempts >= self.config.max_attempts {
            Metrics::add(&self.metrics.events_dropped_undeliverable, 1);
            error!(
                event_id = %pending.read.event_id, attempts = pending.attempts, reason,
                "detector failed the event on every attempt; dropping it"
            );
            return;
        }
        debug!(event_id = %pending.read.event_id, reason, "detector failed the event; retrying");
        retry.push(pending);
    }

    /// Exponential backoff with jitter: a random delay between half and all
    /// of `initial * 2^(attempt-1)`, capped, and no shorter than `retry_after`.
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let full = self
            .config
            .initial_backoff
            .saturating_mul(1 << exponent)
            .min(self.config.max_backoff);
        let half = full / 2;
        let jitter = Duration::from_nanos(fastrand::u64(0..=half.as_nanos() as u64));
        (half + jitter).max(retry_after.unwrap_or_default().min(self.config.max_backoff))
    }

    async fn post(&self, batch: &Outgoing) -> PostResult {
        let body = Batch {
            schema: SCHEMA_VERSION,
            node: self.config.node.clone(),
            events: batch.events.iter().map(|p| p.read.clone()).collect(),
            reports: batch.reports.clone(),
        };
        let body = match serde_json::to_vec(&body) {
            Ok(body) => body,
            Err(error) => {
                return PostResult::Rejected {
                    status: StatusCode::BAD_REQUEST,
                    body: format!("failed to encode batch: {error}"),
                };
            }
        };
        let content_type = ("content-type", "application/json");
        let signed = match self
            .signer
            .sign_post(self.config.url.as_str(), &[content_type], &body)
            .await
        {
            Ok(headers) => headers,
            Err(error) => {
                return PostResult::Retry {
                    reason: error.to_string(),
                    retry_after: None,
                };
            }
        };
        let mut request = self
            .client
            .post(self.config.url.clone())
            .header(content_type.0, content_type.1);
        for (name, value) in &signed {
            request = request.header(name, value);
        }
        let response = match request.body(body).send().await {
            Ok(response) => response,
            Err(error) => {
                return PostResult::Retry {
                    reason: format!("request failed: {error}"),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.unwrap_or_default();

        if status.is_success() {
            return match serde_json::from_str::<BatchResponse>(&text) {
                Ok(answer) => PostResult::Answered(answer),
                Err(error) => PostResult::Retry {
                    reason: format!("invalid detector response ({status}): {error}"),
                    retry_after: None,
                },
            };
        }
        // Expired or not yet valid credentials are refreshed on the next attempt.
        let retryable = status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::UNAUTHORIZED
            || status == StatusCode::FORBIDDEN
            || status.is_server_error();
        let mut body = text;
        crate::record::truncate_utf8(&mut body, MAX_LOGGED_BODY);
        if retryable {
            PostResult::Retry {
                reason: format!("detector answered {status}: {body}"),
                retry_after,
            }
        } else if status == StatusCode::PAYLOAD_TOO_LARGE {
            PostResult::TooLarge { status, body }
        } else {
            PostResult::Rejected { status, body }
        }
    }
}
