#!/usr/bin/env bash
# Builds the test control plane for the Kubernetes tests (once) and prints the
# directory that holds it: etcd, kube-apiserver and kube-controller-manager
# built from the module in scripts/k8s-test-bins (k8s.io/kubernetes v1.37.2,
# etcd v3.7.0), kwok at $KWOK_VERSION, and kwok's stage configuration
# (kwok-stages.yaml). internal/kubetest starts them; TEATREE_K8S_BIN_DIR
# points it at the directory.
#
#   scripts/k8s-test-bins.sh          build if missing, print the directory
#   scripts/k8s-test-bins.sh --path   print the directory only (no build)
#
# The cache lives under ${TEATREE_CACHE:-$HOME/.cache/teatree}, keyed by the
# build module's go.sum, the kwok version and the Go version. A cold build
# takes 20 to 45 minutes on 2 cores (about 2.7 GB peak memory, 5 GB of Go build
# cache); a warm run costs nothing.
set -euo pipefail

KWOK_VERSION=v0.8.0
K8S_VERSION=v1.37.2 # must agree with k8s.io/kubernetes in scripts/k8s-test-bins/go.mod
here=$(cd "$(dirname "$0")" && pwd)
mod="$here/k8s-test-bins"
cache=${TEATREE_CACHE:-$HOME/.cache/teatree}

if ! command -v go >/dev/null 2>&1; then
  echo "scripts/k8s-test-bins.sh: go is not on PATH; install Go 1.26 to build the Kubernetes test binaries" >&2
  exit 1
fi
key=$( { cat "$mod/go.sum"; echo "kwok $KWOK_VERSION"; go env GOVERSION; } | sha256sum | cut -c1-12)
dir="$cache/k8s-test-bins-$K8S_VERSION-$key"

if [[ "${1:-}" == "--path" ]]; then
  echo "$dir"
  exit 0
fi

bins=(etcd kube-apiserver kube-controller-manager kwok kwok-stages.yaml)
missing=0
for b in "${bins[@]}"; do [[ -e "$dir/$b" ]] || missing=1; done

if [[ $missing == 1 ]]; then
  echo "building etcd, kube-apiserver $K8S_VERSION, kube-controller-manager and kwok $KWOK_VERSION into $dir (20 to 45 minutes cold)" >&2
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/k8s-test-bins.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  (
    cd "$mod"
    # One package at a time: each link of kube-apiserver peaks near 3 GB.
    export CGO_ENABLED=0 GOFLAGS=-mod=mod GOWORK=off
    go build -trimpath -ldflags="$ldflags" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
    go build -trimpath -ldflags="$ldflags" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
    go build -trimpath -ldflags="$ldflags" -o "$tmp/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager
  ) >&2
  GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS=-mod=mod GOWORK=off go install -trimpath -ldflags="-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >&2
  # kwok simulates nothing without stages: the fast node stages (Ready, lease
  # heartbeat) and the fast pod stages (Running and Ready, complete, delete),
  # taken from the same kwok module so they match the binary.
  kwokdir=$(GOFLAGS=-mod=mod GOWORK=off go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  stages="$kwokdir/kustomize/stage"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    [[ -f "$stages/$f" ]] || { echo "scripts/k8s-test-bins.sh: kwok $KWOK_VERSION has no stage $f" >&2; exit 1; }
    echo "---"
    cat "$stages/$f"
  done > "$tmp/kwok-stages.yaml"
  mkdir -p "$dir"
  for b in "${bins[@]}"; do mv "$tmp/$b" "$dir/$b"; done
fi
echo "$dir"
