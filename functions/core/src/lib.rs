//! Detection core of tokenguard.
//!
//! This crate decides whether a token read is a finding. It holds no AWS or
//! kernel types: the baseline lives behind [`BaselineStore`] and alerts go
//! out through [`Notifier`], with DynamoDB and SNS adapters in the detector
//! Lambda and an embedded store in the node agent. [`cloudtrail`] parses the
//! records of token exchanges, and [`correlate`] matches them with reads.
//! [`contain`] decides what to do to the pod or process behind a finding.

pub mod cloudtrail;
pub mod conformance;
pub mod contain;
pub mod correlate;
mod engine;
mod finding;
pub mod ingest;
mod policy;
mod render;
mod scope;
mod store;

pub use engine::{Decision, Engine, EngineError, ExchangeDecision};
pub use finding::{
    BaselineSummary, FINDING_SCHEMA_VERSION, Finding, KnownValueSummary, MAX_KNOWN_VALUES, Mitre,
    MitreRef, Rule, Severity, finding_id,
};
pub use policy::{Policy, PolicyError, parse_duration};
pub use render::{
    Alert, AlertMessage, CHATBOT_DESCRIPTION_MAX_CHARS, CHATBOT_SOURCE, CHATBOT_TEXT_TYPE,
    CHATBOT_TITLE_MAX_CHARS, CHATBOT_VERSION, ChatbotContent, ChatbotError, ChatbotMetadata,
    ChatbotNotification, render_alert,
};
pub use scope::{BaselineKey, Scope, ScopeKind, Value};
pub use store::{
    BaselineStore, FindingRecord, MemoryStore, Notifier, ScopeRecord, StoreError, ValueRecord,
    ValueSighting, is_forgotten, needs_refresh,
};
