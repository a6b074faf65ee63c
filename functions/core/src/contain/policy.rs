//! Containment settings and their parsing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::Action;
use crate::finding::Severity;
use crate::policy::parse_duration;

/// Containment mode of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Nothing is decided or recorded.
    #[default]
    Off,
    /// Decide and record what would be done, act on nothing.
    DryRun,
    /// Act.
    Enforce,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::DryRun => "dry-run",
            Mode::Enforce => "enforce",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The mode of each namespace, with a default for the others.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NamespaceModes {
    pub default: Mode,
    pub namespaces: BTreeMap<String, Mode>,
}

impl NamespaceModes {
    pub fn mode(&self, namespace: &str) -> Mode {
        self.namespaces
            .get(namespace)
            .copied()
            .unwrap_or(self.default)
    }

    /// Namespaces in enforce mode by name; the default does not count.
    pub fn enforced(&self) -> impl Iterator<Item = &str> {
        self.namespaces
            .iter()
            .filter(|(_, mode)| **mode == Mode::Enforce)
            .map(|(namespace, _)| namespace.as_str())
    }
}

/// Containment settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainmentPolicy {
    pub modes: NamespaceModes,
    /// The lowest severity at which each action is taken. An action without
    /// an entry is never taken.
    pub min_severity: BTreeMap<Action, Severity>,
    /// Namespaces never touched, whatever their mode: always `kube-system`
    /// and tokenguard's own.
    pub protected_namespaces: BTreeSet<String>,
    /// Whether DaemonSet, static and mirror pods may be contained. Such pods
    /// run node services, and a deleted one comes back on the same node.
    pub contain_node_pods: bool,
    /// Ready pods a ReplicaSet, Deployment or StatefulSet keeps after a pod
    /// is deleted or quarantined; an action that would leave fewer is
    /// skipped.
    pub min_healthy_replicas: u32,
    /// Actions per cluster and hour, counted across function instances.
    pub max_actions_per_hour: u32,
    /// `gracePeriodSeconds` of a pod deletion.
    pub grace_period: Duration,
}

/// Namespaces that are always protected besides tokenguard's own.
pub const ALWAYS_PROTECTED: &[&str] = &["kube-system"];

impl Default for ContainmentPolicy {
    fn default() -> Self {
        ContainmentPolicy::new("tokenguard")
    }
}

/// An invalid containment setting.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ContainmentPolicyError {
    #[error(
        "invalid {setting} entry {entry:?}: expected NAMESPACE=MODE or *=MODE, with MODE \
         off, dry-run or enforce"
    )]
    Mode { setting: String, entry: String },
    #[error(
        "invalid {setting} entry {entry:?}: expected ACTION=SEVERITY, with ACTION kill, \
         quarantine or delete and SEVERITY low, medium, high or critical"
    )]
    Action { setting: String, entry: String },
    #[error("invalid {setting} {value:?}: {expected}")]
    Value {
        setting: String,
        value: String,
        expected: &'static str,
    },
}

impl ContainmentPolicy {
    /// Creates the default policy for a tokenguard installed in
    /// `own_namespace`. Every namespace is off. Once a namespace is turned
    /// on, it kills at `medium`, quarantines at `high` and deletes at
    /// `critical`, with 10 actions per cluster and hour.
    pub fn new(own_namespace: &str) -> ContainmentPolicy {
        let mut protected: BTreeSet<String> =
            ALWAYS_PROTECTED.iter().map(|ns| (*ns).to_owned()).collect();
        protected.insert(own_namespace.to_owned());
        ContainmentPolicy {
            modes: NamespaceModes::default(),
            min_severity: BTreeMap::from([
                (Action::KillProcess, Severity::Medium),
                (Action::Quarantine, Severity::High),
                (Action::DeletePod, Severity::Critical),
            ]),
            protected_namespaces: protected,
            contain_node_pods: false,
            min_healthy_replicas: 1,
            max_actions_per_hour: 10,
            grace_period: Duration::from_secs(5),
        }
    }

    /// Returns whether no namespace can be contained.
    pub fn is_off(&self) -> bool {
        self.modes.default == Mode::Off && self.modes.namespaces.values().all(|m| *m == Mode::Off)
    }

    /// Parses `NAMESPACE=MODE,...`, where `*` sets the default. Empty leaves
    /// every namespace off.
    pub fn parse_modes(
        setting: &str,
        value: &str,
    ) -> Result<NamespaceModes, ContainmentPolicyError> {
        let mut modes = NamespaceModes::default();
        for entry in entries(value) {
            let invalid = || ContainmentPolicyError::Mode {
                setting: setting.to_owned(),
                entry: entry.to_owned(),
            };
            let (namespace, mode) = entry.split_once('=').ok_or_else(invalid)?;
            let mode = match mode.trim() {
                "off" => Mode::Off,
                "dry-run" | "dryrun" | "dry_run" => Mode::DryRun,
                "enforce" => Mode::Enforce,
                _ => return Err(invalid()),
            };
            match namespace.trim() {
                "*" => modes.default = mode,
                name if tokenguard_schema::is_valid_name(name) => {
                    modes.namespaces.insert(name.to_owned(), mode);
                }
                _ => return Err(invalid()),
            }
        }
        Ok(modes)
    }

    /// Parses `ACTION=SEVERITY,...` over the defaults; `ACTION=never` turns an
    /// action off.
    pub fn parse_min_severity(
        &mut self,
        setting: &str,
        value: &str,
    ) -> Result<(), ContainmentPolicyError> {
        for entry in entries(value) {
            let invalid = || ContainmentPolicyError::Action {
                setting: setting.to_owned(),
                entry: entry.to_owned(),
            };
            let (action, severity) = entry.split_once('=').ok_or_else(invalid)?;
            let action = Action::ALL
                .into_iter()
                .find(|known| known.as_str() == action.trim())
                .ok_or_else(invalid)?;
            let severity = match severity.trim() {
                "never" => {
                    self.min_severity.remove(&action);
                    continue;
                }
                "low" => Severity::Low,
                "medium" => Severity::Medium,
                "high" => Severity::High,
                "critical" => Severity::Critical,
                _ => return Err(invalid()),
            };
            self.min_severity.insert(action, severity);
        }
        Ok(())
    }

    /// Adds the namespaces of a comma-separated list to the protected ones.
    pub fn protect(&mut self, setting: &str, value: &str) -> Result<(), ContainmentPolicyError> {
        for namespace in entries(value) {
            if !tokenguard_schema::is_valid_name(namespace) {
                return Err(ContainmentPolicyError::Value {
                    setting: setting.to_owned(),
                    value: namespace.to_owned(),
                    expected: "expected namespace names separated by commas",
                });
            }
            self.protected_namespaces.insert(namespace.to_owned());
        }
        Ok(())
    }

    /// Sets the deletion grace period from a duration such as `5s`.
    pub fn set_grace_period(
        &mut self,
        setting: &str,
        value: &str,
    ) -> Result<(), ContainmentPolicyError> {
        let invalid = || ContainmentPolicyError::Value {
            setting: setting.to_owned(),
            value: value.to_owned(),
            expected: "expected a duration from 0s to 1h, such as 5s",
        };
        let grace = parse_duration(setting, value).map_err(|_| invalid())?;
        if grace > Duration::from_secs(3600) {
            return Err(invalid());
        }
        self.grace_period = grace;
        Ok(())
    }

    /// Returns the grace period in whole seconds, as the API takes it.
    pub fn grace_period_seconds(&self) -> u32 {
        u32::try_from(self.grace_period.as_secs()).unwrap_or(u32::MAX)
    }
}

/// Parses a whole number setting within `range`.
pub fn parse_count(
    setting: &str,
    value: &str,
    range: std::ops::RangeInclusive<u32>,
    expected: &'static str,
) -> Result<u32, ContainmentPolicyError> {
    value
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|count| range.contains(count))
        .ok_or_else(|| ContainmentPolicyError::Value {
            setting: setting.to_owned(),
            value: value.to_owned(),
            expected,
        })
}

fn entries(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
}
