//! Alert text for a finding, per delivery protocol.

mod chatbot;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt::Write;

pub use chatbot::{
    CHATBOT_DESCRIPTION_MAX_CHARS, CHATBOT_SOURCE, CHATBOT_TEXT_TYPE, CHATBOT_TITLE_MAX_CHARS,
    CHATBOT_VERSION, ChatbotContent, ChatbotError, ChatbotMetadata, ChatbotNotification,
};

use crate::contain::ContainmentDecision;
use crate::correlate::{Correlation, ExchangeFinding, MatchedCall};
use crate::finding::{Finding, Rule, Severity};

/// What a notifier delivers.
#[derive(Debug, Clone, Copy)]
pub enum Alert<'a> {
    /// The first alert for a read finding.
    Finding(&'a Finding),
    /// A follow-up: the finding's severity rose from `from` after its first
    /// alert went out.
    Escalation {
        finding: &'a Finding,
        from: Severity,
    },
    /// An exchange from outside the egress with no read.
    Exchange(&'a ExchangeFinding),
}

impl Alert<'_> {
    pub fn finding_id(&self) -> &str {
        match self {
            Alert::Finding(finding) | Alert::Escalation { finding, .. } => &finding.finding_id,
            Alert::Exchange(finding) => &finding.finding_id,
        }
    }

    pub fn severity(&self) -> Severity {
        match self {
            Alert::Finding(finding) | Alert::Escalation { finding, .. } => finding.severity,
            Alert::Exchange(finding) => finding.severity,
        }
    }

    /// The finding document as JSON.
    pub fn to_json(&self) -> serde_json::Result<String> {
        match self {
            Alert::Finding(finding) | Alert::Escalation { finding, .. } => {
                serde_json::to_string(finding)
            }
            Alert::Exchange(finding) => serde_json::to_string(finding),
        }
    }
}

/// An alert ready for a notifier: SNS sends `default` to protocols without a
/// part of their own, `email` to email subscribers and `chatbot` to HTTPS
/// subscribers, such as AWS Chatbot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertMessage {
    /// Email subject, under 100 characters as SNS requires.
    pub subject: String,
    /// One line for SMS, queues and other subscribers.
    pub default: String,
    /// A readable report for email.
    pub email: String,
    /// The Slack card, as an AWS Chatbot custom notification.
    pub chatbot: ChatbotNotification,
    /// Message attributes for subscription filter policies.
    pub attributes: Vec<(&'static str, String)>,
}

const SUBJECT_MAX: usize = 99;

/// Renders an alert.
pub fn render_alert(alert: &Alert<'_>) -> AlertMessage {
    match alert {
        Alert::Finding(finding) => render_finding(finding, None),
        Alert::Escalation { finding, from } => render_finding(finding, Some(*from)),
        Alert::Exchange(finding) => render_exchange(finding),
    }
}

fn render_finding(finding: &Finding, escalated_from: Option<Severity>) -> AlertMessage {
    let severity = finding.severity.as_str().to_uppercase();
    let lead = match escalated_from {
        Some(from) => format!("[tokenguard {severity}, was {}]", from.as_str()),
        None => format!("[tokenguard {severity}]"),
    };
    let subject = cut_subject(format!(
        "{lead} {} read the AWS token of {}",
        printable(&finding.process.comm),
        where_(finding)
    ));

    let mut default = format!(
        "tokenguard {severity}: {} ({}) read the {} token of {} on node {} [{}]",
        printable(&finding.process.exe),
        printable(&finding.process.comm),
        finding.token.kind.as_str(),
        where_(finding),
        finding.node,
        finding.finding_id,
    );
    if let Some(change) = finding.changes.last() {
        default.push_str(&format!(
            "; raised to {}: {}",
            change.to.as_str(),
            change.reason
        ));
    }

    let mut attributes = vec![
        ("severity", finding.severity.as_str().to_owned()),
        ("cluster", finding.cluster.clone()),
        ("rule", serde_rule(finding.rule)),
    ];
    if let Some(namespace) = finding.pod.as_ref().and_then(|p| p.namespace.clone()) {
        attributes.push(("namespace", namespace));
    }

    AlertMessage {
        chatbot: chatbot::finding_card(finding, escalated_from, &subject),
        subject,
        default,
        email: email_text(finding, escalated_from),
        attributes,
    }
}

fn cut_subject(subject: String) -> String {
    if subject.chars().count() <= SUBJECT_MAX {
        return subject;
    }
    subject.chars().take(SUBJECT_MAX - 1).collect::<String>() + "…"
}

fn serde_rule(rule: Rule) -> String {
    match serde_json::to_value(rule) {
        Ok(serde_json::Value::String(name)) => name,
        _ => String::new(),
    }
}

/// `namespace/pod` when known, else the scope.
fn where_(finding: &Finding) -> String {
    let pod = finding.pod.as_ref();
    match pod.and_then(|p| p.namespace.as_ref().zip(p.name.as_ref())) {
        Some((namespace, name)) => format!("pod {namespace}/{name}"),
        None => finding.scope.describe(),
    }
}

fn email_text(finding: &Finding, escalated_from: Option<Severity>) -> String {
    let mut text = String::new();
    let process = &finding.process;
    let unknown = || "(unknown)".to_owned();

    // Writing to a String cannot fail, so the results are ignored.
    let _ = writeln!(text, "{}", finding.title);
    let _ = writeln!(text, "Severity: {}", finding.severity.as_str());
    let _ = writeln!(text, "Finding: {}", finding.finding_id);
    let _ = writeln!(text, "Observed: {}", finding.observed_at.to_rfc3339());
    let _ = writeln!(text);

    if let Some(from) = escalated_from {
        let _ = writeln!(text, "What changed");
        let _ = writeln!(
            text,
            "Severity rose from {} to {} since the first alert.",
            from.as_str(),
            finding.severity.as_str()
        );
        for change in finding.changes.iter().filter(|change| change.from >= from) {
            let _ = writeln!(
                text,
                "  {}: {} -> {}: {}",
                change.at.to_rfc3339(),
                change.from.as_str(),
                change.to.as_str(),
                printable(&change.reason)
            );
        }
        let _ = writeln!(text);
    }

    let _ = writeln!(text, "What happened");
    let _ = writeln!(
        text,
        "{} (pid {}) opened the {} token at {}.",
        printable(&process.exe),
        process.pid,
        finding.token.kind.as_str(),
        printable(&finding.token.path)
    );
    let _ = writeln!(text, "{}", why_it_matters(finding.rule));
    let _ = writeln!(text);

    let _ = writeln!(text, "Process");
    let _ = writeln!(text, "  exe:     {}", printable(&process.exe));
    let _ = writeln!(text, "  comm:    {}", printable(&process.comm));
    let _ = writeln!(text, "  pid:     {}  uid: {}", process.pid, process.uid);
    let args: Vec<_> = process.args.iter().map(|arg| printable(arg)).collect();
    let args = if process.args_truncated {
        format!("{} …", args.join(" "))
    } else {
        args.join(" ")
    };
    let _ = writeln!(text, "  args:    {args}");
    let parent = process
        .parent
        .as_ref()
        .map(|p| {
            let (exe, comm) = (printable(&p.exe), printable(&p.comm));
            format!("{exe} (pid {}, {comm})", p.pid)
        })
        .unwrap_or_else(unknown);
    let _ = writeln!(text, "  parent:  {parent}");
    let _ = writeln!(text);

    let _ = writeln!(text, "Pod");
    let pod = finding.pod.as_ref();
    let field = |value: Option<&String>| value.cloned().unwrap_or_else(unknown);
    let _ = writeln!(text, "  cluster:         {}", finding.cluster);
    let _ = writeln!(text, "  node:            {}", finding.node);
    let _ = writeln!(
        text,
        "  namespace:       {}",
        field(pod.and_then(|p| p.namespace.as_ref()))
    );
    let _ = writeln!(
        text,
        "  pod:             {}",
        field(pod.and_then(|p| p.name.as_ref()))
    );
    let _ = writeln!(text, "  pod uid:         {}", field(pod.map(|p| &p.uid)));
    let _ = writeln!(
        text,
        "  service account: {}",
        field(pod.and_then(|p| p.service_account.as_ref()))
    );
    let container = finding.container.as_ref();
    let _ = writeln!(
        text,
        "  container:       {}",
        field(container.and_then(|c| c.name.as_ref()))
    );
    let _ = writeln!(
        text,
        "  container id:    {}",
        field(container.map(|c| &c.id))
    );
    let _ = writeln!(
        text,
        "  image:           {}",
        field(container.and_then(|c| c.image.as_ref()))
    );
    let _ = writeln!(text);

    let baseline = &finding.baseline;
    let _ = writeln!(text, "What the baseline knew");
    let _ = writeln!(text, "  scope:    {}", finding.scope.describe());
    let _ = writeln!(
        text,
        "  learning: from {} to {}",
        baseline.scope_first_seen.to_rfc3339(),
        baseline.learning_ended_at.to_rfc3339()
    );
    if baseline.known_values.is_empty() {
        let _ = writeln!(text, "  known processes: none");
    } else {
        let _ = writeln!(text, "  known processes:");
        for known in &baseline.known_values {
            let _ = writeln!(
                text,
                "    {} ({}), last seen {}",
                printable(&known.exe),
                printable(&known.comm),
                known.last_seen.to_rfc3339()
            );
        }
        if baseline.known_values_omitted > 0 {
            let _ = writeln!(
                text,
                "    and {} more, seen earlier",
                baseline.known_values_omitted
            );
        }
    }
    let _ = writeln!(text);

    if let Some(correlation) = &finding.correlation {
        write_correlation(&mut text, correlation);
    }
    write_containment(&mut text, &finding.containment);
    if escalated_from.is_none() && !finding.changes.is_empty() {
        let _ = writeln!(text, "Why this severity");
        for change in &finding.changes {
            let _ = writeln!(
                text,
                "  {} -> {}: {}",
                change.from.as_str(),
                change.to.as_str(),
                printable(&change.reason)
            );
        }
        let _ = writeln!(text);
    }

    write_triage(&mut text, &finding.triage);
    write_mitre(&mut text, &finding.mitre);
    text
}

fn write_triage(text: &mut String, triage: &[String]) {
    let _ = writeln!(text, "Triage");
    for (number, step) in triage.iter().enumerate() {
        let _ = writeln!(text, "  {}. {}", number + 1, printable(step));
    }
    let _ = writeln!(text);
}

fn write_mitre(text: &mut String, mitre: &crate::finding::Mitre) {
    let _ = writeln!(
        text,
        "MITRE ATT&CK: {} {}, {} {}",
        mitre.tactic.id, mitre.tactic.name, mitre.technique.id, mitre.technique.name
    );
}

/// The containment decisions of a finding, one line each, oldest first.
fn write_containment(text: &mut String, decisions: &[ContainmentDecision]) {
    if decisions.is_empty() {
        return;
    }
    let _ = writeln!(text, "Containment");
    for decision in decisions {
        let _ = writeln!(
            text,
            "  {} ({}, at {} severity): {}: {}",
            decision.action.as_str(),
            decision.mode.as_str(),
            decision.severity.as_str(),
            decision.outcome.label(),
            printable(decision.outcome.text())
        );
    }
    let _ = writeln!(text);
}

/// The CloudTrail calls matched to a finding, one paragraph each.
fn write_correlation(text: &mut String, correlation: &Correlation) {
    let _ = writeln!(
        text,
        "CloudTrail exchanges by the {}",
        correlation.subject.describe()
    );
    for call in &correlation.calls {
        write_call(text, call);
    }
    let _ = writeln!(text);
}

fn write_call(text: &mut String, call: &MatchedCall) {
    let times = if call.count > 1 {
        format!(
            "{} to {} ({} calls)",
            call.event_time.to_rfc3339(),
            call.last_event_time.to_rfc3339(),
            call.count
        )
    } else {
        call.event_time.to_rfc3339()
    };
    let field = |value: &Option<String>| {
        value
            .as_deref()
            .map(|value| printable(value).into_owned())
            .unwrap_or_else(|| "(none)".to_owned())
    };
    let mut flags = Vec::new();
    if call.signals.outside_egress {
        flags.push("outside the cluster's egress");
    }
    if call.signals.new_user_agent {
        flags.push("new user agent");
    }
    if call.signals.new_session_name {
        flags.push("new session name");
    }
    let _ = writeln!(text, "  {} at {times}", call.api.as_str());
    let _ = writeln!(text, "    outcome:    {}", printable(&call.outcome));
    let _ = writeln!(text, "    source:     {}", field(&call.source_address));
    let _ = writeln!(text, "    user agent: {}", field(&call.user_agent));
    let _ = writeln!(text, "    role:       {}", field(&call.role_arn));
    let _ = writeln!(text, "    session:    {}", field(&call.session_name));
    if call.pod_name.is_some() || call.pod_uid.is_some() {
        let _ = writeln!(
            text,
            "    pod:        {} (uid {})",
            field(&call.pod_name),
            field(&call.pod_uid)
        );
    }
    if call.caller_arn.is_some() {
        let _ = writeln!(text, "    caller:     {}", field(&call.caller_arn));
    }
    if !flags.is_empty() {
        let _ = writeln!(text, "    unusual:    {}", flags.join(", "));
    }
    let _ = writeln!(text, "    event id:   {}", printable(&call.event_id));
}

fn render_exchange(finding: &ExchangeFinding) -> AlertMessage {
    let severity = finding.severity.as_str().to_uppercase();
    let call = &finding.call;
    let address = call
        .source_address
        .as_deref()
        .map(|address| printable(address).into_owned())
        .unwrap_or_else(|| "(unknown)".to_owned());
    // The address leads, so that a long service account name cannot cut it.
    let subject = cut_subject(format!(
        "[tokenguard {severity}] Token used from {address}: {} of cluster {}",
        finding.subject.short_name(),
        finding.cluster
    ));
    let default = format!(
        "tokenguard {severity}: the token of the {} was exchanged from {address}, outside \
         the cluster's egress, with no process reading it [{}]",
        finding.subject.describe(),
        finding.finding_id
    );

    let mut text = String::new();
    let _ = writeln!(text, "{}", finding.title);
    let _ = writeln!(text, "Severity: {}", finding.severity.as_str());
    let _ = writeln!(text, "Finding: {}", finding.finding_id);
    let _ = writeln!(text, "Observed: {}", finding.observed_at.to_rfc3339());
    let _ = writeln!(text);
    let _ = writeln!(text, "What happened");
    let _ = writeln!(
        text,
        "The token of the {} was exchanged for AWS credentials from {address}, which is \
         outside the cluster's egress, and no process in the cluster read the token near \
         that time. Someone holds a copy of the token.",
        finding.subject.describe()
    );
    let egress = if finding.egress.is_empty() {
        "(none)".to_owned()
    } else {
        finding.egress.join(", ")
    };
    let _ = writeln!(text, "Known egress: {egress}");
    if finding.repeat_count > 0 {
        let _ = writeln!(
            text,
            "{} more exchanges from this address followed, the latest at {}.",
            finding.repeat_count,
            finding.last_seen.to_rfc3339()
        );
    }
    let _ = writeln!(text);
    let _ = writeln!(text, "CloudTrail exchange");
    write_call(&mut text, call);
    let _ = writeln!(text);
    write_triage(&mut text, &finding.triage);
    write_mitre(&mut text, &finding.mitre);

    let mut attributes = vec![
        ("severity", finding.severity.as_str().to_owned()),
        ("cluster", finding.cluster.clone()),
        ("rule", serde_rule(finding.rule)),
    ];
    if let Some(namespace) = &finding.subject.namespace {
        attributes.push(("namespace", namespace.clone()));
    }
    AlertMessage {
        chatbot: chatbot::exchange_card(finding, &subject),
        subject,
        default,
        email: text,
        attributes,
    }
}

/// Escapes the control and bidirectional-formatting characters of a value
/// that a process chose, such as its path or arguments, so that the value
/// cannot start a line of its own in the alert or reorder the text around it.
fn printable(value: &str) -> Cow<'_, str> {
    if !value.chars().any(needs_escape) {
        return Cow::Borrowed(value);
    }
    let mut escaped = String::with_capacity(value.len() + 16);
    for c in value.chars() {
        if needs_escape(c) {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

fn why_it_matters(rule: Rule) -> &'static str {
    match rule {
        Rule::UnfamiliarProcessTokenRead => {
            "This workload never used this process to read its token before. Whoever holds the \
             token can exchange it for the pod's AWS role credentials from anywhere until it \
             expires."
        }
        Rule::ExchangeWithoutRead => {
            "The token was exchanged from outside the cluster with no read near it."
        }
        Rule::HostProcessTokenRead => {
            "A process outside every pod read the kubelet's copy of a pod's token. Only the \
             kubelet needs it, so this points to a compromised node. Whoever holds the token can \
             exchange it for the pod's AWS role credentials from anywhere until it expires."
        }
    }
}
