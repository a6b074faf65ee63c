//! Checks that a decoded batch or event is usable, with errors that name the
//! value and what a sender should change.

use serde_json::value::RawValue;
use thiserror::Error;

use crate::{BatchEnvelope, Node, Process, SCHEMA_VERSION, TokenRead};

/// Maximum number of events in one batch. The agent splits larger sets.
pub const MAX_BATCH_EVENTS: usize = 500;

/// Maximum number of command-line arguments kept per process.
pub const MAX_ARGS: usize = 32;

const MAX_ID_LEN: usize = 128;
const MAX_NAME_LEN: usize = 253;
const MAX_PATH_LEN: usize = 4096;
const MAX_COMM_LEN: usize = 15;

/// Why a batch or an event was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValidationError {
    /// The body is not JSON of the batch shape.
    #[error("invalid batch: {0}")]
    Malformed(String),
    /// The batch declares a schema version this detector does not speak.
    #[error("unsupported schema version {0}: this detector accepts schema {SCHEMA_VERSION}")]
    UnsupportedSchema(u32),
    /// The batch has more events than [`MAX_BATCH_EVENTS`].
    #[error("batch has {0} events: split it into batches of at most {MAX_BATCH_EVENTS}")]
    TooManyEvents(usize),
    /// One event does not decode as a `TokenRead`.
    #[error("invalid event: {0}")]
    MalformedEvent(String),
    /// A field is present but its value is unusable.
    #[error("invalid {field} {value:?}: {expected}")]
    Field {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
}

impl ValidationError {
    fn field(field: &'static str, value: impl Into<String>, expected: &'static str) -> Self {
        let mut value = value.into();
        truncate_utf8(&mut value, 80);
        ValidationError::Field {
            field,
            value,
            expected,
        }
    }
}

impl BatchEnvelope {
    /// Parses a POST body, checking the parts that apply to the whole batch.
    pub fn parse(body: &[u8]) -> Result<BatchEnvelope, ValidationError> {
        let envelope: BatchEnvelope = serde_json::from_slice(body)
            .map_err(|error| ValidationError::Malformed(error.to_string()))?;
        if envelope.schema != SCHEMA_VERSION {
            return Err(ValidationError::UnsupportedSchema(envelope.schema));
        }
        if envelope.events.len() > MAX_BATCH_EVENTS {
            return Err(ValidationError::TooManyEvents(envelope.events.len()));
        }
        envelope.node.validate()?;
        Ok(envelope)
    }
}

impl Node {
    fn validate(&self) -> Result<(), ValidationError> {
        check_name("node.name", &self.name)?;
        check_id("node.boot_id", &self.boot_id)
    }
}

impl TokenRead {
    /// Decodes and checks one event of a [`BatchEnvelope`].
    ///
    /// On error, returns the event's `event_id` when it could be read, so the
    /// caller can report the outcome against it.
    pub fn parse(raw: &RawValue) -> Result<TokenRead, (Option<String>, ValidationError)> {
        match serde_json::from_str::<TokenRead>(raw.get()) {
            Ok(event) => match event.validate() {
                Ok(()) => Ok(event),
                Err(error) => Err((Some(event.event_id), error)),
            },
            Err(error) => {
                let event_id = peek_event_id(raw);
                Err((event_id, ValidationError::MalformedEvent(error.to_string())))
            }
        }
    }

    /// Checks the values that serde's types do not constrain.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_id("event_id", &self.event_id)?;
        check_name("cluster", &self.cluster)?;
        check_absolute("token.path", &self.token.path)?;
        if self.count == 0 {
            return Err(ValidationError::field(
                "count",
                "0",
                "expected at least 1 read",
            ));
        }
        self.process.validate("process")?;
        if let Some(parent) = &self.process.parent {
            parent.validate("process.parent")?;
        }
        if let Some(container) = &self.container {
            check_id("container.id", &container.id)?;
        }
        if let Some(pod) = &self.pod {
            check_id("pod.uid", &pod.uid)?;
            if let Some(namespace) = &pod.namespace {
                check_name("pod.namespace", namespace)?;
            }
            if let Some(name) = &pod.name {
                check_name("pod.name", name)?;
            }
        }
        Ok(())
    }
}

impl Process {
    fn validate(&self, prefix: &'static str) -> Result<(), ValidationError> {
        let (comm_field, exe_field) = if prefix == "process" {
            ("process.comm", "process.exe")
        } else {
            ("process.parent.comm", "process.parent.exe")
        };
        if self.comm.is_empty() || self.comm.len() > MAX_COMM_LEN {
            return Err(ValidationError::field(
                comm_field,
                self.comm.as_str(),
                "expected the kernel command name, 1 to 15 bytes",
            ));
        }
        check_absolute(exe_field, &self.exe)?;
        if self.args.len() > MAX_ARGS {
            return Err(ValidationError::field(
                "process.args",
                format!("{} entries", self.args.len()),
                "expected at most 32 arguments: truncate and set args_truncated",
            ));
        }
        Ok(())
    }
}

fn check_id(field: &'static str, value: &str) -> Result<(), ValidationError> {
    let printable = value.bytes().all(|b| b.is_ascii_graphic());
    if value.is_empty() || value.len() > MAX_ID_LEN || !printable {
        return Err(ValidationError::field(
            field,
            value,
            "expected 1 to 128 printable ASCII characters",
        ));
    }
    Ok(())
}

fn check_name(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() || value.len() > MAX_NAME_LEN || value.chars().any(char::is_control) {
        return Err(ValidationError::field(
            field,
            value,
            "expected a Kubernetes name of 1 to 253 characters",
        ));
    }
    Ok(())
}

fn check_absolute(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if !value.starts_with('/') || value.len() > MAX_PATH_LEN {
        return Err(ValidationError::field(
            field,
            value,
            "expected an absolute path",
        ));
    }
    Ok(())
}

/// Reads `event_id` from an event that failed to decode as a whole.
fn peek_event_id(raw: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Peek {
        event_id: String,
    }
    serde_json::from_str::<Peek>(raw.get())
        .ok()
        .map(|peek| peek.event_id)
        .filter(|id| check_id("event_id", id).is_ok())
}

fn truncate_utf8(value: &mut String, max: usize) {
    if value.len() <= max {
        return;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value.truncate(end);
    value.push('…');
}
