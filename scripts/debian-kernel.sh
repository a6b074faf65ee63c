#!/usr/bin/env bash
# Fetches the kernel of Debian's linux-image-amd64 package (Linux 6.1, the
# line Amazon Linux 2023 is on) and extracts its raw BTF, so the tests can
# check the eBPF program's CO-RE relocations against a kernel other than the
# running one.
#
#   debian-kernel.sh DIR
#
# Writes DIR/vmlinuz and DIR/vmlinux.btf, and prints the path of the BTF file.
# Files already in DIR for the current package version are reused.
set -euo pipefail

dir=${1:?usage: scripts/debian-kernel.sh DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# linux-image-amd64 is a metapackage whose one dependency is the versioned
# image.
resolve_image() {
    image=$(apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-/ { print $2; exit }')
    version=$(apt-cache policy "$image" 2>/dev/null | awk '/Candidate:/ { print $2 }')
}
resolve_image
if [[ -z $image || -z $version ]]; then
    apt-get update -qq
    resolve_image
fi
if [[ -z $image || -z $version ]]; then
    echo "debian-kernel: linux-image-amd64 not found in the apt lists: check /etc/apt/sources.list" >&2
    exit 1
fi
stamp="$dir/version"
if [[ -s $dir/vmlinux.btf && -s $dir/vmlinuz && $(cat "$stamp" 2>/dev/null) == "$image $version" ]]; then
    echo "$dir/vmlinux.btf"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt-get download fetches as the _apt user when that user can write the
# working directory, and warns otherwise.
chown _apt "$work" 2>/dev/null || true
# Stale apt lists can name a version the archive no longer has, so refresh
# them and retry once.
if ! (cd "$work" && apt-get download -qq "$image") >&2; then
    apt-get update -qq
    resolve_image
    (cd "$work" && apt-get download -qq "$image") >&2
fi
deb=$(ls "$work"/*.deb)
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" --wildcards './boot/vmlinuz-*'
cp "$work"/boot/vmlinuz-* "$dir/vmlinuz"

# An x86 bzImage carries vmlinux as a compressed ELF after its setup code, and
# Debian compresses it with xz. The ELF keeps the .BTF section.
offset=$(grep -abo -m1 $'\xfd7zXZ\x00' "$dir/vmlinuz" | cut -d: -f1 || true)
if [[ -z $offset ]]; then
    echo "debian-kernel: no xz stream in $dir/vmlinuz: the kernel is compressed another way" >&2
    exit 1
fi
# xz fails on the bytes after its stream, but the ELF before them is whole.
tail -c +$((offset + 1)) "$dir/vmlinuz" | xz -dc >"$work/vmlinux" 2>/dev/null || true
if ! objcopy -O binary --only-section=.BTF "$work/vmlinux" "$dir/vmlinux.btf" || [[ ! -s $dir/vmlinux.btf ]]; then
    echo "debian-kernel: no .BTF section in the vmlinux of $image $version" >&2
    exit 1
fi
echo "$image $version" >"$stamp"
echo "$dir/vmlinux.btf"
