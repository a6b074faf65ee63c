//! Settings of the detector, read once from the environment at start-up.

use thiserror::Error;
use tokenguard_core::contain::{ContainmentPolicy, ContainmentPolicyError, parse_count};
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

/// Containment mode per namespace: `NAMESPACE=MODE,...`, `*` for the rest.
pub const CONTAINMENT_MODES_VAR: &str = "TOKENGUARD_CONTAINMENT_MODES";
/// Lowest severity per action: `kill=medium,quarantine=high,delete=critical`.
pub const CONTAINMENT_ACTIONS_VAR: &str = "TOKENGUARD_CONTAINMENT_ACTIONS";
/// Namespaces never contained, besides `kube-system` and tokenguard's own.
pub const PROTECTED_NAMESPACES_VAR: &str = "TOKENGUARD_PROTECTED_NAMESPACES";
/// The namespace tokenguard's agent runs in, which is never contained.
pub const NAMESPACE_VAR: &str = "TOKENGUARD_NAMESPACE";
/// Containment actions per cluster and hour.
pub const CONTAINMENT_RATE_LIMIT_VAR: &str = "TOKENGUARD_CONTAINMENT_RATE_LIMIT";
/// `gracePeriodSeconds` of a pod deletion, as a duration such as `5s`.
pub const DELETE_GRACE_PERIOD_VAR: &str = "TOKENGUARD_DELETE_GRACE_PERIOD";
/// Ready pods a controller keeps when one of its pods is contained.
pub const MIN_HEALTHY_REPLICAS_VAR: &str = "TOKENGUARD_MIN_HEALTHY_REPLICAS";
/// `true` to contain DaemonSet, static and mirror pods too.
pub const CONTAIN_NODE_PODS_VAR: &str = "TOKENGUARD_CONTAIN_NODE_PODS";
/// Fixed Kubernetes API endpoints, `NAME=URL|CA_FILE,...`, in place of EKS
/// `DescribeCluster`: for tests and for clusters reached another way.
pub const KUBERNETES_ENDPOINTS_VAR: &str = "TOKENGUARD_KUBERNETES_ENDPOINTS";

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
    CONTAINMENT_MODES_VAR,
    CONTAINMENT_ACTIONS_VAR,
    PROTECTED_NAMESPACES_VAR,
    NAMESPACE_VAR,
    CONTAINMENT_RATE_LIMIT_VAR,
    DELETE_GRACE_PERIOD_VAR,
    MIN_HEALTHY_REPLICAS_VAR,
    CONTAIN_NODE_PODS_VAR,
    KUBERNETES_ENDPOINTS_VAR,
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
    pub containment: ContainmentPolicy,
    /// Fixed API endpoints by cluster: the URL and the path of its CA
    /// bundle. Empty means EKS `DescribeCluster`.
    pub kubernetes_endpoints: Vec<KubernetesEndpoint>,
}

/// A Kubernetes API endpoint given in [`KUBERNETES_ENDPOINTS_VAR`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesEndpoint {
    pub cluster: String,
    pub url: String,
    pub ca_file: String,
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
    /// A containment setting does not parse.
    #[error(transparent)]
    Containment(#[from] ContainmentPolicyError),
    /// A fixed endpoint entry does not parse.
    #[error(
        "invalid {KUBERNETES_ENDPOINTS_VAR} entry {value:?}: expected NAME=https://HOST[:PORT]|CA_FILE, \
         such as prod=https://10.0.0.1:6443|/etc/tokenguard/prod-ca.pem"
    )]
    KubernetesEndpoint { value: String },
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
        let containment = containment_policy(&get)?;
        let kubernetes_endpoints =
            parse_endpoints(&get(KUBERNETES_ENDPOINTS_VAR).unwrap_or_default())?;
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
            containment,
            kubernetes_endpoints,
        })
    }
}

/// Reads the containment settings; every one is optional.
fn containment_policy(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<ContainmentPolicy, ConfigError> {
    let own_namespace = get(NAMESPACE_VAR).unwrap_or_else(|| "tokenguard".to_owned());
    let mut policy = ContainmentPolicy::new(own_namespace.trim());
    policy.modes = ContainmentPolicy::parse_modes(
        CONTAINMENT_MODES_VAR,
        &get(CONTAINMENT_MODES_VAR).unwrap_or_default(),
    )?;
    if let Some(actions) = get(CONTAINMENT_ACTIONS_VAR) {
        policy.parse_min_severity(CONTAINMENT_ACTIONS_VAR, &actions)?;
    }
    if let Some(protected) = get(PROTECTED_NAMESPACES_VAR) {
        policy.protect(PROTECTED_NAMESPACES_VAR, &protected)?;
    }
    if let Some(limit) = get(CONTAINMENT_RATE_LIMIT_VAR) {
        policy.max_actions_per_hour = parse_count(
            CONTAINMENT_RATE_LIMIT_VAR,
            &limit,
            1..=10_000,
            "expected a whole number of actions per cluster and hour from 1 to 10000",
        )?;
    }
    if let Some(grace) = get(DELETE_GRACE_PERIOD_VAR) {
        policy.set_grace_period(DELETE_GRACE_PERIOD_VAR, &grace)?;
    }
    if let Some(minimum) = get(MIN_HEALTHY_REPLICAS_VAR) {
        policy.min_healthy_replicas = parse_count(
            MIN_HEALTHY_REPLICAS_VAR,
            &minimum,
            0..=1000,
            "expected a whole number of ready pods from 0 to 1000",
        )?;
    }
    if let Some(node_pods) = get(CONTAIN_NODE_PODS_VAR) {
        policy.contain_node_pods = match node_pods.trim() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(ContainmentPolicyError::Value {
                    setting: CONTAIN_NODE_PODS_VAR.to_owned(),
                    value: node_pods,
                    expected: "expected true or false",
                }
                .into());
            }
        };
    }
    Ok(policy)
}

/// Splits `NAME=URL|CA_FILE,...`.
fn parse_endpoints(text: &str) -> Result<Vec<KubernetesEndpoint>, ConfigError> {
    let mut endpoints = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let invalid = || ConfigError::KubernetesEndpoint {
            value: entry.to_owned(),
        };
        let (cluster, rest) = entry.split_once('=').ok_or_else(invalid)?;
        let (url, ca_file) = rest.split_once('|').ok_or_else(invalid)?;
        if parse_clusters(cluster).map(|c| c.len()) != Ok(1)
            || !url.starts_with("https://")
            || ca_file.trim().is_empty()
        {
            return Err(invalid());
        }
        endpoints.push(KubernetesEndpoint {
            cluster: cluster.trim().to_owned(),
            url: url.trim().to_owned(),
            ca_file: ca_file.trim().to_owned(),
        });
    }
    Ok(endpoints)
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

    use tokenguard_core::Severity;
    use tokenguard_core::contain::{Action, Mode};

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
    fn containment_settings_read() {
        let defaults = config(&required()).unwrap().containment;
        assert!(defaults.is_off(), "containment is off unless set");
        assert!(defaults.protected_namespaces.contains("kube-system"));
        assert!(defaults.protected_namespaces.contains("tokenguard"));

        let mut vars = required();
        vars.push((CONTAINMENT_MODES_VAR, "payments=enforce,*=dry-run"));
        vars.push((CONTAINMENT_ACTIONS_VAR, "kill=high,delete=never"));
        vars.push((PROTECTED_NAMESPACES_VAR, "istio-system, monitoring"));
        vars.push((NAMESPACE_VAR, "security"));
        vars.push((CONTAINMENT_RATE_LIMIT_VAR, "3"));
        vars.push((DELETE_GRACE_PERIOD_VAR, "30s"));
        vars.push((MIN_HEALTHY_REPLICAS_VAR, "2"));
        vars.push((CONTAIN_NODE_PODS_VAR, "true"));
        vars.push((
            KUBERNETES_ENDPOINTS_VAR,
            "prod=https://127.0.0.1:6443|/tmp/ca.pem",
        ));
        let config = config(&vars).unwrap();
        let policy = &config.containment;
        assert_eq!(policy.modes.mode("payments"), Mode::Enforce);
        assert_eq!(policy.modes.mode("web"), Mode::DryRun);
        assert_eq!(
            policy.min_severity.get(&Action::KillProcess),
            Some(&Severity::High)
        );
        assert_eq!(policy.min_severity.get(&Action::DeletePod), None);
        for namespace in ["kube-system", "security", "istio-system", "monitoring"] {
            assert!(
                policy.protected_namespaces.contains(namespace),
                "{namespace}"
            );
        }
        assert!(!policy.protected_namespaces.contains("tokenguard"));
        assert_eq!(policy.max_actions_per_hour, 3);
        assert_eq!(policy.grace_period_seconds(), 30);
        assert_eq!(policy.min_healthy_replicas, 2);
        assert!(policy.contain_node_pods);
        assert_eq!(
            config.kubernetes_endpoints,
            vec![KubernetesEndpoint {
                cluster: "prod".to_owned(),
                url: "https://127.0.0.1:6443".to_owned(),
                ca_file: "/tmp/ca.pem".to_owned(),
            }]
        );
    }

    #[test]
    fn bad_containment_settings_named() {
        for (name, value, start) in [
            (
                CONTAINMENT_MODES_VAR,
                "payments=yes",
                "invalid TOKENGUARD_CONTAINMENT_MODES entry \"payments=yes\"",
            ),
            (
                CONTAINMENT_ACTIONS_VAR,
                "kill=urgent",
                "invalid TOKENGUARD_CONTAINMENT_ACTIONS entry \"kill=urgent\"",
            ),
            (
                CONTAINMENT_RATE_LIMIT_VAR,
                "0",
                "invalid TOKENGUARD_CONTAINMENT_RATE_LIMIT \"0\"",
            ),
            (
                DELETE_GRACE_PERIOD_VAR,
                "soon",
                "invalid TOKENGUARD_DELETE_GRACE_PERIOD \"soon\"",
            ),
            (
                CONTAIN_NODE_PODS_VAR,
                "yes",
                "invalid TOKENGUARD_CONTAIN_NODE_PODS \"yes\": expected true or false",
            ),
            (
                KUBERNETES_ENDPOINTS_VAR,
                "prod=http://10.0.0.1|/ca.pem",
                "invalid TOKENGUARD_KUBERNETES_ENDPOINTS entry \"prod=http://10.0.0.1|/ca.pem\"",
            ),
        ] {
            let mut vars = required();
            vars.push((name, value));
            let message = config(&vars).unwrap_err().to_string();
            assert!(message.starts_with(start), "{name}={value}: {message}");
        }
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
