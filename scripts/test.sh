#!/usr/bin/env bash
# Runs keiko's whole test suite: unit tests beside the code and the integration tests in tests/,
# which start the real binary on free ports. Installs what the tests need when it is missing
# (promtool, from Debian's prometheus package, checks the /metrics output), so it works on a fresh
# Debian or Ubuntu machine that has Rust. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v promtool >/dev/null 2>&1; then
  echo "scripts/test.sh: installing promtool (Debian package 'prometheus')" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

cargo test --all-targets "$@"
