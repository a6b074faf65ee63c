"""Render the agent's Helm chart offline and validate it for each Kubernetes version.

Usage: render_chart.py CHART_DIR OUTPUT_DIR VERSION...

Helm runs as a library (helm-python-sdk ships libhelm_c, Helm's Go SDK behind
a C ABI), so no helm binary and no cluster is needed. The chart is linted
strictly, rendered with example values, with embedded mode and with
containment RBAC, and every manifest is validated with kubernetes-validate's
strict schemas, which reject unknown fields. The containment Roles must have
exactly the rules below, so that a change to them shows up here.
"""

import sys
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

# Values a deployer must set; the URL and region are examples.
REQUIRED_VALUES = {
    "clusterName": "prod",
    "detectorUrl": "https://abcdefghijklmnopqrstuvwxyz012345.lambda-url.eu-west-1.on.aws/",
    "awsRegion": "eu-west-1",
}
BASE_KINDS = ["ClusterRole", "ClusterRoleBinding", "DaemonSet", "ServiceAccount"]
CONTAINMENT = {"enabled": True, "namespaces": ["payments", "web"], "dryRunNamespaces": ["staging"]}
# Each case: values and the kinds it must render, sorted.
CASES = {
    "detector": (REQUIRED_VALUES, BASE_KINDS),
    "embedded": ({**REQUIRED_VALUES, "embedded": {"enabled": True}}, BASE_KINDS),
    "containment": (
        {**REQUIRED_VALUES, "containment": CONTAINMENT},
        sorted(BASE_KINDS + ["Role"] * 3 + ["RoleBinding"] * 3),
    ),
}

# The group the stack's EKS access entries put the functions' roles in.
CONTAINMENT_GROUP = "tokenguard-containment"
# The calls containment makes in an enforce namespace, and no more.
ENFORCE_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch", "delete"]},
    {"apiGroups": ["apps"], "resources": ["replicasets", "deployments", "statefulsets"], "verbs": ["get"]},
    {
        "apiGroups": ["networking.k8s.io"],
        "resources": ["networkpolicies"],
        "resourceNames": ["tokenguard-quarantine"],
        "verbs": ["get"],
    },
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["create"]},
]
# A dry run only reads the pod and its controller.
DRY_RUN_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
    {"apiGroups": ["apps"], "resources": ["replicasets", "deployments", "statefulsets"], "verbs": ["get"]},
]

# Values the chart must reject, and a word the error must contain.
REJECTED = {
    "containment in kube-system": (
        {**REQUIRED_VALUES, "containment": {"enabled": True, "namespaces": ["kube-system"]}},
        "kube-system",
    ),
    "containment without namespaces": (
        {**REQUIRED_VALUES, "containment": {"enabled": True}},
        "containment.namespaces",
    ),
    "namespace in both lists": (
        {**REQUIRED_VALUES, "containment": {"enabled": True, "namespaces": ["web"], "dryRunNamespaces": ["web"]}},
        "web",
    ),
    "invalid namespace name": (
        {**REQUIRED_VALUES, "containment": {"enabled": True, "namespaces": ["Web_1"]}},
        "Web_1",
    ),
}


def lint(chart_dir: Path) -> list[str]:
    """Return helm lint's warnings and errors for the chart with the required values."""
    report = helm.lint(chart_dir, REQUIRED_VALUES, strict=True)
    problems = [f"{m['path']}: {m['error']}" for m in report.get("messages", []) if m["severity"] >= 2]
    return problems + list(report.get("errors") or [])


def check_missing_values(chart: helm.Chart) -> list[str]:
    """Return a problem unless rendering without clusterName fails and names it."""
    try:
        chart.render({}, name="tokenguard", namespace="kube-system", is_install=True)
    except helm.HelmError as error:
        if "clusterName" in str(error):
            return []
        return [f"rendering without values failed without naming clusterName: {error}"]
    return ["rendering without clusterName succeeded; expected an error naming it"]


def check_rejected(chart: helm.Chart) -> list[str]:
    """Return a problem for each value set in REJECTED that renders, or fails without naming its cause."""
    problems = []
    for case, (values, word) in REJECTED.items():
        try:
            chart.render(values, name="tokenguard", namespace="kube-system", is_install=True)
        except helm.HelmError as error:
            if word not in str(error):
                problems.append(f"{case}: rendering failed without naming {word}: {error}")
            continue
        problems.append(f"{case}: rendering succeeded; expected an error naming {word}")
    return problems


def check_containment(documents: list[dict]) -> list[str]:
    """Return problems with the containment Roles and RoleBindings of the containment case."""
    problems = []
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in documents if d["kind"] == "Role"}
    bindings = [d for d in documents if d["kind"] == "RoleBinding"]
    expected_rules = {namespace: ENFORCE_RULES for namespace in CONTAINMENT["namespaces"]}
    expected_rules |= {namespace: DRY_RUN_RULES for namespace in CONTAINMENT["dryRunNamespaces"]}
    for (namespace, name), role in roles.items():
        if role["rules"] != expected_rules.get(namespace):
            problems.append(f"containment: Role {namespace}/{name} has rules {role['rules']}, "
                            f"expected {expected_rules.get(namespace)}")
    if sorted(namespace for namespace, _ in roles) != sorted(expected_rules):
        problems.append(f"containment: Roles in {sorted(n for n, _ in roles)}, expected {sorted(expected_rules)}")
    for binding in bindings:
        namespace, name = binding["metadata"]["namespace"], binding["metadata"]["name"]
        subjects = [(s["kind"], s["name"]) for s in binding["subjects"]]
        if subjects != [("Group", CONTAINMENT_GROUP)]:
            problems.append(f"containment: RoleBinding {namespace}/{name} binds {subjects}, "
                            f"expected the group {CONTAINMENT_GROUP} only")
        if (namespace, binding["roleRef"]["name"]) not in roles or binding["roleRef"]["kind"] != "Role":
            problems.append(f"containment: RoleBinding {namespace}/{name} refers to {binding['roleRef']}, "
                            "which is not a Role in its namespace")
    return problems


def render(chart: helm.Chart, values: dict) -> list[dict]:
    """Render the chart and return its documents."""
    manifests = chart.render(values, name="tokenguard", namespace="kube-system", is_install=True)
    documents = []
    for text in manifests.values():
        documents.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return documents


def main() -> int:
    chart_dir, output_dir, versions = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    output_dir.mkdir(parents=True, exist_ok=True)
    chart = helm.Chart.load(chart_dir)
    problems = lint(chart_dir) + check_missing_values(chart) + check_rejected(chart)

    for case, (values, expected) in CASES.items():
        documents = render(chart, values)
        kinds = sorted(doc["kind"] for doc in documents)
        if kinds != expected:
            problems.append(f"{case}: rendered kinds {kinds}, expected {expected}")
        if case == "containment":
            problems.extend(check_containment(documents))
        (output_dir / f"{case}.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
        for version in versions:
            for doc in documents:
                name = f"{case}: {doc['kind']}/{doc['metadata']['name']} on Kubernetes {version}"
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as error:
                    problems.append(f"{name}: {error.message} at {'.'.join(map(str, error.path))}")
                except kubernetes_validate.SchemaNotFoundError as error:
                    problems.append(f"{name}: no schema: {error}")
        print(f"chart: {case}: {len(documents)} manifests valid on Kubernetes {', '.join(versions)}"
              if not problems else f"chart: {case}: rendered {len(documents)} manifests")

    for problem in problems:
        print(f"chart: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
