#!/usr/bin/env bash
# Vendors uPlot (https://github.com/leeoniya/uPlot, MIT), the chart library of the /dashboard page,
# into src/dashboard/vendor/. The page must be self-contained, with no CDN and no request to any other
# host: the Rust side embeds these files in the binary with include_str! and inlines them into the
# page. They are committed, so building needs neither npm nor the network; run this script only to
# update uPlot (change VERSION and INTEGRITY together, then review the diff).
#
# Fetches the pinned tarball from the npm registry with `npm pack`, refuses it unless its sha512
# matches the pinned integrity (and the registry's dist.integrity, when it can be asked), and copies
# dist/uPlot.iife.min.js, dist/uPlot.min.css and LICENSE.
#
#   scripts/vendor-uplot.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VERSION="1.6.32"
INTEGRITY="sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw=="
DEST="src/dashboard/vendor"

for tool in npm node tar timeout; do
  command -v "$tool" >/dev/null 2>&1 || die "needs $tool"
done

tmp="$(mktemp -d)"
on_exit rm -rf "$tmp"

# The registry's own record, as a cross-check of the pinned value (it must agree).
registry="$(timeout 60 npm view "uplot@$VERSION" dist.integrity 2>/dev/null || true)"
if [ -n "$registry" ] && [ "$registry" != "$INTEGRITY" ]; then
  die "registry integrity $registry differs from pinned $INTEGRITY"
fi

timeout 120 npm pack --silent --pack-destination "$tmp" "uplot@$VERSION" >/dev/null
tarball="$tmp/uplot-$VERSION.tgz"
[ -f "$tarball" ] || die "npm pack produced no $tarball"

actual="sha512-$(node -e '
  const h = require("crypto").createHash("sha512");
  h.update(require("fs").readFileSync(process.argv[1]));
  process.stdout.write(h.digest("base64"));' "$tarball")"
if [ "$actual" != "$INTEGRITY" ]; then
  die "$tarball has integrity $actual, expected $INTEGRITY"
fi

tar -xzf "$tarball" -C "$tmp" package/dist/uPlot.iife.min.js package/dist/uPlot.min.css package/LICENSE
mkdir -p "$DEST"
cp "$tmp/package/dist/uPlot.iife.min.js" "$tmp/package/dist/uPlot.min.css" "$tmp/package/LICENSE" "$DEST/"
echo "vendor-uplot.sh: uPlot $VERSION ($INTEGRITY) copied into $DEST"
