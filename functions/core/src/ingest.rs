//! One CloudTrail record through the engine, as the CloudTrail function and
//! replay both run it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tracing::{debug, warn};

use crate::cloudtrail::{
    ClusterRef, ClusterResolver, IssuerLookup, Parsed, RecordError, parse_record,
};
use crate::contain::Responder;
use crate::correlate::CorrelationStore;
use crate::engine::{Engine, EngineError, ExchangeDecision};
use crate::store::{BaselineStore, Notifier};

/// What became of one record.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordOutcome {
    Exchange {
        event_id: String,
        cluster: String,
        decision: ExchangeDecision,
    },
    /// Not a token exchange of EKS.
    Ignored {
        event_id: String,
        reason: &'static str,
    },
    /// A token exchange of a cluster that is not configured.
    UnknownCluster {
        event_id: String,
        cluster: ClusterRef,
    },
    /// Not a usable record; it is logged and dropped, because retrying it
    /// cannot help.
    Invalid {
        event_id: Option<String>,
        reason: String,
    },
}

/// Runs one CloudTrail record through `engine`. Errors are those a retry may
/// fix; a bad record is an [`RecordOutcome::Invalid`], never an error.
pub async fn process_record<S, N, C, K, L>(
    engine: &Engine<S, N, C, K>,
    resolver: &ClusterResolver<L>,
    record: &Value,
    now: DateTime<Utc>,
) -> Result<RecordOutcome, EngineError>
where
    S: BaselineStore,
    N: Notifier,
    C: CorrelationStore,
    K: Responder,
    L: IssuerLookup,
{
    process_parsed(engine, resolver, parse_record(record), now).await
}

/// Runs a record parsed before, as [`process_record`] does.
pub async fn process_parsed<S, N, C, K, L>(
    engine: &Engine<S, N, C, K>,
    resolver: &ClusterResolver<L>,
    parsed: Result<Parsed, RecordError>,
    now: DateTime<Utc>,
) -> Result<RecordOutcome, EngineError>
where
    S: BaselineStore,
    N: Notifier,
    C: CorrelationStore,
    K: Responder,
    L: IssuerLookup,
{
    let exchange = match parsed {
        Ok(Parsed::Exchange(exchange)) => exchange,
        Ok(Parsed::Ignored {
            event_id,
            event_source,
            event_name,
            reason,
        }) => {
            debug!(event_id, event_source, event_name, reason, "record ignored");
            return Ok(RecordOutcome::Ignored { event_id, reason });
        }
        Err(error) => {
            warn!(
                event_id = error.event_id.as_deref().unwrap_or_default(),
                reason = %error.reason,
                "invalid CloudTrail record dropped"
            );
            return Ok(RecordOutcome::Invalid {
                event_id: error.event_id,
                reason: error.reason,
            });
        }
    };
    let Some(cluster) = resolver.resolve(&exchange.cluster).await? else {
        debug!(event_id = %exchange.event_id, cluster = ?exchange.cluster, "exchange of another cluster");
        return Ok(RecordOutcome::UnknownCluster {
            event_id: exchange.event_id,
            cluster: exchange.cluster,
        });
    };
    let event_id = exchange.event_id.clone();
    let decision = engine.process_exchange(*exchange, &cluster, now).await?;
    Ok(RecordOutcome::Exchange {
        event_id,
        cluster,
        decision,
    })
}

/// Counts of outcomes, for the summary line of an invocation or a replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RecordCounts {
    pub exchanges: u64,
    pub matched: u64,
    pub escalated: u64,
    pub findings: u64,
    pub folded: u64,
    pub duplicates: u64,
    pub ignored: u64,
    pub unknown_cluster: u64,
    pub invalid: u64,
    pub failed: u64,
}

impl RecordCounts {
    pub fn add(&mut self, outcome: &RecordOutcome) {
        match outcome {
            RecordOutcome::Exchange { decision, .. } => {
                self.exchanges += 1;
                match decision {
                    ExchangeDecision::Matched { escalated, .. } => {
                        self.matched += 1;
                        self.escalated += escalated.len() as u64;
                    }
                    ExchangeDecision::Finding(_) => self.findings += 1,
                    ExchangeDecision::Folded { .. } => self.folded += 1,
                    ExchangeDecision::Duplicate => self.duplicates += 1,
                    ExchangeDecision::Stored { .. } => {}
                }
            }
            RecordOutcome::Ignored { .. } => self.ignored += 1,
            RecordOutcome::UnknownCluster { .. } => self.unknown_cluster += 1,
            RecordOutcome::Invalid { .. } => self.invalid += 1,
        }
    }
}
