//! [`Notifier`] that publishes alerts to an SNS topic.
//!
//! Each alert is one `Publish` with `MessageStructure=json`, so email
//! subscribers get the readable report, HTTPS subscribers get the alert as
//! an AWS Chatbot custom notification, which AWS Chatbot shows as a Slack
//! card, and every other protocol gets the one-line `default` text. Message
//! attributes `severity`, `cluster`, `namespace` and `rule` let subscriptions
//! filter alerts.

use aws_sdk_sns::Client;
use aws_sdk_sns::types::MessageAttributeValue;
use thiserror::Error;
use tokenguard_core::{
    Alert, AlertMessage, ChatbotError, ChatbotNotification, Notifier, StoreError, render_alert,
};
use tracing::debug;

use crate::aws_error::{Resource, classify};

/// Maximum size of an SNS message, message attributes included: 256 KiB.
pub const MAX_PUBLISH_BYTES: usize = 262_144;

/// SNS requires subjects shorter than 100 characters.
pub const MAX_SUBJECT_CHARS: usize = 99;

const TRUNCATION_NOTE: &str =
    "\n[report truncated to fit the SNS size limit: the full finding is in the findings table]\n";

/// A `Publish` request ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub subject: String,
    /// JSON object with string members `default`, `email` and `https`. The
    /// `https` member contains the AWS Chatbot notification as JSON.
    pub message: String,
    /// String message attributes, without empty values, which SNS rejects.
    pub attributes: Vec<(&'static str, String)>,
}

/// A reason an alert cannot become a valid SNS message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PublicationError {
    /// The JSON message is not an object with a string `default` member, so SNS
    /// would reject it.
    #[error("invalid SNS message {message:?}: expected a JSON object with a string \"default\"")]
    MissingDefault { message: String },
    /// The message does not parse as JSON.
    #[error("invalid SNS message: not JSON ({0}); fix the alert rendering")]
    InvalidJson(String),
    /// The `https` member is not a string that contains a valid AWS Chatbot
    /// custom notification, so Chatbot would drop it.
    #[error("invalid \"https\" part of the SNS message: {reason}; fix the alert rendering")]
    InvalidChatbot { reason: String },
    /// The message stays over the size limit even with the email report cut.
    #[error(
        "SNS message of {bytes} bytes exceeds the {MAX_PUBLISH_BYTES}-byte limit: \
         shorten the default text"
    )]
    TooLarge { bytes: usize },
}

impl From<ChatbotError> for PublicationError {
    fn from(error: ChatbotError) -> PublicationError {
        PublicationError::InvalidChatbot {
            reason: error.to_string(),
        }
    }
}

/// Builds the `Publish` request for an alert and checks it as SNS and AWS
/// Chatbot would.
pub fn publication(alert: &AlertMessage) -> Result<Publication, PublicationError> {
    let attributes: Vec<_> = alert
        .attributes
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .cloned()
        .collect();
    let subject = sanitize_subject(&alert.subject);
    let overhead = subject.len()
        + attributes
            .iter()
            .map(|(name, value)| name.len() + value.len() + "String".len())
            .sum::<usize>();
    let budget = MAX_PUBLISH_BYTES.saturating_sub(overhead);
    // The card is already within Chatbot's limits, so only the email is cut.
    alert.chatbot.check()?;
    let https = serde_json::to_string(&alert.chatbot)
        .map_err(|error| PublicationError::InvalidJson(error.to_string()))?;
    let message = json_message(&alert.default, &alert.email, &https, budget)?;
    check_message(&message)?;
    Ok(Publication {
        subject,
        message,
        attributes,
    })
}

/// Serializes the per-protocol message, cutting the email report until the
/// whole message fits in `budget` bytes.
fn json_message(
    default: &str,
    email: &str,
    https: &str,
    budget: usize,
) -> Result<String, PublicationError> {
    let encode = |email: &str| {
        serde_json::json!({ "default": default, "email": email, "https": https }).to_string()
    };
    let mut message = encode(email);
    let mut kept_bytes = email.len();
    while message.len() > budget {
        // JSON escaping never makes a character shorter, so cutting the excess
        // from the raw text removes at least as many encoded bytes.
        let excess = message.len() - budget + TRUNCATION_NOTE.len();
        if excess >= kept_bytes {
            return Err(PublicationError::TooLarge {
                bytes: message.len() + (MAX_PUBLISH_BYTES - budget),
            });
        }
        kept_bytes -= excess;
        while !email.is_char_boundary(kept_bytes) {
            kept_bytes -= 1;
        }
        message = encode(&format!("{}{TRUNCATION_NOTE}", &email[..kept_bytes]));
    }
    Ok(message)
}

/// Checks that the message is a JSON object whose `default` member is a
/// string, as SNS requires for `MessageStructure=json`. An `https` member,
/// when present, must be a string that contains an AWS Chatbot custom
/// notification with no fields beyond the documented ones, which
/// [`ChatbotNotification::check`] accepts.
pub fn check_message(message: &str) -> Result<(), PublicationError> {
    let value: serde_json::Value = serde_json::from_str(message)
        .map_err(|error| PublicationError::InvalidJson(error.to_string()))?;
    if !matches!(value.get("default"), Some(serde_json::Value::String(_))) {
        return Err(PublicationError::MissingDefault {
            message: message.chars().take(80).collect(),
        });
    }
    match value.get("https") {
        None => Ok(()),
        Some(serde_json::Value::String(https)) => {
            let card: ChatbotNotification =
                serde_json::from_str(https).map_err(|error| PublicationError::InvalidChatbot {
                    reason: format!("not a custom notification ({error})"),
                })?;
            Ok(card.check()?)
        }
        Some(_) => Err(PublicationError::InvalidChatbot {
            reason: "expected a string holding the notification as JSON".to_owned(),
        }),
    }
}

/// Makes a subject SNS accepts: printable ASCII, no line breaks or control
/// characters, fewer than 100 characters.
///
/// An ellipsis becomes `...`, whitespace runs become one space and any other
/// character outside printable ASCII becomes `?`.
pub fn sanitize_subject(subject: &str) -> String {
    let mut ascii = String::with_capacity(subject.len());
    for c in subject.chars() {
        match c {
            '…' => ascii.push_str("..."),
            c if c.is_whitespace() || c.is_control() => {
                if !ascii.ends_with(' ') {
                    ascii.push(' ');
                }
            }
            c if c.is_ascii_graphic() => ascii.push(c),
            _ => ascii.push('?'),
        }
    }
    let trimmed = ascii.trim();
    if trimmed.is_empty() {
        return "tokenguard alert".to_owned();
    }
    if trimmed.len() <= MAX_SUBJECT_CHARS {
        return trimmed.to_owned();
    }
    // Every character is ASCII here, so byte offsets are character offsets.
    format!("{}...", trimmed[..MAX_SUBJECT_CHARS - 3].trim_end())
}

/// Publishes alerts to one SNS topic.
#[derive(Debug, Clone)]
pub struct SnsNotifier {
    client: Client,
    topic_arn: String,
}

impl SnsNotifier {
    pub fn new(client: Client, topic_arn: impl Into<String>) -> SnsNotifier {
        SnsNotifier {
            client,
            topic_arn: topic_arn.into(),
        }
    }

    pub fn topic_arn(&self) -> &str {
        &self.topic_arn
    }
}

impl Notifier for SnsNotifier {
    async fn notify(&self, alert: &Alert<'_>) -> Result<(), StoreError> {
        let finding_id = alert.finding_id();
        let rendered = render_alert(alert);
        let publication = publication(&rendered).map_err(|error| StoreError::Permanent {
            operation: "SNS Publish",
            message: format!("finding {finding_id}: {error}"),
        })?;

        let mut request = self
            .client
            .publish()
            .topic_arn(&self.topic_arn)
            .message_structure("json")
            .subject(&publication.subject)
            .message(&publication.message);
        for (name, value) in &publication.attributes {
            let attribute = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|error| StoreError::Permanent {
                    operation: "SNS Publish",
                    message: format!("invalid message attribute {name}: {error}"),
                })?;
            request = request.message_attributes(*name, attribute);
        }
        let resource = Resource {
            kind: "SNS topic",
            name: &self.topic_arn,
            setting: "TOKENGUARD_TOPIC_ARN",
        };
        let output = request
            .send()
            .await
            .map_err(|error| classify("SNS Publish", resource, &error))?;
        debug!(
            finding_id,
            message_id = output.message_id().unwrap_or_default(),
            "alert published"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tokenguard_core::{ChatbotContent, ChatbotMetadata};

    use super::*;

    fn card() -> ChatbotNotification {
        ChatbotNotification {
            version: "1.0".to_owned(),
            source: "custom".to_owned(),
            id: Some("tg-1".to_owned()),
            content: ChatbotContent {
                text_type: "client-markdown".to_owned(),
                title: "[tokenguard MEDIUM] curl read the AWS token".to_owned(),
                description: "*Severity:* medium\n*Process:* `curl \"x\"`".to_owned(),
                next_steps: vec!["Check the pod.".to_owned()],
                keywords: vec!["medium".to_owned()],
            },
            metadata: Some(ChatbotMetadata {
                thread_id: Some("tg-1".to_owned()),
                summary: None,
                event_type: None,
                related_resources: Vec::new(),
                additional_context: Default::default(),
            }),
        }
    }

    fn alert(subject: &str, default: &str, email: &str) -> AlertMessage {
        AlertMessage {
            subject: subject.to_owned(),
            default: default.to_owned(),
            email: email.to_owned(),
            chatbot: card(),
            attributes: vec![
                ("severity", "medium".to_owned()),
                ("cluster", "prod-eu".to_owned()),
                ("rule", "unfamiliar_process_token_read".to_owned()),
                ("namespace", String::new()),
            ],
        }
    }

    fn https_card(message: &str) -> ChatbotNotification {
        let value: serde_json::Value = serde_json::from_str(message).unwrap();
        let https = value["https"].as_str().expect("https is a string");
        serde_json::from_str(https).unwrap()
    }

    #[test]
    fn message_is_json_with_default() {
        let built = publication(&alert("s", "line \"quoted\"\n", "report\n\tindented")).unwrap();
        let value: serde_json::Value = serde_json::from_str(&built.message).unwrap();
        assert_eq!(value["default"], "line \"quoted\"\n");
        assert_eq!(value["email"], "report\n\tindented");
        assert_eq!(https_card(&built.message), card());
        assert_eq!(value.as_object().unwrap().len(), 3);
    }

    #[test]
    fn message_check_rejects_bad_json() {
        assert!(matches!(
            check_message("{\"default\": "),
            Err(PublicationError::InvalidJson(_))
        ));
        assert!(matches!(
            check_message("{\"email\": \"x\"}"),
            Err(PublicationError::MissingDefault { .. })
        ));
        assert!(matches!(
            check_message("{\"default\": 3}"),
            Err(PublicationError::MissingDefault { .. })
        ));
        assert!(matches!(
            check_message("[\"default\"]"),
            Err(PublicationError::MissingDefault { .. })
        ));
        assert_eq!(check_message("{\"default\": \"\"}"), Ok(()));
    }

    #[test]
    fn message_check_rejects_bad_card() {
        let with_https = |https: serde_json::Value| {
            check_message(&serde_json::json!({ "default": "d", "https": https }).to_string())
        };
        let valid = serde_json::to_value(card()).unwrap();
        assert_eq!(with_https(valid.to_string().into()), Ok(()));

        // The card as a JSON object instead of a string.
        assert!(matches!(
            with_https(valid.clone()),
            Err(PublicationError::InvalidChatbot { .. })
        ));
        assert!(matches!(
            with_https("{\"version\": ".into()),
            Err(PublicationError::InvalidChatbot { .. })
        ));

        let mut unknown = valid.clone();
        unknown["content"]["color"] = "red".into();
        let error = with_https(unknown.to_string().into()).unwrap_err();
        assert!(
            error.to_string().contains("unknown field `color`"),
            "{error}"
        );

        let mut missing = valid.clone();
        missing["content"]
            .as_object_mut()
            .unwrap()
            .remove("description");
        assert!(matches!(
            with_https(missing.to_string().into()),
            Err(PublicationError::InvalidChatbot { .. })
        ));

        let mut version = valid;
        version["version"] = "2.0".into();
        let error = with_https(version.to_string().into()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid \"https\" part of the SNS message: invalid Chatbot notification: version \
             is \"2.0\", expected \"1.0\"; fix the alert rendering"
        );
    }

    #[test]
    fn invalid_card_not_published() {
        let mut bad = alert("s", "d", "e");
        bad.chatbot.content.text_type = "markdown".to_owned();
        let error = publication(&bad).unwrap_err();
        assert!(
            matches!(error, PublicationError::InvalidChatbot { .. }),
            "{error}"
        );
    }

    #[test]
    fn empty_attributes_dropped() {
        let built = publication(&alert("s", "d", "e")).unwrap();
        let names: Vec<_> = built.attributes.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, vec!["severity", "cluster", "rule"]);
    }

    #[test]
    fn subject_sanitized() {
        assert_eq!(
            sanitize_subject("[tokenguard HIGH] curl\nread\r\n the  token"),
            "[tokenguard HIGH] curl read the token"
        );
        assert_eq!(sanitize_subject("pod ns/naïve…"), "pod ns/na?ve...");
        assert_eq!(sanitize_subject("\u{7}\t "), "tokenguard alert");
        assert_eq!(sanitize_subject(" leading"), "leading");
    }

    #[test]
    fn long_subject_under_limit() {
        let long = format!("[tokenguard MEDIUM] {}", "x".repeat(200));
        let subject = sanitize_subject(&long);
        assert_eq!(subject.chars().count(), MAX_SUBJECT_CHARS);
        assert!(subject.ends_with("..."));
        assert!(subject.starts_with("[tokenguard MEDIUM] xxx"));

        // render_alert cuts at 100 characters with an ellipsis, which SNS rejects.
        let rendered = format!("{}…", "y".repeat(99));
        let subject = sanitize_subject(&rendered);
        assert!(subject.len() < 100, "{} characters", subject.len());
        assert!(subject.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
    }

    #[test]
    fn oversized_email_truncated() {
        let email = "é".repeat(MAX_PUBLISH_BYTES);
        let mut large = alert("s", "one line", &email);
        // A card at the description limit, of characters that JSON escapes
        // twice: once in the card and once in the SNS message.
        large.chatbot.content.description = "\"".repeat(8_000);
        let built = publication(&large).unwrap();
        let overhead: usize = built.subject.len()
            + built
                .attributes
                .iter()
                .map(|(name, value)| name.len() + value.len() + 6)
                .sum::<usize>();
        assert!(built.message.len() + overhead <= MAX_PUBLISH_BYTES);
        let value: serde_json::Value = serde_json::from_str(&built.message).unwrap();
        assert_eq!(value["default"], "one line");
        let cut = value["email"].as_str().unwrap();
        assert!(cut.ends_with(TRUNCATION_NOTE));
        assert!(cut.starts_with("éé"));
        assert_eq!(
            https_card(&built.message),
            large.chatbot,
            "the card is kept whole"
        );
    }

    #[test]
    fn oversized_default_rejected() {
        let default = "d".repeat(MAX_PUBLISH_BYTES);
        let error = publication(&alert("s", &default, "e")).unwrap_err();
        assert!(
            matches!(error, PublicationError::TooLarge { .. }),
            "{error}"
        );
    }
}
