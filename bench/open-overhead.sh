#!/usr/bin/env bash
# Measures what the agent costs the node. It times one open+close with and
# without the agent's eBPF program attached, for three files. The kernel
# filter drops the first, a plain file, at once. The second, named "token"
# outside any token directory, is dropped after the path walk. The third is a
# pod's IRSA token that one process opens in a loop: one event, and the rest
# folded as repeats. It then runs READERS short-lived
# `cat` processes that each read the token once, so each is a full event, and
# reports the agent's CPU time, peak memory and the events it printed.
#
#   bench/open-overhead.sh [AGENT_BINARY] [COUNT] [READERS]
#
# Needs root. AGENT_BINARY defaults to target/release/tokenguard-agent (make
# build), COUNT to 200000 opens per run, READERS to 2000. Each open case runs
# 5 times and the median is printed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
agent=${1:-$root/target/release/tokenguard-agent}
count=${2:-200000}
readers=${3:-2000}
runs=5
sandbox="$root/scripts/pod-sandbox.sh"

if [[ $(id -u) -ne 0 ]]; then
    echo "open-overhead: run as root: the agent loads eBPF programs" >&2
    exit 1
fi
if [[ ! -x $agent ]]; then
    echo "open-overhead: agent binary $agent not found: run make build first" >&2
    exit 1
fi

work=$(mktemp -d /tmp/tokenguard-bench.XXXXXX)
kubelet_root="$work/kubelet"
pod_uid=0b3e9c1d-8a7f-4e2b-9c5d-6f1a2b3c4d5e
container_id=$(printf 'be%.0s' {1..32})
cleanup() {
    [[ -n ${agent_pid:-} ]] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
    "$sandbox" teardown "$kubelet_root" "$pod_uid" "$container_id" || true
    rm -rf "$work"
}
trap cleanup EXIT

gcc -O2 -Wall -o "$work/openloop" "$root/bench/openloop.c"
"$sandbox" setup "$kubelet_root" "$pod_uid" "$container_id"
mkdir -p "$work/other"
echo not-a-token >"$work/other/token"
echo plain >"$work/plain"
irsa_token=/var/run/secrets/eks.amazonaws.com/serviceaccount/token

# Prints the median of the per-open times of $runs runs of openloop.
median_ns() {
    local results=()
    for _ in $(seq "$runs"); do
        results+=("$("$@")")
    done
    printf '%s\n' "${results[@]}" | sort -n | sed -n "$(((runs + 1) / 2))p"
}

# Prints the median open+close time of the three cases, tab-separated.
measure() {
    local plain other token
    plain=$(median_ns "$work/openloop" "$work/plain" "$count")
    other=$(median_ns "$work/openloop" "$work/other/token" "$count")
    token=$(median_ns "$sandbox" exec "$kubelet_root" "$pod_uid" "$container_id" -- \
        "$work/openloop" "$irsa_token" "$count")
    printf '%s\t%s\t%s\n' "$plain" "$other" "$token"
}

# Prints the wall seconds that $readers cat processes in the pod take to read
# the token once each.
readers_seconds() {
    local start end
    start=$(date +%s.%N)
    "$sandbox" exec "$kubelet_root" "$pod_uid" "$container_id" -- sh -c '
        i=0
        while [ "$i" -lt "$1" ]; do cat "$2" >/dev/null; i=$((i + 1)); done
    ' readers "$readers" "$irsa_token"
    end=$(date +%s.%N)
    awk -v a="$end" -v b="$start" 'BEGIN { printf "%.2f", a - b }'
}

# CPU seconds (user + system) and peak resident memory of a process.
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}
peak_rss_mib() {
    awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

echo "kernel $(uname -r), $(nproc) CPUs, $count opens per run, median of $runs runs" >&2
IFS=$'\t' read -r base_plain base_other base_token < <(measure)
base_readers=$(readers_seconds)

"$agent" --cluster bench --node-name bench-node --no-kube --kubelet-root "$kubelet_root" \
    --sink stdout >"$work/events.jsonl" 2>"$work/agent.log" &
agent_pid=$!
for _ in $(seq 100); do
    grep -q '"agent started"' "$work/agent.log" 2>/dev/null && break
    kill -0 "$agent_pid" 2>/dev/null || { cat "$work/agent.log" >&2; exit 1; }
    sleep 0.1
done
IFS=$'\t' read -r probe_plain probe_other probe_token < <(measure)
sleep 2
loop_events=$(wc -l <"$work/events.jsonl")
cpu_before=$(cpu_seconds "$agent_pid")
probe_readers=$(readers_seconds)
# The agent drains the ring buffer after the last reader exits.
sleep 2
cpu_after=$(cpu_seconds "$agent_pid")
rss=$(peak_rss_mib "$agent_pid")
kill -INT "$agent_pid"
wait "$agent_pid" || true
agent_pid=

reader_events=$(($(wc -l <"$work/events.jsonl") - loop_events))
lost=$(grep -o '"lost":[0-9]*' "$work/agent.log" | tail -1 | cut -d: -f2 || true)

printf '| case | without agent (ns) | with agent (ns) | added (ns) |\n'
printf '| --- | ---: | ---: | ---: |\n'
printf '| open+close of a plain file | %s | %s | %s |\n' \
    "$base_plain" "$probe_plain" "$((probe_plain - base_plain))"
printf '| open+close of a "token" outside token directories | %s | %s | %s |\n' \
    "$base_other" "$probe_other" "$((probe_other - base_other))"
printf '| open+close of a pod IRSA token, repeated by one process | %s | %s | %s |\n' \
    "$base_token" "$probe_token" "$((probe_token - base_token))"
printf '\n%s events for the %s looped token opens\n' "$loop_events" "$((runs * count))"
printf '\n| %s cat processes reading the token once each | value |\n' "$readers"
printf '| --- | ---: |\n'
printf '| wall time without agent (s) | %s |\n' "$base_readers"
printf '| wall time with agent (s) | %s |\n' "$probe_readers"
printf '| events printed | %s |\n' "$reader_events"
printf '| events lost in the kernel | %s |\n' "${lost:-0}"
printf '| agent CPU time (s) | %s |\n' \
    "$(awk -v a="$cpu_after" -v b="$cpu_before" 'BEGIN { printf "%.2f", a - b }')"
printf '| agent peak RSS (MiB) | %s |\n' "$rss"
