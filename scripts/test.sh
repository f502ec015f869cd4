#!/usr/bin/env bash
# Runs keiko's whole test suite: unit tests beside the code and the integration tests in tests/,
# which start the real binary on free ports (tests/faults.rs among them: floods, descriptor
# exhaustion, idle and slow clients, panics, a stalled writer, database faults, restarts under
# load). Installs what the tests need when it is missing (promtool, from Debian's prometheus
# package, checks the /metrics output), so it works on a fresh Debian or Ubuntu machine with Rust.
#
#   scripts/test.sh [--fuzz SECONDS] [--soak SECONDS] [cargo test arguments...]
#
#   --fuzz S   afterwards, fuzz the request reader for S seconds (scripts/fuzz.sh)
#   --soak S   afterwards, run the mixed-load soak for S seconds (scripts/soak.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

FUZZ=""; SOAK=""; CARGO_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --fuzz) FUZZ="$2"; shift ;;
    --soak) SOAK="$2"; shift ;;
    *) CARGO_ARGS+=("$1") ;;
  esac
  shift
done

if ! command -v promtool >/dev/null 2>&1; then
  echo "scripts/test.sh: installing promtool (Debian package 'prometheus')" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

cargo test --all-targets "${CARGO_ARGS[@]}"
if [ -n "$FUZZ" ]; then scripts/fuzz.sh "$FUZZ"; fi
if [ -n "$SOAK" ]; then scripts/soak.sh --duration "$SOAK"; fi
