#!/usr/bin/env bash
# Fuzzes keiko's request reading and routing (target conn), the write routes' body reader,
# src/http/body.rs (target body), and the signed-URL check, src/signing.rs (target signature), all
# in fuzz/fuzz_targets/, with cargo-fuzz/libFuzzer for a
# bounded time, e.g. `scripts/fuzz.sh 30` as a CI smoke run. SECONDS (default 300) is per target,
# build not included. Installs cargo-fuzz when it is missing. Runs start from the tracked seeds in
# fuzz/seeds/<target>/ and grow fuzz/corpus/<target>/ (ignored); a crashing input is written to
# fuzz/artifacts/<target>/ and makes the script exit non-zero. Replay one with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>`.
#
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

seconds=${1:-300}
targets=(conn body signature)
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "usage: scripts/fuzz.sh [SECONDS]" >&2; exit 2; }

# cargo-fuzz turns on AddressSanitizer with -Zsanitizer=address, which only nightly accepts;
# RUSTC_BOOTSTRAP=1 lets the stable toolchain take it. (Its coverage instrumentation is all -C
# flags: `cargo fuzz run --sanitizer none` would need no bootstrap, but also would not check
# httparse's unsafe SIMD code for out-of-bounds reads.)
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

logs=fuzz/target/logs
mkdir -p "$logs"
failed=0
summary=()
for target in "${targets[@]}"; do
  cargo fuzz build "$target"
  mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
  marker=$(mktemp)
  log=$logs/$target.log
  started=$(date +%s)
  rc=0
  cargo fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -max_len=16384 -rss_limit_mb=2048 \
    -dict=fuzz/http.dict -print_final_stats=1 >"$log" 2>&1 || rc=$?
  elapsed=$(($(date +%s) - started))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  crashes=$(find "fuzz/artifacts/$target" -type f -newer "$marker" | sort)
  rm -f "$marker"
  if [[ -n $crashes || $rc -ne 0 ]]; then
    failed=1
    # The first error report (a panic message, an ASan report, a libFuzzer timeout or OOM), else the end.
    report=$(awk '!s && /panicked at|ERROR: (libFuzzer|AddressSanitizer)/ { s = NR }
                  s && NR > s && /^(stack backtrace:|note: |==[0-9]+==|MS: )/ { exit } s' "$log" | head -n 40)
    { echo "${report:-$(tail -n 20 "$log")}"; grep -E 'Test unit written|^Base64' "$log"; } >&2 || true
    result="FAILED (exit $rc), artifacts: ${crashes:-none}"
  else
    result="no crash"
  fi
  summary+=("fuzz $target: ${execs:-?} executions in ${elapsed} s, corpus $(find "fuzz/corpus/$target" -type f | wc -l) files, $result (log: $log)")
done
printf '%s\n' "${summary[@]}"
exit "$failed"
