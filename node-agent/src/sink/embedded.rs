//! Runs the detection engine inside the agent, with the baseline in a local
//! database and findings printed as JSON lines.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokenguard_core::{Alert, Decision, Engine, EngineError, Notifier, Policy, StoreError};
use tokenguard_schema::{Node, TokenRead};
use tracing::{error, warn};

use super::{SharedWriter, write_json_line};
use crate::metrics::Metrics;
use crate::store::EmbeddedStore;

/// Attempts per event when the store or the notifier fails transiently.
const MAX_ATTEMPTS: u32 = 3;
const RETRY_DELAY: Duration = Duration::from_millis(200);

/// Prints each finding as one JSON line.
pub struct LineNotifier {
    writer: SharedWriter,
}

impl std::fmt::Debug for LineNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineNotifier").finish_non_exhaustive()
    }
}

impl LineNotifier {
    /// Builds a notifier that writes to `writer`.
    pub fn new(writer: SharedWriter) -> LineNotifier {
        LineNotifier { writer }
    }
}

impl Notifier for LineNotifier {
    async fn notify(&self, alert: &Alert<'_>) -> Result<(), StoreError> {
        let written = match alert {
            Alert::Finding(finding) | Alert::Escalation { finding, .. } => {
                write_json_line(&self.writer, *finding)
            }
            Alert::Exchange(finding) => write_json_line(&self.writer, *finding),
        };
        written.map_err(|error| StoreError::Transient {
            operation: "write finding",
            message: error.to_string(),
        })
    }
}

/// The engine with its embedded store and line notifier.
#[derive(Debug)]
pub struct EmbeddedSink {
    engine: Engine<EmbeddedStore, LineNotifier>,
    node: Node,
    metrics: Arc<Metrics>,
}

impl EmbeddedSink {
    /// Builds the sink over an opened store.
    pub fn new(
        store: EmbeddedStore,
        policy: Policy,
        writer: SharedWriter,
        node: Node,
        metrics: Arc<Metrics>,
    ) -> EmbeddedSink {
        EmbeddedSink {
            engine: Engine::new(store, LineNotifier::new(writer), policy),
            node,
            metrics,
        }
    }

    /// Decides one event, retrying transient failures a few times.
    pub async fn submit(&self, read: TokenRead) {
        for attempt in 1..=MAX_ATTEMPTS {
            match self.engine.process(&self.node, &read, Utc::now()).await {
                Ok(Decision::Finding(_)) => {
                    Metrics::add(&self.metrics.findings, 1);
                    return;
                }
                Ok(_) => return,
                Err(error) => {
                    let transient = matches!(
                        &error,
                        EngineError::Store(StoreError::Transient { .. })
                            | EngineError::Notify { .. }
                    );
                    if transient && attempt < MAX_ATTEMPTS {
                        warn!(event_id = %read.event_id, attempt, error = %error, "event not processed; retrying");
                        tokio::time::sleep(RETRY_DELAY).await;
                        continue;
                    }
                    Metrics::add(&self.metrics.engine_errors, 1);
                    error!(event_id = %read.event_id, error = %error, "event not processed; dropping it");
                    return;
                }
            }
        }
    }
}
