#!/usr/bin/env bash
# Stages the agent image's root filesystem in DIR/rootfs: the release binary,
# exactly the shared libraries that ldd resolves for it (it links glibc
# dynamically), and the CA bundle for TLS to the Function URL and STS.
# Usage: infra/image/stage.sh BINARY DIR
set -euo pipefail

binary="$1"
context="$2"
if [[ ! -x "$binary" ]]; then
    echo "stage: missing agent binary $binary: run cargo build --release -p tokenguard-agent" >&2
    exit 1
fi
ca_bundle=/etc/ssl/certs/ca-certificates.crt
if [[ ! -f "$ca_bundle" ]]; then
    echo "stage: missing $ca_bundle: install Debian's ca-certificates package" >&2
    exit 1
fi

rootfs="$context/rootfs"
rm -rf "$rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/var/lib/tokenguard"
install -m 0755 "$binary" "$rootfs/usr/local/bin/tokenguard-agent"
install -m 0644 "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"

# Each library goes to the path the loader looks it up by, with the real file's
# contents (not a symlink into the build machine). The dynamic loader's own
# path comes from the ELF interpreter entry.
# ldd exits with 1 on a static binary, which needs no libraries.
libraries=$( (ldd "$binary" 2>/dev/null || true) | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
if [[ -z "$libraries" ]]; then
    echo "stage: ldd found no libraries for $binary, so it is static and the image needs none" >&2
fi
for library in $libraries; do
    mkdir -p "$rootfs$(dirname "$library")"
    cp -L "$library" "$rootfs$library"
    echo "stage: $library" >&2
done
