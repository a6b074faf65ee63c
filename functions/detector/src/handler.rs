//! The Function URL handler: decodes a request, runs its batch through the
//! engine and shapes the HTTP response. It needs no Lambda runtime, so tests
//! call it directly.

use aws_lambda_events::event::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use aws_lambda_events::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use tokenguard_core::contain::Responder;
use tokenguard_core::correlate::CorrelationStore;
use tokenguard_core::{BaselineStore, Engine, Notifier};
use tokenguard_schema::{
    ActionReport, BatchEnvelope, BatchResponse, OutcomeStatus, SCHEMA_VERSION, TokenRead,
    ValidationError,
};
use tracing::{info, warn};

/// Status code and JSON body of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    /// Builds a reply with body `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        let body = serde_json::json!({ "error": message.into() }).to_string();
        Reply { status, body }
    }
}

/// Handles one Function URL request: only `POST` with a JSON batch body.
pub async fn handle_request<S: BaselineStore, N: Notifier, C: CorrelationStore, K: Responder>(
    engine: &Engine<S, N, C, K>,
    request: &LambdaFunctionUrlRequest,
    now: DateTime<Utc>,
) -> LambdaFunctionUrlResponse {
    let reply = match decode_body(request) {
        Ok(body) => handle_batch(engine, &body, now).await,
        Err(reply) => reply,
    };
    function_url_response(reply)
}

/// Checks method and content type and returns the raw body bytes.
fn decode_body(request: &LambdaFunctionUrlRequest) -> Result<Vec<u8>, Reply> {
    let method = request.request_context.http.method.as_deref().unwrap_or("");
    if !method.eq_ignore_ascii_case("POST") {
        warn!(method, "request rejected: method not allowed");
        return Err(Reply::error(
            405,
            format!("method {method:?} not allowed: POST a JSON batch"),
        ));
    }
    if let Some(content_type) = request.headers.get(header::CONTENT_TYPE) {
        let content_type = String::from_utf8_lossy(content_type.as_bytes());
        let content_type = content_type.as_ref();
        if !is_json(content_type) {
            warn!(content_type, "request rejected: not JSON");
            return Err(Reply::error(
                415,
                format!("unsupported content type {content_type:?}: send application/json"),
            ));
        }
    }
    let body = request.body.as_deref().unwrap_or("");
    if body.is_empty() {
        warn!("request rejected: empty body");
        return Err(Reply::error(400, "missing request body: POST a JSON batch"));
    }
    if !request.is_base64_encoded {
        return Ok(body.as_bytes().to_vec());
    }
    BASE64.decode(body).map_err(|error| {
        warn!(%error, "request rejected: invalid base64 body");
        Reply::error(
            400,
            format!(
                "invalid base64 request body ({error}): send standard base64 \
                 or set isBase64Encoded to false"
            ),
        )
    })
}

/// Checks whether a `Content-Type` value names JSON, such as `application/json;
/// charset=utf-8` or `application/vnd.example+json`.
fn is_json(content_type: &str) -> bool {
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media_type == "application/json"
        || (media_type.starts_with("application/") && media_type.ends_with("+json"))
}

/// Records the agent's reports of earlier orders on their findings. A report
/// that does not parse or cannot be stored is logged and dropped: it never
/// fails the batch, whose events matter more.
async fn record_reports<S: BaselineStore, N: Notifier, C: CorrelationStore, K: Responder>(
    engine: &Engine<S, N, C, K>,
    envelope: &BatchEnvelope,
    now: DateTime<Utc>,
) {
    for (index, raw) in envelope.reports.iter().enumerate() {
        let report: ActionReport = match serde_json::from_str(raw.get()) {
            Ok(report) => report,
            Err(error) => {
                warn!(node = %envelope.node.name, index, %error, "invalid action report dropped");
                continue;
            }
        };
        if let Err(error) = engine.record_report(&envelope.node, &report, now).await {
            warn!(
                node = %envelope.node.name, finding_id = %report.finding_id, %error,
                "action report not recorded"
            );
        }
    }
}

/// Runs a batch body through the engine.
///
/// A body that is not a batch gets 400, or 413 when it exceeds
/// [`tokenguard_schema::MAX_BATCH_BYTES`]. Otherwise the reply is 200 with
/// one outcome per event, unless every event failed on a dependency: then it
/// is 503, with the same outcomes, so the sender backs off before retrying.
/// Events are detected at `now`, which also bounds their `observed_at`.
pub async fn handle_batch<S: BaselineStore, N: Notifier, C: CorrelationStore, K: Responder>(
    engine: &Engine<S, N, C, K>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Reply {
    let envelope = match BatchEnvelope::parse(body) {
        Ok(envelope) => envelope,
        Err(error) => {
            warn!(%error, "batch rejected");
            let status = match error {
                ValidationError::TooLarge(_) => 413,
                _ => 400,
            };
            return Reply::error(status, error.to_string());
        }
    };

    let clusters = &engine.policy().clusters;
    let events: Vec<Result<TokenRead, (String, String)>> = envelope
        .events
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            let read = TokenRead::parse(raw, now).map_err(|(event_id, error)| {
                let event_id = event_id.unwrap_or_else(|| format!("events[{index}]"));
                (event_id, error.to_string())
            })?;
            if !clusters.is_empty() && !clusters.contains(&read.cluster) {
                let reason = format!(
                    "cluster {:?} is not one of the clusters this detector watches ({}): \
                     start the agent with --cluster set to the EKS cluster name, or add the \
                     cluster to TOKENGUARD_CLUSTERS",
                    read.cluster,
                    clusters.join(", ")
                );
                return Err((read.event_id, reason));
            }
            Ok(read)
        })
        .collect();

    // A report is about a finding of an earlier post, because the order it
    // reports on came in that post's response. So reports are recorded while
    // the events are decided, and one that rides with a new read does not
    // delay that read's kill order.
    let ((outcomes, findings), ()) = tokio::join!(
        engine.process_batch(&envelope.node, &events, now),
        record_reports(engine, &envelope, now),
    );

    let count = |status| outcomes.iter().filter(|o| o.status == status).count();
    let failed = count(OutcomeStatus::Failed);
    let invalid = count(OutcomeStatus::Invalid);
    info!(
        node = %envelope.node.name,
        events = outcomes.len(),
        accepted = count(OutcomeStatus::Accepted),
        duplicate = count(OutcomeStatus::Duplicate),
        invalid,
        failed,
        findings = findings.len(),
        "batch processed"
    );
    // One line per batch, so that a sender with a bug cannot flood the log.
    if let Some(first) = outcomes.iter().find(|o| o.status == OutcomeStatus::Invalid) {
        warn!(
            node = %envelope.node.name,
            invalid,
            event_id = %first.event_id,
            reason = first.reason.as_deref().unwrap_or_default(),
            "events rejected as invalid; the first is shown"
        );
    }

    let status = if failed > 0 && failed == outcomes.len() {
        503
    } else {
        200
    };
    let response = BatchResponse {
        schema: SCHEMA_VERSION,
        outcomes,
    };
    match serde_json::to_string(&response) {
        Ok(body) => Reply { status, body },
        Err(error) => Reply::error(500, format!("failed to encode the response: {error}")),
    }
}

/// Wraps a reply as a Function URL response with a JSON content type.
pub fn function_url_response(reply: Reply) -> LambdaFunctionUrlResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if reply.status == 405 {
        headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    let mut response = LambdaFunctionUrlResponse::default();
    response.status_code = i64::from(reply.status);
    response.headers = headers;
    response.body = Some(reply.body);
    response.is_base64_encoded = false;
    response
}

#[cfg(test)]
mod tests;
