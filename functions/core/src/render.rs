//! Alert text for a finding, per delivery protocol.

use std::borrow::Cow;
use std::fmt::Write;

use crate::finding::{Finding, Rule};

/// An alert ready for a notifier: SNS sends `default` to protocols without a
/// part of their own and `email` to email subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertMessage {
    /// Email subject, under 100 characters as SNS requires.
    pub subject: String,
    /// One line for SMS, queues and other subscribers.
    pub default: String,
    /// A readable report for email.
    pub email: String,
    /// Message attributes for subscription filter policies.
    pub attributes: Vec<(&'static str, String)>,
}

const SUBJECT_MAX: usize = 99;

/// Renders the alert for a finding.
pub fn render_alert(finding: &Finding) -> AlertMessage {
    let severity = finding.severity.as_str().to_uppercase();
    let mut subject = format!(
        "[tokenguard {severity}] {} read the AWS token of {}",
        printable(&finding.process.comm),
        where_(finding)
    );
    if subject.chars().count() > SUBJECT_MAX {
        subject = subject.chars().take(SUBJECT_MAX - 1).collect::<String>() + "…";
    }

    let default = format!(
        "tokenguard {severity}: {} ({}) read the {} token of {} on node {} [{}]",
        printable(&finding.process.exe),
        printable(&finding.process.comm),
        finding.token.kind.as_str(),
        where_(finding),
        finding.node,
        finding.finding_id,
    );

    let mut attributes = vec![
        ("severity", finding.severity.as_str().to_owned()),
        ("cluster", finding.cluster.clone()),
        ("rule", serde_rule(finding.rule)),
    ];
    if let Some(namespace) = finding.pod.as_ref().and_then(|p| p.namespace.clone()) {
        attributes.push(("namespace", namespace));
    }

    AlertMessage {
        subject,
        default,
        email: email_text(finding),
        attributes,
    }
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

fn email_text(finding: &Finding) -> String {
    let mut text = String::new();
    let process = &finding.process;
    let unknown = || "(unknown)".to_owned();

    // Writing to a String cannot fail, so the results are ignored.
    let _ = writeln!(text, "{}", finding.title);
    let _ = writeln!(text, "Severity: {}", finding.severity.as_str());
    let _ = writeln!(text, "Finding: {}", finding.finding_id);
    let _ = writeln!(text, "Observed: {}", finding.observed_at.to_rfc3339());
    let _ = writeln!(text);

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
    }
    let _ = writeln!(text);

    let _ = writeln!(text, "Triage");
    for (number, step) in finding.triage.iter().enumerate() {
        let _ = writeln!(text, "  {}. {}", number + 1, printable(step));
    }
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "MITRE ATT&CK: {} {}, {} {}",
        finding.mitre.tactic.id,
        finding.mitre.tactic.name,
        finding.mitre.technique.id,
        finding.mitre.technique.name
    );
    text
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
        Rule::HostProcessTokenRead => {
            "A process outside every pod read the kubelet's copy of a pod's token. Only the \
             kubelet needs it, so this points to a compromised node. Whoever holds the token can \
             exchange it for the pod's AWS role credentials from anywhere until it expires."
        }
    }
}
