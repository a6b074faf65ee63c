//! Counts of each invocation as CloudWatch metrics, written to stdout in the
//! embedded metric format, which CloudWatch Logs turns into metrics without
//! an API call.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use tokenguard_core::ingest::RecordCounts;

/// Metric namespace in CloudWatch.
pub const NAMESPACE: &str = "tokenguard";

/// Builds the metric document for `counts` at `timestamp_ms`.
pub fn document(counts: &RecordCounts, timestamp_ms: u128) -> Value {
    let values = match serde_json::to_value(counts) {
        Ok(Value::Object(values)) => values,
        _ => Map::new(),
    };
    let metrics: Vec<Value> = values
        .keys()
        .map(|name| json!({"Name": name, "Unit": "Count"}))
        .collect();
    let mut document = values;
    document.insert("Function".to_owned(), json!("cloudtrail"));
    document.insert(
        "_aws".to_owned(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Function"]],
                "Metrics": metrics,
            }],
        }),
    );
    Value::Object(document)
}

/// Writes the metric document for `counts` as one line on stdout.
pub fn emit(counts: &RecordCounts) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis())
        .unwrap_or_default();
    println!("{}", document(counts, now));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_become_metrics() {
        let counts = RecordCounts {
            exchanges: 3,
            ignored: 2,
            ..RecordCounts::default()
        };
        let document = document(&counts, 1_764_583_205_000);
        assert_eq!(document["exchanges"], 3);
        assert_eq!(document["ignored"], 2);
        assert_eq!(document["Function"], "cloudtrail");
        let directive = &document["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        let names: Vec<_> = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|metric| metric["Name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"unknown_cluster"));
        assert_eq!(names.len(), 10);
    }
}
