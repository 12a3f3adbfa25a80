#!/usr/bin/env bash
# Fetches the demo's real data: data/flights-3m.parquet from the npm package
# vega-datasets@3.2.1 (BSD-3-Clause): 3,000,000 US domestic flights of 2001.
# Prints the path of the verified file. Nothing of it is committed (data/ is
# git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

PKG=vega-datasets@3.2.1
SHA=dbeb920c90f59b6ccaff823dcc3d08f25a97fa1ce128d93f40be4e931f5900b0
DIR=${TEATREE_DATA_CACHE:-data}
OUT=$DIR/flights-3m.parquet

verify() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$SHA" ]; }

if verify "$OUT"; then
  echo "$OUT"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "fetch-flights: npm is not installed; install Node.js and npm (Debian: apt-get install npm) to fetch $PKG" >&2
  exit 1
fi
mkdir -p "$DIR"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-flights: downloading $PKG from the npm registry…" >&2
if ! (cd "$tmp" && npm pack "$PKG" --silent >/dev/null 2>"$tmp/npm.err"); then
  echo "fetch-flights: 'npm pack $PKG' failed: is the npm registry reachable? npm said:" >&2
  sed 's/^/  /' "$tmp/npm.err" >&2
  exit 1
fi
tar -xzf "$tmp"/vega-datasets-3.2.1.tgz -C "$tmp" package/data/flights-3m.parquet
if ! verify "$tmp/package/data/flights-3m.parquet"; then
  echo "fetch-flights: sha256 of flights-3m.parquet is not $SHA: the package changed or the download is corrupt" >&2
  exit 1
fi
mv "$tmp/package/data/flights-3m.parquet" "$OUT"
echo "$OUT"
