//! CloudTrail records of web-identity token exchanges.
//!
//! Three calls turn an EKS pod's token into AWS credentials, and each leaves
//! a CloudTrail record:
//!
//! - `sts:AssumeRoleWithWebIdentity` for IRSA, made by whoever holds the token,
//!   naming the service account in `userIdentity.userName` and the cluster's
//!   OIDC provider in `userIdentity.identityProvider`;
//! - `eks-auth:AssumeRoleForPodIdentity` for EKS Pod Identity, made with the
//!   node's role, naming only the cluster;
//! - the `sts:AssumeRole` that EKS Auth then makes for the pod (`invokedBy`
//!   `pods.eks.amazonaws.com`), whose session tags name the namespace, the
//!   service account, the pod and its uid.
//!
//! [`parse_record`] turns one record into an [`Exchange`] or says why it is
//! not one. It reads fields leniently, so that one record with an unexpected
//! shape is reported on its own and never stops the others.

mod fields;
mod resolve;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use thiserror::Error;

use fields::{JsonFields, RecordFields, RecordView};
pub use resolve::{ClusterResolver, IssuerLookup, StaticIssuers};

/// The API call that exchanged a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExchangeApi {
    #[serde(rename = "sts:AssumeRoleWithWebIdentity")]
    AssumeRoleWithWebIdentity,
    #[serde(rename = "eks-auth:AssumeRoleForPodIdentity")]
    AssumeRoleForPodIdentity,
    /// The `sts:AssumeRole` that EKS Auth makes on a pod's behalf.
    #[serde(rename = "sts:AssumeRole")]
    AssumeRoleByEksAuth,
}

impl ExchangeApi {
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeApi::AssumeRoleWithWebIdentity => "sts:AssumeRoleWithWebIdentity",
            ExchangeApi::AssumeRoleForPodIdentity => "eks-auth:AssumeRoleForPodIdentity",
            ExchangeApi::AssumeRoleByEksAuth => "sts:AssumeRole",
        }
    }
}

/// How a record names its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterRef {
    /// The OIDC issuer URL, such as
    /// `https://oidc.eks.us-west-2.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE`.
    Issuer(String),
    /// The EKS cluster name.
    Name(String),
}

/// One token exchange, as CloudTrail recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    pub event_id: String,
    pub event_time: DateTime<Utc>,
    pub api: ExchangeApi,
    pub cluster: ClusterRef,
    /// Absent for `AssumeRoleForPodIdentity`, which names only the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Pod name and uid, from the session tags of EKS Auth's `AssumeRole`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    /// `sourceIPAddress`: an IP address, or a service name such as
    /// `pods.eks.amazonaws.com` when a service made the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The identity that made an `AssumeRoleForPodIdentity` call, usually the
    /// node's instance role session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_endpoint_id: Option<String>,
    /// Set when the exchange failed, such as `AccessDenied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

impl Exchange {
    /// Whether the call returned credentials.
    pub fn succeeded(&self) -> bool {
        self.error_code.is_none()
    }

    /// `success`, or `failed: <errorCode>`.
    pub fn outcome(&self) -> String {
        match &self.error_code {
            None => "success".to_owned(),
            Some(code) => format!("failed: {code}"),
        }
    }
}

/// What a record turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Exchange(Box<Exchange>),
    /// A record of another call, or of a token exchange outside EKS, such as
    /// a web identity from a non-EKS OIDC provider.
    Ignored {
        event_id: String,
        event_source: String,
        event_name: String,
        reason: &'static str,
    },
}

/// A record that is not a usable CloudTrail record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid CloudTrail record {}: {reason}", event_id.as_deref().unwrap_or("(no eventID)"))]
pub struct RecordError {
    /// The record's `eventID`, when it has a string one.
    pub event_id: Option<String>,
    pub reason: String,
}

const EKS_AUTH_INVOKER: &str = "pods.eks.amazonaws.com";
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
const OIDC_PROVIDER_MARKER: &str = ":oidc-provider/";

/// Parses one CloudTrail record, the object CloudTrail writes to S3 and
/// EventBridge carries as `detail`.
pub fn parse_record(record: &Value) -> Result<Parsed, RecordError> {
    parse_fields(&JsonFields::new(record)?)
}

/// Parses one CloudTrail record from its JSON text. Well-formed records take
/// a fast path that builds no JSON tree; any other text gets the same result,
/// with the same message, as [`parse_record`].
pub fn parse_record_text(text: &str) -> Result<Parsed, RecordError> {
    match serde_json::from_str::<RecordView<'_>>(text) {
        Ok(view) => parse_fields(&view),
        Err(_) => match serde_json::from_str::<Value>(text) {
            Ok(record) => parse_record(&record),
            Err(error) => Err(RecordError {
                event_id: None,
                reason: format!("the record is not JSON ({error})"),
            }),
        },
    }
}

fn parse_fields(fields: &impl RecordFields) -> Result<Parsed, RecordError> {
    let event_id = fields.required("eventID")?.to_owned();
    let event_source = fields.required("eventSource")?;
    let event_name = fields.required("eventName")?;
    let ignored = |reason| {
        Ok(Parsed::Ignored {
            event_id: event_id.clone(),
            event_source: event_source.to_owned(),
            event_name: event_name.to_owned(),
            reason,
        })
    };

    let api = match (event_source, event_name) {
        ("sts.amazonaws.com", "AssumeRoleWithWebIdentity") => {
            ExchangeApi::AssumeRoleWithWebIdentity
        }
        ("eks-auth.amazonaws.com", "AssumeRoleForPodIdentity") => {
            ExchangeApi::AssumeRoleForPodIdentity
        }
        ("sts.amazonaws.com", "AssumeRole") => {
            if fields.optional("userIdentity.invokedBy")? != Some(EKS_AUTH_INVOKER) {
                return ignored("an AssumeRole that EKS Auth did not make");
            }
            ExchangeApi::AssumeRoleByEksAuth
        }
        _ => return ignored("not a token exchange"),
    };

    let time_text = fields.required("eventTime")?;
    let event_time = DateTime::parse_from_rfc3339(time_text)
        .map_err(|_| {
            fields.error(format!(
                "eventTime {time_text:?} is not an RFC 3339 time such as 2026-12-04T10:00:00Z"
            ))
        })?
        .with_timezone(&Utc);

    let mut exchange = Exchange {
        event_id: event_id.clone(),
        event_time,
        api,
        cluster: ClusterRef::Name(String::new()),
        namespace: None,
        service_account: None,
        pod_name: None,
        pod_uid: None,
        role_arn: fields
            .optional("requestParameters.roleArn")?
            .map(str::to_owned),
        session_name: fields
            .optional("requestParameters.roleSessionName")?
            .map(str::to_owned),
        source_address: fields.optional("sourceIPAddress")?.map(str::to_owned),
        user_agent: fields.optional("userAgent")?.map(str::to_owned),
        caller_arn: None,
        vpc_endpoint_id: fields.optional("vpcEndpointId")?.map(str::to_owned),
        error_code: fields.optional("errorCode")?.map(str::to_owned),
        error_message: fields.optional("errorMessage")?.map(str::to_owned),
    };

    match api {
        ExchangeApi::AssumeRoleWithWebIdentity => {
            let user_name = fields.optional("userIdentity.userName")?;
            let Some((namespace, service_account)) = user_name.and_then(service_account_of) else {
                return ignored("a web identity that is not a Kubernetes service account");
            };
            let issuer = web_identity_issuer(fields)?;
            let Some(issuer) = issuer else {
                return ignored("a web identity from an OIDC provider that is not EKS's");
            };
            exchange.cluster = ClusterRef::Issuer(issuer);
            exchange.namespace = Some(namespace.to_owned());
            exchange.service_account = Some(service_account.to_owned());
        }
        ExchangeApi::AssumeRoleForPodIdentity => {
            let cluster = fields.required("requestParameters.clusterName")?;
            exchange.cluster = ClusterRef::Name(cluster.to_owned());
            exchange.caller_arn = fields.optional("userIdentity.arn")?.map(str::to_owned);
        }
        ExchangeApi::AssumeRoleByEksAuth => {
            let tags = fields.tags()?;
            let tag = |key: &str| tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            let missing = |key: &str| fields.error(format!("missing session tag {key}"));
            let cluster = tag("eks-cluster-name").ok_or_else(|| missing("eks-cluster-name"))?;
            exchange.cluster = ClusterRef::Name(cluster);
            exchange.namespace =
                Some(tag("kubernetes-namespace").ok_or_else(|| missing("kubernetes-namespace"))?);
            exchange.service_account = Some(
                tag("kubernetes-service-account")
                    .ok_or_else(|| missing("kubernetes-service-account"))?,
            );
            exchange.pod_name = tag("kubernetes-pod-name");
            exchange.pod_uid = tag("kubernetes-pod-uid");
        }
    }
    Ok(Parsed::Exchange(Box::new(exchange)))
}

/// Splits `system:serviceaccount:<namespace>:<name>`.
fn service_account_of(user_name: &str) -> Option<(&str, &str)> {
    let rest = user_name.strip_prefix(SERVICE_ACCOUNT_PREFIX)?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some((namespace, name))
}

/// The issuer URL of an EKS OIDC provider, from `identityProvider`, or from
/// the provider ARN that starts `principalId` when that field is absent.
/// Returns `None` for a provider that is not EKS's.
fn web_identity_issuer(fields: &impl RecordFields) -> Result<Option<String>, RecordError> {
    let provider = match fields.optional("userIdentity.identityProvider")? {
        Some(arn) => arn.to_owned(),
        None => {
            let principal = fields.required("userIdentity.principalId")?;
            // `<provider ARN>:<audience>:<subject>`, where the subject holds
            // colons of its own: the ARN ends at the provider path's end.
            let Some(start) = principal.find(OIDC_PROVIDER_MARKER) else {
                return Err(fields.error(
                    "missing userIdentity.identityProvider, and userIdentity.principalId \
                     does not start with an OIDC provider ARN"
                        .to_owned(),
                ));
            };
            let path_start = start + OIDC_PROVIDER_MARKER.len();
            let path_end = principal[path_start..]
                .find(':')
                .map_or(principal.len(), |offset| path_start + offset);
            principal[..path_end].to_owned()
        }
    };
    let Some((_, path)) = provider.split_once(OIDC_PROVIDER_MARKER) else {
        return Err(fields.error(format!(
            "userIdentity.identityProvider {provider:?} is not an OIDC provider ARN"
        )));
    };
    if !is_eks_issuer_path(path) {
        return Ok(None);
    }
    Ok(Some(format!("https://{path}")))
}

/// Whether an issuer host and path, without the scheme, is an EKS cluster's:
/// `oidc.eks.<region>.amazonaws.com/id/<id>`, or `.com.cn` in China.
pub fn is_eks_issuer_path(path: &str) -> bool {
    let Some((host, id)) = path.split_once("/id/") else {
        return false;
    };
    host.starts_with("oidc.eks.")
        && (host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn"))
        && !id.is_empty()
        && id.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Normalizes an issuer URL for comparison: scheme and trailing slash
/// removed, host in lowercase, id as written.
pub fn issuer_key(issuer: &str) -> String {
    let path = issuer
        .trim()
        .trim_start_matches("https://")
        .trim_end_matches('/');
    match path.split_once("/id/") {
        Some((host, id)) => format!("{}/id/{id}", host.to_ascii_lowercase()),
        None => path.to_ascii_lowercase(),
    }
}

/// One record of a CloudTrail file or EventBridge event, as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// Where the record came from, such as `trail.json.gz: Records[3]`.
    pub origin: String,
    pub text: &'a str,
}

/// A file, or a line of one, that holds no records.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid CloudTrail input {origin}: {reason}")]
pub struct InputError {
    pub origin: String,
    pub reason: String,
}

/// Detail type of the EventBridge events that carry CloudTrail records.
pub const EVENTBRIDGE_DETAIL_TYPE: &str = "AWS API Call via CloudTrail";

fn check_detail_type(detail_type: Option<&str>, origin: &str) -> Result<(), InputError> {
    if detail_type == Some(EVENTBRIDGE_DETAIL_TYPE) {
        return Ok(());
    }
    Err(InputError {
        origin: origin.to_owned(),
        reason: format!(
            "detail-type is {detail_type:?}, expected {EVENTBRIDGE_DETAIL_TYPE:?}: \
             route only CloudTrail API call events here"
        ),
    })
}

fn missing_detail(origin: &str) -> InputError {
    InputError {
        origin: origin.to_owned(),
        reason: "missing detail object".to_owned(),
    }
}

/// Takes the CloudTrail record out of an EventBridge event.
pub fn eventbridge_detail(event: &Value, origin: &str) -> Result<Value, InputError> {
    check_detail_type(event.get("detail-type").and_then(Value::as_str), origin)?;
    match event.get("detail") {
        Some(detail @ Value::Object(_)) => Ok(detail.clone()),
        _ => Err(missing_detail(origin)),
    }
}

/// An S3 log file, with its records left as text.
#[derive(Deserialize)]
struct LogFile<'a> {
    #[serde(rename = "Records", borrow)]
    records: Option<&'a RawValue>,
}

/// An EventBridge event, with its detail left as text.
#[derive(Deserialize)]
struct EventView<'a> {
    #[serde(rename = "detail-type", borrow, default)]
    detail_type: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    detail: Option<&'a RawValue>,
}

/// Splits the text of a CloudTrail file into records. The text is either one
/// S3 log file (`{"Records": [...]}`, pretty-printed or not) or EventBridge
/// events, one JSON object per line. A line that is not an event is an error
/// of its own, and the lines after it are still read.
pub fn split_records<'a>(name: &str, text: &'a str) -> Vec<Result<RawRecord<'a>, InputError>> {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Vec::new();
    }
    let file_error = |reason: String| {
        vec![Err(InputError {
            origin: name.to_owned(),
            reason,
        })]
    };
    match serde_json::from_str::<LogFile<'a>>(trimmed) {
        Ok(LogFile {
            records: Some(records),
        }) => {
            let Ok(records) = serde_json::from_str::<Vec<&'a RawValue>>(records.get()) else {
                return file_error("Records is not an array".to_owned());
            };
            return records
                .into_iter()
                .enumerate()
                .map(|(index, record)| {
                    Ok(RawRecord {
                        origin: format!("{name}: Records[{index}]"),
                        text: record.get(),
                    })
                })
                .collect();
        }
        // A log file cut short is one broken document, so its lines are no use.
        Err(source) if looks_like_log_file(trimmed) => {
            return file_error(format!("not valid JSON ({source})"));
        }
        _ => {}
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            let origin = format!("{name}:{}", index + 1);
            let event: EventView<'a> = serde_json::from_str(line).map_err(|source| InputError {
                origin: origin.clone(),
                reason: format!(
                    "not JSON ({source}): expected an S3 log file with a Records array, \
                     or one EventBridge event per line"
                ),
            })?;
            check_detail_type(event.detail_type.as_deref(), &origin)?;
            let detail = event
                .detail
                .map(RawValue::get)
                .filter(|detail| detail.starts_with('{'))
                .ok_or_else(|| missing_detail(&origin))?;
            Ok(RawRecord {
                origin,
                text: detail,
            })
        })
        .collect()
}

/// Whether text starts the way an S3 log file does.
fn looks_like_log_file(text: &str) -> bool {
    let head: String = text
        .chars()
        .take(64)
        .filter(|c| !c.is_whitespace())
        .collect();
    head.starts_with("{\"Records\"")
}

#[cfg(test)]
pub(crate) mod tests;
