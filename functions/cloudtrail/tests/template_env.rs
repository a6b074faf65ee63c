//! infra/template.yaml sets exactly the environment variables each function
//! reads, as the functions declare them in `ENV_VARS`.
//!
//! RUST_LOG counts as a variable the code reads, because `main` passes it to
//! tracing's env filter. The template sets it so that an operator can raise
//! the log level without a new build. Variables that Lambda sets itself,
//! such as AWS_REGION, are in neither list.

use std::collections::BTreeSet;
use std::path::Path;

use serde_yaml::Value;

/// The template's functions: logical id, cargo binary, variables the code reads.
const FUNCTIONS: &[(&str, &str, &[&str])] = &[
    (
        "DetectorFunction",
        "tokenguard-detector",
        tokenguard_detector::ENV_VARS,
    ),
    (
        "CloudTrailFunction",
        "tokenguard-cloudtrail",
        tokenguard_cloudtrail::ENV_VARS,
    ),
];

fn template() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/template.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    // serde_yaml keeps short-form tags such as !Ref as tagged values.
    serde_yaml::from_str(&text).unwrap_or_else(|error| panic!("invalid YAML in template: {error}"))
}

/// Names under `Environment.Variables` of a function's properties, or of
/// `Globals.Function`.
fn variable_names(function: &Value) -> BTreeSet<String> {
    let Some(variables) = function
        .get("Environment")
        .and_then(|environment| environment.get("Variables"))
    else {
        return BTreeSet::new();
    };
    variables
        .as_mapping()
        .expect("Environment.Variables is a mapping")
        .keys()
        .map(|key| key.as_str().expect("variable names are strings").to_owned())
        .collect()
}

/// Logical ids of the resources of type `AWS::Serverless::Function`. Entries
/// that are not mappings, such as `Fn::ForEach` loops, are skipped.
fn serverless_functions(template: &Value) -> BTreeSet<String> {
    let resources = template["Resources"]
        .as_mapping()
        .expect("Resources is a mapping");
    resources
        .iter()
        .filter(|(_, resource)| resource.get("Type") == Some(&"AWS::Serverless::Function".into()))
        .map(|(id, _)| id.as_str().expect("logical ids are strings").to_owned())
        .collect()
}

#[test]
fn template_parses_short_form_tags() {
    let template = template();
    let topic =
        &template["Globals"]["Function"]["Environment"]["Variables"]["TOKENGUARD_TOPIC_ARN"];
    let Value::Tagged(tagged) = topic else {
        panic!("expected a tagged value, got {topic:?}");
    };
    assert_eq!(tagged.tag, "!Ref");
    assert_eq!(tagged.value, Value::from("AlertTopic"));
}

#[test]
fn every_function_checked() {
    let listed: BTreeSet<String> = FUNCTIONS.iter().map(|(id, ..)| id.to_string()).collect();
    assert_eq!(
        serverless_functions(&template()),
        listed,
        "add each function of infra/template.yaml to FUNCTIONS with its ENV_VARS"
    );
}

#[test]
fn template_sets_code_variables() {
    let template = template();
    let globals = variable_names(&template["Globals"]["Function"]);
    for (id, binary, code_vars) in FUNCTIONS {
        let resource = &template["Resources"][*id];
        assert_eq!(
            resource["Metadata"]["BuildProperties"]["Binary"],
            Value::from(*binary),
            "{id} builds another binary"
        );
        let mut set = globals.clone();
        set.extend(variable_names(&resource["Properties"]));
        let read: BTreeSet<String> = code_vars.iter().map(|name| name.to_string()).collect();

        let unset: Vec<_> = read.difference(&set).collect();
        assert!(
            unset.is_empty(),
            "{id}: the code reads {unset:?}, but infra/template.yaml does not set them: \
             add them to Globals.Function.Environment.Variables or to the function"
        );
        let unread: Vec<_> = set.difference(&read).collect();
        assert!(
            unread.is_empty(),
            "{id}: infra/template.yaml sets {unread:?}, which the code does not read: \
             remove them, or add them to the function's ENV_VARS where the code reads them"
        );
    }
}
