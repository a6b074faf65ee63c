//! Maps AWS SDK errors to [`StoreError`], deciding whether a retry can help.

use std::error::Error;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use tokenguard_core::StoreError;

/// Error codes that AWS services return for throttling and transient faults.
const TRANSIENT_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "InternalServerError",
    "InternalFailure",
    "InternalError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "ReplicatedWriteConflictException",
    "KMSThrottlingException",
];

/// Error codes that mean the named resource does not exist.
const NOT_FOUND_CODES: &[&str] = &["ResourceNotFoundException", "NotFound", "NotFoundException"];

/// The resource an operation used, so a "not found" error can say how to fix it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resource<'a> {
    /// `DynamoDB table` or `SNS topic`.
    pub kind: &'static str,
    pub name: &'a str,
    /// The environment variable that configures `name`.
    pub setting: &'static str,
}

/// Classifies an SDK error as transient (retry may help) or permanent.
pub(crate) fn classify<E>(
    operation: &'static str,
    resource: Resource<'_>,
    error: &SdkError<E, HttpResponse>,
) -> StoreError
where
    E: ProvideErrorMetadata + Error + 'static,
{
    let message = DisplayErrorContext(error).to_string();
    let transient = StoreError::Transient {
        operation,
        message: message.clone(),
    };
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            transient
        }
        SdkError::ServiceError(_) => {
            let code = error.code().unwrap_or_default();
            let status = error.raw_response().map(|r| r.status().as_u16());
            if NOT_FOUND_CODES.contains(&code) {
                return StoreError::Permanent {
                    operation,
                    message: format!(
                        "{} {} not found: create it or fix {} ({message})",
                        resource.kind, resource.name, resource.setting
                    ),
                };
            }
            if TRANSIENT_CODES.contains(&code) || status.is_some_and(|s| s >= 500) {
                transient
            } else {
                StoreError::Permanent { operation, message }
            }
        }
        // Construction failures and any variant added later: the request
        // never reached the service in a usable form, so retrying cannot help.
        _ => StoreError::Permanent { operation, message },
    }
}
