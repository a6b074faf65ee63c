//! Checks that a decoded batch or event is usable, with errors that name the
//! value and what a sender should change.

use chrono::{DateTime, TimeDelta, Utc};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use thiserror::Error;

use crate::{BatchEnvelope, Container, Node, Pod, Process, SCHEMA_VERSION, TokenRead};

/// Maximum number of events in one batch. The agent splits larger sets.
///
/// The detector processes the events of a batch one after another, each with
/// at least one DynamoDB call, so the count bounds the duration of one
/// invocation. It also keeps the response, one outcome per event, far below
/// Lambda's 6 MB response limit.
pub const MAX_BATCH_EVENTS: usize = 500;

/// Maximum size of a request body in bytes.
///
/// A Function URL in the default `BUFFERED` mode invokes the function
/// synchronously, and the AWS Lambda Invoke API reference limits that payload
/// to 6 MB. The payload carries the body as a JSON string, or as base64 which
/// adds a third, so 4 MiB keeps a batch under the limit after encoding.
///
/// NOTE: the margin is an estimate. A body made mostly of quotes, backslashes
/// or non-ASCII text may grow more when embedded, and Lambda then rejects it
/// with 413 before the detector runs.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Maximum number of command-line arguments kept per process.
pub const MAX_ARGS: usize = 32;

/// Maximum total bytes of the command-line arguments of one process.
pub const MAX_ARGS_BYTES: usize = 4096;

/// Maximum length of `process.exe` in bytes.
///
/// The baseline table's sort key is `V#<exe>\x1f<comm>`, and DynamoDB limits
/// a sort key to 1024 bytes: 1000 bytes of path leave room for the prefix,
/// the separator and a 15-byte command name.
pub const MAX_EXE_LEN: usize = 1000;

/// How far `observed_at` may be ahead of the detector's clock.
///
/// Node clocks are synchronized, so a later time comes from a wrong clock. A
/// future time would also keep its value in the baseline and stretch its
/// scope's learning period until that time.
pub const MAX_CLOCK_SKEW: TimeDelta = TimeDelta::minutes(15);

/// How far `observed_at` may be behind the detector's clock.
///
/// The agent retries an event for minutes, not days, before it drops it, so a
/// day-old time comes from a wrong clock. A past time could also fall inside
/// a learning period that has ended, which would learn a new value silently.
pub const MAX_EVENT_AGE: TimeDelta = TimeDelta::hours(24);

const MAX_ID_LEN: usize = 128;
/// Maximum length in bytes of a Kubernetes or cluster name that goes into a
/// baseline key.
pub const MAX_NAME_LEN: usize = 253;
const MAX_PATH_LEN: usize = 4096;

/// Maximum length of `container.image` in bytes. Kubernetes sets no limit,
/// so the agent leaves out a longer image rather than send an invalid event.
pub const MAX_IMAGE_LEN: usize = 4096;
const MAX_COMM_LEN: usize = 15;

/// Bytes of an offending value that an error message repeats.
const MAX_VALUE_ECHO: usize = 80;

/// Bytes of a decoder's message that an error keeps, because the decoder
/// repeats whole values.
const MAX_DECODE_MESSAGE: usize = 300;

/// Why a batch or an event was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValidationError {
    /// The body is not JSON of the batch shape.
    #[error(
        "invalid batch: {0}: send a JSON object \
         {{\"schema\": {SCHEMA_VERSION}, \"node\": {{...}}, \"events\": [...]}}"
    )]
    Malformed(String),
    /// The batch declares a schema version this detector does not speak.
    #[error("unsupported schema version {0}: this detector accepts schema {SCHEMA_VERSION}")]
    UnsupportedSchema(u32),
    /// The body is larger than [`MAX_BATCH_BYTES`].
    #[error(
        "request body of {0} bytes exceeds the limit of {MAX_BATCH_BYTES} bytes: \
         split the batch"
    )]
    TooLarge(usize),
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
        expected: String,
    },
}

impl ValidationError {
    fn field(field: &'static str, value: impl Into<String>, expected: impl Into<String>) -> Self {
        let mut value = value.into();
        truncate_utf8(&mut value, MAX_VALUE_ECHO);
        ValidationError::Field {
            field,
            value,
            expected: expected.into(),
        }
    }
}

impl BatchEnvelope {
    /// Parses a POST body, checking the parts that apply to the whole batch.
    pub fn parse(body: &[u8]) -> Result<BatchEnvelope, ValidationError> {
        if body.len() > MAX_BATCH_BYTES {
            return Err(ValidationError::TooLarge(body.len()));
        }
        let envelope = match decode::<BatchEnvelope>(body, true) {
            Ok(envelope) => envelope,
            Err(message) => {
                // A newer schema may change the shape, so its version explains
                // the failure better than the first field that broke.
                if let Some(schema) = peek_schema(body)
                    && schema != SCHEMA_VERSION
                {
                    return Err(ValidationError::UnsupportedSchema(schema));
                }
                return Err(ValidationError::Malformed(message));
            }
        };
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
        check_id("node.boot_id", &self.boot_id)?;
        if let Some(version) = &self.agent_version {
            check_text("node.agent_version", version, MAX_NAME_LEN)?;
        }
        if let Some(hook) = &self.hook {
            check_text("node.hook", hook, MAX_NAME_LEN)?;
        }
        Ok(())
    }
}

impl TokenRead {
    /// Decodes and checks one event of a [`BatchEnvelope`] received at `now`.
    ///
    /// On error, returns the event's `event_id` when it could be read and is
    /// valid, so the caller can report the outcome against it.
    pub fn parse(
        raw: &RawValue,
        now: DateTime<Utc>,
    ) -> Result<TokenRead, (Option<String>, ValidationError)> {
        match decode::<TokenRead>(raw.get().as_bytes(), false) {
            Ok(event) => match event.validate(now) {
                Ok(()) => Ok(event),
                Err(error) => {
                    let event_id = Some(event.event_id).filter(|id| is_valid_id(id));
                    Err((event_id, error))
                }
            },
            Err(message) => Err((peek_event_id(raw), ValidationError::MalformedEvent(message))),
        }
    }

    /// Checks the values that serde's types do not constrain, with
    /// `observed_at` compared to `now`.
    ///
    /// Process names, paths and arguments may contain any character but NUL,
    /// because a process chooses them: rejecting them would let it hide.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<(), ValidationError> {
        check_id("event_id", &self.event_id)?;
        check_observed_at(self.observed_at, now)?;
        check_name("cluster", &self.cluster)?;
        check_path("token.path", &self.token.path, MAX_PATH_LEN)?;
        if self.count == 0 {
            return Err(ValidationError::field(
                "count",
                "0",
                "expected at least 1 read",
            ));
        }
        self.process.validate(&READER)?;
        if let Some(parent) = &self.process.parent {
            parent.validate(&PARENT)?;
            if let Some(grandparent) = &parent.parent {
                return Err(ValidationError::field(
                    "process.parent.parent",
                    grandparent.exe.as_str(),
                    "expected no parent of the parent: send only the reader and its parent",
                ));
            }
        }
        if let Some(container) = &self.container {
            container.validate()?;
        }
        if let Some(pod) = &self.pod {
            pod.validate()?;
        }
        Ok(())
    }
}

/// Field names of a process in errors, which differ between the reader and
/// its parent.
struct ProcessFields {
    comm: &'static str,
    exe: &'static str,
    args: &'static str,
}

const READER: ProcessFields = ProcessFields {
    comm: "process.comm",
    exe: "process.exe",
    args: "process.args",
};

const PARENT: ProcessFields = ProcessFields {
    comm: "process.parent.comm",
    exe: "process.parent.exe",
    args: "process.parent.args",
};

impl Process {
    fn validate(&self, fields: &ProcessFields) -> Result<(), ValidationError> {
        if self.comm.is_empty() || self.comm.len() > MAX_COMM_LEN || self.comm.contains('\0') {
            return Err(ValidationError::field(
                fields.comm,
                self.comm.as_str(),
                "expected the kernel command name, 1 to 15 bytes without NUL",
            ));
        }
        check_path(fields.exe, &self.exe, MAX_EXE_LEN)?;
        if self.args.len() > MAX_ARGS {
            return Err(ValidationError::field(
                fields.args,
                format!("{} entries", self.args.len()),
                format!("expected at most {MAX_ARGS} arguments: truncate and set args_truncated"),
            ));
        }
        let bytes: usize = self.args.iter().map(String::len).sum();
        if bytes > MAX_ARGS_BYTES {
            return Err(ValidationError::field(
                fields.args,
                format!("{bytes} bytes"),
                format!(
                    "expected at most {MAX_ARGS_BYTES} bytes of arguments: \
                     truncate and set args_truncated"
                ),
            ));
        }
        if let Some(arg) = self.args.iter().find(|arg| arg.contains('\0')) {
            return Err(ValidationError::field(
                fields.args,
                arg.as_str(),
                "expected arguments without NUL: split the command line at each NUL",
            ));
        }
        Ok(())
    }
}

impl Container {
    fn validate(&self) -> Result<(), ValidationError> {
        check_id("container.id", &self.id)?;
        if let Some(runtime) = &self.runtime {
            check_name("container.runtime", runtime)?;
        }
        if let Some(name) = &self.name {
            check_name("container.name", name)?;
        }
        if let Some(image) = &self.image {
            check_text("container.image", image, MAX_IMAGE_LEN)?;
        }
        Ok(())
    }
}

impl Pod {
    fn validate(&self) -> Result<(), ValidationError> {
        check_id("pod.uid", &self.uid)?;
        if let Some(namespace) = &self.namespace {
            check_name("pod.namespace", namespace)?;
        }
        if let Some(name) = &self.name {
            check_name("pod.name", name)?;
        }
        if let Some(service_account) = &self.service_account {
            check_name("pod.service_account", service_account)?;
        }
        if let Some(owner) = &self.owner {
            check_name("pod.owner.kind", &owner.kind)?;
            check_name("pod.owner.name", &owner.name)?;
        }
        Ok(())
    }
}

/// Decodes a JSON object, naming the path of the field that failed.
///
/// Serde would also read an array as a struct's fields in order, so anything
/// but an object is rejected first. `with_position` keeps the decoder's line
/// and column, which are only useful for a whole body.
fn decode<T: DeserializeOwned>(text: &[u8], with_position: bool) -> Result<T, String> {
    let start = text.trim_ascii_start();
    if start.first() != Some(&b'{') {
        let prefix = &start[..start.len().min(MAX_VALUE_ECHO)];
        let mut found = String::from_utf8_lossy(prefix).into_owned();
        truncate_utf8(&mut found, MAX_VALUE_ECHO);
        return Err(format!("expected a JSON object, found {found:?}"));
    }

    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let (path, error) = match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => match deserializer.end() {
            Ok(()) => return Ok(value),
            Err(error) => (String::new(), error),
        },
        Err(error) => (error.path().to_string(), error.into_inner()),
    };

    let mut message = error.to_string();
    if !with_position && error.line() != 0 {
        let position = format!(" at line {} column {}", error.line(), error.column());
        if let Some(kept) = message.strip_suffix(&position) {
            message.truncate(kept.len());
        }
    }
    truncate_utf8(&mut message, MAX_DECODE_MESSAGE);
    // A syntax error between fields leaves the path at `?`, and the position
    // locates such an error instead.
    if path.is_empty() || path == "." || path.contains('?') {
        return Err(message);
    }
    Err(format!("{path}: {message}"))
}

/// Reads the `schema` of a body that failed to decode as a whole.
fn peek_schema(body: &[u8]) -> Option<u32> {
    #[derive(Deserialize)]
    struct Peek {
        schema: u32,
    }
    serde_json::from_slice::<Peek>(body)
        .ok()
        .map(|peek| peek.schema)
}

/// Reads `event_id` from an event that failed to decode as a whole.
fn peek_event_id(raw: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct Peek {
        event_id: String,
    }
    serde_json::from_str::<Peek>(raw.get())
        .ok()
        .map(|peek| peek.event_id)
        .filter(|id| is_valid_id(id))
}

/// Decodes `observed_at` as chrono does, with an error that shows the value.
pub(crate) fn deserialize_time<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<DateTime<Utc>, D::Error> {
    let mut text = String::deserialize(deserializer)?;
    text.parse::<DateTime<Utc>>().map_err(|error| {
        truncate_utf8(&mut text, MAX_VALUE_ECHO);
        D::Error::custom(format_args!(
            "invalid time {text:?} ({error}): expected RFC 3339, such as 2026-12-04T09:15:02Z"
        ))
    })
}

fn check_observed_at(
    observed_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), ValidationError> {
    let value = || observed_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    if observed_at > now + MAX_CLOCK_SKEW {
        return Err(ValidationError::field(
            "observed_at",
            value(),
            format!(
                "expected at most {} minutes after the detector's time {}: fix the node's clock",
                MAX_CLOCK_SKEW.num_minutes(),
                now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ));
    }
    if observed_at < now - MAX_EVENT_AGE {
        return Err(ValidationError::field(
            "observed_at",
            value(),
            format!(
                "expected at most {} hours before the detector's time {}: \
                 fix the node's clock or drop events this old",
                MAX_EVENT_AGE.num_hours(),
                now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ));
    }
    Ok(())
}

fn is_valid_id(value: &str) -> bool {
    check_id("event_id", value).is_ok()
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

/// Checks a name that becomes part of a baseline scope key, whose parts are
/// joined with `/`.
/// Checks a name that goes into a baseline key: 1 to [`MAX_NAME_LEN`] bytes
/// without control characters or `/`, which separates the key's parts.
pub fn is_valid_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_NAME_LEN
        && !value.chars().any(|c| c == '/' || c.is_control())
}

fn check_name(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if !is_valid_name(value) {
        return Err(ValidationError::field(
            field,
            value,
            "expected a Kubernetes name of 1 to 253 bytes without '/' or control characters",
        ));
    }
    Ok(())
}

fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(ValidationError::field(
            field,
            value,
            format!("expected 1 to {max} bytes without control characters"),
        ));
    }
    Ok(())
}

fn check_path(field: &'static str, value: &str, max: usize) -> Result<(), ValidationError> {
    if !value.starts_with('/') {
        return Err(ValidationError::field(
            field,
            value,
            "expected an absolute path",
        ));
    }
    if value.len() > max {
        return Err(ValidationError::field(
            field,
            value,
            format!(
                "expected at most {max} bytes, but the path has {}: truncate it",
                value.len()
            ),
        ));
    }
    if value.contains('\0') {
        return Err(ValidationError::field(
            field,
            value,
            "expected a path without NUL, which no kernel path contains",
        ));
    }
    Ok(())
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
