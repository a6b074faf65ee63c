#!/usr/bin/env bash
# Runs tokenguard's agent in embedded mode on this machine's kernel and plays
# a pod-shaped scenario. The workload's own process reads its AWS token while
# the baseline learns, then reads it again once learning is over (known, so
# quiet). Then an unfamiliar process reads it, which is the finding.
#
#   scripts/demo.sh AGENT_BINARY [STANDIN_BINARY]
set -euo pipefail

agent=${1:?usage: scripts/demo.sh AGENT_BINARY [STANDIN_BINARY]}
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
sandbox="$root/scripts/pod-sandbox.sh"
standin=${2:-$root/target/release/tokenguard-kube-standin}

if [[ $(id -u) -ne 0 ]]; then
    echo "demo: run as root: the agent loads eBPF programs into the kernel" >&2
    exit 1
fi

work=$(mktemp -d /tmp/tokenguard-demo.XXXXXX)
kubelet_root="$work/kubelet"
pod_uid=7c1d5a3e-2b4f-4e8a-9c6d-0f1e2d3c4b5a
container_id=3b0f5e4c9a7d2e1f8c6b5a4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f
learning=6s

cleanup() {
    [[ -n ${agent_pid:-} ]] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
    [[ -n ${standin_pid:-} ]] && kill "$standin_pid" 2>/dev/null && wait "$standin_pid" 2>/dev/null
    "$sandbox" teardown "$kubelet_root" "$pod_uid" "$container_id" || true
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*" >&2; }

"$sandbox" setup "$kubelet_root" "$pod_uid" "$container_id"

# The workload's own binary: a copy of cat under the name the app would have,
# so the baseline learns a process that is not the attacker's cat.
app_dir="$work/app"
mkdir -p "$app_dir"
cp "$(command -v cat)" "$app_dir/payments-api"

step "starting a Kubernetes API stand-in that knows pod payments/payments-api-6d8f7b9c5-x2k4q"
"$standin" --pod-uid "$pod_uid" --container-id "$container_id" --node demo-node \
    --kubeconfig "$work/kubeconfig" >"$work/standin.log" 2>&1 &
standin_pid=$!
for _ in $(seq 50); do [[ -s $work/kubeconfig ]] && break; sleep 0.1; done

step "starting tokenguard-agent in embedded mode (learning period $learning)"
KUBECONFIG="$work/kubeconfig" "$agent" --embedded "$work/state" --cluster demo \
    --node-name demo-node --kubelet-root "$kubelet_root" --learning-period "$learning" \
    >"$work/findings.jsonl" 2>"$work/agent.log" &
agent_pid=$!
for _ in $(seq 100); do
    grep -q '"agent started"' "$work/agent.log" 2>/dev/null && break
    kill -0 "$agent_pid" 2>/dev/null || { cat "$work/agent.log" >&2; exit 1; }
    sleep 0.1
done

token=/var/run/secrets/eks.amazonaws.com/serviceaccount/token
step "the workload's process payments-api reads its token during learning"
"$sandbox" exec "$kubelet_root" "$pod_uid" "$container_id" -- "$app_dir/payments-api" "$token" >/dev/null

# One second past the learning period, so the next reads fall after it.
sleep "$((${learning%s} + 1))"
step "learning is over; payments-api reads again (known: no finding)"
"$sandbox" exec "$kubelet_root" "$pod_uid" "$container_id" -- "$app_dir/payments-api" "$token" >/dev/null

step "an unfamiliar process, /bin/sh running cat, reads the token"
"$sandbox" exec "$kubelet_root" "$pod_uid" "$container_id" -- sh -c "cat $token >/dev/null"

for _ in $(seq 50); do [[ -s $work/findings.jsonl ]] && break; sleep 0.1; done
step "finding"
if [[ ! -s $work/findings.jsonl ]]; then
    echo "demo: no finding was printed; agent log follows" >&2
    cat "$work/agent.log" >&2
    exit 1
fi
python3 -m json.tool --json-lines "$work/findings.jsonl"
