#!/usr/bin/env bash
# Builds the Lambda functions with `cargo lambda build --release`, prints the
# size of each bootstrap binary and of its zip, then times the detector's
# init phase over RUNS cold starts (default 50) under cargo-lambda's emulator
# with bench/cold_start.py. Pass --stub to time against a Runtime API stub
# instead of the emulator.
#
# Usage: bench/cold-start.sh [RUNS] [--stub]
#
# Needs the Python environment of scripts/setup.sh (cargo-lambda and zig).
# When this user can create a network namespace (root can), the timed runs
# happen in one with only a loopback interface, which proves that init
# reaches nothing beyond 127.0.0.1.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

runs=50
stub=()
for arg in "$@"; do
    case "$arg" in
    --stub) stub=(--stub) ;;
    *[!0-9]* | '')
        echo "cold-start: invalid argument $arg: expected a number of runs or --stub" >&2
        exit 2
        ;;
    *) runs="$arg" ;;
    esac
done

venv="${TOKENGUARD_VENV:-$root/.venv}"
if [[ ! -x "$venv/bin/cargo-lambda" ]]; then
    echo "cold-start: missing $venv/bin/cargo-lambda: run scripts/setup.sh" >&2
    exit 1
fi
# cargo-lambda builds with the zig of the same environment.
export PATH="$venv/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
work="$root/.tokenguard/cold-start"
mkdir -p "$work"

echo "cold-start: cargo lambda build --release" >&2
cargo lambda build --release --quiet -p tokenguard-detector -p tokenguard-cloudtrail

echo "Release binaries and zips (cargo lambda build --release, zip deflated):"
for function in tokenguard-detector tokenguard-cloudtrail; do
    binary="$CARGO_TARGET_DIR/lambda/$function/bootstrap"
    "$venv/bin/python" - "$binary" "$work/$function.zip" "$function" <<'EOF'
import os
import sys
import zipfile

binary, archive, name = sys.argv[1:4]
with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
    bundle.write(binary, "bootstrap")
mib = 1024 * 1024
print(f"  {name}: binary {os.path.getsize(binary) / mib:.2f} MiB, zip {os.path.getsize(archive) / mib:.2f} MiB")
EOF
done

measure=("$venv/bin/python" bench/cold_start.py "$CARGO_TARGET_DIR/lambda/tokenguard-detector/bootstrap"
    --runs "$runs" --cargo-lambda "$venv/bin/cargo-lambda" "${stub[@]}")
if unshare -n true 2>/dev/null; then
    # A new network namespace starts with its loopback interface down.
    unshare -n sh -c 'ip link set lo up && exec "$@"' sh "${measure[@]}"
else
    echo "cold-start: cannot create a network namespace: timing in the host's network" >&2
    "${measure[@]}"
fi
