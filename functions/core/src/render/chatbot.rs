//! The Slack card of an alert: an AWS Chatbot custom notification.
//!
//! AWS Chatbot (now Amazon Q Developer in chat applications) subscribes to
//! the SNS topic with the `https` protocol and turns a message of this shape
//! into a card. The fields follow the event schema on the AWS page "Custom
//! notifications using Amazon Q Developer in chat applications"
//! (docs.aws.amazon.com/chatbot/latest/adminguide/custom-notifs.html).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{printable, where_, why_it_matters};
use crate::correlate::{ExchangeFinding, MatchedCall};
use crate::finding::{Finding, Rule, Severity};

/// The only `version` the schema allows.
pub const CHATBOT_VERSION: &str = "1.0";
/// The only `source` the schema allows.
pub const CHATBOT_SOURCE: &str = "custom";
/// The only `textType` Chatbot supports, which renders markdown the way the
/// target chat client does.
pub const CHATBOT_TEXT_TYPE: &str = "client-markdown";

// NOTE: these two limits are unconfirmed. Other public Chatbot clients cut
// title and description to them, and Chatbot may cut or drop a longer text.
/// Maximum characters of `content.title`.
pub const CHATBOT_TITLE_MAX_CHARS: usize = 250;
/// Maximum characters of `content.description`.
pub const CHATBOT_DESCRIPTION_MAX_CHARS: usize = 8_000;

/// Maximum matched CloudTrail calls listed on a card. The email lists them all.
const CARD_CALLS_MAX: usize = 5;

const DESCRIPTION_CUT_NOTE: &str = "\n… (cut to fit the card: the email has the full report)";

/// An AWS Chatbot custom notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatbotNotification {
    /// Always [`CHATBOT_VERSION`].
    pub version: String,
    /// Always [`CHATBOT_SOURCE`].
    pub source: String,
    /// Event id: the finding id, with the new severity for an escalation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub content: ChatbotContent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ChatbotMetadata>,
}

/// The visible part of a card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChatbotContent {
    /// Always [`CHATBOT_TEXT_TYPE`].
    pub text_type: String,
    pub title: String,
    /// Markdown with the key facts of the alert.
    pub description: String,
    /// Responder actions, shown as a list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub next_steps: Vec<String>,
    /// Tags shown on the card.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
}

/// Threading and context of a card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChatbotMetadata {
    /// Cards with the same thread id go into one chat thread, so a finding's
    /// escalations follow its first alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// ARNs of the IAM roles the alert's CloudTrail calls assumed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related_resources: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub additional_context: BTreeMap<String, String>,
}

/// A reason a notification breaks the custom notification schema.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChatbotError {
    /// `version`, `source` or `content.textType` is not the one value the
    /// schema allows.
    #[error("invalid Chatbot notification: {field} is {value:?}, expected {expected:?}")]
    FixedValue {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    /// A required text is empty.
    #[error("invalid Chatbot notification: {field} is empty")]
    Empty { field: &'static str },
    /// A text is over its limit.
    #[error("invalid Chatbot notification: {field} has {chars} characters, over the {max} limit")]
    TooLong {
        field: &'static str,
        chars: usize,
        max: usize,
    },
}

impl ChatbotNotification {
    /// Checks the fixed values and the lengths of title and description.
    pub fn check(&self) -> Result<(), ChatbotError> {
        for (field, value, expected) in [
            ("version", &self.version, CHATBOT_VERSION),
            ("source", &self.source, CHATBOT_SOURCE),
            (
                "content.textType",
                &self.content.text_type,
                CHATBOT_TEXT_TYPE,
            ),
        ] {
            if value != expected {
                return Err(ChatbotError::FixedValue {
                    field,
                    value: value.clone(),
                    expected,
                });
            }
        }
        for (field, text, max) in [
            (
                "content.title",
                &self.content.title,
                CHATBOT_TITLE_MAX_CHARS,
            ),
            (
                "content.description",
                &self.content.description,
                CHATBOT_DESCRIPTION_MAX_CHARS,
            ),
        ] {
            if text.trim().is_empty() {
                return Err(ChatbotError::Empty { field });
            }
            let chars = text.chars().count();
            if chars > max {
                return Err(ChatbotError::TooLong { field, chars, max });
            }
        }
        Ok(())
    }
}

/// Builds the card of a read finding, or of its escalation from
/// `escalated_from`.
pub(super) fn finding_card(
    finding: &Finding,
    escalated_from: Option<Severity>,
    subject: &str,
) -> ChatbotNotification {
    let mut text = String::new();
    let severity = finding.severity.as_str();
    // Writing to a String cannot fail, so the results are ignored.
    match escalated_from {
        Some(from) => {
            let _ = writeln!(
                text,
                "*Severity:* {severity}, raised from {}",
                from.as_str()
            );
            for change in finding.changes.iter().filter(|change| change.from >= from) {
                let _ = writeln!(
                    text,
                    "• {} → {}: {}",
                    change.from.as_str(),
                    change.to.as_str(),
                    markdown_text(&change.reason)
                );
            }
        }
        None => {
            let _ = writeln!(text, "*Severity:* {severity}");
        }
    }
    write_workload(&mut text, finding);
    write_process(&mut text, finding);
    let _ = writeln!(text, "{}", why_it_matters(finding.rule));
    if let Some(correlation) = &finding.correlation {
        let _ = writeln!(
            text,
            "*CloudTrail exchanges by the {}:*",
            markdown_text(&correlation.subject.describe())
        );
        write_calls(&mut text, &correlation.calls);
    }
    if !finding.containment.is_empty() {
        let _ = writeln!(text, "*Containment:*");
        for decision in &finding.containment {
            let _ = writeln!(
                text,
                "• {} ({}): {}: {}",
                decision.action.as_str(),
                decision.mode.as_str(),
                decision.outcome.label(),
                markdown_text(decision.outcome.text())
            );
        }
    }
    let _ = write!(text, "*Finding:* {}", markdown_code(&finding.finding_id));

    let namespace = finding
        .pod
        .as_ref()
        .and_then(|pod| pod.namespace.as_deref());
    let id = match escalated_from {
        Some(_) => format!("{}-{severity}", finding.finding_id),
        None => finding.finding_id.clone(),
    };
    let roles = finding
        .correlation
        .iter()
        .flat_map(|correlation| &correlation.calls)
        .filter_map(|call| call.role_arn.as_deref());
    let mut context = BTreeMap::from([("node".to_owned(), finding.node.clone())]);
    if let Some(pod) = finding.pod.as_ref().and_then(|pod| pod.name.as_ref()) {
        context.insert("pod".to_owned(), pod.clone());
    }
    Card {
        id,
        finding_id: &finding.finding_id,
        rule: finding.rule,
        severity: finding.severity,
        cluster: &finding.cluster,
        namespace,
        subject,
        description: text,
        triage: &finding.triage,
        roles: roles.collect(),
        context,
    }
    .build()
}

/// Builds the card of an exchange with no read.
pub(super) fn exchange_card(finding: &ExchangeFinding, subject: &str) -> ChatbotNotification {
    let call = &finding.call;
    let mut text = String::new();
    let _ = writeln!(text, "*Severity:* {}", finding.severity.as_str());
    let _ = writeln!(
        text,
        "*Service account:* {} of cluster {}",
        markdown_code(&finding.subject.short_name()),
        markdown_code(&finding.cluster)
    );
    let _ = writeln!(
        text,
        "*Source address:* {}, outside the cluster's egress",
        optional_code(call.source_address.as_deref())
    );
    let _ = writeln!(
        text,
        "*Exchange:* {} at {}, {}",
        markdown_code(call.api.as_str()),
        call.event_time.to_rfc3339(),
        markdown_text(&call.outcome)
    );
    if let Some(role) = &call.role_arn {
        let _ = writeln!(text, "*Role:* {}", markdown_code(role));
    }
    if let Some(session) = &call.session_name {
        let _ = writeln!(text, "*Session name:* {}", markdown_code(session));
    }
    if let Some(agent) = &call.user_agent {
        let _ = writeln!(text, "*User agent:* {}", markdown_code(agent));
    }
    if finding.repeat_count > 0 {
        let _ = writeln!(
            text,
            "*Repeats:* {} more exchanges from this address, the latest at {}",
            finding.repeat_count,
            finding.last_seen.to_rfc3339()
        );
    }
    let _ = writeln!(
        text,
        "No process in the cluster read the token near that time, so someone holds a copy \
         of the token."
    );
    let _ = write!(text, "*Finding:* {}", markdown_code(&finding.finding_id));

    let context = BTreeMap::from([("egress".to_owned(), finding.egress.join(","))]);
    Card {
        id: finding.finding_id.clone(),
        finding_id: &finding.finding_id,
        rule: finding.rule,
        severity: finding.severity,
        cluster: &finding.cluster,
        namespace: finding.subject.namespace.as_deref(),
        subject,
        description: text,
        triage: &finding.triage,
        roles: call.role_arn.as_deref().into_iter().collect(),
        context,
    }
    .build()
}

/// The parts every card has, before they are fitted to the schema.
struct Card<'a> {
    id: String,
    finding_id: &'a str,
    rule: Rule,
    severity: Severity,
    cluster: &'a str,
    namespace: Option<&'a str>,
    subject: &'a str,
    description: String,
    triage: &'a [String],
    roles: Vec<&'a str>,
    context: BTreeMap<String, String>,
}

impl Card<'_> {
    fn build(self) -> ChatbotNotification {
        let rule = super::serde_rule(self.rule);
        let mut keywords = vec![self.severity.as_str().to_owned(), self.cluster.to_owned()];
        keywords.extend(self.namespace.map(str::to_owned));
        keywords.push(rule.clone());
        keywords.retain(|keyword| !keyword.is_empty());

        let mut related_resources: Vec<String> = Vec::new();
        for role in self.roles {
            if !related_resources.iter().any(|known| known == role) {
                related_resources.push(role.to_owned());
            }
        }
        let mut context = self.context;
        context.insert("findingId".to_owned(), self.finding_id.to_owned());
        context.retain(|_, value| !value.is_empty());

        let title = cut_chars(&markdown_text(self.subject), CHATBOT_TITLE_MAX_CHARS, "…");
        ChatbotNotification {
            version: CHATBOT_VERSION.to_owned(),
            source: CHATBOT_SOURCE.to_owned(),
            id: Some(self.id),
            content: ChatbotContent {
                text_type: CHATBOT_TEXT_TYPE.to_owned(),
                title: title.clone(),
                description: cut_chars(
                    &self.description,
                    CHATBOT_DESCRIPTION_MAX_CHARS,
                    DESCRIPTION_CUT_NOTE,
                ),
                next_steps: self.triage.iter().map(|step| markdown_text(step)).collect(),
                keywords,
            },
            metadata: Some(ChatbotMetadata {
                thread_id: Some(self.finding_id.to_owned()),
                summary: Some(title),
                event_type: Some(rule),
                related_resources,
                additional_context: context,
            }),
        }
    }
}

fn write_workload(text: &mut String, finding: &Finding) {
    let pod = finding.pod.as_ref();
    let named = pod.and_then(|pod| pod.namespace.as_ref().zip(pod.name.as_ref()));
    match named {
        Some((namespace, name)) => {
            let _ = writeln!(
                text,
                "*Pod:* {} of cluster {}, node {}",
                markdown_code(&format!("{namespace}/{name}")),
                markdown_code(&finding.cluster),
                markdown_code(&finding.node)
            );
        }
        None => {
            let _ = writeln!(
                text,
                "*Where:* {}, node {}",
                markdown_text(&where_(finding)),
                markdown_code(&finding.node)
            );
        }
    }
    if let Some(account) = pod.and_then(|pod| pod.service_account.as_ref()) {
        let _ = writeln!(text, "*Service account:* {}", markdown_code(account));
    }
    if let Some(container) = &finding.container {
        let name = optional_code(container.name.as_deref());
        match &container.image {
            Some(image) => {
                let _ = writeln!(text, "*Container:* {name}, image {}", markdown_code(image));
            }
            None => {
                let _ = writeln!(text, "*Container:* {name}");
            }
        }
    }
}

fn write_process(text: &mut String, finding: &Finding) {
    let process = &finding.process;
    let _ = writeln!(
        text,
        "*Process:* {} (comm {}, pid {}, uid {})",
        markdown_code(&process.exe),
        markdown_code(&process.comm),
        process.pid,
        process.uid
    );
    if let Some(parent) = &process.parent {
        let _ = writeln!(
            text,
            "*Parent:* {} (pid {})",
            markdown_code(&parent.exe),
            parent.pid
        );
    }
    let _ = writeln!(
        text,
        "*Token:* {} at {}",
        finding.token.kind.as_str(),
        markdown_code(&finding.token.path)
    );
}

/// Writes one line per call, at most [`CARD_CALLS_MAX`] of them.
fn write_calls(text: &mut String, calls: &[MatchedCall]) {
    for call in calls.iter().take(CARD_CALLS_MAX) {
        let mut line = format!(
            "• {} from {} at {}, {}",
            markdown_code(call.api.as_str()),
            optional_code(call.source_address.as_deref()),
            call.event_time.to_rfc3339(),
            markdown_text(&call.outcome)
        );
        if call.count > 1 {
            let _ = write!(line, ", {} calls", call.count);
        }
        if call.signals.outside_egress {
            line.push_str(", outside the cluster's egress");
        }
        if call.signals.new_user_agent {
            let _ = write!(
                line,
                ", new user agent {}",
                optional_code(call.user_agent.as_deref())
            );
        }
        if call.signals.new_session_name {
            let _ = write!(
                line,
                ", new session name {}",
                optional_code(call.session_name.as_deref())
            );
        }
        let _ = writeln!(text, "{line}");
    }
    if calls.len() > CARD_CALLS_MAX {
        let _ = writeln!(
            text,
            "• and {} more in the email",
            calls.len() - CARD_CALLS_MAX
        );
    }
}

/// Escapes a text for Chatbot's markdown: control characters as in the email,
/// and `<` and `>` replaced with `‹` and `›`, because Slack reads
/// `<url|label>` as a link and `<!channel>` as a mention.
fn markdown_text(text: &str) -> String {
    printable(text).replace('<', "‹").replace('>', "›")
}

/// Shows a value that a process or a caller chose as inline code, so that
/// markdown in it shows as typed. A backtick, which would end the code span,
/// becomes `ˋ` (U+02CB), and the email keeps the exact value.
fn markdown_code(value: &str) -> String {
    if value.is_empty() {
        return "(empty)".to_owned();
    }
    format!("`{}`", markdown_text(value).replace('`', "ˋ"))
}

fn optional_code(value: Option<&str>) -> String {
    value.map_or_else(|| "(unknown)".to_owned(), markdown_code)
}

/// Cuts `text` to at most `max` characters, ending it with `note`.
fn cut_chars(text: &str, max: usize, note: &str) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let keep = max.saturating_sub(note.chars().count());
    text.chars().take(keep).collect::<String>() + note
}
