#!/usr/bin/env bash
# Runs keiko's whole test suite: unit tests beside the code and the integration tests in tests/,
# which start the real binary on free ports (tests/faults.rs among them: floods, descriptor
# exhaustion, idle and slow clients, panics, a stalled writer, database faults, restarts under
# load, PostgreSQL stopped under load, Chromium on the dashboard). Installs what the tests need
# when it is missing (Debian packages, below), so it works on a fresh Debian machine with Rust.
#
#   scripts/test.sh [--fuzz SECONDS] [--soak SECONDS] [--fleet] [cargo test arguments...]
#
#   --fuzz S   afterwards, fuzz the request reader and the body reader for S seconds each
#              (scripts/fuzz.sh)
#   --soak S   afterwards, run the mixed-load soak for S seconds (scripts/soak.sh)
#   --fleet    afterwards, run the fleet check's quick mode (scripts/fleet.sh --quick), on a shared
#              directory and in object storage (--object-store)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FUZZ=""; SOAK=""; FLEET=""; CARGO_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --fuzz) FUZZ="$2"; shift ;;
    --soak) SOAK="$2"; shift ;;
    --fleet) FLEET=1 ;;
    *) CARGO_ARGS+=("$1") ;;
  esac
  shift
done

# What the tests drive for real, from Debian's packages: promtool checks the /metrics output,
# PostgreSQL holds a fleet's hits (tests/postgres.rs), Chromium loads the dashboard
# (tests/dashboard.rs), HAProxy fronts the fleet and wrk loads it (scripts/fleet.sh --quick).
# The reference decoders and colour tools that tests/samples.rs and tests/real_photos.rs compare
# keiko with: netpbm, djxl, Little CMS's jpgicc, libheif's heif-convert, Ghostscript's CMYK
# profile; avifdec, dwebp and djpeg, which decode each format keiko sends (tests/formats.rs); and
# libheif itself, for the build with the `heif` feature.
need_packages prometheus:promtool postgresql:/usr/lib/postgresql/*/bin/postgres chromium haproxy wrk \
  netpbm:tifftopnm libjxl-tools:djxl liblcms2-utils:jpgicc libheif-examples:heif-convert \
  libgs-common:/usr/share/color/icc/ghostscript/default_cmyk.icc libheif-dev:/usr/include/*/libheif/heif.h \
  pkg-config:pkg-config libavif-bin:avifdec webp:dwebp libjpeg-turbo-progs:djpeg

# Garage, the S3-compatible store of tests/object_store.rs (built from crates.io when missing).
need_garage

cargo test --all-targets --features test-hooks "${CARGO_ARGS[@]}"
# The same decoding tests again with HEIC and AVIF input (the `heif` feature, libheif-dev).
cargo test --features test-hooks,heif --lib --test real_photos --test samples --test hostile_files \
  "${CARGO_ARGS[@]}"
if [ -n "$FUZZ" ]; then scripts/fuzz.sh "$FUZZ"; fi
if [ -n "$SOAK" ]; then scripts/soak.sh --duration "$SOAK"; fi
# The fleet check runs the debug binary the tests just built: it checks behaviour, not speed, and
# this spares CI a release build.
# Both: the library on a shared disk, and in object storage (Garage).
if [ -n "$FLEET" ]; then
  KEIKO_BIN="${KEIKO_BIN:-target/debug/keiko}" scripts/fleet.sh --quick
  KEIKO_BIN="${KEIKO_BIN:-target/debug/keiko}" scripts/fleet.sh --quick --object-store
fi
