#!/usr/bin/env bash
# A pod-shaped sandbox on a plain Linux host, for the demo and the tests.
#
# It lays out a projected service account volume the way the kubelet writes
# it (token -> ..data/token, ..data -> ..<timestamp>/) under a kubelet root
# of your choice, makes a cgroup named the way the kubelet's systemd driver
# names it with containerd, and runs commands inside a private mount
# namespace where the volume is mounted at the path EKS uses.
#
#   pod-sandbox.sh setup    KUBELET_ROOT POD_UID CONTAINER_ID [irsa|pod_identity]
#   pod-sandbox.sh exec     KUBELET_ROOT POD_UID CONTAINER_ID [irsa|pod_identity] -- CMD...
#   pod-sandbox.sh teardown KUBELET_ROOT POD_UID CONTAINER_ID
#
# Needs root. Nothing outside KUBELET_ROOT and the new cgroup is changed: the
# mounts exist only inside the private namespace.
set -euo pipefail

usage() {
    sed -n '10,12p' "$0" | sed 's/^# *//' >&2
    exit 2
}

(($# >= 4)) || usage
action=$1 kubelet_root=$2 pod_uid=$3 container_id=$4
shift 4
kind=irsa
if (($#)) && [[ $1 != -- ]]; then
    kind=$1
    shift
    if [[ $action == exec && $kind != irsa && $kind != pod_identity ]]; then
        echo "pod-sandbox: expected [irsa|pod_identity] -- CMD..., got \"$kind\": put -- before the command" >&2
        exit 2
    fi
fi

case $kind in
irsa)
    volume=aws-iam-token file=token
    mount_path=/run/secrets/eks.amazonaws.com/serviceaccount
    ;;
pod_identity)
    volume=eks-pod-identity-token file=eks-pod-identity-token
    mount_path=/run/secrets/pods.eks.amazonaws.com/serviceaccount
    ;;
*)
    echo "pod-sandbox: invalid token kind \"$kind\": expected irsa or pod_identity" >&2
    exit 2
    ;;
esac

volume_dir="$kubelet_root/pods/$pod_uid/volumes/kubernetes.io~projected/$volume"
timestamp_dir="..2026_12_04_09_00_00.123456789"

# The cgroup v2 hierarchy is /sys/fs/cgroup on a pure v2 host (EKS AL2023)
# and /sys/fs/cgroup/unified on a hybrid one.
cgroup_root=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
if [[ -z $cgroup_root ]]; then
    echo "pod-sandbox: no cgroup2 mount found in /proc/mounts" >&2
    exit 1
fi
pod_slice="kubepods-besteffort-pod${pod_uid//-/_}.slice"
cgroup_dir="$cgroup_root/kubepods.slice/kubepods-besteffort.slice/$pod_slice/cri-containerd-$container_id.scope"

case $action in
setup)
    mkdir -p "$volume_dir/$timestamp_dir"
    # A JWT-shaped placeholder: three base64url parts, no real claims.
    printf 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0b2tlbmd1YXJkLXRlc3QifQ.c2lnbmF0dXJl' \
        >"$volume_dir/$timestamp_dir/$file"
    ln -sfn "$timestamp_dir" "$volume_dir/..data"
    ln -sfn "..data/$file" "$volume_dir/$file"
    mkdir -p "$cgroup_dir"
    ;;
exec)
    [[ ${1:-} == -- ]] || usage
    shift
    (($#)) || usage
    if [[ ! -d $cgroup_dir || ! -e $volume_dir/$file ]]; then
        echo "pod-sandbox: no sandbox for pod $pod_uid under $kubelet_root: run setup first" >&2
        exit 1
    fi
    echo $$ >"$cgroup_dir/cgroup.procs"
    exec unshare --mount --propagation private -- sh -c '
        set -e
        mount -t tmpfs tokenguard-sandbox /run
        mkdir -p "$1"
        mount --bind -o ro "$2" "$1"
        shift 2
        exec "$@"
    ' pod-sandbox "$mount_path" "$volume_dir" "$@"
    ;;
teardown)
    # Remove the cgroup leaf first, then each parent slice that is left
    # empty, up to the cgroup root. A slice another sandbox still uses stays.
    dir=$cgroup_dir
    while [[ $dir != "$cgroup_root" && -d $dir ]]; do
        rmdir "$dir" 2>/dev/null || break
        dir=$(dirname "$dir")
    done
    rm -rf "$kubelet_root/pods/$pod_uid"
    rmdir "$kubelet_root/pods" "$kubelet_root" 2>/dev/null || true
    ;;
*)
    usage
    ;;
esac
