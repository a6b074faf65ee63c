#!/usr/bin/env bash
# Measures `tokenguard-agent replay` on CloudTrail history: records per second
# on one core (taskset -c 0), for the same S3 log file as plain JSON and
# gzip-compressed, and the peak memory of each run. The file is written by
# bench/gen_cloudtrail.py: IRSA exchanges of 200 service accounts over one
# day, one in a thousand from outside the cluster's egress.
#
#   bench/replay-throughput.sh [AGENT_BINARY] [RECORDS]
#
# AGENT_BINARY defaults to target/release/tokenguard-agent (make build),
# RECORDS to 100000. Each file is replayed 5 times and the median run is
# printed with the summary replay writes on stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
agent=${1:-$root/target/release/tokenguard-agent}
records=${2:-100000}
runs=5
issuer=https://oidc.eks.eu-west-1.amazonaws.com/id/0A1B2C3D4E5F60718293A4B5C6D7E8F9

if [[ ! -x $agent ]]; then
    echo "replay-throughput: agent binary $agent not found: run make build first" >&2
    exit 1
fi
for tool in taskset /usr/bin/time python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "replay-throughput: missing $tool: install util-linux, time and python3" >&2
        exit 1
    fi
done

work=$(mktemp -d /tmp/tokenguard-replay.XXXXXX)
trap 'rm -rf "$work"' EXIT
python3 "$root/bench/gen_cloudtrail.py" "$work/log.json" "$records"
python3 "$root/bench/gen_cloudtrail.py" "$work/log.json.gz" "$records"

echo "| file | size | records/s (median of $runs) | wall time | load | peak RSS |"
echo "| --- | --- | --- | --- | --- | --- |"
for file in log.json log.json.gz; do
    results=()
    for _ in $(seq "$runs"); do
        /usr/bin/time -f '%M' -o "$work/rss" taskset -c 0 "$agent" replay \
            --cloudtrail "$work/$file" --cluster "prod=$issuer" \
            --learning-period 1h --egress 198.51.100.0/24 \
            >"$work/alerts" 2>"$work/stderr"
        # The summary is the last line of stderr:
        # {"summary":{...,"load_seconds":L,"seconds":S}}.
        summary=$(tail -n 1 "$work/stderr")
        results+=("$(python3 - "$summary" "$(cat "$work/rss")" "$records" <<'PY'
import json
import sys

summary = json.loads(sys.argv[1])["summary"]
rss_kib, records = int(sys.argv[2]), int(sys.argv[3])
seconds = summary["seconds"]
print(f"{records / seconds:.0f} {seconds:.3f} {summary['load_seconds']:.3f} {rss_kib // 1024}")
PY
)")
    done
    read -r rate seconds load rss < <(printf '%s\n' "${results[@]}" | sort -n | sed -n "$(((runs + 1) / 2))p")
    size=$(du -h "$work/$file" | cut -f1)
    echo "| $file | $size | $rate | $seconds s | $load s | $rss MiB |"
done
echo "alerts in the last run: $(wc -l <"$work/alerts")" >&2
