#!/usr/bin/env bash
# Checks the deployment artefacts in infra/ offline. It lints the SAM template
# with sam validate, cfn-lint and checkov, and renders the agent's Helm chart
# and validates it for each Kubernetes version below. It builds the Lambda
# packages with sam build (at most 10 MiB zipped each) and the agent's image
# with podman. Any failed step fails the script. Nothing here reaches AWS.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

venv="${TOKENGUARD_VENV:-$root/.venv}"
checkov_venv="${TOKENGUARD_CHECKOV_VENV:-$root/.tokenguard/checkov-venv}"
work="$root/.tokenguard/infra-check"
template=infra/template.yaml
chart=infra/helm/tokenguard-agent
# Kubernetes minor versions to validate the chart for: those EKS supports
# (standard and extended support) as of December 2026, plus 1.29 to 1.31 for
# clusters near the end of extended support. kubernetes-validate 1.37.0 has
# schemas for 1.25 to 1.37.
kubernetes_versions=(1.29 1.30 1.31 1.32 1.33 1.34 1.35 1.36)
max_zip_bytes=$((10 * 1024 * 1024))
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

# SAM CLI sends usage data unless this is 0, and these checks stay offline.
export SAM_CLI_TELEMETRY=0
export PATH="$venv/bin:$PATH"
mkdir -p "$work"

step() {
    echo "infra-check: $*" >&2
}

# Runs a command without network access when this user can create a network
# namespace (root can), which proves the step is offline.
offline() {
    if unshare -n true 2>/dev/null; then
        unshare -n "$@"
    else
        "$@"
    fi
}

for tool in sam cfn-lint cargo-lambda python; do
    if [[ ! -x "$venv/bin/$tool" ]]; then
        echo "infra-check: missing $venv/bin/$tool: run scripts/setup.sh" >&2
        exit 1
    fi
done
if [[ ! -x "$checkov_venv/bin/checkov" ]]; then
    echo "infra-check: missing $checkov_venv/bin/checkov: run scripts/setup.sh" >&2
    exit 1
fi

step "sam validate --lint $template"
offline sam validate --lint --region us-east-1 --template-file "$template"

step "cfn-lint $template"
offline cfn-lint "$template"

step "checkov $template"
# --skip-download keeps checkov from fetching guideline links from its vendor.
# Its exit status is ignored here because the report check below is stricter:
# it also rejects a skip without a reason.
offline "$checkov_venv/bin/checkov" --file "$template" --framework cloudformation \
    --skip-download --output json >"$work/checkov.json" 2>"$work/checkov.log" || true
if [[ ! -s "$work/checkov.json" ]]; then
    echo "infra-check: checkov wrote no report; its log follows" >&2
    cat "$work/checkov.log" >&2
    exit 1
fi
"$checkov_venv/bin/python" infra/check/checkov_report.py "$work/checkov.json"

step "render $chart for Kubernetes ${kubernetes_versions[*]}"
offline python infra/check/render_chart.py "$chart" "$work/chart" "${kubernetes_versions[@]}"

# The builds share target/ with the other cargo commands. Two builds at once
# only wait for each other's lock on a 2-core machine, so wait for a running
# build to end first, for up to 20 minutes.
wait_for_cargo() {
    local waited=0
    while pgrep -x cargo >/dev/null && ((waited < 1200)); do
        if ((waited == 0)); then
            step "waiting for a running cargo build to end"
        fi
        sleep 15
        waited=$((waited + 15))
    done
}

# The CloudTrail function is built once its crate exists.
functions=(DetectorFunction)
if [[ -f functions/cloudtrail/Cargo.toml ]]; then
    functions+=(CloudTrailFunction)
else
    step "functions/cloudtrail is missing: building DetectorFunction only"
fi
wait_for_cargo
step "sam build ${functions[*]}"
# The overrides feed Fn::ForEach, which SAM CLI expands locally. The values
# are examples. Each function builds on its own, because sam build takes
# either one function or the whole template.
for function in "${functions[@]}"; do
    sam build "$function" --language-extensions --beta-features \
        --template-file "$template" --build-dir "$work/sam-build/$function" \
        --parameter-overrides ClusterNames=prod NodeRoleArns=arn:aws:iam::123456789012:role/node
    "$venv/bin/python" - "$work/sam-build/$function/$function" "$work/$function.zip" "$max_zip_bytes" <<'EOF'
import os
import sys
import zipfile

source, archive, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
    for name in sorted(os.listdir(source)):
        bundle.write(os.path.join(source, name), name)
size = os.path.getsize(archive)
name = os.path.basename(source)
print(f"infra-check: {name}: {size / 1024 / 1024:.1f} MiB zipped (limit {limit / 1024 / 1024:.0f} MiB)", file=sys.stderr)
if size > limit:
    print(f"infra-check: {name} is over the limit; shrink the binary or raise the limit with a reason", file=sys.stderr)
    sys.exit(1)
EOF
done

if ! command -v podman >/dev/null; then
    echo "infra-check: missing podman: run scripts/setup.sh" >&2
    exit 1
fi
wait_for_cargo
step "cargo build --release -p tokenguard-agent"
cargo build --release -p tokenguard-agent
step "podman build -f infra/Containerfile"
infra/image/stage.sh "$CARGO_TARGET_DIR/release/tokenguard-agent" "$work/image"
podman build --quiet --file infra/Containerfile --tag localhost/tokenguard-agent:check "$work/image" >/dev/null
# podman run needs setrlimit, which some sandboxes deny, so the image is
# checked by running its binary in a chroot of the image's own files: this
# fails if a library the binary links is missing from the image.
mount_point=$(podman image mount localhost/tokenguard-agent:check)
trap 'podman image unmount localhost/tokenguard-agent:check >/dev/null' EXIT
version=$(chroot "$mount_point" /usr/local/bin/tokenguard-agent --version)
step "image localhost/tokenguard-agent:check runs: $version"
