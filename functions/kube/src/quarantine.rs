//! The NetworkPolicy that denies all egress of quarantined pods: how
//! tokenguard builds it, and how an existing policy of that name is checked.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use serde_json::json;
use tokenguard_core::contain::{ApiError, QUARANTINE_LABEL, QUARANTINE_POLICY};

/// Label on the NetworkPolicy tokenguard creates.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "tokenguard");

/// Builds the NetworkPolicy that denies all egress of quarantined pods. It
/// selects them and lists `Egress` with no egress rule.
pub fn quarantine_policy(namespace: &str) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(QUARANTINE_POLICY.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.0.to_owned(),
                MANAGED_BY.1.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    QUARANTINE_LABEL.to_owned(),
                    "true".to_owned(),
                )])),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Egress".to_owned()]),
            egress: None,
            ingress: None,
        }),
    }
}

/// Lists the ways `existing` fails to deny egress as [`quarantine_policy`]
/// does, or returns an empty list when it still does. Only the spec's
/// `podSelector`, `policyTypes` and `egress` count, so metadata and ingress
/// rules that others add are accepted.
///
/// The selector must have the same `matchLabels` and no
/// `matchExpressions`, so an expression that selects the same pods in
/// another form is also reported.
pub(crate) fn policy_problems(existing: &NetworkPolicy) -> Vec<String> {
    let expected = quarantine_policy("").spec.unwrap_or_default();
    let spec = existing.spec.clone().unwrap_or_default();
    let mut problems = Vec::new();

    let selector = spec.pod_selector.unwrap_or_default();
    if selector_terms(&selector) != selector_terms(&expected.pod_selector.unwrap_or_default()) {
        problems.push(format!(
            "its podSelector is {}, which does not select exactly the pods labelled \
             {QUARANTINE_LABEL}=true",
            json!(selector)
        ));
    }

    let types = spec.policy_types.unwrap_or_default();
    let missing: Vec<&String> = expected
        .policy_types
        .iter()
        .flatten()
        .filter(|expected_type| !types.contains(expected_type))
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "its policyTypes {} do not include {}",
            json!(types),
            missing
                .iter()
                .map(|name| name.as_str())
                .collect::<Vec<_>>()
                .join(" and ")
        ));
    }

    // No egress rule is what denies all egress, so any rule lets traffic out.
    let rules = spec.egress.map_or(0, |rules| rules.len());
    if rules > 0 {
        let noun = if rules == 1 { "rule" } else { "rules" };
        problems.push(format!("it allows egress through {rules} {noun}"));
    }
    problems
}

/// Returns the `matchLabels` and `matchExpressions` of a selector, reading
/// an absent field as empty, as the API server does.
fn selector_terms(
    selector: &LabelSelector,
) -> (BTreeMap<String, String>, &[LabelSelectorRequirement]) {
    (
        selector.match_labels.clone().unwrap_or_default(),
        selector.match_expressions.as_deref().unwrap_or_default(),
    )
}

/// Builds the error for an existing [`QUARANTINE_POLICY`] in `namespace`
/// that fails to deny egress for `problems`. The message names the `kubectl`
/// commands that restore or delete the policy, because tokenguard never
/// overwrites it.
pub(crate) fn modified_policy_error(
    cluster: &str,
    namespace: &str,
    problems: &[String],
) -> ApiError {
    let restore = json!([{
        "op": "replace",
        "path": "/spec",
        "value": quarantine_policy(namespace).spec,
    }]);
    let message = format!(
        "NetworkPolicy {namespace}/{QUARANTINE_POLICY} in cluster {cluster} already exists but \
         does not deny all egress of quarantined pods: {problems}. Pods labelled \
         {QUARANTINE_LABEL}=true in {namespace} can still send traffic out. tokenguard does not \
         overwrite the policy. Restore it with `kubectl -n {namespace} patch networkpolicy \
         {QUARANTINE_POLICY} --type=json --patch='{restore}'`, or delete it with `kubectl -n \
         {namespace} delete networkpolicy {QUARANTINE_POLICY}` so that the next quarantine \
         creates it again",
        problems = problems.join("; ")
    );
    ApiError {
        status: None,
        reason: String::new(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(spec: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(json!({
            "metadata": {"name": "tokenguard-quarantine", "namespace": "shop"},
            "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn policy_denies_all_egress_of_labelled_pods() {
        let policy = serde_json::to_value(quarantine_policy("shop")).unwrap();
        assert_eq!(policy["metadata"]["name"], "tokenguard-quarantine");
        assert_eq!(policy["metadata"]["namespace"], "shop");
        assert_eq!(
            policy["spec"]["podSelector"],
            json!({"matchLabels": {"tokenguard.io/quarantine": "true"}})
        );
        assert_eq!(policy["spec"]["policyTypes"], json!(["Egress"]));
        assert!(policy["spec"].get("egress").is_none());
        assert!(policy["spec"].get("ingress").is_none());
    }

    #[test]
    fn own_policy_has_no_problems() {
        assert!(policy_problems(&quarantine_policy("shop")).is_empty());
    }

    #[test]
    fn empty_egress_list_and_ingress_accepted() {
        let existing = policy(json!({
            "podSelector": {"matchExpressions": [],
                            "matchLabels": {"tokenguard.io/quarantine": "true"}},
            "policyTypes": ["Ingress", "Egress"],
            "egress": [],
            "ingress": [{"from": [{"podSelector": {}}]}]
        }));
        assert_eq!(policy_problems(&existing), Vec::<String>::new());
    }

    #[test]
    fn missing_spec_reports_selector_and_types() {
        let existing = NetworkPolicy::default();
        assert_eq!(
            policy_problems(&existing),
            [
                "its podSelector is {}, which does not select exactly the pods labelled \
                 tokenguard.io/quarantine=true",
                "its policyTypes [] do not include Egress",
            ]
        );
    }

    #[test]
    fn selector_variants_rejected() {
        let selectors = [
            json!({"matchLabels": {"tokenguard.io/quarantine": "false"}}),
            json!({"matchLabels": {"app": "web", "tokenguard.io/quarantine": "true"}}),
            json!({"matchExpressions": [{"key": "app", "operator": "Exists"}],
                   "matchLabels": {"tokenguard.io/quarantine": "true"}}),
            json!({"matchExpressions": [
                {"key": "tokenguard.io/quarantine", "operator": "In", "values": ["true"]}
            ]}),
            json!({}),
        ];
        for selector in selectors {
            let existing = policy(json!({
                "podSelector": selector,
                "policyTypes": ["Egress"]
            }));
            let problems = policy_problems(&existing);
            assert_eq!(problems.len(), 1, "{selector}: {problems:?}");
            assert!(
                problems[0].starts_with(&format!("its podSelector is {selector}, ")),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn egress_rules_counted() {
        let existing = policy(json!({
            "podSelector": {"matchLabels": {"tokenguard.io/quarantine": "true"}},
            "policyTypes": ["Ingress"],
            "egress": [
                {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]},
                {"ports": [{"protocol": "UDP", "port": 53}]}
            ]
        }));
        assert_eq!(
            policy_problems(&existing),
            [
                "its policyTypes [\"Ingress\"] do not include Egress",
                "it allows egress through 2 rules",
            ]
        );
    }

    #[test]
    fn restore_patch_restores_spec() {
        let error = modified_policy_error("prod", "shop", &["problem".to_owned()]);
        let (_, after_flag) = error.message.split_once("--patch='").unwrap();
        let (patch, _) = after_flag.split_once('\'').unwrap();
        let patch: json_patch::Patch = serde_json::from_str(patch).unwrap();
        let mut tampered = json!({
            "metadata": {"name": "tokenguard-quarantine", "namespace": "shop",
                         "annotations": {"owner": "shop-team"}},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]
            }
        });

        json_patch::patch(&mut tampered, &patch).unwrap();

        let restored: NetworkPolicy = serde_json::from_value(tampered.clone()).unwrap();
        assert_eq!(policy_problems(&restored), Vec::<String>::new());
        assert_eq!(tampered["metadata"]["annotations"]["owner"], "shop-team");
    }

    #[test]
    fn error_names_policy_and_fix() {
        let problems = ["it allows egress through 1 rule".to_owned()];
        let error = modified_policy_error("prod", "shop", &problems);
        assert_eq!(error.status, None);
        assert_eq!(
            error.message,
            "NetworkPolicy shop/tokenguard-quarantine in cluster prod already exists but does \
             not deny all egress of quarantined pods: it allows egress through 1 rule. Pods \
             labelled tokenguard.io/quarantine=true in shop can still send traffic out. \
             tokenguard does not overwrite the policy. Restore it with `kubectl -n shop patch \
             networkpolicy tokenguard-quarantine --type=json --patch='[{\"op\":\"replace\",\
             \"path\":\"/spec\",\"value\":{\"podSelector\":{\"matchLabels\":\
             {\"tokenguard.io/quarantine\":\"true\"}},\"policyTypes\":[\"Egress\"]}}]'`, or \
             delete it with `kubectl -n shop delete networkpolicy tokenguard-quarantine` so \
             that the next quarantine creates it again"
        );
    }
}
