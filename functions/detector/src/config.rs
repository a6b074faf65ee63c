//! Settings of the detector, read once from the environment at start-up.

use thiserror::Error;
use tokenguard_core::correlate::{CorrelationPolicy, EgressCidrs, EgressError};
use tokenguard_core::{Policy, PolicyError, parse_duration};

/// Name of the DynamoDB table that stores the baseline.
pub const BASELINE_TABLE_VAR: &str = "TOKENGUARD_BASELINE_TABLE";
/// Name of the DynamoDB table that stores findings.
pub const FINDINGS_TABLE_VAR: &str = "TOKENGUARD_FINDINGS_TABLE";
/// Name of the DynamoDB table that stores reads and exchanges for matching.
pub const CORRELATION_TABLE_VAR: &str = "TOKENGUARD_CORRELATION_TABLE";
/// How long after a read an exchange still matches it, such as `15m`.
pub const CORRELATION_WINDOW_VAR: &str = "TOKENGUARD_CORRELATION_WINDOW";
/// Egress CIDRs, comma-separated, each optionally as `<cluster>=<CIDR>`.
pub const EGRESS_CIDRS_VAR: &str = "TOKENGUARD_EGRESS_CIDRS";
/// EKS cluster names, comma-separated.
pub const CLUSTERS_VAR: &str = "TOKENGUARD_CLUSTERS";
/// ARN of the SNS topic that receives alerts.
pub const TOPIC_ARN_VAR: &str = "TOKENGUARD_TOPIC_ARN";
/// How long a new scope learns silently, such as `7d`.
pub const LEARNING_PERIOD_VAR: &str = "TOKENGUARD_LEARNING_PERIOD";
/// How long a value is remembered without a sighting, such as `28d`.
pub const FORGET_AFTER_VAR: &str = "TOKENGUARD_FORGET_AFTER";

/// Tracing filter of the function's logs, such as `info` or
/// `tokenguard_core=debug`. `main` reads it and uses `info` when it is unset
/// or invalid.
pub const LOG_FILTER_VAR: &str = "RUST_LOG";

/// Every environment variable the detector and CloudTrail functions read.
///
/// [`Config::from_env`] reads no variable outside this list, and a unit test
/// checks that it reads all of them except [`LOG_FILTER_VAR`]. The variables
/// that Lambda itself sets, such as `AWS_REGION`, `AWS_LAMBDA_RUNTIME_API`
/// and the credentials, are not listed: the AWS SDK and the Lambda runtime
/// read them.
pub const ENV_VARS: &[&str] = &[
    BASELINE_TABLE_VAR,
    FINDINGS_TABLE_VAR,
    CORRELATION_TABLE_VAR,
    TOPIC_ARN_VAR,
    LEARNING_PERIOD_VAR,
    FORGET_AFTER_VAR,
    CORRELATION_WINDOW_VAR,
    EGRESS_CIDRS_VAR,
    CLUSTERS_VAR,
    LOG_FILTER_VAR,
];

pub const DEFAULT_LEARNING_PERIOD: &str = "7d";
pub const DEFAULT_FORGET_AFTER: &str = "28d";
pub const DEFAULT_CORRELATION_WINDOW: &str = "15m";

/// Longest correlation window: exchanges are kept for a day.
const MAX_CORRELATION_WINDOW_SECONDS: u64 = 12 * 3600;

/// Detector settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub baseline_table: String,
    pub findings_table: String,
    pub correlation_table: String,
    pub topic_arn: String,
    pub policy: Policy,
    pub correlation: CorrelationPolicy,
    /// The EKS clusters this deployment watches; empty when unset.
    pub clusters: Vec<String>,
}

/// A missing or unusable setting.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("missing environment variable {name}: set it to {expected}")]
    Missing {
        name: &'static str,
        expected: &'static str,
    },
    /// A table name breaks DynamoDB's naming rules.
    #[error(
        "invalid {name} {value:?}: expected a DynamoDB table name of 3 to 255 characters \
         from a-z, A-Z, 0-9, '_', '-' and '.'"
    )]
    TableName { name: &'static str, value: String },
    /// The topic ARN is not an SNS topic ARN.
    #[error(
        "invalid {TOPIC_ARN_VAR} {value:?}: expected an SNS topic ARN such as \
         arn:aws:sns:eu-west-1:111122223333:tokenguard-alerts"
    )]
    TopicArn { value: String },
    /// The learning period or forget-after duration is unusable.
    #[error(
        "invalid {LEARNING_PERIOD_VAR}={learning_period:?} or {FORGET_AFTER_VAR}={forget_after:?}: \
         {source}"
    )]
    Policy {
        learning_period: String,
        forget_after: String,
        #[source]
        source: PolicyError,
    },
    /// The correlation window is not a duration, zero, or longer than
    /// exchanges are kept.
    #[error(
        "invalid {CORRELATION_WINDOW_VAR} {value:?}: expected a duration from 1s to 12h, \
         such as 15m"
    )]
    Window { value: String },
    /// An egress entry does not parse.
    #[error("invalid {EGRESS_CIDRS_VAR}: {0}")]
    Egress(#[from] EgressError),
    /// A cluster name breaks EKS's naming rules.
    #[error(
        "invalid {CLUSTERS_VAR} entry {value:?}: expected EKS cluster names of 1 to 100 \
         letters, digits, '-' and '_', starting with a letter or digit, separated by commas"
    )]
    ClusterName { value: String },
}

impl Config {
    /// Reads the settings from the process environment. A variable missing
    /// from [`ENV_VARS`] reads as unset.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| {
            if ENV_VARS.contains(&name) {
                std::env::var(name).ok()
            } else {
                None
            }
        })
    }

    /// Reads the settings through `lookup`, which returns a variable's value.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let required = |name: &'static str, expected: &'static str| {
            get(name).ok_or(ConfigError::Missing { name, expected })
        };

        let baseline_table = required(BASELINE_TABLE_VAR, "the baseline DynamoDB table name")?;
        check_table_name(BASELINE_TABLE_VAR, &baseline_table)?;
        let findings_table = required(FINDINGS_TABLE_VAR, "the findings DynamoDB table name")?;
        check_table_name(FINDINGS_TABLE_VAR, &findings_table)?;
        let correlation_table =
            required(CORRELATION_TABLE_VAR, "the correlation DynamoDB table name")?;
        check_table_name(CORRELATION_TABLE_VAR, &correlation_table)?;
        let topic_arn = required(TOPIC_ARN_VAR, "the ARN of the SNS topic for alerts")?;
        check_topic_arn(&topic_arn)?;

        let learning_period =
            get(LEARNING_PERIOD_VAR).unwrap_or_else(|| DEFAULT_LEARNING_PERIOD.to_owned());
        let forget_after = get(FORGET_AFTER_VAR).unwrap_or_else(|| DEFAULT_FORGET_AFTER.to_owned());
        let policy = Policy::from_settings(&learning_period, &forget_after).map_err(|source| {
            ConfigError::Policy {
                learning_period: learning_period.clone(),
                forget_after: forget_after.clone(),
                source,
            }
        })?;

        let window_text =
            get(CORRELATION_WINDOW_VAR).unwrap_or_else(|| DEFAULT_CORRELATION_WINDOW.to_owned());
        let window = parse_duration("correlation window", &window_text)
            .ok()
            .filter(|w| !w.is_zero() && w.as_secs() <= MAX_CORRELATION_WINDOW_SECONDS)
            .ok_or(ConfigError::Window { value: window_text })?;
        let egress = EgressCidrs::parse(&get(EGRESS_CIDRS_VAR).unwrap_or_default())?;
        let clusters = parse_clusters(&get(CLUSTERS_VAR).unwrap_or_default())?;

        let policy = Policy {
            clusters: clusters.clone(),
            ..policy
        };
        Ok(Config {
            baseline_table,
            findings_table,
            correlation_table,
            topic_arn,
            policy,
            correlation: CorrelationPolicy {
                window,
                egress,
                ..CorrelationPolicy::default()
            },
            clusters,
        })
    }
}

/// Splits a comma-separated list of EKS cluster names.
pub fn parse_clusters(text: &str) -> Result<Vec<String>, ConfigError> {
    let mut clusters = Vec::new();
    for name in text
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        let valid = name.len() <= 100
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(ConfigError::ClusterName {
                value: name.to_owned(),
            });
        }
        if !clusters.iter().any(|known| known == name) {
            clusters.push(name.to_owned());
        }
    }
    Ok(clusters)
}

fn check_table_name(name: &'static str, value: &str) -> Result<(), ConfigError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if (3..=255).contains(&value.len()) && value.chars().all(allowed) {
        return Ok(());
    }
    Err(ConfigError::TableName {
        name,
        value: value.to_owned(),
    })
}

/// Checks the shape `arn:<partition>:sns:<region>:<account>:<topic>`.
fn check_topic_arn(value: &str) -> Result<(), ConfigError> {
    let parts: Vec<&str> = value.split(':').collect();
    let valid = parts.len() == 6
        && parts[0] == "arn"
        && !parts[1].is_empty()
        && parts[2] == "sns"
        && !parts[3].is_empty()
        && !parts[4].is_empty()
        && !parts[5].is_empty();
    if valid {
        return Ok(());
    }
    Err(ConfigError::TopicArn {
        value: value.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;

    const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:tokenguard-alerts";

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    fn required() -> Vec<(&'static str, &'static str)> {
        vec![
            (BASELINE_TABLE_VAR, "tokenguard-baseline"),
            (FINDINGS_TABLE_VAR, "tokenguard-findings"),
            (TOPIC_ARN_VAR, TOPIC),
            (CORRELATION_TABLE_VAR, "tokenguard-correlation"),
        ]
    }

    #[test]
    fn defaults_applied() {
        let config = config(&required()).unwrap();
        assert_eq!(config.baseline_table, "tokenguard-baseline");
        assert_eq!(config.findings_table, "tokenguard-findings");
        assert_eq!(config.topic_arn, TOPIC);
        assert_eq!(config.policy, Policy::default());
        assert_eq!(config.correlation_table, "tokenguard-correlation");
        assert_eq!(config.correlation, CorrelationPolicy::default());
        assert!(config.clusters.is_empty());
    }

    #[test]
    fn correlation_settings_read() {
        let mut vars = required();
        vars.push((CORRELATION_WINDOW_VAR, "10m"));
        vars.push((EGRESS_CIDRS_VAR, "203.0.113.0/24,prod=198.51.100.7"));
        vars.push((CLUSTERS_VAR, "prod, staging,prod"));
        let config = config(&vars).unwrap();
        assert_eq!(config.correlation.window, Duration::from_secs(600));
        assert!(
            config
                .correlation
                .egress
                .contains("prod", "198.51.100.7".parse().unwrap())
        );
        assert_eq!(config.clusters, vec!["prod", "staging"]);
    }

    #[test]
    fn bad_correlation_settings_named() {
        for (name, value, start) in [
            (
                CORRELATION_WINDOW_VAR,
                "0s",
                "invalid TOKENGUARD_CORRELATION_WINDOW \"0s\"",
            ),
            (
                CORRELATION_WINDOW_VAR,
                "2d",
                "invalid TOKENGUARD_CORRELATION_WINDOW \"2d\"",
            ),
            (
                EGRESS_CIDRS_VAR,
                "nat",
                "invalid TOKENGUARD_EGRESS_CIDRS: invalid egress CIDR",
            ),
            (
                CLUSTERS_VAR,
                "prod,-x",
                "invalid TOKENGUARD_CLUSTERS entry \"-x\"",
            ),
        ] {
            let mut vars = required();
            vars.push((name, value));
            let message = config(&vars).unwrap_err().to_string();
            assert!(message.starts_with(start), "{message}");
        }
    }

    #[test]
    fn loader_reads_listed_variables() {
        let read = std::cell::RefCell::new(Vec::new());
        let vars: HashMap<_, _> = required().into_iter().collect();
        Config::from_lookup(|name| {
            read.borrow_mut().push(name.to_owned());
            vars.get(name).map(|value| value.to_string())
        })
        .unwrap();

        let mut read = read.into_inner();
        read.sort();
        read.dedup();
        let mut listed: Vec<_> = ENV_VARS
            .iter()
            .filter(|name| **name != LOG_FILTER_VAR)
            .map(|name| name.to_string())
            .collect();
        listed.sort();
        assert_eq!(
            read, listed,
            "Config reads exactly ENV_VARS except RUST_LOG"
        );
    }

    #[test]
    fn durations_read() {
        let mut vars = required();
        vars.push((LEARNING_PERIOD_VAR, "0s"));
        vars.push((FORGET_AFTER_VAR, "2d"));
        let config = config(&vars).unwrap();
        assert_eq!(config.policy.learning_period, Duration::ZERO);
        assert_eq!(
            config.policy.forget_after,
            Duration::from_secs(2 * 24 * 3600)
        );
    }

    #[test]
    fn missing_variable_named() {
        let vars: Vec<_> = required()
            .into_iter()
            .filter(|(name, _)| *name != FINDINGS_TABLE_VAR)
            .collect();
        let error = config(&vars).unwrap_err();
        assert_eq!(
            error.to_string(),
            "missing environment variable TOKENGUARD_FINDINGS_TABLE: \
             set it to the findings DynamoDB table name"
        );
    }

    #[test]
    fn blank_variable_is_missing() {
        let mut vars = required();
        vars[0].1 = "  ";
        let error = config(&vars).unwrap_err();
        assert!(matches!(
            error,
            ConfigError::Missing {
                name: BASELINE_TABLE_VAR,
                ..
            }
        ));
    }

    #[test]
    fn bad_table_name_rejected() {
        let mut vars = required();
        vars[0].1 = "my table";
        let error = config(&vars).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("invalid TOKENGUARD_BASELINE_TABLE \"my table\"")
        );
    }

    #[test]
    fn bad_topic_arn_rejected() {
        let mut vars = required();
        vars[2].1 = "arn:aws:sqs:eu-west-1:123456789012:queue";
        let error = config(&vars).unwrap_err();
        assert!(matches!(error, ConfigError::TopicArn { .. }), "{error}");
    }

    #[test]
    fn bad_duration_names_variable() {
        let mut vars = required();
        vars.push((LEARNING_PERIOD_VAR, "a week"));
        let error = config(&vars).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("invalid TOKENGUARD_LEARNING_PERIOD=\"a week\""),
            "{message}"
        );
        assert!(message.contains("expected a duration such as"), "{message}");
    }
}
