//! The fields of a CloudTrail record that parsing reads, from a JSON tree or
//! from a typed view of the text.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use super::RecordError;

/// String fields of a record by dotted path, and the session tags.
pub(super) trait RecordFields {
    /// The record's `eventID`, for error messages.
    fn event_id(&self) -> Option<&str>;

    /// A string field that may be absent or null, but not of another type.
    fn optional(&self, path: &str) -> Result<Option<&str>, RecordError>;

    /// `requestParameters.tags`, a list of `{key, value}` objects.
    fn tags(&self) -> Result<Vec<(String, String)>, RecordError>;

    fn error(&self, reason: String) -> RecordError {
        RecordError {
            event_id: self.event_id().map(str::to_owned),
            reason,
        }
    }

    fn required(&self, path: &str) -> Result<&str, RecordError> {
        self.optional(path)?
            .filter(|text| !text.is_empty())
            .ok_or_else(|| self.error(format!("missing {path}")))
    }
}

/// A record as a JSON tree, which reports mistyped fields by path.
pub(super) struct JsonFields<'a> {
    value: &'a Value,
    event_id: Option<&'a str>,
}

impl<'a> JsonFields<'a> {
    pub(super) fn new(record: &'a Value) -> Result<JsonFields<'a>, RecordError> {
        if !record.is_object() {
            return Err(RecordError {
                event_id: None,
                reason: format!("the record is {}, expected an object", type_name(record)),
            });
        }
        let event_id = match record.get("eventID") {
            Some(Value::String(id)) if !id.is_empty() => Some(id.as_str()),
            _ => None,
        };
        Ok(JsonFields {
            value: record,
            event_id,
        })
    }

    fn at(&self, path: &str) -> Option<&'a Value> {
        path.split('.')
            .try_fold(self.value, |value, key| value.get(key))
            .filter(|value| !value.is_null())
    }
}

impl RecordFields for JsonFields<'_> {
    fn event_id(&self) -> Option<&str> {
        self.event_id
    }

    fn optional(&self, path: &str) -> Result<Option<&str>, RecordError> {
        match self.at(path) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => {
                Err(self.error(format!("{path} is {}, expected a string", type_name(other))))
            }
        }
    }

    fn tags(&self) -> Result<Vec<(String, String)>, RecordError> {
        let Some(tags) = self.at("requestParameters.tags") else {
            return Err(self.error("missing requestParameters.tags".to_owned()));
        };
        let Value::Array(tags) = tags else {
            return Err(self.error(format!(
                "requestParameters.tags is {}, expected an array",
                type_name(tags)
            )));
        };
        tags.iter()
            .enumerate()
            .map(|(index, tag)| {
                let key = tag.get("key").and_then(Value::as_str);
                let value = tag.get("value").and_then(Value::as_str);
                key.zip(value)
                    .map(|(key, value)| (key.to_owned(), value.to_owned()))
                    .ok_or_else(|| {
                        self.error(format!(
                            "requestParameters.tags[{index}] is not an object with string \
                             key and value"
                        ))
                    })
            })
            .collect()
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

type Text<'a> = Option<Cow<'a, str>>;

/// The fields parsing reads, decoded straight from the text. Decoding fails
/// on any field of an unexpected type, and the caller then parses the JSON
/// tree for an exact message.
#[derive(Debug, Deserialize)]
pub(super) struct RecordView<'a> {
    #[serde(rename = "eventID", borrow, default)]
    event_id: Text<'a>,
    #[serde(rename = "eventSource", borrow, default)]
    event_source: Text<'a>,
    #[serde(rename = "eventName", borrow, default)]
    event_name: Text<'a>,
    #[serde(rename = "eventTime", borrow, default)]
    event_time: Text<'a>,
    #[serde(rename = "sourceIPAddress", borrow, default)]
    source_address: Text<'a>,
    #[serde(rename = "userAgent", borrow, default)]
    user_agent: Text<'a>,
    #[serde(rename = "vpcEndpointId", borrow, default)]
    vpc_endpoint_id: Text<'a>,
    #[serde(rename = "errorCode", borrow, default)]
    error_code: Text<'a>,
    #[serde(rename = "errorMessage", borrow, default)]
    error_message: Text<'a>,
    #[serde(rename = "userIdentity", borrow, default)]
    user_identity: Option<IdentityView<'a>>,
    #[serde(rename = "requestParameters", borrow, default)]
    request: Option<RequestView<'a>>,
}

#[derive(Debug, Deserialize)]
struct IdentityView<'a> {
    #[serde(rename = "invokedBy", borrow, default)]
    invoked_by: Text<'a>,
    #[serde(rename = "userName", borrow, default)]
    user_name: Text<'a>,
    #[serde(rename = "identityProvider", borrow, default)]
    identity_provider: Text<'a>,
    #[serde(rename = "principalId", borrow, default)]
    principal_id: Text<'a>,
    #[serde(borrow, default)]
    arn: Text<'a>,
}

#[derive(Debug, Deserialize)]
struct RequestView<'a> {
    #[serde(rename = "roleArn", borrow, default)]
    role_arn: Text<'a>,
    #[serde(rename = "roleSessionName", borrow, default)]
    role_session_name: Text<'a>,
    #[serde(rename = "clusterName", borrow, default)]
    cluster_name: Text<'a>,
    #[serde(borrow, default)]
    tags: Option<Vec<TagView<'a>>>,
}

#[derive(Debug, Deserialize)]
struct TagView<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    value: Cow<'a, str>,
}

impl RecordFields for RecordView<'_> {
    fn event_id(&self) -> Option<&str> {
        self.event_id.as_deref().filter(|id| !id.is_empty())
    }

    fn optional(&self, path: &str) -> Result<Option<&str>, RecordError> {
        let identity = self.user_identity.as_ref();
        let request = self.request.as_ref();
        let field = match path {
            "eventID" => &self.event_id,
            "eventSource" => &self.event_source,
            "eventName" => &self.event_name,
            "eventTime" => &self.event_time,
            "sourceIPAddress" => &self.source_address,
            "userAgent" => &self.user_agent,
            "vpcEndpointId" => &self.vpc_endpoint_id,
            "errorCode" => &self.error_code,
            "errorMessage" => &self.error_message,
            "userIdentity.invokedBy" => return Ok(identity.and_then(|i| i.invoked_by.as_deref())),
            "userIdentity.userName" => return Ok(identity.and_then(|i| i.user_name.as_deref())),
            "userIdentity.identityProvider" => {
                return Ok(identity.and_then(|i| i.identity_provider.as_deref()));
            }
            "userIdentity.principalId" => {
                return Ok(identity.and_then(|i| i.principal_id.as_deref()));
            }
            "userIdentity.arn" => return Ok(identity.and_then(|i| i.arn.as_deref())),
            "requestParameters.roleArn" => return Ok(request.and_then(|r| r.role_arn.as_deref())),
            "requestParameters.roleSessionName" => {
                return Ok(request.and_then(|r| r.role_session_name.as_deref()));
            }
            "requestParameters.clusterName" => {
                return Ok(request.and_then(|r| r.cluster_name.as_deref()));
            }
            // A path added to the parser must be added here too; the test
            // that compares both views on every fixture catches a miss.
            _ => return Err(self.error(format!("{path} is not read by the fast path"))),
        };
        Ok(field.as_deref())
    }

    fn tags(&self) -> Result<Vec<(String, String)>, RecordError> {
        let tags = self.request.as_ref().and_then(|r| r.tags.as_ref());
        let Some(tags) = tags else {
            return Err(self.error("missing requestParameters.tags".to_owned()));
        };
        Ok(tags
            .iter()
            .map(|tag| (tag.key.to_string(), tag.value.to_string()))
            .collect())
    }
}
