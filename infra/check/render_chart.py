"""Render the agent's Helm chart offline and validate it for each Kubernetes version.

Usage: render_chart.py CHART_DIR OUTPUT_DIR VERSION...

Helm runs as a library (helm-python-sdk ships libhelm_c, Helm's Go SDK behind
a C ABI), so no helm binary and no cluster is needed. The chart is linted
strictly, rendered with example values and with embedded mode, and every
manifest is validated with kubernetes-validate's strict schemas, which reject
unknown fields.
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
CASES = {
    "detector": REQUIRED_VALUES,
    "embedded": {**REQUIRED_VALUES, "embedded": {"enabled": True}},
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
    problems = lint(chart_dir) + check_missing_values(chart)

    for case, values in CASES.items():
        documents = render(chart, values)
        kinds = sorted(doc["kind"] for doc in documents)
        expected = ["ClusterRole", "ClusterRoleBinding", "DaemonSet", "ServiceAccount"]
        if kinds != expected:
            problems.append(f"{case}: rendered kinds {kinds}, expected {expected}")
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
