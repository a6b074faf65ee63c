#!/usr/bin/env bash
# Measures how long a kill order takes on this machine: from an unfamiliar
# process's open() of a pod's IRSA token to that process's death by SIGKILL.
# The agent runs on the real kernel with the HTTP sink and posts to the
# detector under cargo-lambda's emulator, which keeps its tables in moto with
# the pod's namespace in enforce mode. Each run starts a new reader under a
# new name in a pod sandbox (scripts/pod-sandbox.sh), so each raises a new
# finding and a new kill order. Each run's pod belongs to a Deployment of its
# own, whose first reader the detector learns before the timed one starts.
# node-agent/benches/kill_latency.rs has the details of what is timed.
#
# Runs start 500 ms apart after each kill, so that the agent sends each
# kill's report alone and no report rides on the next run's POST. Pass
# --gap-ms=0 to start them back to back instead.
#
# With --stub, a local stub in place of the detector orders every reader
# killed at once, which times the agent's share of the path alone.
#
# With --delete, the detector orders no kill and deletes the reader's pod
# through a TLS stand-in of the Kubernetes API instead, and the script times
# from the open() to the DELETE's arrival at the stand-in. Each run then has
# a new pod, added to the stand-ins of both the agent and the detector, and
# the gap runs between the pod's creation and its reader's start.
#
#   bench/kill-latency.sh [RUNS] [--gap-ms=MILLISECONDS] [--stub | --delete]
#
# Needs root, and without --stub the Python environment of scripts/setup.sh
# (moto and cargo-lambda). RUNS defaults to 100, after 4 warm-up runs. It prints the
# minimum, p50, mean, p90, p99 and maximum. The build takes minutes the
# first time, in the bench profile, which is the release profile.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs=100
mode=()
gap=()
for arg in "$@"; do
    case "$arg" in
    --stub | --delete)
        if ((${#mode[@]})); then
            echo "kill-latency: --stub and --delete cannot be combined: pass one" >&2
            exit 2
        fi
        mode=("$arg")
        ;;
    --gap-ms=*)
        millis=${arg#--gap-ms=}
        if [[ ! $millis =~ ^[0-9]+$ ]]; then
            echo "kill-latency: invalid $arg: expected milliseconds, such as --gap-ms=500" >&2
            exit 2
        fi
        gap=(--gap-ms "$millis")
        ;;
    *[!0-9]* | '' | 0*)
        echo "kill-latency: invalid argument \"$arg\": expected a count of runs above 0, --gap-ms=N, --stub or --delete" >&2
        exit 2
        ;;
    *) runs="$arg" ;;
    esac
done
if [[ $(id -u) -ne 0 ]]; then
    echo "kill-latency: run as root: the agent loads eBPF programs" >&2
    exit 1
fi
venv="${TOKENGUARD_VENV:-$root/.venv}"
if [[ ${mode[*]-} != --stub ]] && [[ ! -x "$venv/bin/cargo-lambda" || ! -x "$venv/bin/moto_server" ]]; then
    echo "kill-latency: missing cargo-lambda or moto_server in $venv: run scripts/setup.sh" >&2
    exit 1
fi

cd "$root"
cargo bench --quiet -p tokenguard-agent --bench kill_latency -- --runs "$runs" "${gap[@]}" "${mode[@]}"
