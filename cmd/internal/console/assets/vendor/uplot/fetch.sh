#!/usr/bin/env bash
# Vendors uPlot (MIT, https://github.com/leeoniya/uPlot) for the console:
# fetches the pinned version from the npm registry, checks the tarball's
# sha512 (the registry's dist.integrity) and copies the minified build, its
# stylesheet and its licence next to this script. The files are committed:
# the binary embeds them (go:embed), so building and running need no network.
#
#   cmd/internal/console/assets/vendor/uplot/fetch.sh   (from anywhere)
set -euo pipefail

version=1.6.32
integrity=sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==
url="https://registry.npmjs.org/uplot/-/uplot-$version.tgz"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

curl -fsSL --retry 3 "$url" -o "$tmp/uplot.tgz"
got="sha512-$(openssl dgst -sha512 -binary "$tmp/uplot.tgz" | base64 -w0)"
if [[ "$got" != "$integrity" ]]; then
	echo "uplot $version: integrity mismatch: got $got, want $integrity" >&2
	exit 1
fi
tar -xzf "$tmp/uplot.tgz" -C "$tmp" package/LICENSE package/dist/uPlot.iife.min.js package/dist/uPlot.min.css
cp "$tmp/package/LICENSE" "$here/LICENSE"
cp "$tmp/package/dist/uPlot.iife.min.js" "$tmp/package/dist/uPlot.min.css" "$here/"
echo "$version" >"$here/VERSION"
echo "uplot $version vendored into $here"
