//! Event sources other than the kernel probe.

use std::path::{Path, PathBuf};

use futures::Stream;
use thiserror::Error;

use crate::record::OpenRecord;

/// A failure to read a replay file.
#[derive(Debug, Error)]
pub enum ReplayError {
    /// The file could not be read.
    #[error("failed to read replay file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line is not an open record.
    #[error(
        "invalid open record on line {line} of {path}: {source}; expected one JSON object per \
         line with fields such as tgid, comm, exe, path and timestamp_ns"
    )]
    Record {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
}

/// Reads open records from a file of JSON lines, skipping blank lines.
pub fn read_replay_file(path: &Path) -> Result<Vec<OpenRecord>, ReplayError> {
    let contents = std::fs::read_to_string(path).map_err(|source| ReplayError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut records = Vec::new();
    for (index, line) in contents.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(line).map_err(|source| ReplayError::Record {
            path: path.to_path_buf(),
            line: index + 1,
            source,
        })?;
        records.push(record);
    }
    Ok(records)
}

/// Reads a replay file and returns a stream over its records.
pub fn replay_file(
    path: &Path,
) -> Result<impl Stream<Item = OpenRecord> + Send + 'static, ReplayError> {
    Ok(futures::stream::iter(read_replay_file(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parsed_and_blank_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opens.jsonl");
        std::fs::write(&path, "{\"tgid\": 1, \"path\": \"/a\"}\n\n{\"tgid\": 2}\n").unwrap();
        let records = read_replay_file(&path).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].tgid, 2);
    }

    #[test]
    fn bad_line_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opens.jsonl");
        std::fs::write(&path, "{\"tgid\": 1}\n{\"tgid\": \"x\"}\n").unwrap();
        let error = read_replay_file(&path).unwrap_err().to_string();
        assert!(
            error.starts_with("invalid open record on line 2"),
            "{error}"
        );
    }
}
