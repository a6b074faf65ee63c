//! Detection settings shared by the detector Lambda and the embedded mode.

use std::time::Duration;

use thiserror::Error;

/// How the new-value baseline learns and forgets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// How long a scope learns silently from its first sighting. With zero,
    /// only the first value of a scope is learned silently.
    pub learning_period: Duration,
    /// How long a value is remembered without a sighting.
    pub forget_after: Duration,
    /// Minimum age of a known value's `last_seen` before a sighting rewrites
    /// it, so steady traffic costs few writes.
    pub refresh_interval: Duration,
    /// Executables allowed to read the kubelet's copies of tokens on the host.
    pub host_readers: Vec<String>,
    /// EKS cluster names whose reads are accepted; empty accepts any.
    pub clusters: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            learning_period: Duration::from_secs(7 * 24 * 3600),
            forget_after: Duration::from_secs(28 * 24 * 3600),
            refresh_interval: Duration::from_secs(3600),
            host_readers: vec![
                "/usr/bin/kubelet".to_owned(),
                "/usr/local/bin/kubelet".to_owned(),
            ],
            clusters: Vec::new(),
        }
    }
}

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    /// A duration does not parse.
    #[error("invalid {setting} {value:?}: expected a duration such as 0s, 10m, 12h or 7d")]
    Duration { setting: String, value: String },
    /// `forget_after` would drop values before learning ends.
    #[error(
        "invalid forget-after {forget_after:?}: must be longer than the learning period \
         {learning_period:?}, or values learned early are forgotten before learning ends"
    )]
    ForgetBeforeLearned {
        forget_after: String,
        learning_period: String,
    },
}

/// Parses a duration such as `0s`, `90s`, `10m`, `12h` or `7d` for `setting`.
pub fn parse_duration(setting: &str, value: &str) -> Result<Duration, PolicyError> {
    humantime::parse_duration(value.trim()).map_err(|_| PolicyError::Duration {
        setting: setting.to_owned(),
        value: value.to_owned(),
    })
}

impl Policy {
    /// Builds a policy from the two user-facing durations, as text.
    pub fn from_settings(learning_period: &str, forget_after: &str) -> Result<Policy, PolicyError> {
        let policy = Policy {
            learning_period: parse_duration("learning-period", learning_period)?,
            forget_after: parse_duration("forget-after", forget_after)?,
            ..Policy::default()
        };
        policy.validate()?;
        Ok(policy)
    }

    /// Checks that the settings fit together.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.forget_after.is_zero() || self.forget_after <= self.learning_period {
            return Err(PolicyError::ForgetBeforeLearned {
                forget_after: humantime::format_duration(self.forget_after).to_string(),
                learning_period: humantime::format_duration(self.learning_period).to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("x", "0s").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_duration("x", "10m").unwrap(),
            Duration::from_secs(600)
        );
        assert_eq!(
            parse_duration("x", "7d").unwrap(),
            Duration::from_secs(604_800)
        );
    }

    #[test]
    fn bad_duration_names_value() {
        let error = parse_duration("learning-period", "seven days").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid learning-period \"seven days\": expected a duration such as 0s, 10m, 12h or 7d"
        );
    }

    #[test]
    fn defaults_are_seven_and_twenty_eight_days() {
        let policy = Policy::from_settings("7d", "28d").unwrap();
        assert_eq!(policy, Policy::default());
    }

    #[test]
    fn forget_shorter_than_learning_rejected() {
        let error = Policy::from_settings("7d", "1d").unwrap_err();
        assert!(matches!(error, PolicyError::ForgetBeforeLearned { .. }));
        assert!(
            error
                .to_string()
                .starts_with("invalid forget-after \"1day\"")
        );
    }
}
