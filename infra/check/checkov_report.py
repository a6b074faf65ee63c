"""Check checkov's JSON report: no failed check, no parsing error, and a reason for every skip.

Usage: checkov_report.py REPORT.json
"""

import json
import sys

# The suppress_comment checkov 3 reports for a skip without a comment.
CHECKOV_PLACEHOLDER = "No comment provided"


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as handle:
        report = json.load(handle)
    # checkov writes one object per framework, or a list of them.
    reports = report if isinstance(report, list) else [report]
    problems = []
    for framework in reports:
        results = framework["results"]
        for check in results.get("failed_checks", []):
            problems.append(f"failed {check['check_id']} on {check['resource']}: {check['check_name']}")
        for path in results.get("parsing_errors", []):
            problems.append(f"failed to parse {path}")
        for check in results.get("skipped_checks", []):
            comment = (check["check_result"].get("suppress_comment") or "").strip()
            if not comment or comment == CHECKOV_PLACEHOLDER:
                problems.append(f"skipped {check['check_id']} on {check['resource']} without a reason")
        summary = framework["summary"]
        print(
            f"checkov {summary['checkov_version']}: {summary['passed']} passed, "
            f"{summary['failed']} failed, {summary['skipped']} skipped"
        )
    for problem in problems:
        print(f"checkov: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
