#!/usr/bin/env bash
# Finds the KEIKO_THREADS setting that serves the most requests per second on this host: starts
# keiko with 1, 2, ... threads (up to the server's CPUs) and measures each with wrk, once with a
# new connection per request (Connection: close, like the k6 scripts) and once with keep-alive.
#
#   scripts/threads.sh [--duration S] [--connections N] [--max-threads N]
#                      [--server-cpus LIST] [--client-cpus LIST] [--images DIR] [--port PORT]
#
# Without CPU lists keiko and wrk share every core, as they would on a host that runs its own load
# generator; with them each is pinned (taskset). Prints a table and the recommended setting.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=10; CONNS=64; MAX=""; SERVER_CPUS=""; CLIENT_CPUS=""; IMAGES=assets/images; PORT=8099
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="$2"; shift ;;
    --connections) CONNS="$2"; shift ;;
    --max-threads) MAX="$2"; shift ;;
    --server-cpus) SERVER_CPUS="$2"; shift ;;
    --client-cpus) CLIENT_CPUS="$2"; shift ;;
    --images) IMAGES="$2"; shift ;;
    --port) PORT="$2"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "threads.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$DURATION" =~ ^[0-9]+$ ]] && [ "$DURATION" -ge 1 ] && [ "$DURATION" -le 300 ] || { echo "--duration: 1-300 s" >&2; exit 2; }

log() { printf '[threads %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
if ! command -v wrk >/dev/null 2>&1; then
  log "installing wrk (apt-get)"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq wrk >/dev/null 2>&1 || { $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk >/dev/null; }
fi
cargo build --release --quiet --bin keiko

SERVER_PIN=(); CLIENT_PIN=()
[ -n "$SERVER_CPUS" ] && SERVER_PIN=(taskset -c "$SERVER_CPUS")
[ -n "$CLIENT_CPUS" ] && CLIENT_PIN=(taskset -c "$CLIENT_CPUS")
if [ -z "$MAX" ]; then
  MAX=$("${SERVER_PIN[@]}" nproc)
fi
WRK_THREADS=$("${CLIENT_PIN[@]}" nproc); [ "$WRK_THREADS" -gt 4 ] && WRK_THREADS=4

RUN=$(mktemp -d /tmp/keiko-threads.XXXXXX)
PID=""
cleanup() { if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# wrk_rps MODE: requests/s of one bounded wrk run against the running keiko
wrk_rps() {
  local hdr=(); [ "$1" = close ] && hdr=(-H "Connection: close")
  "${CLIENT_PIN[@]}" timeout $((DURATION + 30)) wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" "${hdr[@]}" \
    "http://127.0.0.1:$PORT/" >"$RUN/wrk-$t-$1.txt" 2>&1 || true
  awk '/^Requests\/sec:/ {printf "%.0f", $2; found=1} END {if (!found) print 0}' "$RUN/wrk-$t-$1.txt"
}

printf '| KEIKO_THREADS | close req/s | keep-alive req/s |\n|---:|---:|---:|\n' >"$RUN/table.md"
best_close=0; best_t=1; best_keep=0; best_keep_t=1
for t in $(seq 1 "$MAX"); do
  log "KEIKO_THREADS=$t: starting keiko${SERVER_CPUS:+ on CPUs $SERVER_CPUS}"
  KEIKO_ADDR="127.0.0.1:$PORT" KEIKO_THREADS="$t" KEIKO_IMAGES="$IMAGES" KEIKO_DB="$RUN/keiko-$t.db" \
    "${SERVER_PIN[@]}" ./target/release/keiko >"$RUN/keiko-$t.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 300); do grep -q "library complete" "$RUN/keiko-$t.log" && break; sleep 0.1; done
  grep -q "library complete" "$RUN/keiko-$t.log" || { log "keiko did not start: $(tail -2 "$RUN/keiko-$t.log")"; exit 1; }
  close=$(wrk_rps close); keep=$(wrk_rps keepalive)
  log "KEIKO_THREADS=$t: close $close req/s, keep-alive $keep req/s"
  printf '| %s | %s | %s |\n' "$t" "$close" "$keep" >>"$RUN/table.md"
  # A thread count must beat the best so far by 3% to count: more threads than needed only add noise.
  if [ "$close" -gt $((best_close * 103 / 100)) ]; then best_close=$close; best_t=$t; fi
  if [ "$keep" -gt $((best_keep * 103 / 100)) ]; then best_keep=$keep; best_keep_t=$t; fi
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""
done

echo
echo "wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s; server CPUs: ${SERVER_CPUS:-all}; wrk CPUs: ${CLIENT_CPUS:-all}"
echo
cat "$RUN/table.md"
echo
echo "Recommended: KEIKO_THREADS=$best_t (new connection per request: $best_close req/s;" \
  "with keep-alive KEIKO_THREADS=$best_keep_t gives $best_keep req/s)"
