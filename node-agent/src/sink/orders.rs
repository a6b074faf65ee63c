//! Kill orders in the detector's responses, and the reports of what the
//! agent did with them.

use std::collections::HashMap;

use chrono::Utc;
use tokenguard_schema::{
    ActionReport, ActionResult, AgentOrder, BatchResponse, Outcome, TokenRead,
};
use tracing::{info, warn};

use crate::kill::{KillOutcome, Killer, result_name};
use crate::metrics::Metrics;

/// Carries out the kill orders of `response`, the detector's response to a
/// batch of `reads`, and returns a report of each order that names its
/// finding.
///
/// An order is rejected unless it names the reader of its outcome's event,
/// so that a response can only kill a process this agent reported. When two
/// orders name the same process, the second gets the first one's result
/// without a second signal.
pub fn carry_out_orders(
    killer: &Killer,
    metrics: &Metrics,
    reads: &[&TokenRead],
    response: &BatchResponse,
) -> Vec<ActionReport> {
    let mut done: HashMap<(u32, u64), KillOutcome> = HashMap::new();
    let mut reports = Vec::new();
    for outcome in &response.outcomes {
        let Some(order) = &outcome.order else {
            continue;
        };
        let AgentOrder::Kill { pid, start_time } = *order;
        let kill = match check_order_target(reads, &outcome.event_id, pid, start_time) {
            Err(reason) => KillOutcome::failed(reason),
            Ok(()) => done
                .entry((pid, start_time))
                .or_insert_with(|| killer.carry_out(order))
                .clone(),
        };
        metrics.count_order(kill.result);
        log_order(outcome, pid, start_time, &kill);

        let Some(finding_id) = outcome.finding_id.clone() else {
            Metrics::add(&metrics.reports_dropped, 1);
            warn!(
                event_id = %outcome.event_id, pid,
                "kill order came without a finding id; its report cannot be sent"
            );
            continue;
        };
        reports.push(ActionReport {
            finding_id,
            order: order.clone(),
            result: kill.result,
            detail: kill.detail,
            at: Utc::now(),
        });
    }
    reports
}

/// Checks that the order names the process that read the token in event
/// `event_id` of the batch.
fn check_order_target(
    reads: &[&TokenRead],
    event_id: &str,
    pid: u32,
    start_time: u64,
) -> Result<(), String> {
    let Some(read) = reads.iter().find(|read| read.event_id == event_id) else {
        return Err(format!(
            "kill order for pid {pid} rejected: its outcome is for event {event_id}, which \
             the batch did not carry"
        ));
    };
    let reader = &read.process;
    if reader.pid != pid || reader.start_time != start_time {
        return Err(format!(
            "kill order for pid {pid} (start time {start_time}) rejected: event {event_id} was \
             read by pid {} (start time {})",
            reader.pid, reader.start_time
        ));
    }
    Ok(())
}

fn log_order(outcome: &Outcome, pid: u32, start_time: u64, kill: &KillOutcome) {
    let finding_id = outcome.finding_id.as_deref().unwrap_or("-");
    let event_id = outcome.event_id.as_str();
    let result = result_name(kill.result);
    let detail = kill.detail.as_deref().unwrap_or("-");
    match kill.result {
        ActionResult::Killed => info!(
            finding_id,
            event_id, pid, start_time, result, "killed the process on the detector's order"
        ),
        ActionResult::Failed => warn!(
            finding_id,
            event_id, pid, start_time, result, detail, "kill order failed"
        ),
        ActionResult::Exited | ActionResult::PidReused | ActionResult::Disabled => info!(
            finding_id,
            event_id, pid, start_time, result, detail, "kill order not carried out"
        ),
    }
}

#[cfg(test)]
mod tests {
    use tokenguard_core::conformance::sample_read;
    use tokenguard_schema::SCHEMA_VERSION;

    use super::*;
    use crate::kill::KillOrders;

    fn read(event_id: &str, pid: u32, start_time: u64) -> TokenRead {
        let mut read = sample_read("/usr/bin/python3", "python3");
        read.event_id = event_id.to_owned();
        read.process.pid = pid;
        read.process.start_time = start_time;
        read
    }

    fn ordered(event_id: &str, finding_id: Option<&str>, pid: u32, start_time: u64) -> Outcome {
        let mut outcome = Outcome::accepted(event_id, finding_id.map(str::to_owned));
        outcome.order = Some(AgentOrder::Kill { pid, start_time });
        outcome
    }

    fn answer(outcomes: Vec<Outcome>) -> BatchResponse {
        BatchResponse {
            schema: SCHEMA_VERSION,
            outcomes,
        }
    }

    /// Builds a killer that never signals, so orders it accepts end `disabled`.
    fn ignoring() -> Killer {
        Killer::new(KillOrders::Ignore, "/proc")
    }

    #[test]
    fn order_for_reader_carried_out() {
        let metrics = Metrics::default();
        let event = read("b:1", 4242, 99);
        let response = answer(vec![ordered("b:1", Some("tg-1"), 4242, 99)]);

        let reports = carry_out_orders(&ignoring(), &metrics, &[&event], &response);

        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].finding_id, "tg-1");
        assert_eq!(
            reports[0].order,
            AgentOrder::Kill {
                pid: 4242,
                start_time: 99
            }
        );
        assert_eq!(reports[0].result, ActionResult::Disabled);
        assert_eq!(metrics.orders(ActionResult::Disabled), 1);
    }

    #[test]
    fn order_for_other_process_rejected() {
        let metrics = Metrics::default();
        let event = read("b:1", 4242, 99);
        let response = answer(vec![
            ordered("b:1", Some("tg-1"), 4243, 99),
            ordered("b:1", Some("tg-2"), 4242, 100),
        ]);

        let reports = carry_out_orders(&ignoring(), &metrics, &[&event], &response);

        assert_eq!(reports.len(), 2);
        for report in &reports {
            assert_eq!(report.result, ActionResult::Failed, "{report:?}");
            let detail = report.detail.as_deref().unwrap_or_default();
            assert!(
                detail.contains("was read by pid 4242 (start time 99)"),
                "{detail}"
            );
        }
        assert_eq!(metrics.orders(ActionResult::Failed), 2);
    }

    #[test]
    fn order_for_unknown_event_rejected() {
        let metrics = Metrics::default();
        let event = read("b:1", 4242, 99);
        let response = answer(vec![ordered("b:9", Some("tg-1"), 4242, 99)]);

        let reports = carry_out_orders(&ignoring(), &metrics, &[&event], &response);

        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].result, ActionResult::Failed);
        let detail = reports[0].detail.as_deref().unwrap_or_default();
        assert!(detail.contains("event b:9"), "{detail}");
    }

    #[test]
    fn order_without_finding_not_reported() {
        let metrics = Metrics::default();
        let event = read("b:1", 4242, 99);
        let response = answer(vec![ordered("b:1", None, 4242, 99)]);

        let reports = carry_out_orders(&ignoring(), &metrics, &[&event], &response);

        assert!(reports.is_empty(), "{reports:?}");
        assert_eq!(metrics.orders(ActionResult::Disabled), 1);
        assert_eq!(Metrics::get(&metrics.reports_dropped), 1);
    }

    #[test]
    fn outcomes_without_order_ignored() {
        let metrics = Metrics::default();
        let event = read("b:1", 4242, 99);
        let response = answer(vec![Outcome::accepted("b:1", Some("tg-1".to_owned()))]);

        let reports = carry_out_orders(&ignoring(), &metrics, &[&event], &response);

        assert!(reports.is_empty(), "{reports:?}");
        assert_eq!(metrics.orders(ActionResult::Disabled), 0);
    }
}
