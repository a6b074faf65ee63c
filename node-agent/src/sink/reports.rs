//! A bounded queue of action reports waiting to go to the detector in the
//! `reports` field of a batch.

use std::collections::VecDeque;

use tokenguard_schema::ActionReport;

/// Maximum bytes that reports add to one POST body. Reports are a few
/// hundred bytes each, so this is hundreds of them, and it leaves the rest
/// of the body limit to events.
pub const MAX_REPORT_BYTES: usize = 64 * 1024;

/// Bytes of `,"reports":[` and `]` around the reports in a batch body.
const REPORTS_FIELD_BYTES: usize = r#","reports":[]"#.len();

/// Result of [`ReportQueue::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportPushed {
    Queued,
    /// The queue was full, so its oldest report was dropped to make room.
    DroppedOldest(Box<ActionReport>),
    /// The report alone adds this many bytes to a body, more than
    /// [`MAX_REPORT_BYTES`], so it was not queued.
    TooLarge(usize),
}

#[derive(Debug)]
struct SizedReport {
    report: ActionReport,
    /// Size of the report's JSON encoding in bytes.
    size: usize,
}

/// Reports waiting to be sent, oldest first.
#[derive(Debug)]
pub struct ReportQueue {
    reports: VecDeque<SizedReport>,
    capacity: usize,
}

impl ReportQueue {
    /// Builds a queue of at most `capacity` reports.
    pub fn new(capacity: usize) -> ReportQueue {
        ReportQueue {
            reports: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Queues `report`, dropping the oldest one when the queue is full.
    pub fn push(&mut self, report: ActionReport) -> ReportPushed {
        let size = serde_json::to_vec(&report).map_or(usize::MAX, |body| body.len());
        if body_size(1, size) > MAX_REPORT_BYTES {
            return ReportPushed::TooLarge(size);
        }
        let dropped = if self.reports.len() >= self.capacity {
            self.reports.pop_front()
        } else {
            None
        };
        self.reports.push_back(SizedReport { report, size });
        match dropped {
            Some(oldest) => ReportPushed::DroppedOldest(Box::new(oldest.report)),
            None => ReportPushed::Queued,
        }
    }

    /// Returns how many of the oldest reports fit in [`MAX_REPORT_BYTES`] of
    /// body, and the bytes they add to it.
    pub fn fitting(&self) -> (usize, usize) {
        let mut count = 0;
        let mut sum = 0;
        for queued in &self.reports {
            if body_size(count + 1, sum + queued.size) > MAX_REPORT_BYTES {
                break;
            }
            count += 1;
            sum += queued.size;
        }
        if count == 0 {
            return (0, 0);
        }
        (count, body_size(count, sum))
    }

    /// Removes and returns the `count` oldest reports.
    pub fn take(&mut self, count: usize) -> Vec<ActionReport> {
        let count = count.min(self.reports.len());
        self.reports
            .drain(..count)
            .map(|queued| queued.report)
            .collect()
    }

    /// Number of queued reports.
    pub fn len(&self) -> usize {
        self.reports.len()
    }

    /// Returns whether no report is queued.
    pub fn is_empty(&self) -> bool {
        self.reports.is_empty()
    }
}

/// Bytes that `count` reports of `sum` bytes in total add to a batch body:
/// the field around them and a comma between two reports.
fn body_size(count: usize, sum: usize) -> usize {
    REPORTS_FIELD_BYTES
        .saturating_add(sum)
        .saturating_add(count.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use tokenguard_schema::{ActionResult, AgentOrder, Batch, Node, SCHEMA_VERSION};

    use super::*;

    fn report(finding_id: &str) -> ActionReport {
        ActionReport {
            finding_id: finding_id.to_owned(),
            order: AgentOrder::Kill {
                pid: 48211,
                start_time: 1834211,
            },
            result: ActionResult::Killed,
            detail: None,
            at: Utc::now(),
        }
    }

    fn encoded_batch(reports: Vec<ActionReport>) -> usize {
        let batch = Batch {
            schema: SCHEMA_VERSION,
            node: Node {
                name: "node-a".to_owned(),
                boot_id: "boot".to_owned(),
                agent_version: None,
                hook: None,
            },
            events: Vec::new(),
            reports,
        };
        serde_json::to_vec(&batch).unwrap().len()
    }

    #[test]
    fn size_matches_encoding() {
        let mut queue = ReportQueue::new(10);
        let reports = [report("tg-1"), report("tg-22"), report("tg-333")];
        for report in reports.iter().cloned() {
            assert_eq!(queue.push(report), ReportPushed::Queued);
        }
        let (count, size) = queue.fitting();
        assert_eq!(count, 3);
        assert_eq!(
            size,
            encoded_batch(reports.to_vec()) - encoded_batch(Vec::new())
        );
    }

    #[test]
    fn full_queue_drops_oldest() {
        let mut queue = ReportQueue::new(2);
        queue.push(report("tg-1"));
        queue.push(report("tg-2"));
        let pushed = queue.push(report("tg-3"));
        let ReportPushed::DroppedOldest(dropped) = pushed else {
            panic!("expected the oldest report dropped, got {pushed:?}");
        };
        assert_eq!(dropped.finding_id, "tg-1");
        let ids: Vec<String> = queue.take(10).into_iter().map(|r| r.finding_id).collect();
        assert_eq!(ids, ["tg-2", "tg-3"]);
        assert!(queue.is_empty());
    }

    #[test]
    fn fitting_stops_at_byte_limit() {
        let mut queue = ReportQueue::new(10_000);
        let report_size = serde_json::to_vec(&report("tg-0000")).unwrap().len();
        let total = 2 * MAX_REPORT_BYTES / report_size;
        for id in 0..total {
            queue.push(report(&format!("tg-{id:04}")));
        }
        let (count, size) = queue.fitting();
        assert!(count < total, "{count} of {total} reports fit");
        assert!(size <= MAX_REPORT_BYTES, "{size} bytes");
        assert!(
            size + report_size + 1 > MAX_REPORT_BYTES,
            "one more report would still fit in {size} bytes"
        );
        assert_eq!(queue.take(count).len(), count);
        assert_eq!(queue.len(), total - count);
    }

    #[test]
    fn oversized_report_rejected() {
        let mut queue = ReportQueue::new(10);
        let huge = report(&"x".repeat(MAX_REPORT_BYTES));
        assert!(matches!(queue.push(huge), ReportPushed::TooLarge(_)));
        assert!(queue.is_empty());
    }
}
