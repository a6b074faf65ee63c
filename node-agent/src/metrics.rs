//! Counters of the agent, served in the Prometheus text format.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use thiserror::Error;
use tokenguard_schema::ActionResult;
use tracing::info;

use crate::kill::result_name;

/// A callback that returns the current value of a counter kept elsewhere,
/// such as the kernel program's count of events lost to a full ring buffer.
pub type CounterSource = Box<dyn Fn() -> u64 + Send + Sync>;

/// A failure to serve metrics.
#[derive(Debug, Error)]
pub enum MetricsError {
    /// The listen address could not be bound.
    #[error("failed to listen for metrics on {addr}: {source}; pick a free --metrics-addr")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Every result of a kill order, in the order `tokenguard_orders_total`
/// lists them.
const ORDER_RESULTS: [ActionResult; 5] = [
    ActionResult::Killed,
    ActionResult::Exited,
    ActionResult::PidReused,
    ActionResult::Disabled,
    ActionResult::Failed,
];

/// Counters shared by the pipeline and the sinks. All are totals since start.
#[derive(Default)]
pub struct Metrics {
    /// Records received from the event source.
    pub opens_seen: AtomicU64,
    /// Records whose path is not an AWS token file.
    pub opens_ignored: AtomicU64,
    /// Token read events built.
    pub events_built: AtomicU64,
    /// Events folded into an identical queued event.
    pub events_coalesced: AtomicU64,
    /// Events the detector accepted or already had.
    pub events_posted: AtomicU64,
    /// Events the detector rejected as invalid.
    pub events_invalid: AtomicU64,
    /// Events dropped because the send queue was full.
    pub events_dropped_queue_full: AtomicU64,
    /// Events dropped after a 4xx response or after the last retry.
    pub events_dropped_undeliverable: AtomicU64,
    /// POST requests sent, retries included.
    pub posts: AtomicU64,
    /// POST requests that failed with a network error, 429 or 5xx.
    pub post_failures: AtomicU64,
    /// Findings raised by the embedded engine.
    pub findings: AtomicU64,
    /// Events the embedded engine could not process.
    pub engine_errors: AtomicU64,
    /// Action reports the detector received.
    pub reports_sent: AtomicU64,
    /// Action reports dropped: past the queue's cap, or with a batch that
    /// could not be delivered.
    pub reports_dropped: AtomicU64,
    /// Kill orders from the detector, by result.
    orders: [AtomicU64; ORDER_RESULTS.len()],
    kernel_lost: RwLock<Option<CounterSource>>,
    kernel_repeats: RwLock<Option<CounterSource>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("events_built", &self.events_built)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts one kill order with `result`.
    pub fn count_order(&self, result: ActionResult) {
        Self::add(self.order_counter(result), 1);
    }

    /// Kill orders counted with `result`.
    pub fn orders(&self, result: ActionResult) -> u64 {
        Self::get(self.order_counter(result))
    }

    fn order_counter(&self, result: ActionResult) -> &AtomicU64 {
        let index = match result {
            ActionResult::Killed => 0,
            ActionResult::Exited => 1,
            ActionResult::PidReused => 2,
            ActionResult::Disabled => 3,
            ActionResult::Failed => 4,
        };
        &self.orders[index]
    }

    /// Sets where the count of events lost in the kernel comes from; it is
    /// read at each scrape.
    pub fn set_kernel_lost_source(&self, source: CounterSource) {
        *self.kernel_lost.write().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// Sets where the count of token opens that the kernel folded into an
    /// earlier event comes from; it is read at each scrape.
    pub fn set_kernel_repeats_source(&self, source: CounterSource) {
        *self
            .kernel_repeats
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// Events lost in the kernel, or 0 without a source.
    pub fn kernel_lost(&self) -> u64 {
        read_source(&self.kernel_lost)
    }

    /// Token opens the kernel folded into an earlier event, or 0 without a source.
    pub fn kernel_repeats(&self) -> u64 {
        read_source(&self.kernel_repeats)
    }

    /// Renders every counter in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let counters: [(&str, &str, u64); 16] = [
            (
                "tokenguard_opens_seen_total",
                "Token open records received from the event source.",
                Self::get(&self.opens_seen),
            ),
            (
                "tokenguard_opens_ignored_total",
                "Open records whose path is not an AWS token file.",
                Self::get(&self.opens_ignored),
            ),
            (
                "tokenguard_events_total",
                "Token read events built.",
                Self::get(&self.events_built),
            ),
            (
                "tokenguard_events_coalesced_total",
                "Events folded into an identical queued event.",
                Self::get(&self.events_coalesced),
            ),
            (
                "tokenguard_events_posted_total",
                "Events the detector accepted or already had.",
                Self::get(&self.events_posted),
            ),
            (
                "tokenguard_events_invalid_total",
                "Events the detector rejected as invalid.",
                Self::get(&self.events_invalid),
            ),
            (
                "tokenguard_events_dropped_queue_full_total",
                "Events dropped because the send queue was full.",
                Self::get(&self.events_dropped_queue_full),
            ),
            (
                "tokenguard_events_dropped_undeliverable_total",
                "Events dropped after a rejected request or the last retry.",
                Self::get(&self.events_dropped_undeliverable),
            ),
            (
                "tokenguard_posts_total",
                "POST requests sent to the detector, retries included.",
                Self::get(&self.posts),
            ),
            (
                "tokenguard_post_failures_total",
                "POST requests that failed with a network error, 429 or 5xx.",
                Self::get(&self.post_failures),
            ),
            (
                "tokenguard_findings_total",
                "Findings raised by the embedded engine.",
                Self::get(&self.findings),
            ),
            (
                "tokenguard_engine_errors_total",
                "Events the embedded engine could not process.",
                Self::get(&self.engine_errors),
            ),
            (
                "tokenguard_kernel_events_lost_total",
                "Events the kernel program lost because its ring buffer was full.",
                self.kernel_lost(),
            ),
            (
                "tokenguard_kernel_repeats_total",
                "Token opens the kernel program folded into an earlier event of the same \
                 process and file.",
                self.kernel_repeats(),
            ),
            (
                "tokenguard_action_reports_sent_total",
                "Reports of kill orders the detector received.",
                Self::get(&self.reports_sent),
            ),
            (
                "tokenguard_action_reports_dropped_total",
                "Reports of kill orders dropped past the queue's cap or with an undeliverable \
                 batch.",
                Self::get(&self.reports_dropped),
            ),
        ];
        let mut text = String::new();
        for (name, help, value) in counters {
            let _ = writeln!(text, "# HELP {name} {help}");
            let _ = writeln!(text, "# TYPE {name} counter");
            let _ = writeln!(text, "{name} {value}");
        }
        let name = "tokenguard_orders_total";
        let _ = writeln!(
            text,
            "# HELP {name} Kill orders from the detector, by result."
        );
        let _ = writeln!(text, "# TYPE {name} counter");
        for result in ORDER_RESULTS {
            let label = result_name(result);
            let value = self.orders(result);
            let _ = writeln!(text, "{name}{{result=\"{label}\"}} {value}");
        }
        text
    }
}

fn read_source(source: &RwLock<Option<CounterSource>>) -> u64 {
    let source = source.read().unwrap_or_else(|p| p.into_inner());
    source.as_ref().map_or(0, |read| read())
}

/// Binds `addr` and serves `GET /metrics` in the background.
pub async fn serve(
    metrics: Arc<Metrics>,
    addr: SocketAddr,
) -> Result<tokio::task::JoinHandle<()>, MetricsError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    info!(addr = %bound, "serving metrics");
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(error = %error, "metrics server stopped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_help_type_and_value() {
        let metrics = Metrics::default();
        Metrics::add(&metrics.events_built, 3);
        metrics.set_kernel_lost_source(Box::new(|| 7));
        metrics.set_kernel_repeats_source(Box::new(|| 41));
        let text = metrics.render();
        assert!(
            text.contains("# TYPE tokenguard_events_total counter\ntokenguard_events_total 3\n")
        );
        assert!(text.contains("tokenguard_kernel_events_lost_total 7\n"));
        assert!(text.contains("tokenguard_kernel_repeats_total 41\n"));
    }

    #[test]
    fn orders_rendered_by_result() {
        let metrics = Metrics::default();
        // A different count per result, so a result counted on another's
        // line shows.
        for (index, result) in ORDER_RESULTS.into_iter().enumerate() {
            for _ in 0..=index {
                metrics.count_order(result);
            }
        }
        let text = metrics.render();
        assert!(
            text.contains("# TYPE tokenguard_orders_total counter\n"),
            "{text}"
        );
        for (index, result) in ORDER_RESULTS.into_iter().enumerate() {
            assert_eq!(metrics.orders(result), index as u64 + 1, "{result:?}");
            let line = format!(
                "tokenguard_orders_total{{result=\"{}\"}} {}\n",
                result_name(result),
                index + 1
            );
            assert!(text.contains(&line), "{line} missing from {text}");
        }
    }

    #[tokio::test]
    async fn served_over_http() {
        let metrics = Arc::new(Metrics::default());
        Metrics::add(&metrics.posts, 2);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let _server = serve(metrics, addr).await.unwrap();
        let body = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains("tokenguard_posts_total 2"));
    }
}
