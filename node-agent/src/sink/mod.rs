//! Destinations of events: stdout, the detector over HTTP, or the embedded engine.

pub mod embedded;
pub mod http;
pub mod orders;
pub mod queue;
pub mod reports;
pub mod sigv4;

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokenguard_schema::TokenRead;
use tracing::error;

pub use embedded::EmbeddedSink;
pub use http::{HttpSink, HttpSinkConfig};

/// A line-oriented output shared by sinks, normally the process's stdout.
pub type SharedWriter = Arc<Mutex<Box<dyn Write + Send>>>;

/// Returns the process's stdout as a [`SharedWriter`].
pub fn stdout_writer() -> SharedWriter {
    Arc::new(Mutex::new(Box::new(std::io::stdout())))
}

/// Writes `value` as one JSON line and flushes.
pub fn write_json_line(writer: &SharedWriter, value: &impl Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    let mut writer = writer.lock().unwrap_or_else(|p| p.into_inner());
    writer.write_all(&line)?;
    writer.flush()
}

/// The configured destination of events.
#[derive(Debug)]
pub enum Sink {
    /// Each event as one JSON line.
    Stdout(StdoutSink),
    Http(HttpSink),
    /// Boxed, because the engine it holds is large beside the other sinks.
    Embedded(Box<EmbeddedSink>),
}

impl Sink {
    /// Hands one event to the sink. Only the embedded sink waits for the
    /// event to be processed.
    pub async fn submit(&self, read: TokenRead) {
        match self {
            Sink::Stdout(sink) => sink.submit(&read),
            Sink::Http(sink) => sink.submit(read),
            Sink::Embedded(sink) => sink.submit(read).await,
        }
    }

    /// Delivers what is still queued and stops.
    pub async fn close(self) {
        if let Sink::Http(sink) = self {
            sink.close().await;
        }
    }
}

/// Prints each event as one JSON line.
#[derive(Clone)]
pub struct StdoutSink {
    writer: SharedWriter,
}

impl std::fmt::Debug for StdoutSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdoutSink").finish_non_exhaustive()
    }
}

impl StdoutSink {
    /// Builds a sink that writes to `writer`.
    pub fn new(writer: SharedWriter) -> StdoutSink {
        StdoutSink { writer }
    }

    /// Writes `read` as one JSON line.
    pub fn submit(&self, read: &TokenRead) {
        if let Err(error) = write_json_line(&self.writer, read) {
            error!(event_id = %read.event_id, error = %error, "failed to write event to stdout");
        }
    }
}
