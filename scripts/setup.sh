#!/usr/bin/env bash
# Installs what building and testing tokenguard needs on a Debian machine,
# skipping what is already there: Debian packages for the eBPF build and the
# agent's image, and pinned Python virtual environments with the test and
# deployment-check tools.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Debian 12's own rustc (1.63) is too old, so Rust comes from rustup.
if ! command -v cargo >/dev/null || ! command -v rustup >/dev/null; then
    echo "setup: missing Rust: install Rust 1.95 or later with rustup, then run make again" >&2
    exit 1
fi
venv="${TOKENGUARD_VENV:-$root/.venv}"

# clang and libbpf-dev build the kernel program, bpftool inspects it,
# clang-format checks its style, python3-venv makes the test environment.
# binutils and xz-utils extract the BTF of Debian's kernel for the tests.
# podman builds the agent's image and ca-certificates provides the image's CA
# bundle (scripts/infra-check.sh).
packages=(clang llvm libbpf-dev bpftool clang-format linux-libc-dev python3-venv binutils xz-utils
    podman ca-certificates)

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: missing Debian packages ${missing[*]}: run as root or install them" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# Each venv is rebuilt when its pins change, so CI and developers test with
# the same tools. checkov has its own venv because its pins conflict with
# aws-sam-cli's.
install_venv() {
    local dir="$1" requirements="$2" program="$3"
    local stamp="$dir/.requirements"
    if [[ ! -x "$dir/bin/$program" ]] || ! cmp -s "$requirements" "$stamp"; then
        echo "setup: creating the Python environment in $dir" >&2
        python3 -m venv "$dir"
        "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
        cp "$requirements" "$stamp"
    fi
}
install_venv "$venv" "$root/requirements-dev.txt" sam
install_venv "${TOKENGUARD_CHECKOV_VENV:-$root/.tokenguard/checkov-venv}" \
    "$root/infra/requirements-checkov.txt" checkov

for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
        rustup component add "$component" >&2
    fi
done
