#!/usr/bin/env bash
# Builds the pinned MinIO server from its Go module (once) and prints the
# path of the binary. The S3 tests start it on a loopback port.
#
#   scripts/minio.sh          build if missing, print the path
#   scripts/minio.sh --path   print the path only (no build)
#
# The cache lives under ${TEATREE_CACHE:-$HOME/.cache/teatree}; a cold build
# takes about 6 minutes on 2 cores.
set -euo pipefail

MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
cache=${TEATREE_CACHE:-$HOME/.cache/teatree}
dir="$cache/minio-$MINIO_VERSION"
bin="$dir/minio"

if [[ "${1:-}" == "--path" ]]; then
  echo "$bin"
  exit 0
fi

if [[ ! -x "$bin" ]]; then
  if ! command -v go >/dev/null 2>&1; then
    echo "scripts/minio.sh: go is not on PATH; install Go 1.26 to build MinIO" >&2
    exit 1
  fi
  echo "building MinIO $MINIO_VERSION into $dir (about 6 minutes cold)" >&2
  mkdir -p "$dir"
  tmp=$(mktemp -d "$dir/gobin.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # CGO off: MinIO does not need it and the build is faster and static.
  GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS=-mod=mod go install "github.com/minio/minio@$MINIO_VERSION" >&2
  mv "$tmp/minio" "$bin"
fi
echo "$bin"
